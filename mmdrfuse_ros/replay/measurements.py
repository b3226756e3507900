"""What the replay records while playing, as plain data: filled from several threads, read after.

Times are ``time.monotonic()`` seconds (CLOCK_MONOTONIC, shared by the player process and this
one); stamps are header stamps in nanoseconds. Each publication also carries its index in the
playback (the bag's message order, across loops), unique even where header stamps repeat or
restart: counts are of publications, and an output is matched to the last publication of its
stamp before it arrived (:meth:`Measurements.publication_times`).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import numpy as np

#: the input roles the player publishes with a header stamp (camera_info is only counted).
INPUT_ROLES = ("thermal", "rgb")
#: the output streams the recorder times: fused images, detection messages, the transport floor.
STREAMS = ("fused", "detections", "floor")

#: [x1, y1, x2, y2, score] of one detection.
DetectionRow = list[float]
#: key -> value of one DiagnosticStatus.
StatusValues = dict[str, str]


#: (playback index, header stamp, monotonic send time) of one publication.
Sent = tuple[int, int, float]


def _by_role() -> dict[str, list[Sent]]:
    return {role: [] for role in INPUT_ROLES}


def _by_stream() -> dict[str, list[tuple[int, float]]]:
    return {stream: [] for stream in STREAMS}


@dataclass
class Measurements:
    """Everything recorded while playing; each writer takes ``lock``."""

    t0: float = 0.0  # monotonic time of the first publication
    published: dict[str, list[Sent]] = field(default_factory=_by_role)  # role -> publications
    published_info: int = 0
    received: dict[str, list[tuple[int, float]]] = field(default_factory=_by_stream)  # (stamp, t)
    detections: dict[int, list[DetectionRow]] = field(default_factory=dict)  # stamp -> rows
    kept_fused: dict[int, np.ndarray] = field(default_factory=dict)
    player_lag_s: list[float] = field(default_factory=list)  # publish time - scheduled time
    diagnostics: dict[str, StatusValues] = field(default_factory=dict)  # status name -> values
    diagnostics_first: dict[str, StatusValues] = field(default_factory=dict)  # before playback
    diagnostics_time: dict[str, float] = field(default_factory=dict)  # last reception
    playing: bool = False
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    # -- the recorder's side -----------------------------------------------------------------
    def add_received(self, stream: str, stamp: int) -> None:
        now = time.monotonic()
        with self.lock:
            self.received[stream].append((stamp, now))

    def add_detections(self, stamp: int, rows: list[DetectionRow]) -> None:
        self.add_received("detections", stamp)
        with self.lock:
            self.detections[stamp] = rows

    def keep_fused(self, stamp: int, image: np.ndarray) -> None:
        with self.lock:
            self.kept_fused[stamp] = image

    def add_status(self, name: str, values: StatusValues) -> None:
        """One DiagnosticStatus; the last one before playback is the baseline of its counts."""
        with self.lock:
            if not self.playing:
                self.diagnostics_first[name] = values
            self.diagnostics[name] = values
            self.diagnostics_time[name] = time.monotonic()

    def note_error(self, text: str) -> None:
        """A problem that does not stop the replay (a malformed message), kept for the report."""
        with self.lock:
            self.errors.append(text)

    # -- the player's side -------------------------------------------------------------------
    def add_published(self, role: str, stamp: int, t: float, lag_s: float,
                      index: int = -1) -> None:  # fmt: skip
        """One message the player sent; the first one sets ``t0``."""
        if not self.player_lag_s:
            self.t0 = t
        self.player_lag_s.append(lag_s)
        if role in INPUT_ROLES:
            self.published[role].append((index, stamp, t))
        else:
            self.published_info += 1

    def publication_times(self, role: str) -> dict[int, list[tuple[float, int]]]:
        """stamp -> [(send time, playback index)] in send order, for matching outputs."""
        out: dict[int, list[tuple[float, int]]] = {}
        for index, stamp, t in sorted(self.published[role], key=lambda p: p[2]):
            out.setdefault(stamp, []).append((t, index))
        return out

    # -- reading -----------------------------------------------------------------------------
    def counts(self) -> tuple[int, ...]:
        """Outputs received so far, per stream (to see when they stop arriving)."""
        with self.lock:
            return tuple(len(v) for v in self.received.values())

    def status_seen(self, name: str, before_playback: bool = False) -> bool:
        with self.lock:
            return name in (self.diagnostics_first if before_playback else self.diagnostics)

    def status_time(self, name: str) -> float | None:
        """When the last status of that name arrived (monotonic), None if never."""
        with self.lock:
            return self.diagnostics_time.get(name)
