"""Feature networks for the perceptual and memory losses: VGG19 (real weights) or a fallback.

MMDRFuse compares images through five VGG19 stages (relu1_2, relu2_2, relu3_4, relu4_4, relu5_4)
of an ImageNet-trained network, grey images repeated to three channels, no ImageNet
normalisation. ImageNet weights cannot be downloaded by this package, so:

* ``vgg19``: plain-PyTorch VGG19 ``features`` whose module indices match torchvision's, so a
  torchvision state dict (``features.N.weight`` ..., the classifier is ignored) loads as is from a
  local file given with ``--vgg-weights``.
* ``fallback``: a fixed, parameter-free multi-scale edge bank with the same five-stage layout
  (full, 1/2, ..., 1/16 resolution). At each scale it returns a local mean and the positive and
  negative halves of four oriented Sobel derivatives (9 channels, ReLU like VGG). Matching
  max(phi(IR), phi(VIS)) then asks the fused image to keep, at every scale, the stronger edge
  of the two sources, which is what the VGG term does in practice. It costs a few dozen MACs per
  pixel instead of VGG19's ~20 GMAC per 224x224 image. ``README.md`` shows what it buys against
  dropping the term.
* ``yolox``: the five backbone stages of the COCO-trained YOLOX ONNX file the detector runs
  (``--yolox-model``), on PyTorch operators (:mod:`mmdrfuse_ros.detection.onnx_torch`): a real
  pretrained network that is on disk where VGG19 is not.
* ``none``: no perceptual term; the memory terms keep their pixel parts (L1, Laplacian).

Whichever is used is logged loudly and written into the checkpoint metadata.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from mmdrfuse_ros.fusion.model import CheckpointError, _torch_load
from mmdrfuse_ros.training import PERCEPTUAL_CHOICES, TrainingInputError, recorded_path

log = logging.getLogger("mmdrfuse_ros.training")

#: conv widths of VGG19's ``features``; "M" is a 2x2 max pool.
_VGG19_LAYOUT = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M",
                 512, 512, 512, 512, "M", 512, 512, 512, 512)
#: indices in ``features`` of relu1_2, relu2_2, relu3_4, relu4_4, relu5_4.
VGG19_STAGE_INDICES = (3, 8, 17, 26, 35)
#: the SSIM memory uses the deep stages, the GMSD memory the shallow ones (published split).
DEEP_STAGES = (3, 4)
SHALLOW_STAGES = (0, 1, 2)
#: the fallback's feature scale. At 1 its MSE is ~1e-3, too small to steer training against the
#: L1 intensity term (ImageNet VGG activations are 10-100x larger); 30 was the best of 1, 10, 30,
#: 100 on RoadScene (docs/TRAINING_RESULTS.md), 100 let the term swamp all others.
FALLBACK_GAIN = 30.0


class PerceptualError(TrainingInputError):
    """VGG weights that cannot be used (missing file, wrong layout or shapes)."""


class FeatureNet(nn.Module):
    """Frozen five-stage feature extractor; ``forward(x[B,1,H,W]) -> list of 5 tensors``."""

    kind: str = "none"
    description: str = ""

    def stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.stages(x)

    def info(self) -> dict[str, str]:
        return {"network": self.kind, "description": self.description}


class VGG19Features(FeatureNet):
    """VGG19 ``features`` up to relu5_4, indices as in torchvision."""

    kind = "vgg19"

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = 3
        for item in _VGG19_LAYOUT:
            if item == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(channels, int(item), 3, padding=1), nn.ReLU(inplace=False)]
                channels = int(item)
        self.features = nn.Sequential(*layers)  # 36 modules: index 35 is relu5_4
        self.description = "VGG19 with randomly initialised weights (no --vgg-weights loaded)"
        self.requires_grad_(False)

    def load_torchvision(self, path: str | Path) -> None:
        """Load a torchvision ``vgg19`` state dict (or just its ``features``) from a local file."""
        origin = str(path)
        try:
            raw = _torch_load(Path(path), f"--vgg-weights {origin}")
        except CheckpointError as exc:
            raise PerceptualError(str(exc)) from None
        if isinstance(raw, Mapping) and isinstance(raw.get("state_dict"), Mapping):
            raw = raw["state_dict"]
        if not isinstance(raw, Mapping):
            raise PerceptualError(f"--vgg-weights {origin}: expected a state dict")
        own = self.features.state_dict()
        state = {}
        for key in own:
            for candidate in (f"features.{key}", key, f"module.features.{key}"):
                if candidate in raw:
                    state[key] = raw[candidate]
                    break
        missing = sorted(set(own) - set(state))
        if missing:
            raise PerceptualError(
                f"--vgg-weights {origin}: not a torchvision VGG19 state dict "
                f"(missing {missing[:4]}...; expected keys like 'features.0.weight')"
            )
        for key, tensor in state.items():
            if tuple(tensor.shape) != tuple(own[key].shape):
                raise PerceptualError(
                    f"--vgg-weights {origin}: {key} has shape {tuple(tensor.shape)}, VGG19 needs "
                    f"{tuple(own[key].shape)} (is this VGG16 or a BN variant?)"
                )
        self.features.load_state_dict(state)
        self.description = f"VGG19 ImageNet weights from {origin}"

    def stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        h = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x
        out = []
        last = VGG19_STAGE_INDICES[-1]
        for i, layer in enumerate(self.features):
            h = layer(h)
            if i in VGG19_STAGE_INDICES:
                out.append(h)
            if i == last:
                break
        return out


def _edge_bank() -> torch.Tensor:
    """9 fixed 3x3 filters: local mean, then +/- of four oriented Sobel derivatives (scaled 1/4)."""
    sx = torch.tensor([[1.0, 0.0, -1.0], [2.0, 0.0, -2.0], [1.0, 0.0, -1.0]]) / 4
    sd = torch.tensor([[0.0, 1.0, 2.0], [-1.0, 0.0, 1.0], [-2.0, -1.0, 0.0]]) / 4
    derivs = [sx, sx.t(), sd, sd.flip(1)]
    filters = [torch.full((3, 3), 1.0 / 9.0)]
    for d in derivs:
        filters += [d, -d]
    return torch.stack(filters)[:, None]  # 9 x 1 x 3 x 3


class EdgePyramid(FeatureNet):
    """The fallback: ReLU(fixed 3x3 edge bank) on a 5-level 2x average-pooled pyramid."""

    kind = "fallback"
    description = (
        "fallback edge pyramid (no ImageNet VGG19 weights): 5 scales x [local mean, +/- Sobel in "
        "4 orientations], ReLU; parameter-free"
    )

    def __init__(self, levels: int = 5, gain: float = FALLBACK_GAIN) -> None:
        super().__init__()
        self.levels = levels
        self.gain = float(gain)
        self.description = f"{self.description}; gain {self.gain:g}"
        self.register_buffer("bank", _edge_bank() * self.gain, persistent=False)

    def stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        if x.shape[1] != 1:
            x = x.mean(dim=1, keepdim=True)
        out = []
        h = x
        for level in range(self.levels):
            if level:
                if min(h.shape[-2:]) < 2:
                    break
                h = F.avg_pool2d(h, 2)
            padded = F.pad(h, (1, 1, 1, 1), mode="replicate")
            out.append(F.relu(F.conv2d(padded, self.bank.to(h.dtype))))
        return out


class YoloxFeatures(FeatureNet):
    """The five backbone stages (strides 2..32) of a COCO-trained YOLOX ONNX file.

    A real pretrained network that is on disk where VGG19 is not: the detector the nodes run.
    Grey images become its BGR 0..255 input (all three channels equal); no other scaling.
    """

    kind = "yolox"

    def __init__(self, model: str | Path) -> None:
        super().__init__()
        from mmdrfuse_ros.detection.onnx_torch import (
            OnnxGraphError,
            OnnxGraphModule,
            read_graph,
            yolox_stage_outputs,
        )

        try:
            graph = read_graph(model)
            self.graph = OnnxGraphModule(graph, yolox_stage_outputs(graph))
        except (OnnxGraphError, OSError) as exc:
            raise PerceptualError(f"perceptual network 'yolox': {exc}") from None
        self.description = f"YOLOX backbone stages from {recorded_path(model)}"
        self.requires_grad_(False)

    def stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        return self.graph(x * 255.0)


class NoFeatures(FeatureNet):
    """No perceptual network: the perceptual term is dropped, memory terms keep pixel parts."""

    kind = "none"
    description = "no perceptual network: perceptual term dropped"

    def stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        return []


def yolox_model_path(path: str | Path | None, user: str = "perceptual network 'yolox'",
                     flag: str = "--yolox-model") -> Path:
    """The YOLOX file ``user`` needs: ``path``, else the detector's own search."""
    from mmdrfuse_ros.detection.models import FETCH_COMMAND, find_model

    found = find_model(path or "")
    if found is None or not found.is_file():
        where = f"{found} does not exist" if found else "none found where the detector looks"
        raise PerceptualError(
            f"{user} needs a YOLOX ONNX file ({where}): pass {flag} PATH, or get YOLOX-Nano "
            f"with `{FETCH_COMMAND}`")
    return found


