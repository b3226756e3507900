"""Input handling and filters shared by the fusion metrics (grey 0..255 float64 images)."""

from __future__ import annotations

import math

import cv2
import numpy as np

F64 = np.float64


def as_grey(image: np.ndarray, name: str = "image") -> np.ndarray:
    """Return ``image`` as a 2-D float64 array, or raise ValueError saying what is wrong.

    Accepts HxW or HxWx1 arrays of any real dtype (uint8, uint16, float...). Colour images are
    refused rather than silently converted: the evaluator's grey conversion belongs to image
    *reading* (see :func:`mmdrfuse_ros.datasets.read_grey`).
    """
    arr = np.asarray(image)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a grey HxW image, got shape {arr.shape}")
    if arr.dtype.kind not in "uif" or arr.dtype == np.bool_:
        raise ValueError(f"{name} must be a real-valued array, got dtype {arr.dtype}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty")
    out = arr.astype(F64, copy=False)
    if not np.isfinite(out).all():
        raise ValueError(f"{name} contains NaN or infinity")
    return out


def triple(ir, vis, fused) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The three images as grey float64 of one size, or ValueError."""
    a, b, f = as_grey(ir, "ir"), as_grey(vis, "vis"), as_grey(fused, "fused")
    if not (a.shape == b.shape == f.shape):
        raise ValueError(
            f"ir, vis and fused must have one size, got {a.shape}, {b.shape} and {f.shape}"
        )
    return a, b, f


def need_size(img: np.ndarray, min_side: int, metric: str) -> None:
    """ValueError when ``img`` is smaller than ``min_side`` in either direction."""
    if min(img.shape) < min_side:
        raise ValueError(
            f"{metric} needs images of at least {min_side}x{min_side}, got {img.shape}"
        )


def filter_valid(img: np.ndarray, k1d: np.ndarray) -> np.ndarray:
    """Separable correlation with a symmetric 1-D kernel, 'valid' region only (no border)."""
    r = len(k1d) // 2
    h, w = img.shape
    if h < len(k1d) or w < len(k1d):
        return np.zeros((max(h - 2 * r, 0), max(w - 2 * r, 0)))
    full = cv2.sepFilter2D(img, cv2.CV_64F, k1d, k1d, borderType=cv2.BORDER_CONSTANT)
    return full[r : h - r, r : w - r]


def gauss1d(size: int, sigma: float) -> np.ndarray:
    """1-D factor of MATLAB's ``fspecial('gaussian', size, sigma)`` (which is separable)."""
    x = np.arange(size, dtype=F64) - (size - 1) / 2.0
    g = np.exp(-(x * x) / (2.0 * sigma * sigma))
    return g / g.sum()


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson correlation; 0.0 when either image is constant."""
    xc = x - x.mean()
    yc = y - y.mean()
    den = math.sqrt(float(np.sum(xc * xc)) * float(np.sum(yc * yc)))
    return float(np.sum(xc * yc)) / den if den > 0 else 0.0
