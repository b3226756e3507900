"""``detector_node``: pedestrians in the fused image (or any image topic).

A lifecycle node like ``fusion_node``: parameters declared and validated at construction;
configure creates the publishers; activate builds the detector, subscribes and starts the worker;
deactivate/cleanup release them. With ``autostart`` (default) it configures and activates itself.

The subscription callback only puts the newest image in a one-slot mailbox; a worker thread
detects on it and publishes. An image replaced before the worker took it is counted as a
``stale`` drop, so a slow detector (HOG on a big frame) never builds up latency.

Output: ``detections`` (vision_msgs/Detection2DArray where installed, else the JSON fallback of
:mod:`mmdrfuse_ros.detection.messages`) with the image's header unchanged, and optionally an
annotated ``detections/image``. Detector parameters apply at run time (rebuilt before the next
image); topic and QoS parameters at the next activation.
"""

from __future__ import annotations

import inspect
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

from rcl_interfaces.msg import SetParametersResult
from rclpy.lifecycle import LifecycleState, TransitionCallbackReturn
from rclpy.parameter import Parameter
from sensor_msgs.msg import Image

from mmdrfuse_ros import topics
from mmdrfuse_ros.detection import BACKENDS, Detector, create_detector, draw_detections
from mmdrfuse_ros.detection.hog import HogPeopleDetector
from mmdrfuse_ros.detection.messages import detection_message_type, detections_to_msg
from mmdrfuse_ros.detection.yolo_onnx import LAYOUTS, RUNTIMES
from mmdrfuse_ros.nodes.common import (
    LatestSlot,
    ManagedNode,
    Param,
    check_choice,
    descriptor_for,
    run_node,
)
from mmdrfuse_ros.nodes.diagnostics import (
    OK,
    WARN,
    Counters,
    DiagnosticReport,
    DiagnosticsPublisher,
    LatencyStats,
    RateMeter,
)
from mmdrfuse_ros.nodes.image_conversion import (
    MalformedImageError,
    UnsupportedEncodingError,
    array_to_image,
    image_to_array,
)
from mmdrfuse_ros.nodes.qos import OUTPUT_DEPTH, RELIABILITIES, make_qos
from mmdrfuse_ros.stamps import stamp_to_ns

NODE_NAME = "detector_node"
DROP_CAUSES = ("stale", "unsupported_encoding", "malformed_image", "inference", "publish")
_HOG = inspect.signature(HogPeopleDetector).parameters  # HOG defaults live in one place


def _hog_default(name: str) -> Any:
    return _HOG[name].default


PARAMS: tuple[Param, ...] = (
    Param("backend", "hog", "detector: hog (OpenCV people detector, no download) or onnx "
          "(YOLOv5/YOLOv8 ONNX model at model_path)", choices=BACKENDS, engine=True),
    Param("model_path", "", "ONNX model for backend onnx", engine=True),
    Param("score_threshold", _hog_default("score_threshold"), "minimum detection score "
          "(HOG: SVM margin; onnx: class probability)", float_range=(-10.0, 10.0), engine=True),
    Param("nms_iou", _hog_default("nms_iou"), "IoU above which the weaker of two boxes is "
          "suppressed", float_range=(0.0, 1.0), engine=True),
    Param("hog_win_stride", _hog_default("win_stride"), "HOG window stride in pixels",
          int_range=(1, 64), engine=True),
    Param("hog_scale", _hog_default("scale"), "HOG pyramid scale step (> 1)",
          float_range=(1.01, 2.0), engine=True),
    Param("hog_max_width", _hog_default("max_width"), "HOG downscales wider images to this "
          "width first (speed against the smallest people)", int_range=(64, 8192), engine=True),
    Param("onnx_input_size", 0, "network input size; 0 = from the model (else 640)",
          int_range=(0, 4096), engine=True),
    Param("onnx_layout", "auto", "YOLO output layout", choices=LAYOUTS, engine=True),
    Param("onnx_classes", [0], "class ids to keep (COCO person = 0)", engine=True),
    Param("onnx_runtime", "auto", "ONNX runtime: auto (onnxruntime if installed, CUDA first; "
          "else OpenCV DNN), onnxruntime or opencv", choices=RUNTIMES, engine=True),
    Param("publish_image", False, "also publish detections/image with the boxes drawn "
          "(on configure)"),
    Param("input_reliability", "reliable", "QoS reliability of the image input (on activate)",
          choices=RELIABILITIES),
    Param("input_depth", 2, "QoS depth of the image input (on activate)", int_range=(1, 1000)),
    Param("output_reliability", "reliable", "QoS reliability of the outputs (on configure)",
          choices=RELIABILITIES),
    Param("output_depth", OUTPUT_DEPTH, "QoS depth of the outputs (on configure)",
          int_range=(1, 1000)),
    Param("autostart", True, "configure and activate at start (false: wait for lifecycle "
          "transitions)"),
)  # fmt: skip
PARAM_BY_NAME = {p.name: p for p in PARAMS}


