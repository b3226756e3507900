"""The replay report as typed sections; ``to_dict()`` gives report.json (schema: docs/REPLAY.md).

Each section is built once by the analysis and never changed afterwards. Optional parts are
None and left out of the JSON, so a replay that stopped half way still has a valid report of what
it measured. :class:`ReplayReport` also reads as the mapping of its JSON form
(``report["counts"]``), which is what the renderers in :mod:`mmdrfuse_ros.replay.report` take,
so they render a saved report.json and a fresh report alike.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

#: n, mean, p50, p95, p99, max, min of a latency in milliseconds (only n when there is none).
LatencyStats = dict[str, float | int]


def _without_none(pairs: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in pairs.items() if v is not None}


# ----------------------------------------------------------------------------- counts
@dataclass(frozen=True)
class Check:
    """One consistency check of the counts: do they add up?"""

    name: str
    ok: bool
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "ok": self.ok, "detail": self.detail}


@dataclass
class FrameCounts:
    """Frames at each step; the node's counts are None when no counters were available."""

    published_thermal: int
    published_rgb: int
    published_total: int
    received_thermal: int | None = None
    received_rgb: int | None = None
    frames_in: int | None = None
    synchronised: int | None = None
    frames_in_pairs: int | None = None
    unmatched: int | None = None
    fused: int | None = None
    dropped_after_sync: int | None = None
    unmatched_evicted: int | None = None
    unmatched_still_queued: int | None = None
    recorded_fused: int = 0
    recorded_detections: int = 0
    floor_received: int | None = None

    def to_dict(self) -> dict[str, int]:
        return _without_none({f.name: getattr(self, f.name) for f in fields(self)})


@dataclass
class CountsSection:
    """Counts, the checks that they add up, drops by cause, and where the node's counts came
    from (its attributes in-process, its /diagnostics when external)."""

    counts: FrameCounts
    checks: list[Check]
    drops: dict[str, int]
    source: str
    node_stats: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "counts": self.counts.to_dict(),
            "checks": [c.to_dict() for c in self.checks],
            "drops": dict(self.drops),
            "counts_source": self.source,
        }
        if self.node_stats:
            out["fusion_node_stats"] = self.node_stats
        return out


# ----------------------------------------------------------------------------- latency
@dataclass
class Playback:
    """How closely the player kept the bag's timing."""

    lag_ms: LatencyStats
    wall_s: float
    bag_s: float
    note: str

    def to_dict(self) -> dict[str, Any]:
        return {"lag_ms": self.lag_ms, "wall_s": self.wall_s, "bag_s": self.bag_s,
                "note": self.note}  # fmt: skip


@dataclass
class LatencySection:
    """Latency per stream, rates, playback timing, and the raw series for the plots."""

    latency_ms: dict[str, LatencyStats]
    note: str
    throughput_hz: dict[str, float]
    series_latency_ms: dict[str, list[float]]
    series_events_s: dict[str, list[float]]
    frames: list[dict[str, Any]]  # per RGB stamp: the latency of each stream that has one
    unknown_stamps: dict[str, int] | None = None  # outputs whose stamp was never published
    playback: Playback | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"latency_ms": self.latency_ms, "latency_note": self.note}
        if self.unknown_stamps:
            out["outputs_with_unknown_stamp"] = self.unknown_stamps
        out["throughput_hz"] = self.throughput_hz
        if self.playback is not None:
            out["playback"] = self.playback.to_dict()
        out["series"] = {"latency_ms": self.series_latency_ms, "events_s": self.series_events_s}
        out["frames"] = self.frames
        return out


# ----------------------------------------------------------------------------- quality
@dataclass
class FusionMetricsSection:
    """Fusion metrics on a subsample of the fused frames (or a note saying why there are none)."""

    frames: int
    note: str
    of: int | None = None
    mean: dict[str, float] | None = None
    per_frame: list[dict[str, float]] | None = None

    def to_dict(self) -> dict[str, Any]:
        return _without_none({"frames": self.frames, "of": self.of, "mean": self.mean,
                              "per_frame": self.per_frame, "note": self.note})  # fmt: skip


@dataclass(frozen=True)
class ModalityAP:
    """AP of one input (fused, visible, thermal), or why it could not be computed."""

    ap50: float | None = None  # AP@0.5
    ap: float | None = None  # AP@[.5:.95]
    num_images: int | None = None
    num_gt: int | None = None
    num_detections: int | None = None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        if self.error is not None:
            return {"error": self.error}
        return {"AP50": self.ap50, "AP": self.ap, "num_images": self.num_images,
                "num_gt": self.num_gt, "num_detections": self.num_detections}  # fmt: skip


