"""Turn camera frames into the network's two [0, 1] planes, and its output back into an image.

Everything here is plain NumPy/OpenCV so that the ROS nodes, the CLI, training and the tools
share one definition of "thermal normalisation", "luma" and "colour restore".
"""

from __future__ import annotations

import importlib.util
import logging
import threading
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

log = logging.getLogger("mmdrfuse_ros.fusion")

THERMAL_NORMS = ("percentile", "fixed", "minmax", "auto")
_FULL_RANGE = {np.dtype(np.uint8): (0.0, 255.0), np.dtype(np.uint16): (0.0, 65535.0)}
_FLOAT_DTYPES = (np.float16, np.float32, np.float64)


class FusionInputError(ValueError):
    """A frame the engine cannot fuse (empty, wrong type or shape, non-finite values)."""


def check_thermal(thermal: object) -> np.ndarray:
    """Return the thermal frame as an HxW array of uint8, uint16 or float, or raise."""
    arr = _check_array(thermal, "thermal")
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim != 2:
        raise FusionInputError(
            f"thermal must be single-channel (HxW), got shape {arr.shape}; "
            "convert colour-mapped thermal to grey first"
        )
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        bad = int(arr.size - np.count_nonzero(np.isfinite(arr)))
        raise FusionInputError(f"thermal contains {bad} NaN/inf values")
    return arr


def check_visible(visible: object) -> np.ndarray:
    """Return the visible frame as HxW or HxWx3 (alpha dropped), uint8, uint16 or float."""
    arr = _check_array(visible, "visible")
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    elif arr.ndim == 3 and arr.shape[2] == 4:
        arr = arr[:, :, :3]
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] == 3)):
        raise FusionInputError(f"visible must be HxW, HxWx3 or HxWx4, got shape {arr.shape}")
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise FusionInputError("visible contains NaN/inf values")
    if arr.dtype.kind == "f" and float(arr.max()) > 1.0 + 1e-3:
        raise FusionInputError(
            f"float visible images must be in 0..1, got a maximum of {float(arr.max()):.4g} "
            "(divide 8-bit values by 255, or pass the uint8 image)"
        )
    return arr


def _check_array(value: object, name: str) -> np.ndarray:
    if not isinstance(value, np.ndarray):
        raise FusionInputError(f"{name} must be a NumPy array, got {type(value).__name__}")
    if value.size == 0 or value.ndim < 2 or min(value.shape[:2]) == 0:
        raise FusionInputError(f"{name} image is empty (shape {value.shape})")
    if min(value.shape[:2]) < 2:
        raise FusionInputError(f"{name} image is too small to filter (shape {value.shape})")
    if not value.dtype.isnative:  # big-endian buffers: integers and floats alike
        value = value.astype(value.dtype.newbyteorder("="))
    if value.dtype not in (np.uint8, np.uint16) and value.dtype.type not in _FLOAT_DTYPES:
        raise FusionInputError(
            f"{name} has dtype {value.dtype}; expected uint8, uint16 or float"
        )
    return value


def to_unit_float(image: np.ndarray) -> np.ndarray:
    """Scale uint8/uint16 to float32 [0, 1]; floats are taken to be in [0, 1] already."""
    if image.dtype == np.uint8:
        return image.astype(np.float32) * np.float32(1.0 / 255.0)
    if image.dtype == np.uint16:
        return image.astype(np.float32) * np.float32(1.0 / 65535.0)
    return np.clip(image, 0.0, 1.0).astype(np.float32, copy=False)


