"""The traffic of a replay: counts and their checks, drops by cause, latency, rates.

Latency is "stamp -> reception": from the moment the player published the input frame that
carries a header stamp to the moment the recorder received the output with that stamp (fused
images and detections keep the RGB header); where a stamp was published more than once (stamps
that repeat or restart in the bag), from the last of its publications before the reception.
It needs no clock shared with the bag's recorder and holds for bags whose stamps are far from
their log times. Plain data in, typed sections out.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from mmdrfuse_ros.replay.measurements import STREAMS, Measurements
from mmdrfuse_ros.replay.plan import BagPlan, ReplayOptions
from mmdrfuse_ros.replay.sections import (
    Check,
    CountsSection,
    FrameCounts,
    LatencySection,
    LatencyStats,
    Playback,
)

#: fusion-node counters that a /diagnostics status carries besides received_* and dropped_*.
_NODE_COUNTERS = ("pairs", "fused", "unmatched_evicted", "queued")
LATENCY_NOTE = (
    "From the publication of the RGB frame that carries a header stamp by the player to the "
    "reception of the output with that stamp by the recorder (wall clock, same process). "
    "The transport floor is a node that only deserialises and re-publishes each RGB image."
)
PLAYBACK_NOTE = ("lag: how late the player published each message against the bag's "
                 "timing scaled by --rate (a loaded machine delays it)")  # fmt: skip


def latency_summary(values_s: Iterable[float]) -> LatencyStats:
    """n, mean, p50, p95, p99, max (milliseconds) of latencies given in seconds."""
    data = np.asarray([v for v in values_s if v is not None and math.isfinite(v)], np.float64)
    if data.size == 0:
        return {"n": 0}
    ms = data * 1e3
    p50, p95, p99 = np.percentile(ms, [50, 95, 99])
    return {
        "n": int(ms.size),
        "mean": float(ms.mean()),
        "p50": float(p50),
        "p95": float(p95),
        "p99": float(p99),
        "max": float(ms.max()),
        "min": float(ms.min()),
    }


# ----------------------------------------------------------------------------- counts
def _int(value: Any) -> int | None:
    try:
        return int(float(value))
    except (TypeError, ValueError):
        return None


def node_counts(
    session_stats: dict[str, Any] | None, meas: Measurements, status_name: str
) -> tuple[dict[str, Any] | None, str]:
    """The fusion node's counters: from the node itself (in-process) or from its /diagnostics
    status named ``status_name`` (external: the last status seen minus the first)."""
    if session_stats is not None:
        return session_stats, "fusion node attributes (in-process)"
    if status_name not in meas.diagnostics:
        return None, "no /diagnostics from a fusion node were received"
    last, first = meas.diagnostics[status_name], meas.diagnostics_first.get(status_name, {})
    out: dict[str, Any] = {}
    for key, value in last.items():
        v = _int(value)
        if v is None or not (key.startswith(("received_", "dropped_")) or key in _NODE_COUNTERS):
            continue
        base = 0 if key == "queued" else (_int(first.get(key)) or 0)
        out[key] = v - base
    return out, f"/diagnostics of {status_name!r} (last minus first status seen)"


def _sync_check(frames_in: int, pairs: int, evicted: int | None, queued: int) -> Check:
    name = "in = synchronised + unmatched"
    if evicted is not None:
        return Check(name, frames_in == 2 * pairs + evicted + queued,
                     f"{frames_in} frames in = 2 x {pairs} pairs + {evicted} evicted "
                     f"unmatched + {queued} still queued")  # fmt: skip
    unmatched = frames_in - 2 * pairs  # message_filters counts no evictions: what is left
    return Check(name, unmatched >= 0,
                 f"{frames_in} frames in = 2 x {pairs} pairs + {unmatched} unmatched "
                 "(derived: message_filters does not count evictions)")  # fmt: skip


def _node_side(
    counts: FrameCounts, node: dict[str, Any], recorded_fused: int
) -> tuple[list[Check], dict[str, int]]:
    """Fill the node's counts in; the checks that they add up and the drops by cause."""
    rec_t, rec_r = node.get("received_thermal", 0), node.get("received_rgb", 0)
    pairs, fused = node.get("pairs", 0), node.get("fused", 0)
    evicted, queued = node.get("unmatched_evicted"), node.get("queued", 0)
    dropped = {k[len("dropped_") :]: v for k, v in node.items() if k.startswith("dropped_")}
    counts.received_thermal, counts.received_rgb = rec_t, rec_r
    counts.frames_in = rec_t + rec_r
    counts.synchronised, counts.frames_in_pairs = pairs, 2 * pairs
    counts.unmatched = counts.frames_in - 2 * pairs
    counts.fused, counts.dropped_after_sync = fused, sum(dropped.values())
    if evicted is not None:
        counts.unmatched_evicted, counts.unmatched_still_queued = evicted, queued
    drops = {"lost_in_transport_thermal": counts.published_thermal - rec_t,
             "lost_in_transport_rgb": counts.published_rgb - rec_r,
             "unmatched_by_sync": counts.unmatched, **dropped}  # fmt: skip
    checks = [
        _sync_check(counts.frames_in, pairs, evicted, queued),
        Check("fused + dropped = synchronised", fused + sum(dropped.values()) == pairs,
              f"{fused} fused + {sum(dropped.values())} dropped ("
              + ", ".join(f"{k} {v}" for k, v in dropped.items() if v)
              + f") vs {pairs} pairs"),
        Check("fused images published = recorded", recorded_fused == fused,
              f"node published {fused}, recorder received {recorded_fused}"),
    ]  # fmt: skip
    if recorded_fused != fused:
        drops["fused_lost_after_publish"] = fused - recorded_fused
    return checks, drops


