"""Fusion quality metrics (reference-compatible) and detection average precision. No ROS imports.

from mmdrfuse_ros.metrics import compute_metrics, ALL_METRICS, average_precision
"""

from .detection import average_precision, box_iou
from .fusion import (
    ALL_METRICS,
    HIGHER_IS_BETTER,
    METRIC_FUNCTIONS,
    VALIDATION_METRICS,
    ag,
    cc,
    compute_metrics,
    en,
    fmi,
    mi,
    ms_ssim,
    mse,
    nabf,
    psnr,
    qabf,
    scd,
    sd,
    sf,
    ssim,
    vif,
)

__all__ = [
    "ALL_METRICS",
    "HIGHER_IS_BETTER",
    "METRIC_FUNCTIONS",
    "VALIDATION_METRICS",
    "ag",
    "average_precision",
    "box_iou",
    "cc",
    "compute_metrics",
    "en",
    "fmi",
    "mi",
    "ms_ssim",
    "mse",
    "nabf",
    "psnr",
    "qabf",
    "scd",
    "sd",
    "sf",
    "ssim",
    "vif",
]
