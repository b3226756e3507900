"""Structural fusion metrics: VIF, Qabf, Nabf, SSIM and MS-SSIM (conventions in
:mod:`mmdrfuse_ros.metrics.fusion`)."""

from __future__ import annotations

import math

import cv2
import numpy as np

from .base import F64, as_grey, filter_valid, gauss1d, need_size, triple

# --------------------------------------------------------------------------------------------
# VIF (pixel-domain, four scales)

_VIF_SIGMA_NSQ = 2.0
_VIF_EPS = 1e-10


def _vif_terms(ref: np.ndarray, dist: np.ndarray) -> tuple[float, float]:
    num = den = 0.0
    for scale in range(1, 5):
        n = 2 ** (4 - scale + 1) + 1
        k = gauss1d(n, n / 5.0)
        if scale > 1:
            ref = filter_valid(ref, k)[::2, ::2]
            dist = filter_valid(dist, k)[::2, ::2]
        mu1 = filter_valid(ref, k)
        if mu1.size == 0:
            break  # image too small for this scale: it and the coarser ones add nothing
        mu2 = filter_valid(dist, k)
        s1 = filter_valid(ref * ref, k) - mu1 * mu1
        s2 = filter_valid(dist * dist, k) - mu2 * mu2
        s12 = filter_valid(ref * dist, k) - mu1 * mu2
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
    a, b, f = triple(ir, vis, fused)
    return vif_pair(a, f) + vif_pair(b, f)


# --------------------------------------------------------------------------------------------
# Qabf (Xydeas & Petrovic) and Nabf (Kumar's modified fusion artefacts)

# kernels the reference passes to a true (flipping) 2-D convolution, flipped here for cv2's
# correlation: rot180([[-1,0,1],[-2,0,2],[-1,0,1]]) and rot180([[1,2,1],[0,0,0],[-1,-2,-1]]).
_QABF_KX = np.array([[1, 0, -1], [2, 0, -2], [1, 0, -1]], dtype=F64)
_QABF_KY = np.array([[-1, -2, -1], [0, 0, 0], [1, 2, 1]], dtype=F64)


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
    a, b, f = triple(ir, vis, fused)
    ga, aa = _qabf_edges(a)
    gb, ab = _qabf_edges(b)
    gf, af = _qabf_edges(f)
    den = float(np.sum(ga + gb))
    if den == 0.0:
        return 0.0
    qaf = _qabf_preservation(ga, aa, gf, af)
    qbf = _qabf_preservation(gb, ab, gf, af)
    return float(np.sum(qaf * ga + qbf * gb)) / den


_NABF_KV = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], dtype=F64) / 8.0
_NABF_KH = np.array([[-1, -2, -1], [0, 0, 0], [1, 2, 1]], dtype=F64) / 8.0


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
    a, b, f = triple(ir, vis, fused)
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
    need_size(a, _SSIM_WIN, "SSIM")

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
    a, b, f = triple(ir, vis, fused)
    return ssim_pair(f, a) + ssim_pair(f, b)


# --------------------------------------------------------------------------------------------
# MS-SSIM: the toolkit's multi-scale MEF-SSIM (Ma, Zeng & Wang 2015)

_MEF_WIN = 11
_MEF_C = (0.03 * 255.0) ** 2
_MEF_WEIGHTS = np.array([0.0448, 0.2856, 0.3001]) / (0.0448 + 0.2856 + 0.3001)
_MEF_GAUSS = gauss1d(_MEF_WIN, 1.5)
_DBL_EPS = float(np.finfo(F64).eps)


def _mef_ssim_scale(x1: np.ndarray, x2: np.ndarray, f: np.ndarray) -> float:
    """One scale of MEF-SSIM, vectorised: the per-window loops of the toolkit's ``mef_ssim.m``
    expand into box and Gaussian filters of products (valid region)."""
    n = float(_MEF_WIN * _MEF_WIN)
    ones = np.ones(_MEF_WIN, dtype=F64)

    def bsum(img):  # box *sums* keep integer images exact, so flat windows give exactly 0
        return filter_valid(img, ones)

    def gmean(img):
        return filter_valid(img, _MEF_GAUSS)

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
    a, b, f = triple(ir, vis, fused)
    need_size(f, 4 * _MEF_WIN, "MS-SSIM")
    scores = []
    for level in range(len(_MEF_WEIGHTS)):
        if level:
            a, b, f = _halve(a), _halve(b), _halve(f)
        scores.append(max(_mef_ssim_scale(a, b, f), 0.0))
    return float(np.prod(np.power(np.asarray(scores), _MEF_WEIGHTS)))
