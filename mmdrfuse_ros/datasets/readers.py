"""Image files -> arrays, one function per reading rule.

Each consumer needs its own rule, and each rule is named here once:

* :func:`read_thermal_image`: what a thermal camera gives (one channel, 16-bit kept);
* :func:`read_visible_image`: what an RGB camera gives (BGR or grey, 8-bit);
* :func:`read_luma`: 8-bit BT.601 luma, what the network trains on;
* :func:`read_grey`: the reference fusion evaluator's grey conversion, for metrics.

Every reader raises DatasetError (a ValueError) naming the file it cannot use, a file cut short
(:mod:`.integrity`) included: it is never decoded into an image with a grey part.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from .errors import DatasetError
from .integrity import truncation


def _imread(path: Path, flags: int = cv2.IMREAD_UNCHANGED) -> np.ndarray:
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"cannot read image {path}: no such file")
    if not path.is_file():  # a folder, a FIFO (reading one would wait for ever), a device
        raise DatasetError(f"cannot read image {path}: not a regular file")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DatasetError(f"cannot read image {path}: {exc.strerror or exc}") from None
    if reason := truncation(data):
        raise DatasetError(f"cannot use image {path}: {reason}")
    image = cv2.imread(str(path), flags) if data else None  # as the reference evaluators read
    if image is None or image.size == 0:
        raise DatasetError(f"cannot read image {path}: it cannot be read as an image")
    return image


def _check_depth(image: np.ndarray, path: Path, role: str) -> None:
    if image.dtype not in (np.uint8, np.uint16):
        raise DatasetError(f"{path}: {image.dtype} {role} images are not supported (8/16-bit)")


def read_thermal_image(path: str | Path) -> np.ndarray:
    """A thermal frame as HxW uint8 or uint16: the bit depth is kept (16-bit files hold
    radiometric counts), colour-saved thermal files (BGR, BGRA) become grey."""
    image = _imread(Path(path))
    _check_depth(image, Path(path), "infrared")
    if image.ndim == 3 and image.shape[2] == 1:
        return image[:, :, 0]
    if image.ndim == 3:
        code = cv2.COLOR_BGRA2GRAY if image.shape[2] == 4 else cv2.COLOR_BGR2GRAY
        image = cv2.cvtColor(image, code)
    return image


def read_visible_image(path: str | Path) -> np.ndarray:
    """A visible frame as an 8-bit camera gives it: HxWx3 BGR for colour files (alpha dropped),
    HxW for grey ones (TNO); 16-bit files keep their high byte."""
    image = _imread(Path(path))
    _check_depth(image, Path(path), "visible")
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    if image.ndim == 3 and image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    return image


def read_luma(path: str | Path) -> np.ndarray:
    """HxW uint8 luma, what the network trains on: colour -> BT.601 Y (Y = 0.299 R + 0.587 G +
    0.114 B, rounded; the engine's own ``split_visible``), 16-bit -> 8-bit by /257, rounded."""
    from mmdrfuse_ros.fusion.preprocess import split_visible  # fusion/ imports torch

    image = _imread(Path(path))
    _check_depth(image, Path(path), "training")
    if image.ndim == 3 and image.shape[2] == 4:
        image = image[:, :, :3]
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.dtype == np.uint16:
        image = (image.astype(np.float32) / 257.0).round().astype(np.uint8)
    if image.ndim == 2:
        return image
    return np.rint(split_visible(image, "bgr").luma * 255.0).astype(np.uint8)


def read_grey(path: str | Path) -> np.ndarray:
    """HxW float64 grey as the reference evaluator's ``image_read_cv2(path, 'GRAY')`` reads it:
    ``cv2.imread`` (8-bit, 3 channels), float32, ``COLOR_BGR2GRAY``, rounded."""
    image = _imread(Path(path), cv2.IMREAD_COLOR)
    grey = cv2.cvtColor(image.astype(np.float32), cv2.COLOR_BGR2GRAY)
    return np.round(grey).astype(np.float64)
