"""QoS profiles from two parameters (reliability, depth), overridable the ROS way.

The parameter values and their defaults are in :mod:`mmdrfuse_ros.settings.qos`. Every input and
output of the nodes passes :func:`overriding_options` to rclpy, which declares the read-only
parameters ``qos_overrides.<topic>.<subscription|publisher>.{history,depth,reliability,
durability}`` when the entity is created (as image_pipeline and rosbag2 do): our own
``input_*``/``output_*`` parameters make the profile, and a value given at start for one of these
parameters wins over it.

rclpy keeps a declared override parameter for the node's lifetime, with the value it was first
declared with. So that ``input_reliability`` & co. still apply at the next activation, a policy
is handed to rclpy again only while its parameter is undeclared or was given at start.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mmdrfuse_ros.settings.qos import (  # noqa: F401 (the nodes' and tools' QoS vocabulary)
    INPUT_DEPTH,
    INPUT_RELIABILITY,
    OUTPUT_DEPTH,
    OUTPUT_RELIABILITY,
    QOS_OVERRIDE_POLICIES,
    QOS_OVERRIDES_PREFIX,
    RELIABILITIES,
    check_qos_overrides,
    check_qos_profile,
    qos_override_name,
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


def given_overrides(node: Any) -> dict[str, Any]:
    """The ``qos_overrides.*`` values this node was started with (command line, params files,
    ``parameter_overrides``), declared or not.

    rclpy has no public accessor for a node's start-up overrides; every rclpy since Dashing keeps
    them in ``Node._parameter_overrides``.
    """
    overrides: Mapping[str, Any] = getattr(node, "_parameter_overrides", {}) or {}
    return {
        name: param.value
        for name, param in overrides.items()
        if name.startswith(QOS_OVERRIDES_PREFIX)
    }


def check_given_overrides(node: Any) -> str | None:
    """Why the node's start-up QoS overrides would be refused, or None."""
    return check_qos_overrides(given_overrides(node))


def overriding_options(node: Any, entity: str, topic: str) -> Any:
    """rclpy ``QoSOverridingOptions`` for one publisher or subscription of ``node``.

    ``entity``: ``publisher`` or ``subscription``; ``topic`` as passed to create_*. Pass a fresh
    profile with it: rclpy writes the overrides into the profile object it is given.
    """
    from rclpy.qos import QoSPolicyKind
    from rclpy.qos_overriding_options import QoSOverridingOptions

    resolved = node.resolve_topic_name(topic)
    given = given_overrides(node)
    kinds = []
    for policy in QOS_OVERRIDE_POLICIES:
        name = qos_override_name(resolved, entity, policy)
        if not node.has_parameter(name) or name in given:
            kinds.append(QoSPolicyKind[policy.upper()])
    return QoSOverridingOptions(kinds, callback=_check_profile)


def _check_profile(qos: Any) -> Any:
    from rcl_interfaces.msg import SetParametersResult

    reason = check_qos_profile(qos.history.name.lower(), int(qos.depth))
    return SetParametersResult(successful=reason is None, reason=reason or "")


def describe_qos(qos: Any) -> str:
    """``reliable/keep_last(5)/volatile``: a profile in one word, for logs."""
    history = qos.history.name.lower()
    if history == "keep_last":
        history = f"keep_last({qos.depth})"
    return f"{qos.reliability.name.lower()}/{history}/{qos.durability.name.lower()}"
