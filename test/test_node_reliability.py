"""Both nodes against hostile input, over real DDS: a parameter whose build raises anything,
models that load but cannot work, silent cameras, one bad frame long ago, decompression bombs,
the fused 32FC1 output fed to the detector, wrong drop causes, non-finite detections, ``--help``.

Timeouts only bound the waiting; no assertion is about speed.
"""

from __future__ import annotations

import array
import json
import math
import struct
import subprocess
import sys
import threading
import time
import zlib
from typing import Any

import cv2
import numpy as np
import pytest
from image_helpers import array_to_compressed

rclpy = pytest.importorskip("rclpy")

from node_helpers import DetectorHarness, Spin, closing_all, wait_until  # noqa: E402
from rcl_interfaces.srv import SetParametersAtomically  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from sensor_msgs.msg import CompressedImage, Image  # noqa: E402

from mmdrfuse_ros import topics  # noqa: E402
from mmdrfuse_ros.bag.synth import NightScene, SynthConfig  # noqa: E402
from mmdrfuse_ros.detection import models as detection_models  # noqa: E402
from mmdrfuse_ros.detection.base import Detection  # noqa: E402
from mmdrfuse_ros.msgs.compressed import compressed_to_array  # noqa: E402
from mmdrfuse_ros.msgs.detections import msg_to_detections  # noqa: E402
from mmdrfuse_ros.msgs.images import (  # noqa: E402
    MalformedImageError,
    array_to_image,
    image_to_array,
    image_to_bgr8,
)
from mmdrfuse_ros.nodes.detector_node import DetectorNode  # noqa: E402
from mmdrfuse_ros.nodes.diagnostics import ERROR, OK, WARN  # noqa: E402
from mmdrfuse_ros.nodes.fusion_node import FusionNode  # noqa: E402
from mmdrfuse_ros.nodes.qos import make_qos  # noqa: E402
from mmdrfuse_ros.nodes.worker import WorkerNode  # noqa: E402

pytestmark = pytest.mark.ros


@pytest.fixture(scope="module")
def people() -> np.ndarray:
    """A 640x360 night frame with a lit pedestrian that HOG finds (see test_detection.py)."""
    image, _, _ = NightScene(SynthConfig(rgb_size=(640, 360))).render_rgb(
        0.5, np.random.default_rng(0)
    )
    return image


class DetectorRig(DetectorHarness):
    def send(self, msg: Image | np.ndarray, sec: int) -> None:
        if isinstance(msg, np.ndarray):
            msg = array_to_image(msg, "bgr8")
        msg.header.stamp.sec = sec
        self.pub.publish(msg)

    def report(self) -> Any:
        return self.node._collect_diagnostics()


@pytest.fixture
def detector(context):
    yield from closing_all(lambda **params: DetectorRig(context, **params))


def constant_model(path, **kw) -> str:
    from test_detection import constant_yolo, yolox_output

    return constant_yolo(path, kw.pop("output", yolox_output()), **kw)


# --------------------------------------------------------------------- 1. builds that raise
@pytest.fixture
def exploding_model(monkeypatch, tmp_path) -> str:
    """A model path whose detector build raises IndexError (any non-ValueError exception)."""
    path = str(tmp_path / "explodes.onnx")
    real = detection_models.resolve_detector

    def resolve(backend: str = "auto", model_path: Any = "", **params: Any):
        if str(model_path) == path:
            raise IndexError("list index out of range")
        return real(backend, model_path, **params)

    monkeypatch.setattr(detection_models, "resolve_detector", resolve)
    return path


def test_any_exception_building_a_detector_is_a_refused_change(detector, people, exploding_model):
    h = detector()
    result = h.node.set_parameters_atomically([Parameter("backend", value="onnx"),
                                               Parameter("model_path", value=exploding_model)])
    assert not result.successful and "IndexError" in result.reason
    # through the parameter service too (what `ros2 param set` uses): refused, node alive
    client = h.helper.create_client(SetParametersAtomically,
                                    f"/{h.node.get_name()}/set_parameters_atomically")
    assert client.wait_for_service(timeout_sec=10)
    request = SetParametersAtomically.Request(parameters=[
        Parameter("backend", value="onnx").to_parameter_msg(),
        Parameter("model_path", value=exploding_model).to_parameter_msg()])
    future = client.call_async(request)
    assert wait_until(future.done, timeout=10), "the parameter service never answered"
    assert not future.result().result.successful
    assert "IndexError" in future.result().result.reason
    h.send(people, sec=3)
    assert wait_until(lambda: len(h.received) >= 1), "the node died with its parameter service"
    assert h.node.get_parameter("backend").value == "hog"


