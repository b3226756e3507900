"""What fusion buys a detector, on still images: AP on thermal-only, visible-only and fused frames.

The quick, deterministic measurement behind ``mmdrfuse detect``: every labelled pair is fused by
:class:`~mmdrfuse_ros.fusion.FusionEngine` (the node's engine), the same detector runs on the
thermal image, the visible image and each fused image, and COCO-style AP is computed against
the VOC boxes. No ROS. The replay stays the measurement of the running nodes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ..datasets import (
    DatasetError,
    Pair,
    find_pairs,
    parse_voc,
    read_thermal_image,
    read_visible_image,
)
from ..metrics.detection import average_precision, bootstrap_ap50
from .base import Detection, Detector, as_bgr8

STRETCHES = ("none", "minmax")
GT_COLOR = (0, 0, 255)  # red, BGR
DET_COLOR = (0, 255, 0)  # green
PANEL_WIDTH = 400


def minmax_stretch(plane: np.ndarray) -> np.ndarray:
    """Each image's own min..max to 0..1, as the MMDRFuse authors save their outputs
    (``scipy.misc.imsave`` rescales every image this way). A flat image becomes 0."""
    plane = np.asarray(plane, np.float32)
    lo, hi = float(plane.min()), float(plane.max())
    if not hi > lo:
        return np.zeros_like(plane)
    return (plane - lo) * np.float32(1.0 / (hi - lo))


@dataclass
class FusedInput:
    """One fused row: a label, its weights (None = shipped) and how its output is scaled."""

    key: str
    label: str
    weights: Path | None = None
    stretch: str = "none"
    _raw: Any = field(default=None, repr=False)  # StudentNet of this row's weights
    _own: Any = field(default=None, repr=False)

    def fuse(self, engine: Any, prepared: Any) -> np.ndarray:
        """The fused BGR frame from ``engine``'s prepared pair: the network output as the engine
        gives it (with this row's weights), or the raw output stretched per image."""
        ir01, y01 = prepared.thermal, prepared.visible.luma
        if self.stretch == "minmax":
            if self._raw is None:
                from ..fusion.model import load_checkpoint

                self._raw = load_checkpoint(self.weights or engine.weights_info["path"]).build()
            return engine.finish(minmax_stretch(self._raw.unclamped(ir01, y01)), prepared)
        if self._own is None:
            self._own = engine
            if self.weights and Path(self.weights).resolve() != Path(
                    engine.weights_info["path"]).resolve():
                from ..fusion import FusionEngine

                self._own = FusionEngine(backend=engine.backend_name, weights=self.weights)
        return engine.finish(self._own.fuse_luma(ir01, y01), prepared)


@dataclass
class Evaluation:
    """Per input (thermal, visible, each fused row): detections and AP, plus what went wrong."""

    labels: dict[str, str]
    detections: dict[str, list[list[tuple]]]
    ground_truth: list[list[list[float]]] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    detect_ms: dict[str, list[float]] = field(default_factory=dict)
    samples: list[dict[str, Any]] = field(default_factory=list)

    def ap(self) -> dict[str, dict[str, Any]]:
        """AP per input key (``average_precision``'s dict plus the mean detection time)."""
        out = {}
        for key in self.labels:
            result = average_precision(self.detections[key], self.ground_truth)
            times = self.detect_ms.get(key) or [float("nan")]
            out[key] = {"AP50": result["AP50"], "AP": result["AP"],
                        "num_detections": result["num_detections"],
                        "num_gt": result["num_gt"], "num_images": result["num_images"],
                        "detect_ms": float(np.mean(times))}
        return out

    def ap50_interval(self, key: str, resamples: int = 1000) -> tuple[float, float]:
        """95% bootstrap interval of one input's AP@0.5 over the labelled images."""
        return bootstrap_ap50(self.detections[key], self.ground_truth, resamples)


def labelled_pairs(ir_dir: Path, vis_dir: Path, annotations_dir: Path) -> list[Pair]:
    """The annotated pairs; DatasetError for empty folders or annotations that do not match."""
    return find_pairs(ir_dir, vis_dir, annotations_dir).pairs


def _boxes_for(pair: Pair, width: int, height: int) -> list[list[float]]:
    """The pair's person boxes, checked against the image it is meant to describe."""
    boxes, size = parse_voc(pair.annotation)
    if size is not None and size != (width, height):
        raise DatasetError(f"annotation {pair.annotation.name} is for a {size[0]}x{size[1]} "
                           f"image but {pair.vis.name} is {width}x{height}: the annotations do "
                           "not match the images")
    for box in boxes:
        if box[0] < -2 or box[1] < -2 or box[2] > width + 2 or box[3] > height + 2:
            raise DatasetError(f"annotation {pair.annotation.name}: box {box} lies outside the "
                               f"{width}x{height} image {pair.vis.name}")
    return boxes


def _as_uint8(image: np.ndarray) -> np.ndarray:
    """What a detector is shown: 8-bit, grey or BGR (16-bit scaled by full range)."""
    if image.dtype == np.uint8:
        return image
    from ..fusion.preprocess import to_unit_float

    return cv2.convertScaleAbs(to_unit_float(image), alpha=255.0)


def _inputs_of(pair: Pair, engine: Any, fused: list[FusedInput]
               ) -> tuple[dict[str, np.ndarray], list[list[float]]]:
    """(input key -> 8-bit image, ground truth) of one pair; ValueError names the problem."""
    thermal, visible = read_thermal_image(pair.ir), read_visible_image(pair.vis)
    height, width = visible.shape[:2]
    boxes = _boxes_for(pair, width, height)
    prepared = engine.prepare(thermal, visible)
    images = {
        # the thermal frame as the fusion sees it: normalised, in the visible geometry
        "thermal": cv2.convertScaleAbs(prepared.thermal, alpha=255.0),
        "visible": _as_uint8(visible),
    }
    for row in fused:
        images[row.key] = row.fuse(engine, prepared)
    return images, boxes


def evaluate(
    pairs: Iterable[Pair],
    detector: Detector,
    engine: Any,
    fused: list[FusedInput],
    samples: int = 4,
    progress: Callable[[Iterable[Pair]], Iterable[Pair]] | None = None,
) -> Evaluation:
    """Run ``detector`` on every input of every pair. A pair that cannot be read, fused or
    matched to its annotation is reported in ``errors`` and left out; the rest still count."""
    labels = {"thermal": "thermal only", "visible": "visible only",
              **{row.key: row.label for row in fused}}
    result = Evaluation(labels, {key: [] for key in labels},
                        detect_ms={key: [] for key in labels})
    for pair in progress(pairs) if progress else pairs:
        try:
            images, boxes = _inputs_of(pair, engine, fused)
            found: dict[str, list[Detection]] = {}
            for key, image in images.items():
                start = time.perf_counter()
                found[key] = detector.detect(image)
                result.detect_ms[key].append((time.perf_counter() - start) * 1e3)
        except ValueError as exc:  # DatasetError, FusionInputError, a detector's refusal
            result.errors.append(f"{pair.name}: {exc}")
            continue
        for key in labels:
            result.detections[key].append([d.as_row() for d in found[key]])
        result.ground_truth.append(boxes)
        result.names.append(pair.name)
        if len(result.samples) < samples:
            result.samples.append({"name": pair.name, "images": images, "boxes": boxes,
                                   "found": found})
    return result


# --- the picture grid ---------------------------------------------------------------------

def _panel(image: np.ndarray, boxes: list[list[float]], found: list[Detection],
           min_score: float, text: str) -> np.ndarray:
    scale = PANEL_WIDTH / image.shape[1]
    panel = cv2.resize(as_bgr8(image), (PANEL_WIDTH, max(1, round(image.shape[0] * scale))),
                       interpolation=cv2.INTER_AREA)
    for box in boxes:
        p1, p2 = (round(box[0] * scale), round(box[1] * scale)), (round(box[2] * scale),
                                                                  round(box[3] * scale))
        cv2.rectangle(panel, p1, p2, GT_COLOR, 2)
    for d in found:
        if d.score >= min_score:
            cv2.rectangle(panel, (round(d.x1 * scale), round(d.y1 * scale)),
                          (round(d.x2 * scale), round(d.y2 * scale)), DET_COLOR, 1)
    cv2.putText(panel, text, (6, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (255, 255, 255), 2,
                cv2.LINE_AA)
    cv2.putText(panel, text, (6, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (0, 0, 0), 1, cv2.LINE_AA)
    return panel


def picture_grid(evaluation: Evaluation, ap: dict[str, dict[str, Any]],
                 min_score: float = 0.3) -> np.ndarray | None:
    """One row per sample pair, one column per input (thermal | visible | fused ...):
    ground truth in red, detections scoring >= ``min_score`` in green."""
    rows = []
    for sample in evaluation.samples:
        panels = []
        for key, label in evaluation.labels.items():
            text = f"{sample['name']} {label} (AP50 {ap[key]['AP50']:.2f})"
            panels.append(_panel(sample["images"][key], sample["boxes"], sample["found"][key],
                                 min_score, text))
        height = max(p.shape[0] for p in panels)
        panels = [cv2.copyMakeBorder(p, 0, height - p.shape[0], 0, 2, cv2.BORDER_CONSTANT)
                  for p in panels]
        rows.append(np.hstack(panels))
    if not rows:
        return None
    width = max(r.shape[1] for r in rows)
    rows = [cv2.copyMakeBorder(r, 0, 2, 0, width - r.shape[1], cv2.BORDER_CONSTANT) for r in rows]
    return np.vstack(rows)


# --- the tables ----------------------------------------------------------------------------

def markdown_table(evaluation: Evaluation, ap: dict[str, dict[str, Any]], detector: str) -> str:
    """The per-input AP table (Markdown)."""
    n_gt = next(iter(ap.values()))["num_gt"] if ap else 0
    lines = [f"{len(evaluation.names)} pairs, {n_gt} ground-truth persons, detector {detector}",
             "", "| input | AP@0.5 | AP@[.5:.95] | detections | detector ms/frame |",
             "|---|---:|---:|---:|---:|"]
    for key, label in evaluation.labels.items():
        row = ap[key]
        lines.append(f"| {label} | {row['AP50']:.3f} | {row['AP']:.3f} | "
                     f"{row['num_detections']} | {row['detect_ms']:.1f} |")
    if evaluation.errors:
        lines += ["", f"{len(evaluation.errors)} pair(s) left out:"]
        lines += [f"- {message}" for message in evaluation.errors]
    return "\n".join(lines) + "\n"
