"""Pedestrians with OpenCV's built-in HOG + linear SVM people detector (Dalal & Triggs 2005).

It needs no model file, which is why it is the fallback when no YOLOX model is found: it works on
a fresh install with no download, but it misses far more people than YOLOX-Nano on real frames
(docs/DETECTIONS.md has both measured on LLVIP). Its 64x128 window finds upright people about
100 px tall or more; ``max_width`` downscales large frames first for speed, at the cost of the
smallest people.
"""

from __future__ import annotations

import time

import cv2
import numpy as np

from .base import Detection, as_bgr8, nms

#: The 64x128 detection window holds a person about 40x104 px, centred: HOG's raw boxes carry that
#: margin (a 0.4 IoU penalty against tight ground truth). ``tight_boxes`` trims it off.
WINDOW_MARGIN = (0.19, 0.09)  # fraction of the box width / height on each side


class HogPeopleDetector:
    name = "hog"
    #: why ``backend: auto`` chose HOG (no YOLOX model found), or None when HOG was asked for.
    fallback_reason: str | None = None

    def __init__(
        self,
        score_threshold: float = 0.3,
        nms_iou: float = 0.45,
        win_stride: int = 8,
        scale: float = 1.05,
        max_width: int = 640,
        tight_boxes: bool = True,
    ) -> None:
        if not hasattr(cv2, "HOGDescriptor_getDefaultPeopleDetector"):
            raise RuntimeError(
                f"this OpenCV ({cv2.__version__}) has no HOG people detector (OpenCV 5 removed "
                "it): install opencv-python-headless<5, or use the onnx backend"
            )
        if win_stride < 1 or not scale > 1.0 or max_width < 64:
            raise ValueError("HOG needs win_stride >= 1, scale > 1 and max_width >= 64")
        self.hog = cv2.HOGDescriptor()
        self.hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())
        self.score_threshold = float(score_threshold)
        self.nms_iou = float(nms_iou)
        self.win_stride = int(win_stride)
        self.scale = float(scale)
        self.max_width = int(max_width)
        self.tight_boxes = bool(tight_boxes)

    def detect(self, image: np.ndarray, timings: dict[str, float] | None = None
               ) -> list[Detection]:
        """People in ``image``. ``timings``, when given, receives the seconds of each step, as
        the ONNX detector reports them: ``preprocess`` (8-bit BGR, downscaling), ``inference``
        (the HOG window search) and ``decode`` (box margins, threshold, NMS)."""
        start = time.perf_counter()
        steps = {"preprocess": 0.0, "inference": 0.0, "decode": 0.0}
        found = self._detect(image, start, steps)
        if timings is not None:
            timings.update(steps)
        return found

    def _detect(self, image: np.ndarray, start: float, steps: dict[str, float]
                ) -> list[Detection]:
        bgr = as_bgr8(image)
        h, w = bgr.shape[:2]
        small, factor = self._downscale(bgr)
        prepared = time.perf_counter()
        steps["preprocess"] = prepared - start
        if small is None:
            return []  # smaller than one detection window
        stride = (self.win_stride, self.win_stride)
        rects, weights = self.hog.detectMultiScale(
            small, winStride=stride, padding=(8, 8), scale=self.scale
        )
        searched = time.perf_counter()
        steps["inference"] = searched - prepared
        found = self._boxes(rects, weights, factor, w, h)
        steps["decode"] = time.perf_counter() - searched
        return found

    def _downscale(self, bgr: np.ndarray) -> tuple[np.ndarray | None, float]:
        """(the image HOG searches, its scale factor); None when it is smaller than one
        64x128 detection window."""
        h, w = bgr.shape[:2]
        factor = min(1.0, self.max_width / w)
        if h * factor < 128 or w * factor < 64:
            return None, factor
        small = cv2.resize(bgr, (round(w * factor), round(h * factor)),
                           interpolation=cv2.INTER_AREA) if factor < 1.0 else bgr
        if small.shape[0] < 128 or small.shape[1] < 64:
            return None, factor
        return small, factor

    def _boxes(self, rects: np.ndarray, weights: np.ndarray, factor: float, w: int, h: int
               ) -> list[Detection]:
        """HOG's windows as detections in ``w``x``h`` image pixels."""
        if len(rects) == 0:
            return []
        rects = np.asarray(rects, dtype=np.float64) / factor
        scores = np.asarray(weights, dtype=np.float64).reshape(-1)
        boxes = np.column_stack((rects[:, 0], rects[:, 1], rects[:, 0] + rects[:, 2],
                                 rects[:, 1] + rects[:, 3]))
        if self.tight_boxes:
            mx, my = WINDOW_MARGIN
            bw, bh = (boxes[:, 2] - boxes[:, 0])[:, None], (boxes[:, 3] - boxes[:, 1])[:, None]
            boxes = boxes + np.hstack((mx * bw, my * bh, -mx * bw, -my * bh))
        good = scores >= self.score_threshold
        boxes, scores = boxes[good], scores[good]
        keep = nms(boxes, scores, self.nms_iou)
        return [
            Detection(float(max(0.0, b[0])), float(max(0.0, b[1])), float(min(w, b[2])),
                      float(min(h, b[3])), float(s))
            for b, s in zip(boxes[keep], scores[keep], strict=True)
        ]
