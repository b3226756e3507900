"""Detectors without ROS: HOG on rendered pedestrians, the YOLO ONNX decoder on models built
here whose output is known, NMS, and the detections message round trip."""

from __future__ import annotations

import numpy as np
import pytest

from mmdrfuse_ros.bag.synth import NightScene, SynthConfig
from mmdrfuse_ros.detection import Detection, create_detector, draw_detections, nms
from mmdrfuse_ros.detection.messages import detections_to_msg, msg_to_detections
from mmdrfuse_ros.detection.yolo_onnx import YoloOnnxDetector, decode, letterbox
from mmdrfuse_ros.metrics.detection import average_precision

onnx = pytest.importorskip("onnx")


def iou(a: Detection, box) -> float:
    w = max(0.0, min(a.x2, box[2]) - max(a.x1, box[0]))
    h = max(0.0, min(a.y2, box[3]) - max(a.y1, box[1]))
    inter = w * h
    return inter / (a.width * a.height + (box[2] - box[0]) * (box[3] - box[1]) - inter)


# --- HOG ----------------------------------------------------------------------------------


def test_hog_finds_a_rendered_pedestrian_with_a_tight_box():
    scene = NightScene(SynthConfig(rgb_size=(640, 360)))
    detector = create_detector("hog")
    matched = 0
    for t in (0.5, 1.0):
        image, boxes, _ = scene.render_rgb(t, np.random.default_rng(0))
        detections = detector.detect(image)
        matched += sum(any(iou(d, b) >= 0.5 for b in boxes) for d in detections)
        assert all(d.label == "person" and d.class_id == 0 for d in detections)
    assert matched >= 1, "HOG should find the lit pedestrian of the synthetic scene"


def test_hog_finds_nobody_in_an_empty_or_tiny_image():
    detector = create_detector("hog")
    rng = np.random.default_rng(0)
    assert detector.detect(rng.integers(0, 30, (360, 640, 3), dtype=np.uint8)) == []
    assert detector.detect(np.zeros((50, 40), np.uint8)) == []  # smaller than the window


def test_hog_without_opencv_people_detector_says_what_to_install(monkeypatch):
    # OpenCV 5 (no HOG) cannot be installed beside 4.x here: hide the attribute instead.
    import cv2

    monkeypatch.delattr(cv2, "HOGDescriptor_getDefaultPeopleDetector")
    with pytest.raises(RuntimeError, match="opencv-python-headless<5"):
        create_detector("hog")


def test_unknown_backend_and_missing_model_are_refused(tmp_path):
    with pytest.raises(ValueError, match="backend"):
        create_detector("ssd")
    with pytest.raises(ValueError, match="model_path"):
        create_detector("onnx")
    with pytest.raises(ValueError, match="does not exist"):
        create_detector("onnx", model_path=str(tmp_path / "none.onnx"))
    (tmp_path / "bad.onnx").write_bytes(b"not a model")
    with pytest.raises(ValueError, match="cannot load"):
        create_detector("onnx", model_path=str(tmp_path / "bad.onnx"))


# --- NMS ------------------------------------------------------------------------------------


def test_nms_keeps_the_best_of_overlapping_boxes_per_class():
    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [20, 20, 30, 30], [1, 1, 10, 10]], float)
    scores = np.array([0.9, 0.8, 0.7, 0.95])
    assert list(nms(boxes, scores, 0.5)) == [3, 2]
    # a box of another class is not suppressed by an overlapping one
    assert sorted(nms(boxes, scores, 0.5, class_ids=np.array([0, 1, 0, 0]))) == [1, 2, 3]
    assert len(nms(np.zeros((0, 4)), np.zeros(0), 0.5)) == 0


# --- YOLO ONNX ------------------------------------------------------------------------------

NET = 64  # network input size of the test models


def constant_yolo(path, output: np.ndarray) -> str:
    """An ONNX model that takes ``images`` [1,3,NET,NET] and returns ``output`` (the input is
    wired in through ``0 * mean(input)`` so the graph is a real function of it)."""
    from onnx import TensorProto, helper, numpy_helper

    const = numpy_helper.from_array(output.astype(np.float32), "const")
    zero = numpy_helper.from_array(np.zeros(1, np.float32), "zero")
    nodes = [
        helper.make_node("ReduceMean", ["images"], ["mean"], keepdims=1),
        helper.make_node("Mul", ["mean", "zero"], ["nothing"]),
        helper.make_node("Reshape", ["nothing", "shape"], ["scalar"]),
        helper.make_node("Add", ["const", "scalar"], ["output0"]),
    ]
    shape = numpy_helper.from_array(np.array([1], np.int64), "shape")
    graph = helper.make_graph(
        nodes, "constant_yolo",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, NET, NET])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, list(output.shape))],
        initializer=[const, zero, shape],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return str(path)