def detector_kwargs(values: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """(backend, keyword arguments of create_detector) from parameter values."""
    common = {"score_threshold": values["score_threshold"], "nms_iou": values["nms_iou"]}
    if values["backend"] == "hog":
        return "hog", {**common, "win_stride": values["hog_win_stride"],
                       "scale": values["hog_scale"], "max_width": values["hog_max_width"]}
    classes = tuple(int(c) for c in values["onnx_classes"] or ()) or None
    return "onnx", {**common, "model_path": values["model_path"],
                    "input_size": values["onnx_input_size"], "layout": values["onnx_layout"],
                    "classes": classes, "runtime": values["onnx_runtime"]}


def check_detector_config(values: dict[str, Any]) -> str | None:
    """Why these values cannot build a detector, or None."""
    for spec in PARAMS:
        if reason := check_choice(spec, values.get(spec.name)):
            return reason
    if values["backend"] == "onnx" and not values["model_path"]:
        return "backend 'onnx' needs model_path (a YOLOv5/YOLOv8 .onnx file)"
    return None


@dataclass
class _Frame:
    msg: Image
    received: float  # monotonic


class DetectorNode(ManagedNode):
    """The detector lifecycle node. ``node_kwargs`` go to rclpy's Node (parameter_overrides,
    namespace, context...), so tools can run it in-process."""

    def __init__(self, node_name: str = NODE_NAME, **node_kwargs: Any):
        super().__init__(node_name, **node_kwargs)
        self.counters = Counters(
            ("received", "processed", "detections", *(f"dropped_{c}" for c in DROP_CAUSES))
        )
        self.rates = {name: RateMeter() for name in ("images", "processed")}
        self.latency_receive = LatencyStats()
        self.latency_stamp = LatencyStats()
        self._detector: Detector | None = None
        self._detector_error = ""
        self._pending: dict[str, Any] | None = None
        self._lock = threading.Lock()
        self._slot = LatestSlot()
        self._stop = threading.Event()
        self._worker: threading.Thread | None = None
        self._sub: Any = None
        self._det_pub: Any = None
        self._image_pub: Any = None

        self.add_on_set_parameters_callback(self._on_set_parameters)
        try:
            for spec in PARAMS:
                self.declare_parameter(spec.name, spec.default, descriptor_for(spec))
            reason = check_detector_config(self._param_values())
            if reason:
                raise ValueError(f"invalid detector parameters: {reason}")
        except Exception:
            super().destroy_node()
            raise
        self._diagnostics = DiagnosticsPublisher(self, "detector", self._collect_diagnostics)
        if self.get_parameter("autostart").value:
            self.start()

    # ------------------------------------------------------------------ public helpers
    def stats(self) -> dict[str, Any]:
        """Counters, rates (Hz) and latency percentiles (ms): what /diagnostics reports."""
        values: dict[str, Any] = {"state": self._state, "backend": self._param("backend")}
        values.update(self.counters.snapshot())
        for name, meter in self.rates.items():
            values[f"{name}_hz"] = meter.rate()
        values.update(self.latency_receive.summary("latency_receive_to_publish"))
        values.update(self.latency_stamp.summary("latency_stamp_to_publish"))
        return values

    # ------------------------------------------------------------------ parameters
    def _param(self, name: str) -> Any:
        return self.get_parameter(name).value if self.has_parameter(name) else None

    def _param_values(self) -> dict[str, Any]:
        return {spec.name: self._param(spec.name) for spec in PARAMS}

    def _on_set_parameters(self, params: list[Parameter]) -> SetParametersResult:
        known = {p.name: p.value for p in params if p.name in PARAM_BY_NAME}
        if not known or not all(self.has_parameter(s.name) for s in PARAMS):
            for name, value in known.items():  # still declaring: check each on its own
                if reason := check_choice(PARAM_BY_NAME[name], value):
                    return SetParametersResult(successful=False, reason=reason)
            return SetParametersResult(successful=True)
        values = {**self._param_values(), **known}
        reason = check_detector_config(values)
        if reason is None and values["backend"] == "onnx" and any(
            PARAM_BY_NAME[n].engine for n in known
        ):
            backend, kwargs = detector_kwargs(values)
            try:  # build it now so a bad model path is refused, not discovered later
                create_detector(backend, **kwargs)
            except (ValueError, RuntimeError) as exc:
                reason = str(exc)
        if reason:
            return SetParametersResult(successful=False, reason=reason)
        if self._state == "active" and any(PARAM_BY_NAME[n].engine for n in known):
            with self._lock:
                self._pending = values  # the worker rebuilds before its next image
        return SetParametersResult(successful=True)

    # ------------------------------------------------------------------ lifecycle
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        values = self._param_values()
        qos = make_qos(values["output_reliability"], values["output_depth"])
        self._det_pub = self.create_lifecycle_publisher(
            detection_message_type(), topics.DETECTIONS, qos
        )
        if values["publish_image"]:
            self._image_pub = self.create_lifecycle_publisher(Image, topics.DETECTIONS_IMAGE, qos)
        self._state = "inactive"
        return super().on_configure(state)

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        values = self._param_values()
        try:
            self._detector = self._build(values)
        except (ValueError, RuntimeError) as exc:
            self._detector_error = str(exc)
            self.get_logger().error(f"cannot activate: the detector failed to load: {exc}")
            return TransitionCallbackReturn.FAILURE
        qos = make_qos(values["input_reliability"], values["input_depth"])
        self._sub = self.create_subscription(Image, topics.FUSED_IMAGE, self._on_image, qos)
        self._stop.clear()
        self._slot.reopen()
        self._worker = threading.Thread(target=self._work, name="detector_worker", daemon=True)
        self._worker.start()
        self._state = "active"
        self.get_logger().info(
            f"active: {self._detector.name} detector on {self._sub.topic_name} -> "
            f"{self._det_pub.topic_name} ({detection_message_type().__name__})"
        )
        return super().on_activate(state)

    def _build(self, values: dict[str, Any]) -> Detector:
        backend, kwargs = detector_kwargs(values)
        detector = create_detector(backend, **kwargs)
        self._detector_error = ""
        return detector

    def _release_active(self) -> None:
        if self._sub is not None:
            self.destroy_subscription(self._sub)
            self._sub = None
        self._stop.set()
        if self._slot.close() is not None:
            self.counters.inc("dropped_stale")
        if self._worker is not None:
            self._worker.join(timeout=30)
            self._worker = None
        self._detector = None

    def _release_configured(self) -> None:
        for pub in (self._det_pub, self._image_pub):
            if pub is not None:
                self.destroy_lifecycle_publisher(pub)
        self._det_pub = self._image_pub = None

    # ------------------------------------------------------------------ data path
    def _on_image(self, msg: Image) -> None:
        self.counters.inc("received")
        self.rates["images"].tick()
        if self._slot.put(_Frame(msg, time.monotonic())):
            self.counters.inc("dropped_stale")

    def _work(self) -> None:
        while not self._stop.is_set():
            frame = self._slot.take(timeout=0.2)
            if frame is not None:
                try:
                    self._process(frame)
                except Exception as exc:  # never let a bug kill the worker
                    self._drop("inference", exc)

    def _apply_pending(self) -> None:
        with self._lock:
            values, self._pending = self._pending, None
        if values is None:
            return
        try:
            self._detector = self._build(values)
            self.get_logger().info(f"detector rebuilt: {self._detector.name}")
        except (ValueError, RuntimeError) as exc:
            self._detector_error = f"detector rebuild failed, keeping the previous one: {exc}"
            self.get_logger().error(self._detector_error)

    def _process(self, frame: _Frame) -> None:
        self._apply_pending()
        detector = self._detector
        if detector is None:
            return
        try:
            image = image_to_array(frame.msg, "bgr8")
        except UnsupportedEncodingError as exc:
            self._drop("unsupported_encoding", exc)
            return
        except (MalformedImageError, ValueError) as exc:
            self._drop("malformed_image", exc)
            return
        detections = detector.detect(image)
        try:
            self._det_pub.publish(detections_to_msg(detections, frame.msg.header))
            if self._image_pub is not None:
                annotated = draw_detections(image, detections)
                self._image_pub.publish(array_to_image(annotated, "bgr8", frame.msg.header))
        except Exception as exc:
            self._drop("publish", exc)
            return
        self.counters.inc("processed")
        self.counters.inc("detections", len(detections))
        self.rates["processed"].tick()
        self.latency_receive.add(time.monotonic() - frame.received)
        now_ns = self.get_clock().now().nanoseconds
        stamp_ns = stamp_to_ns(frame.msg.header.stamp)
        if now_ns > 0 and stamp_ns > 0:
            self.latency_stamp.add((now_ns - stamp_ns) / 1e9)

    def _collect_diagnostics(self) -> DiagnosticReport:
        values = self.stats()
        bad = sum(values[f"dropped_{c}"] for c in DROP_CAUSES if c != "stale")
        if self._detector_error:
            level, message = WARN, self._detector_error
        elif self._state != "active":
            level, message = OK, f"{self._state}: not detecting"
        elif bad:
            level, message = WARN, f"detecting at {values['processed_hz']:.1f} Hz; {bad} bad images"
        else:
            level, message = OK, f"detecting at {values['processed_hz']:.1f} Hz"
        return DiagnosticReport(level, message, values)


def main(args: list[str] | None = None) -> int:
    """``detector_node`` executable: run until Ctrl-C; exit 1 with the reason on bad parameters."""
    return run_node(DetectorNode, "detector_node", args)


if __name__ == "__main__":
    sys.exit(main())
