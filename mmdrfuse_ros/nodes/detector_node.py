"""``detector_node``: pedestrians in the fused image (or any image topic).

A lifecycle node like ``fusion_node`` (:class:`~mmdrfuse_ros.nodes.worker.WorkerNode`):
parameters declared and validated at construction; configure creates the publishers; activate
builds the detector, subscribes and starts the worker; deactivate/cleanup release them. With
``autostart`` (default) it configures and activates itself.

The subscription callback only puts the newest image in the one-slot mailbox; the worker
detects on it and publishes. An image replaced before the worker took it is counted as a
``stale`` drop, so a slow detector (HOG on a big frame) never builds up latency.

Output: ``detections`` (vision_msgs/Detection2DArray where installed, else the JSON fallback of
:mod:`mmdrfuse_ros.msgs.detections`) with the image's header unchanged, and optionally an
annotated ``detections/image``. Detector parameters apply at run time (rebuilt before the next
image); topic and QoS parameters at the next activation.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from sensor_msgs.msg import Image

from mmdrfuse_ros import topics
from mmdrfuse_ros.detection import Detector, create_detector, draw_detections
from mmdrfuse_ros.msgs.detections import detection_message_type, detections_to_msg
from mmdrfuse_ros.msgs.images import (
    MalformedImageError,
    UnsupportedEncodingError,
    array_to_image,
    image_to_array,
)
from mmdrfuse_ros.nodes.qos import make_qos
from mmdrfuse_ros.nodes.worker import WorkerNode, run_node
from mmdrfuse_ros.settings.detector import (
    DETECTOR_PARAMS,
    check_detector_values,
    detector_kwargs,
)

NODE_NAME = "detector_node"
DROP_CAUSES = ("stale", "unsupported_encoding", "malformed_image", "inference", "publish")


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
        super().__init__(node_name, **node_kwargs)

    # ------------------------------------------------------------------ WorkerNode hooks
    def _check(self, values: Mapping[str, Any], changed: Collection[str] | None) -> str | None:
        # a changed detector parameter loads the model, so a bad file is refused, not found later
        live = changed is not None and any(self._specs[name].live for name in changed)
        return check_detector_values(values, load_model=live)

    def _build(self, values: Mapping[str, Any]) -> Detector:
        backend, kwargs = detector_kwargs(values)
        return create_detector(backend, **kwargs)

    def _describe(self, built: Detector) -> str:
        return built.name

    def _identity(self) -> dict[str, Any]:
        return {"backend": self.get_parameter("backend").value}

    def _open_outputs(self, values: Mapping[str, Any]) -> None:
        qos = make_qos(values["output_reliability"], values["output_depth"])
        self._outputs["detections"] = self.create_lifecycle_publisher(
            detection_message_type(), topics.DETECTIONS, qos
        )
        if values["publish_image"]:
            self._outputs["image"] = self.create_lifecycle_publisher(
                Image, topics.DETECTIONS_IMAGE, qos
            )

    def _open_inputs(self, values: Mapping[str, Any]) -> None:
        qos = make_qos(values["input_reliability"], values["input_depth"])
        self._inputs["image"] = self.create_subscription(
            Image, topics.FUSED_IMAGE, self._on_image, qos
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
        try:
            image = image_to_array(frame.msg, "bgr8")
        except UnsupportedEncodingError as exc:
            return self._drop("unsupported_encoding", exc)
        except (MalformedImageError, ValueError) as exc:
            return self._drop("malformed_image", exc)
        detections = detector.detect(image)
        try:
            self._outputs["detections"].publish(detections_to_msg(detections, frame.msg.header))
            image_pub = self._outputs.get("image")
            if image_pub is not None:
                annotated = draw_detections(image, detections)
                image_pub.publish(array_to_image(annotated, "bgr8", frame.msg.header))
        except Exception as exc:
            return self._drop("publish", exc)
        self.counters.inc("processed")
        self.counters.inc("detections", len(detections))
        self.rates["processed"].tick()
        self._record_latency(frame.received, frame.msg.header)


def main(args: list[str] | None = None) -> int:
    """``detector_node`` executable: run until Ctrl-C; exit 1 with the reason on bad parameters."""
    return run_node(DetectorNode, "detector_node", args)


if __name__ == "__main__":
    sys.exit(main())
