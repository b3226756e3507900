"""``detector_node``: pedestrians in the fused image (or any image topic).

A lifecycle node like ``fusion_node`` (:class:`~mmdrfuse_ros.nodes.worker.WorkerNode`):
parameters declared and validated at construction; configure creates the publishers; activate
builds the detector, subscribes and starts the worker; deactivate/cleanup release them. With
``autostart`` (default) it configures and activates itself.

The subscription callback only puts the newest image in the one-slot mailbox; the worker
detects on it and publishes. An image replaced before the worker took it is counted as a
``stale`` drop, so a slow detector (HOG on a big frame) never builds up latency.

The detector users get is ``backend: auto``: YOLOX when a model is found (``model_path``, else
``$MMDRFUSE_MODEL_DIR``, else the user cache), otherwise the HOG fallback, said loudly: a
warning in the log at every (re)build, ``/diagnostics`` WARN with the reason and the command
that gets the model, and ``stats()["detector_fallback"]`` (what the replay report shows).

Input: any image a detector can look at (:func:`~mmdrfuse_ros.msgs.images.image_to_bgr8`),
including the fusion node's float ``32FC1`` output (0..1). Output: ``detections``
(vision_msgs/Detection2DArray where installed, else the JSON fallback of
:mod:`mmdrfuse_ros.msgs.detections`) with the image's header unchanged, and optionally an
annotated ``detections/image``. Boxes with non-finite coordinates or scores are never
published. Detector parameters apply at run time (rebuilt before the next image); topic and
QoS parameters at the next activation.

Where an image's time goes: :data:`STAGES`, each as p50/p95 milliseconds in ``stats()`` and on
``/diagnostics`` (``stage_inference_p50_ms``...): ``receive`` (subscription callback to the
worker: waiting while the detector was busy), ``preprocess`` (message to 8-bit BGR, then the
detector's own preparation: letterbox and input tensor, or HOG's downscaling), ``inference``
(the network, or HOG's window search), ``decode`` (boxes out of the network's output, NMS,
finiteness) and ``publish`` (the messages built and published). They add up to the
receive-to-publish latency. A detector whose ``detect`` reports no steps is timed whole as
``inference``.

QoS: ``input_*``/``output_*`` parameters, overridable per topic with rclpy's
``qos_overrides.<topic>.<subscription|publisher>.<policy>`` parameters given at start
(``qos_overrides./fused/image.subscription.reliability``; ``nodes/qos.py``).

Threads: ``threads`` bounds OpenCV's pool in this process (set when the detector is built) and
caps onnxruntime's ``intra_op_threads`` (:func:`~mmdrfuse_ros.settings.detector.onnx_threads`).
"""

from __future__ import annotations

import functools
import inspect
import math
import sys
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
from sensor_msgs.msg import Image

from mmdrfuse_ros import topics
from mmdrfuse_ros.detection import Detection, Detector, draw_detections, resolve_detector
from mmdrfuse_ros.msgs.detections import detection_message_type, detections_to_msg
from mmdrfuse_ros.msgs.images import (
    MalformedImageError,
    UnsupportedEncodingError,
    array_to_image,
    image_to_bgr8,
)
from mmdrfuse_ros.nodes.qos import check_given_overrides, make_qos, overriding_options
from mmdrfuse_ros.nodes.timing import StageTimer
from mmdrfuse_ros.nodes.worker import WorkerNode, run_node
from mmdrfuse_ros.settings.detector import (
    DETECTOR_PARAMS,
    check_detector_values,
    detector_kwargs,
)

NODE_NAME = topics.DETECTOR_NODE
DROP_CAUSES = ("stale", "unsupported_encoding", "malformed_image", "inference", "publish")
#: the timed stages of one image, in order (see the module docstring)
STAGES = ("receive", "preprocess", "inference", "decode", "publish")


@dataclass
class _Frame:
    msg: Image
    received: float  # monotonic