def build_feature_net(choice: str = "auto", vgg_weights: str | Path | None = None,
                      fallback_gain: float = FALLBACK_GAIN,
                      yolox_model: str | Path | None = None) -> FeatureNet:
    """Resolve the perceptual network and say loudly which one is used.

    ``auto`` means VGG19 with the given weights if ``vgg_weights`` is set, YOLOX if
    ``yolox_model`` is, else the fallback. ``vgg19`` without weights is refused: random VGG
    features are not the published loss. ``yolox``: the backbone of ``yolox_model`` (default:
    the model the detector finds).
    """
    if choice not in PERCEPTUAL_CHOICES:
        raise PerceptualError(f"perceptual network {choice!r}: choose one of {PERCEPTUAL_CHOICES}")
    if choice == "auto":
        choice = "vgg19" if vgg_weights else "yolox" if yolox_model else "fallback"
    if vgg_weights and choice != "vgg19":
        raise PerceptualError(f"--vgg-weights given but perceptual network is {choice!r}")
    if yolox_model and choice != "yolox":
        raise PerceptualError(f"--yolox-model given but perceptual network is {choice!r}")
    if choice == "vgg19":
        if not vgg_weights:
            raise PerceptualError(
                "perceptual network 'vgg19' needs --vgg-weights PATH (a torchvision vgg19 state "
                "dict); nothing is downloaded. Use 'yolox', 'fallback' or 'none' otherwise."
            )
        net: FeatureNet = VGG19Features()
        net.load_torchvision(vgg_weights)
    elif choice == "yolox":
        net = YoloxFeatures(yolox_model_path(yolox_model))
    elif choice == "fallback":
        net = EdgePyramid(gain=fallback_gain)
        log.warning(
            "PERCEPTUAL LOSS USES THE FALLBACK NETWORK, NOT IMAGENET VGG19: %s. Pass "
            "--vgg-weights PATH (torchvision vgg19 state dict) for the published loss.",
            net.description,
        )
    else:
        net = NoFeatures()
        log.warning("PERCEPTUAL LOSS DISABLED (network 'none'); all other terms are kept")
    if net.kind in ("vgg19", "yolox"):
        log.info("perceptual network: %s", net.description)
    return net.eval().requires_grad_(False)
