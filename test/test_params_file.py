"""mmdrfuse_ros.settings.params_file: params files checked against the nodes' tables, no ROS.

The launch file's own tests (test_launch_config.py) check the same rules through the launch;
these check the module that the launch file, ``mmdrfuse bag`` and ``mmdrfuse calibrate`` share.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mmdrfuse_ros.settings import defaults
from mmdrfuse_ros.settings.detector import DETECTOR_PARAMS
from mmdrfuse_ros.settings.fusion import FUSION_PARAMS
from mmdrfuse_ros.settings.params_file import (
    NODES,
    ParamsFileError,
    check_configuration,
    check_node_params,
    check_params_file,
    check_type,
    file_values,
    load_params_file,
    params_document,
    read_sections,
    ros_type,
    section_nodes,
    shipped_values,
    value_type,
)
from mmdrfuse_ros.settings.spec import by_name

REPO = Path(__file__).resolve().parent.parent
H = [1.4, 0.0, 212.7, 0.0, 1.39, 0.3, 0.0, 0.0, 1.0]


def _write(tmp_path: Path, text: str, name: str = "params.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_the_module_imports_no_ros():
    code = ("import sys, mmdrfuse_ros.settings.params_file; "
            "bad = [m for m in sys.modules if m.startswith(('rclpy', 'mmdrfuse_ros.nodes'))]; "
            "sys.exit(1 if bad else 0)")  # fmt: skip
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_ros_types_follow_the_tables():
    fusion, detector = by_name(FUSION_PARAMS), by_name(DETECTOR_PARAMS)
    assert ros_type(fusion["slop"]) == "double"
    assert ros_type(fusion["queue_size"]) == "integer"
    assert ros_type(fusion["thermal_norm"]) == "string"
    assert ros_type(fusion["fp16"]) == "bool"
    assert ros_type(fusion["homography"]) == "double_array"  # declared without a default
    assert ros_type(fusion["thermal_percentiles"]) == "double_array"
    assert ros_type(detector["onnx_classes"]) == "integer_array"
    assert value_type([1, 2.0]) is None and value_type([]) == "empty_array"
    assert check_type("double_array", []) is None  # [] leaves an array unset
    assert "write 1.0, not 1" in check_type("double", 1)
    assert check_type("bool", "true") == "expected bool, got string 'true'"


@pytest.mark.parametrize(("key", "namespace", "nodes"), [
    ("/**", "", NODES), ("fusion_node", "", ("fusion_node",)),
    ("/**/detector_node", "", ("detector_node",)), ("robot/fusion_node", "robot", ("fusion_node",)),
    ("/robot/fusion_node", "/robot", ("fusion_node",)), ("/other/fusion_node", "robot", ()),
    ("robot/fusion_node", "", ()), ("fusion", "", ()),
])  # fmt: skip
def test_sections_match_nodes_like_rcl_under_any_namespace(key, namespace, nodes):
    assert section_nodes(key, namespace) == nodes


def test_a_good_file_gives_each_node_its_own_parameters(tmp_path):
    path = _write(tmp_path, """
