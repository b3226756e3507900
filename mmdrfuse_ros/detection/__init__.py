"""Pedestrian detectors without ROS: the same backends the detector node and the replay use.

    from mmdrfuse_ros.detection import create_detector, resolve_detector
    detector = create_detector("yolox")          # the discovered YOLOX-Nano model
    detector, reason = resolve_detector("auto")  # YOLOX if found, else HOG and the reason
    for d in detector.detect(bgr_image): ...

Backends: ``auto`` (YOLOX when a model is found, else the HOG fallback, loudly), ``yolox`` (the
discovered model, see :mod:`.models`), ``onnx`` (any YOLOX/YOLOv5/YOLOv8 export at
``model_path``) and ``hog`` (OpenCV's people detector: no download, far weaker than YOLOX).
"""

from __future__ import annotations

from typing import Any

from .base import PERSON_CLASS_ID, Detection, Detector, draw_detections, nms

BACKENDS = ("hog", "onnx", "yolox", "auto")


def create_detector(backend: str = "hog", **params: Any) -> Detector:
    """Build a detector; ValueError (with the reason) for an unknown backend or bad params.

    With ``auto`` a fallback to HOG is logged as a warning and kept in the detector's
    ``fallback_reason``; :func:`resolve_detector` returns it too.
    """
    from .models import resolve_detector

    return resolve_detector(backend, **params)[0]


def resolve_detector(backend: str = "auto", model_path: str = "", **params: Any
                     ) -> tuple[Detector, str | None]:
    """(detector, why ``auto`` fell back to HOG or None); see :mod:`.models`."""
    from .models import resolve_detector as resolve

    return resolve(backend, model_path, **params)


__all__ = ["BACKENDS", "PERSON_CLASS_ID", "Detection", "Detector", "create_detector",
           "draw_detections", "nms", "resolve_detector"]
