"""Test-only message builders: encode arrays as sensor_msgs/CompressedImage like image_transport.

The package only decodes compressed images (:mod:`mmdrfuse_ros.msgs.compressed`); tests need the
other direction to feed nodes and converters with what a camera driver would publish.
"""

from __future__ import annotations

import array
from typing import Any

import cv2
import numpy as np

from mmdrfuse_ros.msgs.images import (
    CONVERTIBLE_ENCODINGS,
    convert_encoding,
    encoding_info,
    is_color_encoding,
)


def array_to_compressed(
    image: np.ndarray,
    encoding: str,
    header: Any = None,
    codec: str = "jpeg",
    quality: int = 90,
) -> Any:
    """Encode an image as a sensor_msgs/CompressedImage with image_transport's format string.

    JPEG takes 8-bit mono/colour; PNG also 16-bit (e.g. mono16 thermal). Colour is stored BGR, as
    OpenCV and image_transport do, so an rgb8 image is reordered before encoding.
    """
    from sensor_msgs.msg import CompressedImage

    dtype, channels = encoding_info(encoding)
    if codec not in ("jpeg", "png"):
        raise ValueError(f"codec must be 'jpeg' or 'png', got {codec!r}")
    if is_color_encoding(encoding) and encoding in CONVERTIBLE_ENCODINGS:
        target = {1: "mono", 3: "bgr", 4: "bgra"}[channels] + ("16" if dtype.itemsize == 2 else "8")
        stored = convert_encoding(image, encoding, target)
    elif channels == 1 and dtype in (np.uint8, np.uint16):
        target, stored = ("mono16" if dtype == np.uint16 else "mono8"), image
    else:
        raise ValueError(f"encoding {encoding!r} cannot be stored as {codec}")
    if codec == "jpeg" and (stored.dtype != np.uint8 or channels == 4):
        raise ValueError(f"JPEG stores 8-bit mono or colour images, not {encoding!r}")
    if codec == "jpeg":
        params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)]
    else:
        params = [cv2.IMWRITE_PNG_COMPRESSION, 1]
    ok, blob = cv2.imencode("." + ("jpg" if codec == "jpeg" else "png"), stored, params)
    if not ok:
        raise ValueError(f"OpenCV could not encode a {encoding!r} image as {codec}")
    msg = CompressedImage()
    if header is not None:
        msg.header = header
    msg.format = f"{encoding}; {codec} compressed {target}"
    data = array.array("B")
    data.frombytes(blob.tobytes())
    msg.data = data
    return msg
