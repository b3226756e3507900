from mmdrfuse_ros.msgs.detections import *  # noqa: F403  (moved to mmdrfuse_ros.msgs.detections)
