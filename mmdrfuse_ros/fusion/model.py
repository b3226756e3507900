"""The MMDRFuse student network and its checkpoint format.

The student is the published 113-parameter mini-model (Deng et al., ACM MM 2024):

    [IR, VIS_Y] -> ReflectionPad(1) -> Conv3x3(2->4) -> ReLU
                -> ReflectionPad(1) -> Conv3x3(4->1) -> tanh

Module names mirror the published state dict (``conv1.1.weight`` ...: index 0 is the padding
layer) so that the published checkpoint loads unchanged.

Our own checkpoint is a ``torch.save`` dict ``{"format": FORMAT_NAME, "format_version": N,
"state_dict": ..., "meta": {...}}`` where ``meta`` records the parameter count, how the weights
were trained and on what, and their validation metrics.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

FORMAT_NAME = "mmdrfuse_ros.student"
FORMAT_VERSION = 1
STUDENT_PARAMETERS = 113

#: name -> shape of every tensor in the published (and our) student state dict.
STUDENT_SHAPES: dict[str, tuple[int, ...]] = {
    "conv1.1.weight": (4, 2, 3, 3),
    "conv1.1.bias": (4,),
    "conv2.1.weight": (1, 4, 3, 3),
    "conv2.1.bias": (1,),
}


class CheckpointError(ValueError):
    """A weights file that cannot be used: unreadable, wrong layout, wrong shapes or non-finite."""


class StudentNet(nn.Module):
    """The 113-parameter MMDRFuse student: input ``[B, 2, H, W]`` = (IR, VIS_Y) in [0, 1]."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Sequential(nn.ReflectionPad2d(1), nn.Conv2d(2, 4, 3), nn.ReLU())
        self.conv2 = nn.Sequential(nn.ReflectionPad2d(1), nn.Conv2d(4, 1, 3), nn.Tanh())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.conv1(x))

    def forward_with_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(features, output)``: the 4-channel ReLU map is what distillation matches."""
        features = self.conv1(x)
        return features, self.conv2(features)

    def unclamped(self, ir01: np.ndarray, y01: np.ndarray) -> np.ndarray:
        """The tanh output in [-1, 1] for two float [0, 1] planes, not clamped: what the
        MMDRFuse authors' test script stretches per image (the engine's backends clamp)."""
        x = torch.from_numpy(np.stack((ir01, y01)).astype(np.float32)[None])
        with torch.inference_mode():
            return self(x)[0, 0].numpy()


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


@dataclass
class Checkpoint:
    """A validated student state dict and the metadata that says where it came from."""

    state_dict: dict[str, torch.Tensor]
    meta: dict[str, Any] = field(default_factory=dict)
    source_format: str = FORMAT_NAME  # or "published" for the bare state dict of the paper's code

    def build(self) -> StudentNet:
        net = StudentNet()
        net.load_state_dict(self.state_dict)
        return net.eval()


def validate_state_dict(
    state: Mapping[str, Any], origin: str = "weights"
) -> dict[str, torch.Tensor]:
    """Check names, shapes and finiteness; return float32 CPU copies. Raises CheckpointError."""
    if not isinstance(state, Mapping):
        raise CheckpointError(f"{origin}: expected a state dict, found {type(state).__name__}")
    # Accept the DataParallel/DDP prefix that training scripts often leave behind.
    state = {(k[len("module."):] if k.startswith("module.") else k): v for k, v in state.items()}
    missing = sorted(set(STUDENT_SHAPES) - set(state))
    unexpected = sorted(set(state) - set(STUDENT_SHAPES))
    if missing or unexpected:
        raise CheckpointError(
            f"{origin}: not an MMDRFuse student state dict (missing {missing or 'none'}, "
            f"unexpected {unexpected[:6] or 'none'}); expected keys {sorted(STUDENT_SHAPES)}"
        )
    clean: dict[str, torch.Tensor] = {}
    for name, shape in STUDENT_SHAPES.items():
        tensor = state[name]
        if not isinstance(tensor, torch.Tensor):
            raise CheckpointError(f"{origin}: {name} is a {type(tensor).__name__}, not a tensor")
        if not tensor.is_floating_point():  # integer, bool or complex: not trained weights
            raise CheckpointError(
                f"{origin}: {name} is a {tensor.dtype} tensor; student weights are floating "
                "point (float32, float16, bfloat16 or float64)"
            )
        if tuple(tensor.shape) != shape:
            raise CheckpointError(
                f"{origin}: {name} has shape {tuple(tensor.shape)}, the student needs {shape}"
            )
        if not torch.isfinite(tensor).all():
            raise CheckpointError(f"{origin}: {name} contains NaN or inf values")
        clean[name] = tensor.detach().to("cpu", torch.float32).clone()
    return clean


def _check_regular_file(path: Path, origin: str) -> None:
    """A FIFO or a device would make ``torch.load`` wait or read for ever: refuse it first."""
    if not path.exists():
        raise CheckpointError(f"{origin}: file not found")
    if path.is_dir():
        raise CheckpointError(f"{origin}: is a directory, expected a .pt/.pth file")
    if not path.is_file():
        raise CheckpointError(
            f"{origin}: not a regular file (a FIFO, socket or device); expected a .pt/.pth file"
        )


def _torch_load(source: str | Path | bytes, origin: str) -> Any:
    if not isinstance(source, bytes):
        _check_regular_file(Path(source), origin)
    try:
        handle = io.BytesIO(source) if isinstance(source, bytes) else source
        return torch.load(handle, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{origin}: file not found") from None
    except IsADirectoryError:
        raise CheckpointError(f"{origin}: is a directory, expected a .pt/.pth file") from None
    except Exception as exc:  # torch raises many types for truncated or foreign files
        raise CheckpointError(
            f"{origin}: cannot be read as a PyTorch checkpoint ({type(exc).__name__}: {exc}); "
            "is the file truncated or not a .pt/.pth file?"
        ) from None


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Load our checkpoint format or the published bare state dict, fully validated."""
    origin = str(path)
    raw = _torch_load(Path(path), origin)
    if isinstance(raw, Mapping) and raw.get("format") == FORMAT_NAME:
        _check_format_version(raw.get("format_version"), origin)
        state = validate_state_dict(raw.get("state_dict", {}), origin)
        meta = raw.get("meta") or {}
        if not isinstance(meta, Mapping):
            raise CheckpointError(
                f"{origin}: its metadata ('meta') is a {type(meta).__name__}, expected a "
                "mapping; the file was not written by save_checkpoint"
            )
        return Checkpoint(state, dict(meta), FORMAT_NAME)
    if isinstance(raw, Mapping) and "state_dict" in raw and isinstance(raw["state_dict"], Mapping):
        raw = raw["state_dict"]  # a generic {"state_dict": ...} training checkpoint
    state = validate_state_dict(raw, origin)
    return Checkpoint(state, {"note": "published/bare state dict, no metadata"}, "published")


