from mmdrfuse_ros.msgs.compressed import *  # noqa: F403  (moved to mmdrfuse_ros.msgs)
from mmdrfuse_ros.msgs.images import *  # noqa: F403
