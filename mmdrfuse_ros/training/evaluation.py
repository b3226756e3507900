"""Validation of a fuser on full held-out images with the package's fusion metrics."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn

from mmdrfuse_ros.metrics import VALIDATION_METRICS, compute_metrics

#: ``fuse(ir01, vi01) -> fused01`` on float32 [0, 1] planes.
FuseFn = Callable[[np.ndarray, np.ndarray], np.ndarray]


def evaluate(fuse: FuseFn, images: Sequence[tuple[np.ndarray, np.ndarray]],
             names: Sequence[str] = VALIDATION_METRICS) -> dict[str, float]:
    """Mean fusion metrics over full validation images.

    ``fuse(ir01, vi01) -> fused01`` works on float32 [0, 1] planes; the result is rounded to
    8 bits like a saved image, then scored on the 0..255 scale.
    """
    if not images:
        return {}
    sums: dict[str, float] = {}
    for ir, vi in images:
        fused = fuse(ir.astype(np.float32) / 255.0, vi.astype(np.float32) / 255.0)
        fused255 = np.rint(np.clip(fused, 0.0, 1.0) * 255.0).astype(np.float64)
        values = compute_metrics(ir.astype(np.float64), vi.astype(np.float64), fused255,
                                 names=list(names))
        for k, v in values.items():
            sums[k] = sums.get(k, 0.0) + float(v)
    return {k: v / len(images) for k, v in sums.items()}


def model_fuser(model: nn.Module, device: torch.device) -> FuseFn:
    """A :data:`FuseFn` running ``model`` (``[1, 2, H, W] -> [1, 1, H, W]``) on ``device``."""

    def fuse(ir01: np.ndarray, vi01: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.stack([ir01, vi01]))[None].to(device)
        with torch.no_grad():
            return model(x)[0, 0].float().cpu().numpy()

    return fuse


#: the two plain fusions every trained model is compared with.
BASELINES: dict[str, FuseFn] = {
    "pixel average": lambda ir, vi: (ir + vi) / 2.0,
    "pixel max": np.maximum,
}
