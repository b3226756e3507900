"""Rate, latency and counter helpers, and a once-a-second ``/diagnostics`` publisher for our nodes.

Why not diagnostic_updater: it is not installable from PyPI. This publishes the same message
(``diagnostic_msgs/DiagnosticArray`` with one ``DiagnosticStatus`` named ``"<node>: <task>"``,
values as strings), so ``rqt_runtime_monitor`` and the aggregator read it as usual.

All helpers are thread-safe (subscription callbacks, a worker thread and the timer touch them).
Rates and receive->publish latencies use the monotonic wall clock (they measure this machine);
header-stamp latencies are computed by the caller from the node clock, so they follow
``use_sim_time``. The timer runs on the steady clock so diagnostics keep coming while a bag
replay's ``/clock`` is paused.

Typical use in a node::

    counters = Counters()
    rgb_rate = RateMeter()
    latency = LatencyStats()
    def collect():
        values = {**counters.snapshot(), "rgb_hz": rgb_rate.rate(), **latency.summary("lat")}
        return DiagnosticReport(OK, "running", values)
    diag = DiagnosticsPublisher(self, "fusion", collect)
    ...
    diag.destroy()  # before destroy_node()
"""

from __future__ import annotations

import collections
import contextlib
import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

#: DiagnosticStatus levels (the byte values of diagnostic_msgs/DiagnosticStatus).
OK, WARN, ERROR, STALE = 0, 1, 2, 3


class RateMeter:
    """Events per second over a sliding window (default the last 5 s) of monotonic time."""

    def __init__(self, window_s: float = 5.0, clock: Callable[[], float] = time.monotonic):
        if window_s <= 0:
            raise ValueError(f"window_s must be > 0, got {window_s}")
        self._window = window_s
        self._clock = clock
        self._times: collections.deque[float] = collections.deque()
        self._lock = threading.Lock()
        self._total = 0
        self._last: float | None = None

    def tick(self, now: float | None = None) -> None:
        """Record one event (now, or at ``now`` in the meter's clock)."""
        now = self._clock() if now is None else now
        with self._lock:
            self._times.append(now)
            self._last = now
            self._total += 1
            self._trim(now)

    def rate(self, now: float | None = None) -> float:
        """Events per second in the window; 0 with fewer than two events in it."""
        now = self._clock() if now is None else now
        with self._lock:
            self._trim(now)
            if len(self._times) < 2:
                return 0.0
            # measured up to `now`, not the last event, so a stopped stream decays towards 0 Hz
            return (len(self._times) - 1) / max(now - self._times[0], 1e-9)

    def count(self, now: float | None = None) -> int:
        """Events in the window (the last ``window_s`` seconds)."""
        now = self._clock() if now is None else now
        with self._lock:
            self._trim(now)
            return len(self._times)

    @property
    def last(self) -> float | None:
        """The time of the newest event (the meter's clock), or None before the first."""
        with self._lock:
            return self._last

    @property
    def total(self) -> int:
        """Events since creation (never trimmed)."""
        with self._lock:
            return self._total

    def reset(self) -> None:
        with self._lock:
            self._times.clear()
            self._total = 0
            self._last = None

    def _trim(self, now: float) -> None:
        while self._times and self._times[0] < now - self._window:
            self._times.popleft()


class LatencyStats:
    """The last ``maxlen`` latency samples (seconds), summarised as percentiles in milliseconds."""

    def __init__(self, maxlen: int = 1000):
        self._samples: collections.deque[float] = collections.deque(maxlen=maxlen)
        self._lock = threading.Lock()
        self._count = 0

    def add(self, seconds: float) -> None:
        if not math.isfinite(seconds):
            return
        with self._lock:
            self._samples.append(seconds)
            self._count += 1

    @property
    def count(self) -> int:
        """Samples since creation (not only those kept)."""
        with self._lock:
            return self._count

    def percentile(self, q: float) -> float:
        """The q-th percentile (0..100) of the kept samples, in seconds; NaN when empty."""
        with self._lock:
            data = sorted(self._samples)
        return _percentile(data, q)

    def summary(self, prefix: str, quantiles: tuple[float, ...] = (50, 95)) -> dict[str, float]:
        """``{prefix_p50_ms: .., prefix_p95_ms: .., prefix_max_ms: ..}`` (NaN when empty)."""
        with self._lock:
            data = sorted(self._samples)
        out = {f"{prefix}_p{q:g}_ms": _percentile(data, q) * 1e3 for q in quantiles}
        out[f"{prefix}_max_ms"] = (data[-1] if data else math.nan) * 1e3
        return out

    def reset(self) -> None:
        with self._lock:
            self._samples.clear()
            self._count = 0


