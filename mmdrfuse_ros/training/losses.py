"""The MMDRFuse loss terms, written once and shared by the teacher and student stages.

All tensors are ``[B, 1, H, W]`` in [0, 1] unless said otherwise. The constants are the
published ones (see ``shared/docs/METHOD.md``):

* intensity: L1 to the pixelwise maximum of the two sources (or another :func:`fusion_target`);
* gradient: MSE of the 3x3 Laplacian (1/8 ring, -1 centre, zero padding) to that of the same
  target, divided by 10;
* perceptual: mean over the feature stages of MSE(phi(F), max(phi(IR), phi(VIS)));
* digestible distillation: squared distance between L2-normalised channel-sum maps;
* memory (dynamic refresh): per-sample penalties towards the best history output, weighted by
  10 x the score gap;
* SSIM (11x11 Gaussian, sigma 1.5, valid window) and GMSD (2x2 mean, 2x down-sampling, Prewitt,
  c = 170 on the 0..255 scale) decide when the history bank is refreshed.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

GRADIENT_DIVISOR = 10.0
MEMORY_GAP_SCALE = 10.0
GMSD_C = 170.0
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5

_LAPLACIAN = torch.tensor(
    [[1 / 8, 1 / 8, 1 / 8], [1 / 8, -1.0, 1 / 8], [1 / 8, 1 / 8, 1 / 8]], dtype=torch.float32
)
_PREWITT_X = torch.tensor([[1 / 3, 0.0, -1 / 3]] * 3, dtype=torch.float32)


def _kernel(k: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return k.to(device=like.device, dtype=like.dtype)[None, None]


def laplacian(x: torch.Tensor) -> torch.Tensor:
    """The published 3x3 Laplacian, zero padded, applied per channel."""
    c = x.shape[1]
    w = _kernel(_LAPLACIAN, x).expand(c, 1, 3, 3)
    return F.conv2d(x, w, padding=1, groups=c)


#: ``max``: the published target; ``screen``: 1 - (1 - IR)(1 - VIS), which adds the two sources
#: where both are dark and saturates where either is bright (docs/TRAINING_RESULTS.md).
FUSION_TARGETS = ("max", "screen")


def source_max(ir: torch.Tensor, vis: torch.Tensor) -> torch.Tensor:
    return torch.maximum(ir, vis)


def fusion_target(ir: torch.Tensor, vis: torch.Tensor, kind: str = "max",
                  ir_gamma: float = 1.0, vis_gamma: float = 1.0) -> torch.Tensor:
    """The image the intensity and gradient terms pull the output towards.

    Each source is raised to its gamma first (> 1 darkens the mid-tones, < 1 lifts them).
    """
    if kind not in FUSION_TARGETS:
        raise ValueError(f"fusion target must be one of {FUSION_TARGETS}, got {kind!r}")
    a = ir if ir_gamma == 1.0 else ir.clamp(0.0, 1.0).pow(ir_gamma)
    b = vis if vis_gamma == 1.0 else vis.clamp(0.0, 1.0).pow(vis_gamma)
    return source_max(a, b) if kind == "max" else a + b - a * b


def intensity_loss(fused: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L1 to the :func:`fusion_target` (published: the source maximum)."""
    return F.l1_loss(fused, target)