class ThermalNormalizer:
    """Map raw thermal values to [0, 1].

    * ``fixed``: a constant window ``(lo, hi)`` in raw units (default: the dtype's full range;
      for float input, 0..1). Stable over time, right when the scene's temperatures are known.
    * ``percentile``: clip at the ``(p_lo, p_hi)`` percentiles of each frame. Radiometric
      cameras spend most of their 16 bits on a narrow band, so this is the usable default. The
      bounds are smoothed over frames (``smoothing`` = weight of the previous bounds) so that a
      hot object entering the view does not make the whole image flicker.
    * ``minmax``: each frame's own min and max, no smoothing.
    * ``auto``: 8-bit input is taken as already display-mapped (``fixed`` 0..255, what fusion
      datasets and AGC'd cameras deliver); 16-bit and float input gets ``percentile``.

    A frame with no contrast (``hi == lo``) maps to 0 rather than dividing by zero.
    """

    def __init__(
        self,
        mode: str = "percentile",
        window: tuple[float, float] | None = None,
        percentiles: tuple[float, float] = (1.0, 99.0),
        smoothing: float = 0.9,
    ) -> None:
        if mode not in THERMAL_NORMS:
            raise ValueError(f"thermal_norm must be one of {THERMAL_NORMS}, got {mode!r}")
        if window is not None:
            window = (float(window[0]), float(window[1]))
            if not (np.isfinite(window).all() and window[1] > window[0]):
                raise ValueError(f"thermal_window must be (lo, hi) with hi > lo, got {window}")
        p_lo, p_hi = float(percentiles[0]), float(percentiles[1])
        if not 0.0 <= p_lo < p_hi <= 100.0:
            raise ValueError(
                f"thermal_percentiles must satisfy 0 <= lo < hi <= 100, got {percentiles}"
            )
        if not 0.0 <= smoothing < 1.0:
            raise ValueError(f"thermal_smoothing must be in [0, 1), got {smoothing}")
        self.mode = mode
        self.window = window
        self.percentiles = (p_lo, p_hi)
        self.smoothing = float(smoothing)
        self._bounds: tuple[float, float] | None = None

    def reset(self) -> None:
        """Forget the smoothed bounds (new camera, new bag loop)."""
        self._bounds = None

    @property
    def bounds(self) -> tuple[float, float] | None:
        """The (lo, hi) used for the last frame, in raw units."""
        return self._bounds

    def __call__(self, thermal: np.ndarray) -> np.ndarray:
        lo, hi = self._frame_bounds(thermal)
        smoothed = self.mode == "percentile" or (self.mode == "auto" and thermal.dtype != np.uint8)
        if smoothed and self._bounds is not None and self.smoothing > 0.0:
            a = self.smoothing
            lo = a * self._bounds[0] + (1.0 - a) * lo
            hi = a * self._bounds[1] + (1.0 - a) * hi
        self._bounds = (lo, hi)
        out = thermal.astype(np.float32)
        span = hi - lo
        if span <= 1e-12:
            out.fill(0.0)
            return out
        # In place: one temporary for a 640x512 frame, not three.
        out -= np.float32(lo)
        out *= np.float32(1.0 / span)
        np.clip(out, 0.0, 1.0, out=out)
        return out

    def _frame_bounds(self, thermal: np.ndarray) -> tuple[float, float]:
        if self.mode == "auto" and thermal.dtype == np.uint8:
            return _FULL_RANGE[thermal.dtype]
        if self.mode == "fixed":
            if self.window is not None:
                return self.window
            return _FULL_RANGE.get(thermal.dtype, (0.0, 1.0))
        if self.mode == "minmax":
            lo, hi = cv2.minMaxLoc(_as_cv_plane(thermal))[:2]
            return float(lo), float(hi)
        return _percentiles(thermal, self.percentiles)


def _as_cv_plane(image: np.ndarray) -> np.ndarray:
    return image if image.dtype != np.float64 and image.dtype != np.float16 else image.astype(
        np.float32
    )


def _percentiles(image: np.ndarray, percentiles: tuple[float, float]) -> tuple[float, float]:
    """Percentiles of an integer image from its histogram (O(n), no sort); floats by sampling."""
    if image.dtype in (np.uint8, np.uint16):
        counts = np.bincount(image.ravel(), minlength=256)
        cdf = np.cumsum(counts)
        total = float(cdf[-1])
        # The k-th smallest value such that at least p% of pixels are <= it (nearest-rank).
        ranks = [max(1.0, np.ceil(p / 100.0 * total)) for p in percentiles]
        lo, hi = (int(np.searchsorted(cdf, r)) for r in ranks)
        return float(lo), float(hi)
    step = max(1, int(np.sqrt(image.size / 65536)))  # ~64k samples are plenty for 2 bounds
    sample = image[::step, ::step].astype(np.float32, copy=False)
    lo, hi = np.percentile(sample, percentiles)
    return float(lo), float(hi)


