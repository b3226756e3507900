"""The detector node over real DDS topics: detections with the image's header, bad input counted
while the node keeps running, lifecycle transitions, parameter validation, diagnostics.

Timeouts only bound the waiting; no assertion is about speed.
"""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")

from node_helpers import DetectorHarness, closing_all, wait_until  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402

from mmdrfuse_ros import topics  # noqa: E402
from mmdrfuse_ros.bag.synth import NightScene, SynthConfig  # noqa: E402
from mmdrfuse_ros.metrics.detection import average_precision  # noqa: E402
from mmdrfuse_ros.msgs.detections import (  # noqa: E402
    detection_message_type,
    msg_to_detections,
)
from mmdrfuse_ros.msgs.images import array_to_image  # noqa: E402
from mmdrfuse_ros.nodes.detector_node import DetectorNode  # noqa: E402
from mmdrfuse_ros.nodes.diagnostics import status_values  # noqa: E402
from mmdrfuse_ros.nodes.qos import make_qos  # noqa: E402

pytestmark = pytest.mark.ros


@pytest.fixture(scope="module")
def people() -> tuple[np.ndarray, list]:
    """A 640x360 night frame with a lit pedestrian that HOG finds (see test_detection.py)."""
    image, boxes, _ = NightScene(SynthConfig(rgb_size=(640, 360))).render_rgb(
        0.5, np.random.default_rng(0)
    )
    return image, boxes


class Harness(DetectorHarness):
    def send(self, image: np.ndarray | Image, sec: int, frame_id: str = "rgb_optical") -> None:
        msg = image if isinstance(image, Image) else array_to_image(image, "bgr8")
        msg.header.stamp.sec, msg.header.stamp.nanosec = sec, 500
        msg.header.frame_id = frame_id
        self.pub.publish(msg)


@pytest.fixture
def harness(context):
    yield from closing_all(lambda **params: Harness(context, **params))


def test_detections_carry_the_image_header_and_find_the_person(harness, people):
    image, boxes = people
    h = harness()
    h.send(image, sec=7, frame_id="camera_frame")
    assert wait_until(lambda: len(h.received) >= 1)
    stamp_ns, frame_id, detections = msg_to_detections(h.received[0])
    assert stamp_ns == 7_000_000_500 and frame_id == "camera_frame"
    assert all(d.label == "person" for d in detections)
    truth = [[b[:4] for b in boxes]]
    assert average_precision([[d.as_row() for d in detections]], truth)["AP50"] > 0, (
        "the lit pedestrian should be found with a box that matches its ground truth"
    )
    assert h.node.stats()["processed"] == 1


def test_bad_images_are_counted_and_the_node_keeps_running(harness, people):
    image, _ = people
    h = harness()
    weird = array_to_image(image, "bgr8")
    weird.encoding = "yuv422_yuy2_bogus"
    short = array_to_image(image, "bgr8")
    short.data = short.data[:100]  # a buffer shorter than height * step
    h.send(weird, sec=1)
    assert wait_until(lambda: h.node.stats()["dropped_unsupported_encoding"] == 1)
    h.send(short, sec=2)
    assert wait_until(lambda: h.node.stats()["dropped_malformed_image"] == 1)
    h.send(image, sec=3)
    assert wait_until(lambda: len(h.received) >= 1)
    assert msg_to_detections(h.received[-1])[0] == 3_000_000_500
    assert wait_until(lambda: any(
        status_values(s).get("dropped_malformed_image") == "1"
        for d in h.diagnostics for s in d.status if s.name == "detector_node: detector"
    ))


def test_a_busy_detector_skips_to_the_latest_image(harness, people):
    image, _ = people
    h = harness()
    with h.node._lock:  # the worker waits on this lock before each image: hold it busy
        for sec in range(1, 6):  # one at a time: the input queue (depth 2) would drop a burst
            h.send(image, sec=sec)
            assert wait_until(lambda sec=sec: h.node.stats()["received"] == sec)
    stats = lambda: h.node.stats()  # noqa: E731
    assert wait_until(lambda: stats()["processed"] + stats()["dropped_stale"] == 5)
    # At most the first image (already taken) and the last are detected; the rest are stale.
    assert stats()["dropped_stale"] >= 3
    assert wait_until(lambda: len(h.received) == stats()["processed"])
    assert msg_to_detections(h.received[-1])[0] == 5_000_000_500


