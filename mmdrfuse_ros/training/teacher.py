"""The MMDRFuse teacher: a MUFusion-style U-Net whose head has the student's own shape.

Layout (published, width 1.0: 32/64 channels, about 557k parameters)::

    encoder  conv1 (2->a) conv2 (a->a) conv3 (2a->b, stride 2) conv4 (b->b)
             conv5 (2b->b) conv6 (3b->b)                        dense skip concatenations
    decoder  conv66 (b->b) conv55 (2b->b) conv44 (2b->b) conv33 (2b->b)
             bicubic x2, conv22 (b+a->a), conv11 (2a->4) + ReLU  = the 4-channel "buffer"
             conv00 (4->1) + tanh                                = the student's conv2 shape

with a = 32w, b = 64w for a width setting w (a CPU-sized teacher uses w < 1). Every conv is
ReflectionPad(1) + Conv3x3 (+ ReLU), held in ``nn.Sequential(pad, conv[, relu])`` so that the
parameter names (``conv1.1.weight`` ...) are those of the published teacher state dict, which
therefore loads unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mmdrfuse_ros.fusion.model import CheckpointError, _torch_load
from mmdrfuse_ros.training import TrainingInputError, recorded_path

TEACHER_FORMAT = "mmdrfuse_ros.teacher"
BUFFER_CHANNELS = 4


class TeacherError(TrainingInputError):
    """A teacher checkpoint that does not fit (unreadable, wrong layout or head shape)."""


def _conv(cin: int, cout: int, stride: int = 1, relu: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [nn.ReflectionPad2d(1), nn.Conv2d(cin, cout, 3, stride=stride)]
    if relu:
        layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def teacher_channels(width: float) -> tuple[int, int]:
    if not (width > 0 and math.isfinite(width)):
        raise ValueError(f"teacher width must be a positive number, got {width!r}")
    return max(1, round(32 * width)), max(1, round(64 * width))


class TeacherNet(nn.Module):
    """Input ``[B, 2, H, W]`` (IR, VIS_Y); ``forward_with_features`` returns (buffer, output)."""

    def __init__(self, width: float = 1.0) -> None:
        super().__init__()
        a, b = teacher_channels(width)
        self.width = float(width)
        self.conv1 = _conv(2, a)
        self.conv2 = _conv(a, a)
        self.conv3 = _conv(2 * a, b, stride=2)
        self.conv4 = _conv(b, b)
        self.conv5 = _conv(2 * b, b)
        self.conv6 = _conv(3 * b, b)
        self.conv66 = _conv(b, b)
        self.conv55 = _conv(2 * b, b)
        self.conv44 = _conv(2 * b, b)
        self.conv33 = _conv(2 * b, b)
        self.conv22 = _conv(b + a, a)
        self.conv11 = _conv(2 * a, BUFFER_CHANNELS, relu=False)
        self.conv00 = _conv(BUFFER_CHANNELS, 1, relu=False)

    def forward_with_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        e1 = self.conv1(x)
        e2 = self.conv2(e1)
        e3 = self.conv3(torch.cat([e1, e2], 1))
        e4 = self.conv4(e3)
        e5 = self.conv5(torch.cat([e3, e4], 1))
        e6 = self.conv6(torch.cat([e3, e4, e5], 1))
        d5 = self.conv66(e6)
        d4 = self.conv55(torch.cat([e5, d5], 1))
        d3 = self.conv44(torch.cat([e4, d4], 1))
        d2 = self.conv33(torch.cat([e3, d3], 1))
        # Resize to the skip's size: equals x2 bicubic for even sizes, and also works for odd ones.
        up = F.interpolate(d2, size=e2.shape[-2:], mode="bicubic", align_corners=False)
        d1 = self.conv22(torch.cat([e2, up], 1))
        buffer = F.relu(self.conv11(torch.cat([e1, d1], 1)))
        return buffer, torch.tanh(self.conv00(buffer))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_features(x)[1]


def infer_width(state: Mapping[str, Any], origin: str) -> float:
    w = state.get("conv1.1.weight")
    if not isinstance(w, torch.Tensor) or w.ndim != 4:
        raise TeacherError(
            f"{origin}: not an MMDRFuse teacher state dict (no 4-D 'conv1.1.weight'); "
            "expected the published teacher layout (conv1 ... conv6, conv66 ... conv11, conv00)"
        )
    return w.shape[0] / 32.0


def validate_teacher_state(state: Mapping[str, Any], origin: str) -> tuple[dict, float]:
    """Check keys, shapes and finiteness against a teacher of the inferred width."""
    if not isinstance(state, Mapping):
        raise TeacherError(f"{origin}: expected a state dict, found {type(state).__name__}")
    state = {(k[7:] if k.startswith("module.") else k): v for k, v in state.items()}
    width = infer_width(state, origin)
    own = TeacherNet(width).state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if set(state) == {"conv1.1.weight", "conv1.1.bias", "conv2.1.weight", "conv2.1.bias"}:
        raise TeacherError(f"{origin}: not an MMDRFuse teacher: this is a student (conv1, conv2 "
                           "only); pass a teacher checkpoint")
    if missing or unexpected:
        raise TeacherError(
            f"{origin}: not an MMDRFuse teacher in the published teacher_net.py layout (missing "
            f"{missing[:5] or 'none'}, unexpected {unexpected[:5] or 'none'})"
        )
    for key, ref in own.items():
        got = state[key]
        if not isinstance(got, torch.Tensor) or tuple(got.shape) != tuple(ref.shape):
            shape = tuple(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__
            raise TeacherError(
                f"{origin}: {key} has shape {shape}, a width-{width:g} teacher needs "
                f"{tuple(ref.shape)} (the head must be 4-channel buffer -> 4->1 conv3x3)"
            )
        if not torch.isfinite(got).all():
            raise TeacherError(f"{origin}: {key} contains NaN or inf values")
    return {k: state[k].detach().float().cpu() for k in own}, width


def load_teacher(path: str | Path) -> tuple[TeacherNet, dict[str, Any]]:
    """Load our teacher checkpoint or a bare (e.g. published) teacher state dict."""
    origin = str(path)
    try:
        raw = _torch_load(Path(path), f"teacher {origin}")
    except CheckpointError as exc:
        raise TeacherError(str(exc)) from None
    meta: dict[str, Any] = {"source": recorded_path(path)}
    if isinstance(raw, Mapping) and raw.get("format") == TEACHER_FORMAT:
        meta.update(raw.get("meta") or {})
        raw = raw.get("state_dict")
    elif isinstance(raw, Mapping) and isinstance(raw.get("state_dict"), Mapping):
        raw = raw["state_dict"]
    state, width = validate_teacher_state(raw, f"teacher {origin}")
    net = TeacherNet(width)
    net.load_state_dict(state)
    meta["width"] = width
    meta["parameters"] = sum(p.numel() for p in net.parameters())
    return net.eval(), meta


def save_teacher(path: str | Path, net: TeacherNet, meta: Mapping[str, Any]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": TEACHER_FORMAT,
        "format_version": 1,
        "state_dict": {k: v.detach().cpu() for k, v in net.state_dict().items()},
        "meta": dict(meta, width=net.width),
    }
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)
    return path
