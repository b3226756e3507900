"""sensor_msgs/Image <-> numpy, with cv_bridge's encoding names and semantics.

Why our own and not cv_bridge: cv_bridge for ROS 2 is not installable from PyPI, and where it is
installed its Python ``imgmsg_to_cv2`` is itself a numpy view over ``msg.data`` (plus a copy when
rows are padded), so it is not faster than this module, which returns a zero-copy view even for
padded rows. The behaviour follows cv_bridge:

* the buffer must hold exactly ``height * step`` bytes and ``step >= width * channels * bytes``
  (cv_bridge's "Image is wrongly formed" checks), otherwise :class:`MalformedImageError`;
* an unknown encoding or a senseless conversion raises :class:`UnsupportedEncodingError`
  (both are ``ValueError`` subclasses, so callers may catch either);
* data in the other byte order (``is_bigendian``) is byte-swapped into native order (a copy);
* ``desired_encoding='passthrough'`` returns the data as is; otherwise colour/mono encodings are
  converted (channel order via OpenCV, 8 <-> 16 bit scaled by 65535/255 like cv_bridge), and a
  numeric encoding (``8UC1``...) may only be relabelled to one with the same channel count;
  an empty image, or a packed YUV image of odd width, cannot be converted (MalformedImageError).

:func:`image_to_bgr8` goes further than cv_bridge for consumers that need 8-bit BGR whatever
arrives (the detector): numeric and float images are read as grey/BGR, floats must be in 0..1.

The returned array shares memory with ``msg.data`` when no conversion is needed: keep the message
alive as long as the array, and copy it before modifying it if the message is used elsewhere.
"""

from __future__ import annotations

import array
import re
import sys
from typing import Any

import cv2
import numpy as np

__all__ = [
    "CONVERTIBLE_ENCODINGS",
    "MalformedImageError",
    "UnsupportedEncodingError",
    "array_to_image",
    "convert_encoding",
    "encoding_for_array",
    "encoding_info",
    "image_to_array",
    "image_to_bgr8",
    "is_color_encoding",
]

#: numpy dtype per OpenCV depth name (the part of "16UC1" before "C").
_DEPTHS: dict[str, np.dtype] = {
    "8U": np.dtype(np.uint8),
    "8S": np.dtype(np.int8),
    "16U": np.dtype(np.uint16),
    "16S": np.dtype(np.int16),
    "32S": np.dtype(np.int32),
    "32F": np.dtype(np.float32),
    "64F": np.dtype(np.float64),
}

#: named encodings of sensor_msgs/image_encodings.hpp: (dtype, channels).
_NAMED: dict[str, tuple[np.dtype, int]] = {
    "mono8": (_DEPTHS["8U"], 1),
    "mono16": (_DEPTHS["16U"], 1),
    "bgr8": (_DEPTHS["8U"], 3),
    "rgb8": (_DEPTHS["8U"], 3),
    "bgra8": (_DEPTHS["8U"], 4),
    "rgba8": (_DEPTHS["8U"], 4),
    "bgr16": (_DEPTHS["16U"], 3),
    "rgb16": (_DEPTHS["16U"], 3),
    "bgra16": (_DEPTHS["16U"], 4),
    "rgba16": (_DEPTHS["16U"], 4),
    "yuv422": (_DEPTHS["8U"], 2),  # UYVY
    "yuv422_yuy2": (_DEPTHS["8U"], 2),
    **{f"bayer_{p}8": (_DEPTHS["8U"], 1) for p in ("rggb", "bggr", "gbrg", "grbg")},
    **{f"bayer_{p}16": (_DEPTHS["16U"], 1) for p in ("rggb", "bggr", "gbrg", "grbg")},
}

_NUMERIC = re.compile(r"^(8U|8S|16U|16S|32S|32F|64F)(?:C([0-9]+))?$")

#: colour layouts we can convert between, by channel order.
_LAYOUT = {
    "mono8": "gray", "mono16": "gray",
    "bgr8": "bgr", "bgr16": "bgr", "rgb8": "rgb", "rgb16": "rgb",
    "bgra8": "bgra", "bgra16": "bgra", "rgba8": "rgba", "rgba16": "rgba",
}  # fmt: skip

#: encodings :func:`convert_encoding` can bring other colour encodings to.
CONVERTIBLE_ENCODINGS = frozenset(_LAYOUT)