def test_models_that_load_but_cannot_work_are_refused_when_set(detector, tmp_path):
    from onnx import TensorProto
    from test_detection import NET, yolox_output

    out = yolox_output()
    h = detector()
    bad = {
        "no inputs": constant_model(tmp_path / "noin.onnx", with_input=False),
        "5-D output": constant_model(tmp_path / "o5.onnx", output=out[:, :, :, None, None]),
        "4 columns": constant_model(tmp_path / "c4.onnx", output=out[:, :, :4]),
        "batch 2": constant_model(tmp_path / "b2.onnx", input_shape=(2, 3, NET, NET)),
        "uint8 input": constant_model(tmp_path / "u8.onnx", input_type=TensorProto.UINT8),
    }
    for name, path in bad.items():
        result = h.node.set_parameters_atomically([Parameter("backend", value="onnx"),
                                                   Parameter("model_path", value=path)])
        assert not result.successful and path in result.reason, name
    assert h.node.lifecycle_state == "active" and h.report().level == OK


def test_a_detector_that_fails_at_start_up_is_error_with_the_reason(context, exploding_model,
                                                                    capfd):
    node = DetectorNode(context=context, parameter_overrides=[
        Parameter("backend", value="onnx"), Parameter("model_path", value=exploding_model)])
    try:
        assert node.lifecycle_state == "inactive"  # alive: fix the parameter and activate
        report = node._collect_diagnostics()
        assert report.level == ERROR and "IndexError" in report.message
        assert "list index out of range" in capfd.readouterr().err
    finally:
        node.destroy_node()


def test_a_failed_rebuild_is_error_in_both_nodes_and_keeps_the_previous_one(detector, people,
                                                                            monkeypatch):
    h = detector()
    monkeypatch.setattr(h.node, "_build", lambda values: (_ for _ in ()).throw(
        RuntimeError("simulated: the model vanished")))
    assert h.node.set_parameters([Parameter("hog_scale", value=1.2)])[0].successful
    h.send(people, sec=1)
    assert wait_until(lambda: len(h.received) == 1), "the previous detector keeps detecting"
    report = h.report()
    assert report.level == ERROR and "the model vanished" in report.message


# --------------------------------------------------------------------- 6. silent inputs
def test_a_silent_input_is_warn_naming_the_topic_and_clears_when_it_speaks(detector, people):
    h = detector(input_timeout=0.5)
    assert wait_until(lambda: h.report().level == WARN, timeout=5)
    assert "/fused/image" in h.report().message and "0.5" in h.report().message
    h.send(people, sec=1)
    assert wait_until(lambda: len(h.received) == 1)
    assert h.report().level == OK, h.report().message
    assert wait_until(lambda: h.report().level == WARN, timeout=5)  # silent again


def test_one_bad_frame_warns_for_a_recent_window_only(detector, people, monkeypatch):
    monkeypatch.setattr(WorkerNode, "RECENT_WINDOW_S", 1.0)
    h = detector(input_timeout=0.0)  # 0: no silence warning
    short = array_to_image(people, "bgr8")
    short.data = short.data[:100]
    h.send(short, sec=1)
    assert wait_until(lambda: h.node.stats()["dropped_malformed_image"] == 1)
    report = h.report()
    assert report.level == WARN and "malformed_image" in report.message
    assert wait_until(lambda: h.report().level == OK, timeout=5), h.report().message
    assert h.node.stats()["dropped_malformed_image"] == 1  # the total is kept


