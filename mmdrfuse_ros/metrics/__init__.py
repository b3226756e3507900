"""Fusion quality metrics (reference-compatible) and detection average precision. No ROS imports.

from mmdrfuse_ros.metrics import compute_metrics, ALL_METRICS, average_precision
"""

from . import fusion as _fusion
from .detection import average_precision, box_iou
from .fusion import *  # noqa: F403  (every name of metrics.fusion.__all__)

__all__ = ["average_precision", "box_iou", *_fusion.__all__]
