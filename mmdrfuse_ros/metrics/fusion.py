"""Infrared-visible fusion quality metrics, computed the way the field's reference evaluator does.

Conventions (why: numbers only compare with published ones when computed the same way):

* Inputs are grey images on the 0..255 scale (float or integer arrays; uint8 is accepted and
  converted). ``ir``/``vis`` are the sources, ``fused`` the result; all three have one shape.
* The reference is ``utils/Evaluator.py`` of the public repository Zhaozixiang1228/MMIF-CDDFuse
  (MMDRFuse's evaluator is a trimmed copy of it). For every metric it has (EN, SD, SF, AG, MI, MSE,
  CC, PSNR, SCD, VIF, Qabf, SSIM) this module reproduces its formulas, constants, border handling
  and the way two sources are combined (SSIM, VIF, MI, SCD: sum; CC, MSE: mean). Agreement to
  1e-3 relative is checked by ``test/test_metrics_fusion.py`` against numbers that evaluator
  produced (``test/data/metrics_reference.json``; see ``docs/METRICS.md`` for how).
* Its SSIM calls scikit-image without ``data_range`` on float images; scikit-image 0.19 (the version
  pinned by those papers) then used the float dtype range -1..1, i.e. ``data_range=2``. We do the
  same. The evaluator always feeds float32 images read from 8-bit files; scikit-image >= 0.19 then
  filters in float32. We filter in float64; the difference is far below 1e-3 (measured, see docs).
* Nabf, MS-SSIM and FMI are not in that evaluator; they follow the MATLAB toolkit whose metric list
  the field copies (Linfeng-Tang/Evaluation-for-Image-Fusion), with the choices documented in each
  docstring.
* Degenerate inputs (constant images, fused == source) never give NaN: each docstring says which
  defined value is returned where the reference would divide 0 by 0.

Everything is vectorised numpy + OpenCV (no SciPy, no scikit-image at run time); the full set for a
640x480 triple takes well under a second on one core (``benchmarks/bench_metrics.py``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import cv2
import numpy as np

__all__ = [
    "ALL_METRICS",
    "HIGHER_IS_BETTER",
    "METRIC_FUNCTIONS",
    "VALIDATION_METRICS",
    "ag",
    "as_grey",
    "cc",
    "compute_metrics",
    "correlation",
    "en",
    "fmi",
    "mi",
    "ms_ssim",
    "mse",
    "mutual_information",
    "nabf",
    "psnr",
    "qabf",
    "scd",
    "sd",
    "sf",
    "ssim",
    "ssim_pair",
    "vif",
    "vif_pair",
]

#: every metric, spelled as in the issue and in the JSON/CSV outputs.
ALL_METRICS: tuple[str, ...] = (
    "EN", "SD", "SF", "AG", "MI", "SCD", "VIF", "Qabf", "Nabf",
    "SSIM", "MS-SSIM", "CC", "PSNR", "MSE", "FMI",
)  # fmt: skip

#: the eight columns MMDRFuse/CDDFuse report (and training validates on).
VALIDATION_METRICS: tuple[str, ...] = ("EN", "SD", "SF", "MI", "SCD", "VIF", "Qabf", "SSIM")

#: which way is better, for tables and model selection.
HIGHER_IS_BETTER: dict[str, bool] = {name: name not in ("Nabf", "MSE") for name in ALL_METRICS}

_F64 = np.float64


# --------------------------------------------------------------------------------------------
# input handling


def as_grey(image: np.ndarray, name: str = "image") -> np.ndarray:
    """Return ``image`` as a 2-D float64 array, or raise ValueError saying what is wrong.

    Accepts HxW or HxWx1 arrays of any real dtype (uint8, uint16, float...). Colour images are
    refused rather than silently converted: the evaluator's grey conversion belongs to image
    *reading* (see :func:`mmdrfuse_ros.metrics.cli.read_grey`).
    """
    arr = np.asarray(image)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a grey HxW image, got shape {arr.shape}")
    if arr.dtype.kind not in "uif" or arr.dtype == np.bool_:
        raise ValueError(f"{name} must be a real-valued array, got dtype {arr.dtype}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty")
    out = arr.astype(_F64, copy=False)
    if not np.isfinite(out).all():
        raise ValueError(f"{name} contains NaN or infinity")
    return out


def _triple(ir, vis, fused) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    a, b, f = as_grey(ir, "ir"), as_grey(vis, "vis"), as_grey(fused, "fused")
    if not (a.shape == b.shape == f.shape):
        raise ValueError(
            f"ir, vis and fused must have one size, got {a.shape}, {b.shape} and {f.shape}"
        )
    return a, b, f


def _need(img: np.ndarray, min_side: int, metric: str) -> None:
    if min(img.shape) < min_side:
        raise ValueError(
            f"{metric} needs images of at least {min_side}x{min_side}, got {img.shape}"
        )


def _filter_valid(img: np.ndarray, k1d: np.ndarray) -> np.ndarray:
    """Separable correlation with a symmetric 1-D kernel, 'valid' region only (no border)."""
    r = len(k1d) // 2
    h, w = img.shape
    if h < len(k1d) or w < len(k1d):
        return np.zeros((max(h - 2 * r, 0), max(w - 2 * r, 0)))
    full = cv2.sepFilter2D(img, cv2.CV_64F, k1d, k1d, borderType=cv2.BORDER_CONSTANT)
    return full[r : h - r, r : w - r]


def _gauss1d(size: int, sigma: float) -> np.ndarray:
    """1-D factor of MATLAB's ``fspecial('gaussian', size, sigma)`` (which is separable)."""
    x = np.arange(size, dtype=_F64) - (size - 1) / 2.0
    g = np.exp(-(x * x) / (2.0 * sigma * sigma))
    return g / g.sum()


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    xc = x - x.mean()
    yc = y - y.mean()
    den = math.sqrt(float(np.sum(xc * xc)) * float(np.sum(yc * yc)))
    return float(np.sum(xc * yc)) / den if den > 0 else 0.0