class DetectorNode(WorkerNode):
    """The detector lifecycle node. ``node_kwargs`` go to rclpy's Node (parameter_overrides,
    namespace, context...), so tools can run it in-process."""

    PARAMS = DETECTOR_PARAMS
    TASK = "detector"
    BUILT = "detector"
    ACTIVITY = "detecting"
    ITEM = "image"
    COUNTERS = ("received", "processed", "detections")
    DROP_CAUSES = DROP_CAUSES
    RATES = ("images", "processed")
    OUTPUT_RATE = "processed"

    def __init__(self, node_name: str = NODE_NAME, **node_kwargs: Any):
        self.stages = StageTimer(STAGES)
        super().__init__(node_name, **node_kwargs)

    def stats(self) -> dict[str, Any]:
        """The base's counters, rates and latencies, then the stage percentiles (ms)."""
        return {**super().stats(), **self.stages.summary()}

    # ------------------------------------------------------------------ WorkerNode hooks
    def _check(self, values: Mapping[str, Any], changed: Collection[str] | None) -> str | None:
        if changed is None and (reason := check_given_overrides(self)):
            return reason
        # a changed detector parameter loads the model, so a bad file is refused, not found later
        live = changed is not None and any(self._specs[name].live for name in changed)
        return check_detector_values(values, load_model=live)

    def _build(self, values: Mapping[str, Any]) -> Detector:
        if values["threads"]:  # 0 leaves OpenCV's default (or what the process set)
            cv2.setNumThreads(int(values["threads"]))
        backend, kwargs = detector_kwargs(values)
        detector, fallback = resolve_detector(backend, **kwargs)
        if fallback:
            self.get_logger().warning(f"DETECTOR FALLBACK: {fallback}")
        return detector

    def _describe(self, built: Detector) -> str:
        model = getattr(built, "model_path", None)
        if model is None:
            return built.name + (" (fallback)" if getattr(built, "fallback_reason", None) else "")
        info = built.describe() if hasattr(built, "describe") else {}
        return (f"{_kind(built)} {model} (layout {info.get('layout', '?')}, input "
                f"{info.get('input', '?')}, {info.get('runtime', '?')}, "
                f"{info.get('intra_op_threads', '?')} threads)")

    def _identity(self) -> dict[str, Any]:
        """``backend`` as asked; ``detector`` (what runs), its ``model_path`` and
        ``detector_fallback`` (why auto fell back to HOG; "" otherwise, and while inactive)."""
        built = self._built
        return {"backend": self.get_parameter("backend").value,
                "detector": _kind(built) if built is not None else "",
                "model_path": str(getattr(built, "model_path", "") or ""),
                "detector_fallback": getattr(built, "fallback_reason", None) or ""}

    def _warning(self, values: Mapping[str, Any]) -> str | None:
        return values.get("detector_fallback") or None

    def _input_topics(self) -> dict[str, str]:
        sub = self._inputs.get("image")
        return {"images": sub.topic_name} if sub is not None else {}

    def _open_outputs(self, values: Mapping[str, Any]) -> None:
        self._outputs["detections"] = self._publisher(detection_message_type(),
                                                      topics.DETECTIONS, values)  # fmt: skip
        if values["publish_image"]:
            self._outputs["image"] = self._publisher(Image, topics.DETECTIONS_IMAGE, values)

    def _open_inputs(self, values: Mapping[str, Any]) -> None:
        qos = make_qos(values["input_reliability"], values["input_depth"])
        options = overriding_options(self, "subscription", topics.FUSED_IMAGE)
        self._inputs["image"] = self.create_subscription(
            Image, topics.FUSED_IMAGE, self._on_image, qos, qos_overriding_options=options
        )

    def _active_message(self, values: Mapping[str, Any]) -> str:
        return (
            f"active: {self._describe(self._built)} detector on "
            f"{self._inputs['image'].topic_name} -> {self._outputs['detections'].topic_name} "
            f"({detection_message_type().__name__})"
        )

    # ------------------------------------------------------------------ data path
    def _on_image(self, msg: Image) -> None:
        self.counters.inc("received")
        self.rates["images"].tick()
        self._offer(_Frame(msg, time.monotonic()))

    def _process(self, frame: _Frame, detector: Detector) -> None:
        start = time.monotonic()
        self.stages.add("receive", start - frame.received)
        try:
            image = image_to_bgr8(frame.msg)
        except UnsupportedEncodingError as exc:
            return self._drop("unsupported_encoding", exc)
        except (MalformedImageError, ValueError) as exc:
            return self._drop("malformed_image", exc)
        converted = time.monotonic() - start
        found, steps = _timed_detect(detector, image)
        decoded = time.monotonic()
        detections = [d for d in found if _finite(d)]
        publishing = time.monotonic()
        self.stages.add("preprocess", converted + steps.get("preprocess", 0.0))
        self.stages.add("inference", steps.get("inference", 0.0))
        self.stages.add("decode", steps.get("decode", 0.0) + (publishing - decoded))
        if self._publish(frame, image, detections):
            self.stages.add("publish", time.monotonic() - publishing)
            self.counters.inc("processed")
            self.counters.inc("detections", len(detections))
            self.rates["processed"].tick()
            self._record_latency(frame.received, frame.msg.header)
        return None

    def _publish(self, frame: _Frame, image: np.ndarray, detections: list[Detection]) -> bool:
        """Publish the detections (and the annotated image); False when that failed."""
        try:
            self._outputs["detections"].publish(detections_to_msg(detections, frame.msg.header))
            image_pub = self._outputs.get("image")
            if image_pub is not None:
                annotated = draw_detections(image, detections)
                image_pub.publish(array_to_image(annotated, "bgr8", frame.msg.header))
        except Exception as exc:
            self._drop("publish", exc)
            return False
        return True


def _timed_detect(detector: Detector, image: np.ndarray
                  ) -> tuple[list[Detection], dict[str, float]]:
    """(detections, seconds per step): the detector's own ``preprocess``/``inference``/
    ``decode`` where its ``detect`` takes ``timings``, else the whole call as ``inference``."""
    steps: dict[str, float] = {}
    start = time.monotonic()
    if _reports_steps(type(detector)):
        found = detector.detect(image, timings=steps)  # type: ignore[call-arg]
    else:
        found = detector.detect(image)
    if not steps:
        steps["inference"] = time.monotonic() - start
    return found, steps


@functools.lru_cache(maxsize=32)
def _reports_steps(kind: type) -> bool:
    """Whether ``kind.detect`` takes a ``timings`` dict."""
    try:
        return "timings" in inspect.signature(kind.detect).parameters
    except (TypeError, ValueError, AttributeError):
        return False


def _kind(detector: Detector) -> str:
    """What runs: "yolox", "onnx" (a YOLOv5/YOLOv8 export) or "hog"."""
    return "yolox" if getattr(detector, "layout", None) == "yolox" else detector.name


def _finite(d: Detection) -> bool:
    return all(math.isfinite(v) for v in (d.x1, d.y1, d.x2, d.y2, d.score))


def main(args: list[str] | None = None) -> int:
    """``detector_node`` executable: run until Ctrl-C; exit 1 with the reason on bad parameters."""
    return run_node(DetectorNode, NODE_NAME, args)


if __name__ == "__main__":
    sys.exit(main())
