"""Average precision for one class of boxes (pedestrians), COCO-style. No ROS imports.

Input format (one entry per image; lists aligned by position, or mappings with the same keys):

* ``detections[k]``: array-like of shape (K, 5), rows ``(x1, y1, x2, y2, score)`` in pixels,
  x2 > x1 and y2 > y1 (corners, not width/height). An empty list means no detections.
* ``ground_truth[k]``: array-like of shape (M, 4), rows ``(x1, y1, x2, y2)``.

Conventions follow pycocotools' ``COCOeval`` for bounding boxes with one category, area range
"all", no crowd boxes: IoU without the +1 pixel convention; per image the top ``max_detections``
(100) detections by score; greedy matching in score order, each detection taking the unmatched
ground-truth box of highest IoU >= the threshold; precision made monotone and sampled at the 101
recall points 0, 0.01, ..., 1 (a point beyond the reached recall counts as precision 0); AP is the
mean of the 101 samples, AP@[.5:.95] the mean over the thresholds 0.50, 0.55, ..., 0.95.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

__all__ = ["COCO_IOU_THRESHOLDS", "RECALL_POINTS", "average_precision", "bootstrap_ap50", "box_iou"]

#: 0.50, 0.55, ..., 0.95 (as COCO computes them).
COCO_IOU_THRESHOLDS: tuple[float, ...] = tuple(
    float(t) for t in np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1)
)
#: the 101 recall points of COCO's interpolated precision.
RECALL_POINTS = np.linspace(0.0, 1.0, int(np.round(1.0 / 0.01)) + 1)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix (len(a) x len(b)) of corner boxes ``(x1, y1, x2, y2)``; 0 where a union is 0."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    iw = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
    ih = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
    inter = np.clip(iw, 0, None) * np.clip(ih, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / union, 0.0)


def _as_boxes(rows, width: int, what: str) -> np.ndarray:
    arr = np.asarray(rows if rows is not None else [], dtype=np.float64)
    if arr.size == 0:
        return np.zeros((0, width))
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.shape[1] != width:
        raise ValueError(f"{what} must be rows of {width} numbers, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{what} contains NaN or infinity")
    if np.any(arr[:, 2] < arr[:, 0]) or np.any(arr[:, 3] < arr[:, 1]):
        raise ValueError(f"{what}: boxes must be (x1, y1, x2, y2) with x2 >= x1 and y2 >= y1")
    return arr


def _pairs(detections, ground_truth) -> list[tuple[object, object]]:
    if isinstance(detections, Mapping) or isinstance(ground_truth, Mapping):
        if not (isinstance(detections, Mapping) and isinstance(ground_truth, Mapping)):
            raise ValueError("detections and ground_truth must both be mappings or both sequences")
        extra = set(detections) - set(ground_truth)
        if extra:
            raise ValueError(f"detections for images without ground truth: {sorted(extra)[:5]}")
        return [(detections.get(k, []), ground_truth[k]) for k in ground_truth]
    if not isinstance(detections, Sequence) or not isinstance(ground_truth, Sequence):
        raise ValueError("detections and ground_truth must be sequences (one entry per image)")
    if len(detections) != len(ground_truth):
        raise ValueError(
            f"{len(detections)} images of detections but {len(ground_truth)} of ground truth"
        )
    return list(zip(detections, ground_truth, strict=True))


def _ap_from_matches(scores, matched, n_gt: int) -> float:
    order = np.argsort(-scores, kind="mergesort")
    tp = np.cumsum(matched[order])
    fp = np.cumsum(~matched[order])
    recall = tp / n_gt
    precision = tp / (tp + fp + np.spacing(1))
    # make precision non-increasing in recall (the "interpolated" envelope)
    precision = np.maximum.accumulate(precision[::-1])[::-1] if len(precision) else precision
    idx = np.searchsorted(recall, RECALL_POINTS, side="left")
    sampled = np.zeros(len(RECALL_POINTS))
    ok = idx < len(precision)
    sampled[ok] = precision[idx[ok]]
    return float(np.mean(sampled))


def _checked_images(detections, ground_truth, max_detections: int
                    ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per image: (its top detections by score, its ground truth, their IoU matrix)."""
    if max_detections < 1:
        raise ValueError("max_detections must be >= 1")
    images = []
    for k, (dets, gts) in enumerate(_pairs(detections, ground_truth)):
        d = _as_boxes(dets, 5, f"detections of image {k}")
        g = _as_boxes(gts, 4, f"ground truth of image {k}")
        d = d[np.argsort(-d[:, 4], kind="mergesort")][:max_detections]
        images.append((d, g, box_iou(d[:, :4], g)))
    if not any(len(g) for _, g, _ in images):
        raise ValueError("no ground-truth boxes: average precision is undefined")
    return images


