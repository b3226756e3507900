"""Thermal -> RGB calibration from footage (:mod:`mmdrfuse_ros.fusion.calibration`): known answers
on synthetic rigs and on real aligned pairs warped through known rigs, refusals of footage that
cannot be registered, ``init=``, the params file it writes and what the fusion engine and node
make of it, and the options' validation.

The synthetic cases have exact ground truth, so they are held to 2 px. The real ones are not: the
shared datasets' own registration is off by a few px per frame (parallax, manual registration),
so they are held to what is honest there: from a far start, close to the truth.
"""

from __future__ import annotations

import functools
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from calibration_cases import (
    LLVIP,
    ROADSCENE,
    SIZES,
    llvip_names,
    llvip_pair,
    real_case,
    synthetic_case,
    synthetic_pairs,
    synthetic_rig,
)

from mmdrfuse_ros.datasets import read_homography
from mmdrfuse_ros.fusion.calibration import (
    Calibration,
    CalibrationError,
    CalibrationOptions,
    calibrate,
    corner_error,
    params_text,
)
from mmdrfuse_ros.fusion.calibration_search import resize_transform
from mmdrfuse_ros.settings.params_file import check_node_params, check_params_file

SYNTHETIC_CASES = 10
#: message parts that say why footage was refused
WHY_UNRELATED = "unrelated|rigid rig|too plain|stands out"


@functools.cache
def synthetic(case: int) -> tuple[np.ndarray, tuple[int, int], list, list, Calibration | str]:
    """Case ``case`` (3 pairs) and its calibration, or the refusal's text; computed once."""
    h, t_wh, thermals, rgbs = synthetic_case(case, pairs=3)
    try:
        result: Calibration | str = calibrate(thermals, rgbs)
    except CalibrationError as exc:
        result = str(exc)
    return h, t_wh, thermals, rgbs, result


def calibrated(case: int) -> tuple[np.ndarray, Calibration, list, list]:
    """(true homography, calibration, thermal frames, RGB frames) of a case that calibrates."""
    h, _, thermals, rgbs, result = synthetic(case)
    assert isinstance(result, Calibration), f"synthetic case {case} refused: {result}"
    return h, result, thermals, rgbs


def errors_text(errors: list[float]) -> str:
    return ", ".join(f"{e:.2f}" for e in errors)


# ----------------------------------------------------------------------------- known answers
def test_synthetic_rigs_are_found_within_2_px():
    """10 seeded random rigs (scale 0.7-1.4 around the default, up to 5 degrees, shifts up to
    15 % of the RGB width, mild perspective) over 4 size combinations, 3 pairs each. Measured:
    all 10 within 0.37-1.10 px, median 0.64 px (~2.4 s a case on 2 cores)."""
    errors = []
    for case in range(SYNTHETIC_CASES):
        h, t_wh, _, _, result = synthetic(case)
        errors.append(corner_error(result.homography, h, t_wh)
                      if isinstance(result, Calibration) else np.inf)  # fmt: skip
    within = sum(e <= 2.0 for e in errors)
    assert within >= 9, f"only {within}/10 within 2 px: {errors_text(errors)}"
    assert np.median(errors) <= 2.0, errors_text(errors)


def test_a_calibration_reports_its_evidence():
    _, result, thermals, _ = calibrated(0)
    assert result.model == "homography"
    assert result.thermal_size == (thermals[0].shape[1], thermals[0].shape[0])
    assert result.rgb_size == SIZES[0][1]
    assert result.inlier_fraction == 1.0 and result.coarse_score is not None
    assert 0.0 < result.correlation <= 1.0
    doc = result.to_dict()
    yaml.safe_load(yaml.safe_dump(doc))  # plain data
    assert np.allclose(doc["homography"], result.homography, rtol=1e-8, atol=1e-9)
    assert [p["inlier"] for p in doc["pairs"]] == [True] * 3
    assert all(p["deviation_px"] is not None and p["problem"] == "" for p in doc["pairs"])


def _need_llvip() -> None:
    if not (LLVIP / "unlabelled" / "ir").is_dir() or not (LLVIP / "labelled" / "ir").is_dir():
        pytest.skip(f"LLVIP data not found at {LLVIP} (only in the project's CI/dev setup)")


def _need_roadscene() -> None:
    if not (ROADSCENE / "ir").is_dir() or not (ROADSCENE / "vi").is_dir():
        pytest.skip(f"RoadScene data not found at {ROADSCENE} (only in the project's CI/dev setup)")