@dataclass
class DetectionSection:
    """AP per input on the same frames, planned from the bag (or a note saying why there is
    none). ``fused_missing``: planned frames whose fused detections never arrived, scored as all
    misses in ``results["fused"]``; ``fused_delivered``: fused AP on the frames that arrived."""

    note: str
    frames: int | None = None
    results: dict[str, ModalityAP] | None = None
    fused_missing: int | None = None
    fused_delivered: ModalityAP | None = None

    def to_dict(self) -> dict[str, Any]:
        results = None if self.results is None else {k: v.to_dict()
                                                     for k, v in self.results.items()}  # fmt: skip
        delivered = None if self.fused_delivered is None else self.fused_delivered.to_dict()
        return _without_none({"frames": self.frames, "fused_missing": self.fused_missing,
                              "results": results, "fused_delivered": delivered,
                              "note": self.note})  # fmt: skip


# ----------------------------------------------------------------------------- the report
@dataclass
class SessionInfo:
    """What the session used, beside the options: the Fast DDS profile, the nodes' parameters
    and backends (None: not known, e.g. the nodes did not start)."""

    fastdds_profile_used: str | None
    fusion_params: dict[str, Any] | None = None
    detector_params: dict[str, Any] | None = None
    backend_used: str | None = None
    detector_backend: str | None = None
    detector_used: str | None = None  # what runs: yolox, onnx, hog
    detector_fallback: str | None = None  # why backend auto fell back to HOG ("" or None: no)

    def to_dict(self) -> dict[str, Any]:
        return {"fastdds_profile_used": self.fastdds_profile_used,
                **_without_none({"fusion_params": self.fusion_params,
                                 "detector_params": self.detector_params,
                                 "backend_used": self.backend_used,
                                 "detector_backend": self.detector_backend,
                                 "detector_used": self.detector_used,
                                 "detector_fallback": self.detector_fallback or None})}  # fmt: skip


@dataclass(eq=False)
class ReplayReport(Mapping[str, Any]):
    """The whole report. ``status``: "interrupted" after a stop signal, else "error" as soon as
    there is an error, else "ok"."""

    options: dict[str, Any]  # the replay's options, JSON-able
    created_unix: float
    machine: str
    errors: list[str] = field(default_factory=list)
    bag: dict[str, Any] = field(default_factory=dict)
    session: SessionInfo | None = None
    external_hint: str | None = None
    interrupted: str | None = None  # the stop signal, e.g. "interrupted by SIGINT during playback"
    warnings: list[str] = field(default_factory=list)  # e.g. a misconfigured external node
    stages: dict[str, dict[str, dict[str, float]]] | None = None  # node -> stage -> p50/p95 ms
    wall_s: dict[str, float] = field(default_factory=dict)
    counts: CountsSection | None = None
    latency: LatencySection | None = None
    fusion_metrics: FusionMetricsSection | None = None
    detection: DetectionSection | None = None
    recorder_errors: list[str] | None = None
    traceback: str | None = None
    report_warnings: list[str] | None = None
    files: dict[str, str] | None = None
    folder: Path | None = None  # where the files were written (None: nowhere); not in the JSON
    tool: str = "mmdrfuse replay"

    @property
    def status(self) -> str:
        if self.interrupted:
            return "interrupted"
        return "error" if self.errors else "ok"

    def to_dict(self) -> dict[str, Any]:
        settings = {**self.options, **(self.session.to_dict() if self.session else {})}
        out: dict[str, Any] = {"tool": self.tool, "status": self.status,
                               "errors": list(self.errors), "created_unix": self.created_unix,
                               "machine": self.machine, "settings": settings,
                               "bag": self.bag}  # fmt: skip
        if self.interrupted:
            out["interrupted"] = self.interrupted
        if self.warnings:
            out["warnings"] = list(self.warnings)
        if self.external_hint:
            out["external_hint"] = self.external_hint
        if self.wall_s:
            out["wall_s"] = dict(self.wall_s)
        for section in (self.counts, self.latency):
            if section is not None:
                out.update(section.to_dict())
        if self.fusion_metrics is not None:
            out["fusion_metrics"] = self.fusion_metrics.to_dict()
        if self.detection is not None:
            out["detection"] = self.detection.to_dict()
        if self.stages:
            out["stages_ms"] = self.stages
        out.update(_without_none({"recorder_errors": self.recorder_errors,
                                  "traceback": self.traceback,
                                  "report_warnings": self.report_warnings,
                                  "files": self.files}))  # fmt: skip
        return out

    # -- read as the JSON mapping ------------------------------------------------------------
    def __getitem__(self, key: str) -> Any:
        return self.to_dict()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.to_dict())

    def __len__(self) -> int:
        return len(self.to_dict())
