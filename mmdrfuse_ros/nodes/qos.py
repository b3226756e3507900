"""QoS profiles from two parameters (reliability, depth), shared by the nodes.

Inputs default to the sensor-data profile (best effort, small depth: a late camera frame is
worth less than the next one); outputs default to reliable so that recorders and monitors, which
usually subscribe reliable, match and receive them.
"""

from __future__ import annotations

from typing import Any

RELIABILITIES = ("best_effort", "reliable")
INPUT_RELIABILITY, INPUT_DEPTH = "best_effort", 5
OUTPUT_RELIABILITY, OUTPUT_DEPTH = "reliable", 5


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
