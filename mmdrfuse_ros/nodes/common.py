"""Pieces both nodes share: parameter specs with ROS descriptors, and a one-slot mailbox.

The mailbox is how a node keeps latency bounded: subscription callbacks ``put`` the newest
item, a worker thread ``take``s it; an item replaced before it was taken is a stale drop.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor


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