def gradient_loss(fused: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Laplacian MSE to that of the :func:`fusion_target`, / 10."""
    return F.mse_loss(laplacian(fused), laplacian(target)) / GRADIENT_DIVISOR


def perceptual_targets(ir_feats: Sequence[torch.Tensor],
                       vis_feats: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """max(phi(IR), phi(VIS)) per stage: what the fused image's features are pulled to
    (fixed per patch, so training caches it: training/cache.py)."""
    return [torch.maximum(a, b) for a, b in zip(ir_feats, vis_feats, strict=True)]


def perceptual_loss_to(fused_feats: Sequence[torch.Tensor],
                       targets: Sequence[torch.Tensor]) -> torch.Tensor:
    """Mean over stages of MSE(phi(F), target)."""
    if not fused_feats:
        raise ValueError("perceptual_loss needs at least one feature stage")
    terms = [F.mse_loss(f, t) for f, t in zip(fused_feats, targets, strict=True)]
    return torch.stack(terms).mean()


def perceptual_loss(
    fused_feats: Sequence[torch.Tensor],
    ir_feats: Sequence[torch.Tensor],
    vis_feats: Sequence[torch.Tensor],
) -> torch.Tensor:
    """Mean over stages of MSE(phi(F), max(phi(IR), phi(VIS)))."""
    return perceptual_loss_to(fused_feats, perceptual_targets(ir_feats, vis_feats))


def distill_maps(features: torch.Tensor, output: torch.Tensor) -> list[torch.Tensor]:
    """The two tensors digestible distillation compares, summed over channels (``[B,1,H,W]``):
    all :func:`distillation_loss` uses of a teacher, so training caches these."""
    return [features.sum(dim=1, keepdim=True), output.sum(dim=1, keepdim=True)]


def _unit_map(x: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    s = x.sum(dim=1)  # B x H x W
    return s / s.norm().clamp_min(eps)


def distillation_loss(
    student: Sequence[torch.Tensor], teacher: Sequence[torch.Tensor]
) -> torch.Tensor:
    """Digestible distillation: mean over pairs of ||S/|S| - T/|T|||^2 on channel-sum maps.

    Each map is normalised by its L2 norm over the whole batch, so only the *shape* of the
    response is matched: the value is 2(1 - cos) in [0, 4], zero for proportional maps.
    """
    if len(student) != len(teacher) or not student:
        raise ValueError("distillation_loss needs equally many (>0) student and teacher tensors")
    terms = []
    for s, t in zip(student, teacher, strict=True):
        if s.shape[0] != t.shape[0] or s.shape[2:] != t.shape[2:]:
            raise ValueError(
                f"distillation pair shapes differ: {tuple(s.shape)} vs {tuple(t.shape)}")
        terms.append((_unit_map(s) - _unit_map(t.detach())).pow(2).sum())
    return torch.stack(terms).mean()


def _gaussian_window(size: int, sigma: float, like: torch.Tensor) -> torch.Tensor:
    r = torch.arange(size, dtype=like.dtype, device=like.device) - (size - 1) / 2
    g = torch.exp(-(r**2) / (2 * sigma**2))
    return g / g.sum()


def _band(n: int, window: torch.Tensor) -> torch.Tensor:
    """``[n - k + 1, n]`` matrix whose rows slide ``window`` (length k) along ``n`` (valid)."""
    k = len(window)
    return torch.stack([F.pad(window, (i, n - k - i)) for i in range(n - k + 1)])


def _ssim_to_each(a: torch.Tensor, others: Sequence[torch.Tensor], data_range: float
                  ) -> list[torch.Tensor]:
    """Mean SSIM per sample of ``a`` to each of ``others``; ``a``'s statistics computed once.

    The separable Gaussian is two products with banded matrices: the same sums as a valid
    convolution, and about twice as fast as one on single-channel images on the CPU.
    """
    size = min(SSIM_WINDOW, a.shape[-2], a.shape[-1])
    g = _gaussian_window(size, SSIM_SIGMA, a)
    rows, cols = _band(a.shape[-2], g), _band(a.shape[-1], g).T

    def blur(t: torch.Tensor) -> torch.Tensor:
        return rows @ t @ cols

    c1 = (0.01 * data_range) ** 2
    c2 = (0.03 * data_range) ** 2
    mu_a = blur(a)
    var_a = blur(a * a) - mu_a**2
    result = []
    for b in others:
        mu_b = blur(b)
        var_b = blur(b * b) - mu_b**2
        cov = blur(a * b) - mu_a * mu_b
        ssim_map = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / (
            (mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)
        )
        result.append(ssim_map.flatten(1).mean(dim=1))
    return result


def ssim_per_sample(a: torch.Tensor, b: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Mean SSIM per sample (``[B]``), Gaussian 11x11 window (smaller for tiny images), valid."""
    return _ssim_to_each(a, [b], data_range)[0]


def _gmsd_to_each(a: torch.Tensor, others: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """GMSD per sample of ``a`` to each of ``others``; ``a``'s gradient magnitude once."""
    kx = _kernel(_PREWITT_X, a)
    ky = kx.transpose(2, 3)

    def magnitude_sq(t: torch.Tensor) -> torch.Tensor:
        t = F.avg_pool2d(t * 255.0, 2)  # = the 2x2 mean filter, then every second pixel
        return F.conv2d(t, kx) ** 2 + F.conv2d(t, ky) ** 2

    ma = magnitude_sq(a)
    result = []
    for b in others:
        mb = magnitude_sq(b)
        gms = (2 * ma.sqrt() * mb.sqrt() + GMSD_C) / (ma + mb + GMSD_C)
        result.append(gms.flatten(1).std(dim=1))
    return result


def gmsd_per_sample(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """GMSD per sample (``[B]``, lower is better) on the 0..255 scale; inputs in [0, 1]."""
    return _gmsd_to_each(a, [b])[0]


def fusion_scores(
    fused: torch.Tensor, ir: torch.Tensor, vis: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The bank's two judges, per sample: (SSIM(F,IR)+SSIM(F,VIS), GMSD(F,IR)+GMSD(F,VIS))."""
    with torch.no_grad():
        f = fused.clamp(0.0, 1.0)
        ssim_ir, ssim_vis = _ssim_to_each(f, [ir, vis], 1.0)
        ssim = ssim_ir + ssim_vis
        gmsd_ir, gmsd_vis = _gmsd_to_each(f, [ir, vis])
        gmsd = gmsd_ir + gmsd_vis
    return ssim, gmsd


def _per_sample_mse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a - b).pow(2).flatten(1).mean(dim=1)


def _with_features(pixel_term: torch.Tensor, fused_feats: Sequence[torch.Tensor],
                   history_feats: Sequence[torch.Tensor]) -> torch.Tensor:
    """``pixel_term`` plus the mean per-sample feature MSE (nothing to add without features)."""
    if not fused_feats:
        return pixel_term
    pairs = zip(fused_feats, history_feats, strict=True)
    return torch.stack([_per_sample_mse(f, h) for f, h in pairs]).mean(0) + pixel_term


def memory_ssim_terms(
    fused: torch.Tensor,
    history: torch.Tensor,
    fused_deep: Sequence[torch.Tensor],
    history_deep: Sequence[torch.Tensor],
) -> torch.Tensor:
    """Per-sample SSIM-memory penalty: mean deep-feature MSE to the history + L1 to it."""
    l1 = (fused - history).abs().flatten(1).mean(dim=1)
    return _with_features(l1, fused_deep, history_deep)


def memory_gmsd_terms(
    fused: torch.Tensor,
    history: torch.Tensor,
    fused_shallow: Sequence[torch.Tensor],
    history_shallow: Sequence[torch.Tensor],
) -> torch.Tensor:
    """Per-sample GMSD-memory penalty: mean shallow-feature MSE + Laplacian MSE to the history."""
    lap = _per_sample_mse(laplacian(fused), laplacian(history))
    return _with_features(lap, fused_shallow, history_shallow)


def weighted_memory(per_sample: torch.Tensor, gaps: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Sum of 10 x gap_i x penalty_i over the penalised samples, divided by the batch size.

    With one gap for the whole batch this is exactly the published batch-level weighting.
    """
    return (MEMORY_GAP_SCALE * gaps.detach() * per_sample).sum() / batch_size
