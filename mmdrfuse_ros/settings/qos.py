"""QoS parameter values shared by both nodes' tables (the profiles are built in nodes/qos.py).

Inputs default to the sensor-data profile (best effort, small depth: a late camera frame is
worth less than the next one); outputs default to reliable so that recorders and monitors, which
usually subscribe reliable, match and receive them.

Each input and output is also overridable the ROS way, with rclpy's ``QoSOverridingOptions``
parameters ``qos_overrides.<topic>.<subscription|publisher>.<policy>`` (read-only, given at
start: ``--ros-args -p``, a params file, launch). Our own ``input_*``/``output_*`` parameters
give their defaults; an override given at start wins. :func:`check_qos_overrides` is the check of
such values that the nodes (at start) and tools can share without rclpy.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

RELIABILITIES = ("best_effort", "reliable")
INPUT_RELIABILITY, INPUT_DEPTH = "best_effort", 5
OUTPUT_RELIABILITY, OUTPUT_DEPTH = "reliable", 5

#: prefix of rclpy's QoS override parameters
QOS_OVERRIDES_PREFIX = "qos_overrides."
#: the policies our nodes declare as overridable, with the values rclpy accepts for each
#: (``None``: an integer); the names are rclpy's ``QoSPolicyKind`` names in lower case
QOS_OVERRIDE_POLICIES: dict[str, tuple[str, ...] | None] = {
    "history": ("keep_last", "keep_all", "system_default"),
    "depth": None,
    "reliability": ("reliable", "best_effort", "system_default", "best_available"),
    "durability": ("volatile", "transient_local", "system_default", "best_available"),
}
_ENTITIES = ("publisher", "subscription")


def qos_override_name(topic: str, entity: str, policy: str) -> str:
    """``qos_overrides.<topic>.<entity>.<policy>``: the parameter rclpy declares (``topic``
    resolved, e.g. ``/thermal/image_raw``; ``entity`` ``publisher`` or ``subscription``)."""
    return f"{QOS_OVERRIDES_PREFIX}{topic}.{entity}.{policy}"


def split_qos_override(name: str) -> tuple[str, str, str] | None:
    """``(topic, entity, policy)`` of an override parameter name, or None for any other name.

    ``entity`` keeps an rclpy entity id suffix (``subscription_<id>``)."""
    if not name.startswith(QOS_OVERRIDES_PREFIX):
        return None
    rest, _, policy = name[len(QOS_OVERRIDES_PREFIX) :].rpartition(".")
    topic, _, entity = rest.rpartition(".")
    if not topic or not policy or not entity.startswith(_ENTITIES):
        return None
    return topic, entity, policy


def check_qos_overrides(values: Mapping[str, Any]) -> str | None:
    """Why one of these ``qos_overrides.*`` values would be refused, or None.

    Names that are not QoS overrides are ignored, and so are policies the nodes do not declare
    (rclpy leaves those unused), so one params file can serve both nodes.
    """
    for name, value in values.items():
        if not name.startswith(QOS_OVERRIDES_PREFIX):
            continue
        parts = split_qos_override(name)
        if parts is None:
            return (
                f"{name}: a QoS override is named qos_overrides.<topic>.<publisher|"
                f"subscription>.<policy>"
            )
        policy = parts[2]
        if policy not in QOS_OVERRIDE_POLICIES:
            continue
        choices = QOS_OVERRIDE_POLICIES[policy]
        if choices is None:
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                return f"{name} must be an integer >= 0, got {value!r}"
        elif not isinstance(value, str) or value.lower() not in choices:
            return f"{name} must be one of {list(choices)}, got {value!r}"
    return None


def check_qos_profile(history: str, depth: int) -> str | None:
    """Why a profile after overrides cannot work, or None (keep_last needs a depth >= 1)."""
    if history == "keep_last" and depth < 1:
        return f"history keep_last needs a depth >= 1, got {depth}"
    return None
