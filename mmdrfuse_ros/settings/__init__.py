"""Node parameter tables and their conversion to engine/detector arguments, without ROS.

    from mmdrfuse_ros.settings import defaults
    from mmdrfuse_ros.settings.fusion import FUSION_PARAMS, check_fusion_values
    values = {**defaults(FUSION_PARAMS), "thermal_norm": "fixed"}
    reason = check_fusion_values(values)      # None, or why the node would refuse them

The same tables declare the nodes' ROS parameters (:mod:`mmdrfuse_ros.nodes.params`), so a
node, the replay and the launch checks accept and refuse exactly the same values.
"""

from .spec import Param, defaults

__all__ = ["Param", "defaults"]
