"""The ROS-free fusion core: the student network, its checkpoints, pre/post-processing, backends.

    from mmdrfuse_ros.fusion import FusionEngine, StudentNet
"""

from .backends import BACKENDS, cuda_available
from .engine import FusionEngine, FusionSettings, PreparedPair
from .model import (
    STUDENT_PARAMETERS,
    Checkpoint,
    CheckpointError,
    StudentNet,
    count_parameters,
    load_checkpoint,
    save_checkpoint,
)
from .preprocess import THERMAL_NORMS, FusionInputError, ThermalNormalizer

__all__ = [
    "BACKENDS",
    "STUDENT_PARAMETERS",
    "THERMAL_NORMS",
    "Checkpoint",
    "CheckpointError",
    "FusionEngine",
    "FusionInputError",
    "FusionSettings",
    "PreparedPair",
    "StudentNet",
    "ThermalNormalizer",
    "count_parameters",
    "cuda_available",
    "load_checkpoint",
    "save_checkpoint",
]
