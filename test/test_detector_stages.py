"""Where a detector node's image time goes (stage p50/p95), and the detector's thread budget.

The detectors report their own steps through ``detect(image, timings=...)``; the node adds its
message conversion, waiting and publishing, and reports every stage in ``stats()`` and on
``/diagnostics``. Timeouts only bound the waiting; no assertion is about speed.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from typing import Any

import cv2
import numpy as np
import pytest

from mmdrfuse_ros.bag.synth import NightScene, SynthConfig
from mmdrfuse_ros.detection import create_detector
from mmdrfuse_ros.detection.base import Detection
from mmdrfuse_ros.settings import defaults
from mmdrfuse_ros.settings.detector import DETECTOR_PARAMS, detector_kwargs, onnx_threads

STEPS = ("preprocess", "inference", "decode")


@pytest.fixture(scope="module")
def people() -> np.ndarray:
    """A 640x360 night frame with a lit pedestrian that HOG finds (see test_detection.py)."""
    image, _, _ = NightScene(SynthConfig(rgb_size=(640, 360))).render_rgb(
        0.5, np.random.default_rng(0)
    )
    return image


@pytest.fixture
def opencv_threads() -> Iterator[None]:
    """Put OpenCV's process-wide thread count back after the test."""
    before = cv2.getNumThreads()
    yield
    cv2.setNumThreads(before)


# --- the detectors' own steps, without ROS -----------------------------------------------------


def test_hog_reports_its_steps_and_detects_the_same(people):
    detector = create_detector("hog")
    timings: dict[str, float] = {}
    timed = detector.detect(people, timings=timings)
    assert timed == detector.detect(people) and timed  # the same boxes, with or without timings
    assert set(timings) == set(STEPS) and all(v >= 0 for v in timings.values())
    assert timings["inference"] > 0  # the window search ran
    small: dict[str, float] = {}
    assert detector.detect(np.zeros((40, 30, 3), np.uint8), timings=small) == []
    assert set(small) == set(STEPS) and small["inference"] == 0.0  # no window fits: no search


def test_onnx_reports_its_steps_and_detects_the_same(tmp_path):
    from test_detection import V5_ROWS, constant_yolo  # the test model whose output is known

    detector = create_detector("onnx", model_path=constant_yolo(tmp_path / "v5.onnx",
                               V5_ROWS[None]), layout="v5", score_threshold=0.25)  # fmt: skip
    image = np.zeros((64, 128, 3), np.uint8)
    timings: dict[str, float] = {}
    timed = detector.detect(image, timings=timings)
    assert timed == detector.detect(image) and len(timed) == 1
    assert set(timings) == set(STEPS) and all(v >= 0 for v in timings.values())


# --- the thread budget ------------------------------------------------------------------------


@pytest.mark.parametrize(("intra", "budget", "expected"),
                         [(1, 0, 1), (0, 0, 0), (0, 2, 2), (4, 2, 2), (1, 2, 1)])  # fmt: skip
def test_onnxruntime_threads_stay_within_the_budget(intra, budget, expected):
    values = {**defaults(DETECTOR_PARAMS), "intra_op_threads": intra, "threads": budget,
              "backend": "onnx"}  # fmt: skip
    assert onnx_threads(values) == expected
    assert detector_kwargs(values)[1]["intra_op_threads"] == expected


def test_threads_is_a_live_parameter_with_default_zero():
    spec = {p.name: p for p in DETECTOR_PARAMS}["threads"]
    assert spec.default == 0 and spec.live and spec.int_range == (0, 1024)


# --- the node over real DDS --------------------------------------------------------------------

try:
    from node_helpers import DetectorHarness, closing_all, wait_until
    from rclpy.parameter import Parameter

    from mmdrfuse_ros.msgs.images import array_to_image
    from mmdrfuse_ros.nodes import detector_node
    from mmdrfuse_ros.nodes.detector_node import STAGES, DetectorNode
    from mmdrfuse_ros.nodes.diagnostics import status_values
    from mmdrfuse_ros.nodes.timing import stage_keys, stage_table
except ImportError as exc:  # the ROS-free tests above still run
    pytestmark_ros = pytest.mark.skip(reason=f"ROS 2 Python packages missing: {exc}")
else:
    pytestmark_ros = pytest.mark.ros