def stamp_check(stamp_issues: Mapping[str, str]) -> Check:
    """Header stamps unique and increasing per input topic (what matching outputs relies on)."""
    detail = "; ".join(f"{t}: {d}" for t, d in stamp_issues.items())
    return Check("header stamps unique and increasing", not stamp_issues,
                 detail or "every input frame has a stamp of its own, in order")  # fmt: skip


def counts_section(
    meas: Measurements, node_stats: dict[str, Any] | None, status_name: str, floor: bool,
    stamp_issues: Mapping[str, str] | None = None,
) -> CountsSection:
    """Frames at each step, whether they add up, and the drops by cause."""
    node, source = node_counts(node_stats, meas, status_name)
    pub_t, pub_r = len(meas.published["thermal"]), len(meas.published["rgb"])
    counts = FrameCounts(published_thermal=pub_t, published_rgb=pub_r,
                         published_total=pub_t + pub_r)  # fmt: skip
    recorded_fused = len(meas.received["fused"])
    checks: list[Check] = []
    drops: dict[str, int] = {}
    if node:
        checks, drops = _node_side(counts, node, recorded_fused)
    counts.recorded_fused = recorded_fused
    counts.recorded_detections = len(meas.received["detections"])
    if floor:
        counts.floor_received = len(meas.received["floor"])
        drops["floor_lost"] = pub_r - len(meas.received["floor"])
    if stamp_issues is not None:
        checks.append(stamp_check(stamp_issues))
    return CountsSection(counts, checks, drops, source, node_stats)


# ----------------------------------------------------------------------------- latency
#: stamp -> [(send time, playback index)] in send order (Measurements.publication_times).
PublicationTimes = dict[int, list[tuple[float, int]]]


def _source(published: PublicationTimes, stamp: int, t: float) -> tuple[float, int] | None:
    """The publication an output with ``stamp`` received at ``t`` came from: the last one of
    that stamp sent before ``t`` (the first one if none was, on clock noise)."""
    sent = published.get(stamp)
    if not sent:
        return None
    i = bisect.bisect_right(sent, (t, math.inf))
    return sent[max(i - 1, 0)]


