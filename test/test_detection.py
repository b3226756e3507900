"""Detectors without ROS: HOG on rendered pedestrians, the YOLO ONNX decoder on models built
here whose output is known, NMS, and the detections message round trip."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mmdrfuse_ros.bag.synth import NightScene, SynthConfig
from mmdrfuse_ros.detection import (
    Detection,
    create_detector,
    draw_detections,
    nms,
    resolve_detector,
)
from mmdrfuse_ros.detection.messages import detections_to_msg, msg_to_detections
from mmdrfuse_ros.detection.models import find_model
from mmdrfuse_ros.detection.yolo_layouts import place_layout
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


def constant_yolo(path, output: np.ndarray, input_shape=(1, 3, NET, NET), input_type=None,
                  with_input: bool = True) -> str:
    """An ONNX model that takes ``images`` (default [1,3,NET,NET] float) and returns ``output``
    (the input is wired in through ``0 * mean(input)`` so the graph is a real function of it)."""
    from onnx import TensorProto, helper, numpy_helper

    const = numpy_helper.from_array(output.astype(np.float32), "const")
    zero = numpy_helper.from_array(np.zeros(1, np.float32), "zero")
    shape = numpy_helper.from_array(np.array([1], np.int64), "shape")
    if with_input:
        nodes = [
            helper.make_node("Cast", ["images"], ["as_float"], to=TensorProto.FLOAT),
            helper.make_node("ReduceMean", ["as_float"], ["mean"], keepdims=1),
            helper.make_node("Mul", ["mean", "zero"], ["nothing"]),
            helper.make_node("Reshape", ["nothing", "shape"], ["scalar"]),
            helper.make_node("Add", ["const", "scalar"], ["output0"]),
        ]
        inputs = [helper.make_tensor_value_info("images", input_type or TensorProto.FLOAT,
                                                list(input_shape))]
    else:
        nodes, inputs = [helper.make_node("Identity", ["const"], ["output0"])], []
    graph = helper.make_graph(
        nodes, "constant_yolo", inputs,
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
    boxes, scores, _ = decode(many, layout="v5")
    assert len(boxes) == 1 and scores[0] == pytest.approx(0.81)
    v8 = np.ascontiguousarray(many[0][:, [0, 1, 2, 3, 5, 6]].T[None])
    boxes, scores, _ = decode(v8, layout="v8")
    assert len(boxes) == 1 and scores[0] == pytest.approx(0.9)
    boxes, _, _ = decode(many[:, :4], layout="v5")  # fewer rows than attributes: still v5
    assert len(boxes) == 1
    with pytest.raises(ValueError):
        decode(np.zeros((2, 3)), layout="v5")
    # auto places an output only against the input size, and refuses what fits no layout
    with pytest.raises(ValueError, match=r"\[1, 100, 7\]"):
        decode(many, input_hw=(64, 64))
    with pytest.raises(ValueError, match="input size"):
        decode(many)


def test_letterbox_geometry():
    boxed, scale, pad = letterbox(np.zeros((100, 200, 3), np.uint8), 64)
    assert boxed.shape == (64, 64, 3) and scale == pytest.approx(0.32) and pad == (0.0, 16.0)
    assert boxed[0, 0, 0] == 114 and boxed[32, 32, 0] == 0


# --- YOLOX ----------------------------------------------------------------------------------

YOLOX_ROWS = 8 * 8 + 4 * 4 + 2 * 2  # a 64x64 input: strides 8, 16, 32


def yolox_output() -> np.ndarray:
    """Raw YOLOX grid rows (dx, dy, log w, log h, objectness, person, class 1) for a 64x64
    input, with two known boxes; every other cell has objectness 0."""
    out = np.zeros((YOLOX_ROWS, 7), np.float32)
    # stride 8, cell (x 3, y 1) = row 1 * 8 + 3: centre (28, 12), 20 x 16 px, score 0.9 x 0.8
    out[11] = [0.5, 0.5, np.log(20 / 8), np.log(16 / 8), 0.9, 0.8, 0.1]
    # stride 16, cell (x 2, y 0) = row 64 + 2: centre (40, 8), 16 x 8 px, score 0.5 x 0.9
    out[66] = [0.5, 0.5, 0.0, np.log(8 / 16), 0.5, 0.9, 0.2]
    # stride 32, cell (x 1, y 1) = row 80 + 3: class 1 wins, not a person
    out[83] = [0.0, 0.0, 0.0, 0.0, 0.9, 0.1, 0.9]
    return out[None]


def test_yolox_decoder_builds_grids_from_the_input_size():
    boxes, scores, ids = decode(yolox_output(), "yolox", 0.25, (0,), input_hw=(NET, NET))
    order = np.argsort(-scores)
    np.testing.assert_allclose(boxes[order], [[18, 4, 38, 20], [32, 4, 48, 12]], atol=1e-4)
    np.testing.assert_allclose(scores[order], [0.72, 0.45], atol=1e-6)
    assert list(ids) == [0, 0]
    # auto places [1, 84, 7] for a 64x64 input as YOLOX
    assert len(decode(yolox_output(), input_hw=(NET, NET))[0]) == 2
    with pytest.raises(ValueError, match="84 rows"):
        decode(yolox_output()[:, :80], "yolox", input_hw=(NET, NET))


def test_yolox_detector_letterboxes_top_left_and_maps_boxes_back(tmp_path):
    model = constant_yolo(tmp_path / "yolox.onnx", yolox_output())
    detector = YoloOnnxDetector(model, score_threshold=0.25)
    assert detector.layout == "yolox" and detector.input_hw == (NET, NET)
    # 128x64: scale 0.5 into 64x32 at the TOP-LEFT (no offset), so image = net / 0.5
    found = sorted(detector.detect(np.zeros((64, 128, 3), np.uint8)), key=lambda d: -d.score)
    assert len(found) == 2 and all(d.label == "person" for d in found)
    np.testing.assert_allclose([found[0].x1, found[0].y1, found[0].x2, found[0].y2],
                               [36, 8, 76, 40], atol=1e-4)
    np.testing.assert_allclose([found[1].x1, found[1].y1, found[1].x2, found[1].y2],
                               [64, 8, 96, 24], atol=1e-4)
    assert found[0].score == pytest.approx(0.72, abs=1e-6)


def test_yolox_input_is_bgr_0_255_top_left_without_scaling(tmp_path):
    detector = YoloOnnxDetector(constant_yolo(tmp_path / "yolox.onnx", yolox_output()))
    image = np.zeros((32, 64, 3), np.uint8)
    image[..., 0], image[..., 2] = 200, 10  # blue 200, red 10 (BGR)
    boxed, scale, pad = letterbox(image, (NET, NET), center=False)
    assert scale == 1.0 and pad == (0.0, 0.0) and boxed[40, 0, 0] == 114  # padded below
    blob = detector._blob(boxed)
    assert blob.shape == (1, 3, NET, NET) and blob.dtype == np.float32
    assert blob[0, 0, 0, 0] == 200 and blob[0, 2, 0, 0] == 10 and blob[0, 0, 63, 0] == 114


@pytest.mark.parametrize(("shape", "size", "layout"), [
    ((1, 3549, 85), (416, 416), "yolox"),   # YOLOX-Nano
    ((1, 8400, 85), (640, 640), "yolox"),   # YOLOX-S at 640
    ((1, 25200, 85), (640, 640), "v5"),     # YOLOv5: 3 anchors per cell
    ((1, 84, 8400), (640, 640), "v8"),      # YOLOv8: [1, 4 + C, N]
    ((1, 6, 84), (64, 64), "v8"),           # a small v8 (one class): not mistaken for v5
    ((1, 252, 6), (64, 64), "v5"),          # a small v5 (one class)
    ((1, 5040, 85), (384, 640), "yolox"),   # a rectangular input
])
def test_auto_places_yolox_v5_and_v8_from_the_shapes(shape, size, layout):
    assert place_layout(shape, size) == layout


@pytest.mark.parametrize(("shape", "size", "match"), [
    ((1, 3549, 85), (640, 640), r"\[1, 3549, 85\].*yolox \[1, 8400"),  # input size mismatch
    ((1, 100, 7), (64, 64), "fits none"),
    ((1, 84, 4), (64, 64), "fits none"),                      # 4 columns: no class scores
    ((2, 84, 7), (64, 64), "batch of 2"),
    ((1, 1, 84, 7, 1), (64, 64), "cannot decode"),            # 5-D
    ((588,), (64, 64), "cannot decode"),                      # 1-D
    ((1, 84, 84), (64, 64), "fits none"),                     # no short attribute axis
])
def test_auto_refuses_an_output_it_cannot_place(shape, size, match):
    with pytest.raises(ValueError, match=match):
        place_layout(shape, size)


def test_non_finite_outputs_give_no_nan_detections(tmp_path):
    raw = yolox_output()
    raw[0, 11, 2] = np.inf  # an infinite log-width
    raw[0, 66, 4] = np.nan  # a NaN objectness
    raw[0, 20] = [0, 0, 200.0, 0, 0.9, 0.9, 0]  # exp overflow
    boxes, scores, _ = decode(raw, "yolox", 0.25, (0,), input_hw=(NET, NET))
    assert np.isfinite(boxes).all() and np.isfinite(scores).all()
    detector = YoloOnnxDetector(constant_yolo(tmp_path / "nan.onnx", raw))
    for d in detector.detect(np.zeros((64, 64, 3), np.uint8)):
        assert np.isfinite([d.x1, d.y1, d.x2, d.y2, d.score]).all()


# --- bad models -------------------------------------------------------------------------------


def bad_models(tmp_path) -> dict[str, tuple[str, str]]:
    """name -> (model path, text the error must contain)."""
    from onnx import TensorProto

    (tmp_path / "empty.onnx").write_bytes(b"")
    out = yolox_output()
    return {
        "empty": (str(tmp_path / "empty.onnx"), "empty"),
        "no inputs": (constant_yolo(tmp_path / "noin.onnx", out, with_input=False), "no inputs"),
        "uint8 input": (constant_yolo(tmp_path / "u8.onnx", out, input_type=TensorProto.UINT8),
                        "uint8"),
        "rank-2 input": (constant_yolo(tmp_path / "r2.onnx", out, input_shape=(3, NET)),
                         "3-channel image"),
        "batch 2": (constant_yolo(tmp_path / "b2.onnx", out, input_shape=(2, 3, NET, NET)),
                    "3-channel image"),
        "5-D output": (constant_yolo(tmp_path / "o5.onnx", out[:, :, :, None, None]),
                       "cannot decode"),
        "1-D output": (constant_yolo(tmp_path / "o1.onnx", out.ravel()), "cannot decode"),
        "4 columns": (constant_yolo(tmp_path / "c4.onnx", out[:, :, :4]), "fits none"),
        "wrong size": (constant_yolo(tmp_path / "size.onnx", np.zeros((1, 3549, 85))),
                       "fits none"),
    }


def test_bad_models_are_refused_at_construction_naming_the_file(tmp_path):
    for name, (path, match) in bad_models(tmp_path).items():
        with pytest.raises(ValueError, match=match) as err:
            create_detector("onnx", model_path=path)
        assert path in str(err.value), name
    model = constant_yolo(tmp_path / "ok.onnx", yolox_output())
    with pytest.raises(ValueError, match="takes a 64x64 input"):
        create_detector("onnx", model_path=model, input_size=416)


def test_intra_op_threads_reach_onnxruntime(tmp_path):
    model = constant_yolo(tmp_path / "yolox.onnx", yolox_output())
    detector = create_detector("onnx", model_path=model, intra_op_threads=1)
    assert detector._session.get_session_options().intra_op_num_threads == 1
    assert detector.describe()["intra_op_threads"] == 1
    with pytest.raises(ValueError, match="intra_op_threads"):
        create_detector("onnx", model_path=model, intra_op_threads=-1)


# --- discovery and the HOG fallback ----------------------------------------------------------


@pytest.fixture
def no_model(tmp_path, monkeypatch):
    """No model anywhere: an empty cache, no $MMDRFUSE_MODEL_DIR."""
    monkeypatch.setenv("MMDRFUSE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("MMDRFUSE_MODEL_DIR", raising=False)
    return tmp_path


def test_auto_falls_back_to_hog_loudly_without_a_model(no_model, caplog):
    assert find_model() is None
    with caplog.at_level("WARNING", logger="mmdrfuse_ros.detection"):
        detector, reason = resolve_detector("auto", win_stride=8, input_size=0)
    assert detector.name == "hog" and "mmdrfuse models fetch" in reason
    assert str(no_model / "cache" / "models" / "yolox_nano.onnx") in reason
    assert detector.fallback_reason == reason and "mmdrfuse models fetch" in caplog.text
    assert create_detector("auto").fallback_reason == reason
    with pytest.raises(ValueError, match="mmdrfuse models fetch"):
        create_detector("yolox")


def test_discovery_order_and_auto_uses_yolox(no_model, monkeypatch):
    cache = no_model / "cache" / "models"
    cache.mkdir(parents=True)
    constant_yolo(cache / "yolox_nano.onnx", yolox_output())
    assert find_model() == cache / "yolox_nano.onnx"
    own = no_model / "mine"
    own.mkdir()
    constant_yolo(own / "yolox_nano.onnx", yolox_output())
    monkeypatch.setenv("MMDRFUSE_MODEL_DIR", str(own))
    assert find_model() == own / "yolox_nano.onnx"
    assert find_model("~/x.onnx") == Path("~/x.onnx").expanduser()
    detector, reason = resolve_detector("auto", score_threshold=0.25, win_stride=8)
    assert reason is None and detector.layout == "yolox"
    assert detector.model_path == own / "yolox_nano.onnx"
    assert create_detector("yolox").layout == "yolox"


def test_auto_never_falls_back_from_a_model_path_that_was_asked_for(no_model):
    with pytest.raises(ValueError, match="does not exist"):
        resolve_detector("auto", model_path=str(no_model / "missing.onnx"))
    with pytest.raises(ValueError, match="unknown detector parameter"):
        resolve_detector("auto", colour="red")
    with pytest.raises(ValueError, match="takes no parameter"):
        create_detector("hog", intra_op_threads=1)


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