@dataclass
class VisiblePlanes:
    """The visible frame split for fusion: luma in [0, 1] and, for colour input, its chroma.

    For an 8-bit colour frame it also keeps the frame itself (``source``, in ``order``): the
    colour restore then adds the luma change to every channel of the frame
    (:func:`compose_output`), which is what keeping Cr and Cb means in YCrCb, and Cr/Cb are only
    computed (:meth:`chroma`) for the outputs that need them.
    """

    luma: np.ndarray  # float32 HxW in [0, 1]
    crcb: np.ndarray | None  # HxWx2 (Cr, Cb) of the input's depth, None for grey (or not yet)
    is_uint8: bool
    source: np.ndarray | None = None  # the C-contiguous uint8 HxWx3 frame (8-bit colour input)
    order: str = "bgr"  # channel order of source

    @property
    def is_colour(self) -> bool:
        return self.crcb is not None or self.source is not None

    def chroma(self) -> np.ndarray | None:
        """Cr/Cb (HxWx2), computed from ``source`` on first use; None for grey input."""
        if self.crcb is None and self.source is not None:
            code = cv2.COLOR_BGR2YCrCb if self.order == "bgr" else cv2.COLOR_RGB2YCrCb
            self.crcb = cv2.cvtColor(self.source, code)[:, :, 1:]
        return self.crcb


def split_visible(visible: np.ndarray, order: str = "bgr") -> VisiblePlanes:
    """Luma Y = 0.299 R + 0.587 G + 0.114 B (BT.601, as in the paper) and the Cr/Cb to restore.

    8-bit colour: Y is OpenCV's 8-bit YCrCb luma, bit for bit, in one pass where numba is
    installed."""
    if visible.ndim == 2:
        return VisiblePlanes(to_unit_float(visible), None, visible.dtype == np.uint8)
    code = cv2.COLOR_BGR2YCrCb if order == "bgr" else cv2.COLOR_RGB2YCrCb
    if visible.dtype == np.uint8:
        kernel = jit_kernel(_luma_rows)
        if kernel is not None:
            visible = np.ascontiguousarray(visible)  # a view of a message already is
            luma = np.empty(visible.shape[:2], np.float32)
            kernel(visible, luma, *(_LUMA_FIXED if order == "bgr" else _LUMA_FIXED[::-1]))
            return VisiblePlanes(luma, None, True, visible, order)
        ycrcb = cv2.cvtColor(visible, code)
        luma = np.multiply(cv2.extractChannel(ycrcb, 0), np.float32(1.0 / 255.0),
                           dtype=np.float32)  # fmt: skip
        return VisiblePlanes(luma, ycrcb[:, :, 1:], True, visible, order)
    ycrcb = cv2.cvtColor(to_unit_float(visible), code)  # float: Cr/Cb offset by 0.5
    return VisiblePlanes(np.ascontiguousarray(ycrcb[:, :, 0]), ycrcb[:, :, 1:], False)


OUTPUT_COLORS = ("bgr", "rgb", "gray")
OUTPUT_DTYPES = ("uint8", "float32")


