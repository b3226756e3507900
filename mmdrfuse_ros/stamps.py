"""Header stamps as integer nanoseconds: the one conversion every layer (nodes, bags, detection
messages, benchmarks) uses. Works for rclpy and rosbags Time messages alike; no ROS imports."""

from __future__ import annotations

from typing import Any

NS_PER_S = 1_000_000_000


def stamp_to_ns(stamp: Any) -> int:
    """Integer nanoseconds of a ``builtin_interfaces/Time`` (anything with ``sec``/``nanosec``)."""
    return int(stamp.sec) * NS_PER_S + int(stamp.nanosec)
