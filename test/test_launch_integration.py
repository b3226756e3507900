"""launch/fusion.launch.py under the real ``launch``, ``launch_ros`` and ``launch_testing``.

A ``launch_testing`` test: it launches the file with a ``params_file`` that carries the
synthetic street's thermal -> RGB homography and a fixed thermal window, publishes one thermal
(mono16 640x512) + RGB (bgr8 1280x720) frame of that street over DDS, and checks that

* the fused image that comes back is the *registered* one: equal to what ``FusionEngine`` makes
  in-process with that homography, and far from the unregistered (resized) fusion;
* detections arrive for that frame's stamp and find the pedestrians where they are;
* ``publish_detection_image:=true`` made the detector publish ``detections/image``;
* both nodes exit cleanly on shutdown.

Runs under ``colcon test`` on a ROS 2 distro (launch_testing's pytest plugin collects it) or with
pytest wherever launch, launch_ros, launch_testing (with its plugin) and a colcon-built
mmdrfuse_ros (``install/setup.bash`` sourced) are there; elsewhere it is one skipped test that
says which of those is missing. docs/ROS_DISTRO.md says how it was run without a distro.
"""

from __future__ import annotations

import importlib.util
import sys
import tempfile
import time
import unittest
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
LAUNCH_FILE = REPO / "launch" / "fusion.launch.py"
SCENE_TIME_S = 5.0  # a frame of the synthetic street with three pedestrians in view
FUSED_TIMEOUT_S = 240.0  # node start: torch import, weights, warm-up (slow on 2 busy cores)


def missing_requirement() -> str | None:
    """Why this test cannot run here, or None."""
    for module in ("launch", "launch_ros", "launch_testing", "rclpy"):
        if importlib.util.find_spec(module) is None:
            return f"{module} is not importable (a ROS 2 distro, or docs/ROS_DISTRO.md)"
    if "launch_testing.pytest.hooks" not in sys.modules:
        return (
            "launch_testing's pytest plugin is not loaded (it is where launch_testing is installed)"
        )
    from ament_index_python.packages import PackageNotFoundError, get_package_prefix

    try:
        prefix = Path(get_package_prefix("mmdrfuse_ros"))
    except PackageNotFoundError:
        return (
            "mmdrfuse_ros is not in the ament index: colcon build, then source install/setup.bash"
        )
    if not (prefix / "lib" / "mmdrfuse_ros" / "fusion_node").exists():
        return f"{prefix}/lib/mmdrfuse_ros/fusion_node is missing: build with colcon"
    return None


MISSING = missing_requirement()


# ------------------------------------------------------------------------ the scene (ROS-free)
def scene_frames() -> tuple[np.ndarray, np.ndarray, list[list[float]], np.ndarray]:
    """(thermal mono16, rgb bgr8, ground-truth boxes in RGB pixels, thermal -> RGB homography)."""
    from mmdrfuse_ros.bag.scene import NightScene, SynthConfig
    from mmdrfuse_ros.fusion.geometry import default_homography

    config = SynthConfig()
    scene = NightScene(config)
    rgb, boxes, _ = scene.render_rgb(SCENE_TIME_S, np.random.default_rng(1))
    thermal, _, _ = scene.render_thermal(SCENE_TIME_S, np.random.default_rng(2))
    return thermal, rgb, boxes, default_homography(config.thermal_size, config.rgb_size)


def params_for(thermal: np.ndarray, homography: np.ndarray) -> dict[str, Any]:
    """The params file's content: the calibration and a fixed window suiting this thermal frame."""
    lo, hi = (float(v) for v in np.percentile(thermal, [1.0, 99.5]))
    return {
        "/**": {"ros__parameters": {"use_sim_time": False}},
        "fusion_node": {
            "ros__parameters": {
                "homography": [float(v) for v in homography.ravel()],
                "thermal_norm": "fixed",
                "thermal_window": [lo, hi],
            }
        },
        "detector_node": {"ros__parameters": {"score_threshold": 0.3}},
    }


def fusion_values(params: dict[str, Any]) -> dict[str, Any]:
    """The fusion node's whole configuration: its defaults, the shipped YAML, the params file."""
    from mmdrfuse_ros.settings import defaults
    from mmdrfuse_ros.settings.fusion import FUSION_PARAMS

    shipped = yaml.safe_load((REPO / "config" / "fusion.yaml").read_text())
    return (
        defaults(FUSION_PARAMS)
        | shipped["/**"]["ros__parameters"]
        | params["fusion_node"]["ros__parameters"]
    )


def expected_fused(thermal: np.ndarray, rgb: np.ndarray, values: dict[str, Any]) -> np.ndarray:
    """What FusionEngine makes in-process of this pair with the node's configuration."""
    from mmdrfuse_ros.fusion import FusionEngine
    from mmdrfuse_ros.settings.fusion import fusion_engine_kwargs

    with FusionEngine(**fusion_engine_kwargs(values)) as engine:
        return engine.fuse(thermal, rgb)


