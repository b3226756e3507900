"""sensor_msgs Image/CompressedImage <-> numpy: layouts, zero copy, padding, byte order, errors."""

from __future__ import annotations

import array
import sys

import cv2
import numpy as np
import pytest
from image_helpers import array_to_compressed
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from mmdrfuse_ros.msgs.compressed import compressed_to_array
from mmdrfuse_ros.msgs.images import array_to_image, encoding_info, image_to_array

RNG = np.random.default_rng(0)


def raw_image(data: bytes, height: int, width: int, encoding: str, step: int, big=False) -> Image:
    msg = Image(height=height, width=width, encoding=encoding, step=step, is_bigendian=int(big))
    msg.data = array.array("B", data)
    return msg


@pytest.mark.parametrize(
    ("encoding", "dtype", "shape"),
    [
        ("mono8", np.uint8, (6, 7)),
        ("8UC1", np.uint8, (6, 7)),
        ("mono16", np.uint16, (6, 7)),
        ("16UC1", np.uint16, (6, 7)),
        ("bgr8", np.uint8, (6, 7, 3)),
        ("rgb8", np.uint8, (6, 7, 3)),
        ("bgra8", np.uint8, (6, 7, 4)),
        ("rgba8", np.uint8, (6, 7, 4)),
        ("bgr16", np.uint16, (6, 7, 3)),
        ("32FC1", np.float32, (6, 7)),
        ("16SC2", np.int16, (6, 7, 2)),
    ],
)
def test_round_trip_is_exact_and_zero_copy(encoding, dtype, shape):
    info = np.iinfo(dtype) if np.issubdtype(dtype, np.integer) else None
    if info:
        image = RNG.integers(info.min, info.max, size=shape, endpoint=True).astype(dtype)
    else:
        image = RNG.standard_normal(shape).astype(dtype)
    header = Header(frame_id="cam")
    header.stamp.sec, header.stamp.nanosec = 12, 345
    msg = array_to_image(image, encoding, header)
    assert (msg.encoding, msg.height, msg.width) == (encoding, shape[0], shape[1])
    assert msg.step == shape[1] * image.itemsize * (shape[2] if len(shape) == 3 else 1)
    assert msg.header.frame_id == "cam" and msg.header.stamp.nanosec == 345
    back = image_to_array(msg)
    assert back.dtype == dtype and back.shape == shape
    np.testing.assert_array_equal(back, image)
    assert np.shares_memory(back, np.frombuffer(msg.data, np.uint8))  # a view, no copy


def test_passthrough_names_arrays_like_cv_bridge():
    assert array_to_image(np.zeros((2, 3, 3), np.uint8)).encoding == "8UC3"
    assert array_to_image(np.zeros((2, 3), np.uint16)).encoding == "16UC1"
    assert array_to_image(np.zeros((2, 3), np.float32)).encoding == "32FC1"


def test_row_padding_is_honoured_without_copy():
    image = RNG.integers(0, 255, size=(4, 5, 3), dtype=np.uint8)
    padded = np.full((4, 20), 77, np.uint8)  # 15 bytes of pixels + 5 of padding per row
    padded[:, :15] = image.reshape(4, 15)
    msg = raw_image(padded.tobytes(), 4, 5, "bgr8", 20)
    view = image_to_array(msg)
    np.testing.assert_array_equal(view, image)
    assert view.strides[0] == 20
    assert np.shares_memory(view, np.frombuffer(msg.data, np.uint8))


def test_padded_16_bit_rows():
    image = RNG.integers(0, 65535, size=(3, 5), dtype=np.uint16)
    padded = np.zeros((3, 8), np.uint16)
    padded[:, :5] = image
    view = image_to_array(raw_image(padded.tobytes(), 3, 5, "mono16", 16))
    np.testing.assert_array_equal(view, image)


@pytest.mark.parametrize("encoding", ["mono16", "16UC1"])
def test_other_byte_order_is_swapped_to_native(encoding):
    image = RNG.integers(0, 65535, size=(3, 4), dtype=np.uint16)
    other_big = sys.byteorder == "little"
    stored = image.astype(">u2" if other_big else "<u2")
    out = image_to_array(raw_image(stored.tobytes(), 3, 4, encoding, 8, big=other_big))
    assert out.dtype == np.dtype(np.uint16) and out.dtype.isnative
    np.testing.assert_array_equal(out, image)


@pytest.mark.parametrize(
    ("height", "width", "encoding", "step", "nbytes", "reason"),
    [
        (4, 5, "bgr8", 15, 59, "height 4 \\* step 15"),  # one byte short
        (4, 5, "bgr8", 15, 61, "height 4 \\* step 15"),  # one byte too many
        (4, 5, "bgr8", 14, 56, "step 14 < width 5"),
        (4, 5, "mono16", 9, 36, "step 9 < width 5"),
        (4, 5, "mono16", 11, 44, "multiple"),
    ],
)
def test_wrongly_formed_buffers_are_refused(height, width, encoding, step, nbytes, reason):
    with pytest.raises(ValueError, match=reason):
        image_to_array(raw_image(bytes(nbytes), height, width, encoding, step))


@pytest.mark.parametrize("encoding", ["", "jpeg", "mono12", "8UC", "nv12"])
def test_unsupported_encodings_are_refused_with_the_name(encoding):
    with pytest.raises(ValueError, match="unsupported image encoding"):
        image_to_array(raw_image(bytes(20), 4, 5, encoding, 5))


