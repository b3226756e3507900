"""Homography helpers: thermal pixels -> visible pixels, checked, applied to points, warped.

One definition for the engine (registration), the bag tools (the synthetic rig, calibration
documents) and the replay's evaluation (which part of the visible image the thermal camera sees).
A homography here is a 3x3 float64 matrix mapping thermal pixel coordinates to visible ones.
"""

from __future__ import annotations

import math

import cv2
import numpy as np


def validate_homography(homography: object) -> np.ndarray | None:
    """A finite, invertible 3x3 float64 matrix (thermal px -> visible px), or None."""
    if homography is None:
        return None
    h = np.asarray(homography, dtype=np.float64)
    if h.size == 0:
        return None
    if h.size != 9:
        raise ValueError(f"homography must have 9 values (3x3), got {h.size}")
    h = h.reshape(3, 3)
    if not np.isfinite(h).all():
        raise ValueError("homography contains NaN/inf")
    if abs(np.linalg.det(h)) < 1e-12:
        raise ValueError("homography is singular (determinant ~ 0): it cannot map thermal pixels")
    return h


class ThermalRegistration:
    """Bring the normalised thermal plane into the visible camera's geometry.

    With a homography, pixels outside the thermal view become 0 (no thermal evidence). The
    per-pixel source coordinates are computed once per frame size and reused with
    ``cv2.remap``: the same bilinear sampling as ``warpPerspective``, about twice as fast.
    Without a homography, a size mismatch is resolved by resizing (the engine warns once).
    """

    def __init__(self, homography: np.ndarray | None) -> None:
        self.homography = homography
        self._maps: tuple[tuple[int, ...], np.ndarray, np.ndarray] | None = None

    def __call__(self, thermal01: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
        h, w = size_hw
        if self.homography is None:
            if thermal01.shape != (h, w):
                return cv2.resize(thermal01, (w, h), interpolation=cv2.INTER_LINEAR)
            return thermal01
        key = (*thermal01.shape, h, w)
        if self._maps is None or self._maps[0] != key:
            self._maps = (key, *self._source_coordinates(h, w))
        return cv2.remap(thermal01, self._maps[1], self._maps[2], cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)

    def _source_coordinates(self, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
        inverse = np.linalg.inv(self.homography)  # visible pixel -> thermal pixel
        ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
        den = inverse[2, 0] * xs + inverse[2, 1] * ys + inverse[2, 2]
        map_x = (inverse[0, 0] * xs + inverse[0, 1] * ys + inverse[0, 2]) / den
        map_y = (inverse[1, 0] * xs + inverse[1, 1] * ys + inverse[1, 2]) / den
        return map_x.astype(np.float32), map_y.astype(np.float32)


def apply_homography(h: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Map Nx2 points through a 3x3 homography."""
    pts = np.hstack([points, np.ones((len(points), 1))]) @ h.T
    return pts[:, :2] / pts[:, 2:3]


def map_corners(h: np.ndarray, width: float, height: float) -> np.ndarray:
    """The corners (0,0), (w,0), (w,h), (0,h) of a ``width`` x ``height`` source image, mapped
    through ``h``: the 4x2 outline of its field of view in the target image."""
    return apply_homography(h, np.array([[0, 0], [width, 0], [width, height], [0, height]], float))


def default_homography(thermal_size: tuple[int, int], rgb_size: tuple[int, int]) -> np.ndarray:
    """Thermal -> RGB pixels: a narrower thermal field of view centred in the RGB image, slightly
    rotated and with a little perspective, as two cameras side by side give after calibration."""
    tw, th = thermal_size
    rw, rh = rgb_size
    scale = min(0.98 * rh / th, 0.9 * rw / tw)
    angle = math.radians(0.6)
    c, s = math.cos(angle), math.sin(angle)
    centre_t = np.array([[1, 0, -tw / 2], [0, 1, -th / 2], [0, 0, 1]])
    rotate_scale = np.array([[scale * c, -scale * s, 0], [scale * s, scale * c, 0], [0, 0, 1]])
    keystone = np.array([[1, 0, 0], [0, 1, 0], [2e-5 / scale, 0, 1]])
    to_rgb = np.array([[1, 0, rw / 2 + 0.01 * rw], [0, 1, rh / 2], [0, 0, 1]])
    h = to_rgb @ keystone @ rotate_scale @ centre_t
    return h / h[2, 2]

