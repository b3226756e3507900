"""Fusion metrics: hand-computed values, identities, symmetry, invariances, degenerate inputs, and
agreement with numbers the reference evaluators produced (test/data/metrics_reference.json)."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pytest

from mmdrfuse_ros.datasets import read_grey
from mmdrfuse_ros.metrics import fusion as M

REFERENCE = Path(__file__).parent / "data" / "metrics_reference.json"
ROADSCENE = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "roadscene"


# ------------------------------------------------------------------------------------------------
# the deterministic test images (the recipe docs/METRICS.md and the fixture refer to)


def synthetic_triple(seed: int, height: int, width: int, fused_kind: str):
    """Deterministic uint8 (ir, vis, fused) test images from numpy's PCG64 uniform stream only."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    ph = rng.random(4) * 2 * np.pi
    cy, cx = rng.random(2) * [height, width]
    blob = np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * (0.15 * min(height, width)) ** 2))
    ir = 70 + 40 * np.sin(x / 9 + ph[0]) * np.cos(y / 13 + ph[1]) + 120 * blob
    ir += 12 * rng.random((height, width))
    vis = 30 + 150 * (x / width) + 50 * np.sin((x + y) / 5 + ph[2])
    r0, c0 = int(height * 0.2), int(width * 0.55)
    vis[r0 : r0 + height // 3, c0 : c0 + width // 4] = 235  # a flat, saturated patch
    vis += 20 * rng.random((height, width)) * (np.sin(y / 7 + ph[3]) > 0)
    ir = np.clip(np.rint(ir), 0, 255)
    vis = np.clip(np.rint(vis), 0, 255)
    if fused_kind == "mean":
        fused = (ir + vis) / 2
    elif fused_kind == "max":
        fused = np.maximum(ir, vis)
    elif fused_kind == "weighted":
        fused = 0.7 * ir + 0.3 * vis
    elif fused_kind == "noisy":
        fused = (ir + vis) / 2 + 40 * (rng.random((height, width)) - 0.5)
    else:
        raise ValueError(fused_kind)
    fused = np.clip(np.rint(fused), 0, 255)
    return ir.astype(np.uint8), vis.astype(np.uint8), fused.astype(np.uint8)


def _sha16(img: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(img.astype(np.uint8)).tobytes()).hexdigest()[:16]


@pytest.fixture(scope="module")
def triple():
    return synthetic_triple(7, 64, 80, "noisy")


# ------------------------------------------------------------------------------------------------
# agreement with the reference evaluators


def _cases(group: str) -> list:
    doc = json.loads(REFERENCE.read_text())
    return [
        pytest.param(c, marks=pytest.mark.shared_data) if c["source"] == "roadscene" else c
        for c in doc["cases"]
        if group in c
    ]


def _case_id(c: dict) -> str:
    return c.get("name") or f"seed{c['seed']}-{c['height']}x{c['width']}-{c['fused']}"


def _images(case: dict):
    if case["source"] == "synthetic":
        ir, vis, fused = synthetic_triple(
            case["seed"], case["height"], case["width"], case["fused"]
        )
    else:
        if not (ROADSCENE / "ir" / case["name"]).is_file():
            pytest.skip(f"RoadScene pair {case['name']} not found under {ROADSCENE}")
        ir = read_grey(ROADSCENE / "ir" / case["name"])
        vis = read_grey(ROADSCENE / "vi" / case["name"])
        fused = np.round((ir + vis) / 2)
    assert [_sha16(x) for x in (ir, vis, fused)] == case["sha256_16"], "test images changed"
    return ir, vis, fused


def _check(case: dict, group: str) -> None:
    ir, vis, fused = _images(case)
    ref = case[group]
    mine = M.compute_metrics(ir, vis, fused, list(ref))
    for name, value in ref.items():
        assert mine[name] == pytest.approx(value, rel=1e-3, abs=1e-9), name


@pytest.mark.parametrize("case", _cases("cddfuse_evaluator"), ids=_case_id)
def test_agrees_with_cddfuse_evaluator(case):
    """EN SD SF AG MI SCD VIF Qabf SSIM CC PSNR MSE as MMIF-CDDFuse's utils/Evaluator.py gave."""
    _check(case, "cddfuse_evaluator")


@pytest.mark.parametrize("case", _cases("matlab_toolkit"), ids=_case_id)
def test_agrees_with_matlab_toolkit(case):
    """Nabf, MS-SSIM, FMI as the IVIF MATLAB toolkit's functions gave (run in GNU Octave)."""
    _check(case, "matlab_toolkit")


def test_fixture_covers_every_metric():
    covered = set()
    for c in json.loads(REFERENCE.read_text())["cases"]:
        covered |= set(c.get("cddfuse_evaluator", {})) | set(c.get("matlab_toolkit", {}))
    assert covered == set(M.ALL_METRICS)


# ------------------------------------------------------------------------------------------------
# hand-computed values on tiny arrays


def test_en_hand():
    assert M.en(np.array([[0, 0], [255, 255]])) == pytest.approx(1.0)
    assert M.en(np.array([[0, 1], [2, 3]])) == pytest.approx(2.0)
    assert M.en(np.full((3, 3), 9.0)) == 0.0
    assert M.en(np.array([[0.4, 0.6]])) == pytest.approx(1.0)  # rounded to 0 and 1


def test_sd_sf_ag_hand():
    img = np.array([[0.0, 2.0], [0.0, 2.0]])
    assert M.sd(img) == pytest.approx(1.0)
    # forward differences: dx = 2 everywhere, dy = 0 -> sqrt(4 + 0)
    assert M.sf(img) == pytest.approx(2.0)
    # np.gradient: one-sided at the borders -> Gx = 2, Gy = 0 -> sqrt(4 / 2)
    assert M.ag(img) == pytest.approx(math.sqrt(2.0))
    ramp = np.array([[0.0, 1.0, 4.0]])
    ramp = np.vstack([ramp, ramp])
    # Gx = [1, 2, 3] (one-sided, central, one-sided), Gy = 0
    assert M.ag(ramp) == pytest.approx(np.mean(np.array([1, 2, 3]) / math.sqrt(2)))


def test_mi_hand():
    a = np.array([[0, 0], [1, 1]], dtype=float)
    b = np.array([[0, 1], [0, 1]], dtype=float)
    assert M.mutual_information(a, a) == pytest.approx(math.log(2))  # nats
    assert M.mutual_information(a, b) == pytest.approx(0.0, abs=1e-12)
    assert M.mi(a, b, a) == pytest.approx(math.log(2))


def test_cc_scd_hand():
    ir = np.array([[1.0, 2.0], [3.0, 4.0]])
    vis = np.array([[4.0, 1.0], [3.0, 0.0]])
    fused = ir + vis
    # F - VIS = IR and F - IR = VIS: both correlations of differences are 1
    assert M.scd(ir, vis, fused) == pytest.approx(2.0)
    assert M.cc(ir, -ir, ir) == pytest.approx(0.0)  # r = 1 and r = -1
    r = np.corrcoef(vis.ravel(), fused.ravel())[0, 1]
    assert M.cc(ir, vis, fused) == pytest.approx(
        (np.corrcoef(ir.ravel(), fused.ravel())[0, 1] + r) / 2
    )


def test_mse_psnr_hand():
    ir, vis, fused = np.zeros((2, 2)), np.full((2, 2), 10.0), np.full((2, 2), 10.0)
    assert M.mse(ir, vis, fused) == pytest.approx(50.0)  # (100 + 0) / 2
    assert M.psnr(ir, vis, fused) == pytest.approx(10 * math.log10(100 / 50))  # peak = max(F)


def test_vif_hand():
    # 17x17: only one valid pixel at the finest scale and nothing at the coarser ones
    rng = np.random.default_rng(3)
    ref = rng.integers(0, 256, (17, 17)).astype(float)
    g = np.exp(-((np.arange(17) - 8.0) ** 2) / (2 * 3.4**2))
    w = np.outer(g, g) / np.outer(g, g).sum()
    var = np.sum(w * ref * ref) - np.sum(w * ref) ** 2
    dist = 2.0 * ref + 5.0  # gain 2, no noise: sv^2 = 0 -> eps
    expected = math.log10(1 + 4 * var / (1e-10 + 2)) / math.log10(1 + var / 2)
    assert M.vif_pair(ref, dist) == pytest.approx(expected, rel=1e-9)
    assert M.vif_pair(ref, ref) == pytest.approx(1.0, rel=1e-9)


def test_qabf_hand_step_edge():
    img = np.zeros((8, 8))
    img[:, 4:] = 100.0
    # every non-zero edge strength equals itself in F: ratio quirk -> g_F (>> 0.5) -> Tg; same angle
    expected = 0.9994 * 0.9879 / (1 + math.exp(-22 * (1.0 - 0.8)))
    assert M.qabf(img, img, img) == pytest.approx(expected, rel=1e-9)


def test_nabf_hand_amplified_edge():
    img = np.zeros((8, 8))
    img[:, 4:] = 80.0  # Sobel/8 strength 40 on both sides of the step, 0 elsewhere
    fused = 2 * img  # stronger edges than both sources everywhere there is an edge
    q = math.sqrt(0.9999 / (1 + math.exp(0.0)) * 0.9995 / (1 + math.exp(-22 * 0.5)))
    n_edge = 2 * 8
    w_edge = 2 * n_edge * 40.0**1.5  # w_A + w_B
    w_flat = 2 * 0.001 * (64 - n_edge)
    assert M.nabf(img, img, fused) == pytest.approx((1 - q) * w_edge / (w_edge + w_flat), rel=1e-9)
    assert M.nabf(img, img, img) == 0.0


def test_ssim_hand_constant_images():
    a, b = np.full((9, 9), 100.0), np.full((9, 9), 50.0)
    c1 = (0.01 * 2) ** 2
    assert M.ssim_pair(a, b) == pytest.approx((2 * 100 * 50 + c1) / (100**2 + 50**2 + c1))
    assert M.ssim_pair(a, a) == pytest.approx(1.0)


def _fmi_bruteforce(src: np.ndarray, fus: np.ndarray) -> float:
    """Per-window normalised FMI written out over all 81 cells (independent of the staircase)."""
    vals = []
    h, w = src.shape
    for r in range(h - 2):
        for c in range(w - 2):
            a = src[r : r + 3, c : c + 3].T.ravel()  # MATLAB column order
            f = fus[r : r + 3, c : c + 3].T.ravel()
            if np.array_equal(a, f):
                vals.append(1.0)
                continue
            p = [
                np.ones(9) if v.max() == v.min() else (v - v.min()) / (v.max() - v.min())
                for v in (a, f)
            ]
            pa, pf = p[0] / p[0].sum(), p[1] / p[1].sum()
            ca, cf = np.cumsum(pa), np.cumsum(pf)
            ta, tf = pa - pa.mean(), pf - pf.mean()
            flat = a.max() == a.min() or f.max() == f.min()
            cor = (
                0.0
                if flat or np.sum(ta * tf) == 0
                else np.sum(ta * tf) / np.sqrt(np.sum(ta * ta) * np.sum(tf * tf))
            )
            i = np.arange(1, 10)
            sda = math.sqrt(max(np.sum(i * i * pa) - np.sum(i * pa) ** 2, 0))
            sdf = math.sqrt(max(np.sum(i * i * pf) - np.sum(i * pf) ** 2, 0))
            F, A = cf[:, None], ca[None, :]
            bound = np.minimum(F, A) if cor >= 0 else np.maximum(F + A - 1, 0)
            cov = np.sum(bound - F * A)
            mix = 0.0 if cor == 0 or sda == 0 or sdf == 0 else cor / (cov / (sda * sdf))
            pad = np.pad(bound, ((1, 0), (1, 0)))
            cells = pad[1:, 1:] - pad[:-1, 1:] - pad[1:, :-1] + pad[:-1, :-1]
            joint = mix * cells + (1 - mix) * pf[:, None] * pa[None, :]
            nz = joint != 0
            hj = -np.sum(joint[nz] * np.log2(np.abs(joint[nz])))
            ha = -np.sum(pa[pa > 0] * np.log2(pa[pa > 0]))
            hf = -np.sum(pf[pf > 0] * np.log2(pf[pf > 0]))
            mi = ha + hf - hj
            vals.append(0.0 if mix == 0 or mi == 0 else 2 * mi / (ha + hf))
    return float(np.mean(vals))


def test_fmi_matches_bruteforce_over_all_cells():
    rng = np.random.default_rng(5)
    src = rng.integers(0, 256, (9, 10)).astype(float)
    src[0:4, 0:4] = 17.0  # flat windows
    fus = np.clip(255 - src + rng.integers(-40, 40, src.shape), 0, 255)  # mostly anti-correlated
    fus[5:, 5:] = src[5:, 5:]  # identical windows
    fus2 = np.clip(src + rng.integers(-60, 60, src.shape), 0, 255)
    for f in (fus, fus2):
        expected = (_fmi_bruteforce(src, f) + _fmi_bruteforce(src, f)) / 2
        assert M.fmi(src, src, f) == pytest.approx(expected, rel=1e-5)


def test_fmi_hand_flat_fused():
    src = np.arange(25, dtype=float).reshape(5, 5)
    assert M.fmi(src, src, src) == 1.0
    # a flat fused window is uncorrelated with everything: mixture weight 0 -> MI 0
    assert M.fmi(src, src, np.full((5, 5), 3.0)) == 0.0


# ------------------------------------------------------------------------------------------------
# identities and degenerate inputs


def test_fusing_an_image_with_itself(triple):
    img = triple[0]
    m = M.compute_metrics(img, img, img)
    assert all(not math.isnan(v) for v in m.values())
    assert m["SSIM"] == pytest.approx(2.0)
    assert m["CC"] == pytest.approx(1.0)
    assert m["MSE"] == 0.0 and m["PSNR"] == math.inf
    assert m["VIF"] == pytest.approx(2.0, rel=1e-6)
    assert m["SCD"] == 0.0  # differences are constant: correlations taken as 0
    assert m["Nabf"] == 0.0
    assert m["FMI"] == 1.0
    assert m["MS-SSIM"] == pytest.approx(1.0, abs=1e-4)
    assert m["MI"] == pytest.approx(2 * M.mutual_information(img, img))


def test_fused_equal_to_one_source(triple):
    ir, vis, _ = triple
    m = M.compute_metrics(ir, vis, ir)
    assert all(not math.isnan(v) for v in m.values())
    assert m["SSIM"] == pytest.approx(1.0 + M.ssim_pair(ir, vis))
    assert m["VIF"] == pytest.approx(1.0 + M.vif_pair(vis, ir), rel=1e-6)
    assert m["CC"] == pytest.approx((1.0 + M.correlation(vis, ir)) / 2)
    assert m["MSE"] == pytest.approx(np.mean((ir.astype(float) - vis) ** 2) / 2)
    assert m["SCD"] == pytest.approx(M.correlation(ir, ir.astype(float) - vis))
    assert m["FMI"] == pytest.approx((1.0 + M.fmi(vis, vis, ir)) / 2)


@pytest.mark.parametrize("value", [0.0, 128.0, 255.0])
def test_constant_images_give_defined_values(value):
    c = np.full((48, 48), value)
    m = M.compute_metrics(c, c, c)
    assert all(not math.isnan(v) for v in m.values()), m
    assert m["EN"] == 0 and m["SD"] == 0 and m["SF"] == 0 and m["AG"] == 0
    assert m["VIF"] == 2.0  # no source variance: 0/0 -> 1 per source, as the reference
    other = M.compute_metrics(c, np.full((48, 48), 255.0 - value), c)
    assert all(not math.isnan(v) for v in other.values()), other


def test_qabf_without_source_edges_is_zero():
    z = np.zeros((10, 10))
    assert M.qabf(z, z, np.eye(10) * 50) == 0.0


def test_psnr_black_fused_is_minus_inf():
    assert M.psnr(np.ones((4, 4)), np.ones((4, 4)), np.zeros((4, 4))) == -math.inf


# ------------------------------------------------------------------------------------------------
# symmetry and invariances


def test_swapping_the_sources_changes_nothing(triple):
    ir, vis, fused = triple
    a, b = M.compute_metrics(ir, vis, fused), M.compute_metrics(vis, ir, fused)
    for name in M.ALL_METRICS:
        assert a[name] == pytest.approx(b[name], rel=1e-9, abs=1e-12), name


def test_pairwise_helpers_are_symmetric(triple):
    ir, vis, _ = triple
    assert M.ssim_pair(ir, vis) == pytest.approx(M.ssim_pair(vis, ir), rel=1e-12)
    assert M.mutual_information(ir, vis) == pytest.approx(M.mutual_information(vis, ir), rel=1e-12)
    assert M.correlation(ir, vis) == pytest.approx(M.correlation(vis, ir), rel=1e-12)


def test_rotating_everything_by_180_degrees(triple):
    ir, vis, fused = triple
    names = ["EN", "SD", "SF", "AG", "MI", "SCD", "Qabf", "Nabf", "SSIM", "CC", "PSNR", "MSE"]
    a = M.compute_metrics(ir, vis, fused, names)
    b = M.compute_metrics(ir[::-1, ::-1], vis[::-1, ::-1], fused[::-1, ::-1], names)
    for name in names:
        assert a[name] == pytest.approx(b[name], rel=1e-9), name


def test_pixel_permutation_keeps_histogram_metrics(triple):
    ir, vis, fused = triple
    perm = np.random.default_rng(0).permutation(ir.size)
    shuffled = [x.ravel()[perm].reshape(x.shape) for x in triple]
    for name in ("EN", "SD", "MI", "CC", "MSE", "PSNR", "SCD"):
        a = M.compute_metrics(ir, vis, fused, [name])[name]
        b = M.compute_metrics(*shuffled, [name])[name]
        assert a == pytest.approx(b, rel=1e-9), name


def test_transpose_keeps_sf_and_ag(triple):
    f = triple[2]
    assert M.sf(f.T) == pytest.approx(M.sf(f), rel=1e-12)
    assert M.ag(f.T) == pytest.approx(M.ag(f), rel=1e-12)


def test_cc_ignores_positive_affine_changes(triple):
    ir, vis, fused = (x.astype(float) for x in triple)
    assert M.cc(3 * ir + 7, 0.5 * vis - 2, 2 * fused + 1) == pytest.approx(M.cc(ir, vis, fused))


def test_offset_invariances(triple):
    ir, vis, fused = (x.astype(float) for x in triple)
    assert M.sd(fused + 20) == pytest.approx(M.sd(fused))
    assert M.mse(ir + 20, vis + 20, fused + 20) == pytest.approx(M.mse(ir, vis, fused))
    assert M.vif(ir + 20, vis + 20, fused + 20) == pytest.approx(M.vif(ir, vis, fused), rel=1e-6)


# ------------------------------------------------------------------------------------------------
# the API


def test_compute_metrics_names_order_and_dtypes(triple):
    ir, vis, fused = triple
    m = M.compute_metrics(ir, vis, fused)
    assert tuple(m) == M.ALL_METRICS
    assert set(M.VALIDATION_METRICS) <= set(M.ALL_METRICS)
    sub = M.compute_metrics(ir, vis, fused, ["SSIM", "EN"])
    assert list(sub) == ["SSIM", "EN"]
    as_float = M.compute_metrics(*(x.astype(np.float32) for x in triple), ["SSIM", "EN", "FMI"])
    for name, value in as_float.items():
        assert value == pytest.approx(m[name], rel=1e-12)
    assert M.compute_metrics(ir[..., None], vis, fused, ["EN"]) == {"EN": m["EN"]}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((np.zeros((8, 8)), np.zeros((8, 8)), np.zeros((8, 9))), "one size"),
        ((np.zeros((8, 8, 3)), np.zeros((8, 8)), np.zeros((8, 8))), "grey"),
        ((np.full((8, 8), np.nan), np.zeros((8, 8)), np.zeros((8, 8))), "NaN"),
    ],
)
def test_bad_input_is_a_clear_error(args, message):
    with pytest.raises(ValueError, match=message):
        M.compute_metrics(*args)


def test_unknown_names_and_small_images_are_clear_errors():
    z = np.zeros((20, 20))
    with pytest.raises(ValueError, match="unknown metric"):
        M.compute_metrics(z, z, z, ["SSIMM"])
    with pytest.raises(ValueError, match="MS-SSIM needs images of at least 44x44"):
        M.compute_metrics(z, z, z, ["MS-SSIM"])
    with pytest.raises(ValueError, match="SSIM needs images of at least 7x7"):
        M.ssim(np.zeros((5, 5)), np.zeros((5, 5)), np.zeros((5, 5)))