def test_desired_encoding_conversions_follow_cv_bridge():
    rgb = RNG.integers(0, 255, size=(4, 5, 3), dtype=np.uint8)
    msg = array_to_image(rgb, "rgb8")
    np.testing.assert_array_equal(image_to_array(msg, "bgr8"), rgb[..., ::-1])
    assert image_to_array(msg, "mono8").shape == (4, 5)
    assert image_to_array(msg, "bgra8").shape == (4, 5, 4)
    assert image_to_array(msg, "8UC3").dtype == np.uint8  # colour -> numeric, same channels

    mono16 = np.array([[0, 257, 65535]], np.uint16)
    as8 = image_to_array(array_to_image(mono16, "mono16"), "mono8")
    np.testing.assert_array_equal(as8, [[0, 1, 255]])  # scaled by 255/65535
    as16 = image_to_array(array_to_image(as8, "mono8"), "mono16")
    np.testing.assert_array_equal(as16, [[0, 257, 65535]])

    numeric = array_to_image(np.zeros((2, 2), np.uint8), "8UC1")
    with pytest.raises(ValueError, match="not a colour format"):
        image_to_array(numeric, "mono8")
    with pytest.raises(ValueError, match="same number of channels"):
        image_to_array(array_to_image(rgb, "rgb8"), "8UC1")


def test_bayer_rggb_demosaics_to_the_right_colour():
    mosaic = np.zeros((8, 8), np.uint8)
    mosaic[0::2, 0::2] = 200  # R sites of an RGGB pattern; G and B stay dark
    bgr = image_to_array(array_to_image(mosaic, "bayer_rggb8"), "bgr8")
    b, g, r = bgr[4, 4]
    assert r > 150 and g < 50 and b < 50


def test_array_to_image_refuses_mismatched_arrays():
    with pytest.raises(ValueError, match="needs 3 channel"):
        array_to_image(np.zeros((4, 5), np.uint8), "bgr8")
    with pytest.raises(ValueError, match="uint16"):
        array_to_image(np.zeros((4, 5), np.uint8), "mono16")
    with pytest.raises(ValueError, match="no ROS image encoding"):
        array_to_image(np.zeros((4, 5), np.complex64))


def test_encoding_info_table():
    assert encoding_info("16UC1") == (np.dtype(np.uint16), 1)
    assert encoding_info("32FC3") == (np.dtype(np.float32), 3)
    assert encoding_info("rgba16") == (np.dtype(np.uint16), 4)


# ------------------------------------------------------------------ compressed
def test_png_mono16_round_trip_is_exact():
    thermal = RNG.integers(0, 65535, size=(16, 20), dtype=np.uint16)
    msg = array_to_compressed(thermal, "mono16", codec="png")
    assert msg.format == "mono16; png compressed mono16"
    out, encoding = compressed_to_array(msg)
    assert encoding == "mono16"
    np.testing.assert_array_equal(out, thermal)


def test_rgb8_comes_back_as_rgb8():
    rgb = RNG.integers(0, 255, size=(16, 20, 3), dtype=np.uint8)
    msg = array_to_compressed(rgb, "rgb8", codec="png")
    assert msg.format == "rgb8; png compressed bgr8"
    out, encoding = compressed_to_array(msg)
    assert encoding == "rgb8"
    np.testing.assert_array_equal(out, rgb)


def test_jpeg_bgr8_round_trip_is_close():
    bgr = np.zeros((32, 32, 3), np.uint8)
    bgr[:, :16] = (255, 0, 0)
    msg = array_to_compressed(bgr, "bgr8", codec="jpeg", quality=95)
    out, encoding = compressed_to_array(msg)
    assert encoding == "bgr8" and out.shape == bgr.shape
    assert np.abs(out.astype(int) - bgr).mean() < 6


def test_plain_format_strings_and_compressed_depth():
    gray = RNG.integers(0, 255, size=(8, 8), dtype=np.uint8)
    msg = CompressedImage(format="png")
    msg.data = array.array("B", cv2.imencode(".png", gray)[1].tobytes())
    out, encoding = compressed_to_array(msg)
    assert encoding == "mono8"
    np.testing.assert_array_equal(out, gray)

    depth = RNG.integers(0, 65535, size=(8, 8), dtype=np.uint16)
    blob = bytes(12) + cv2.imencode(".png", depth)[1].tobytes()  # 12-byte config header first
    msg = CompressedImage(format="16UC1; compressedDepth png")
    msg.data = array.array("B", blob)
    out, encoding = compressed_to_array(msg)
    assert encoding == "16UC1"
    np.testing.assert_array_equal(out, depth)


def test_bad_compressed_data_is_refused():
    msg = CompressedImage(format="bgr8; jpeg compressed bgr8")
    msg.data = array.array("B", b"not a jpeg at all")
    with pytest.raises(ValueError, match="could not decode"):
        compressed_to_array(msg)
    with pytest.raises(ValueError, match="no data"):
        compressed_to_array(CompressedImage(format="jpeg"))
    with pytest.raises(ValueError, match="JPEG"):
        array_to_compressed(np.zeros((4, 4), np.uint16), "mono16", codec="jpeg")
