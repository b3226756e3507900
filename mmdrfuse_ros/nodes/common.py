"""Pieces both nodes share: lifecycle bookkeeping, parameter specs with ROS descriptors, and
a one-slot mailbox.

The mailbox is how a node keeps latency bounded: subscription callbacks ``put`` the newest
item, a worker thread ``take``s it; an item replaced before it was taken is a stale drop.
"""

from __future__ import annotations

import math
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn


@dataclass(frozen=True)
class Param:
    """One parameter: its default (or type when it has none), description and constraints."""

    name: str
    default: Any
    description: str
    choices: tuple[str, ...] = ()
    int_range: tuple[int, int] | None = None
    float_range: tuple[float, float] | None = None
    engine: bool = False  # True: applied live by rebuilding the engine/detector


def descriptor_for(spec: Param) -> ParameterDescriptor:
    """The ParameterDescriptor that makes rclpy enforce the ranges and documents the choices."""
    description = spec.description
    if spec.choices:
        description += f" [{', '.join(spec.choices)}]"
    descriptor = ParameterDescriptor(description=description)
    if spec.choices:
        descriptor.additional_constraints = f"one of: {', '.join(spec.choices)}"
    if spec.int_range:
        descriptor.integer_range = [
            IntegerRange(from_value=spec.int_range[0], to_value=spec.int_range[1], step=1)
        ]
    if spec.float_range:
        descriptor.floating_point_range = [
            FloatingPointRange(from_value=spec.float_range[0], to_value=spec.float_range[1])
        ]
    return descriptor


def check_choice(spec: Param | None, value: Any) -> str | None:
    """Why ``value`` is not one of the parameter's choices, or None."""
    if spec is not None and spec.choices and value not in spec.choices:
        return f"{spec.name} must be one of {list(spec.choices)}, got {value!r}"
    return None


class LatestSlot:
    """A one-item mailbox: ``put`` replaces an item not yet taken and says so."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._item: Any = None
        self._closed = False

    def put(self, item: Any) -> bool:
        with self._cond:
            replaced = self._item is not None
            self._item = item
            self._cond.notify()
        return replaced

    def take(self, timeout: float) -> Any:
        with self._cond:
            if self._item is None and not self._closed:
                self._cond.wait(timeout)
            item, self._item = self._item, None
            return item

    def close(self) -> Any:
        """Wake the worker for good; returns (and discards) an item never taken."""
        with self._cond:
            self._closed = True
            item, self._item = self._item, None
            self._cond.notify_all()
            return item

    def reopen(self) -> None:
        with self._cond:
            self._closed = False
            self._item = None


class ManagedNode(LifecycleNode):
    """Lifecycle bookkeeping shared by our nodes.

    Subclasses implement ``on_configure``/``on_activate`` (setting ``_state``), and
    ``_release_active`` / ``_release_configured``, which must be safe to call repeatedly.
    Deactivate, cleanup, shutdown, error and destruction are handled here in terms of those.
    They also own ``counters`` (a :class:`~mmdrfuse_ros.nodes.diagnostics.Counters` with a
    ``dropped_<cause>`` entry per cause) and ``_diagnostics``.
    """

    counters: Any
    _diagnostics: Any

    def __init__(self, node_name: str, **node_kwargs: Any) -> None:
        super().__init__(node_name, **node_kwargs)
        self._state = "unconfigured"
        self._log_times: dict[str, float] = {}

    def start(self) -> bool:
        """Configure (if needed) and activate; True when the node ends up active."""
        if self._state == "unconfigured":
            self.trigger_configure()
        if self._state == "inactive":
            self.trigger_activate()
        return self._state == "active"

    @property
    def lifecycle_state(self) -> str:
        """'unconfigured', 'inactive', 'active' or 'finalized'."""
        return self._state

    def _release_active(self) -> None:
        raise NotImplementedError

    def _release_configured(self) -> None:
        raise NotImplementedError

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release_active()
        self._state = "inactive"
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release_configured()
        self._state = "unconfigured"
        return super().on_cleanup(state)

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release_active()
        self._release_configured()
        self._state = "finalized"
        return super().on_shutdown(state)

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.get_logger().error(f"error while in state {state.label}: releasing everything")
        self._release_active()
        self._release_configured()
        self._state = "unconfigured"
        return TransitionCallbackReturn.SUCCESS

    def destroy_node(self) -> None:
        self._release_active()
        if getattr(self, "_diagnostics", None) is not None:
            self._diagnostics.destroy()
        super().destroy_node()

    def _drop(self, cause: str, exc: BaseException, what: str = "frame") -> None:
        """Count a dropped input by cause and log it, at most every 5 s per cause."""
        self.counters.inc(f"dropped_{cause}")
        now = time.monotonic()
        if now - self._log_times.get(cause, -math.inf) >= 5.0:
            self._log_times[cause] = now
            total = self.counters.get(f"dropped_{cause}")
            self.get_logger().warning(f"dropped a {what} ({cause}, {total} so far): {exc}")


def run_node(factory: Callable[[], ManagedNode], executable: str,
             args: list[str] | None = None) -> int:
    """An executable's main: spin until Ctrl-C; exit 1 with the reason on bad parameters."""
    import rclpy
    from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException
    from rclpy.executors import ExternalShutdownException

    rclpy.init(args=args)
    try:
        node = factory()
    except (InvalidParameterValueException, InvalidParameterTypeException, ValueError) as exc:
        print(f"{executable}: invalid parameter: {exc}", file=sys.stderr)
        rclpy.try_shutdown()
        return 1
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return 0