def _latencies(
    published: PublicationTimes, received: list[tuple[int, float]]
) -> tuple[list[float], int]:
    """(latencies in seconds, outputs whose stamp was never published) for one stream."""
    out, unknown = [], 0
    for stamp, t in received:
        source = _source(published, stamp, t)
        if source is None:
            unknown += 1
        else:
            out.append(t - source[0])
    return out, unknown


def _rate(times: list[float]) -> float | None:
    if len(times) < 2:
        return None
    span = max(times) - min(times)
    return (len(times) - 1) / span if span > 0 else None


def _events(meas: Measurements) -> dict[str, list[float]]:
    """Seconds since the first publication of every publication and reception, per stream."""
    t0 = meas.t0
    return {
        "thermal_published": sorted(t - t0 for _, _, t in meas.published["thermal"]),
        "rgb_published": sorted(t - t0 for _, _, t in meas.published["rgb"]),
        **{f"{k}_received": sorted(t - t0 for _, t in v) for k, v in meas.received.items()},
    }


def _per_frame(meas: Measurements, published: PublicationTimes) -> list[dict[str, Any]]:
    """Per RGB frame played (its playback index): the latency of each stream that delivered
    an output for it."""
    per_frame: dict[int, dict[str, Any]] = {}
    for stream in STREAMS:
        for stamp, t in meas.received[stream]:
            source = _source(published, stamp, t)
            if source is not None:
                row = per_frame.setdefault(source[1], {"stamp_ns": stamp})
                row[f"{stream}_latency_ms"] = round((t - source[0]) * 1e3, 3)
    return [{"index": i, **v} for i, v in sorted(per_frame.items())]


def latency_section(meas: Measurements, plan: BagPlan, options: ReplayOptions) -> LatencySection:
    """Latency per stream, rates, how the player kept time, and the series for the plots."""
    latency_s: dict[str, list[float]] = {}
    unknown: dict[str, int] = {}
    published = meas.publication_times("rgb")
    for stream in STREAMS:
        latency_s[stream], unknown[stream] = _latencies(published, meas.received[stream])
    events = _events(meas)
    playback = None
    if meas.player_lag_s:
        played = max(events["rgb_published"] + events["thermal_published"], default=0.0)
        playback = Playback(latency_summary(meas.player_lag_s), played,
                            plan.duration_s * options.loop, PLAYBACK_NOTE)  # fmt: skip
    return LatencySection(
        latency_ms={k: latency_summary(v) for k, v in latency_s.items() if v},
        note=LATENCY_NOTE,
        throughput_hz={k: r for k, v in events.items() if (r := _rate(v)) is not None},
        series_latency_ms={k: [round(x * 1e3, 3) for x in v] for k, v in latency_s.items()},
        series_events_s={k: [round(x, 4) for x in v] for k, v in events.items()},
        frames=_per_frame(meas, published),
        unknown_stamps=unknown if any(unknown.values()) else None,
        playback=playback,
    )


# ----------------------------------------------------------------------------- stages
def stage_section(nodes: Mapping[str, Mapping[str, Any] | None]) -> dict[str, Any] | None:
    """node -> stage -> {"p50": ms, "p95": ms} from each node's stats or /diagnostics values
    (keys ``stage_<stage>_p<q>_ms``); None when no node reports stages."""
    from mmdrfuse_ros.nodes.timing import stage_table

    out: dict[str, Any] = {}
    for node, values in nodes.items():
        if not values:
            continue
        table = stage_table(values)
        rows = {stage: {f"p{q}": v for q, v in sorted(qs.items()) if math.isfinite(v)}
                for stage, qs in table.items()}  # fmt: skip
        rows = {stage: qs for stage, qs in rows.items() if qs}
        if rows:
            out[node] = rows
    return out or None
