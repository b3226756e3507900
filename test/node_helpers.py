"""What the node tests share: waiting for a condition, a node spinning beside a helper node, a
fixture that closes every harness it made, and the detector harness."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.executors import MultiThreadedExecutor
from rclpy.parameter import Parameter
from sensor_msgs.msg import Image

from mmdrfuse_ros import topics
from mmdrfuse_ros.msgs.detections import detection_message_type
from mmdrfuse_ros.nodes.detector_node import DetectorNode
from mmdrfuse_ros.nodes.qos import make_qos

_helper_ids = itertools.count(1)


def wait_until(predicate: Callable[[], bool], timeout: float = 15.0) -> bool:
    """Poll ``predicate`` every 20 ms until it holds or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def overrides(params: dict[str, Any]) -> list[Parameter]:
    return [Parameter(k, value=v) for k, v in params.items()]


class Spin:
    """A node and a helper node spinning on a MultiThreadedExecutor in a thread."""

    def __init__(self, context: Any, node: Any, num_threads: int | None = 3):
        self.node = node
        self.helper = rclpy.create_node(f"test_helper_{next(_helper_ids)}", context=context)
        self.executor = MultiThreadedExecutor(num_threads=num_threads, context=context)
        self.executor.add_node(node)
        self.executor.add_node(self.helper)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.executor.shutdown()
        self.thread.join(timeout=5)
        self.node.destroy_node()
        self.helper.destroy_node()


def closing_all(factory: Callable[..., Spin]) -> Iterator[Callable[..., Spin]]:
    """The body of a fixture that hands out ``factory`` and closes everything it made."""
    made: list[Spin] = []

    def make(*args: Any, **kwargs: Any) -> Spin:
        made.append(factory(*args, **kwargs))
        return made[-1]

    yield make
    for harness in made:
        harness.close()


class DetectorHarness(Spin):
    """A DetectorNode (HOG unless told: these tests are about HOG on a synthetic frame), a
    publisher of images on its input, and the detections and diagnostics it publishes."""

    def __init__(self, context: Any, **params: Any):
        params.setdefault("backend", "hog")
        super().__init__(context, DetectorNode(context=context,
                                               parameter_overrides=overrides(params)))
        self.pub = self.helper.create_publisher(Image, topics.FUSED_IMAGE, make_qos("reliable", 5))
        self.received: list[Any] = []
        self.diagnostics: list[DiagnosticArray] = []
        self.helper.create_subscription(detection_message_type(), topics.DETECTIONS,
                                        self.received.append, make_qos("reliable", 50))
        self.helper.create_subscription(DiagnosticArray, topics.DIAGNOSTICS,
                                        self.diagnostics.append, 50)
        if self.node.lifecycle_state == "active":
            assert wait_until(lambda: self.pub.get_subscription_count() > 0)
            assert wait_until(lambda: self.helper.count_publishers(topics.DETECTIONS) > 0)