def _check_format_version(version: Any, origin: str) -> None:
    """A positive integer, at most the version this package writes."""
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise CheckpointError(
            f"{origin}: checkpoint format_version {version!r} is not a positive integer "
            f"(this package writes {FORMAT_VERSION}); the file is damaged or not ours"
        )
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{origin}: checkpoint format version {version} is newer than this package "
            f"understands ({FORMAT_VERSION}); upgrade mmdrfuse_ros"
        )


def save_checkpoint(
    path: str | Path,
    model: StudentNet | Mapping[str, torch.Tensor],
    *,
    training: Mapping[str, Any] | None = None,
    data: Mapping[str, Any] | None = None,
    validation: Mapping[str, Any] | None = None,
    **extra: Any,
) -> Path:
    """Write our checkpoint format: the state dict plus provenance and validation metadata."""
    state = model.state_dict() if isinstance(model, nn.Module) else dict(model)
    state = validate_state_dict(state, "model to save")
    meta: dict[str, Any] = {
        "parameters": int(sum(t.numel() for t in state.values())),
        "training": dict(training or {}),
        "data": dict(data or {}),
        "validation": _plain(dict(validation or {})),
        **extra,
    }
    payload = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "state_dict": state,
        "meta": _plain(meta),
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)  # atomic: a crash never leaves a half-written default
    return path


def _plain(value: Any) -> Any:
    """Metadata must survive ``weights_only=True`` loading: keep to builtins."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int | str):  # subclasses (torch.__version__) break weights_only loads
        return int(value) if isinstance(value, int) else str(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if hasattr(value, "item"):
        return _plain(value.item())
    return str(value)
