"""FMI: feature mutual information on pixels (conventions in :mod:`mmdrfuse_ros.metrics.fusion`)."""

from __future__ import annotations

import math

import numpy as np

from .base import F64, need_size, triple

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
    ent_sum = (s.entropy + f.entropy).astype(F64)
    mutual = ent_sum - (corr - sep).astype(F64)
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
    to 'edge' (binary Sobel edge maps); this is the pixel version its name means.
    """
    a, b, f = triple(ir, vis, fused)
    need_size(f, 3, "FMI")
    wa, wb, wf = _window_rows(a), _window_rows(b), _window_rows(f)
    n = wf.shape[1]
    total = 0.0
    for start in range(0, n, _FMI_CHUNK):
        sl = slice(start, start + _FMI_CHUNK)
        sf_ = _WindowStats(np.ascontiguousarray(wf[:, sl]))
        for w_src in (wa, wb):
            total += float(np.sum(_fmi_pair(_WindowStats(np.ascontiguousarray(w_src[:, sl])), sf_)))
    return total / (2.0 * n)
