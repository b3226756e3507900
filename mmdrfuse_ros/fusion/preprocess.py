"""Turn camera frames into the network's two [0, 1] planes, and its output back into an image.

Everything here is plain NumPy/OpenCV so that the ROS nodes, the CLI, training and the tools
share one definition of "thermal normalisation", "luma" and "colour restore".
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

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
    return arr


def _check_array(value: object, name: str) -> np.ndarray:
    if not isinstance(value, np.ndarray):
        raise FusionInputError(f"{name} must be a NumPy array, got {type(value).__name__}")
    if value.size == 0 or value.ndim < 2 or min(value.shape[:2]) == 0:
        raise FusionInputError(f"{name} image is empty (shape {value.shape})")
    if min(value.shape[:2]) < 2:
        raise FusionInputError(f"{name} image is too small to filter (shape {value.shape})")
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
    """The visible frame split for fusion: luma in [0, 1] and, for colour input, its chroma."""

    luma: np.ndarray  # float32 HxW in [0, 1]
    crcb: np.ndarray | None  # HxWx2 (Cr, Cb) of the input's depth (uint8 or float32), or None
    is_uint8: bool


def split_visible(visible: np.ndarray, order: str = "bgr") -> VisiblePlanes:
    """Luma Y = 0.299 R + 0.587 G + 0.114 B (BT.601, as in the paper) and the Cr/Cb to restore."""
    if visible.ndim == 2:
        return VisiblePlanes(to_unit_float(visible), None, visible.dtype == np.uint8)
    code = cv2.COLOR_BGR2YCrCb if order == "bgr" else cv2.COLOR_RGB2YCrCb
    if visible.dtype == np.uint8:
        ycrcb = cv2.cvtColor(visible, code)
        luma = ycrcb[:, :, 0].astype(np.float32) * np.float32(1.0 / 255.0)
        return VisiblePlanes(luma, ycrcb[:, :, 1:], True)
    ycrcb = cv2.cvtColor(to_unit_float(visible), code)  # float: Cr/Cb offset by 0.5
    return VisiblePlanes(np.ascontiguousarray(ycrcb[:, :, 0]), ycrcb[:, :, 1:], False)


OUTPUT_COLORS = ("bgr", "rgb", "gray")
OUTPUT_DTYPES = ("uint8", "float32")


def compose_output(
    fused_luma: np.ndarray, planes: VisiblePlanes, color: str = "bgr", dtype: str = "uint8"
) -> np.ndarray:
    """Put the visible Cr/Cb back around the fused luma and convert to the requested layout."""
    np.clip(fused_luma, 0.0, 1.0, out=fused_luma)
    want_colour = color != "gray" and planes.crcb is not None
    if dtype == "uint8":
        y8 = cv2.convertScaleAbs(fused_luma, alpha=255.0)  # rounds and saturates
        if not want_colour:
            return y8 if color == "gray" else cv2.cvtColor(y8, _GRAY_TO[color])
        crcb = planes.crcb if planes.is_uint8 else cv2.convertScaleAbs(planes.crcb, alpha=255.0)
        ycrcb = cv2.merge((y8, crcb[:, :, 0], crcb[:, :, 1]))
        return cv2.cvtColor(ycrcb, _YCRCB_TO[color])
    if not want_colour:
        return fused_luma if color == "gray" else cv2.cvtColor(fused_luma, _GRAY_TO[color])
    crcb = planes.crcb.astype(np.float32) * np.float32(1.0 / 255.0) if planes.is_uint8 else (
        planes.crcb
    )
    ycrcb = cv2.merge((fused_luma, crcb[:, :, 0], crcb[:, :, 1]))
    return np.clip(cv2.cvtColor(ycrcb, _YCRCB_TO[color]), 0.0, 1.0)


_GRAY_TO = {"bgr": cv2.COLOR_GRAY2BGR, "rgb": cv2.COLOR_GRAY2RGB}
_YCRCB_TO = {"bgr": cv2.COLOR_YCrCb2BGR, "rgb": cv2.COLOR_YCrCb2RGB}