class FusionHarness(Spin):
    def __init__(self, context: Any, **params: Any):
        params.setdefault("backend", "cpu-fast")
        node = FusionNode(context=context,
                          parameter_overrides=[Parameter(k, value=v) for k, v in params.items()])
        super().__init__(context, node)
        qos = make_qos(params.get("input_reliability", "best_effort"), 5)
        compressed = params.get("thermal_transport") == "compressed"
        self.thermal = self.helper.create_publisher(
            CompressedImage if compressed else Image,
            topics.THERMAL_IMAGE + ("/compressed" if compressed else ""), qos)
        self.rgb = self.helper.create_publisher(Image, topics.RGB_IMAGE, qos)
        assert wait_until(lambda: self.thermal.get_subscription_count() > 0
                          and self.rgb.get_subscription_count() > 0)

    def report(self) -> Any:
        return self.node._collect_diagnostics()


@pytest.fixture
def fusion(context):
    yield from closing_all(lambda **params: FusionHarness(context, **params))


def test_any_exception_checking_or_building_an_engine_is_refused_or_error(fusion, monkeypatch):
    from mmdrfuse_ros.fusion.engine import FusionEngine

    h = fusion(input_timeout=0.0)

    def explode(*args: Any, **kwargs: Any) -> None:
        raise KeyError("weights_info")

    monkeypatch.setattr(FusionEngine, "validate", explode)
    result = h.node.set_parameters([Parameter("thermal_smoothing", value=0.5)])[0]
    assert not result.successful and "KeyError" in result.reason
    monkeypatch.undo()
    monkeypatch.setattr(FusionNode, "_build", lambda self, values: explode())
    h.node.trigger_deactivate()
    assert h.node.trigger_activate() is not None and h.node.lifecycle_state == "inactive"
    report = h.report()
    assert report.level == ERROR and "KeyError" in report.message and "activate" in report.message


def test_a_dead_camera_on_the_fusion_node_is_warn_naming_its_topic(fusion):
    h = fusion(input_timeout=0.5)
    assert h.node.get_parameter("input_timeout").value == 0.5
    assert wait_until(lambda: h.report().level == WARN, timeout=5)
    message = h.report().message
    assert "input_timeout 0.5 s" in message, message
    assert topics.THERMAL_IMAGE in message and topics.RGB_IMAGE in message, message
    rgb = array_to_image(np.zeros((48, 64, 3), np.uint8), "bgr8")
    stop = threading.Event()

    def feed() -> None:  # the RGB camera lives, the thermal one is dead
        while not stop.is_set():
            h.rgb.publish(rgb)
            time.sleep(0.05)

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    try:
        assert wait_until(lambda: topics.RGB_IMAGE not in h.report().message, timeout=5)
        report = h.report()
        assert report.level == WARN and topics.THERMAL_IMAGE in report.message, report.message
    finally:
        stop.set()
        feeder.join()


# --------------------------------------------------------------------- 7. decompression bombs
def png_claiming(width: int, height: int, genuine: bool = False) -> bytes:
    """A grey PNG whose (CRC-checked) header says width x height: a real, all-black image of
    that size when ``genuine`` (a few hundred kB that decode to width * height bytes), else a
    header followed by too little data."""
    chunk = b"IHDR" + struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    rows = (width + 1) * height if genuine else 4096  # a row: filter byte 0, then its pixels
    idat = zlib.compress(bytes(rows))

    def png_chunk(kind: bytes, body: bytes) -> bytes:
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body)))

    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", chunk[4:]) + png_chunk(b"IDAT", idat)
            + png_chunk(b"IEND", b""))


def jpeg_claiming(width: int, height: int) -> bytes:
    blob = bytearray(cv2.imencode(".jpg", np.zeros((16, 16), np.uint8))[1].tobytes())
    sof = blob.index(b"\xff\xc0")
    blob[sof + 5:sof + 9] = struct.pack(">HH", height, width)
    return bytes(blob)


def compressed(blob: bytes, fmt: str) -> CompressedImage:
    msg = CompressedImage(format=fmt)
    msg.data = array.array("B", blob)
    return msg


