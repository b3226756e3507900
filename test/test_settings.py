"""The ROS-free parameter tables and their one validator (no ROS needed)."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys

import pytest

from mmdrfuse_ros.fusion import FusionEngine, FusionSettings
from mmdrfuse_ros.fusion import backends as fusion_backends
from mmdrfuse_ros.fusion.backends import check_backend_device
from mmdrfuse_ros.settings import Param, defaults
from mmdrfuse_ros.settings.detector import (
    DETECTOR_PARAMS,
    check_detector_values,
    detector_kwargs,
)
from mmdrfuse_ros.settings.fusion import (
    FUSION_PARAMS,
    OUTPUT_ENCODINGS,
    check_fusion_values,
    fusion_engine_kwargs,
    output_encoding_for,
)
from mmdrfuse_ros.settings.spec import check_table


def test_settings_import_without_rclpy_or_nodes():
    code = (
        "import sys, mmdrfuse_ros.settings.fusion, mmdrfuse_ros.settings.detector; "
        "bad = [m for m in sys.modules if m == 'rclpy' or m.startswith('mmdrfuse_ros.nodes')]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_tables_have_unique_names_and_arrays_without_default_are_unset():
    for table in (FUSION_PARAMS, DETECTOR_PARAMS):
        names = [p.name for p in table]
        assert len(names) == len(set(names))
    values = defaults(FUSION_PARAMS)
    assert values["thermal_window"] is None and values["homography"] is None
    assert {p.name for p in FUSION_PARAMS if p.array_type} == {"thermal_window", "homography"}
    with pytest.raises(ValueError, match="array_type"):
        Param("x", [1.0], "an array with a default", array_type="double_array")
    with pytest.raises(ValueError, match="array_type"):
        Param("x", None, "not a type", array_type="float_array")


def test_defaults_are_accepted_and_build_the_engine():
    values = defaults(FUSION_PARAMS)
    assert check_fusion_values(values) is None
    kwargs = fusion_engine_kwargs(values)
    assert kwargs["device"] is None and kwargs["weights"] is None
    assert kwargs["thermal_window"] is None and kwargs["homography"] is None
    with FusionEngine(**kwargs) as engine:
        s = engine.settings
        assert output_encoding_for(s.output_color, s.output_dtype) == "bgr8"


@pytest.mark.parametrize(
    ("name", "value", "reason"),
    [
        ("backend", "gpu", "backend must be one of"),
        ("thermal_norm", "log", "thermal_norm must be one of"),
        ("device", "cuda:x", "device must be"),
        ("queue_size", 0, "queue_size"),
        ("slop", 0.0, "slop must be > 0"),
        ("homography", [1.0, 0.0, 0.0, 1.0], "9 values"),
        ("homography", [0.0] * 9, "singular"),
        ("thermal_percentiles", [99.0, 1.0], "0 <= lo < hi <= 100"),
        ("thermal_percentiles", [1.0], r"\[lo, hi\]"),
        ("thermal_window", [5.0, 1.0], "hi > lo"),
        ("thermal_smoothing", 1.0, r"\[0, 1\)"),
        ("weights", "/nonexistent/student.pt", "does not exist"),
        ("output_encoding", "bgr16", "output_encoding must be one of"),
        ("input_reliability", "sometimes", "input_reliability must be one of"),
        ("rgb_transport", "theora", "rgb_transport must be one of"),
        ("output_depth", 0, "output_depth"),
    ],
)
def test_bad_fusion_values_are_refused_with_their_reason(name, value, reason):
    got = check_fusion_values({**defaults(FUSION_PARAMS), name: value})
    assert got is not None
    assert re.search(reason, got), got


def test_a_weights_file_that_cannot_be_read_is_refused(tmp_path):
    bad = tmp_path / "student.pt"
    bad.write_bytes(b"not a checkpoint")
    reason = check_fusion_values({**defaults(FUSION_PARAMS), "weights": str(bad)})
    assert reason is not None and str(bad) in reason


def test_arrays_set_or_empty_are_passed_as_settings():
    values = {**defaults(FUSION_PARAMS), "thermal_window": [], "homography": [],
              "thermal_norm": "fixed"}  # fmt: skip
    assert check_fusion_values(values) is None
    kwargs = fusion_engine_kwargs({**values, "thermal_window": [10.0, 200.0],
                                   "homography": [2.0, 0, 0, 0, 2.0, 0, 0, 0, 1.0]})
    settings = FusionSettings.from_kwargs(
        **{k: v for k, v in kwargs.items() if k not in ("backend", "device", "weights")}
    )
    assert settings.thermal_window == (10.0, 200.0) and settings.homography.shape == (3, 3)


def test_every_output_encoding_maps_back_to_itself():
    for encoding, (color, dtype) in OUTPUT_ENCODINGS.items():
        assert output_encoding_for(color, dtype) == encoding
        kwargs = fusion_engine_kwargs({**defaults(FUSION_PARAMS), "output_encoding": encoding})
        assert (kwargs["output_color"], kwargs["output_dtype"]) == (color, dtype)
    with pytest.raises(ValueError, match="output_encoding must be one of"):
        fusion_engine_kwargs({**defaults(FUSION_PARAMS), "output_encoding": "bgr16"})


def test_unknown_fusion_settings_are_refused_without_an_extra_field():
    assert "extra" not in {f.name for f in dataclasses.fields(FusionSettings)}
    with pytest.raises(ValueError, match=r"unknown fusion setting.*thermal_normalisation"):
        FusionSettings.from_kwargs(thermal_normalisation="minmax")


def test_backend_and_device_are_checked_in_one_place(monkeypatch):
    check_backend_device("auto", None)
    check_backend_device("cpu-fast", "cpu")
    with pytest.raises(ValueError, match="backend must be one of"):
        check_backend_device("tensorrt", None)
    with pytest.raises(ValueError, match="device must be"):
        check_backend_device("torch", "gpu0")
    monkeypatch.setattr(fusion_backends, "cuda_available", lambda: False)
    with pytest.raises(ValueError, match="CUDA is not available"):
        check_backend_device("torch", "cuda:1")
    monkeypatch.setattr(fusion_backends, "cuda_available", lambda: True)
    with pytest.raises(ValueError, match="'cpu-fast' runs on the CPU") as err:
        check_backend_device("cpu-fast", "cuda")
    values = {**defaults(FUSION_PARAMS), "backend": "cpu-fast", "device": "cuda"}
    assert check_fusion_values(values) == str(err.value)  # the node gets the same message


def test_engine_validate_refuses_what_the_engine_refuses(tmp_path):
    assert isinstance(FusionEngine.validate(thermal_norm="fixed"), FusionSettings)
    for kwargs in ({"backend": "tensorrt"}, {"weights": tmp_path / "none.pt"},
                   {"thermal_smoothing": 2.0}, {"colour": "bgr"}):  # fmt: skip
        with pytest.raises(ValueError) as validated:
            FusionEngine.validate(**kwargs)
        with pytest.raises(ValueError) as built:
            FusionEngine(**kwargs)
        assert str(validated.value) == str(built.value)


def test_table_checks_choices_and_ranges():
    assert check_table(FUSION_PARAMS, {"slop": 20.0}) == "slop must be in [0.0, 10.0], got 20.0"
    assert check_table(FUSION_PARAMS, {"input_depth": 5, "fp16": True}) is None
    assert "one of" in check_table(DETECTOR_PARAMS, {"onnx_layout": "v11"})


def test_detector_defaults_build_auto_and_bad_values_are_refused(tmp_path):
    values = defaults(DETECTOR_PARAMS)
    assert check_detector_values(values) is None
    backend, kwargs = detector_kwargs(values)
    assert backend == "auto" and kwargs["model_path"] == ""
    for name, value, reason in [
        ("backend", "ssd", "backend must be one of"),
        ("backend", "onnx", "model_path"),
        ("score_threshold", 20.0, "score_threshold"),
        ("onnx_layout", "v11", "onnx_layout must be one of"),
        ("input_reliability", "sometimes", "input_reliability must be one of"),
    ]:
        got = check_detector_values({**values, name: value})
        assert got is not None and reason in got, (name, got)
    missing = {**values, "backend": "onnx", "model_path": str(tmp_path / "missing.onnx")}
    assert check_detector_values(missing) is None  # the model file is not read
    assert "does not exist" in check_detector_values(missing, load_model=True)
    backend, kwargs = detector_kwargs(missing)
    assert backend == "onnx" and kwargs["model_path"] == missing["model_path"]
    assert kwargs["classes"] == (0,) and "win_stride" not in kwargs


def test_a_change_without_engine_parameters_skips_the_engine_check():
    values = {**defaults(FUSION_PARAMS), "weights": "/nonexistent/student.pt"}
    assert check_fusion_values(values, engine=False) is None
    assert "slop" in check_fusion_values({**values, "slop": 0.0}, engine=False)
    assert "does not exist" in check_fusion_values(values)
