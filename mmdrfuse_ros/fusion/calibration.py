"""Find the thermal -> RGB homography from the footage itself, without a calibration target.

    from mmdrfuse_ros.fusion.calibration import calibrate
    result = calibrate(thermal_frames, rgb_frames)      # CalibrationError if it cannot
    result.homography, result.correlation, result.inlier_fraction
    Path("calibration.yaml").write_text(params_text(result))   # the fusion node's params

Several synchronised pairs of one rig go in (thermal any depth, RGB BGR or grey; one size per
camera). The image matching itself is in :mod:`.calibration_search`:

1. a global coarse search over scale, small rotation and every shift, summed over a few pairs
   spread over the list (a rigid rig has one answer for all of them);
2. per pair, a coarse-to-fine correlation refinement from that start;
3. robust combination: the median of the per-pair corner positions; pairs farther than the
   agreement distance from it are discarded; a final joint refinement over the pairs that
   agree gives the answer.

The answer is refused (:class:`CalibrationError`, nothing written) when frames are blank or
featureless, when no placement stands out in the coarse search, when the correlation is too
weak to be a registration, or when too few pairs agree: a wrong homography makes fused images
worse than either camera alone. ROS-free: the CLI (``mmdrfuse calibrate``) and the replay call
:func:`calibrate`; the node never calibrates online.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..sampling import select_evenly
from ..topics import FUSION_NODE
from .calibration_search import (
    MODELS,
    CalibrationError,
    coarse_search,
    corner_error,
    gauss_newton,
    level_pair,
    level_sizes,
    linear_scale,
    project_model,
    pyramid,
    refine,
    scale_grid,
    structure_amount,
    to_grey,
)
from .geometry import map_corners, validate_homography

__all__ = [
    "MODELS",
    "Calibration",
    "CalibrationError",
    "CalibrationOptions",
    "PairResult",
    "calibrate",
    "corner_error",
    "params_text",
]

#: the fusion node's name: the section of its params file
NODE_SECTION = FUSION_NODE
#: the model each pair is refined with on its own: a single multimodal pair pins down shift,
#: scale and rotation well, the remaining terms only jointly over the pairs
PAIR_MODEL = {"homography": "similarity", "affine": "similarity", "similarity": "similarity"}


@dataclass(frozen=True)
class CalibrationOptions:
    """Search ranges and acceptance thresholds; the defaults suit ordinary rigs."""

    model: str = "homography"
    #: thermal image width as a fraction of the RGB width, the range the coarse search covers
    coverage: tuple[float, float] = (0.25, 1.6)
    scale_step: float = 1.06  # ratio of neighbouring scales in the coarse search
    rotations_deg: tuple[float, ...] = (-4.0, 0.0, 4.0)
    coarse_width: int = 192  # RGB width (px) at which the coarse search runs
    coarse_pairs: int = 4  # pairs (spread over the list) whose scores the coarse search sums
    #: least part of the thermal view (or of the RGB view, if smaller) that must overlap
    min_overlap: float = 0.35
    max_width: int = 320  # thermal width (px) of the finest refinement level
    iterations: int = 30  # most Gauss-Newton steps per level
    samples: int = 15000  # template samples per pair and level in the joint refinement
    #: least mean gradient of a [0, 1] frame at 256 px wide; blank frames are far below
    min_structure: float = 0.004
    #: least correlation of the orientation planes for a pair to count as registered
    min_correlation: float = 0.08
    #: least margin of the best start's correlation over the next candidate's
    min_margin: float = 0.02
    #: corner distance (RGB px) from the median within which a pair agrees; None: 1 % of the
    #: RGB diagonal, at least 3 px
    agreement_px: float | None = None
    min_inlier_fraction: float = 0.5

    def __post_init__(self) -> None:
        if self.model not in MODELS:
            raise ValueError(f"model must be one of {MODELS}, got {self.model!r}")
        lo, hi = self.coverage
        if not 0.0 < lo < hi:
            raise ValueError(f"coverage must be (lo, hi) with 0 < lo < hi, got {self.coverage}")
        if self.scale_step <= 1.0:
            raise ValueError(f"scale_step must be > 1, got {self.scale_step}")
        if not 0.0 < self.min_inlier_fraction <= 1.0:
            raise ValueError("min_inlier_fraction must be in (0, 1]")
        if not self.rotations_deg:
            raise ValueError("rotations_deg must list at least one angle (0.0: no rotation)")
        if not 0.0 < self.min_overlap <= 1.0:
            raise ValueError(f"min_overlap must be in (0, 1], got {self.min_overlap}")
        if self.agreement_px is not None and self.agreement_px <= 0:
            raise ValueError(f"agreement_px must be > 0 (or None), got {self.agreement_px}")
        least = {"coarse_width": 32, "coarse_pairs": 1, "max_width": 32, "iterations": 1,
                 "samples": 100}
        for name, low in least.items():
            if getattr(self, name) < low:
                raise ValueError(f"{name} must be at least {low}, got {getattr(self, name)}")


@dataclass
class PairResult:
    """What one pair said: its own homography and correlation, or why it was left out."""

    name: str
    homography: np.ndarray | None = None
    correlation: float = 0.0
    deviation_px: float | None = None  # largest corner distance from the combined answer
    inlier: bool = False
    problem: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "homography": None if self.homography is None else _rounded(self.homography),
            "correlation": round(self.correlation, 4),
            "deviation_px": None if self.deviation_px is None else round(self.deviation_px, 3),
            "inlier": self.inlier,
            "problem": self.problem,
        }


@dataclass
class Calibration:
    """The combined answer and the evidence for it."""

    homography: np.ndarray  # 3x3 thermal px -> RGB px
    model: str
    thermal_size: tuple[int, int]  # (width, height)
    rgb_size: tuple[int, int]
    correlation: float  # joint correlation of the agreeing pairs at the finest level
    inlier_fraction: float  # agreeing pairs / pairs with usable frames
    spread_px: float  # median corner distance of the agreeing pairs from their consensus
    coarse_score: float | None = None  # None when started from a given homography
    coarse_margin: float | None = None
    pairs: list[PairResult] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "homography": _rounded(self.homography),
            "model": self.model,
            "thermal_size": list(self.thermal_size),
            "rgb_size": list(self.rgb_size),
            "correlation": round(self.correlation, 4),
            "inlier_fraction": round(self.inlier_fraction, 4),
            "spread_px": round(self.spread_px, 3),
            "coarse_score": None if self.coarse_score is None else round(self.coarse_score, 3),
            "coarse_margin": None if self.coarse_margin is None else round(self.coarse_margin, 3),
            "pairs": [p.to_dict() for p in self.pairs],
        }


def _rounded(h: np.ndarray) -> list[list[float]]:
    return [[float(f"{v:.10g}") for v in row] for row in np.asarray(h, np.float64)]


# ----------------------------------------------------------------------------- the estimate
def calibrate(thermals: Sequence[np.ndarray], rgbs: Sequence[np.ndarray],
              names: Sequence[str] | None = None, options: CalibrationOptions | None = None,
              init: np.ndarray | None = None) -> Calibration:
    """The thermal -> RGB homography of synchronised frame pairs (see the module text).

    ``init``: a starting homography, which replaces the global coarse search (for a rig far
    outside the searched range). Raises CalibrationError with the reason when the frames
    cannot be registered, and ValueError for inputs of the wrong shape or type.
    """
    options = options or CalibrationOptions()
    names = list(names) if names is not None else [f"pair {i}" for i in range(len(thermals))]
    if not thermals or len(thermals) != len(rgbs) or len(names) != len(thermals):
        raise ValueError(f"need equal numbers of thermal frames, RGB frames and names, got "
                         f"{len(thermals)}, {len(rgbs)}, {len(names)}")
    t_grey, v_grey = _greys(thermals, "thermal"), _greys(rgbs, "RGB")
    t_wh, v_wh = (t_grey[0].shape[1], t_grey[0].shape[0]), (v_grey[0].shape[1], v_grey[0].shape[0])
    results = [PairResult(name) for name in names]
    usable = _usable(t_grey, v_grey, results, options)
    start, coarse = _start(t_grey, v_grey, usable, options, init)
    for i in usable:
        _refine_pair(t_grey[i], v_grey[i], start, results[i], options)
    combined, inliers = _combine(results, usable, t_wh, v_wh, options)
    h, rho = _joint(t_grey, v_grey, inliers, combined, options)
    if rho < options.min_correlation:
        raise CalibrationError(
            f"the agreeing pairs correlate only {rho:.3f} at the answer (at least "
            f"{options.min_correlation} is needed): the frames look unrelated")
    _check_plausible(h, t_wh, v_wh)
    deviations = []
    for r in results:
        if r.homography is not None:
            r.deviation_px = corner_error(r.homography, combined, t_wh)
            if r.inlier:
                deviations.append(r.deviation_px)
    return Calibration(
        homography=h, model=options.model, thermal_size=t_wh, rgb_size=v_wh, correlation=rho,
        inlier_fraction=len(inliers) / len(usable), spread_px=float(np.median(deviations)),
        coarse_score=None if coarse is None else coarse[0],
        coarse_margin=None if coarse is None else coarse[1], pairs=results,
    )


def _greys(frames: Sequence[np.ndarray], role: str) -> list[np.ndarray]:
    """[0, 1] grey frames of one size; ValueError naming the first frame that differs."""
    out = []
    for i, frame in enumerate(frames):
        arr = np.asarray(frame)
        if arr.ndim not in (2, 3) or min(arr.shape[:2]) < 16 or arr.dtype.kind not in "uif":
            raise ValueError(f"{role} frame {i}: expected an HxW or HxWxC image of at least "
                             f"16x16 pixels, got shape {arr.shape} of {arr.dtype}")
        grey = to_grey(arr)
        if out and grey.shape != out[0].shape:
            raise ValueError(f"{role} frames differ in size: frame 0 is {out[0].shape[::-1]} "
                             f"(w, h), frame {i} is {grey.shape[::-1]}; one camera, one size")
        out.append(grey)
    return out


def _usable(t_grey: list[np.ndarray], v_grey: list[np.ndarray], results: list[PairResult],
            options: CalibrationOptions) -> list[int]:
    """Indices of the pairs whose two frames both show structure; the others get a problem."""
    usable = []
    for i, (t, v) in enumerate(zip(t_grey, v_grey, strict=True)):
        blank = [role for role, g in (("thermal", t), ("RGB", v))
                 if structure_amount(g) < options.min_structure]  # fmt: skip
        if blank:
            results[i].problem = f"{' and '.join(blank)} frame blank or featureless"
        else:
            usable.append(i)
    if not usable:
        raise CalibrationError(
            f"none of the {len(results)} pair(s) can be used: "
            f"{results[0].problem}{' (and the others alike)' if len(results) > 1 else ''}; "
            "record a scene with visible structure (edges, objects) in both cameras")
    return usable


def _start(t_grey: list[np.ndarray], v_grey: list[np.ndarray], usable: list[int],
           options: CalibrationOptions, init: np.ndarray | None
           ) -> tuple[np.ndarray, tuple[float, float] | None]:
    """The per-pair refinements' start and (correlation, margin) of the coarse search: ``init``
    as given, or the best of the coarse search's candidates after a quick joint refinement
    over a few pairs spread over the list (the top coarse score alone is fooled by plain
    scenes more often than the refined correlation)."""
    if init is not None:
        return validate_homography(init), None
    count = min(options.coarse_pairs, len(usable))
    picks = select_evenly(usable, count)
    thermals, rgbs = [t_grey[i] for i in picks], [v_grey[i] for i in picks]
    t_wh, v_wh = (thermals[0].shape[1], thermals[0].shape[0]), (rgbs[0].shape[1], rgbs[0].shape[0])
    scales = scale_grid(t_wh, v_wh, options.coverage, options.scale_step)
    coarse = coarse_search(thermals, rgbs, scales, options.rotations_deg, options.coarse_width,
                           options.min_overlap)
    refined = []
    for _, h in coarse.candidates:
        try:
            refined.append(_quick(thermals, rgbs, h, options))
        except (CalibrationError, np.linalg.LinAlgError):
            continue
    refined.sort(key=lambda r: -r[1])
    if not refined:
        raise CalibrationError("no placement of the thermal view in the RGB view fits")
    apart = 0.04 * v_wh[0]  # candidates that converged to one place count once
    others = [rho for h, rho in refined[1:] if corner_error(h, refined[0][0], t_wh) > apart]
    margin = refined[0][1] - (others[0] if others else 0.0)
    if margin < options.min_margin:
        raise CalibrationError(
            f"no placement of the thermal view in the RGB view stands out (best correlation "
            f"{refined[0][1]:.3f}, next {refined[0][1] - margin:.3f}; a margin of "
            f"{options.min_margin} is needed): the pairs look unrelated or too plain; use "
            "frames with more structure, or give a start (--init)")
    return refined[0][0], (refined[0][1], margin)


def _quick(thermals: list[np.ndarray], rgbs: list[np.ndarray], start: np.ndarray,
           options: CalibrationOptions) -> tuple[np.ndarray, float]:
    """A joint similarity refinement on the two coarsest levels: (homography, correlation)."""
    t_wh, v_wh = (thermals[0].shape[1], thermals[0].shape[0]), (rgbs[0].shape[1], rgbs[0].shape[0])
    h, rho = start, 0.0
    for factor in pyramid(t_wh[0], options.max_width)[:2]:
        lt, lv = level_sizes(t_wh, v_wh, factor, linear_scale(h))
        pairs = [level_pair(t, v, lt, lv, 5000) for t, v in zip(thermals, rgbs, strict=True)]
        h, rho = gauss_newton(pairs, h, "similarity", options.iterations)
    return h, rho


def _refine_pair(thermal: np.ndarray, rgb: np.ndarray, start: np.ndarray, result: PairResult,
                 options: CalibrationOptions) -> None:
    try:
        h, rho = refine(thermal, rgb, start, PAIR_MODEL[options.model], options.max_width,
                        options.iterations)
    except (CalibrationError, np.linalg.LinAlgError) as exc:
        result.problem = f"refinement failed: {exc}"
        return
    result.homography, result.correlation = h, rho
    if rho < options.min_correlation:
        result.problem = f"correlation {rho:.3f} below {options.min_correlation}"


def _combine(results: list[PairResult], usable: list[int], t_wh: tuple[int, int],
             v_wh: tuple[int, int], options: CalibrationOptions
             ) -> tuple[np.ndarray, list[int]]:
    """The median of the candidates' corners as a homography, and the pairs that agree."""
    candidates = [i for i in usable if results[i].homography is not None
                  and not results[i].problem]  # fmt: skip
    if not candidates:
        reasons = "; ".join(f"{results[i].name}: {results[i].problem}" for i in usable[:3])
        raise CalibrationError(f"no pair could be registered ({reasons})")
    corners = np.stack([map_corners(results[i].homography, *t_wh) for i in candidates])
    median = _fit(map_corners(np.eye(3), *t_wh), np.median(corners, axis=0),
                  PAIR_MODEL[options.model])
    tolerance = options.agreement_px or max(3.0, 0.01 * float(np.hypot(*v_wh)))
    inliers = []
    for i in candidates:
        if corner_error(results[i].homography, median, t_wh) <= tolerance:
            results[i].inlier = True
            inliers.append(i)
        else:
            results[i].problem = "disagrees with the other pairs"
    fraction = len(inliers) / len(usable)
    if not inliers or fraction < options.min_inlier_fraction:
        raise CalibrationError(
            f"only {len(inliers)} of {len(usable)} usable pair(s) agree within {tolerance:.1f} "
            f"px (at least {options.min_inlier_fraction:.0%} must): the frames do not show one "
            "rigid rig, or are too plain to register")
    return median, inliers