# Real LLVIP pairs of one scene (1280x1024, aligned by the dataset), seen by a random rig
# (thermal 0.7-1.4 x a view 3/4 of the RGB width, aspect +-5 %, up to 5 degrees, shifts up to
# 15 % of the RGB width, mild perspective), 5 pairs spread over the scene; calibrated from
# scratch (the coarse search, no init). Corner errors measured against the warp, RGB px
# (% of the RGB width), cases 0-4:
#   scene 19: 7.10 (0.55 %), 12.68 (1.98 %), 8.81 (0.86 %), 10.91 (0.85 %), 5.59 (0.87 %)
#   scene 01: 14.28 (1.12 %), 16.65 (2.60 %), 8.36 (0.82 %), 14.30 (1.12 %), 8.59 (1.34 %)
# against start (resize) errors of 93-356 px: every error <= 0.18 of its start's. Most of it is
# the dataset's own misregistration: measured against the warp composed with the residual the
# estimator finds on the aligned pairs themselves (5-9 px), scene 19 gives 3.5-8.8 px.
# Bounds: >= 4 of 5 within 3 % of the RGB width, median <= 2 %, each <= 0.35 x the start's.
# What is the estimator's own doing is tested tightly: from the far start it lands where the
# refinement started at the truth lands (measured 0.01-0.04 px), within 2 px in every case.
FROM_TRUTH_PX = 2.0
REAL_BOUND = 0.03
REAL_MEDIAN = 0.02
REAL_VS_START = 0.35


@pytest.mark.shared_data
@pytest.mark.parametrize("scene", ["19", pytest.param("01", marks=pytest.mark.slow)])
def test_real_pairs_warped_by_known_rigs_are_found_near_the_truth(scene):
    _need_llvip()
    relative, report = [], []
    for case in range(5):
        h, t_wh, v_wh, thermals, rgbs = real_case(case, scene)
        start = corner_error(resize_transform(t_wh, v_wh), h, t_wh)
        try:
            result = calibrate(thermals, rgbs)
        except CalibrationError as exc:
            relative.append(np.inf)
            report.append(f"case {case}: refused ({exc})")
            continue
        error = corner_error(result.homography, h, t_wh)
        from_truth = calibrate(thermals, rgbs, init=h).homography
        assert corner_error(result.homography, from_truth, t_wh) <= FROM_TRUTH_PX, case
        relative.append(error / v_wh[0])
        report.append(f"case {case}: {error:.2f} px ({100 * error / v_wh[0]:.2f} %), "
                      f"start {start:.0f} px")
        assert error <= REAL_VS_START * start, report[-1]
    text = "; ".join(report)
    assert sum(r <= REAL_BOUND for r in relative) >= 4, text
    assert np.median(relative) <= REAL_MEDIAN, text


# ----------------------------------------------------------------------------- refusals
@pytest.mark.parametrize("thermal_seed, rgb_seed", [(0, 1), (2, 3)])
def test_unrelated_synthetic_pairs_are_refused(thermal_seed, rgb_seed):
    """The thermal frames of one synthetic street, the RGB frames of another (same rig)."""
    t_wh, v_wh = SIZES[0]
    h = synthetic_rig(np.random.default_rng(5), t_wh, v_wh)
    thermals, _ = synthetic_pairs(t_wh, v_wh, h, thermal_seed, [0.0, 4.5, 9.0])
    _, rgbs = synthetic_pairs(t_wh, v_wh, h, rgb_seed, [0.0, 4.5, 9.0])
    with pytest.raises(CalibrationError, match=WHY_UNRELATED):
        calibrate(thermals, rgbs)