def test_switching_to_an_onnx_model_at_run_time(harness, tmp_path):
    from test_detection import V5_ROWS, constant_yolo  # the test model whose output is known

    model = constant_yolo(tmp_path / "v5.onnx", V5_ROWS[None])
    h = harness()
    assert h.node.set_parameters_atomically([
        Parameter("backend", value="onnx"), Parameter("model_path", value=model),
        Parameter("onnx_layout", value="v5"),  # a 7-box test output: too small to tell apart
        Parameter("score_threshold", value=0.25),
    ]).successful
    h.send(np.zeros((64, 128, 3), np.uint8), sec=4)
    assert wait_until(lambda: len(h.received) >= 1)
    _, _, detections = msg_to_detections(h.received[-1])
    assert [(d.x1, d.y1, d.x2, d.y2) for d in detections] == [pytest.approx((44, 22, 84, 42))]
    assert h.node.stats()["backend"] == "onnx"


def test_lifecycle_deactivate_stops_and_activate_resumes(harness, people):
    image, _ = people
    h = harness(publish_image=True)
    annotated = []
    h.helper.create_subscription(Image, topics.DETECTIONS_IMAGE, annotated.append,
                                 make_qos("reliable", 5))
    assert wait_until(lambda: h.helper.count_publishers(topics.DETECTIONS_IMAGE) > 0)
    h.send(image, sec=1)
    assert wait_until(lambda: len(h.received) == 1 and len(annotated) == 1)
    assert annotated[0].header.stamp.sec == 1 and annotated[0].encoding == "bgr8"
    assert h.node.lifecycle_state == "active"
    h.node.trigger_deactivate()
    assert h.node.lifecycle_state == "inactive"
    h.send(image, sec=2)
    time.sleep(0.5)
    assert len(h.received) == 1 and h.node.stats()["received"] == 1
    h.node.trigger_activate()
    assert wait_until(lambda: h.pub.get_subscription_count() > 0)
    h.send(image, sec=3)
    assert wait_until(lambda: len(h.received) == 2)
    h.node.trigger_deactivate()
    h.node.trigger_cleanup()
    assert h.node.lifecycle_state == "unconfigured"


def test_not_autostarted_node_waits_unconfigured(context):
    node = DetectorNode(context=context, parameter_overrides=[Parameter("autostart", value=False)])
    try:
        assert node.lifecycle_state == "unconfigured"
        assert node.start() and node.lifecycle_state == "active"
    finally:
        node.destroy_node()


def test_parameters_are_validated(context, tmp_path):
    node = DetectorNode(context=context, parameter_overrides=[Parameter("backend", value="hog")])
    try:
        def refused(name, value):
            return not node.set_parameters([Parameter(name, value=value)])[0].successful

        assert refused("backend", "yolo")
        assert refused("backend", "onnx")  # no model_path
        assert refused("score_threshold", 20.0)  # out of range
        assert refused("onnx_layout", "v11")
        assert refused("model_path", str(tmp_path / "missing.onnx")) is False  # hog: unused
        assert not node.set_parameters_atomically([
            Parameter("backend", value="onnx"),
            Parameter("model_path", value=str(tmp_path / "missing.onnx")),
        ]).successful
        assert not refused("hog_scale", 1.2) and node.get_parameter("hog_scale").value == 1.2
    finally:
        node.destroy_node()
    with pytest.raises(Exception, match="backend"):
        DetectorNode(context=context, parameter_overrides=[Parameter("backend", value="ssd")])


# --- YOLOX: the detector users get, and its HOG fallback --------------------------------------