def _percentile(sorted_data: list[float], q: float) -> float:
    """Linear-interpolation percentile (numpy's default) without importing numpy here."""
    if not sorted_data:
        return math.nan
    pos = (len(sorted_data) - 1) * min(max(q, 0.0), 100.0) / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_data) - 1)
    return sorted_data[lo] + (sorted_data[hi] - sorted_data[lo]) * (pos - lo)


class Counters:
    """Named integer counters (drops by cause, bad inputs...), created on first use."""

    def __init__(self, names: tuple[str, ...] = ()):
        self._lock = threading.Lock()
        self._values: dict[str, int] = dict.fromkeys(names, 0)

    def inc(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._values[name] = self._values.get(name, 0) + n

    def get(self, name: str) -> int:
        with self._lock:
            return self._values.get(name, 0)

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._values)

    def reset(self) -> None:
        with self._lock:
            for key in self._values:
                self._values[key] = 0


@dataclass
class DiagnosticReport:
    """What a node reports once a second: level (OK/WARN/ERROR), a one-line message, key values."""

    level: int = OK
    message: str = ""
    values: Mapping[str, Any] = field(default_factory=dict)


def format_value(value: Any) -> str:
    """DiagnosticStatus values are strings: floats with 3 decimals, NaN as 'nan'."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.3f}"
    return str(value)


class DiagnosticsPublisher:
    """Publishes ``collect()`` as a DiagnosticArray on ``/diagnostics`` every ``period_s``.

    ``collect`` runs on the node's executor thread; an exception in it is reported as an ERROR
    status instead of killing the timer. ``hardware_id`` can be changed at any time (e.g. the
    device once the engine is loaded).
    """

    def __init__(
        self,
        node: Any,
        task: str,
        collect: Callable[[], DiagnosticReport],
        hardware_id: str = "",
        period_s: float = 1.0,
        topic: str | None = None,
    ):
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.clock import Clock, ClockType

        from mmdrfuse_ros.topics import DIAGNOSTICS

        self._node = node
        self._collect = collect
        self.hardware_id = hardware_id
        self.name = f"{node.get_name()}: {task}"
        self._pub = node.create_publisher(DiagnosticArray, topic or DIAGNOSTICS, 10)
        self._timer = node.create_timer(
            period_s, self.publish_now, clock=Clock(clock_type=ClockType.STEADY_TIME)
        )

    def publish_now(self) -> None:
        """Collect and publish one DiagnosticArray (also called by the timer)."""
        from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

        try:
            report = self._collect()
        except Exception as exc:  # report the broken collector, keep publishing
            report = DiagnosticReport(ERROR, f"diagnostics collection failed: {exc!r}", {})
        status = DiagnosticStatus(
            level=bytes([int(report.level)]),
            name=self.name,
            message=report.message,
            hardware_id=self.hardware_id,
            values=[KeyValue(key=str(k), value=format_value(v)) for k, v in report.values.items()],
        )
        msg = DiagnosticArray(status=[status])
        msg.header.stamp = self._node.get_clock().now().to_msg()
        with contextlib.suppress(Exception):  # context shutting down between timer and publish
            self._pub.publish(msg)

    def destroy(self) -> None:
        """Remove the timer and publisher (call before the node is destroyed)."""
        self._node.destroy_timer(self._timer)
        self._node.destroy_publisher(self._pub)


def status_values(status: Any) -> dict[str, str]:
    """KeyValue list of a received DiagnosticStatus as a dict (for tests and monitors)."""
    return {kv.key: kv.value for kv in status.values}