def test_compressed_images_larger_than_the_limit_are_refused_before_decoding():
    for blob, fmt in ((png_claiming(20000, 20000), "mono8; png compressed mono8"),
                      (jpeg_claiming(60000, 60000), "bgr8; jpeg compressed bgr8"),
                      (bytes(12) + png_claiming(30000, 30000), "16UC1; compressedDepth png")):
        start = time.monotonic()
        with pytest.raises(MalformedImageError, match="Mpx"):
            compressed_to_array(compressed(blob, fmt))
        assert time.monotonic() - start < 1.0  # refused from the header, nothing decoded
    small = array_to_compressed(np.zeros((16, 16), np.uint8), "mono8", codec="png")
    assert compressed_to_array(small)[0].shape == (16, 16)
    with pytest.raises(MalformedImageError, match="limit"):
        compressed_to_array(small, max_pixels=100)  # the limit is configurable
    jpeg = array_to_compressed(np.zeros((16, 16, 3), np.uint8), "bgr8")
    assert compressed_to_array(jpeg)[0].shape == (16, 16, 3)
    truncated = compressed(bytes(jpeg.data)[: len(jpeg.data) // 2], jpeg.format)
    with pytest.raises(MalformedImageError, match="truncated"):
        compressed_to_array(truncated)
    with pytest.raises(MalformedImageError):
        compressed_to_array(compressed(b"\x89PNG\r\n\x1a\n\0\0", "png"))  # header cut short


def test_a_decompression_bomb_is_a_malformed_frame_for_the_fusion_node(fusion):
    h = fusion(thermal_transport="compressed", input_timeout=0.0)
    bomb = compressed(png_claiming(12000, 6000, genuine=True), "mono8; png compressed mono8")
    assert len(bomb.data) < 1_000_000  # 72 Mpx in well under 1 MB
    bomb.header.stamp.sec = 5
    rgb = array_to_image(np.zeros((48, 64, 3), np.uint8), "bgr8")
    rgb.header.stamp.sec = 5
    h.thermal.publish(bomb)
    h.rgb.publish(rgb)
    assert wait_until(lambda: h.node.stats()["dropped_malformed_image"] == 1)


# --------------------------------------------------------------------- 8. float images
def test_the_detector_takes_the_fused_32fc1_output(detector, people):
    h = detector()
    grey = cv2.cvtColor(people, cv2.COLOR_BGR2GRAY).astype(np.float32) / 255.0
    h.send(array_to_image(grey, "32FC1"), sec=1)
    assert wait_until(lambda: len(h.received) == 1), h.node.stats()
    assert msg_to_detections(h.received[0])[2], "the pedestrian is found in the float image"
    for n, (encoding, image, dtype) in enumerate((
            ("mono16", grey * 65535, np.uint16), ("16UC1", grey * 65535, np.uint16),
            ("8UC1", grey * 255, np.uint8), ("64FC1", grey, np.float64)), start=2):
        h.send(array_to_image(image.astype(dtype), encoding), sec=n)
        assert wait_until(lambda n=n: len(h.received) == n), (encoding, h.node.stats())


def test_the_fusion_nodes_32fc1_output_feeds_the_detector_node(fusion, context):
    h = fusion(output_encoding="32FC1", input_reliability="reliable", input_timeout=0.0)
    node = DetectorNode(context=context, parameter_overrides=[Parameter("backend", value="hog")])
    h.executor.add_node(node)
    try:
        assert wait_until(lambda: h.helper.count_subscribers(topics.FUSED_IMAGE) > 0)
        rgb = array_to_image(np.full((128, 96, 3), 90, np.uint8), "bgr8")
        thermal = array_to_image(np.full((64, 48), 120, np.uint8), "mono8")
        for sec in range(1, 20):  # until the endpoints match: the first pairs may be lost
            rgb.header.stamp.sec = thermal.header.stamp.sec = sec
            h.thermal.publish(thermal)
            h.rgb.publish(rgb)
            if wait_until(lambda: node.stats()["processed"] >= 1, timeout=0.5):
                break
        stats = node.stats()
        assert stats["processed"] >= 1 and stats["dropped_unsupported_encoding"] == 0, stats
    finally:
        h.executor.remove_node(node)
        node.destroy_node()


def test_a_float_image_outside_0_1_is_refused_with_the_reason():
    grey = np.linspace(0, 255, 64 * 32, dtype=np.float32).reshape(32, 64)
    with pytest.raises(MalformedImageError, match=r"0\.\.1"):
        image_to_bgr8(array_to_image(grey, "32FC1"))
    grey[0, 0] = np.nan
    with pytest.raises(MalformedImageError, match="NaN"):
        image_to_bgr8(array_to_image(grey / 255, "32FC1"))
    unit = image_to_bgr8(array_to_image(np.full((4, 4), 0.5, np.float32), "32FC1"))
    assert unit.shape == (4, 4, 3) and unit.dtype == np.uint8 and int(unit[0, 0, 0]) == 128


# --------------------------------------------------------------------- low: drop causes
def test_empty_and_odd_yuv_images_are_malformed_with_a_clear_message(detector, people):
    yuv = array_to_image(np.zeros((4, 5, 2), np.uint8), "8UC2")
    yuv.encoding = "yuv422"
    with pytest.raises(MalformedImageError, match="even") as err:
        image_to_array(yuv, "bgr8")
    assert "OpenCV" not in str(err.value)
    empty = Image(encoding="bgr8", width=640, height=0, step=640 * 3)
    with pytest.raises(MalformedImageError, match="empty"):
        image_to_bgr8(empty)
    empty_yuv = Image(encoding="yuv422", width=4, height=0, step=8)
    with pytest.raises(MalformedImageError, match="empty"):
        image_to_array(empty_yuv, "bgr8")
    h = detector()
    for n, msg in enumerate((yuv, empty), start=1):
        h.send(msg, sec=n)
        assert wait_until(lambda n=n: h.node.stats()["dropped_malformed_image"] == n)
    h.send(people, sec=3)
    assert wait_until(lambda: len(h.received) == 1)
    stats = h.node.stats()
    assert stats["dropped_malformed_image"] == 2 and stats["dropped_inference"] == 0, stats


def test_non_finite_detections_are_not_published(detector, people, monkeypatch):
    class Broken:
        name = "broken"
        fallback_reason = None

        def detect(self, image: np.ndarray) -> list[Detection]:
            return [Detection(math.nan, 1, 2, 3, 0.9), Detection(1, 2, math.inf, 4, 0.9),
                    Detection(1, 2, 3, 4, math.nan), Detection(10, 20, 30, 40, 0.8)]

    monkeypatch.setattr(DetectorNode, "_build", lambda self, values: Broken())
    h = detector()
    h.send(people, sec=1)
    assert wait_until(lambda: len(h.received) == 1)
    msg = h.received[0]
    if hasattr(msg, "data"):  # the JSON fallback must be valid JSON: no NaN/Infinity literals
        json.loads(msg.data, parse_constant=lambda c: pytest.fail(f"{c} in the JSON"))
    assert [d.as_row() for d in msg_to_detections(msg)[2]] == [(10, 20, 30, 40, 0.8)]


# --------------------------------------------------------------------- low: --help
@pytest.mark.parametrize("module", ["detector_node", "fusion_node"])
def test_help_prints_the_parameters_and_exits(module):
    run = subprocess.run([sys.executable, "-m", f"mmdrfuse_ros.nodes.{module}", "--help"],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert "input_timeout" in run.stdout and "--ros-args" in run.stdout
    assert ("model_path" if module == "detector_node" else "thermal_norm") in run.stdout


@pytest.mark.parametrize("argv", [["--bogus"], ["--ros-args", "--bogus"]])
def test_unknown_arguments_are_refused_not_ignored(argv):
    run = subprocess.run([sys.executable, "-m", "mmdrfuse_ros.nodes.detector_node", *argv],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and "--bogus" in run.stderr and "Traceback" not in run.stderr


# --------------------------------------------------------------------- low: byte order
@pytest.mark.parametrize("dtype,encoding", [(">u2", "mono16"), (">u2", "16UC1"),
                                            (">f4", "32FC1"), (">f8", "64FC1")])
def test_big_endian_data_is_read_the_same_for_integers_and_floats(dtype, encoding):
    values = np.array([[0, 1], [2, 3]], dtype=dtype)
    msg = Image(encoding=encoding, width=2, height=2, step=2 * values.itemsize, is_bigendian=1)
    msg.data = array.array("B", values.tobytes())
    out = image_to_array(msg)
    assert out.dtype.isnative and out.tolist() == [[0, 1], [2, 3]]
    back = array_to_image(values, encoding)  # a big-endian array is stored natively
    assert image_to_array(back).tolist() == [[0, 1], [2, 3]]