def send_frames(rig: Any, image: np.ndarray, count: int) -> None:
    """``count`` images, one at a time (each detected before the next is sent)."""
    before = len(rig.received)
    for k in range(1, count + 1):
        msg = array_to_image(image, "bgr8")
        msg.header.stamp.sec = before + k
        rig.pub.publish(msg)
        assert wait_until(lambda k=k: len(rig.received) >= before + k), rig.node.stats()


@pytest.fixture
def rig(context):
    yield from closing_all(lambda **params: DetectorHarness(context, **params))


@pytestmark_ros
def test_stage_keys_are_there_from_the_start_and_nan_until_an_image(context):
    node = DetectorNode(context=context, parameter_overrides=[Parameter("backend", value="hog")])
    try:
        stats = node.stats()
        assert [k for k in stats if k.startswith("stage_")] == stage_keys(STAGES)
        assert all(math.isnan(stats[k]) for k in stage_keys(STAGES))
    finally:
        node.destroy_node()


@pytestmark_ros
def test_every_stage_is_timed_after_a_few_images(rig, people):
    r = rig(publish_image=True)
    send_frames(r, people, 3)
    # the publish stage is recorded just after the message leaves: wait for the third record
    assert wait_until(lambda: r.node.stages.count("publish") == 3)
    stats = r.node.stats()
    table = stage_table(stats)
    assert list(table) == list(STAGES)  # pipeline order
    for stage, percentiles in table.items():
        assert set(percentiles) == {50, 95}
        assert all(math.isfinite(v) and v >= 0 for v in percentiles.values()), (stage, percentiles)
        assert percentiles[95] >= percentiles[50]
    assert table["inference"][50] > 0  # HOG's window search is measured, not left at 0
    assert r.node.stages.count("receive") == r.node.stages.count("publish") == 3


@pytestmark_ros
def test_stages_are_on_diagnostics(rig, people):
    r = rig()
    send_frames(r, people, 2)

    def timed_status() -> dict[str, str] | None:
        for array in list(r.diagnostics):
            for status in array.status:
                values = status_values(status)
                if status.name == "detector_node: detector" and values.get("processed") == "2":
                    return values
        return None

    assert wait_until(lambda: timed_status() is not None, timeout=10)
    table = stage_table(timed_status())
    assert list(table) == list(STAGES)
    assert all(v >= 0 for t in table.values() for v in t.values())


@pytestmark_ros
def test_a_detector_without_steps_is_timed_whole_as_inference():
    class Plain:
        name = "plain"

        def detect(self, image: np.ndarray) -> list[Detection]:
            time.sleep(0.002)
            return [Detection(1, 1, 5, 5, 0.9)]

    found, steps = detector_node._timed_detect(Plain(), np.zeros((8, 8, 3), np.uint8))
    assert len(found) == 1 and set(steps) == {"inference"} and steps["inference"] >= 0.002
    found, steps = detector_node._timed_detect(create_detector("hog"),
                                               np.zeros((200, 100, 3), np.uint8))  # fmt: skip
    assert set(steps) == set(STEPS)


@pytestmark_ros
def test_threads_bound_opencv_in_the_detector_process(rig, people, opencv_threads):
    r = rig(threads=1)
    assert cv2.getNumThreads() == 1
    send_frames(r, people, 1)
    cv2.setNumThreads(4)
    assert r.node.set_parameters([Parameter("threads", value=2)])[0].successful
    send_frames(r, people, 2)  # the rebuild before the next image applies it
    assert cv2.getNumThreads() == 2
    assert not r.node.set_parameters([Parameter("threads", value=-1)])[0].successful


@pytestmark_ros
def test_threads_cap_onnxruntime(context, tmp_path, opencv_threads):
    pytest.importorskip("onnxruntime")
    from test_detection import V5_ROWS, constant_yolo

    model = constant_yolo(tmp_path / "v5.onnx", V5_ROWS[None])
    node = DetectorNode(context=context, parameter_overrides=[
        Parameter("backend", value="onnx"), Parameter("model_path", value=model),
        Parameter("onnx_layout", value="v5"), Parameter("onnx_runtime", value="onnxruntime"),
        Parameter("intra_op_threads", value=0), Parameter("threads", value=2)])
    try:
        assert node._built._session.get_session_options().intra_op_num_threads == 2
        assert node._built.describe()["intra_op_threads"] == 2
    finally:
        node.destroy_node()