# --------------------------------------------------------------------------------------------
# single-image metrics


def en(fused: np.ndarray) -> float:
    """Entropy EN = -sum_l p_l log2 p_l over the 256 grey levels, in bits. Range 0..8; higher is
    better (more information). As the reference, values are rounded to integers first (clipped to
    0..255 here; the reference's uint8 cast would wrap out-of-range values)."""
    f = as_grey(fused, "fused")
    levels = np.clip(np.rint(f), 0, 255).astype(np.intp).ravel()
    p = np.bincount(levels, minlength=256) / levels.size
    p = p[p > 0]
    return float(-np.sum(p * np.log2(p)))


def sd(fused: np.ndarray) -> float:
    """Standard deviation SD = sqrt(mean((F - mean F)^2)) (population form, as ``np.std``).
    Range 0..127.5; higher is better (contrast)."""
    return float(np.std(as_grey(fused, "fused")))


def sf(fused: np.ndarray) -> float:
    """Spatial frequency SF = sqrt(mean(dF/dx^2) + mean(dF/dy^2)) with forward differences, each
    mean over its own (H x W-1 or H-1 x W) difference image. Higher is better (detail).
    Needs 2x2."""
    f = as_grey(fused, "fused")
    _need(f, 2, "SF")
    dx = np.diff(f, axis=1)
    dy = np.diff(f, axis=0)
    return float(math.sqrt(np.mean(dx * dx) + np.mean(dy * dy)))


def ag(fused: np.ndarray) -> float:
    """Average gradient AG = mean(sqrt((Gx^2 + Gy^2) / 2)), with central differences inside and
    one-sided differences on the border (``np.gradient``; the reference's choice, which also
    averages over all H x W pixels). Higher is better (sharpness). Needs 2x2."""
    f = as_grey(fused, "fused")
    _need(f, 2, "AG")
    gy, gx = np.gradient(f)
    return float(np.mean(np.sqrt((gx * gx + gy * gy) / 2.0)))


# --------------------------------------------------------------------------------------------
# pairwise helpers


