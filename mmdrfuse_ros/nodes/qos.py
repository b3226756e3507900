"""QoS profiles from two parameters (reliability, depth), shared by the nodes.

The parameter values and their defaults are in :mod:`mmdrfuse_ros.settings.qos`.
"""

from __future__ import annotations

from typing import Any

from mmdrfuse_ros.settings.qos import (  # noqa: F401 (the nodes' and tools' QoS vocabulary)
    INPUT_DEPTH,
    INPUT_RELIABILITY,
    OUTPUT_DEPTH,
    OUTPUT_RELIABILITY,
    RELIABILITIES,
)


def make_qos(reliability: str, depth: int) -> Any:
    """A keep-last, volatile QoSProfile; ValueError for an unknown reliability or depth < 1."""
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

    if reliability not in RELIABILITIES:
        raise ValueError(f"reliability must be one of {RELIABILITIES}, got {reliability!r}")
    if int(depth) < 1:
        raise ValueError(f"QoS depth must be >= 1, got {depth}")
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=int(depth),
        reliability=(
            ReliabilityPolicy.RELIABLE
            if reliability == "reliable"
            else ReliabilityPolicy.BEST_EFFORT
        ),
        durability=DurabilityPolicy.VOLATILE,
    )