def _fit(src: np.ndarray, dst: np.ndarray, model: str) -> np.ndarray:
    """The ``model`` matrix taking the 4 corners ``src`` to ``dst`` (least squares)."""
    import cv2

    if model == "homography":
        h = cv2.getPerspectiveTransform(np.float32(src), np.float32(dst)).astype(np.float64)
    elif model == "affine":
        h = np.vstack([cv2.estimateAffine2D(np.float32(src), np.float32(dst),
                                            method=cv2.LMEDS)[0], [0.0, 0.0, 1.0]])
    else:
        h = np.vstack([cv2.estimateAffinePartial2D(np.float32(src), np.float32(dst),
                                                   method=cv2.LMEDS)[0], [0.0, 0.0, 1.0]])
    return project_model(h, model)


def _joint(t_grey: list[np.ndarray], v_grey: list[np.ndarray], inliers: list[int],
           start: np.ndarray, options: CalibrationOptions) -> tuple[np.ndarray, float]:
    """Refine over all agreeing pairs at once, from their median: the mid level with at most
    an affine warp, then the finest level with the full model."""
    t_wh = (t_grey[0].shape[1], t_grey[0].shape[0])
    v_wh = (v_grey[0].shape[1], v_grey[0].shape[0])
    levels = pyramid(t_wh[0], options.max_width)[-2:]
    h, rho = start, 0.0
    for i, factor in enumerate(levels):
        lt, lv = level_sizes(t_wh, v_wh, factor, linear_scale(h))
        model = options.model
        if i < len(levels) - 1 and model == "homography":
            model = "affine"
        pairs = [level_pair(t_grey[j], v_grey[j], lt, lv, options.samples) for j in inliers]
        h, rho = gauss_newton(pairs, h, model, options.iterations)
    return h, rho


