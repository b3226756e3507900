"""QoS overrides the ROS way (rclpy ``QoSOverridingOptions``) on the fusion node, over real DDS.

``qos_overrides.<topic>.<subscription|publisher>.<policy>`` parameters given at start win over
the node's ``input_*``/``output_*`` parameters, which keep giving the defaults. The endpoints'
QoS is read back from the ROS graph, and data flows (or does not) as DDS matching says.
"""

from __future__ import annotations

import itertools
import os
import time
from functools import partial
from typing import Any

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")

import node_helpers  # noqa: E402
from node_helpers import Spin, closing_all  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402

from mmdrfuse_ros import topics  # noqa: E402
from mmdrfuse_ros.msgs.images import array_to_image  # noqa: E402
from mmdrfuse_ros.nodes.fusion_node import FusionNode  # noqa: E402
from mmdrfuse_ros.nodes.qos import make_qos  # noqa: E402
from mmdrfuse_ros.settings.qos import check_qos_overrides, split_qos_override  # noqa: E402

pytestmark = pytest.mark.ros

THERMAL = "qos_overrides./thermal/image_raw.subscription."
RGB = "qos_overrides./rgb/image_raw.subscription."
FUSED = "qos_overrides./fused/image.publisher."


wait_until = partial(node_helpers.wait_until, timeout=10.0)
_NUMBERS = itertools.count()


class Rig(Spin):
    """A FusionNode with parameters, a helper node and an executor spinning both."""

    def __init__(self, context: Any, **params: Any):
        # a name of its own: a fusion node of another test on this domain is not ours
        self.node = FusionNode(node_name=f"fusion_qos_{next(_NUMBERS)}_{os.getpid()}",
                               context=context,
                               parameter_overrides=[Parameter(k, value=v)
                                                    for k, v in params.items()])  # fmt: skip
        super().__init__(context, self.node, num_threads=None)

    def endpoint(self, topic: str, kind: str) -> Any:
        """The fusion node's endpoint on ``topic`` ('subscription' or 'publisher'), seen in the
        ROS graph by the helper node."""
        lookup = (self.helper.get_subscriptions_info_by_topic if kind == "subscription"
                  else self.helper.get_publishers_info_by_topic)  # fmt: skip
        found: list[Any] = []

        def ours() -> bool:
            found[:] = [e for e in lookup(topic) if e.node_name == self.node.get_name()]
            return len(found) == 1

        assert wait_until(ours), f"not one {kind} of the fusion node on {topic}: {found}"
        return found[0].qos_profile



@pytest.fixture
def rig(context):
    yield from closing_all(lambda **params: Rig(context, **params))


def test_without_overrides_the_node_parameters_give_the_qos(rig):
    r = rig(input_reliability="reliable", input_depth=7, output_reliability="best_effort")
    thermal = r.endpoint("/thermal/image_raw", "subscription")
    assert thermal.reliability == ReliabilityPolicy.RELIABLE and thermal.depth in (7, 0)
    fused = r.endpoint("/fused/image", "publisher")
    assert fused.reliability == ReliabilityPolicy.BEST_EFFORT
    # the override parameters are declared, read-only, with today's values
    assert r.node.get_parameter(THERMAL + "reliability").value == "reliable"
    assert r.node.get_parameter(THERMAL + "depth").value == 7
    assert r.node.describe_parameter(THERMAL + "reliability").read_only
    result = r.node.set_parameters([Parameter(THERMAL + "reliability", value="best_effort")])[0]
    assert not result.successful


def test_an_override_wins_over_the_node_parameter_for_its_topic_only(rig):
    r = rig(**{
        "input_reliability": "reliable",
        THERMAL + "reliability": "best_effort",
        FUSED + "reliability": "best_effort",
        FUSED + "depth": 2,
    })  # fmt: skip
    assert r.endpoint("/thermal/image_raw", "subscription").reliability == (
        ReliabilityPolicy.BEST_EFFORT)
    assert r.endpoint("/rgb/image_raw", "subscription").reliability == ReliabilityPolicy.RELIABLE
    assert r.endpoint("/fused/image", "publisher").reliability == ReliabilityPolicy.BEST_EFFORT
    assert r.node.get_parameter(FUSED + "depth").value == 2


