"""What every detector returns, and the helpers they share (NMS, drawing).

Boxes are in image pixels, ``(x1, y1, x2, y2)`` with x2/y2 exclusive, as OpenCV draws them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import cv2
import numpy as np

PERSON_CLASS_ID = 0  # COCO's "person", also the id we give HOG's people
PERSON_LABEL = "person"


@dataclass(frozen=True)
class Detection:
    x1: float
    y1: float
    x2: float
    y2: float
    score: float
    class_id: int = PERSON_CLASS_ID
    label: str = PERSON_LABEL

    @property
    def width(self) -> float:
        return self.x2 - self.x1

    @property
    def height(self) -> float:
        return self.y2 - self.y1

    @property
    def center(self) -> tuple[float, float]:
        return (self.x1 + self.x2) / 2.0, (self.y1 + self.y2) / 2.0

    def as_row(self) -> tuple[float, float, float, float, float]:
        """``(x1, y1, x2, y2, score)``: the row format of :mod:`mmdrfuse_ros.metrics.detection`."""
        return (self.x1, self.y1, self.x2, self.y2, self.score)


class Detector(Protocol):
    name: str

    def detect(self, image: np.ndarray) -> list[Detection]:
        """Detections in ``image`` (HxW grey or HxWx3 BGR, uint8)."""
        ...


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float,
        class_ids: np.ndarray | None = None) -> np.ndarray:
    """Indices kept by greedy non-maximum suppression, per class, best score first.

    ``boxes`` is Nx4 ``(x1, y1, x2, y2)``. Boxes of different classes never suppress each other
    (they are offset apart, the usual batched-NMS trick).
    """
    if len(boxes) == 0:
        return np.zeros(0, dtype=np.int64)
    boxes = np.asarray(boxes, dtype=np.float64)
    if class_ids is not None:
        offset = (boxes.max() + 1.0) * np.asarray(class_ids, dtype=np.float64)[:, None]
        boxes = boxes + offset
    x1, y1, x2, y2 = boxes.T
    areas = np.maximum(0.0, x2 - x1) * np.maximum(0.0, y2 - y1)
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    keep = []
    while order.size:
        i = order[0]
        keep.append(i)
        rest = order[1:]
        w = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]))
        h = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]))
        inter = w * h
        iou = inter / np.maximum(areas[i] + areas[rest] - inter, 1e-12)
        order = rest[iou <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)


def as_bgr8(image: np.ndarray) -> np.ndarray:
    """Detectors work on 8-bit BGR: grey is expanded, 16-bit and float are scaled."""
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    elif image.dtype != np.uint8:
        image = np.clip(np.asarray(image, np.float32) * 255.0, 0, 255).astype(np.uint8)
    if image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 1):
        return cv2.cvtColor(image.reshape(image.shape[:2]), cv2.COLOR_GRAY2BGR)
    if image.ndim == 3 and image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an HxW or HxWx3 image, got shape {image.shape}")
    return image


def draw_detections(image: np.ndarray, detections: list[Detection],
                    color: tuple[int, int, int] = (0, 255, 0)) -> np.ndarray:
    """A BGR copy of ``image`` with boxes and scores drawn (for ``detections/image``)."""
    canvas = as_bgr8(image).copy()
    for d in detections:
        p1, p2 = (round(d.x1), round(d.y1)), (round(d.x2), round(d.y2))
        cv2.rectangle(canvas, p1, p2, color, 2)
        cv2.putText(canvas, f"{d.label} {d.score:.2f}", (p1[0], max(12, p1[1] - 4)),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.5, color, 1, cv2.LINE_AA)
    return canvas
