"""sensor_msgs/CompressedImage -> numpy: image_transport's format strings, compressedDepth.

Decoding follows image_transport's plugins (``compressed``, ``compressed_depth``); the pixel
semantics of the result are those of :mod:`mmdrfuse_ros.msgs.images`.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from .images import (
    CONVERTIBLE_ENCODINGS,
    MalformedImageError,
    UnsupportedEncodingError,
    convert_encoding,
    encoding_for_array,
    encoding_info,
    is_color_encoding,
)

__all__ = ["compressed_to_array"]


def _compressed_parts(fmt: str) -> tuple[str | None, str, bool]:
    """(original encoding or None, codec 'jpeg'|'png'|..., is compressedDepth) of a format field.

    Formats seen in the wild: 'jpeg', 'png', 'bgr8; jpeg compressed bgr8' (image_transport),
    'mono16; png compressed mono16', '16UC1; compressedDepth png', 'compressedDepth'.
    """
    fmt = fmt.strip()
    original: str | None = None
    rest = fmt
    if ";" in fmt:
        original, rest = (part.strip() for part in fmt.split(";", 1))
        original = original or None
    depth = "compresseddepth" in rest.lower()
    low = rest.lower()
    if "rvl" in low:
        codec = "rvl"
    elif "png" in low or (depth and "rvl" not in low):
        codec = "png"
    elif "jpeg" in low or "jpg" in low:
        codec = "jpeg"
    elif "tiff" in low:
        codec = "tiff"
    else:
        codec = low.split()[0] if low else ""
    return original, codec, depth


def _decoded_encoding(decoded: np.ndarray) -> str:
    channels = 1 if decoded.ndim == 2 else decoded.shape[2]
    bits = "16" if decoded.dtype == np.uint16 else "8"
    names = {1: "mono", 3: "bgr", 4: "bgra"}
    if decoded.dtype not in (np.uint8, np.uint16) or channels not in names:
        return encoding_for_array(decoded)
    return f"{names[channels]}{bits}"


def compressed_to_array(msg: Any) -> tuple[np.ndarray, str]:
    """Decode a sensor_msgs/CompressedImage; returns (array, encoding).

    The encoding is the original one named in ``format`` when the decoded data can be brought to
    it (e.g. ``rgb8`` sent as a BGR JPEG comes back as rgb8, ``16UC1`` as 16UC1), else the
    decoded layout (``mono8``, ``mono16``, ``bgr8``, ``bgra8``...). MalformedImageError when the
    data cannot be decoded (with the format named), UnsupportedEncodingError for compressedDepth
    variants other than 16-bit PNG.
    """
    original, codec, depth = _compressed_parts(msg.format)
    payload = np.frombuffer(msg.data, dtype=np.uint8)
    if depth:
        if codec != "png":
            raise UnsupportedEncodingError(
                f"compressedDepth codec {codec!r} is not supported (png only)"
            )
        if original not in (None, "16UC1", "mono16"):
            raise UnsupportedEncodingError(
                f"compressedDepth of {original!r} is not supported (16UC1 only)"
            )
        payload = payload[12:]  # compressed_depth_image_transport's 12-byte config header
    if payload.size == 0:
        raise MalformedImageError(f"compressed image ({msg.format!r}) has no data")
    decoded = cv2.imdecode(payload, cv2.IMREAD_UNCHANGED)
    if decoded is None:
        raise MalformedImageError(f"could not decode compressed image of format {msg.format!r}")
    encoding = _decoded_encoding(decoded)
    if original and original != encoding:
        try:
            o_dtype, o_channels = encoding_info(original)
        except ValueError:
            return decoded, encoding
        if not is_color_encoding(original):
            if o_dtype == decoded.dtype and o_channels == encoding_info(encoding)[1]:
                return decoded, original  # same layout, numeric name
        elif original in CONVERTIBLE_ENCODINGS:
            return convert_encoding(decoded, encoding, original), original
    return decoded, encoding
