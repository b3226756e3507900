"""``--external``: is the fusion node started elsewhere set up for this bag?

The node's ``homography`` is read through its parameter service (``/fusion_node/get_parameters``,
as ``ros2 param get`` does) and compared with the bag's calibration. A node that registers with
another homography, or with none, fuses misaligned frames: every metric and AP of the replay is
then wrong, so the replay warns with the exact command that fixes it.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from mmdrfuse_ros.replay.plan import BagPlan, homography_argument

_SERVICE_WAIT_S = 5.0


def read_parameter(node: Any, target: str, name: str, timeout_s: float = _SERVICE_WAIT_S) -> Any:
    """The value of parameter ``name`` of node ``target`` (e.g. "/fusion_node"), read with
    ``node``'s context while an executor spins it; raises TimeoutError / LookupError."""
    from rcl_interfaces.srv import GetParameters
    from rclpy.parameter import parameter_value_to_python

    client = node.create_client(GetParameters, f"{target.rstrip('/')}/get_parameters")
    try:
        if not client.wait_for_service(timeout_sec=timeout_s):
            raise TimeoutError(f"no parameter service {client.srv_name} after {timeout_s:.0f} s")
        future = client.call_async(GetParameters.Request(names=[name]))
        deadline = time.monotonic() + timeout_s
        while not future.done():
            if time.monotonic() > deadline:
                raise TimeoutError(f"{client.srv_name} did not answer in {timeout_s:.0f} s")
            time.sleep(0.02)
        values = future.result().values
        if not values:
            raise LookupError(f"{target} has no parameter {name!r}")
        return parameter_value_to_python(values[0])
    finally:
        node.destroy_client(client)


def launch_fix(plan: BagPlan) -> str:
    """The command that starts the nodes with this bag's calibration: the launch line with the
    params file that ``mmdrfuse bag synth`` / ``bag from-folders`` write next to the bag."""
    from mmdrfuse_ros.bag.params import params_path, play_commands

    if params_path(plan.path).is_file():
        return play_commands(plan.path)[0]
    assert plan.homography is not None
    return ("ros2 run mmdrfuse_ros fusion_node --ros-args -p use_sim_time:=true -p "
            f"homography:={homography_argument(plan.homography).replace(' ', '')}")  # fmt: skip


def homography_warning(plan: BagPlan, value: Any) -> str | None:
    """Why the external node's ``homography`` value does not suit this bag (None: it does)."""
    if plan.homography is None:
        return None
    node_h = np.asarray(value if value is not None else [], dtype=np.float64).reshape(-1)
    if node_h.size == 0:
        what = "has no homography set (it resizes instead of registering)"
    elif node_h.size != 9:
        what = f"has a homography of {node_h.size} values"
    else:
        bag_h = plan.homography / plan.homography[2, 2]
        node_m = node_h.reshape(3, 3)
        if node_m[2, 2] != 0:
            node_m = node_m / node_m[2, 2]
        if np.allclose(node_m, bag_h, rtol=1e-6, atol=1e-9):
            return None
        what = f"has the homography {homography_argument(node_h).replace(' ', '')}"
    return (f"the external fusion node {what}, not the bag's calibration "
            f"{homography_argument(plan.homography).replace(' ', '')}: its fused frames are "
            f"misregistered and the metrics and AP are wrong. Restart it with: {launch_fix(plan)}")


def check_external_fusion(node: Any, plan: BagPlan, target: str) -> str | None:
    """A warning when the running fusion node ``target`` is not set up for this bag, or its
    parameters could not be read; None when it is."""
    if plan.homography is None:
        return None
    try:
        value = read_parameter(node, target, "homography")
    except (TimeoutError, LookupError) as exc:
        return (f"the external fusion node's homography could not be checked ({exc}); make sure "
                f"it runs with the bag's calibration: {launch_fix(plan)}")  # fmt: skip
    return homography_warning(plan, value)