_CVT: dict[tuple[str, str], int] = {
    ("gray", "bgr"): cv2.COLOR_GRAY2BGR, ("gray", "rgb"): cv2.COLOR_GRAY2RGB,
    ("gray", "bgra"): cv2.COLOR_GRAY2BGRA, ("gray", "rgba"): cv2.COLOR_GRAY2RGBA,
    ("bgr", "gray"): cv2.COLOR_BGR2GRAY, ("rgb", "gray"): cv2.COLOR_RGB2GRAY,
    ("bgra", "gray"): cv2.COLOR_BGRA2GRAY, ("rgba", "gray"): cv2.COLOR_RGBA2GRAY,
    ("bgr", "rgb"): cv2.COLOR_BGR2RGB, ("rgb", "bgr"): cv2.COLOR_RGB2BGR,
    ("bgr", "bgra"): cv2.COLOR_BGR2BGRA, ("bgr", "rgba"): cv2.COLOR_BGR2RGBA,
    ("rgb", "bgra"): cv2.COLOR_RGB2BGRA, ("rgb", "rgba"): cv2.COLOR_RGB2RGBA,
    ("bgra", "bgr"): cv2.COLOR_BGRA2BGR, ("bgra", "rgb"): cv2.COLOR_BGRA2RGB,
    ("rgba", "bgr"): cv2.COLOR_RGBA2BGR, ("rgba", "rgb"): cv2.COLOR_RGBA2RGB,
    ("bgra", "rgba"): cv2.COLOR_BGRA2RGBA, ("rgba", "bgra"): cv2.COLOR_RGBA2BGRA,
}  # fmt: skip

# ROS Bayer names count the pattern from the first pixel; OpenCV's from the second row/column.
_BAYER_TO_BGR = {
    "rggb": cv2.COLOR_BayerBG2BGR, "bggr": cv2.COLOR_BayerRG2BGR,
    "gbrg": cv2.COLOR_BayerGR2BGR, "grbg": cv2.COLOR_BayerGB2BGR,
}  # fmt: skip
_YUV_TO_BGR = {"yuv422": cv2.COLOR_YUV2BGR_UYVY, "yuv422_yuy2": cv2.COLOR_YUV2BGR_YUY2}

_NATIVE_BIG = sys.byteorder == "big"


class UnsupportedEncodingError(ValueError):
    """An encoding name we do not know, or a conversion between encodings that makes no sense."""


class MalformedImageError(ValueError):
    """A message whose buffer does not match its height, width, step and encoding."""


def encoding_info(encoding: str) -> tuple[np.dtype, int]:
    """(dtype, channels) of a cv_bridge encoding name; ValueError for an unknown one."""
    if encoding in _NAMED:
        return _NAMED[encoding]
    match = _NUMERIC.match(encoding)
    if match:
        return _DEPTHS[match.group(1)], int(match.group(2) or 1)
    raise UnsupportedEncodingError(
        f"unsupported image encoding {encoding!r} (expected one of {sorted(_NAMED)} "
        "or a numeric type such as 8UC1, 16UC1, 32FC1)"
    )


def is_color_encoding(encoding: str) -> bool:
    """True for encodings with colour/mono meaning (cv_bridge's isColor/isMono/Bayer/YUV)."""
    return encoding in _NAMED


def encoding_for_array(array_: np.ndarray) -> str:
    """cv_bridge's 'passthrough' naming: a numeric encoding such as '8UC3' from dtype and shape."""
    native = array_.dtype.newbyteorder("=")
    depth = next((name for name, dt in _DEPTHS.items() if dt == native), None)
    if depth is None:
        raise ValueError(f"arrays of dtype {array_.dtype} have no ROS image encoding")
    if array_.ndim not in (2, 3):
        raise ValueError(f"an image array must be HxW or HxWxC, got shape {array_.shape}")
    channels = 1 if array_.ndim == 2 else array_.shape[2]
    return f"{depth}C{channels}"


