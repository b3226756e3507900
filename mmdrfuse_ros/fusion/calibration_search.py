"""The image side of :mod:`.calibration`: structure features, the global coarse search and the
coarse-to-fine refinement of a thermal -> RGB homography.

Thermal and visible grey values are unrelated, but both cameras see the same outlines, often
with opposite contrast. So frames become two *orientation planes*: the doubled gradient angle
(cos 2a, sin 2a), which is the same whichever side of an edge is brighter, weighted by the
locally normalised gradient magnitude so that weak and strong edges count alike.

* :func:`coarse_search` tries every shift at once (a masked normalised cross-correlation,
  ``cv2.matchTemplate``) for each scale and small rotation on a grid, at low resolution,
  summed over several pairs; each placement is scored by its significance (Fisher z times the
  square root of the overlap) so that small overlaps do not win by chance.
* :func:`gauss_newton` then maximises the correlation of the two planes over the warp
  (homography, affine or similarity), coarse to fine, jointly over any number of pairs: an
  enhanced-correlation (ECC) step on two channels. OpenCV's ``findTransformECC`` works on one
  channel, and on one channel (gradient magnitude, or one orientation plane) it was measured
  to settle several pixels off on real pairs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from .geometry import apply_homography, map_corners

MODELS = ("homography", "affine", "similarity")
_PARAMS = {"homography": 8, "affine": 6, "similarity": 4}
#: coarse pixels per independent sample of the feature planes (their smoothing makes
#: neighbours alike); it scales every significance alike, so it only sets their units
_SAMPLE_AREA = 9.0
#: corners of the normalised template frame, to measure how far an update moves the warp
_UNIT_CORNERS = np.array([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]])


class CalibrationError(RuntimeError):
    """The footage cannot be registered; the text says why (never a wrong homography)."""


# ----------------------------------------------------------------------------- geometry
def corner_error(h_est: np.ndarray, h_true: np.ndarray, thermal_wh: tuple[int, int]) -> float:
    """Largest distance (RGB px) between where two homographies put the thermal corners."""
    diff = map_corners(h_est, *thermal_wh) - map_corners(h_true, *thermal_wh)
    return float(np.max(np.hypot(diff[:, 0], diff[:, 1])))


def resize_transform(src_wh: tuple[int, int], dst_wh: tuple[int, int]) -> np.ndarray:
    """Pixel coordinates before -> after ``cv2.resize`` (pixel centres at integers)."""
    sx, sy = dst_wh[0] / src_wh[0], dst_wh[1] / src_wh[1]
    return np.array([[sx, 0.0, 0.5 * sx - 0.5], [0.0, sy, 0.5 * sy - 0.5], [0.0, 0.0, 1.0]])


def project_model(h: np.ndarray, model: str) -> np.ndarray:
    """The nearest matrix of ``model``: affine drops the perspective row, similarity also the
    shear and aspect (it keeps the rotation and mean scale of the linear part)."""
    h = h / h[2, 2]
    if model == "homography":
        return h
    out = np.eye(3)
    out[:2] = h[:2]
    if model == "similarity":
        p, q = (out[0, 0] + out[1, 1]) / 2.0, (out[1, 0] - out[0, 1]) / 2.0
        out[:2, :2] = [[p, -q], [q, p]]
    return out


def linear_scale(h: np.ndarray) -> float:
    """RGB px per thermal px near the thermal origin (square root of the Jacobian's area)."""
    h = h / h[2, 2]
    return math.sqrt(abs(float(np.linalg.det(h[:2, :2]))))


def _translation(dx: float, dy: float) -> np.ndarray:
    return np.array([[1.0, 0.0, dx], [0.0, 1.0, dy], [0.0, 0.0, 1.0]])


# ----------------------------------------------------------------------------- features
def to_grey(image: np.ndarray) -> np.ndarray:
    """float32 [0, 1] grey of a thermal or visible frame (any depth), stretched between its
    0.5 and 99.5 percentiles so that 16-bit thermal and dark night RGB look alike."""
    arr = np.asarray(image)
    if arr.ndim == 3:
        arr = arr[:, :, 0] if arr.shape[2] == 1 else cv2.cvtColor(arr[:, :, :3],
                                                                   cv2.COLOR_BGR2GRAY)
    arr = arr.astype(np.float32)
    step = max(1, int(math.sqrt(arr.size / 65536)))
    lo, hi = np.percentile(arr[::step, ::step], (0.5, 99.5))
    if not np.isfinite([lo, hi]).all() or hi - lo <= 1e-6 * max(1.0, abs(float(hi))):
        return np.zeros(arr.shape, np.float32)
    out = (arr - np.float32(lo)) * np.float32(1.0 / (hi - lo))
    return np.clip(out, 0.0, 1.0, out=out)


def structure_amount(grey: np.ndarray) -> float:
    """Mean gradient magnitude of a [0, 1] frame at 256 px wide: ~0 when blank or featureless."""
    h, w = grey.shape
    small = cv2.resize(grey, (256, max(8, round(256 * h / w))), interpolation=cv2.INTER_AREA)
    gx = cv2.Sobel(small, cv2.CV_32F, 1, 0, ksize=3, scale=0.125)
    gy = cv2.Sobel(small, cv2.CV_32F, 0, 1, ksize=3, scale=0.125)
    return float(cv2.magnitude(gx, gy).mean())


def orientation_features(grey: np.ndarray, size_wh: tuple[int, int]) -> list[np.ndarray]:
    """The two zero-mean orientation planes of a [0, 1] frame resized to ``size_wh``."""
    img = cv2.resize(grey, size_wh, interpolation=cv2.INTER_AREA)
    img = cv2.GaussianBlur(img, (0, 0), 1.0)
    gx = cv2.Sobel(img, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(img, cv2.CV_32F, 0, 1, ksize=3)
    m2 = gx * gx + gy * gy
    mag = np.sqrt(m2)
    box = max(5, round(0.08 * max(img.shape)) | 1)
    local = cv2.blur(mag, (box, box), borderType=cv2.BORDER_REFLECT)
    weight = np.sqrt(mag / (local + np.float32(0.1 * float(mag.mean()) + 1e-6)))
    scale = weight / (m2 + np.float32(1e-12))
    planes = [(gx * gx - gy * gy) * scale, (2.0 * gx * gy) * scale]
    return [p - np.float32(p.mean()) for p in planes]


# ----------------------------------------------------------------------------- coarse search
@dataclass
class CoarseResult:
    homography: np.ndarray  # full-resolution thermal -> RGB
    score: float  # mean significance over the pairs at the best placement
    distinct: float  # best score minus the best score of a placement clearly elsewhere
    per_pair: list[tuple[float, np.ndarray]]  # each pair's own best (score, homography)
    candidates: list[tuple[float, np.ndarray]]  # the best placements clearly apart, best first


@dataclass
class _Canvas:
    """Coarse RGB feature planes, padded and turned: what a template slides over."""

    planes: list[np.ndarray]
    sums: list[tuple[np.ndarray, np.ndarray]]  # integral images of each plane and its square
    pad: tuple[int, int]
    size: tuple[int, int]  # (width, height) of the unpadded RGB
    to_rgb: np.ndarray  # canvas px -> coarse RGB px


def _canvas(planes: list[np.ndarray], pad: tuple[int, int], angle: float) -> _Canvas:
    px, py = pad
    h, w = planes[0].shape
    out = [cv2.copyMakeBorder(p, py, py, px, px, cv2.BORDER_CONSTANT, value=0.0) for p in planes]
    to_rgb = _translation(-px, -py)
    if angle:
        ch, cw = out[0].shape
        rot = cv2.getRotationMatrix2D(((cw - 1) / 2.0, (ch - 1) / 2.0), angle, 1.0)
        out = [cv2.warpAffine(p, rot, (cw, ch), flags=cv2.INTER_LINEAR) for p in out]
        to_rgb = to_rgb @ np.linalg.inv(np.vstack([rot, [0.0, 0.0, 1.0]]))
    sums = [(cv2.integral(p, sdepth=cv2.CV_64F), cv2.integral(p * p, sdepth=cv2.CV_64F))
            for p in out]  # fmt: skip
    return _Canvas(out, sums, pad, (w, h), to_rgb)


def _windows(integral: np.ndarray, th: int, tw: int) -> np.ndarray:
    """Sums over every th x tw window of the image whose integral image is given."""
    return integral[th:, tw:] - integral[:-th, tw:] - integral[th:, :-tw] + integral[:-th, :-tw]


def _overlap_sums(integral: np.ndarray, y0: np.ndarray, y1: np.ndarray, x0: np.ndarray,
                  x1: np.ndarray) -> np.ndarray:
    """Template sums over the rectangle [y0, y1) x [x0, x1) for every placement."""
    rows = integral[y1] - integral[y0]
    return rows[:, x1] - rows[:, x0]


def placement_scores(canvas: _Canvas, templates: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
                     min_overlap: float) -> np.ndarray:
    """Significance of the template planes' correlation at every placement on the canvas,
    over the part of the template inside the RGB view. ``templates``: (plane, integral of the
    plane, integral of its square) per channel."""
    th, tw = templates[0][0].shape
    ch, cw = canvas.planes[0].shape
    (px, py), (w, h) = canvas.pad, canvas.size
    u, v = np.arange(cw - tw + 1), np.arange(ch - th + 1)
    x0, x1 = np.clip(px - u, 0, tw), np.clip(px + w - u, 0, tw)
    y0, y1 = np.clip(py - v, 0, th), np.clip(py + h - v, 0, th)
    n = ((y1 - y0)[:, None] * (x1 - x0)[None, :]).astype(np.float64)
    safe_n = np.maximum(n, 1.0)
    num, var_t, var_i = np.zeros_like(n), np.zeros_like(n), np.zeros_like(n)
    for (tmpl, t1, t2), plane, (s1, s2) in zip(templates, canvas.planes, canvas.sums,
                                               strict=True):  # fmt: skip
        sti = cv2.matchTemplate(plane, tmpl, cv2.TM_CCORR).astype(np.float64)
        st, stt = _overlap_sums(t1, y0, y1, x0, x1), _overlap_sums(t2, y0, y1, x0, x1)
        si, sii = _windows(s1, th, tw), _windows(s2, th, tw)
        num += sti - st * si / safe_n
        var_t += stt - st * st / safe_n
        var_i += sii - si * si / safe_n
    den = np.sqrt(np.maximum(var_t, 0.0) * np.maximum(var_i, 0.0))
    ncc = np.where(den > 1e-12, num / np.maximum(den, 1e-12), 0.0)
    z = np.arctanh(np.clip(ncc, -0.999, 0.999)) * np.sqrt(n / _SAMPLE_AREA)
    z[n < min_overlap * min(tw * th, w * h)] = -1.0
    return z


def scale_grid(thermal_wh: tuple[int, int], rgb_wh: tuple[int, int],
               coverage: tuple[float, float], step: float) -> np.ndarray:
    """RGB px per thermal px to try: thermal widths from ``coverage`` (fractions of the RGB
    width) on a geometric grid of ratio ``step``."""
    lo, hi = coverage
    count = max(1, math.ceil(math.log(hi / lo) / math.log(step)) + 1)
    return lo * step ** np.arange(count) * rgb_wh[0] / thermal_wh[0]


def _template(grey: np.ndarray, wh: tuple[int, int]
              ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    planes = orientation_features(grey, wh)
    return [(p, cv2.integral(p, sdepth=cv2.CV_64F), cv2.integral(p * p, sdepth=cv2.CV_64F))
            for p in planes]  # fmt: skip


def coarse_search(thermals: Sequence[np.ndarray], rgbs: Sequence[np.ndarray],
                  scales: np.ndarray, rotations: Sequence[float], coarse_width: int,
                  min_overlap: float, keep: int = 5) -> CoarseResult:
    """Best scale (from ``scales``), rotation (degrees) and shift of the thermal view in the
    RGB view, for [0, 1] frames of one size each; the pairs' scores are averaged, so the answer
    is the placement that fits them all. Also returns the ``keep`` best placements that lie
    clearly apart, for the caller to refine and compare."""
    (th_full, tw_full), (rh_full, rw_full) = thermals[0].shape, rgbs[0].shape
    cw = min(coarse_width, rw_full)
    ch = max(8, round(cw * rh_full / rw_full))
    from_coarse = np.linalg.inv(resize_transform((rw_full, rh_full), (cw, ch)))
    rgb_planes = [orientation_features(g, (cw, ch)) for g in rgbs]
    peaks: list[tuple[float, np.ndarray]] = []
    per_pair: list[tuple[float, np.ndarray]] = [(-2.0, np.eye(3)) for _ in thermals]
    for k in scales:
        tw, th = round(tw_full * k * cw / rw_full), round(th_full * k * cw / rw_full)
        if min(tw, th) < 8 or tw > 3 * cw or th > 3 * ch:
            continue
        to_template = resize_transform((tw_full, th_full), (tw, th))
        templates = [_template(g, (tw, th)) for g in thermals]
        pad = (round(0.6 * tw) + max(0, tw - cw) // 2, round(0.6 * th) + max(0, th - ch) // 2)
        for angle in rotations:
            total = np.zeros(0)
            for i, (tmpl, planes) in enumerate(zip(templates, rgb_planes, strict=True)):
                canvas = _canvas(planes, pad, angle)
                z = placement_scores(canvas, tmpl, min_overlap)
                total = z if i == 0 else total + z
                _, top, _, loc = cv2.minMaxLoc(z)
                if top > per_pair[i][0]:
                    per_pair[i] = (top, _placed(from_coarse, canvas, loc, to_template))
            _, top, _, loc = cv2.minMaxLoc(total / len(templates))
            peaks.append((top, _placed(from_coarse, canvas, loc, to_template)))
    if not peaks:
        raise CalibrationError("the thermal and RGB image sizes leave no scale to search")
    candidates: list[tuple[float, np.ndarray]] = []
    for score, h in sorted(peaks, key=lambda p: -p[0]):
        if all(corner_error(h, c[1], (tw_full, th_full)) > 0.08 * rw_full for c in candidates):
            candidates.append((score, h))
        if len(candidates) == keep:
            break
    margin = candidates[0][0] - (candidates[1][0] if len(candidates) > 1 else -1.0)
    return CoarseResult(candidates[0][1], candidates[0][0], margin, per_pair, candidates)


def _placed(from_coarse: np.ndarray, canvas: _Canvas, loc: tuple[int, int],
            to_template: np.ndarray) -> np.ndarray:
    """Full-resolution thermal -> RGB homography of a template placed at ``loc``."""
    h = from_coarse @ canvas.to_rgb @ _translation(*loc) @ to_template
    return h / h[2, 2]


# ----------------------------------------------------------------------------- refinement
@dataclass
class LevelPair:
    """One pair at one pyramid level: template samples and the RGB planes to warp."""

    points: np.ndarray  # Nx2 normalised template coordinates of the samples
    templates: list[np.ndarray]  # per channel: N zero-mean, unit-variance template values
    planes: list[np.ndarray]  # per channel: the RGB feature plane
    gradients: list[tuple[np.ndarray, np.ndarray]]  # per channel: d/du, d/dv (normalised)
    to_norm_t: np.ndarray  # full thermal px -> normalised template coordinates
    to_norm_v: np.ndarray  # full RGB px -> normalised RGB level coordinates
    from_norm_v: np.ndarray  # normalised RGB level coordinates -> RGB level px


def _normaliser(wh: tuple[int, int]) -> np.ndarray:
    """Level px -> coordinates in [-1, 1] along the longer side (a well-conditioned warp)."""
    s = 2.0 / max(wh)
    return np.array([[s, 0.0, -s * (wh[0] - 1) / 2], [0.0, s, -s * (wh[1] - 1) / 2],
                     [0.0, 0.0, 1.0]])  # fmt: skip


def level_sizes(thermal_wh: tuple[int, int], rgb_wh: tuple[int, int], factor: float,
                scale: float) -> tuple[tuple[int, int], tuple[int, int]]:
    """(thermal, RGB) sizes at a thermal resize ``factor``: the RGB is resized so that one of
    its pixels spans about one thermal pixel (never enlarged); ``scale``: RGB px per thermal px."""
    fv = min(1.0, factor / scale)
    return ((max(8, round(thermal_wh[0] * factor)), max(8, round(thermal_wh[1] * factor))),
            (max(8, round(rgb_wh[0] * fv)), max(8, round(rgb_wh[1] * fv))))


def level_pair(thermal: np.ndarray, rgb: np.ndarray, t_wh: tuple[int, int],
               v_wh: tuple[int, int], max_samples: int = 15000) -> LevelPair:
    """Features of one pair at one level, the template sampled on a grid of at most
    ``max_samples`` points."""
    (th_full, tw_full), (rh_full, rw_full) = thermal.shape, rgb.shape
    stride = max(1, math.ceil(math.sqrt(t_wh[0] * t_wh[1] / max_samples)))
    ys, xs = np.mgrid[0 : t_wh[1] : stride, 0 : t_wh[0] : stride]
    norm_t, norm_v = _normaliser(t_wh), _normaliser(v_wh)
    points = apply_homography(norm_t, np.column_stack([xs.ravel(), ys.ravel()]).astype(float))
    templates = []
    for plane in orientation_features(thermal, t_wh):
        values = plane[ys, xs].ravel().astype(np.float64)
        values -= values.mean()
        templates.append(values / (values.std() + 1e-12))
    planes = orientation_features(rgb, v_wh)
    d = 1.0 / (8.0 * norm_v[0, 0])  # Sobel's 8x, and level px per normalised unit
    gradients = [(cv2.Sobel(p, cv2.CV_32F, 1, 0, ksize=3, scale=d),
                  cv2.Sobel(p, cv2.CV_32F, 0, 1, ksize=3, scale=d)) for p in planes]
    return LevelPair(points, templates, planes, gradients,
                     norm_t @ resize_transform((tw_full, th_full), t_wh),
                     norm_v @ resize_transform((rw_full, rh_full), v_wh),
                     np.linalg.inv(norm_v))  # fmt: skip


def _jacobian(pts: np.ndarray, hn: np.ndarray, model: str) -> np.ndarray:
    """d(u, v)/d(parameters) of the normalised warp at the sample points: 2 x N x k."""
    x, y = pts[:, 0], pts[:, 1]
    zero, one = np.zeros_like(x), np.ones_like(x)
    if model == "similarity":  # [[a, -b, tx], [b, a, ty]]
        return np.stack([np.stack([x, -y, one, zero], 1), np.stack([y, x, zero, one], 1)])
    if model == "affine":
        return np.stack([np.stack([x, y, one, zero, zero, zero], 1),
                         np.stack([zero, zero, zero, x, y, one], 1)])  # fmt: skip
    w = hn[2, 0] * x + hn[2, 1] * y + 1.0
    u = (hn[0, 0] * x + hn[0, 1] * y + hn[0, 2]) / w
    v = (hn[1, 0] * x + hn[1, 1] * y + hn[1, 2]) / w
    du = np.stack([x, y, one, zero, zero, zero, -u * x, -u * y], 1) / w[:, None]
    dv = np.stack([zero, zero, zero, x, y, one, -v * x, -v * y], 1) / w[:, None]
    return np.stack([du, dv])


def _update(hn: np.ndarray, delta: np.ndarray, model: str) -> np.ndarray:
    out = hn.copy()
    if model == "similarity":
        a, b, tx, ty = delta
        out[:2] += [[a, -b, tx], [b, a, ty]]
    else:
        out.flat[: _PARAMS[model]] += delta
    return out / out[2, 2]


def _sample(image: np.ndarray, maps: tuple[np.ndarray, np.ndarray, int]) -> np.ndarray:
    """Bilinear samples of ``image`` at the positions of ``maps`` (see :func:`_maps`)."""
    mx, my, n = maps
    out = cv2.remap(image, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                    borderValue=0.0)
    return out.ravel()[:n].astype(np.float64)


def _maps(px: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Sample positions as remap maps, in rows of 1024 (remap wants under 32767 columns)."""
    rows = max(1, math.ceil(len(px) / 1024))
    maps = np.zeros((2, rows * 1024), np.float32)
    maps[:, : len(px)] = px.T
    return maps[0].reshape(rows, 1024), maps[1].reshape(rows, 1024), len(px)


def _accumulate(lp: LevelPair, hn: np.ndarray, model: str
                ) -> tuple[np.ndarray, np.ndarray, float]:
    """Normal equations of one pair (each channel's gain and offset fitted out) and its mean
    correlation over the samples that land inside the RGB view."""
    px = apply_homography(lp.from_norm_v @ hn, lp.points)
    h, w = lp.planes[0].shape
    valid = (px[:, 0] >= 0) & (px[:, 0] <= w - 1) & (px[:, 1] >= 0) & (px[:, 1] <= h - 1)
    k = _PARAMS[model]
    a_mat, b_vec, rhos = np.zeros((k, k)), np.zeros(k), []
    if valid.sum() < 50:
        return a_mat, b_vec, 0.0
    duv = _jacobian(lp.points[valid], hn, model)
    maps = _maps(px[valid])
    for tmpl, plane, (gu, gv) in zip(lp.templates, lp.planes, lp.gradients, strict=True):
        t = tmpl[valid] - tmpl[valid].mean()
        iw = _sample(plane, maps)
        iw -= iw.mean()
        var = float(iw @ iw)
        if var <= 1e-12:
            continue
        gain = float(t @ iw) / var
        rhos.append(float(t @ iw) / math.sqrt(var * float(t @ t) + 1e-24))
        jac = _sample(gu, maps)[:, None] * duv[0] + _sample(gv, maps)[:, None] * duv[1]
        jac -= jac.mean(axis=0)
        jac *= gain
        r = t - gain * iw
        a_mat += jac.T @ jac
        b_vec += jac.T @ r
    return a_mat, b_vec, float(np.mean(rhos)) if rhos else 0.0


def gauss_newton(pairs: Sequence[LevelPair], h_full: np.ndarray, model: str,
                 iterations: int) -> tuple[np.ndarray, float]:
    """Maximise the correlation of the orientation planes of ``pairs`` (jointly) over a warp
    of ``model``, from the full-resolution thermal -> RGB ``h_full``.

    All pairs share one level geometry. Returns (homography, mean correlation of the pairs).
    """
    lp0 = pairs[0]
    hn = project_model(lp0.to_norm_v @ h_full @ np.linalg.inv(lp0.to_norm_t), model)
    k = _PARAMS[model]
    tolerance = 0.01 / lp0.from_norm_v[0, 0]  # a hundredth of a level pixel, normalised
    rho = 0.0
    for _ in range(iterations):
        a_mat, b_vec, rhos = np.zeros((k, k)), np.zeros(k), []
        for lp in pairs:
            a, b, r = _accumulate(lp, hn, model)
            a_mat += a
            b_vec += b
            rhos.append(r)
        rho = float(np.mean(rhos))
        if not np.any(a_mat):
            raise CalibrationError("the thermal view does not overlap the RGB view")
        damped = a_mat + 1e-3 * np.diag(np.diag(a_mat)) + 1e-12 * np.eye(k)
        moved = _update(hn, np.linalg.solve(damped, b_vec), model)
        step = apply_homography(moved, _UNIT_CORNERS) - apply_homography(hn, _UNIT_CORNERS)
        hn = moved
        if float(np.abs(step).max()) < tolerance:
            break
    h = np.linalg.inv(lp0.to_norm_v) @ hn @ lp0.to_norm_t
    return h / h[2, 2], rho


def pyramid(thermal_width: int, max_width: int, min_width: int = 80) -> list[float]:
    """Thermal resize factors, coarse to fine: halving from the finest (at most ``max_width``
    px wide) while the image stays ``min_width`` px wide."""
    factors = [min(1.0, max_width / thermal_width)]
    while thermal_width * factors[-1] / 2 >= min_width:
        factors.append(factors[-1] / 2)
    return factors[::-1]


def refine(thermal: np.ndarray, rgb: np.ndarray, start: np.ndarray, model: str,
           max_width: int, iterations: int) -> tuple[np.ndarray, float]:
    """Coarse-to-fine Gauss-Newton of one pair from ``start``: (homography, correlation at the
    finest level). The coarsest level fits an affine warp at most (the perspective terms need
    the detail of the finer levels)."""
    t_wh, v_wh = (thermal.shape[1], thermal.shape[0]), (rgb.shape[1], rgb.shape[0])
    h, rho = start, 0.0
    for i, f in enumerate(pyramid(t_wh[0], max_width)):
        lt, lv = level_sizes(t_wh, v_wh, f, linear_scale(h))
        level_model = "affine" if i == 0 and model == "homography" else model
        h, rho = gauss_newton([level_pair(thermal, rgb, lt, lv)], h, level_model, iterations)
    return h, rho