def test_overrides_decide_which_publishers_match_over_dds(rig):
    # the thermal input is made reliable: a best-effort camera does not match it, a reliable
    # one does, and fused images flow
    r = rig(**{THERMAL + "reliability": "reliable", "slop": 0.05})
    best_effort = r.helper.create_publisher(Image, topics.THERMAL_IMAGE, make_qos("best_effort", 5))
    reliable = r.helper.create_publisher(Image, topics.THERMAL_IMAGE, make_qos("reliable", 5))
    rgb = r.helper.create_publisher(Image, topics.RGB_IMAGE, make_qos("best_effort", 5))
    fused: list[Image] = []
    r.helper.create_subscription(Image, topics.FUSED_IMAGE, fused.append, make_qos("reliable", 10))
    assert wait_until(lambda: reliable.get_subscription_count() == 1
                      and rgb.get_subscription_count() == 1)  # fmt: skip
    time.sleep(0.5)
    assert best_effort.get_subscription_count() == 0  # incompatible QoS: never matched

    def pair(t: float, thermal_pub: Any) -> None:
        thermal = array_to_image(np.full((24, 32), 200, np.uint8), "mono8")
        colour = array_to_image(np.full((24, 32, 3), 90, np.uint8), "bgr8")
        for msg in (thermal, colour):
            msg.header.stamp.sec, msg.header.stamp.nanosec = int(t), 0
        thermal_pub.publish(thermal)
        rgb.publish(colour)

    for k in range(3):
        pair(1000 + k, best_effort)
        time.sleep(0.1)
    time.sleep(0.3)
    assert r.node.stats()["received_thermal"] == 0 and not fused
    for k in range(3):
        pair(2000 + k, reliable)
        time.sleep(0.1)
    assert wait_until(lambda: len(fused) >= 1), r.node.stats()


def test_node_parameters_still_apply_at_the_next_activation(rig):
    r = rig(**{RGB + "reliability": "best_effort"})
    assert r.endpoint("/thermal/image_raw", "subscription").reliability == (
        ReliabilityPolicy.BEST_EFFORT)
    assert r.node.set_parameters([Parameter("input_reliability", value="reliable")])[0].successful
    r.node.trigger_deactivate()
    assert r.node.trigger_activate() is not None and r.node.lifecycle_state == "active"

    def thermal_reliable() -> bool:
        infos = [e for e in r.helper.get_subscriptions_info_by_topic("/thermal/image_raw")
                 if e.node_name == r.node.get_name()]
        return len(infos) == 1 and infos[0].qos_profile.reliability == ReliabilityPolicy.RELIABLE

    assert wait_until(thermal_reliable)  # not overridden: follows input_reliability
    assert r.endpoint("/rgb/image_raw", "subscription").reliability == (
        ReliabilityPolicy.BEST_EFFORT)  # overridden at start: still wins


def test_overrides_follow_namespaces_and_remaps(context):
    node = FusionNode(context=context, namespace="cam", parameter_overrides=[
        Parameter("qos_overrides./cam/thermal/image_raw.subscription.depth", value=3)])
    try:
        assert node.get_parameter("qos_overrides./cam/thermal/image_raw.subscription.depth"
                                  ).value == 3  # fmt: skip
        assert node.has_parameter("qos_overrides./cam/fused/image.publisher.reliability")
    finally:
        node.destroy_node()


@pytest.mark.parametrize(
    ("name", "value", "reason"),
    [
        (THERMAL + "reliability", "sometimes", "must be one of"),
        (THERMAL + "depth", -1, "integer >= 0"),
        (FUSED + "durability", "forever", "must be one of"),
        ("qos_overrides.nonsense", "reliable", "qos_overrides.<topic>"),
    ],
)
def test_bad_overrides_are_refused_at_start_with_the_reason(context, name, value, reason):
    with pytest.raises(ValueError, match=reason):
        FusionNode(context=context, parameter_overrides=[Parameter(name, value=value)])


def test_override_names_and_values_without_ros():
    assert split_qos_override(THERMAL + "depth") == ("/thermal/image_raw", "subscription", "depth")
    assert split_qos_override("qos_overrides./a/b.publisher_x.history") == (
        "/a/b", "publisher_x", "history")
    assert split_qos_override("input_depth") is None
    # policies the nodes do not declare, and other parameters, are left to rclpy
    assert check_qos_overrides({FUSED + "deadline": 5, "slop": 0.1}) is None
    assert check_qos_overrides({FUSED + "history": "KEEP_ALL", FUSED + "depth": 0}) is None
    assert "integer" in check_qos_overrides({FUSED + "depth": True})
