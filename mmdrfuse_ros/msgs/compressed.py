"""sensor_msgs/CompressedImage -> numpy: image_transport's format strings, compressedDepth.

Decoding follows image_transport's plugins (``compressed``, ``compressed_depth``); the pixel
semantics of the result are those of :mod:`mmdrfuse_ros.msgs.images`.

A few hundred kilobytes of PNG can claim 20000x20000 pixels: the size is read from the PNG, JPEG
or TIFF header first (OpenCV has no header-only call) and a frame above ``max_pixels`` is refused
before any decoding, as is a payload in another format (its size cannot be checked) and a JPEG
cut short (libjpeg would fill the missing half with grey and call it a success).
"""

from __future__ import annotations

import struct
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

__all__ = ["MAX_IMAGE_PIXELS", "compressed_to_array", "payload_size"]

#: the default largest decoded frame, in pixels: 50 Mpx, far above any real camera (8K is 33 Mpx)
MAX_IMAGE_PIXELS = 50_000_000
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: JPEG start-of-frame markers (C4 DHT, C8 JPG and CC DAC share the range but are not frames)
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_JPEG_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})


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


def _png_size(data: bytes) -> tuple[int, int]:
    if len(data) < 24 or data[12:16] != b"IHDR":
        raise MalformedImageError("PNG data ends before its IHDR header")
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def _jpeg_size(data: bytes) -> tuple[int, int, int]:
    """(width, height, offset of the frame header) from the first SOF marker."""
    pos, end = 2, len(data)
    while pos + 4 <= end:
        if data[pos] != 0xFF:
            raise MalformedImageError(f"JPEG data has no marker at byte {pos}")
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte before a marker
            pos += 1
            continue
        if marker in _JPEG_STANDALONE:
            pos += 2
            continue
        if marker in (0xD9, 0xDA):  # end of image, or scan data, before any frame header
            break
        length = struct.unpack(">H", data[pos + 2:pos + 4])[0]
        if marker in _JPEG_SOF:
            if pos + 9 > end:
                break
            height, width = struct.unpack(">HH", data[pos + 5:pos + 9])
            return width, height, pos
        pos += 2 + length
    raise MalformedImageError("JPEG data has no frame header (SOF marker) before its scan data")


def _tiff_size(data: bytes) -> tuple[int, int]:
    order = "<" if data[:2] == b"II" else ">"
    try:
        (first,) = struct.unpack(order + "I", data[4:8])
        (count,) = struct.unpack(order + "H", data[first:first + 2])
        found: dict[int, int] = {}
        for k in range(count):
            at = first + 2 + 12 * k
            tag, kind = struct.unpack(order + "HH", data[at:at + 4])
            if tag in (256, 257):  # ImageWidth, ImageLength: SHORT or LONG
                fmt = order + ("H" if kind == 3 else "I")
                found[tag] = struct.unpack(fmt, data[at + 8:at + 8 + struct.calcsize(fmt)])[0]
        return found[256], found[257]
    except (struct.error, KeyError):
        raise MalformedImageError("TIFF data has no readable image width and height") from None


def payload_size(data: bytes) -> tuple[int, int]:
    """(width, height) of a PNG, JPEG or TIFF payload read from its header, without decoding.

    MalformedImageError for another format, a header cut short, or a JPEG without its
    end-of-image marker (truncated).
    """
    if data.startswith(_PNG_SIGNATURE):
        return _png_size(data)
    if data.startswith(b"\xff\xd8"):
        width, height, frame = _jpeg_size(data)
        if data.rfind(b"\xff\xd9", frame) < 0:  # after the frame: not an embedded thumbnail's
            raise MalformedImageError("JPEG data is truncated (no end-of-image marker)")
        return width, height
    if data[:4] in (b"II*\0", b"MM\0*"):
        return _tiff_size(data)
    raise MalformedImageError(
        f"the data is neither PNG, JPEG nor TIFF (it starts with {data[:8]!r}), so its size "
        "cannot be checked before decoding"
    )


def _check_size(data: bytes, fmt: str, max_pixels: int) -> None:
    try:
        width, height = payload_size(data)
    except MalformedImageError as exc:
        raise MalformedImageError(
            f"could not decode compressed image of format {fmt!r}: {exc}") from None
    if width == 0 or height == 0:
        raise MalformedImageError(f"compressed image ({fmt!r}) is empty: {width}x{height}")
    if width * height > max_pixels:
        raise MalformedImageError(
            f"compressed image ({fmt!r}) is {width}x{height} = {width * height / 1e6:.0f} Mpx, "
            f"above the {max_pixels / 1e6:g} Mpx limit: refused before decoding"
        )


def compressed_to_array(msg: Any, max_pixels: int = MAX_IMAGE_PIXELS) -> tuple[np.ndarray, str]:
    """Decode a sensor_msgs/CompressedImage; returns (array, encoding).

    The encoding is the original one named in ``format`` when the decoded data can be brought to
    it (e.g. ``rgb8`` sent as a BGR JPEG comes back as rgb8, ``16UC1`` as 16UC1), else the
    decoded layout (``mono8``, ``mono16``, ``bgr8``, ``bgra8``...). MalformedImageError when the
    data cannot be decoded (with the format named) or its header says it has more than
    ``max_pixels`` pixels, UnsupportedEncodingError for compressedDepth variants other than
    16-bit PNG.
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
    _check_size(payload.tobytes(), msg.format, max_pixels)
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
