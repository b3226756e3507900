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
import sys
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

    def __init__(self, *args: Any, **kwargs: Any):
        self.args, self.kwargs = args, kwargs


def _stand_ins(share: Path) -> dict[str, types.ModuleType]:
    names = {
        "launch": ["LaunchDescription"],
        "launch.actions": ["DeclareLaunchArgument", "SetEnvironmentVariable", "GroupAction",
                           "IncludeLaunchDescription", "RegisterEventHandler", "EmitEvent",
                           "LogInfo"],
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


@pytest.fixture
def description(monkeypatch) -> Any:
    for name, module in _stand_ins(REPO).items():
        monkeypatch.setitem(sys.modules, name, module)
    namespace = runpy.run_path(str(LAUNCH_FILE))
    return namespace["generate_launch_description"]()


def _walk(value: Any):
    """Every _Recorded object inside nested args/kwargs/lists/dicts."""
    if isinstance(value, _Recorded):
        yield value
        for item in (*value.args, *value.kwargs.values()):
            yield from _walk(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _walk(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _walk(item)


def test_launch_description_builds_with_arguments_configs_and_remaps(description):
    actions = description.args[0]
    declared = {a.args[0]: a.kwargs.get("default_value") for a in actions
                if type(a).__name__ == "DeclareLaunchArgument"}  # fmt: skip
    for name in ("use_sim_time", "device", "weights", "thermal_topic", "rgb_topic",
                 "fused_topic"):  # fmt: skip
        assert name in declared, f"launch argument {name} missing"
    used = {r.args[0] for r in _walk(actions) if type(r).__name__ == "LaunchConfiguration"}
    assert used <= set(declared), f"undeclared launch arguments used: {used - set(declared)}"

    nodes = {a.kwargs["executable"]: a for a in actions if type(a).__name__ == "Node"}
    assert set(nodes) == {"fusion_node", "detector_node"}
    for exe, node in nodes.items():
        files = [Path(p) for p in node.kwargs["parameters"] if isinstance(p, str)]
        assert files == [REPO / "config" / f"{exe.removesuffix('_node')}.yaml"], files
        assert files[0].is_file() or exe == "detector_node", f"{files[0]} missing"
        overrides = next(p for p in node.kwargs["parameters"] if isinstance(p, dict))
        assert "use_sim_time" in overrides
        for source, _target in node.kwargs["remappings"]:
            assert source in vars(topics).values(), f"remap of unknown topic {source}"
    assert {src for src, _ in nodes["fusion_node"].kwargs["remappings"]} >= {
        topics.THERMAL_IMAGE,
        topics.RGB_IMAGE,
        topics.FUSED_IMAGE,
    }
    assert topics.FUSED_IMAGE in {src for src, _ in nodes["detector_node"].kwargs["remappings"]}

    # the Fast DDS profile: shipped, conditional (a user's own profile wins)
    env = [a for a in actions if type(a).__name__ == "SetEnvironmentVariable"]
    assert {a.args[0] for a in env} == {"FASTDDS_DEFAULT_PROFILES_FILE",
                                        "FASTRTPS_DEFAULT_PROFILES_FILE"}  # fmt: skip
    assert all("condition" in a.kwargs for a in env)
    assert Path(declared["fastdds_profile"]).is_file()


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
    from rclpy.parameter import Parameter

    from mmdrfuse_ros.nodes.fusion_node import PARAMS

    listed = set(_yaml_parameters(REPO / "config" / "fusion.yaml"))
    with_default = {p.name for p in PARAMS if not isinstance(p.default, Parameter.Type)}
    assert with_default <= listed, f"missing from fusion.yaml: {with_default - listed}"
    text = (REPO / "config" / "fusion.yaml").read_text()
    for p in PARAMS:
        assert p.name in text, f"{p.name} is not mentioned in fusion.yaml"
