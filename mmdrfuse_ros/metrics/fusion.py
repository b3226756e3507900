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

import numpy as np

from .base import F64, as_grey, need_size, pearson, triple
from .fmi import fmi
from .structural import ms_ssim, nabf, qabf, ssim, ssim_pair, vif, vif_pair

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

#: every metric, spelled as in the JSON/CSV outputs and docs/METRICS.md.
ALL_METRICS: tuple[str, ...] = (
    "EN", "SD", "SF", "AG", "MI", "SCD", "VIF", "Qabf", "Nabf",
    "SSIM", "MS-SSIM", "CC", "PSNR", "MSE", "FMI",
)  # fmt: skip

#: the eight columns MMDRFuse/CDDFuse report (and training validates on).
VALIDATION_METRICS: tuple[str, ...] = ("EN", "SD", "SF", "MI", "SCD", "VIF", "Qabf", "SSIM")

#: which way is better, for tables and model selection.
HIGHER_IS_BETTER: dict[str, bool] = {name: name not in ("Nabf", "MSE") for name in ALL_METRICS}


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
    need_size(f, 2, "SF")
    dx = np.diff(f, axis=1)
    dy = np.diff(f, axis=0)
    return float(math.sqrt(np.mean(dx * dx) + np.mean(dy * dy)))


def ag(fused: np.ndarray) -> float:
    """Average gradient AG = mean(sqrt((Gx^2 + Gy^2) / 2)), with central differences inside and
    one-sided differences on the border (``np.gradient``; the reference's choice, which also
    averages over all H x W pixels). Higher is better (sharpness). Needs 2x2."""
    f = as_grey(fused, "fused")
    need_size(f, 2, "AG")
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
    joint = np.bincount(x * ny + y).astype(F64)
    n = float(x.size)

    def _h(counts: np.ndarray) -> float:
        c = counts[counts > 0]
        return float(math.log(n) - np.sum(c * np.log(c)) / n)

    return _h(np.bincount(x).astype(F64)) + _h(np.bincount(y).astype(F64)) - _h(joint)


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two images; 0.0 (not NaN) when either is constant."""
    return pearson(as_grey(a, "a"), as_grey(b, "b"))


# --------------------------------------------------------------------------------------------
# two-source metrics


def mi(ir: np.ndarray, vis: np.ndarray, fused: np.ndarray) -> float:
    """Mutual information MI = MI(F; IR) + MI(F; VIS), in nats (see :func:`mutual_information`).
    Range 0..2 ln 256; higher is better."""
    a, b, f = triple(ir, vis, fused)
    return mutual_information(f, a) + mutual_information(f, b)


def cc(ir: np.ndarray, vis: np.ndarray, fused: np.ndarray) -> float:
    """Correlation coefficient CC = (r(IR, F) + r(VIS, F)) / 2 (Pearson r). Range -1..1; higher is
    better. A constant image has no defined correlation: its r is taken as 0."""
    a, b, f = triple(ir, vis, fused)
    return (pearson(a, f) + pearson(b, f)) / 2.0


def scd(ir: np.ndarray, vis: np.ndarray, fused: np.ndarray) -> float:
    """Sum of the correlations of differences SCD = r(IR, F - VIS) + r(VIS, F - IR). Range -2..2;
    higher is better. Where a difference image is constant (e.g. F equal to one source) the
    reference gives NaN; that correlation is taken as 0 here."""
    a, b, f = triple(ir, vis, fused)
    return pearson(a, f - b) + pearson(b, f - a)


def mse(ir: np.ndarray, vis: np.ndarray, fused: np.ndarray) -> float:
    """Mean squared error MSE = (mean((IR-F)^2) + mean((VIS-F)^2)) / 2 on the 0..255 scale (the
    reference's scale; the MATLAB toolkit divides by 255^2 first). Lower is better."""
    a, b, f = triple(ir, vis, fused)
    return float((np.mean((a - f) ** 2) + np.mean((b - f) ** 2)) / 2.0)


def psnr(ir: np.ndarray, vis: np.ndarray, fused: np.ndarray) -> float:
    """PSNR = 10 log10(max(F)^2 / MSE), with the *fused image's maximum* as peak (the reference's
    choice, not 255) and MSE as :func:`mse`. Higher is better. +inf when MSE is 0 (all three
    identical); -inf when F is all zero but differs from a source."""
    a, b, f = triple(ir, vis, fused)
    err = float((np.mean((a - f) ** 2) + np.mean((b - f) ** 2)) / 2.0)
    if err == 0.0:
        return math.inf
    peak = float(np.max(f))
    if peak == 0.0:
        return -math.inf
    return 10.0 * math.log10(peak * peak / err)


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
    a, b, f = triple(ir, vis, fused)
    return {name: float(METRIC_FUNCTIONS[name](a, b, f)) for name in chosen}