@pytest.mark.shared_data
def test_unrelated_real_pairs_are_refused():
    """LLVIP: infrared of scene 19 with visible of scene 01; RoadScene: infrared with the visible
    frame of another pair, resized to camera sizes."""
    _need_llvip()
    _need_roadscene()
    thermals = [cv2.resize(llvip_pair(n)[0], (640, 512)) for n in llvip_names("19")[::17]]
    rgbs = [cv2.resize(llvip_pair(n)[1], (1280, 720)) for n in llvip_names("01")[::11]]
    with pytest.raises(CalibrationError, match=WHY_UNRELATED):
        calibrate(thermals, rgbs)
    irs, vis = sorted((ROADSCENE / "ir").glob("*.jpg")), sorted((ROADSCENE / "vi").glob("*.jpg"))
    picks = [(j * 5, (j * 5 + len(irs) // 2) % len(irs)) for j in range(3)]
    thermals = [cv2.resize(cv2.imread(str(irs[i]), cv2.IMREAD_GRAYSCALE), (640, 512))
                for i, _ in picks]  # fmt: skip
    rgbs = [cv2.resize(cv2.imread(str(vis[k])), (1280, 720)) for _, k in picks]
    with pytest.raises(CalibrationError, match=WHY_UNRELATED):
        calibrate(thermals, rgbs)


def test_blank_frames_are_refused_saying_which_camera():
    thermal_blank = [np.full((512, 640), 30000, np.uint16)] * 3
    rgb_blank = [np.full((720, 1280, 3), 20, np.uint8)] * 3
    with pytest.raises(CalibrationError, match="thermal and RGB frame blank or featureless"):
        calibrate(thermal_blank, rgb_blank)
    _, _, thermals, rgbs = synthetic_case(0, pairs=1)
    with pytest.raises(CalibrationError, match=r"none of the 1 pair.*thermal frame blank"):
        calibrate([np.zeros((512, 640), np.uint16)], rgbs)
    with pytest.raises(CalibrationError, match="RGB frame blank"):
        calibrate(thermals, [np.zeros((720, 1280), np.uint8)])


def test_pure_noise_is_refused():
    thermals = [np.random.default_rng(i).integers(0, 65535, (512, 640)).astype(np.uint16)
                for i in range(3)]  # fmt: skip
    rgbs = [np.random.default_rng(9 + i).integers(0, 255, (720, 1280, 3)).astype(np.uint8)
            for i in range(3)]  # fmt: skip
    with pytest.raises(CalibrationError, match=WHY_UNRELATED):
        calibrate(thermals, rgbs)


def test_bad_inputs_are_value_errors():
    t, v = np.zeros((64, 80), np.uint8), np.zeros((96, 128, 3), np.uint8)
    with pytest.raises(ValueError, match="thermal frames differ in size"):
        calibrate([t, np.zeros((64, 96), np.uint8)], [v, v])
    with pytest.raises(ValueError, match=r"RGB frames differ in size.*frame 1"):
        calibrate([t, t], [v, np.zeros((96, 120, 3), np.uint8)])
    with pytest.raises(ValueError, match="need equal numbers"):
        calibrate([], [])
    with pytest.raises(ValueError, match="need equal numbers"):
        calibrate([t, t], [v])
    with pytest.raises(ValueError, match="need equal numbers"):
        calibrate([t], [v], names=["a", "b"])
    with pytest.raises(ValueError, match="at least 16x16"):
        calibrate([np.zeros(640, np.uint8)], [v])
    with pytest.raises(ValueError, match="at least 16x16"):
        calibrate([t], [np.zeros((8, 8, 3), np.uint8)])
    assert not issubclass(CalibrationError, ValueError)  # callers tell the two apart


# ----------------------------------------------------------------------------- init
def test_init_near_the_truth_converges_and_skips_the_coarse_search():
    h, t_wh, thermals, rgbs = synthetic_case(1, pairs=3)
    nudge = np.array([[1.015, 0.004, 6.0], [-0.004, 0.99, -5.0], [0.0, 0.0, 1.0]])
    start = nudge @ h
    assert corner_error(start, h, t_wh) > 8.0
    result = calibrate(thermals, rgbs, init=start)
    assert result.coarse_score is None and result.coarse_margin is None
    assert corner_error(result.homography, h, t_wh) <= 2.0


@pytest.mark.parametrize(
    "init, reason",
    [(np.zeros((3, 3)), "singular"), (np.full((3, 3), np.nan), "NaN"),
     (np.array([[1.0, 2.0, 0.0], [2.0, 4.0, 0.0], [0.0, 0.0, 0.0]]), "singular"),
     (np.eye(2), "9 values")],
)  # fmt: skip
def test_a_bad_init_is_refused(init, reason):
    _, _, thermals, rgbs = synthetic_case(1, pairs=1)
    with pytest.raises(ValueError, match=reason):
        calibrate(thermals, rgbs, init=init)


# ----------------------------------------------------------------------------- params file
def _written(tmp_path: Path, case: int = 1) -> tuple[np.ndarray, Calibration, Path]:
    h, result, _, _ = calibrated(case)
    path = tmp_path / "calibration.yaml"
    path.write_text(params_text(result, source="test footage"))
    return h, result, path


def test_params_text_is_the_fusion_nodes_params_file(tmp_path):
    _, result, path = _written(tmp_path)
    text = path.read_text()
    assert "from test footage" in text
    doc = yaml.safe_load(text)
    assert list(doc) == ["fusion_node"] and list(doc["fusion_node"]) == ["ros__parameters"]
    values = doc["fusion_node"]["ros__parameters"]["homography"]
    assert len(values) == 9 and all(type(v) is float for v in values), values  # 1.0, not 1
    assert values[8] == 1.0
    check_node_params("fusion_node", {"homography": values}, source=str(path))
    assert check_params_file(path, load_model=False) is None
    expected = result.homography / result.homography[2, 2]
    np.testing.assert_allclose(read_homography(path), expected, rtol=1e-8, atol=1e-10)


def test_params_text_writes_tiny_values_as_yaml_floats():
    h = np.array([[1.5, 0.0, 10.0], [0.0, 1.5, 20.0], [1e-05, -2e-06, 1.0]])
    result = Calibration(homography=h, model="homography", thermal_size=(640, 512),
                         rgb_size=(1280, 720), correlation=0.3, inlier_fraction=1.0,
                         spread_px=0.5)  # fmt: skip
    values = yaml.safe_load(params_text(result))["fusion_node"]["ros__parameters"]["homography"]
    assert all(type(v) is float for v in values), values
    check_node_params("fusion_node", {"homography": values})


def test_the_calibrated_homography_registers_the_pair_in_the_fusion_engine(tmp_path):
    """Fused with the calibrated homography (as loaded from the params file) the pair looks
    like it does fused with the true one, unlike fused without any."""
    from mmdrfuse_ros.fusion.engine import FusionEngine

    h, _, path = _written(tmp_path)
    loaded = yaml.safe_load(path.read_text())["fusion_node"]["ros__parameters"]["homography"]
    thermals, rgbs = synthetic_case(1, pairs=3)[2:]
    fused = {}
    for label, homography in (("true", h), ("calibrated", loaded), ("none", None)):
        with FusionEngine(backend="cpu-fast", homography=homography,
                          thermal_smoothing=0.0) as engine:  # fmt: skip
            fused[label] = engine.fuse(thermals[1], rgbs[1]).astype(np.float32)
    calibrated_diff = float(np.abs(fused["calibrated"] - fused["true"]).mean())
    none_diff = float(np.abs(fused["none"] - fused["true"]).mean())
    assert none_diff > 1.0, none_diff  # the rig is far from a resize: registration matters
    # measured: 0.46 (8-bit levels) calibrated vs true, 30.8 without a homography
    assert calibrated_diff <= 0.1 * none_diff, (calibrated_diff, none_diff)


@pytest.mark.ros
def test_the_fusion_node_takes_the_params_file(tmp_path, context):
    """rcl's own YAML parser reads the file as the node's parameters (doubles, or the node
    would refuse them)."""
    from rclpy.parameter import Parameter

    from mmdrfuse_ros.nodes.fusion_node import FusionNode

    _, result, path = _written(tmp_path)
    node = FusionNode(context=context, cli_args=["--ros-args", "--params-file", str(path)],
                      parameter_overrides=[Parameter("autostart", value=False)])
    try:
        value = list(node.get_parameter("homography").value)
    finally:
        node.destroy_node()
    expected = (result.homography / result.homography[2, 2]).ravel()
    np.testing.assert_allclose(value, expected, rtol=1e-8, atol=1e-10)


# ----------------------------------------------------------------------------- options
@pytest.mark.parametrize(
    "options, reason",
    [({"model": "projective"}, "model must be one of"),
     ({"coverage": (1.0, 0.5)}, "coverage"), ({"coverage": (0.0, 1.0)}, "coverage"),
     ({"scale_step": 1.0}, "scale_step"), ({"scale_step": 0.9}, "scale_step"),
     ({"min_inlier_fraction": 0.0}, "min_inlier_fraction"),
     ({"min_inlier_fraction": 1.5}, "min_inlier_fraction")],
)  # fmt: skip
def test_bad_options_are_refused(options, reason):
    with pytest.raises(ValueError, match=reason):
        CalibrationOptions(**options)


@pytest.mark.parametrize(
    "options",
    [{"coarse_pairs": 0}, {"samples": 0}, {"coarse_width": 0}, {"rotations_deg": ()},
     {"iterations": 0}, {"max_width": 0}, {"min_overlap": 1.5}, {"agreement_px": -1.0}],
)  # fmt: skip
def test_more_bad_options_are_refused(options):
    with pytest.raises(ValueError):
        CalibrationOptions(**options)


def test_other_models_calibrate():
    h, t_wh, thermals, rgbs = synthetic_case(3, pairs=3)
    result = calibrate(thermals, rgbs, options=CalibrationOptions(model="affine"))
    assert result.model == "affine"
    assert np.allclose(result.homography[2], [0.0, 0.0, 1.0])
    assert corner_error(result.homography, h, t_wh) <= 4.0  # the rig has mild perspective