# Rows in letterboxed network pixels: cx, cy, w, h, objectness, class 0 (person), class 1.
V5_ROWS = np.array([
    [32, 32, 20, 10, 0.9, 0.9, 0.1],  # a person: score 0.81
    [33, 32, 20, 10, 0.8, 0.9, 0.1],  # the same person again, weaker: suppressed by NMS
    [10, 10, 5, 5, 0.2, 0.5, 0.5],  # too weak: 0.1
    [50, 40, 10, 10, 0.9, 0.1, 0.9],  # class 1: not a person
], np.float32)


def v8_output() -> np.ndarray:
    rows = V5_ROWS[:, [0, 1, 2, 3, 5, 6]].copy()
    rows[:, 4:] *= V5_ROWS[:, 4:5]  # v8 has no objectness: fold it into the class scores
    return rows.T[None]  # [1, 4 + C, N]


@pytest.mark.parametrize("runtime", ["onnxruntime", "opencv"])
@pytest.mark.parametrize("layout", ["v5", "v8"])
def test_yolo_decoder_maps_boxes_back_through_the_letterbox(tmp_path, layout, runtime):
    output = V5_ROWS[None] if layout == "v5" else v8_output()
    model = constant_yolo(tmp_path / f"{layout}.onnx", output)
    detector = YoloOnnxDetector(model, score_threshold=0.25, layout=layout, runtime=runtime)
    assert detector.input_size == NET and detector.runtime == runtime
    # A 128x64 image: scale 0.5 into 64x32, padded 16 px above and below.
    detections = detector.detect(np.zeros((64, 128, 3), np.uint8))
    assert len(detections) == 1
    d = detections[0]
    np.testing.assert_allclose([d.x1, d.y1, d.x2, d.y2], [44, 22, 84, 42], atol=1e-4)
    assert d.score == pytest.approx(0.81, abs=1e-6) and d.label == "person"
    everything = YoloOnnxDetector(model, score_threshold=0.25, layout=layout, runtime=runtime,
                                  classes=None).detect(np.zeros((64, 128, 3), np.uint8))
    assert sorted(x.class_id for x in everything) == [0, 1]


def test_layout_is_detected_from_the_output_shape():
    many = np.zeros((1, 100, 7), np.float32)  # v5: N rows of 5 + C
    many[0, 0] = [32, 32, 20, 10, 0.9, 0.9, 0.1]
    boxes, scores, _ = decode(many)
    assert len(boxes) == 1 and scores[0] == pytest.approx(0.81)
    boxes, scores, _ = decode(np.ascontiguousarray(many[0][:, [0, 1, 2, 3, 5, 6]].T[None]))
    assert len(boxes) == 1 and scores[0] == pytest.approx(0.9)
    boxes, _, _ = decode(many[:, :4])  # fewer rows than attributes: still v5, not v8
    assert len(boxes) == 1
    with pytest.raises(ValueError):
        decode(np.zeros((2, 3)), layout="v5")


def test_letterbox_geometry():
    boxed, scale, pad = letterbox(np.zeros((100, 200, 3), np.uint8), 64)
    assert boxed.shape == (64, 64, 3) and scale == pytest.approx(0.32) and pad == (0.0, 16.0)
    assert boxed[0, 0, 0] == 114 and boxed[32, 32, 0] == 0


# --- messages and drawing -------------------------------------------------------------------


def test_detections_message_round_trip():
    from std_msgs.msg import Header

    pytest.importorskip("std_msgs")
    header = Header(frame_id="rgb_optical_frame")
    header.stamp.sec, header.stamp.nanosec = 12, 345
    detections = [Detection(10, 20, 50, 120, 0.9), Detection(5, 5, 15, 40, 0.4, 3, "3")]
    stamp_ns, frame_id, back = msg_to_detections(detections_to_msg(detections, header))
    assert stamp_ns == 12_000_000_345 and frame_id == "rgb_optical_frame"
    assert back == detections
    with pytest.raises(ValueError, match="not a detections message"):
        from std_msgs.msg import String

        msg_to_detections(String(data="{}"))


def test_detections_feed_the_ap_metric():
    truth = [[[10, 20, 50, 120]]]
    found = [[Detection(10, 20, 50, 120, 0.9).as_row()]]
    assert average_precision(found, truth)["AP50"] == pytest.approx(1.0)


def test_draw_detections_draws_on_a_copy():
    image = np.zeros((64, 64), np.uint8)
    drawn = draw_detections(image, [Detection(5, 5, 40, 60, 0.5)])
    assert drawn.shape == (64, 64, 3) and drawn.any() and not image.any()