/**:
  ros__parameters:
    use_sim_time: true
    input_depth: 5
    qos_overrides:
      /thermal/image_raw:
        subscription:
          reliability: reliable
fusion_node:
  ros__parameters:
    homography: [1.4, 0.0, 212.7, 0.0, 1.39, 0.3, 0.0, 0.0, 1.0]
    thermal_norm: percentile
detector_node:
  ros__parameters:
    score_threshold: 0.4
""")
    values = load_params_file(path)
    qos = {"qos_overrides./thermal/image_raw.subscription.reliability": "reliable"}
    assert values["fusion_node"] == {"use_sim_time": True, "input_depth": 5, **qos,
                                     "homography": H, "thermal_norm": "percentile"}  # fmt: skip
    assert values["detector_node"] == {"use_sim_time": True, "input_depth": 5, **qos,
                                       "score_threshold": 0.4}  # fmt: skip
    assert check_params_file(path) is None
    assert [s.key for s in read_sections(path)] == ["/**", "fusion_node", "detector_node"]


def test_a_later_section_overrides_an_earlier_one(tmp_path):
    text = ("/**:\n  ros__parameters:\n    input_depth: 5\n"
            "fusion_node:\n  ros__parameters:\n    input_depth: 2\n")  # fmt: skip
    values = file_values(_write(tmp_path, text))
    assert values["fusion_node"]["input_depth"] == 2
    assert values["detector_node"]["input_depth"] == 5


BAD = {
    "missing": (None, "no such file"),
    "not YAML": ("fusion_node: [\n", "not readable as YAML: line 2"),
    "empty": ("", "expected a mapping of node sections"),
    "unknown section": ("fusion_nod:\n  ros__parameters:\n    slop: 0.1\n",
                        "section 'fusion_nod' matches no node"),
    "no ros__parameters": ("fusion_node:\n  slop: 0.1\n", "exactly one key, ros__parameters"),
    "typo": ("fusion_node:\n  ros__parameters:\n    homograpy: [1.0]\n",
             "fusion_node.homograpy: unknown parameter of fusion_node (did you mean "
             "'homography'?)"),
    "in neither node": ("/**:\n  ros__parameters:\n    score_treshold: 0.1\n",
                        "/**.score_treshold: unknown parameter of fusion_node and detector_node "
                        "(did you mean 'score_threshold'?)"),
    "integer for double": ("fusion_node:\n  ros__parameters:\n    slop: 1\n",
                           "fusion_node.slop: expected double, got integer 1 (write 1.0"),
    "bad choice": ("fusion_node:\n  ros__parameters:\n    thermal_norm: loud\n",
                   "fusion_node: thermal_norm must be one of"),
    "out of range": ("detector_node:\n  ros__parameters:\n    nms_iou: 1.5\n",
                     "detector_node: nms_iou must be in [0.0, 1.0], got 1.5"),
    "singular homography": ("fusion_node:\n  ros__parameters:\n    homography: [1.0, 2.0, 3.0, "
                            "2.0, 4.0, 6.0, 0.0, 0.0, 1.0]\n", "fusion_node: "),
    "short homography": ("fusion_node:\n  ros__parameters:\n    homography: [1.0, 0.0]\n",
                         "fusion_node: "),
}  # fmt: skip


@pytest.mark.parametrize("case", BAD, ids=list(BAD))
def test_a_bad_file_is_refused_naming_the_file_the_key_and_why(tmp_path, case):
    text, message = BAD[case]
    path = tmp_path / "bad.yaml" if text is None else _write(tmp_path, text, "bad.yaml")
    with pytest.raises(ParamsFileError) as err:
        load_params_file(path)
    assert str(err.value).startswith(f"params_file {str(path)!r}: "), str(err.value)
    assert message in str(err.value), str(err.value)
    assert check_params_file(path) == str(err.value)


def test_the_whole_configuration_is_checked_over_the_base(tmp_path):
    """A file that is fine alone can be wrong over another configuration (and the reverse)."""
    path = _write(tmp_path, "fusion_node:\n  ros__parameters:\n    thermal_norm: fixed\n")
    assert check_params_file(path) is None  # thermal_norm fixed without a window: default window
    base = {"fusion_node": {"queue_size": 0}}
    assert "queue_size" in (check_params_file(path, base=base) or "")


def test_the_shipped_config_files_are_valid_params_files():
    shipped = shipped_values(REPO / "config")
    for node in NODES:
        assert shipped[node], node
        assert load_params_file(REPO / "config" / f"{node.removesuffix('_node')}.yaml")[node]


def test_a_tool_checks_values_before_writing_them(tmp_path):
    check_node_params("fusion_node", {"homography": H, "thermal_norm": "percentile"})
    with pytest.raises(ParamsFileError, match=r"bag params: fusion_node.homograpy: unknown "
                       r"parameter of fusion_node \(did you mean 'homography'\?\)"):  # fmt: skip
        check_node_params("fusion_node", {"homograpy": H}, "bag params")
    with pytest.raises(ParamsFileError, match=r"fusion_node\.thermal_smoothing: expected double"):
        check_node_params("fusion_node", {"thermal_smoothing": 0})
    with pytest.raises(ParamsFileError, match="detector_node: "):
        check_configuration("detector_node", {"backend": "nope"}, "here")
    # a name checked elsewhere (the shipped YAML) is ignored unless strict, as rclpy ignores it
    check_configuration("fusion_node", {"not_a_param": 1}, "shipped", strict=False)
    with pytest.raises(ParamsFileError, match=r"shipped: fusion_node\.not_a_param: unknown"):
        check_configuration("fusion_node", {"not_a_param": 1}, "shipped")
    # what a tool writes with params_document loads back as the same values
    document = params_document({"fusion_node": {"homography": H}, "detector_node": {}})
    assert list(document) == ["fusion_node"]
    path = _write(tmp_path, yaml.safe_dump(document))
    assert load_params_file(path)["fusion_node"] == {"homography": H}


def test_the_bag_params_file_passes(tmp_path):
    """What ``mmdrfuse bag synth`` writes next to a bag is a file the launch file accepts."""
    params = pytest.importorskip("mmdrfuse_ros.bag.params")
    values = params.fusion_params_for([H[0:3], H[3:6], H[6:9]], "mono16")
    path = _write(tmp_path, yaml.safe_dump(params_document({"fusion_node": values})))
    assert load_params_file(path)["fusion_node"] == values
    assert defaults(FUSION_PARAMS).keys() >= values.keys()