def iou(a: list[float], b: list[float]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - ix * iy
    return ix * iy / union if union > 0 else 0.0


if MISSING is not None:

    def test_launch_integration():
        pytest.skip(MISSING)

else:
    import launch_testing
    import launch_testing.actions
    import launch_testing.asserts
    from launch.actions import IncludeLaunchDescription
    from launch.launch_description_sources import PythonLaunchDescriptionSource

    from launch import LaunchDescription

    @pytest.mark.launch_test
    def generate_test_description():
        thermal, rgb, boxes, homography = scene_frames()
        params = params_for(thermal, homography)
        params_file = Path(tempfile.gettempdir()) / "mmdrfuse_launch_test" / "params.yaml"
        params_file.parent.mkdir(exist_ok=True)
        params_file.write_text(yaml.safe_dump(params, sort_keys=False))
        include = IncludeLaunchDescription(
            PythonLaunchDescriptionSource(str(LAUNCH_FILE)),
            launch_arguments={
                "params_file": str(params_file),
                "publish_detection_image": "true",
                "log_level": "info",
            }.items(),
        )
        scene = {"thermal": thermal, "rgb": rgb, "boxes": boxes, "params": params}
        return LaunchDescription([include, launch_testing.actions.ReadyToTest()]), {"scene": scene}

    class TestRegisteredFusionAndDetections(unittest.TestCase):
        """While the launch runs: publish the pair, check what comes back."""

        def test_registered_fused_image_and_detections(self, scene: dict[str, Any]) -> None:
            received = exchange(scene["thermal"], scene["rgb"])
            values = fusion_values(scene["params"])
            registered = expected_fused(scene["thermal"], scene["rgb"], values)
            unregistered = expected_fused(
                scene["thermal"], scene["rgb"], values | {"homography": []}
            )
            fused = received["fused"]
            self.assertEqual(fused.shape, registered.shape)
            to_registered = np.abs(fused.astype(np.float32) - registered).mean()
            to_unregistered = np.abs(fused.astype(np.float32) - unregistered).mean()
            self.assertLess(
                to_registered, 1.0, "fused/image is not FusionEngine's registered fusion"
            )
            self.assertGreater(to_unregistered, 10 * max(to_registered, 0.5))

            found = received["detections"]
            best = [max((iou(d, gt) for d in found), default=0.0) for gt in scene["boxes"]]
            self.assertGreaterEqual(
                sum(b >= 0.5 for b in best), 2, f"pedestrians missed: {found} vs {scene['boxes']}"
            )
            self.assertEqual(received["detection_image_shape"], registered.shape)

    @launch_testing.post_shutdown_test()
    class TestShutdown(unittest.TestCase):
        def test_nodes_exit_cleanly(self, proc_info: Any) -> None:
            launch_testing.asserts.assertExitCodes(proc_info)


def exchange(thermal: np.ndarray, rgb: np.ndarray) -> dict[str, Any]:
    """Publish the pair (fresh stamps, every 0.5 s) until its fused image and detections return."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image
    from std_msgs.msg import Header

    from mmdrfuse_ros import topics
    from mmdrfuse_ros.msgs.detections import detection_message_type, msg_to_detections
    from mmdrfuse_ros.msgs.images import array_to_image, image_to_array
    from mmdrfuse_ros.stamps import stamp_to_ns

    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node("launch_test_client", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    reliable = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
    fused: dict[int, np.ndarray] = {}
    detections: dict[int, list[list[float]]] = {}
    shapes: list[tuple[int, ...]] = []

    def on_detections(msg: Any) -> None:
        stamp, _, found = msg_to_detections(msg)
        detections[stamp] = [[d.x1, d.y1, d.x2, d.y2] for d in found]

    node.create_subscription(
        Image, topics.FUSED_IMAGE,
        lambda m: fused.__setitem__(stamp_to_ns(m.header.stamp), image_to_array(m)), reliable,
    )  # fmt: skip
    node.create_subscription(detection_message_type(), topics.DETECTIONS, on_detections, reliable)
    node.create_subscription(
        Image, topics.DETECTIONS_IMAGE, lambda m: shapes.append(image_to_array(m).shape), reliable
    )
    pubs = [node.create_publisher(Image, name, reliable)
            for name in (topics.THERMAL_IMAGE, topics.RGB_IMAGE)]  # fmt: skip
    sent: list[int] = []
    deadline, next_send = time.monotonic() + FUSED_TIMEOUT_S, 0.0
    try:
        while time.monotonic() < deadline:
            done = [s for s in sent if s in fused and s in detections]
            if done and shapes:
                stamp = done[0]
                return {"fused": fused[stamp], "detections": detections[stamp],
                        "detection_image_shape": shapes[-1]}  # fmt: skip
            if time.monotonic() >= next_send:
                header = Header(stamp=node.get_clock().now().to_msg(), frame_id="rgb_optical_frame")
                pubs[0].publish(array_to_image(thermal, "mono16", header))
                pubs[1].publish(array_to_image(rgb, "bgr8", header))
                sent.append(stamp_to_ns(header.stamp))
                next_send = time.monotonic() + 0.5
            executor.spin_once(timeout_sec=0.05)
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.shutdown(context=context)
    raise AssertionError(
        f"after {FUSED_TIMEOUT_S:.0f} s: {len(sent)} pairs sent, {len(fused)} fused images, "
        f"{len(detections)} detection messages, {len(shapes)} detection images received"
    )