def mutual_information(a: np.ndarray, b: np.ndarray) -> float:
    """MI(a; b) = H(a) + H(b) - H(a, b) in **nats** (natural log, as scikit-learn's
    ``mutual_info_score`` that the reference calls), on the joint histogram of integer grey levels.

    The reference uses each distinct pixel value as a label; for the integer-valued images it reads
    from disk that is the same as a 256-level histogram. Non-integer inputs are rounded first here
    (as saving them to an 8-bit file would); raw float labels would make MI meaningless.
    """
    x = np.rint(as_grey(a, "a")).astype(np.int64).ravel()
    y = np.rint(as_grey(b, "b")).astype(np.int64).ravel()
    if x.shape != y.shape:
        raise ValueError(f"MI needs two images of one size, got {np.shape(a)} and {np.shape(b)}")
    x -= x.min()
    y -= y.min()
    ny = int(y.max()) + 1
    joint = np.bincount(x * ny + y).astype(_F64)
    n = float(x.size)

    def _h(counts: np.ndarray) -> float:
        c = counts[counts > 0]
        return float(math.log(n) - np.sum(c * np.log(c)) / n)

    return _h(np.bincount(x).astype(_F64)) + _h(np.bincount(y).astype(_F64)) - _h(joint)


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two images; 0.0 (not NaN) when either is constant."""
    return _pearson(as_grey(a, "a"), as_grey(b, "b"))


# --------------------------------------------------------------------------------------------
# two-source metrics


def mi(ir: np.ndarray, vis: np.ndarray, fused: np.ndarray) -> float:
    """Mutual information MI = MI(F; IR) + MI(F; VIS), in nats (see :func:`mutual_information`).
    Range 0..2 ln 256; higher is better."""
    a, b, f = _triple(ir, vis, fused)
    return mutual_information(f, a) + mutual_information(f, b)


def cc(ir: np.ndarray, vis: np.ndarray, fused: np.ndarray) -> float:
    """Correlation coefficient CC = (r(IR, F) + r(VIS, F)) / 2 (Pearson r). Range -1..1; higher is
    better. A constant image has no defined correlation: its r is taken as 0."""
    a, b, f = _triple(ir, vis, fused)
    return (_pearson(a, f) + _pearson(b, f)) / 2.0


def scd(ir: np.ndarray, vis: np.ndarray, fused: np.ndarray) -> float:
    """Sum of the correlations of differences SCD = r(IR, F - VIS) + r(VIS, F - IR). Range -2..2;
    higher is better. Where a difference image is constant (e.g. F equal to one source) the
    reference gives NaN; that correlation is taken as 0 here."""
    a, b, f = _triple(ir, vis, fused)
    return _pearson(a, f - b) + _pearson(b, f - a)


def mse(ir: np.ndarray, vis: np.ndarray, fused: np.ndarray) -> float:
    """Mean squared error MSE = (mean((IR-F)^2) + mean((VIS-F)^2)) / 2 on the 0..255 scale (the
    reference's scale; the MATLAB toolkit divides by 255^2 first). Lower is better."""
    a, b, f = _triple(ir, vis, fused)
    return float((np.mean((a - f) ** 2) + np.mean((b - f) ** 2)) / 2.0)


def psnr(ir: np.ndarray, vis: np.ndarray, fused: np.ndarray) -> float:
    """PSNR = 10 log10(max(F)^2 / MSE), with the *fused image's maximum* as peak (the reference's
    choice, not 255) and MSE as :func:`mse`. Higher is better. +inf when MSE is 0 (all three
    identical); -inf when F is all zero but differs from a source."""
    a, b, f = _triple(ir, vis, fused)
    err = float((np.mean((a - f) ** 2) + np.mean((b - f) ** 2)) / 2.0)
    if err == 0.0:
        return math.inf
    peak = float(np.max(f))
    if peak == 0.0:
        return -math.inf
    return 10.0 * math.log10(peak * peak / err)


# --------------------------------------------------------------------------------------------
# VIF (pixel-domain, four scales)

_VIF_SIGMA_NSQ = 2.0
_VIF_EPS = 1e-10


def _vif_terms(ref: np.ndarray, dist: np.ndarray) -> tuple[float, float]:
    num = den = 0.0
    for scale in range(1, 5):
        n = 2 ** (4 - scale + 1) + 1
        k = _gauss1d(n, n / 5.0)
        if scale > 1:
            ref = _filter_valid(ref, k)[::2, ::2]
            dist = _filter_valid(dist, k)[::2, ::2]
        mu1 = _filter_valid(ref, k)
        if mu1.size == 0:
            break  # image too small for this scale: it and the coarser ones add nothing
        mu2 = _filter_valid(dist, k)
        s1 = _filter_valid(ref * ref, k) - mu1 * mu1
        s2 = _filter_valid(dist * dist, k) - mu2 * mu2
        s12 = _filter_valid(ref * dist, k) - mu1 * mu2
        # the reference's clean-up, in its order
        s1 = np.maximum(s1, 0.0)
        s2 = np.maximum(s2, 0.0)
        g = s12 / (s1 + _VIF_EPS)
        sv = s2 - g * s12
        low1 = s1 < _VIF_EPS
        g = np.where(low1, 0.0, g)
        sv = np.where(low1, s2, sv)
        s1 = np.where(low1, 0.0, s1)
        low2 = s2 < _VIF_EPS
        g = np.where(low2, 0.0, g)
        sv = np.where(low2, 0.0, sv)
        neg = g < 0
        sv = np.where(neg, s2, sv)
        g = np.where(neg, 0.0, g)
        sv = np.maximum(sv, _VIF_EPS)
        num += float(np.sum(np.log10(1.0 + g * g * s1 / (sv + _VIF_SIGMA_NSQ))))
        den += float(np.sum(np.log10(1.0 + s1 / _VIF_SIGMA_NSQ)))
    return num, den


def vif_pair(ref: np.ndarray, dist: np.ndarray) -> float:
    """Pixel-domain visual information fidelity of ``dist`` w.r.t. ``ref`` (Sheikh & Bovik VIFp):
    four scales with Gaussian windows of 17, 9, 5, 3 taps (sigma = N/5), 'valid' filtering and 2x
    decimation, noise variance 2. Scales that do not fit a small image contribute nothing. Returns
    1.0 when ``ref`` has no variance anywhere (0/0; the reference's NaN -> 1 rule)."""
    r = as_grey(ref, "ref")
    d = as_grey(dist, "dist")
    if r.shape != d.shape:
        raise ValueError(f"VIF needs two images of one size, got {r.shape} and {d.shape}")
    num, den = _vif_terms(r, d)
    return num / den if den > 0 else 1.0


def vif(ir: np.ndarray, vis: np.ndarray, fused: np.ndarray) -> float:
    """VIF = VIFp(IR -> F) + VIFp(VIS -> F) (sum over the sources, as the reference). Each term is
    ~0..1 for a degraded image (1 when F equals the source; it exceeds 1 when F has more contrast);
    higher is better."""
    a, b, f = _triple(ir, vis, fused)
    return vif_pair(a, f) + vif_pair(b, f)


# --------------------------------------------------------------------------------------------
# Qabf (Xydeas & Petrovic) and Nabf (Kumar's modified fusion artefacts)

# kernels the reference passes to a true (flipping) 2-D convolution, flipped here for cv2's
# correlation: rot180([[-1,0,1],[-2,0,2],[-1,0,1]]) and rot180([[1,2,1],[0,0,0],[-1,-2,-1]]).
_QABF_KX = np.array([[1, 0, -1], [2, 0, -2], [1, 0, -1]], dtype=_F64)
_QABF_KY = np.array([[-1, -2, -1], [0, 0, 0], [1, 2, 1]], dtype=_F64)


def _qabf_edges(img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    # 'same' size with zero padding, as scipy's convolve2d(mode='same')
    sx = cv2.filter2D(img, cv2.CV_64F, _QABF_KX, borderType=cv2.BORDER_CONSTANT)
    sy = cv2.filter2D(img, cv2.CV_64F, _QABF_KY, borderType=cv2.BORDER_CONSTANT)
    g = np.sqrt(sx * sx + sy * sy)
    with np.errstate(divide="ignore", invalid="ignore"):
        ang = np.where(sx == 0, math.pi / 2, np.arctan(sy / np.where(sx == 0, 1.0, sx)))
    return g, ang


def _qabf_preservation(g_s, a_s, g_f, a_f) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(
            g_s > g_f,
            g_f / np.where(g_s > g_f, g_s, 1.0),
            # equal strengths give g_f itself: the reference's quirk, kept for agreement
            np.where(g_s == g_f, g_f, g_s / np.where(g_f > 0, g_f, 1.0)),
        )
    align = 1.0 - np.abs(a_s - a_f) / (math.pi / 2)
    qg = 0.9994 / (1.0 + np.exp(-15.0 * (ratio - 0.5)))
    qa = 0.9879 / (1.0 + np.exp(-22.0 * (align - 0.8)))
    return qg * qa


def qabf(ir: np.ndarray, vis: np.ndarray, fused: np.ndarray) -> float:
    """Edge-information transfer Q^AB/F (Xydeas & Petrovic 2000):
    sum(Q^AF g_A + Q^BF g_B) / sum(g_A + g_B), where g, alpha are Sobel strength and orientation
    (zero-padded 'same' convolution; alpha = pi/2 where the x-gradient is 0) and Q^SF is the product
    of two sigmoids (Tg=0.9994, kg=-15, Dg=0.5; Ta=0.9879, ka=-22, Da=0.8) of the strength ratio and
    orientation agreement. Range 0..1; higher is better.

    Kept from the reference: where g_S == g_F the "ratio" is g_F itself (so equal non-zero edges
    count as fully preserved and equal zero edges as not). Where no source has any edge the
    reference divides 0 by 0; 0.0 is returned (nothing to transfer).
    """
    a, b, f = _triple(ir, vis, fused)
    ga, aa = _qabf_edges(a)
    gb, ab = _qabf_edges(b)
    gf, af = _qabf_edges(f)
    den = float(np.sum(ga + gb))
    if den == 0.0:
        return 0.0
    qaf = _qabf_preservation(ga, aa, gf, af)
    qbf = _qabf_preservation(gb, ab, gf, af)
    return float(np.sum(qaf * ga + qbf * gb)) / den


_NABF_KV = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], dtype=_F64) / 8.0
_NABF_KH = np.array([[-1, -2, -1], [0, 0, 0], [1, 2, 1]], dtype=_F64) / 8.0


