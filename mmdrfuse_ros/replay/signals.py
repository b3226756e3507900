"""Ctrl-C and SIGTERM during a replay: stop what runs, keep what was measured, exit 128 + signal.

A terminal's Ctrl-C sends SIGINT to the whole process group (this process and its player);
``kill -INT`` reaches this process only; ``timeout`` and ``docker stop`` send SIGTERM. The player
ignores both and stops when told (its last report then always arrives); this process handles
both with :class:`StopSignals`. rclpy's own handlers are never installed for the replay's
context (``SignalHandlerOptions.NO``), and :meth:`StopSignals.install` runs again after
``rclpy.init`` so that nothing else owns these signals while the replay runs.

:class:`Interrupted` derives from BaseException, as KeyboardInterrupt does, so that no
``except Exception`` on the way swallows it; only the replay's own handlers catch it.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType
from typing import Any

#: the signals a replay turns into a partial report.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(BaseException):
    """A stop signal arrived; ``exit_code`` is the shell's 128 + signal number."""

    def __init__(self, signum: int, where: str = "") -> None:
        self.signum = signum
        self.where = where
        super().__init__(signum)

    @property
    def exit_code(self) -> int:
        return 128 + self.signum

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name

    def __str__(self) -> str:
        return f"interrupted by {self.name}" + (f" during {self.where}" if self.where else "")


class StopSignals:
    """SIGINT/SIGTERM handlers for one replay (a context manager; main thread only).

    The first signal raises :class:`Interrupted` in the main thread, unless it comes inside
    :meth:`deferred` (closing nodes, writing the report), where it is only noted and
    :meth:`check` raises it afterwards. Later signals are noted only: the clean-up they would
    cut short is bounded, and it is what writes the partial report.
    """

    def __init__(self) -> None:
        self.received: int | None = None
        self._raised = False
        self._deferred = 0
        self._saved: dict[int, Any] = {}
        self.active = False

    def __enter__(self) -> StopSignals:
        self.install()
        return self

    def __exit__(self, *exc_info: object) -> None:
        for signum, handler in self._saved.items():
            with contextlib.suppress(ValueError, TypeError):
                signal.signal(signum, handler)
        self._saved.clear()
        self.active = False

    def install(self) -> None:
        """Own SIGINT and SIGTERM (again, e.g. after rclpy.init); a no-op off the main thread."""
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in STOP_SIGNALS:
            previous = signal.signal(signum, self._handle)
            self._saved.setdefault(signum, previous)
        self.active = True

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.received is not None:
            return
        self.received = signum
        if not self._deferred:
            self._raised = True
            raise Interrupted(signum)

    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        """A block that a signal must not cut short; it is raised by the next :meth:`check`."""
        self._deferred += 1
        try:
            yield
        finally:
            self._deferred -= 1

    def check(self, where: str = "") -> None:
        """Raise :class:`Interrupted` for a signal noted but not raised yet."""
        if self.received is not None and not self._raised and not self._deferred:
            self._raised = True
            raise Interrupted(self.received, where)

    def interruption(self) -> Interrupted | None:
        """The stop request received so far (raised or not), None without one."""
        return None if self.received is None else Interrupted(self.received)
