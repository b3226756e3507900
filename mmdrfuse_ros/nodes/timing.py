"""Per-stage timing of a node's data path: where one input's time goes, as p50/p95 per stage.

Both nodes time the same way, so ``/diagnostics``, ``node.stats()`` and the replay's stage table
read alike::

    stages = StageTimer(("receive", "preprocess", "inference", "publish"))
    lap = stages.lap()              # starts now (or lap(start=<time.monotonic() value>))
    ...; lap.mark("preprocess")     # records the time since the previous mark (or the start)
    ...; lap.mark("inference")
    stages.add("receive", seconds)  # a duration measured elsewhere (another thread)
    stages.summary()                # {"stage_preprocess_p50_ms": .., "stage_preprocess_p95_ms": ..}

Times are ``time.monotonic()`` seconds, so a duration may start on one thread (a subscription
callback) and end on another (the worker). The summary has the same keys whatever has been
measured: a stage without samples reports NaN. Thread-safe: each stage keeps the last
``maxlen`` samples behind its own lock (:class:`~mmdrfuse_ros.nodes.diagnostics.LatencyStats`).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Mapping, Sequence

from mmdrfuse_ros.nodes.diagnostics import LatencyStats

#: the key prefix of every stage value
PREFIX = "stage"
#: the percentiles each stage reports
QUANTILES = (50, 95)
_KEY = re.compile(rf"^{PREFIX}_(?P<stage>[a-z0-9_]+?)_p(?P<q>[0-9]+)_ms$")


def stage_key(stage: str, quantile: int) -> str:
    """``stage_<stage>_p<quantile>_ms``, e.g. ``stage_network_p50_ms``."""
    return f"{PREFIX}_{stage}_p{quantile}_ms"


def stage_keys(stages: Iterable[str]) -> list[str]:
    """Every summary key of these stages, in stage order (p50 then p95 of each)."""
    return [stage_key(s, q) for s in stages for q in QUANTILES]


def stage_table(values: Mapping[str, object]) -> dict[str, dict[int, float]]:
    """``{stage: {50: ms, 95: ms}}`` from any mapping holding stage keys (``stats()``, or the
    string values of a DiagnosticStatus), in the order the keys appear."""
    table: dict[str, dict[int, float]] = {}
    for key, value in values.items():
        match = _KEY.match(str(key))
        if match is None:
            continue
        try:
            number = float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            continue
        table.setdefault(match["stage"], {})[int(match["q"])] = number
    return table


class Lap:
    """Consecutive stages of one input on one thread: ``mark(stage)`` records the time since the
    previous mark (or the start) under ``stage``."""

    def __init__(self, timer: StageTimer, start: float | None = None) -> None:
        self._timer = timer
        self._last = time.monotonic() if start is None else start

    def mark(self, stage: str) -> float:
        """Record and return the seconds since the previous mark."""
        now = time.monotonic()
        elapsed = now - self._last
        self._last = now
        self._timer.add(stage, elapsed)
        return elapsed


class StageTimer:
    """The named stages of a data path, each with its recent durations."""

    def __init__(self, stages: Sequence[str], maxlen: int = 1000) -> None:
        if not stages or len(set(stages)) != len(stages):
            raise ValueError(f"stages must be distinct names, got {list(stages)}")
        for stage in stages:
            if not re.fullmatch(r"[a-z0-9_]+", stage):
                raise ValueError(f"stage names are lower-case words, got {stage!r}")
        self.stages = tuple(stages)
        self._stats = {s: LatencyStats(maxlen) for s in self.stages}

    def add(self, stage: str, seconds: float) -> None:
        """Record one duration; a negative one (clocks of two threads) counts as 0."""
        self._stats[stage].add(max(0.0, seconds))

    def lap(self, start: float | None = None) -> Lap:
        """A :class:`Lap` starting at ``start`` (``time.monotonic()`` seconds) or now."""
        return Lap(self, start)

    def count(self, stage: str) -> int:
        """Samples recorded for ``stage`` since creation (or the last reset)."""
        return self._stats[stage].count

    def summary(self) -> dict[str, float]:
        """``{stage_<name>_p50_ms: .., stage_<name>_p95_ms: ..}`` for every stage (NaN: none)."""
        values: dict[str, float] = {}
        for stage, stats in self._stats.items():
            summary = stats.summary("x", QUANTILES)
            for q in QUANTILES:
                values[stage_key(stage, q)] = summary[f"x_p{q}_ms"]
        return values

    def reset(self) -> None:
        for stats in self._stats.values():
            stats.reset()
