"""mmdrfuse_ros: real-time thermal/RGB fusion (MMDRFuse) and pedestrian detection for ROS 2.

The ROS-free core lives in :mod:`mmdrfuse_ros.fusion`; ROS nodes in :mod:`mmdrfuse_ros.nodes`.
"""

__version__ = "0.1.0"
