"""Pedestrian detectors without ROS: the same backends the detector node and the replay use.

    from mmdrfuse_ros.detection import create_detector
    detector = create_detector("hog")            # or "onnx", model_path="yolov8n.onnx"
    for d in detector.detect(bgr_image): ...
"""

from __future__ import annotations

from typing import Any

from .base import PERSON_CLASS_ID, Detection, Detector, draw_detections, nms

BACKENDS = ("hog", "onnx")


def create_detector(backend: str = "hog", **params: Any) -> Detector:
    """Build a detector; ValueError (with the reason) for an unknown backend or bad params."""
    if backend == "hog":
        from .hog import HogPeopleDetector

        return HogPeopleDetector(**params)
    if backend == "onnx":
        from .yolo_onnx import YoloOnnxDetector

        if not params.get("model_path"):
            raise ValueError("the onnx backend needs model_path (a YOLOv5/YOLOv8 .onnx file)")
        return YoloOnnxDetector(**params)
    raise ValueError(f"detector backend must be one of {BACKENDS}, got {backend!r}")


__all__ = ["BACKENDS", "PERSON_CLASS_ID", "Detection", "Detector", "create_detector",
           "draw_detections", "nms"]
