"""The ROS-free fusion core: the student network, its checkpoints, pre/post-processing, backends.

    from mmdrfuse_ros.fusion import FusionEngine, StudentNet

Names are imported on first use, so that light modules (``fusion.geometry``, ``fusion.preprocess``)
do not load PyTorch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "BACKENDS": "backends",
    "cuda_available": "backends",
    "FusionEngine": "engine",
    "FusionSettings": "engine",
    "PreparedPair": "engine",
    "STUDENT_PARAMETERS": "model",
    "Checkpoint": "model",
    "CheckpointError": "model",
    "StudentNet": "model",
    "count_parameters": "model",
    "load_checkpoint": "model",
    "save_checkpoint": "model",
    "THERMAL_NORMS": "preprocess",
    "FusionInputError": "preprocess",
    "ThermalNormalizer": "preprocess",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
