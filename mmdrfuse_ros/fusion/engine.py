"""FusionEngine: the one entry point that the nodes, the CLI and the tools use.

    engine = FusionEngine(backend="auto", device=None, weights=None, thermal_norm="percentile")
    fused = engine.fuse(thermal, visible)   # NumPy in, NumPy out, in the visible geometry

A frame goes through three stages, each usable (and timed) on its own:
``prepare`` (thermal normalisation, registration, visible luma/chroma split) ->
``fuse_luma`` (the 113-parameter network on a backend) -> ``finish`` (colour restore, dtype).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from ..resources import SHIPPED_WEIGHTS, default_weights_path, shipped_weights_path
from .backends import Backend, apply_thread_budget, check_backend_device, create_backend
from .geometry import ThermalRegistration, validate_homography
from .model import Checkpoint, CheckpointError, load_checkpoint
from .output import DEFAULT_PERCENTILES, OutputMapper
from .preprocess import (
    OUTPUT_COLORS,
    OUTPUT_DTYPES,
    FusionInputError,
    ThermalNormalizer,
    VisiblePlanes,
    check_thermal,
    check_visible,
    compose_output,
    split_visible,
)

log = logging.getLogger("mmdrfuse_ros.fusion")

#: below this many pixels the numba kernel runs serially: at camera cadence its sleeping
#: workers take several ms to wake, more than splitting a small frame saves
#: (``benchmarks/bench_fusion.py --cadence``, 2 idle cores, at 30 Hz: 640x512 serial 1.5 ms
#: against 5.8 ms parallel; 1280x720 serial 4.1 ms against 2.5 ms parallel). On cores shared
#: with other work (a detector beside), ``threads: 1`` keeps everything serial.
DEFAULT_PARALLEL_MIN_PIXELS = 1280 * 720


@dataclass
class FusionSettings:
    """Everything about a fusion except the backend, device and weights. Validated on creation:
    this is the one check of these values, for the engine, the node, the CLI and the replay."""

    fp16: bool = False
    channels_last: bool = True
    thermal_norm: str = "percentile"
    thermal_window: tuple[float, float] | None = None
    thermal_percentiles: tuple[float, float] = (1.0, 99.0)
    thermal_smoothing: float = 0.9
    homography: Any = None
    visible_order: str = "bgr"
    output_color: str = "bgr"
    output_dtype: str = "uint8"
    #: fused luma -> displayed intensity (fusion/output.py): raw, minmax or percentile
    output_mapping: str = "raw"
    output_percentiles: tuple[float, float] = DEFAULT_PERCENTILES
    output_smoothing: float = 0.0
    #: threads for OpenCV, PyTorch (CPU) and the numba kernel; 0 = the libraries' defaults
    threads: int = 0
    #: the numba kernel runs serially on frames with fewer pixels than this
    parallel_min_pixels: int = DEFAULT_PARALLEL_MIN_PIXELS

    def __post_init__(self) -> None:
        if self.visible_order not in ("bgr", "rgb"):
            raise ValueError(f"visible_order must be 'bgr' or 'rgb', got {self.visible_order!r}")
        if self.output_color not in OUTPUT_COLORS:
            raise ValueError(f"output_color must be in {OUTPUT_COLORS}, not {self.output_color!r}")
        if self.output_dtype not in OUTPUT_DTYPES:
            raise ValueError(f"output_dtype must be in {OUTPUT_DTYPES}, not {self.output_dtype!r}")
        if self.thermal_window is not None:
            self.thermal_window = _pair("thermal_window", self.thermal_window)
        self.thermal_percentiles = _pair("thermal_percentiles", self.thermal_percentiles)
        self.homography = validate_homography(self.homography)
        self.output_percentiles = _pair("output_percentiles", self.output_percentiles)
        OutputMapper(self.output_mapping, self.output_percentiles, self.output_smoothing)
        for name in ("threads", "parallel_min_pixels"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
                raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
            setattr(self, name, int(value))
        # Building one checks the normalisation settings with the same messages.
        ThermalNormalizer(self.thermal_norm, self.thermal_window, self.thermal_percentiles,
                          self.thermal_smoothing)

    @classmethod
    def from_kwargs(cls, **settings: Any) -> FusionSettings:
        """The settings from keyword arguments; ValueError names any unknown ones."""
        unknown = sorted(set(settings) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"unknown fusion setting(s): {unknown}")
        return cls(**settings)


def _pair(name: str, value: Sequence[float]) -> tuple[float, float]:
    """``[lo, hi]`` as a tuple of two floats; ValueError for any other length."""
    if len(value) != 2:
        raise ValueError(f"{name} must be [lo, hi] (two numbers), got {list(value)}")
    return float(value[0]), float(value[1])


def load_weights(weights: str | Path | None) -> tuple[Path, Checkpoint]:
    """The checkpoint at ``weights`` (None: the shipped default; a name of
    :data:`~mmdrfuse_ros.resources.SHIPPED_WEIGHTS`: that shipped student) and its path.

    CheckpointError (a ValueError) says why the file cannot be used.
    """
    if weights is not None and str(weights) in SHIPPED_WEIGHTS:  # a name (./default: a file)
        path = shipped_weights_path(str(weights))
    else:
        path = Path(weights).expanduser() if weights else default_weights_path()
    if not path.exists():
        raise CheckpointError(f"weights file {str(path)!r} not found: the path does not exist")
    return path, load_checkpoint(path)


@dataclass
class PreparedPair:
    """A pair after ``prepare``: both planes in the visible geometry, in [0, 1]."""

    thermal: np.ndarray  # float32 HxW
    visible: VisiblePlanes


class FusionEngine:
    """Fuse a thermal and a visible frame with the MMDRFuse student.

    Args:
        backend: ``auto`` (CUDA if present, else ``cpu-fast``), ``torch`` or ``cpu-fast``.
        device: ``None``/``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (``torch`` backend).
        weights: a checkpoint path (ours or the published state dict); None = shipped default.
        **settings: see :class:`FusionSettings`.

    Not thread-safe: give each thread its own engine (the percentile smoothing has state).
    """

    def __init__(
        self,
        backend: str = "auto",
        device: str | None = None,
        weights: str | Path | None = None,
        **settings: Any,
    ) -> None:
        self.settings = FusionSettings.from_kwargs(**settings)
        weights_path, checkpoint = load_weights(weights)
        self.weights_info: dict[str, Any] = {
            "path": str(weights_path),
            "format": checkpoint.source_format,
            "meta": checkpoint.meta,
        }
        s = self.settings
        apply_thread_budget(s.threads)
        self._backend: Backend | None = create_backend(
            backend, device, checkpoint, fp16=s.fp16, channels_last=s.channels_last,
            threads=s.threads, parallel_min_pixels=s.parallel_min_pixels,
        )
        self._normalizer = ThermalNormalizer(
            s.thermal_norm, s.thermal_window, s.thermal_percentiles, s.thermal_smoothing
        )
        self._register = ThermalRegistration(s.homography)
        self._warned_resize = False
        self._output = OutputMapper(s.output_mapping, s.output_percentiles, s.output_smoothing)

    @staticmethod
    def validate(
        backend: str = "auto",
        device: str | None = None,
        weights: str | Path | None = None,
        **settings: Any,
    ) -> FusionSettings:
        """Raise ValueError for anything ``FusionEngine(...)`` with these arguments would refuse,
        without building a backend (the weights file is read: it is small)."""
        checked = FusionSettings.from_kwargs(**settings)
        check_backend_device(backend, device)
        load_weights(weights)
        return checked

    # -- properties ----------------------------------------------------------------------
    @property
    def backend(self) -> Backend:
        if self._backend is None:
            raise RuntimeError("FusionEngine is closed")
        return self._backend

    @property
    def backend_name(self) -> str:
        return self.backend.name

    @property
    def device(self) -> str:
        return self.backend.device

    # -- the three stages ------------------------------------------------------------------
    def prepare(self, thermal: np.ndarray, visible: np.ndarray) -> PreparedPair:
        """Validate, normalise the thermal, bring it into the visible geometry, split the luma."""
        thermal = check_thermal(thermal)
        visible = check_visible(visible)
        size = visible.shape[:2]
        homography = self.settings.homography
        if homography is None and thermal.shape != size and not self._warned_resize:
            log.warning(
                "thermal %s and visible %s differ in size and no homography is set: resizing "
                "the thermal image (set a homography for correct registration)",
                thermal.shape, size,
            )
            self._warned_resize = True
        ir01 = self._register(self._normalizer(thermal), size)
        return PreparedPair(ir01, split_visible(visible, self.settings.visible_order))

    def fuse_luma(self, ir01: np.ndarray, y01: np.ndarray) -> np.ndarray:
        """The raw network on two same-size float32 planes in [0, 1]; returns float32 [0, 1]."""
        if ir01.shape != y01.shape or ir01.ndim != 2:
            raise FusionInputError(
                f"fuse_luma needs two HxW planes of one size, got {ir01.shape} and {y01.shape}"
            )
        out = self.backend.run(np.asarray(ir01, np.float32), np.asarray(y01, np.float32))
        if not np.isfinite(out).all():
            raise FusionInputError("the network produced non-finite values")
        return out

    def finish(self, fused_luma: np.ndarray, prepared: PreparedPair,
               out: np.ndarray | None = None) -> np.ndarray:
        """Map the fused luma (``output_mapping``), restore the visible chroma and convert to the
        configured colour layout and dtype.

        ``out``: a preallocated array of the result's shape and dtype to write into (e.g. the
        buffer of the message that will carry it, see :meth:`output_layout`).
        """
        s = self.settings
        return compose_output(self._output(fused_luma), prepared.visible, s.output_color,
                              s.output_dtype, out)

    def output_layout(self, visible_shape: tuple[int, ...]) -> tuple[tuple[int, ...], np.dtype]:
        """Shape and dtype of :meth:`finish`'s result for a visible frame of this shape."""
        s = self.settings
        h, w = visible_shape[:2]
        shape = (h, w) if s.output_color == "gray" else (h, w, 3)
        return shape, np.dtype(np.uint8 if s.output_dtype == "uint8" else np.float32)

    def fuse(self, thermal: np.ndarray, visible: np.ndarray) -> np.ndarray:
        """Fuse one pair; the result is in the visible camera's geometry."""
        prepared = self.prepare(thermal, visible)
        return self.finish(self.fuse_luma(prepared.thermal, prepared.visible.luma), prepared)

    # -- lifecycle --------------------------------------------------------------------------
    def warmup(self, height: int = 512, width: int = 640, iterations: int = 2) -> None:
        """Compile kernels (the network's, the colour restore's), allocate buffers and (on CUDA)
        pick algorithms before real frames."""
        plane = np.full((height, width), 0.5, np.float32)
        for _ in range(iterations):
            self.fuse_luma(plane, plane)
        compose_output(plane[:8, :8].copy(), split_visible(np.zeros((8, 8, 3), np.uint8)))

    def reset(self) -> None:
        """Forget the smoothed thermal and output bounds (new camera, bag loop)."""
        self._normalizer.reset()
        self._output.reset()

    def close(self) -> None:
        """Release the model and, on CUDA, the GPU memory it held."""
        if self._backend is not None:
            self._backend.close()
            self._backend = None

    def __enter__(self) -> FusionEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