def image_to_array(msg: Any, desired_encoding: str = "passthrough") -> np.ndarray:
    """View a sensor_msgs/Image as an HxW (one channel) or HxWxC array.

    Zero-copy when the encoding is passed through and the byte order is native (row padding is
    kept as the row stride). UnsupportedEncodingError for an unknown encoding, MalformedImageError
    for a wrong ``step`` or a buffer whose size is not ``height * step`` (both ValueErrors).
    """
    encoding = msg.encoding
    dtype, channels = encoding_info(encoding)
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    row_bytes = width * channels * dtype.itemsize
    if step < row_bytes:
        raise MalformedImageError(
            f"image is wrongly formed: step {step} < width {width} * channels {channels} "
            f"* bytes {dtype.itemsize} for encoding {encoding!r}"
        )
    buffer = np.frombuffer(msg.data, dtype=np.uint8)
    if buffer.size != height * step:
        raise MalformedImageError(
            f"image is wrongly formed: data has {buffer.size} bytes, "
            f"height {height} * step {step} = {height * step} expected"
        )
    if step % dtype.itemsize:
        raise MalformedImageError(
            f"step {step} is not a multiple of the {dtype.itemsize}-byte element"
        )
    big = bool(msg.is_bigendian)
    stored = dtype.newbyteorder(">" if big else "<") if dtype.itemsize > 1 else dtype
    shape: tuple[int, ...] = (height, width) if channels == 1 else (height, width, channels)
    strides: tuple[int, ...] = (step, channels * dtype.itemsize)
    if channels > 1:
        strides = (*strides, dtype.itemsize)
    if height == 0 or width == 0:
        out = np.zeros(shape, dtype=dtype)
    else:
        out = np.ndarray(shape, dtype=stored, buffer=buffer, strides=strides)
        if dtype.itemsize > 1 and big != _NATIVE_BIG:
            out = out.astype(dtype)  # byte swap into native order, as cv_bridge does
    if desired_encoding in ("passthrough", encoding):
        return out
    return convert_encoding(out, encoding, desired_encoding)


def convert_encoding(image: np.ndarray, src: str, dst: str) -> np.ndarray:
    """cv_bridge's cvtColor: change channel order/count and 8/16-bit depth between encodings."""
    if src == dst:
        return image
    _, src_channels = encoding_info(src)
    dst_dtype, dst_channels = encoding_info(dst)
    if not is_color_encoding(src):
        if is_color_encoding(dst):
            raise UnsupportedEncodingError(
                f"[{src}] is not a colour format but [{dst}] is: no conversion"
            )
        if src_channels != dst_channels:
            raise UnsupportedEncodingError(
                f"[{src}] and [{dst}] do not have the same number of channels"
            )
        return image.astype(dst_dtype, copy=False)
    if not is_color_encoding(dst):
        if src_channels != dst_channels:
            raise UnsupportedEncodingError(
                f"[{src}] and [{dst}] do not have the same number of channels"
            )
        return image.astype(dst_dtype, copy=False)
    if dst not in _LAYOUT:
        raise UnsupportedEncodingError(f"conversion to [{dst}] is not supported")
    _check_convertible(image, src)
    # first to the destination's channel layout, at the source depth
    if src.startswith("bayer_") or src in _YUV_TO_BGR:
        code = _BAYER_TO_BGR[src[6:10]] if src.startswith("bayer_") else _YUV_TO_BGR[src]
        image = _cvt(np.ascontiguousarray(image), code, src, dst)
        layout = "bgr"
    else:
        layout = _LAYOUT[src]
    target = _LAYOUT[dst]
    if layout != target:
        image = _cvt(image, _CVT[(layout, target)], src, dst)
    # then the depth, scaled between the 8- and 16-bit full ranges
    if image.dtype != dst_dtype:
        if image.dtype == np.uint16 and dst_dtype == np.uint8:
            image = (image.astype(np.float32) * (255.0 / 65535.0) + 0.5).astype(np.uint8)
        elif image.dtype == np.uint8 and dst_dtype == np.uint16:
            image = image.astype(np.uint16) * np.uint16(257)  # 65535 / 255 == 257 exactly
        else:
            image = image.astype(dst_dtype)
    return image


def _check_convertible(image: np.ndarray, src: str) -> None:
    """MalformedImageError for what OpenCV's colour conversion refuses with an assertion."""
    if image.size == 0:
        raise MalformedImageError(f"image is empty ({'x'.join(map(str, image.shape))}): "
                                  f"nothing to convert from [{src}]")
    if src in _YUV_TO_BGR and image.shape[1] % 2:
        raise MalformedImageError(f"[{src}] packs two pixels in 4 bytes: the width must be even, "
                                  f"got {image.shape[1]}")


