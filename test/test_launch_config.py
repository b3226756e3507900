"""What can be checked of launch/fusion.launch.py and config/*.yaml without `launch` installed.

* every executable the launch file starts is a console script of this package, whose function
  exists;
* the launch file builds its description (run against small stand-ins for `launch` and
  `launch_ros`, which cannot be installed here: the only mocks in this file), uses only declared
  arguments, passes existing config files and remaps the package's own topic names;
* every parameter in config/<name>.yaml is declared by the node of ``<name>_node`` with the same
  type (the real node is instantiated in rclpy with the file's values as overrides).
"""

from __future__ import annotations

import ast
import importlib
import inspect
import runpy
import subprocess
import sys
import tempfile
import types
from pathlib import Path
from typing import Any

import pytest
import yaml

from mmdrfuse_ros import topics

REPO = Path(__file__).resolve().parent.parent
LAUNCH_FILE = REPO / "launch" / "fusion.launch.py"
CONFIGS = sorted((REPO / "config").glob("*.yaml"))


def console_scripts() -> dict[str, str]:
    """name -> 'module:function' from setup.py's entry_points, read without running setup()."""
    tree = ast.parse((REPO / "setup.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values, strict=True):
                if isinstance(key, ast.Constant) and key.value == "console_scripts":
                    entries = ast.literal_eval(value)
                    return dict((part.strip() for part in entry.split("=", 1)) for entry in entries)
    raise AssertionError("setup.py declares no console_scripts")


def launched_executables() -> set[str]:
    """The ``executable=`` of every Node(...) / LifecycleNode(...) call in the launch file."""
    found = set()
    for node in ast.walk(ast.parse(LAUNCH_FILE.read_text())):
        if isinstance(node, ast.Call):
            name = getattr(node.func, "id", getattr(node.func, "attr", ""))
            if name in ("Node", "LifecycleNode", "ComposableNode"):
                for kw in node.keywords:
                    if kw.arg == "executable":
                        assert isinstance(kw.value, ast.Constant), "executable must be a literal"
                        found.add(kw.value.value)
    return found


def test_every_launched_executable_is_a_console_script_of_the_package():
    scripts = console_scripts()
    executables = launched_executables()
    assert executables >= {"fusion_node", "detector_node"}
    for exe in executables:
        assert exe in scripts, f"{exe} is not a console script in setup.py"
        module_name, function = scripts[exe].split(":")
        if exe == "detector_node" and importlib.util.find_spec(module_name) is None:
            continue  # built by another issue; checked once it exists
        module = importlib.import_module(module_name)
        assert callable(getattr(module, function)), scripts[exe]


# ------------------------------------------------------------------------ the launch file, run
class _Recorded:
    """Stand-in for a launch action/substitution: remembers its arguments."""

    built = 0  # Node stand-ins constructed: none when the launch is refused

    def __init__(self, *args: Any, **kwargs: Any):
        self.args, self.kwargs = args, kwargs
        if type(self).__name__ == "Node":
            _Recorded.built += 1


def _stand_ins(share: Path) -> dict[str, types.ModuleType]:
    names = {
        "launch": ["LaunchDescription"],
        "launch.actions": ["DeclareLaunchArgument", "SetEnvironmentVariable", "GroupAction",
                           "IncludeLaunchDescription", "RegisterEventHandler", "EmitEvent",
                           "LogInfo", "OpaqueFunction"],
        "launch.conditions": ["IfCondition", "UnlessCondition"],
        "launch.substitutions": ["EnvironmentVariable", "LaunchConfiguration", "PythonExpression",
                                 "PathJoinSubstitution", "TextSubstitution"],
        "launch_ros.actions": ["Node", "LifecycleNode"],
        "launch_ros.parameter_descriptions": ["ParameterValue", "ParameterFile"],
        "launch_ros.substitutions": ["FindPackageShare"],
    }  # fmt: skip
    modules = {"launch_ros": types.ModuleType("launch_ros")}
    for module_name, classes in names.items():
        module = types.ModuleType(module_name)
        for cls in classes:
            setattr(module, cls, type(cls, (_Recorded,), {}))
        modules[module_name] = module
    ament = types.ModuleType("ament_index_python.packages")
    ament.get_package_share_directory = lambda package: str(share)
    modules["ament_index_python.packages"] = ament
    return modules


class _Context:
    """What the launch file uses of launch's LaunchContext."""

    def __init__(self, arguments: dict[str, str], environment: dict[str, str]):
        self.launch_configurations = dict(arguments)
        self.environment = environment
        self._locals: dict[str, Any] = {}

    def extend_locals(self, extensions: dict[str, Any]) -> None:
        self._locals.update(extensions)

    def get_locals_as_dict(self) -> dict[str, Any]:
        return dict(self._locals)


@pytest.fixture
def launch_file(monkeypatch, tmp_path) -> dict[str, Any]:
    """The launch file's namespace, run against the stand-ins (its generated files in tmp_path)."""
    for name, module in _stand_ins(REPO).items():
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    return runpy.run_path(str(LAUNCH_FILE))


@pytest.fixture
def description(launch_file) -> Any:
    return launch_file["generate_launch_description"]()


def _declared(description: Any) -> dict[str, Any]:
    return {a.args[0]: a.kwargs.get("default_value") for a in description.args[0]
            if type(a).__name__ == "DeclareLaunchArgument"}  # fmt: skip


def _launch(description: Any, environment: dict | None = None, **arguments: str) -> dict:
    """Visit the description as launch does, with these arguments given: executable -> Node."""
    context = _Context(arguments, environment or {})
    nodes = []
    for action in description.args[0]:
        kind = type(action).__name__
        if kind == "DeclareLaunchArgument":  # sets the default of an argument not given
            context.launch_configurations.setdefault(action.args[0], action.kwargs["default_value"])
        elif kind == "OpaqueFunction":
            nodes += action.kwargs["function"](context, *action.kwargs.get("args", ()))
    assert set(context.launch_configurations) == set(_declared(description)), "undeclared names"
    return {node.kwargs["executable"]: node for node in nodes}


def _applied(node: Any) -> dict[str, Any]:
    """The parameters a node gets over its shipped YAML (the launch file's generated file)."""
    shipped, generated = node.kwargs["parameters"]
    assert Path(shipped).is_file()
    data = yaml.safe_load(Path(generated).read_text())
    assert list(data) == ["/**"]
    return data["/**"]["ros__parameters"]


def test_launch_description_builds_with_arguments_configs_and_remaps(description):
    declared = _declared(description)
    for name in ("use_sim_time", "device", "weights", "thermal_topic", "rgb_topic",
                 "fused_topic", "params_file", "log_level", "detector_model",
                 "publish_detection_image", "autostart", "namespace", "rgb_info_topic",
                 "fastdds_profile"):  # fmt: skip
        assert name in declared, f"launch argument {name} missing"
    for action in description.args[0]:
        if type(action).__name__ == "DeclareLaunchArgument":
            assert action.kwargs.get("description"), f"{action.args[0]} has no description"

    nodes = _launch(description)
    assert set(nodes) == {"fusion_node", "detector_node"}
    for exe, node in nodes.items():
        files = [Path(p) for p in node.kwargs["parameters"]]
        assert files[0] == REPO / "config" / f"{exe.removesuffix('_node')}.yaml", files
        assert files[0].is_file(), f"{files[0]} missing"
        assert "use_sim_time" in _applied(node)
        for source, _target in node.kwargs["remappings"]:
            assert source in vars(topics).values(), f"remap of unknown topic {source}"
        assert node.kwargs["ros_arguments"] == ["--log-level", "info"]
    assert {src for src, _ in nodes["fusion_node"].kwargs["remappings"]} >= {
        topics.THERMAL_IMAGE,
        topics.RGB_IMAGE,
        topics.FUSED_IMAGE,
    }
    assert topics.FUSED_IMAGE in {src for src, _ in nodes["detector_node"].kwargs["remappings"]}

    # the Fast DDS profile: shipped, unless the user exported one (under either name) or ''
    from mmdrfuse_ros.transport import PROFILE_VARIABLES

    env = nodes["fusion_node"].kwargs["additional_env"]
    assert list(env.values()) == [declared["fastdds_profile"]]
    assert set(env) <= set(PROFILE_VARIABLES)
    assert Path(declared["fastdds_profile"]).is_file()
    for name in PROFILE_VARIABLES:
        user = _launch(description, environment={name: "/mine.xml"})
        assert user["fusion_node"].kwargs["additional_env"] == {}
    assert _launch(description, fastdds_profile="")["detector_node"].kwargs["additional_env"] == {}


# ------------------------------------------------------------------------ params_file
def _write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "params.yaml"
    path.write_text(text)
    return str(path)


GOOD_PARAMS = """
/**:
  ros__parameters:
    use_sim_time: true
    homography: [1.0, 0.0, 4.0, 0.0, 1.0, 2.0, 0.0, 0.0, 1.0]
fusion_node:
  ros__parameters:
    thermal_norm: fixed
    thermal_window: [7000.0, 9000.0]
detector_node:
  ros__parameters:
    score_threshold: 0.5
"""


def test_params_file_is_applied_over_the_defaults_node_by_node(description, tmp_path):
    nodes = _launch(description, params_file=_write(tmp_path, GOOD_PARAMS))
    assert _applied(nodes["fusion_node"]) == {
        "use_sim_time": True,
        "homography": [1.0, 0.0, 4.0, 0.0, 1.0, 2.0, 0.0, 0.0, 1.0],
        "thermal_norm": "fixed",
        "thermal_window": [7000.0, 9000.0],
    }
    # /** reaches both nodes, but only with the parameters each one has
    assert _applied(nodes["detector_node"]) == {"use_sim_time": True, "score_threshold": 0.5}


@pytest.mark.parametrize("section", ["fusion_node", "/fusion_node", "/**/fusion_node",
                                     "robot/fusion_node", "/robot/fusion_node"])  # fmt: skip
def test_a_node_section_applies_under_a_namespace(description, tmp_path, section):
    text = f"{section}:\n  ros__parameters:\n    slop: 0.02\n"
    nodes = _launch(description, params_file=_write(tmp_path, text), namespace="robot")
    assert _applied(nodes["fusion_node"])["slop"] == 0.02
    assert nodes["fusion_node"].kwargs["namespace"] == "robot"
    assert "slop" not in _applied(nodes["detector_node"])


def test_launch_arguments_override_the_params_file_only_when_set(description, tmp_path):
    text = "fusion_node:\n  ros__parameters:\n    device: cpu\n    autostart: false\n"
    path = _write(tmp_path, text + "/**:\n  ros__parameters:\n    use_sim_time: true\n")
    left = _launch(description, params_file=path)  # every argument at its default
    assert _applied(left["fusion_node"]) == {"device": "cpu", "autostart": False,
                                             "use_sim_time": True}  # fmt: skip
    assert _applied(left["detector_node"]) == {"use_sim_time": True}
    # given, even at their defaults, they win
    overridden = _launch(description, params_file=path, autostart="true", use_sim_time="false",
                         publish_detection_image="true", log_level="DEBUG")  # fmt: skip
    assert _applied(overridden["fusion_node"]) == {"device": "cpu", "autostart": True,
                                                   "use_sim_time": False}  # fmt: skip
    assert _applied(overridden["detector_node"]) == {"publish_image": True, "use_sim_time": False}
    assert overridden["detector_node"].kwargs["ros_arguments"] == ["--log-level", "debug"]


def test_detector_model_sets_model_path_and_the_onnx_backend(launch_file, description, tmp_path):
    model = tmp_path / "yolo.onnx"
    model.write_bytes(b"")
    arguments = _declared(description) | {"detector_model": str(model)}
    values = launch_file["argument_values"](arguments, {"detector_model"})
    assert values["detector_node"] == {"model_path": str(model), "backend": "onnx"}
    assert values["fusion_node"] == {}
    # the model itself is checked too: an empty file is no model
    with pytest.raises(ValueError, match="launch arguments: detector_node: ") as err:
        _launch(description, detector_model=str(model))
    assert "yolo.onnx" in str(err.value)


BAD_PARAMS = {
    "not YAML": ("fusion_node: [\n", "line 2"),
    "a list": ("- fusion_node\n", "expected a mapping of node sections"),
    "empty": ("", "expected a mapping of node sections"),
    "unknown section": ("fusion_nod:\n  ros__parameters:\n    slop: 0.1\n",
                        "section 'fusion_nod' matches no node"),
    "other namespace": ("/other/fusion_node:\n  ros__parameters:\n    slop: 0.1\n",
                        "section '/other/fusion_node' matches no node"),
    "no ros__parameters": ("fusion_node:\n  slop: 0.1\n", "exactly one key, ros__parameters"),
    "unknown parameter": ("fusion_node:\n  ros__parameters:\n    homograpy: [1.0]\n",
                          "fusion_node.homograpy: unknown parameter of fusion_node (did you "
                          "mean 'homography'?)"),
    "fusion key in detector": ("detector_node:\n  ros__parameters:\n    slop: 0.1\n",
                               "detector_node.slop: unknown parameter of detector_node"),
    "integer for double": ("fusion_node:\n  ros__parameters:\n    slop: 1\n",
                           "fusion_node.slop: expected double, got integer 1 (write 1.0"),
    "string for bool": ("/**:\n  ros__parameters:\n    use_sim_time: 'yes'\n",
                        "/**.use_sim_time: expected bool, got string 'yes'"),
    "mixed list": ("fusion_node:\n  ros__parameters:\n    thermal_window: [1, 2.0]\n",
                   "fusion_node.thermal_window: expected double array, got list"),
    "integer array": ("fusion_node:\n  ros__parameters:\n    homography: [1, 0, 0, 0, 1, 0, "
                      "0, 0, 1]\n", "fusion_node.homography: expected double array, got "
                      "integer array"),
    "bad choice": ("fusion_node:\n  ros__parameters:\n    thermal_norm: loud\n",
                   "fusion_node: thermal_norm must be one of"),
    "out of range": ("detector_node:\n  ros__parameters:\n    nms_iou: 1.5\n",
                     "detector_node: nms_iou must be in [0.0, 1.0], got 1.5"),
    "homography of 4": ("fusion_node:\n  ros__parameters:\n    homography: [1.0, 0.0, 0.0, "
                        "1.0]\n", "fusion_node: "),
    "singular homography": ("fusion_node:\n  ros__parameters:\n    homography: [1.0, 2.0, 3.0,"
                            " 2.0, 4.0, 6.0, 0.0, 0.0, 1.0]\n", "fusion_node: "),
}  # fmt: skip


@pytest.mark.parametrize("case", BAD_PARAMS, ids=list(BAD_PARAMS))
def test_a_bad_params_file_stops_the_launch_naming_file_and_key(description, tmp_path, case):
    text, message = BAD_PARAMS[case]
    path = _write(tmp_path, text)
    built = _Recorded.built
    with pytest.raises(ValueError) as err:
        _launch(description, params_file=path)
    assert f"params_file {path!r}: " in str(err.value)
    assert message in str(err.value), str(err.value)
    assert _Recorded.built == built, "a node was configured although the launch was refused"


def test_a_missing_params_file_stops_the_launch(description, tmp_path):
    path = str(tmp_path / "nowhere.yaml")
    with pytest.raises(ValueError, match=f"params_file '{path}': no such file"):
        _launch(description, params_file=path)


@pytest.mark.parametrize(("argument", "value", "message"), [
    ("log_level", "loud", "log_level:='loud': expected one of debug, info"),
    ("use_sim_time", "maybe", "use_sim_time:='maybe': expected true or false"),
    ("publish_detection_image", "2", "publish_detection_image:='2': expected true or false"),
    ("detector_model", "/nowhere/yolo.onnx", "detector_model:='/nowhere/yolo.onnx': no such"),
    ("device", "tpu", "launch arguments: fusion_node: "),
])  # fmt: skip
def test_a_bad_launch_argument_stops_the_launch(description, argument, value, message):
    with pytest.raises(ValueError) as err:
        _launch(description, **{argument: value})
    assert message in str(err.value), str(err.value)


# ------------------------------------------------------------------------ with the real launch
def _real_launch() -> None:
    for module in ("launch", "launch_ros"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not importable (a ROS 2 distro, or docs/ROS_DISTRO.md)")


def _in_ament_index() -> bool:
    from ament_index_python.packages import PackageNotFoundError, get_package_share_directory

    try:
        get_package_share_directory("mmdrfuse_ros")
    except PackageNotFoundError:
        return False
    return True


def test_show_args_lists_every_argument_with_its_description(monkeypatch, capsys):
    """What ``ros2 launch mmdrfuse_ros fusion.launch.py --show-args`` prints."""
    _real_launch()
    from launch.launch_description_sources import get_launch_description_from_python_launch_file

    if not _in_ament_index():
        import ament_index_python.packages as ament

        monkeypatch.setattr(ament, "get_package_share_directory", lambda package: str(REPO))
    description = get_launch_description_from_python_launch_file(str(LAUNCH_FILE))
    arguments = {a.name: a.description for a in description.get_launch_arguments()}
    assert set(arguments) >= {"params_file", "log_level", "detector_model",
                              "publish_detection_image", "use_sim_time", "device", "weights",
                              "autostart", "namespace", "thermal_topic", "rgb_topic",
                              "rgb_info_topic", "fused_topic", "fastdds_profile"}  # fmt: skip
    for name, text in arguments.items():
        assert text and text != "no description given", f"{name} has no description"
    if importlib.util.find_spec("ros2launch") is not None:
        from ros2launch.api import print_arguments_of_launch_description

        print_arguments_of_launch_description(launch_description=description)
        shown = capsys.readouterr().out
        for name, text in arguments.items():
            assert f"'{name}':" in shown and text in shown


_RUN_LAUNCH = """
import sys
import launch
from launch.actions import IncludeLaunchDescription
from launch.launch_description_sources import PythonLaunchDescriptionSource
arguments = [tuple(a.split(":=", 1)) for a in sys.argv[2:]]
service = launch.LaunchService(argv=sys.argv[2:], noninteractive=True)
service.include_launch_description(launch.LaunchDescription([IncludeLaunchDescription(
    PythonLaunchDescriptionSource(sys.argv[1]), launch_arguments=arguments)]))
sys.exit(service.run())
"""


def test_a_bad_params_file_makes_the_real_launch_exit_non_zero(tmp_path):
    """``ros2 launch ... params_file:=bad.yaml`` fails before any node starts."""
    _real_launch()
    if not _in_ament_index():
        pytest.skip("mmdrfuse_ros is not in the ament index: colcon build, source install/setup")
    path = _write(tmp_path, "fusion_node:\n  ros__parameters:\n    thermal_smoothing: 1\n")
    run = subprocess.run(
        [sys.executable, "-c", _RUN_LAUNCH, str(LAUNCH_FILE), f"params_file:={path}"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    output = run.stdout + run.stderr
    assert run.returncode != 0, output
    assert f"params_file {path!r}: fusion_node.thermal_smoothing: expected double" in output
    assert "process started" not in output, output


def test_shipped_fastdds_profile_sets_no_discovery():
    text = (REPO / "config" / "fastdds_large_data.xml").read_text()
    body = text.split("-->", 1)[1]  # after the explanatory comment
    for tag in ("initialPeersList", "metatrafficUnicastLocatorList", "interfaceWhiteList",
                "discovery_config", "defaultUnicastLocatorList", "interfaces"):  # fmt: skip
        assert tag not in body, f"the profile must not set {tag}"
    assert "<segment_size>" in body and 'is_default_profile="true"' in body


# ------------------------------------------------------------------------ parameters in yaml
def _yaml_parameters(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text()) or {}
    params: dict[str, Any] = {}
    for section in data.values():
        params.update((section or {}).get("ros__parameters", {}))
    return params


def _node_class(module: types.ModuleType) -> type:
    from rclpy.node import Node

    classes = [obj for obj in vars(module).values() if inspect.isclass(obj)
               and issubclass(obj, Node) and obj.__module__ == module.__name__]  # fmt: skip
    assert len(classes) == 1, f"{module.__name__} should define one node class, found {classes}"
    return classes[0]


@pytest.mark.ros
@pytest.mark.parametrize("config", CONFIGS, ids=[c.name for c in CONFIGS])
def test_every_yaml_parameter_is_declared_by_its_node_with_that_type(config, context):
    from rclpy.parameter import Parameter

    module_name = f"mmdrfuse_ros.nodes.{config.stem}_node"
    if importlib.util.find_spec(module_name) is None:
        pytest.skip(f"{module_name} does not exist (yet)")
    params = _yaml_parameters(config)
    assert params, f"{config.name} has no ros__parameters"
    overrides = [Parameter(k, value=v) for k, v in params.items() if v != [] and k != "autostart"]
    overrides.append(Parameter("autostart", value=False))  # declare only; ignored if undeclared
    node = _node_class(importlib.import_module(module_name))(
        context=context, parameter_overrides=overrides
    )
    try:
        for name, value in params.items():
            assert node.has_parameter(name), f"{config.name}: {name} is not declared by the node"
            if value == []:
                continue  # an empty YAML list has no type
            declared = node.describe_parameter(name).type
            expected = Parameter.Type.from_parameter_value(value).value
            assert declared == expected, f"{config.name}: {name} is type {declared}, yaml {value!r}"
            if name != "autostart":  # overridden above so that nothing starts
                assert node.get_parameter(name).value == value
    finally:
        node.destroy_node()


@pytest.mark.ros
def test_fusion_yaml_lists_every_fusion_parameter(context):
    """fusion.yaml is the documented, complete configuration (arrays without defaults aside)."""
    from mmdrfuse_ros.settings.fusion import FUSION_PARAMS as PARAMS

    listed = set(_yaml_parameters(REPO / "config" / "fusion.yaml"))
    with_default = {p.name for p in PARAMS if p.default is not None}
    assert with_default <= listed, f"missing from fusion.yaml: {with_default - listed}"
    text = (REPO / "config" / "fusion.yaml").read_text()
    for p in PARAMS:
        assert p.name in text, f"{p.name} is not mentioned in fusion.yaml"