def _greedy_matches(iou: np.ndarray, threshold: float) -> np.ndarray:
    """Which detections (rows of ``iou``, in score order) match a ground-truth box, COCO's way."""
    n_det, n_gt = iou.shape
    matched = np.zeros(n_det, dtype=bool)
    taken = np.zeros(n_gt, dtype=bool)
    if not n_gt:
        return matched
    for i in range(n_det):
        cand = np.where(taken, -1.0, iou[i])
        j = n_gt - 1 - int(np.argmax(cand[::-1]))  # COCO: the last of equal IoUs
        # COCO keeps the threshold just below 1 so that IoU == 1 still matches at t = 1
        if cand[j] >= min(threshold, 1 - 1e-10):
            matched[i] = True
            taken[j] = True
    return matched


def average_precision(
    detections,
    ground_truth,
    iou_thresholds: Sequence[float] = COCO_IOU_THRESHOLDS,
    max_detections: int = 100,
) -> dict:
    """COCO-style AP of ``detections`` against ``ground_truth`` over a set of images.

    Returns ``{"AP50": AP at IoU 0.5, "AP": mean AP over iou_thresholds (AP@[.5:.95] by default),
    "per_iou": {threshold: AP}, "num_images", "num_gt", "num_detections"}``; all APs in 0..1.
    Raises ValueError for malformed input and when there is no ground-truth box at all (AP is
    undefined then; COCO reports -1).
    """
    thresholds = [float(t) for t in iou_thresholds]
    if not thresholds or any(not 0.0 < t <= 1.0 for t in thresholds):
        raise ValueError(f"iou_thresholds must be in (0, 1], got {thresholds}")
    images = _checked_images(detections, ground_truth, max_detections)
    n_gt = sum(len(g) for _, g, _ in images)
    scores = np.concatenate([d[:, 4] for d, _, _ in images])
    per_iou = {t: _ap_from_matches(scores, np.concatenate(
        [_greedy_matches(iou, t) for _, _, iou in images]), n_gt)
        for t in sorted(set(thresholds) | {0.5})}
    return {
        "AP50": per_iou[0.5],
        "AP": float(np.mean([per_iou[t] for t in thresholds])),
        "per_iou": {t: per_iou[t] for t in thresholds},
        "num_images": len(images),
        "num_gt": n_gt,
        "num_detections": int(sum(len(d) for d, _, _ in images)),
    }


def bootstrap_ap50(
    detections,
    ground_truth,
    resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    max_detections: int = 100,
) -> tuple[float, float]:
    """Percentile interval of AP@0.5 over the images resampled with replacement.

    It says how far the AP of a small labelled set moves with the choice of images: two rows
    whose intervals overlap widely are not told apart by that set. The resamples depend only on
    ``seed`` and the number of images, so rows scored on the same images share them. Each
    image's matches do not depend on the resample, so they are computed once.
    """
    if resamples < 1:
        raise ValueError(f"resamples must be >= 1, got {resamples}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    images = [(d[:, 4], _greedy_matches(iou, 0.5), len(g))
              for d, g, iou in _checked_images(detections, ground_truth, max_detections)]
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(resamples):
        pick = [images[i] for i in rng.integers(0, len(images), len(images))]
        n_gt = sum(n for _, _, n in pick)
        if n_gt:
            values.append(_ap_from_matches(np.concatenate([s for s, _, _ in pick]),
                                           np.concatenate([m for _, m, _ in pick]), n_gt))
    lo, hi = np.quantile(values, [(1.0 - level) / 2.0, (1.0 + level) / 2.0])
    return float(lo), float(hi)