def _cvt(image: np.ndarray, code: int, src: str, dst: str) -> np.ndarray:
    try:
        return cv2.cvtColor(image, code)
    except cv2.error as exc:  # a shape OpenCV cannot convert: say so without its traceback
        detail = getattr(exc, "err", "") or str(exc).strip().splitlines()[-1]
        raise MalformedImageError(f"cannot convert a {'x'.join(map(str, image.shape))} [{src}] "
                                  f"image to [{dst}]: {detail}") from None


def image_to_bgr8(msg: Any) -> np.ndarray:
    """An HxWx3 uint8 BGR array from any image a detector can look at (always a new array or a
    view that must not be modified).

    Colour and mono encodings convert as in :func:`image_to_array`. Numeric encodings are read
    by channel count (1: grey, 3: BGR, 4: BGRA) and depth: 8-bit as is, 16-bit scaled like
    mono16, float (``32FC1``, fusion_node's float output) from 0..1 to 0..255. A float image
    outside 0..1 or with NaN/inf pixels, and an empty image, are MalformedImageError; signed
    integer or 2-channel numeric images UnsupportedEncodingError.
    """
    encoding = msg.encoding
    if is_color_encoding(encoding):
        image = image_to_array(msg, "bgr8")
        if image.size == 0:
            raise MalformedImageError(f"image is empty ({msg.width}x{msg.height})")
        return image
    image = image_to_array(msg)
    if image.size == 0:
        raise MalformedImageError(f"image is empty ({msg.width}x{msg.height})")
    channels = 1 if image.ndim == 2 else image.shape[2]
    names = {1: "mono", 3: "bgr", 4: "bgra"}
    if channels not in names or image.dtype.kind not in "uf":
        raise UnsupportedEncodingError(
            f"[{encoding}] cannot be shown as BGR: expected 1, 3 or 4 channels of 8-bit, 16-bit "
            "unsigned or float data"
        )
    if image.dtype.kind == "f":
        image = _unit_float_to_uint8(image, encoding)
    depth = "16" if image.dtype == np.uint16 else "8"
    return convert_encoding(image, f"{names[channels]}{depth}", "bgr8")


#: how far outside 0..1 a float image may stray (rounding) and still be taken as 0..1
_UNIT_TOLERANCE = 1e-3


def _unit_float_to_uint8(image: np.ndarray, encoding: str) -> np.ndarray:
    lo, hi = float(image.min()), float(image.max())
    if lo >= -_UNIT_TOLERANCE and hi <= 1.0 + _UNIT_TOLERANCE:  # False with NaN too
        return cv2.convertScaleAbs(image, alpha=255.0)  # scale, round, saturate: one pass
    bad = int(image.size - np.count_nonzero(np.isfinite(image)))
    if bad:
        raise MalformedImageError(f"[{encoding}] image has {bad} NaN/inf pixels")
    raise MalformedImageError(
        f"a float [{encoding}] image must hold values in 0..1 (as fusion_node's 32FC1 "
        f"output does), this one spans {lo:g}..{hi:g}: scale it to 0..1 or send mono8/bgr8"
    )


def array_to_image(image: np.ndarray, encoding: str = "passthrough", header: Any = None) -> Any:
    """A sensor_msgs/Image holding a copy of ``image`` (one copy, native byte order, no padding).

    ``encoding='passthrough'`` names the array by dtype and channels (``8UC3``...), like cv_bridge.
    ValueError when the array's dtype or channel count does not match the encoding.
    """
    from sensor_msgs.msg import Image

    if encoding == "passthrough":
        encoding = encoding_for_array(image)
    dtype, channels = encoding_info(encoding)
    if image.ndim not in (2, 3):
        raise ValueError(f"an image array must be HxW or HxWxC, got shape {image.shape}")
    got_channels = 1 if image.ndim == 2 else image.shape[2]
    if got_channels != channels or image.dtype.newbyteorder("=") != dtype:
        raise ValueError(
            f"encoding {encoding!r} needs {channels} channel(s) of {dtype}, "
            f"got {got_channels} of {image.dtype} (shape {image.shape})"
        )
    contiguous = np.ascontiguousarray(image, dtype=dtype)  # native order, rows packed
    msg = Image()
    if header is not None:
        msg.header = header
    msg.height, msg.width = int(image.shape[0]), int(image.shape[1])
    msg.encoding = encoding
    msg.is_bigendian = int(_NATIVE_BIG)
    msg.step = int(msg.width * channels * dtype.itemsize)
    data = array.array("B")
    data.frombytes(contiguous.data.cast("B") if contiguous.size else b"")
    msg.data = data
    return msg