SHARED = Path(__file__).resolve().parent.parent.parent / "shared"
YOLOX_MODEL = SHARED / "models" / "yolox_nano" / "yolox_nano.onnx"
LLVIP = SHARED / "data" / "llvip" / "labelled"


@pytest.fixture
def no_model(tmp_path, monkeypatch):
    """No YOLOX model anywhere: an empty cache, no $MMDRFUSE_MODEL_DIR."""
    monkeypatch.setenv("MMDRFUSE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("MMDRFUSE_MODEL_DIR", raising=False)


@pytest.fixture
def llvip_frame() -> tuple[np.ndarray, list[list[float]]]:
    """LLVIP 010001: a real 1280x1024 night street (visible camera) and its person boxes."""
    from mmdrfuse_ros.datasets import parse_voc

    image_path, boxes_path = LLVIP / "vi" / "010001.jpg", LLVIP / "annotations" / "010001.xml"
    if not YOLOX_MODEL.is_file() or not image_path.is_file() or not boxes_path.is_file():
        pytest.skip(f"the shared YOLOX model ({YOLOX_MODEL}) or LLVIP frame ({image_path}) is "
                    "absent (only in the project's dev setup)")
    image = cv2.imread(str(image_path), cv2.IMREAD_COLOR)
    return image, parse_voc(boxes_path)[0]


def test_yolox_over_dds_finds_the_people_of_a_real_llvip_frame(harness, llvip_frame, no_model):
    image, truth = llvip_frame
    h = harness(backend="auto", model_path=str(YOLOX_MODEL))
    stats = h.node.stats()
    assert (stats["detector"], stats["detector_fallback"]) == ("yolox", "")
    assert h.node._built._session.get_session_options().intra_op_num_threads == 1
    h.send(image, sec=11)
    assert wait_until(lambda: len(h.received) >= 1, timeout=30)
    stamp_ns, _, detections = msg_to_detections(h.received[0])
    assert stamp_ns == 11_000_000_500 and detections
    assert {d.label for d in detections} == {"person"}
    ap = average_precision([[d.as_row() for d in detections]], [truth])["AP50"]
    assert ap > 0.5, f"YOLOX AP@0.5 on LLVIP 010001 is {ap:.2f} ({len(truth)} people)"
    assert h.node._collect_diagnostics().level == 0  # OK: the detector asked for runs


def test_auto_discovers_the_model_in_the_model_dir(context, llvip_frame, no_model, monkeypatch):
    monkeypatch.setenv("MMDRFUSE_MODEL_DIR", str(YOLOX_MODEL.parent))
    node = DetectorNode(context=context)  # the defaults: backend auto, model_path ''
    try:
        stats = node.stats()
        assert stats["backend"] == "auto" and stats["detector"] == "yolox"
        assert stats["model_path"] == str(YOLOX_MODEL) and stats["detector_fallback"] == ""
    finally:
        node.destroy_node()


def test_without_a_model_auto_falls_back_to_hog_loudly(harness, people, no_model, capfd):
    image, _ = people
    h = harness(backend="auto")
    stats = h.node.stats()
    assert stats["detector"] == "hog" and "mmdrfuse models fetch" in stats["detector_fallback"]
    assert "DETECTOR FALLBACK" in capfd.readouterr().err  # logged at start
    h.send(image, sec=1)
    assert wait_until(lambda: len(h.received) == 1)  # HOG still detects
    assert wait_until(lambda: any(
        s.level[0] == 1 and "mmdrfuse models fetch" in s.message
        for d in h.diagnostics for s in d.status if s.name == "detector_node: detector"
    )), "no /diagnostics WARN naming the fetch command"
    last = [s for d in h.diagnostics for s in d.status if s.name == "detector_node: detector"][-1]
    assert status_values(last)["detector_fallback"] == stats["detector_fallback"]


# --- QoS overrides the ROS way (rclpy QoSOverridingOptions) ----------------------------------

IMAGE_IN = "qos_overrides./fused/image.subscription."
DETECTIONS_OUT = "qos_overrides./detections.publisher."


def matched(endpoint, count: int = 1, settle: float = 0.5) -> bool:
    """Whether a publisher (subscription) of the helper matches ``count`` subscriptions
    (publishers) over DDS: QoS compatibility decides it."""
    counter = (endpoint.get_subscription_count if hasattr(endpoint, "get_subscription_count")
               else endpoint.get_publisher_count)  # fmt: skip
    if count:
        return wait_until(lambda: counter() == count)
    time.sleep(settle)  # discovery would have matched them by now
    return counter() == 0


def test_qos_override_parameters_are_declared_with_the_node_values(harness):
    from rclpy.qos import ReliabilityPolicy

    h = harness(input_depth=3, output_reliability="best_effort")
    # the names are those of the resolved topics
    assert h.node.resolve_topic_name(topics.FUSED_IMAGE) == "/fused/image"
    assert h.node.get_parameter(IMAGE_IN + "reliability").value == "reliable"
    assert h.node.get_parameter(IMAGE_IN + "depth").value == 3
    assert h.node.describe_parameter(IMAGE_IN + "reliability").read_only
    assert h.node.get_parameter(DETECTIONS_OUT + "reliability").value == "best_effort"
    assert h.node._inputs["image"].qos_profile.reliability == ReliabilityPolicy.RELIABLE
    assert h.node._outputs["detections"].qos_profile.reliability == (
        ReliabilityPolicy.BEST_EFFORT)
    result = h.node.set_parameters([Parameter(IMAGE_IN + "reliability", value="best_effort")])
    assert not result[0].successful  # read-only: given at start or not at all


def test_an_override_given_at_start_changes_the_input_qos(harness, people):
    from rclpy.qos import ReliabilityPolicy

    image, _ = people
    h = harness(**{IMAGE_IN + "reliability": "best_effort", IMAGE_IN + "depth": 1,
                   DETECTIONS_OUT + "depth": 7})  # fmt: skip
    assert h.node.get_parameter("input_reliability").value == "reliable"  # the override wins
    qos = h.node._inputs["image"].qos_profile
    assert (qos.reliability, qos.depth) == (ReliabilityPolicy.BEST_EFFORT, 1)
    assert h.node.get_parameter(DETECTIONS_OUT + "depth").value == 7
    assert h.node._outputs["detections"].qos_profile.depth == 7
    # a best-effort camera now matches the input over DDS: its images are detected
    best_effort = h.helper.create_publisher(Image, topics.FUSED_IMAGE,
                                            make_qos("best_effort", 5))  # fmt: skip
    assert matched(best_effort)
    msg = array_to_image(image, "bgr8")
    msg.header.stamp.sec = 9
    for _ in range(3):  # best effort: a first sample may be lost while discovery settles
        best_effort.publish(msg)
        if wait_until(lambda: len(h.received) >= 1, timeout=3):
            break
    assert h.received and msg_to_detections(h.received[-1])[0] == 9_000_000_000


def test_an_output_override_decides_who_matches(harness):
    h = harness(**{DETECTIONS_OUT + "reliability": "best_effort"})
    reliable = h.helper.create_subscription(detection_message_type(), topics.DETECTIONS,
                                            lambda _: None, make_qos("reliable", 5))
    best_effort = h.helper.create_subscription(detection_message_type(), topics.DETECTIONS,
                                               lambda _: None, make_qos("best_effort", 5))
    assert matched(best_effort)
    assert matched(reliable, 0)  # a best-effort writer never serves a reliable reader


@pytest.mark.parametrize(
    ("name", "value", "reason"),
    [
        (IMAGE_IN + "reliability", "sometimes", "must be one of"),
        (IMAGE_IN + "depth", -1, "integer >= 0"),
        (DETECTIONS_OUT + "durability", "forever", "must be one of"),
    ],
)
def test_an_invalid_override_is_refused_at_start_with_the_reason(context, name, value, reason):
    with pytest.raises(ValueError, match=reason) as refused:
        DetectorNode(context=context, parameter_overrides=[
            Parameter("backend", value="hog"), Parameter(name, value=value)])
    assert name in str(refused.value)