def compose_output(
    fused_luma: np.ndarray, planes: VisiblePlanes, color: str = "bgr", dtype: str = "uint8",
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Put the visible Cr/Cb back around the fused luma and convert to the requested layout.

    ``out``: where to write the result (a preallocated array of the result's shape and dtype,
    e.g. a view of an outgoing message's buffer); returned. 8-bit colour in and out in the same
    channel order takes one pass: each channel of the frame plus the luma change (fused luma
    minus the frame's exact BT.601 luma), rounded and saturated: a YCrCb round trip without its
    rounding of Y, Cr and Cb to 8 bits.
    """
    np.clip(fused_luma, 0.0, 1.0, out=fused_luma)
    want_colour = color != "gray" and planes.is_colour
    same_order = want_colour and planes.source is not None and planes.order == color
    if same_order and dtype == "float32":
        return _restore_float(fused_luma, planes, out)
    if same_order and (kernel := jit_kernel(_restore_rows)) is not None:
        target = out if out is not None and out.flags.c_contiguous else np.empty(
            planes.source.shape, np.uint8)
        weights = _LUMA_WEIGHTS if planes.order == "bgr" else _LUMA_WEIGHTS[::-1]
        kernel(np.ascontiguousarray(fused_luma), np.ascontiguousarray(planes.source), target,
               *weights)  # fmt: skip
        if out is not None and target is not out:
            np.copyto(out, target)
        return out if out is not None else target
    result = _compose(fused_luma, planes, color, dtype, want_colour)
    if out is None:
        return result
    np.copyto(out, result)
    return out


def _restore_float(fused_luma: np.ndarray, planes: VisiblePlanes,
                   out: np.ndarray | None) -> np.ndarray:
    """The float32 output of the one-pass restore (no rounding): source/255 + the luma change."""
    weights = _LUMA_WEIGHTS if planes.order == "bgr" else _LUMA_WEIGHTS[::-1]
    source = planes.source.astype(np.float32)
    luma = source @ np.asarray(weights, np.float32)
    result = np.add(source, (fused_luma * np.float32(255.0) - luma)[:, :, None], out=source)
    result *= np.float32(1.0 / 255.0)
    return np.clip(result, 0.0, 1.0, out=result if out is None else out)


def _compose(fused_luma: np.ndarray, planes: VisiblePlanes, color: str, dtype: str,
             want_colour: bool) -> np.ndarray:
    if dtype == "uint8":
        y8 = cv2.convertScaleAbs(fused_luma, alpha=255.0)  # rounds and saturates
        if not want_colour:
            return y8 if color == "gray" else cv2.cvtColor(y8, _GRAY_TO[color])
        chroma = planes.chroma()
        crcb = chroma if planes.is_uint8 else cv2.convertScaleAbs(chroma, alpha=255.0)
        ycrcb = cv2.merge((y8, crcb[:, :, 0], crcb[:, :, 1]))
        return cv2.cvtColor(ycrcb, _YCRCB_TO[color])
    if not want_colour:
        return fused_luma if color == "gray" else cv2.cvtColor(fused_luma, _GRAY_TO[color])
    chroma = planes.chroma()
    crcb = chroma.astype(np.float32) * np.float32(1.0 / 255.0) if planes.is_uint8 else chroma
    ycrcb = cv2.merge((fused_luma, crcb[:, :, 0], crcb[:, :, 1]))
    return np.clip(cv2.cvtColor(ycrcb, _YCRCB_TO[color]), 0.0, 1.0)


_GRAY_TO = {"bgr": cv2.COLOR_GRAY2BGR, "rgb": cv2.COLOR_GRAY2RGB}
#: BT.601 luma weights of B, G, R as OpenCV's 8-bit YCrCb conversion rounds them
_LUMA_WEIGHTS = tuple(np.float32(w / 16384.0) for w in (1868, 9617, 4899))
_YCRCB_TO = {"bgr": cv2.COLOR_YCrCb2BGR, "rgb": cv2.COLOR_YCrCb2RGB}


# --- one-pass kernels (numba, compiled on first use and cached on disk) ----------------------
#: BT.601 luma weights of B, G, R in OpenCV's 8-bit fixed point (/ 2**14, rounded)
_LUMA_FIXED = (1868, 9617, 4899)
_jit_lock = threading.Lock()
_jitted: dict[str, Any] = {}


def jit_kernel(func: Any) -> Any:
    """``func`` compiled by numba (nogil, fastmath, cached on disk), or None where numba is not
    installed (callers then take their NumPy/OpenCV path)."""
    with _jit_lock:
        if func.__name__ not in _jitted:
            if importlib.util.find_spec("numba") is None:
                _jitted[func.__name__] = None
            else:
                import numba

                _jitted[func.__name__] = numba.njit(fastmath=True, nogil=True,
                                                    cache=True)(func)  # fmt: skip
        return _jitted[func.__name__]


def _luma_rows(source: Any, luma: Any, w0: int, w1: int, w2: int) -> None:  # pragma: no cover
    """luma = round(w . source / 2**14) / 255: OpenCV's 8-bit YCrCb Y, as float32 [0, 1]."""
    height, width = luma.shape
    for r in range(height):
        src, out = source[r].reshape(width * 3), luma[r]  # C-contiguous HxWx3 uint8
        for x in range(width):
            y = (w0 * np.int32(src[3 * x]) + w1 * np.int32(src[3 * x + 1])
                 + w2 * np.int32(src[3 * x + 2]) + 8192) >> 14  # fmt: skip
            out[x] = np.float32(y) * np.float32(1.0 / 255.0)


def _restore_rows(fused: Any, source: Any, out: Any, w0: Any, w1: Any,
                  w2: Any) -> None:  # pragma: no cover (compiled by numba)
    """The restore loop (C-contiguous arrays: HxW float32, HxWx3 uint8, HxWx3 uint8)."""
    height, width = fused.shape
    delta = np.empty(width, np.float32)
    for r in range(height):
        f = fused[r]
        src, dst = source[r].reshape(width * 3), out[r].reshape(width * 3)
        for x in range(width):  # the luma change in 8-bit levels, +0.5 to round
            luma = w0 * src[3 * x] + w1 * src[3 * x + 1] + w2 * src[3 * x + 2]
            delta[x] = f[x] * np.float32(255.0) - luma + np.float32(0.5)
        for x in range(width):
            d = delta[x]
            for c in range(3):
                v = np.float32(src[3 * x + c]) + d
                dst[3 * x + c] = np.uint8(min(max(v, np.float32(0.0)), np.float32(255.0)))
