"""Loss terms, feature networks and the history bank of the training library, on tiny tensors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mmdrfuse_ros.training import losses
from mmdrfuse_ros.training.bank import HistoryBank, bank_nbytes, memory_statement
from mmdrfuse_ros.training.perceptual import (
    EdgePyramid,
    PerceptualError,
    VGG19Features,
    build_feature_net,
)


def _rand(*shape: int, seed: int = 0, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


# -- comprehensive loss ------------------------------------------------------------------------


def test_intensity_loss_is_l1_to_the_source_max() -> None:
    ir = torch.tensor([[[[0.2, 0.8]]]])
    vi = torch.tensor([[[[0.6, 0.1]]]])
    fused = torch.tensor([[[[0.5, 0.5]]]], requires_grad=True)
    value = losses.intensity_loss(fused, losses.fusion_target(ir, vi))  # |0.5-0.6|, |0.5-0.8|
    assert value.item() == pytest.approx(0.2)
    value.backward()
    assert torch.allclose(fused.grad, torch.tensor([[[[-0.5, -0.5]]]]))


def test_fusion_targets_max_screen_and_gammas() -> None:
    ir = torch.tensor([[[[0.0, 0.5, 1.0, 0.25]]]])
    vi = torch.tensor([[[[0.5, 0.5, 0.2, 0.0]]]])
    assert torch.equal(losses.fusion_target(ir, vi), torch.maximum(ir, vi))
    screen = losses.fusion_target(ir, vi, "screen")
    assert screen.flatten().tolist() == pytest.approx([0.5, 0.75, 1.0, 0.25])
    assert torch.all(screen >= torch.maximum(ir, vi))  # screen never darkens either source
    lifted = losses.fusion_target(ir, vi, "max", ir_gamma=2.0, vis_gamma=0.5)
    assert lifted.flatten().tolist() == pytest.approx([0.5 ** 0.5, 0.5 ** 0.5, 1.0, 0.0625])
    with pytest.raises(ValueError, match="fusion target must be one of"):
        losses.fusion_target(ir, vi, "sum")


def test_intensity_and_gradient_terms_follow_the_given_target() -> None:
    ir, vi = _rand(1, 1, 6, 6, seed=4), _rand(1, 1, 6, 6, seed=5)
    target = losses.fusion_target(ir, vi, "screen", 1.5, 0.7)
    assert losses.intensity_loss(target, target).item() == 0.0
    assert losses.gradient_loss(target, target).item() == 0.0
    published = losses.fusion_target(ir, vi)  # the source max
    assert losses.intensity_loss(target, published).item() > 0.01


def test_laplacian_kernel_and_zero_padding() -> None:
    flat = torch.ones(1, 1, 4, 4)
    lap = losses.laplacian(flat)
    assert torch.allclose(lap[..., 1:-1, 1:-1], torch.zeros(1, 1, 2, 2))
    assert lap[0, 0, 0, 0].item() == pytest.approx(3 / 8 - 1)  # corner: 3 of 8 neighbours inside
    impulse = torch.zeros(1, 1, 3, 3)
    impulse[0, 0, 1, 1] = 1.0
    assert losses.laplacian(impulse).flatten().tolist() == pytest.approx(
        [1 / 8, 1 / 8, 1 / 8, 1 / 8, -1.0, 1 / 8, 1 / 8, 1 / 8, 1 / 8])


def test_gradient_loss_value_and_gradcheck() -> None:
    ir, vi = _rand(1, 1, 5, 6, seed=1, dtype=torch.float64), _rand(1, 1, 5, 6, seed=2,
                                                                     dtype=torch.float64)
    fused = _rand(1, 1, 5, 6, seed=3, dtype=torch.float64).requires_grad_()
    source_max = losses.fusion_target(ir, vi)
    expected = ((losses.laplacian(fused) - losses.laplacian(source_max)) ** 2).mean() / 10
    assert losses.gradient_loss(fused, source_max).item() == pytest.approx(expected.item())
    assert losses.gradient_loss(torch.maximum(ir, vi), source_max).item() == 0.0
    assert torch.autograd.gradcheck(lambda f: losses.gradient_loss(f, source_max), (fused,))


def test_perceptual_loss_targets_the_elementwise_feature_max() -> None:
    a, b = [torch.tensor([1.0, 4.0])], [torch.tensor([3.0, 2.0])]
    f = [torch.tensor([3.0, 4.0], requires_grad=True)]
    assert losses.perceptual_loss(f, a, b).item() == 0.0
    g = [torch.tensor([0.0, 0.0], requires_grad=True)]
    value = losses.perceptual_loss(g, a, b)
    assert value.item() == pytest.approx((9 + 16) / 2)
    value.backward()
    assert g[0].grad.tolist() == pytest.approx([-3.0, -4.0])


# -- distillation ------------------------------------------------------------------------------


def test_distillation_is_zero_for_identical_and_proportional_maps() -> None:
    s_feat, s_out = _rand(2, 4, 6, 5, seed=4), _rand(2, 1, 6, 5, seed=5)
    assert losses.distillation_loss([s_feat, s_out], [s_feat, s_out]).item() == pytest.approx(
        0.0, abs=1e-7)
    # scale-free: multiplying either side by any positive factor changes nothing
    base = losses.distillation_loss([s_feat, s_out], [_rand(2, 4, 6, 5, seed=6), s_out])
    scaled = losses.distillation_loss([7.0 * s_feat, 0.01 * s_out],
                                      [0.3 * _rand(2, 4, 6, 5, seed=6), 50.0 * s_out])
    assert base.item() > 1e-4
    assert scaled.item() == pytest.approx(base.item(), rel=1e-5)


def test_distillation_value_is_two_minus_two_cosine_and_trains_only_the_student() -> None:
    s = torch.tensor([[[[1.0, 0.0]]]], requires_grad=True)  # channel-sum map (1, 0)
    t = torch.tensor([[[[0.0, 2.0]]]], requires_grad=True)  # (0, 1) after normalising
    value = losses.distillation_loss([s], [t])
    assert value.item() == pytest.approx(2.0)  # orthogonal maps: 2(1 - 0)
    value.backward()
    assert s.grad is not None and s.grad.abs().sum() > 0
    assert t.grad is None  # the teacher is frozen
    with pytest.raises(ValueError, match="shapes differ"):
        losses.distillation_loss([torch.ones(1, 4, 3, 3)], [torch.ones(1, 4, 3, 4)])


def test_distillation_gradcheck() -> None:
    s = _rand(2, 4, 3, 3, seed=7, dtype=torch.float64).requires_grad_()
    t = _rand(2, 4, 3, 3, seed=8, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda x: losses.distillation_loss([x], [t]), (s,))


# -- bank judges and memory terms ----------------------------------------------------------------


def test_ssim_and_gmsd_judge_similarity() -> None:
    a = _rand(2, 1, 24, 24, seed=9)
    noisy = (a + 0.3 * _rand(2, 1, 24, 24, seed=10)).clamp(0, 1)
    assert losses.ssim_per_sample(a, a).tolist() == pytest.approx([1.0, 1.0], abs=1e-5)
    assert (losses.ssim_per_sample(a, noisy) < 0.99).all()
    assert losses.gmsd_per_sample(a, a).tolist() == pytest.approx([0.0, 0.0], abs=1e-6)
    assert (losses.gmsd_per_sample(a, noisy) > 0.01).all()
    ssim, gmsd = losses.fusion_scores(a, a, a)
    assert ssim.shape == gmsd.shape == (2,)
    assert ssim.tolist() == pytest.approx([2.0, 2.0], abs=1e-5)


def test_memory_terms_vanish_at_the_history_and_weight_by_gap() -> None:
    out = _rand(3, 1, 8, 8, seed=11).requires_grad_()
    hist = _rand(3, 1, 8, 8, seed=12)
    feats_out = EdgePyramid()(out)
    feats_hist = EdgePyramid()(hist)
    assert losses.memory_ssim_terms(hist, hist, feats_hist[3:], feats_hist[3:]).abs().max() == 0
    per = losses.memory_ssim_terms(out, hist, feats_out[3:], feats_hist[3:])
    per_g = losses.memory_gmsd_terms(out, hist, feats_out[:3], feats_hist[:3])
    assert per.shape == per_g.shape == (3,) and (per > 0).all() and (per_g > 0).all()
    # one gap for the whole batch reproduces the published batch weighting 10 * g * mean(...)
    same = losses.weighted_memory(per, torch.full((3,), 0.2), 3)
    assert same.item() == pytest.approx(10 * 0.2 * per.mean().item(), rel=1e-6)
    same.backward()
    assert out.grad.abs().sum() > 0
    # pixel parts only when there is no perceptual network
    assert losses.memory_ssim_terms(out, hist, [], []).tolist() == pytest.approx(
        (out - hist).abs().flatten(1).mean(1).tolist())


# -- the history bank ----------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float16", "uint8"])
def test_bank_fills_refreshes_and_penalises(tmp_path, dtype: str) -> None:
    bank = HistoryBank(tmp_path / "bank", n=4, height=5, width=5, dtype=dtype)
    idx = np.array([2, 0])
    first = bank.decide("ssim", idx, np.array([1.0, 1.0]))
    assert first.fill.all() and not first.refresh.any() and not first.penalise.any()
    images = np.stack([np.full((5, 5), 0.25), np.full((5, 5), 0.75)]).astype(np.float32)
    bank.store("ssim", idx, images, np.array([1.0, 1.2]))
    assert bank.images("ssim", np.array([0, 2]))[:, 0, 0].tolist() == pytest.approx(
        [0.75, 0.25], abs=1 / 255)
    # SSIM: higher is better -> patch 2 improves (refresh), patch 0 gets worse by 0.2 (penalise)
    d = bank.decide("ssim", idx, np.array([1.5, 1.0]))
    assert d.refresh.tolist() == [True, False] and d.penalise.tolist() == [False, True]
    assert d.gap.tolist() == pytest.approx([0.0, 0.2])
    # GMSD: lower is better
    bank.store("gmsd", idx, images, np.array([0.3, 0.3]))
    g = bank.decide("gmsd", idx, np.array([0.1, 0.4]))
    assert g.refresh.tolist() == [True, False] and g.gap.tolist() == pytest.approx([0.0, 0.1])
    # an equal score neither refreshes nor penalises
    e = bank.decide("gmsd", idx, np.array([0.3, 0.3]))
    assert not e.refresh.any() and not e.penalise.any()
    assert bank.filled() == 2


def test_bank_snapshot_restore_and_memory_statement(tmp_path) -> None:
    bank = HistoryBank(tmp_path / "bank", n=3, height=4, width=4)
    bank.store("ssim", np.array([1]), np.ones((1, 4, 4), np.float32), np.array([1.7]))
    bank.snapshot(tmp_path / "snap")
    bank.store("ssim", np.array([1]), np.zeros((1, 4, 4), np.float32), np.array([1.9]))
    restored = HistoryBank.restore(tmp_path / "snap", tmp_path / "bank2", 3, 4, 4, "float16")
    assert restored.scores("ssim", np.array([1])).tolist() == [1.7]
    assert restored.images("ssim", np.array([1])).max() == 1.0
    assert restored.nbytes == 3 * 4 * 4 * 2 * 2
    # 16,000 patches of 128x128, two banks: float64 4.19 GB, float16 1.05 GB, uint8 0.52 GB
    assert bank_nbytes(16000, 128, 128, "float64") == pytest.approx(4.194e9, rel=1e-3)
    assert bank_nbytes(16000, 128, 128, "float16") * 4 == bank_nbytes(16000, 128, 128, "float64")
    assert "4.19 GB" in memory_statement() and "0.52 GB" in memory_statement()
    with pytest.raises(ValueError, match="dtype"):
        HistoryBank(tmp_path / "bad", 1, 1, 1, dtype="float64")


# -- feature networks ----------------------------------------------------------------------------


def test_fallback_features_are_a_cheap_five_stage_pyramid() -> None:
    x = _rand(2, 1, 32, 48, seed=13).requires_grad_()
    feats = EdgePyramid()(x)
    assert [tuple(f.shape) for f in feats] == [(2, 9, 32 // s, 48 // s) for s in (1, 2, 4, 8, 16)]
    assert all((f >= 0).all() for f in feats)
    sum(f.sum() for f in feats).backward()
    assert x.grad.abs().sum() > 0
    flat = EdgePyramid()(torch.full((1, 1, 16, 16), 0.5))
    assert flat[0][0, 1:].abs().max() == 0  # no edges in a flat image, only the mean channel


def test_vgg19_loads_torchvision_layout_and_rejects_others(tmp_path) -> None:
    donor = VGG19Features()
    torch.manual_seed(0)
    for p in donor.parameters():
        p.data.normal_(0, 0.01)
    state = {f"features.{k}": v for k, v in donor.features.state_dict().items()}
    state["classifier.0.weight"] = torch.zeros(2, 2)  # torchvision files carry a classifier
    good = tmp_path / "vgg19.pth"
    torch.save(state, good)
    net = build_feature_net("auto", good)
    assert net.kind == "vgg19" and str(good) in net.description
    feats = net(_rand(1, 1, 32, 32, seed=14))
    assert [f.shape[1] for f in feats] == [64, 128, 256, 512, 512]
    assert [f.shape[-1] for f in feats] == [32, 16, 8, 4, 2]
    assert torch.equal(net.features[0].weight, donor.features[0].weight)

    bad = dict(state)
    bad["features.0.weight"] = torch.zeros(64, 1, 3, 3)
    torch.save(bad, tmp_path / "bad.pth")
    with pytest.raises(PerceptualError, match="shape"):
        build_feature_net("vgg19", tmp_path / "bad.pth")
    torch.save({"conv.weight": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(PerceptualError, match="not a torchvision VGG19"):
        build_feature_net("vgg19", tmp_path / "other.pth")
    with pytest.raises(PerceptualError, match="needs --vgg-weights"):
        build_feature_net("vgg19", None)
    with pytest.raises(PerceptualError, match="not found"):
        build_feature_net("vgg19", tmp_path / "missing.pth")


def test_auto_without_weights_is_the_fallback_and_says_so(caplog) -> None:
    with caplog.at_level("WARNING", logger="mmdrfuse_ros.training"):
        net = build_feature_net("auto", None)
    assert net.kind == "fallback"
    assert "NOT IMAGENET VGG19" in caplog.text
    assert build_feature_net("none").stages(torch.zeros(1, 1, 8, 8)) == []
