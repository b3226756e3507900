"""Quality after the nodes stopped: fusion metrics, detection AP, and the sample pictures.

The fusion metrics are computed on a subsample of the fused frames the recorder kept, against
the sources prepared as the engine prepares them. AP is scored on frames chosen from
the bag before playback (:func:`planned_ap_stamps`): the detector is run offline on their thermal
and visible frames, and the online fused detections are scored on the same frames, a frame whose
detections never arrived counting as all misses, so that runs and paths compare.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from mmdrfuse_ros.bag import io
from mmdrfuse_ros.metrics import VALIDATION_METRICS
from mmdrfuse_ros.replay.measurements import DetectionRow, Measurements
from mmdrfuse_ros.replay.plan import BagPlan, ReplayOptions
from mmdrfuse_ros.replay.report import SampleFrame
from mmdrfuse_ros.replay.sections import DetectionSection, FusionMetricsSection, ModalityAP
from mmdrfuse_ros.sampling import select_evenly

Progress = Callable[[], None]
_AP_KEYS = ("AP50", "AP", "num_images", "num_gt", "num_detections")


def _nearest(sorted_values: list[int], value: int) -> int | None:
    if not sorted_values:
        return None
    i = bisect.bisect_left(sorted_values, value)
    candidates = sorted_values[max(i - 1, 0) : i + 1]
    return min(candidates, key=lambda v: abs(v - value))


@dataclass
class Frames:
    """The bag frames the evaluation needs: RGB by stamp, thermal by stamp, and the thermal
    stamp paired with each RGB stamp (the nearest)."""

    rgb: dict[int, np.ndarray]
    thermal: dict[int, np.ndarray]
    pairing: dict[int, int | None]

    def thermal_for(self, stamp: int) -> np.ndarray | None:
        t_stamp = self.pairing.get(stamp)
        return self.thermal.get(t_stamp) if t_stamp is not None else None


def read_frames(options: ReplayOptions, plan: BagPlan, rgb_stamps: set[int]) -> Frames:
    """Decode the RGB frames with these stamps and their nearest thermal frames from the bag."""
    pairing = {s: _nearest(plan.thermal_stamps, s) for s in rgb_stamps}
    thermal_stamps = {t for t in pairing.values() if t}
    frames = Frames({}, {}, pairing)
    if not rgb_stamps and not thermal_stamps:
        return frames
    with io.BagReader(options.bag) as reader:
        try:
            for topic, msgtype, _, raw in reader.messages([plan.rgb_topic, plan.thermal_topic]):
                stamp = io.header_stamp_from_cdr(raw)
                is_rgb = topic == plan.rgb_topic
                if stamp not in (rgb_stamps if is_rgb else thermal_stamps):
                    continue
                image, _ = io.message_to_array(reader.deserialize(raw, msgtype), msgtype)
                (frames.rgb if is_rgb else frames.thermal)[stamp] = np.array(image)
        except (io.BagError, ValueError):
            pass  # frames after a corrupt part are simply not available
    return frames


# ----------------------------------------------------------------------------- node settings
def engine_settings(fusion_params: dict[str, Any]) -> dict[str, Any]:
    """FusionEngine kwargs for preparing the sources as the node did (its parameter table's
    defaults, overridden by the replay's parameters); one frame at a time, on the CPU."""
    from mmdrfuse_ros.settings import defaults
    from mmdrfuse_ros.settings.fusion import FUSION_PARAMS, fusion_engine_kwargs

    values = defaults(FUSION_PARAMS)
    values.update({k: v for k, v in fusion_params.items() if k in values})
    kwargs = fusion_engine_kwargs(values)
    # the preparation does not depend on the backend; no smoothing across a subsample
    kwargs.update(backend="cpu-fast", device=None, fp16=False, thermal_smoothing=0.0)
    return kwargs


def offline_detector(params: dict[str, Any]) -> Callable[[np.ndarray], list[DetectionRow]]:
    """image -> [[x1, y1, x2, y2, score]] with the detector node's backend and settings."""
    from mmdrfuse_ros.detection import create_detector
    from mmdrfuse_ros.settings import defaults
    from mmdrfuse_ros.settings.detector import DETECTOR_PARAMS, detector_kwargs

    values = defaults(DETECTOR_PARAMS)
    values.update({k: v for k, v in params.items() if k in values})
    backend, kwargs = detector_kwargs(values)  # the node's own mapping: the same detector
    detector = create_detector(backend, **kwargs)

    def detect(image: np.ndarray) -> list[DetectionRow]:
        return [list(d.as_row()) for d in detector.detect(image)]

    return detect


# ----------------------------------------------------------------------------- fusion metrics
def _valid_region(plan: BagPlan, thermal_shape: tuple[int, int], size: tuple[int, int]):
    """Slices of the RGB image inside the registered thermal field of view (for metrics)."""
    from mmdrfuse_ros.fusion.geometry import map_corners

    h, w = size
    if plan.homography is None:
        return slice(0, h), slice(0, w)
    th, tw = thermal_shape
    corners = map_corners(plan.homography, tw, th)
    x0 = math.ceil(max(corners[0, 0], corners[3, 0], 0))
    x1 = math.floor(min(corners[1, 0], corners[2, 0], w))
    y0 = math.ceil(max(corners[0, 1], corners[1, 1], 0))
    y1 = math.floor(min(corners[2, 1], corners[3, 1], h))
    if x1 - x0 < 16 or y1 - y0 < 16:
        return slice(0, h), slice(0, w)
    return slice(y0 + 1, y1 - 1), slice(x0 + 1, x1 - 1)


def _grey(image: np.ndarray) -> np.ndarray:
    import cv2

    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    image = image.astype(np.float64)
    return image * 255.0 if image.max(initial=0) <= 1.0 else image


def _metrics_note(evaluated: int, total_fused: int, registered: bool) -> str:
    return (
        f"Computed on {evaluated} of {total_fused} fused frames, evenly spaced (a "
        "subsample: the metrics take about a second per frame on one core). Sources as the "
        "network saw them: thermal normalised and registered into the RGB geometry, visible "
        "luma; fused as grey; inside the thermal field of view"
        + (" (the registered thermal rectangle)." if registered else ".")
        + " SSIM and VIF are sums over the two sources, as the reference evaluator computes."
    )


def fusion_metrics(fused: dict[int, np.ndarray], frames: Frames, plan: BagPlan,
                   fusion_params: dict[str, Any], total_fused: int,
                   progress: Progress) -> FusionMetricsSection:  # fmt: skip
    """Metrics on the kept fused frames, against the engine-prepared sources."""
    from mmdrfuse_ros.fusion import FusionEngine
    from mmdrfuse_ros.metrics import compute_metrics

    if not fused:
        return FusionMetricsSection(frames=0, note="no fused frame was received")
    engine = FusionEngine(**engine_settings(fusion_params))
    per_frame = []
    try:
        for stamp in sorted(fused):
            thermal = frames.thermal_for(stamp)
            if stamp not in frames.rgb or thermal is None:
                continue
            prepared = engine.prepare(thermal, frames.rgb[stamp])
            rows, cols = _valid_region(plan, thermal.shape[:2], frames.rgb[stamp].shape[:2])
            ir = prepared.thermal[rows, cols].astype(np.float64) * 255.0
            vis = prepared.visible.luma[rows, cols].astype(np.float64) * 255.0
            values = compute_metrics(ir, vis, _grey(fused[stamp])[rows, cols],
                                     names=list(VALIDATION_METRICS))  # fmt: skip
            per_frame.append({"stamp_ns": stamp, **{k: float(v) for k, v in values.items()}})
            progress()
    finally:
        engine.close()
    if not per_frame:
        return FusionMetricsSection(frames=0, note="no fused frame could be evaluated")
    mean = {m: float(np.mean([f[m] for f in per_frame])) for m in VALIDATION_METRICS
            if m in per_frame[0]}  # fmt: skip
    return FusionMetricsSection(frames=len(per_frame), of=total_fused, mean=mean,
                                per_frame=per_frame,
                                note=_metrics_note(len(per_frame), total_fused,
                                                   plan.homography is not None))  # fmt: skip


# ----------------------------------------------------------------------------- detection AP
def thermal_for_display(image: np.ndarray) -> np.ndarray:
    """8-bit thermal the way the fusion engine normalises it (1/99 percentiles), for the
    detector and the pictures."""
    from mmdrfuse_ros.fusion import ThermalNormalizer

    norm = ThermalNormalizer("percentile", None, (1.0, 99.0), 0.0)
    return (np.clip(norm(image), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def planned_ap_stamps(plan: BagPlan, n: int) -> list[int]:
    """The AP frames: at most ``n`` RGB stamps with ground truth, evenly spaced over the bag.

    Decided from the bag alone, before playback, so that every run and every path (in-process,
    ``--external``) scores the same frames whatever the nodes drop under load.
    """
    rgb = set(plan.rgb_stamps)
    return select_evenly(sorted(s for s in plan.gt_rgb if s in rgb), n)


def _ap(dets: dict[int, list[DetectionRow]], gts: dict[int, np.ndarray]) -> ModalityAP:
    from mmdrfuse_ros.metrics import average_precision

    if not gts:
        return ModalityAP(error="no frames with ground truth")
    try:
        r = average_precision(dets, gts)
    except ValueError as exc:
        return ModalityAP(error=str(exc))
    return ModalityAP(ap50=r["AP50"], ap=r["AP"], num_images=r["num_images"],
                      num_gt=r["num_gt"], num_detections=r["num_detections"])  # fmt: skip


def _ap_note(chosen: int, limit: int, missing: int) -> str:
    return (
        f"{chosen} frames: the bag's RGB frames with ground truth"
        + (f", an even subsample of at most {limit}" if chosen >= limit else "")
        + ", chosen from the bag before playback (the same frames in every run). fused: the "
        "detector node's output on the fused image; a frame whose detections never arrived "
        f"counts as all misses ({missing} of {chosen} here; fused_delivered: AP on the others "
        "only). visible and thermal: the same detector and settings run offline on the RGB frame "
        "and on the thermal frame paired with it (nearest stamp; percentile-normalised to 8 bits, "
        "its own geometry and ground truth)."
    )


def _offline_ap(frames: Frames, plan: BagPlan, chosen: list[int],
                detect: Callable[[np.ndarray], list[DetectionRow]],
                progress: Progress) -> dict[str, ModalityAP]:  # fmt: skip
    """Visible and thermal AP of the offline detector on the planned frames (no node involved)."""
    det_v: dict[int, list[DetectionRow]] = {}
    gt_t: dict[int, np.ndarray] = {}
    det_t: dict[int, list[DetectionRow]] = {}
    for s in chosen:
        if s in frames.rgb:
            det_v[s] = detect(frames.rgb[s])
        t_stamp = frames.pairing.get(s)
        if t_stamp in frames.thermal and t_stamp in plan.gt_thermal:
            gt_t[t_stamp] = plan.gt_thermal[t_stamp]
            det_t[t_stamp] = detect(thermal_for_display(frames.thermal[t_stamp]))
        progress()
    return {"visible": _ap(det_v, {s: plan.gt_rgb[s] for s in det_v}),
            "thermal": _ap(det_t, gt_t)}  # fmt: skip


def detection_ap(meas: Measurements, plan: BagPlan, frames: Frames, chosen: list[int],
                 detect: Callable[[np.ndarray], list[DetectionRow]], limit: int,
                 progress: Progress) -> DetectionSection:  # fmt: skip
    """AP of the online fused detections and of ``detect`` run offline on the thermal and
    visible frames, all on the planned frames ``chosen`` (the report's "detection" section)."""
    if not plan.gt_rgb:
        return DetectionSection(note="the bag has no ground truth: AP not computed")
    if not chosen:
        return DetectionSection(note="no RGB frame of the bag has ground truth: AP not computed")
    gt_f = {s: plan.gt_rgb[s] for s in chosen}
    delivered = {s: meas.detections[s] for s in chosen if s in meas.detections}
    missing = len(chosen) - len(delivered)
    fused = _ap({s: delivered.get(s, []) for s in chosen}, gt_f)  # missing: all misses
    on_delivered = (
        _ap(delivered, {s: gt_f[s] for s in delivered})
        if delivered
        else ModalityAP(error="no fused detections arrived for these frames")
    )
    results = {"fused": fused, **_offline_ap(frames, plan, chosen, detect, progress)}
    return DetectionSection(note=_ap_note(len(chosen), limit, missing), frames=len(chosen),
                            results=results, fused_missing=missing,
                            fused_delivered=on_delivered)  # fmt: skip


# ----------------------------------------------------------------------------- the evaluation
@dataclass
class Evaluation:
    """The quality sections and the pictures (which stay out of report.json)."""

    fusion_metrics: FusionMetricsSection
    detection: DetectionSection
    samples: list[SampleFrame]


def _samples(meas: Measurements, plan: BagPlan, frames: Frames,
             stamps: list[int]) -> list[SampleFrame]:  # fmt: skip
    out = []
    for s in stamps:
        thermal = frames.thermal_for(s)
        out.append(SampleFrame(
            stamp_ns=s,
            thermal=thermal_for_display(thermal) if thermal is not None else None,
            visible=frames.rgb.get(s),
            fused=meas.kept_fused.get(s),
            detections=meas.detections.get(s, []),
            ground_truth=plan.gt_rgb.get(s, np.zeros((0, 4))).tolist(),
            caption=f"t = {(s - plan.start_ns) / 1e9:.3f} s in the bag",
        ))  # fmt: skip
    return out


def evaluate(meas: Measurements, plan: BagPlan, options: ReplayOptions,
             fusion_params: dict[str, Any], detector_params: dict[str, Any],
             recorded_fused: int) -> Evaluation:  # fmt: skip
    """Fusion metrics, AP and pictures on frames of the bag's first loop."""
    from tqdm import tqdm

    metric_stamps = select_evenly(sorted(meas.kept_fused), options.metrics_frames)
    ap_stamps = planned_ap_stamps(plan, options.ap_frames)
    # pictures: kept frames that the detector also processed, where there are such
    with_dets = [s for s in sorted(meas.kept_fused) if s in meas.detections]
    sample_stamps = select_evenly(with_dets or metric_stamps, options.samples)
    frames = read_frames(options, plan, set(metric_stamps) | set(ap_stamps) | set(sample_stamps))
    steps = len(metric_stamps) + len(ap_stamps)
    with tqdm(total=steps, desc="evaluate", unit="frame", disable=not options.progress) as bar:
        metrics = fusion_metrics({s: meas.kept_fused[s] for s in metric_stamps}, frames, plan,
                                 fusion_params, recorded_fused, lambda: bar.update(1))  # fmt: skip
        if not options.detector:
            detection = DetectionSection(note="detection disabled (--no-detector)")
        else:
            try:
                detect = offline_detector(detector_params)
                detection = detection_ap(meas, plan, frames, ap_stamps, detect,
                                         options.ap_frames, lambda: bar.update(1))  # fmt: skip
            except ImportError as exc:
                detection = DetectionSection(note=f"detector unavailable: {exc}")
    return Evaluation(metrics, detection, _samples(meas, plan, frames, sample_stamps))