def _check_plausible(h: np.ndarray, t_wh: tuple[int, int], v_wh: tuple[int, int]) -> None:
    """Refuse a result that no two-camera rig gives: folded or flipped, or not overlapping."""
    corners = map_corners(h, *t_wh)
    edges = np.roll(corners, -1, axis=0) - corners
    turns = edges[:, 0] * np.roll(edges, -1, axis=0)[:, 1] - edges[:, 1] * np.roll(edges, -1,
                                                                                   axis=0)[:, 0]
    centre = corners.mean(axis=0)
    inside = 0 <= centre[0] <= v_wh[0] and 0 <= centre[1] <= v_wh[1]
    if not (np.all(turns > 0) and inside):
        raise CalibrationError("the estimate folds, mirrors or misses the RGB view: not a "
                               "registration of these cameras")


# ----------------------------------------------------------------------------- the params file
def params_text(calibration: Calibration, source: str = "") -> str:
    """The params YAML (for ``--params-file`` or the launch's ``params_file``) holding the
    homography, with the quality of the estimate as comments."""
    h = calibration.homography / calibration.homography[2, 2]
    rows = ",\n".join("      " + ", ".join(_float(v) for v in row) for row in h)
    tw, th = calibration.thermal_size
    rw, rh = calibration.rgb_size
    header = [
        "# thermal -> RGB homography found by `mmdrfuse calibrate`"
        + (f" from {source}" if source else ""),
        f"# model {calibration.model}; thermal {tw}x{th} -> RGB {rw}x{rh}",
        f"# correlation {calibration.correlation:.3f}, pairs agreeing "
        f"{calibration.inlier_fraction:.0%}, corner spread {calibration.spread_px:.2f} px",
    ]
    return "\n".join(header) + (f"\n{NODE_SECTION}:\n  ros__parameters:\n    homography: [\n"
                                f"{rows}]\n")


def _float(value: float) -> str:
    """A YAML double that ROS reads as a double: always with a '.' in the mantissa (YAML 1.1
    reads ``1e-05`` as a string)."""
    if not math.isfinite(value):
        raise ValueError(f"cannot write {value} into a homography")
    mantissa, _, exponent = f"{float(f'{value:.10g}')!r}".partition("e")
    if "." not in mantissa:
        mantissa += ".0"
    return mantissa + (f"e{exponent}" if exponent else "")
