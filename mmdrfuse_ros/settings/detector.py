"""The detector node's parameters, and how their values become ``create_detector`` arguments.

:func:`check_detector_values` is the one check of these values, for the node (at start and on
every change), the replay and the launch checks: the table's choices and ranges, then
``create_detector`` itself, which refuses what the detector cannot work with (a model is
loaded and run once on a blank frame).

The default backend ``auto`` runs YOLOX when a model is found (``model_path``, else
``$MMDRFUSE_MODEL_DIR``, else the user cache that ``mmdrfuse models fetch`` fills) and falls
back to HOG, loudly, when none is.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from mmdrfuse_ros.detection import BACKENDS, create_detector
from mmdrfuse_ros.detection.hog import HogPeopleDetector
from mmdrfuse_ros.detection.yolo_onnx import LAYOUTS, RUNTIMES

from .qos import OUTPUT_DEPTH, RELIABILITIES
from .spec import INPUT_TIMEOUT, Param, check_table

_HOG = inspect.signature(HogPeopleDetector).parameters  # HOG defaults live in one place


def _hog_default(name: str) -> Any:
    return _HOG[name].default


DETECTOR_PARAMS: tuple[Param, ...] = (
    Param("backend", "auto", "detector: auto (YOLOX when a model is found, else the HOG "
          "fallback, with a WARN), yolox (the found YOLOX model, or refuse), onnx (any "
          "YOLOX/YOLOv5/YOLOv8 export at model_path) or hog (OpenCV people detector: no "
          "download, far weaker)", choices=BACKENDS, live=True),
    Param("model_path", "", "ONNX model; '' = discovery for auto/yolox ($MMDRFUSE_MODEL_DIR/"
          "yolox_nano.onnx, then the user cache filled by `mmdrfuse models fetch`)", live=True),
    Param("score_threshold", _hog_default("score_threshold"), "minimum detection score "
          "(HOG: SVM margin; onnx: class probability)", float_range=(-10.0, 10.0), live=True),
    Param("nms_iou", _hog_default("nms_iou"), "IoU above which the weaker of two boxes is "
          "suppressed", float_range=(0.0, 1.0), live=True),
    Param("hog_win_stride", _hog_default("win_stride"), "HOG window stride in pixels",
          int_range=(1, 64), live=True),
    Param("hog_scale", _hog_default("scale"), "HOG pyramid scale step (> 1)",
          float_range=(1.01, 2.0), live=True),
    Param("hog_max_width", _hog_default("max_width"), "HOG downscales wider images to this "
          "width first (speed against the smallest people)", int_range=(64, 8192), live=True),
    Param("onnx_input_size", 0, "network input size; 0 = from the model (else 640)",
          int_range=(0, 4096), live=True),
    Param("onnx_layout", "auto", "YOLO output layout", choices=LAYOUTS, live=True),
    Param("onnx_classes", [0], "class ids to keep (COCO person = 0)", live=True),
    Param("onnx_runtime", "auto", "ONNX runtime: auto (onnxruntime if installed, CUDA first; "
          "else OpenCV DNN), onnxruntime or opencv", choices=RUNTIMES, live=True),
    Param("intra_op_threads", 1, "onnxruntime threads per inference (0 = all cores, or "
          "`threads` when that is set; never more than `threads`); 1 leaves the other cores to "
          "the fusion node on a small computer", int_range=(0, 256), live=True),
    Param("threads", 0, "thread budget of the detector's OpenCV work (image conversion, "
          "letterbox, HOG, the OpenCV DNN runtime), process-wide, and the most threads "
          "onnxruntime gets; 0 = the libraries' defaults (all cores)", int_range=(0, 1024),
          live=True),
    Param("publish_image", False, "also publish detections/image with the boxes drawn "
          "(on configure)"),
    Param("input_reliability", "reliable", "QoS reliability of the image input (on activate)",
          choices=RELIABILITIES),
    Param("input_depth", 2, "QoS depth of the image input (on activate)", int_range=(1, 1000)),
    Param("output_reliability", "reliable", "QoS reliability of the outputs (on configure)",
          choices=RELIABILITIES),
    Param("output_depth", OUTPUT_DEPTH, "QoS depth of the outputs (on configure)",
          int_range=(1, 1000)),
    INPUT_TIMEOUT,
    Param("autostart", True, "configure and activate at start (false: wait for lifecycle "
          "transitions)"),
)  # fmt: skip


def detector_kwargs(values: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """(backend, keyword arguments of create_detector) from parameter values: the HOG
    parameters for hog, the ONNX ones for a model backend, both where HOG is a fallback."""
    backend = values["backend"]
    common = {"score_threshold": values["score_threshold"], "nms_iou": values["nms_iou"]}
    hog = {"win_stride": values["hog_win_stride"], "scale": values["hog_scale"],
           "max_width": values["hog_max_width"]}  # fmt: skip
    classes = tuple(int(c) for c in values["onnx_classes"] or ()) or None
    onnx = {"model_path": values["model_path"], "input_size": values["onnx_input_size"],
            "layout": values["onnx_layout"], "classes": classes, "runtime": values["onnx_runtime"],
            "intra_op_threads": onnx_threads(values)}
    if backend == "hog":
        return backend, {**common, **hog}
    if backend in ("onnx", "yolox"):
        return backend, {**common, **onnx}
    return backend, {**common, **hog, **onnx}


def onnx_threads(values: Mapping[str, Any]) -> int:
    """onnxruntime's intra-op threads: ``intra_op_threads`` within the ``threads`` budget
    (the budget itself when ``intra_op_threads`` is 0; 0 = onnxruntime's default)."""
    asked, budget = int(values["intra_op_threads"]), int(values["threads"])
    if budget and asked:
        return min(asked, budget)
    return asked or budget


def check_detector_values(values: Mapping[str, Any], load_model: bool = False) -> str | None:
    """Why the detector node would refuse these parameter values (a full table), or None.

    ``create_detector`` is the judge: it is called to check, and whatever it raises is the
    reason. Without ``load_model`` only the calls that read no model file are made (HOG, and an
    onnx backend without model_path).
    """
    if reason := check_table(DETECTOR_PARAMS, values):
        return reason
    backend, kwargs = detector_kwargs(values)
    reads_model = backend != "hog" and not (backend == "onnx" and not kwargs["model_path"])
    if reads_model and not load_model:
        return None
    try:
        create_detector(backend, **kwargs)
    except (ValueError, RuntimeError) as exc:
        return str(exc)
    except Exception as exc:  # a model that breaks its loader: a reason, never a crash
        return f"{type(exc).__name__}: {exc}"
    return None