def _nabf_edges(img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    # correlation with mirror padding that does not repeat the edge pixel (BORDER_REFLECT_101)
    gv = cv2.filter2D(img, cv2.CV_64F, _NABF_KV, borderType=cv2.BORDER_REFLECT_101)
    gh = cv2.filter2D(img, cv2.CV_64F, _NABF_KH, borderType=cv2.BORDER_REFLECT_101)
    g = np.sqrt(gh * gh + gv * gv)
    with np.errstate(divide="ignore", invalid="ignore"):
        ang = np.arctan(gv / gh)  # +-inf -> +-pi/2 where only gh is 0
    ang = np.where((gv == 0) & (gh == 0), 0.0, ang)
    return g, ang


def _nabf_preservation(g_s, a_s, g_f, a_f) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(
            (g_s == 0) | (g_f == 0),
            0.0,
            np.where(g_s > g_f, g_f / g_s, g_s / g_f),
        )
    align = np.abs(np.abs(a_s - a_f) - math.pi / 2) * 2.0 / math.pi
    qg = 0.9999 / (1.0 + np.exp(-19.0 * (ratio - 0.5)))
    qa = 0.9995 / (1.0 + np.exp(-22.0 * (align - 0.5)))
    return np.sqrt(qg * qa)


def nabf(ir: np.ndarray, vis: np.ndarray, fused: np.ndarray) -> float:
    """Modified fusion-artefact measure N^AB/F (Shreyamsha Kumar 2013, the "NABF" of Petrovic's
    framework as in the MATLAB toolkit ``analysis_nabf.m``): the share of edge weight where the
    fused edge is stronger than *both* source edges, weighted by the loss of preservation:
    sum(n * ((1 - Q^AF) w_A + (1 - Q^BF) w_B)) / sum(w_A + w_B), n = [g_F > g_A and g_F > g_B],
    w = g^1.5 where g >= 2 else 0.001. Sobel/8 kernels with mirror padding; Q^SF =
    sqrt(sigmoid_g * sigmoid_a) (Nrg=0.9999, kg=19, sigma=0.5; Nra=0.9995, ka=22, sigma=0.5).
    Range 0..1; **lower is better**. Always defined (the weights never sum to 0).

    Note: the toolkit's ``analysis_Reference.m`` passes (ir, vis, fused) to a function whose first
    parameter is the *fused* image, so its Nabf column treats the IR image as the fused one. We
    compute the metric as defined, with the fused image in its place.
    """
    a, b, f = _triple(ir, vis, fused)
    ga, aa = _nabf_edges(a)
    gb, ab = _nabf_edges(b)
    gf, af = _nabf_edges(f)
    qaf = _nabf_preservation(ga, aa, gf, af)
    qbf = _nabf_preservation(gb, ab, gf, af)
    wa = np.where(ga >= 2.0, ga**1.5, 0.001)
    wb = np.where(gb >= 2.0, gb**1.5, 0.001)
    artefact = (gf > ga) & (gf > gb)
    num = float(np.sum(np.where(artefact, (1.0 - qaf) * wa + (1.0 - qbf) * wb, 0.0)))
    return num / float(np.sum(wa + wb))


# --------------------------------------------------------------------------------------------
# SSIM (scikit-image 0.19 defaults with data_range=2)

_SSIM_WIN = 7
_SSIM_DATA_RANGE = 2.0  # what skimage 0.19 assumed for float input without data_range


def ssim_pair(x: np.ndarray, y: np.ndarray, data_range: float = _SSIM_DATA_RANGE) -> float:
    """Mean SSIM of two images with scikit-image's defaults: 7x7 uniform window (mirror border),
    sample covariance (49/48), K1=0.01, K2=0.03, mean over the map without a 3-pixel border.

    ``data_range`` defaults to 2, what scikit-image 0.19 used for float images when the caller (the
    reference evaluator) gave none; on 0..255 data that makes C1, C2 tiny, so this is close to the
    bare structure/contrast ratio. Range -1..1; higher is better. Needs 7x7 images."""
    a = as_grey(x, "x")
    b = as_grey(y, "y")
    if a.shape != b.shape:
        raise ValueError(f"SSIM needs two images of one size, got {a.shape} and {b.shape}")
    _need(a, _SSIM_WIN, "SSIM")

    def box(img: np.ndarray) -> np.ndarray:
        return cv2.boxFilter(img, cv2.CV_64F, (_SSIM_WIN, _SSIM_WIN), borderType=cv2.BORDER_REFLECT)

    n = _SSIM_WIN * _SSIM_WIN
    cov_norm = n / (n - 1.0)
    ux, uy = box(a), box(b)
    vx = cov_norm * (box(a * a) - ux * ux)
    vy = cov_norm * (box(b * b) - uy * uy)
    vxy = cov_norm * (box(a * b) - ux * uy)
    c1 = (0.01 * data_range) ** 2
    c2 = (0.03 * data_range) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    pad = (_SSIM_WIN - 1) // 2
    return float(np.mean(s[pad:-pad, pad:-pad]))


def ssim(ir: np.ndarray, vis: np.ndarray, fused: np.ndarray) -> float:
    """SSIM = SSIM(F, IR) + SSIM(F, VIS) (sum, as the reference), see :func:`ssim_pair`.
    Range -2..2; higher is better."""
    a, b, f = _triple(ir, vis, fused)
    return ssim_pair(f, a) + ssim_pair(f, b)


# --------------------------------------------------------------------------------------------
# MS-SSIM: the toolkit's multi-scale MEF-SSIM (Ma, Zeng & Wang 2015)

_MEF_WIN = 11
_MEF_C = (0.03 * 255.0) ** 2
_MEF_WEIGHTS = np.array([0.0448, 0.2856, 0.3001]) / (0.0448 + 0.2856 + 0.3001)
_MEF_GAUSS = _gauss1d(_MEF_WIN, 1.5)
_DBL_EPS = float(np.finfo(_F64).eps)


def _mef_ssim_scale(x1: np.ndarray, x2: np.ndarray, f: np.ndarray) -> float:
    """One scale of MEF-SSIM, vectorised: the per-window loops of the toolkit's ``mef_ssim.m``
    expand into box and Gaussian filters of products (valid region)."""
    n = float(_MEF_WIN * _MEF_WIN)
    ones = np.ones(_MEF_WIN, dtype=_F64)

    def bsum(img):  # box *sums* keep integer images exact, so flat windows give exactly 0
        return _filter_valid(img, ones)

    def gmean(img):
        return _filter_valid(img, _MEF_GAUSS)

    s1, s2 = bsum(x1), bsum(x2)
    q11, q22, q12 = bsum(x1 * x1), bsum(x2 * x2), bsum(x1 * x2)
    # centred second moments over the 11x11 block: sum (x_k - mu_k)(x_l - mu_l)
    c11 = np.maximum(q11 - s1 * s1 / n, 0.0)
    c22 = np.maximum(q22 - s2 * s2 / n, 0.0)
    c12 = q12 - s1 * s2 / n
    mu1, mu2 = s1 / n, s2 / n
    norm1, norm2 = np.sqrt(c11), np.sqrt(c22)  # signal strengths ||x_k - mu_k||
    ed1, ed2 = norm1 + 0.001, norm2 + 0.001
    # structural consistency R and the exponent p of the weighting
    num = np.sqrt(np.maximum(c11 + c22 + 2.0 * c12, 0.0))
    r = (num + _DBL_EPS) / (norm1 + norm2 + _DBL_EPS)
    r = np.where(r > 1.0, 1.0 - _DBL_EPS, r)
    r = np.where(r < 0.0, _DBL_EPS, r)
    p = np.minimum(np.tan(math.pi / 2.0 * r), 10.0)
    w1 = (ed1 / _MEF_WIN) ** p + _DBL_EPS
    w2 = (ed2 / _MEF_WIN) ** p + _DBL_EPS
    wsum = w1 + w2
    b1, b2 = w1 / wsum / ed1, w2 / wsum / ed2
    # the desired structure r = b1 (x1 - mu1) + b2 (x2 - mu2), rescaled to the larger strength
    rnorm = np.sqrt(np.maximum(b1 * b1 * c11 + b2 * b2 * c22 + 2.0 * b1 * b2 * c12, 0.0))
    scale = np.where(rnorm > 0, np.maximum(ed1, ed2) / np.where(rnorm > 0, rnorm, 1.0), 1.0)
    a1, a2 = b1 * scale, b2 * scale
    # Gaussian-weighted statistics of r and f over the same block
    g1, g2, gf = gmean(x1), gmean(x2), gmean(f)
    d1, d2 = g1 - mu1, g2 - mu2
    m_r = a1 * d1 + a2 * d2
    e11 = gmean(x1 * x1) - 2.0 * mu1 * g1 + mu1 * mu1
    e22 = gmean(x2 * x2) - 2.0 * mu2 * g2 + mu2 * mu2
    e12 = gmean(x1 * x2) - mu1 * g2 - mu2 * g1 + mu1 * mu2
    var_r = a1 * a1 * e11 + a2 * a2 * e22 + 2.0 * a1 * a2 * e12 - m_r * m_r
    var_f = gmean(f * f) - gf * gf
    cov = a1 * (gmean(x1 * f) - mu1 * gf) + a2 * (gmean(x2 * f) - mu2 * gf) - m_r * gf
    q = (2.0 * cov + _MEF_C) / (var_r + var_f + _MEF_C)
    return float(np.mean(q))


def _halve(img: np.ndarray) -> np.ndarray:
    """2x2 mean, then every other pixel (MATLAB imfilter(ones(2)/4, 'symmetric'), then 1:2:end)."""
    h, w = img.shape
    p = np.pad(img, ((0, h % 2), (0, w % 2)), mode="edge")
    return (p[0::2, 0::2] + p[1::2, 0::2] + p[0::2, 1::2] + p[1::2, 1::2]) / 4.0


def ms_ssim(ir: np.ndarray, vis: np.ndarray, fused: np.ndarray) -> float:
    """MS-SSIM as the IVIF MATLAB toolkit computes it (``analysis_ms_ssim.m``): the multi-scale
    MEF-SSIM of Ma, Zeng & Wang (2015) with the two sources as the input "sequence". At each of 3
    scales (2x2-mean decimation between them), a desired patch structure is built per 11x11 window
    from both sources (weighted by their signal strength, exponent from their structural
    consistency) and compared with the fused patch by an SSIM-like structure/contrast term
    (Gaussian 11x11 window, sigma 1.5, C = (0.03*255)^2); the result is prod(Q_l^w_l) with weights
    (0.0448, 0.2856, 0.3001) normalised. One value for the triple (not a sum over sources).
    Range ~0..1; higher is better. Needs images of at least 44x44. A negative per-scale score
    (possible only for anti-correlated images) is clipped to 0 instead of becoming complex."""
    a, b, f = _triple(ir, vis, fused)
    _need(f, 4 * _MEF_WIN, "MS-SSIM")
    scores = []
    for level in range(len(_MEF_WEIGHTS)):
        if level:
            a, b, f = _halve(a), _halve(b), _halve(f)
        scores.append(max(_mef_ssim_scale(a, b, f), 0.0))
    return float(np.prod(np.power(np.asarray(scores), _MEF_WEIGHTS)))


# --------------------------------------------------------------------------------------------
# FMI (pixel): Haghighat's fast feature mutual information on raw pixels, 3x3 windows

_FMI_L = 9  # pixels in a 3x3 window
_FMI_CHUNK = 16384  # windows per vectorised batch (keeps the working set in cache)
_FMI_T = np.float32  # window statistics in float32: twice as fast, ~1e-6 relative error
_FMI_IDX = np.arange(1, _FMI_L + 1, dtype=_FMI_T)[:, None]
_FMI_TINY = _FMI_T(1e-30)
_INV_LN2 = _FMI_T(1.0 / math.log(2.0))  # log2 x = ln x / ln 2; numpy's float32 ln is faster


def _window_rows(img: np.ndarray) -> np.ndarray:
    """All valid 3x3 windows as a (9, N) array, row k = pixel k in MATLAB's column-major order."""
    h, w = img.shape
    rows = [img[r : r + h - 2, c : c + w - 2].ravel() for c in range(3) for r in range(3)]
    return np.stack(rows).astype(_FMI_T)


class _WindowStats:
    """Per-window quantities of one image that do not depend on the other image of a pair."""

    def __init__(self, win: np.ndarray):
        lo = win.min(axis=0)
        hi = win.max(axis=0)
        self.flat = hi == lo
        x = np.where(self.flat, _FMI_T(1), (win - lo) / np.where(self.flat, _FMI_T(1), hi - lo))
        self.win = win
        self.pdf = x / x.sum(axis=0)
        self.cdf = self.pdf.copy()  # a running sum row by row: np.cumsum is slow on axis 0 here
        for k in range(1, _FMI_L):
            self.cdf[k] += self.cdf[k - 1]
        self.centred = self.pdf - self.pdf.sum(axis=0) / _FMI_L
        self.ss = np.sum(self.centred * self.centred, axis=0)
        self.logp = np.log(np.maximum(self.pdf, _FMI_TINY)) * _INV_LN2
        self.logp *= self.pdf > 0  # 0 where the pdf is 0
        self.entropy = -np.sum(self.pdf * self.logp, axis=0)
        m1 = np.sum(self.pdf * _FMI_IDX, axis=0)
        self.spread = np.sqrt(np.maximum(np.sum(self.pdf * _FMI_IDX**2, axis=0) - m1 * m1, 0))


def _gather(a: np.ndarray, flat_index: np.ndarray) -> np.ndarray:
    """a[rows, cols] given flat_index = rows * n + cols (a fast take_along_axis on axis 0)."""
    return np.take(a, flat_index)


def _staircase(x: np.ndarray, y: np.ndarray, cols: np.ndarray):
    """Overlap structure of two partitions of [0, 1] given by ascending interval ends (9, n).

    Returns sum_ij min(x_i, y_j), and for the 18 pieces of the merged partition (one ending at each
    x_i, one at each y_j) their lengths and the index of the other partition's interval holding
    them (as flat indices row * n + col into a (9, n) array). Ties count x first. No sort: ranks
    come from the 81 comparisons."""
    c_x = np.zeros(x.shape, dtype=np.int8)  # y ends below x_i: x_i's piece is in y-interval c_x
    c_y = np.zeros(x.shape, dtype=np.int8)  # x ends <= y_j: y_j's piece is in x-interval c_y
    for k in range(_FMI_L):
        c_x += y[k] < x
        c_y += x[k] <= y
    # int8 counts keep the products below in float32
    sum_min = np.sum(x * (_FMI_L - c_x), axis=0) + np.sum(y * (_FMI_L - c_y), axis=0)
    n = x.shape[1]
    i_x = c_x.astype(np.intp) * n + cols  # flat index of row c_x (row c_x - 1 once zero-padded)
    i_y = c_y.astype(np.intp) * n + cols
    zero = np.zeros((1, n), dtype=x.dtype)
    x_pad = np.concatenate([zero, x])
    y_pad = np.concatenate([zero, y])
    d_x = x - np.maximum(x_pad[:-1], _gather(y_pad, i_x))
    d_y = y - np.maximum(y_pad[:-1], _gather(x_pad, i_y))
    last = (_FMI_L - 1) * n
    return sum_min, d_x, np.minimum(i_x, last + cols), d_y, np.minimum(i_y, last + cols)


def _fmi_pair(s: _WindowStats, f: _WindowStats) -> np.ndarray:
    """Normalised FMI of each source window with its fused window -> (n,), float64."""
    n = s.win.shape[1]
    cols = np.arange(n)
    sxy = np.sum(s.centred * f.centred, axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        c = sxy / np.sqrt(s.ss * f.ss)
    # a flat window's pdf is uniform: its correlation with anything is 0 (not rounding noise)
    c = np.where((sxy == 0) | s.flat | f.flat, 0, c)
    upper = c >= 0
    x = f.cdf  # the fused pdf indexes rows (i), the source pdf columns (j)
    cs = s.cdf
    r = 1 - cs  # R_j = 1 - C_j, descending in j
    # comonotone (upper Frechet) copula: cell masses are the overlaps of both partitions;
    # countermonotone (lower): overlaps with the reversed partition, whose ends are R_7..R_0, 1
    y = np.where(upper, cs, np.concatenate([r[-2::-1], np.ones((1, n), dtype=r.dtype)]))
    sum_min, d_x, col_x, d_y, row_y = _staircase(x, y, cols)
    sx, scs = x.sum(axis=0), cs.sum(axis=0)
    # lower: sum_ij max(x_i + C_j - 1, 0) = 9 sum_i x_i - sum_ij min(x_i, R_j)
    sum_min_r = sum_min - np.minimum(x, 1).sum(axis=0) + np.minimum(x, r[-1]).sum(axis=0)
    cov = np.where(upper, sum_min, _FMI_L * sx - sum_min_r) - sx * scs
    # the lower copula's y partition runs backwards: piece index m is source index 8 - m
    col_x = np.where(upper, col_x, (_FMI_L - 1) * n + 2 * cols - col_x)
    sd_prod = s.spread * f.spread
    with np.errstate(divide="ignore", invalid="ignore"):
        mix = c * sd_prod / cov
    mix = np.where((c == 0) | (sd_prod == 0) | ~np.isfinite(mix), 0, mix)
    keep = 1 - mix
    # joint pdf J_ij = mix U_ij + keep pf_i ps_j, U the copula's cell masses (non-zero only on the
    # staircase pieces). Its entropy: the independent part summed in closed form over all 81
    # cells, then corrected on the pieces of positive length.
    log_keep = np.log2(np.where(keep != 0, np.abs(keep), 1))
    tf, ts = x[-1], cs[-1]
    sep = keep * (log_keep * tf * ts - ts * f.entropy - tf * s.entropy)
    ps_y = np.where(upper, s.pdf, s.pdf[::-1])
    lps_y = np.where(upper, s.logp, s.logp[::-1])
    corr = np.zeros(n, dtype=x.dtype)
    for d, row_p, row_l, col_p, col_l in (
        (d_x, f.pdf, f.logp, _gather(s.pdf, col_x), _gather(s.logp, col_x)),
        (d_y, _gather(f.pdf, row_y), _gather(f.logp, row_y), ps_y, lps_y),
    ):
        indep = keep * row_p * col_p
        joint = mix * d + indep
        # |joint| floored at a tiny value: 0 * log(tiny) = 0, as MATLAB's skip of zero cells
        log_joint = np.log(np.maximum(np.abs(joint), _FMI_TINY)) * _INV_LN2
        term = indep * (log_keep + row_l + col_l) - joint * log_joint
        corr += (term * (d > 0)).sum(axis=0)
    ent_sum = (s.entropy + f.entropy).astype(_F64)
    mutual = ent_sum - (corr - sep).astype(_F64)
    with np.errstate(divide="ignore", invalid="ignore"):
        v = 2.0 * mutual / ent_sum
    v = np.where((mix == 0) | (mutual == 0), 0.0, v)
    return np.where(np.any(s.win != f.win, axis=0), v, 1.0)  # identical windows score 1


def fmi(ir: np.ndarray, vis: np.ndarray, fused: np.ndarray) -> float:
    """Feature mutual information on raw pixels, FMI_pixel (Haghighat et al. 2011; the fast
    variant of Haghighat & Razian 2014, ``fmi.m`` with feature 'none' and a 3x3 window).

    For every 3x3 window, each source window and the fused window are min-max normalised (a flat
    window becomes all ones) and read as 9-bin pdfs (MATLAB column order); their joint pdf is
    Nelsen's mixture of the independence copula and the upper (or, for negative correlation,
    lower) Frechet bound, matched to the pdfs' Pearson correlation; the window score is the
    normalised MI 2 I / (H_S + H_F) (1 where the windows are identical, 0 where I = 0). FMI is the
    mean over windows of the average of the IR and VIS scores. Range 0..1; higher is better.

    The toolkit's "FMI_pixel" column calls ``fmi`` without a feature argument, which there defaults
    to 'edge' (binary Sobel edge maps); this is the pixel version its name and this issue mean.
    """
    a, b, f = _triple(ir, vis, fused)
    _need(f, 3, "FMI")
    wa, wb, wf = _window_rows(a), _window_rows(b), _window_rows(f)
    n = wf.shape[1]
    total = 0.0
    for start in range(0, n, _FMI_CHUNK):
        sl = slice(start, start + _FMI_CHUNK)
        sf_ = _WindowStats(np.ascontiguousarray(wf[:, sl]))
        for w_src in (wa, wb):
            total += float(np.sum(_fmi_pair(_WindowStats(np.ascontiguousarray(w_src[:, sl])), sf_)))
    return total / (2.0 * n)


# --------------------------------------------------------------------------------------------
# the set

#: name -> function(ir, vis, fused) -> float, in :data:`ALL_METRICS` order.
METRIC_FUNCTIONS: dict[str, Callable[[np.ndarray, np.ndarray, np.ndarray], float]] = {
    "EN": lambda ir, vis, fused: en(fused),
    "SD": lambda ir, vis, fused: sd(fused),
    "SF": lambda ir, vis, fused: sf(fused),
    "AG": lambda ir, vis, fused: ag(fused),
    "MI": mi,
    "SCD": scd,
    "VIF": vif,
    "Qabf": qabf,
    "Nabf": nabf,
    "SSIM": ssim,
    "MS-SSIM": ms_ssim,
    "CC": cc,
    "PSNR": psnr,
    "MSE": mse,
    "FMI": fmi,
}


def _resolve(names: Iterable[str] | None) -> tuple[str, ...]:
    if names is None:
        return ALL_METRICS
    if isinstance(names, str):
        names = [names]
    chosen = tuple(names)
    unknown = [n for n in chosen if n not in METRIC_FUNCTIONS]
    if unknown:
        raise ValueError(f"unknown metric(s) {unknown}; choose from {', '.join(ALL_METRICS)}")
    return chosen


def compute_metrics(
    ir: np.ndarray,
    vis: np.ndarray,
    fused: np.ndarray,
    names: Iterable[str] | None = None,
) -> dict[str, float]:
    """Compute fusion metrics for one (ir, vis, fused) triple of grey 0..255 images.

    ``names`` selects metrics (default: :data:`ALL_METRICS`), in the order given. Raises
    ValueError for mismatched sizes, non-grey or non-finite input, unknown names, or images too
    small for a requested metric (SSIM needs 7x7, MS-SSIM 44x44).
    """
    chosen = _resolve(names)
    a, b, f = _triple(ir, vis, fused)
    return {name: float(METRIC_FUNCTIONS[name](a, b, f)) for name in chosen}
