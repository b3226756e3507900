"""Thermal/RGB fusion and pedestrian detection.

    ros2 launch mmdrfuse_ros fusion.launch.py \\
        thermal_topic:=/flir/image_raw rgb_topic:=/camera/color/image_raw device:=cuda
    ros2 launch mmdrfuse_ros fusion.launch.py params_file:=my_bag/mmdrfuse_params.yaml \\
        use_sim_time:=true
    ros2 launch mmdrfuse_ros fusion.launch.py --show-args

Starts ``fusion_node`` and ``detector_node`` with ``config/fusion.yaml`` and
``config/detector.yaml`` (this package's share directory), then ``params_file`` over them, then
the launch arguments that are set.

Arguments (``--show-args`` lists them with their defaults):

* ``params_file``: a ROS parameters YAML applied over the shipped defaults. Sections:
  ``fusion_node:`` / ``detector_node:`` (also written ``/fusion_node``, ``/**/fusion_node`` or
  ``<namespace>/fusion_node``) for one node, ``/**:`` for both; each holds ``ros__parameters:``.
  ``fusion_node:`` applies whatever the ``namespace`` argument is.
* ``log_level``: debug, info, warn, error or fatal, for both nodes.
* ``detector_model``: a YOLOv5/YOLOv8 ``.onnx`` file: the detector's ``model_path``, and
  ``backend: onnx``.
* ``publish_detection_image``: the detector also publishes ``detections/image`` with the boxes
  drawn (its ``publish_image`` parameter).
* ``use_sim_time`` (both nodes), ``device``, ``weights``, ``autostart`` (the fusion node).
* ``namespace`` of both nodes; ``thermal_topic``, ``rgb_topic``, ``rgb_info_topic``,
  ``fused_topic``: remaps of the package's topic names.
* ``fastdds_profile``: see Transport below.

A launch argument that is given (on the command line, or by a launch file that includes this
one) overrides ``params_file``; one not given leaves its parameter to ``params_file`` or the
shipped default (``detector_model:=''`` counts as not given).

Checked before any node starts: ``params_file`` exists and is YAML of that shape, every key is a
parameter of the node its section applies to (``/**``: of one of them), with the parameter's
type (``1`` is not a double: write ``1.0``), choices and range, and the resulting configuration
of each node is one it accepts; the launch arguments likewise. Anything wrong stops the launch
with a non-zero exit and names the file, the key and the reason. The nodes then get the
validated values in a generated YAML file (``--params-file``), so what was checked is exactly
what they apply.

Activation: both nodes are lifecycle-aware and activate themselves (``autostart: true``), so
this file starts them as plain nodes and needs no lifecycle event plumbing, and they behave the
same under ``ros2 run``, this launch file and the in-process replay tool. With
``autostart:=false`` the fusion node waits in ``unconfigured`` for a lifecycle manager or
``ros2 lifecycle set /fusion_node configure`` / ``activate``.

Transport: unless ``FASTDDS_DEFAULT_PROFILES_FILE`` or ``FASTRTPS_DEFAULT_PROFILES_FILE`` is
already exported, the nodes get ``config/fastdds_large_data.xml`` (in the variable their Fast DDS
reads: ``mmdrfuse_ros.transport``), a larger shared-memory segment so that best-effort camera
images are not lost (see the README). ``fastdds_profile:=''`` turns it off;
``fastdds_profile:=/path/my.xml`` uses yours. The profile changes no discovery settings.
"""

from __future__ import annotations

import difflib
import os
import tempfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml
from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch_ros.actions import Node

from launch import LaunchDescription
from mmdrfuse_ros import topics
from mmdrfuse_ros.transport import DEFAULT_PROFILE_NAME, PROFILE_VARIABLES, profile_environment

PACKAGE = "mmdrfuse_ros"
NODES = ("fusion_node", "detector_node")
LOG_LEVELS = ("debug", "info", "warn", "error", "fatal")
#: parameters every rclpy node has, accepted in any section
COMMON_PARAMS = {"use_sim_time": "bool"}
#: launch argument -> (nodes, parameter) it sets when it is given
ARGUMENT_PARAMS = {
    "use_sim_time": (NODES, "use_sim_time"),
    "device": (("fusion_node",), "device"),
    "weights": (("fusion_node",), "weights"),
    "autostart": (("fusion_node",), "autostart"),
    "detector_model": (("detector_node",), "model_path"),
    "publish_detection_image": (("detector_node",), "publish_image"),
}
BOOL_ARGUMENTS = ("use_sim_time", "autostart", "publish_detection_image")
#: the context local that holds the names of the arguments given to this launch
GIVEN_ARGUMENTS = "mmdrfuse_ros_given_arguments"
_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")


class LaunchConfigurationError(ValueError):
    """A params file or launch argument the nodes would refuse: names the source and key."""


# ------------------------------------------------------------------------ arguments
def argument_table(config: Path) -> tuple[tuple[str, str, str], ...]:
    """(name, default, description) of every argument of this file (``--show-args``)."""
    return (
        ("params_file", "", "YAML parameters applied over the shipped config/fusion.yaml and "
         "config/detector.yaml: sections fusion_node:, detector_node: or /** (both), each with "
         "ros__parameters:; checked before any node starts ('' = none)"),
        ("log_level", "info", f"log level of both nodes: {', '.join(LOG_LEVELS)}"),
        ("detector_model", "", "YOLOv5/YOLOv8 .onnx model for the detector (sets its model_path "
         "and backend onnx); '' = from the parameters (HOG)"),
        ("publish_detection_image", "false", "the detector also publishes detections/image with "
         "the boxes drawn (its publish_image parameter)"),
        ("use_sim_time", "false", "use /clock (bag replay with ros2 bag play --clock)"),
        ("device", "", "fusion device: '' (auto), cpu, cuda, cuda:N"),
        ("weights", "", "student checkpoint; '' = the shipped default"),
        ("autostart", "true", "the fusion node configures and activates itself"),
        ("namespace", "", "namespace of both nodes"),
        ("thermal_topic", topics.THERMAL_IMAGE, "thermal image input"),
        ("rgb_topic", topics.RGB_IMAGE, "RGB image input"),
        ("rgb_info_topic", topics.RGB_CAMERA_INFO,
         "RGB camera_info (with publish_camera_info: true)"),
        ("fused_topic", topics.FUSED_IMAGE, "fused image: fusion output, detector input"),
        ("fastdds_profile", str(config / DEFAULT_PROFILE_NAME), "Fast DDS XML profile for the "
         f"nodes ('' = none); an exported {' or '.join(PROFILE_VARIABLES)} wins"),
    )  # fmt: skip


# ------------------------------------------------------------------------ parameter tables
def parameter_tables() -> dict[str, tuple[tuple[Any, ...], Callable[[Mapping], str | None]]]:
    """node -> (its parameter table, the node's own check of one whole configuration)."""
    from mmdrfuse_ros.settings.detector import DETECTOR_PARAMS, check_detector_values
    from mmdrfuse_ros.settings.fusion import FUSION_PARAMS, check_fusion_values

    return {
        "fusion_node": (FUSION_PARAMS, check_fusion_values),
        "detector_node": (DETECTOR_PARAMS, lambda v: check_detector_values(v, load_model=True)),
    }


def ros_type(param: Any) -> str:
    """The ROS type a node declares a table entry with: bool, integer, double, string, <x>_array."""
    if param.array_type:
        return param.array_type
    if isinstance(param.default, (list, tuple)):
        return f"{value_type(param.default[0]) if param.default else 'double'}_array"
    return value_type(param.default) or "string"


def value_type(value: Any) -> str | None:
    """The ROS type a YAML value is read as (None: no parameter type, e.g. a mixed list)."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "double"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        if not value:
            return "empty_array"
        kinds = {value_type(item) for item in value}
        if len(kinds) == 1 and kinds <= {"bool", "integer", "double", "string"}:
            return f"{kinds.pop()}_array"
    return None


def check_type(expected: str, value: Any) -> str | None:
    """Why ``value`` is not of the ROS type ``expected`` (rclpy would refuse it), or None."""
    got = value_type(value)
    if got == expected or (got == "empty_array" and expected.endswith("_array")):
        return None  # [] leaves an array parameter unset
    hint = ""
    if expected.startswith("double") and got and got.startswith("integer"):
        hint = " (write 1.0, not 1)"
    shown = got.replace("_", " ") if got else type(value).__name__
    return f"expected {expected.replace('_', ' ')}, got {shown} {value!r}{hint}"


# ------------------------------------------------------------------------ the params file
def section_nodes(key: str, namespace: str) -> tuple[str, ...]:
    """The nodes of this file that a params-file section applies to (none: not ours)."""
    if key in ("/**", "**"):
        return NODES
    ns = namespace.strip("/")
    for node in NODES:
        names = {node, f"/{node}", f"/**/{node}", f"**/{node}"}
        if ns:
            names |= {f"{ns}/{node}", f"/{ns}/{node}"}
        if key in names:
            return (node,)
    return ()


def flatten(mapping: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested YAML mappings as ROS parameter names (``a: {b: 1}`` is parameter ``a.b``)."""
    flat: dict[str, Any] = {}
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def read_params_file(path: str, namespace: str) -> list[tuple[str, tuple[str, ...], dict]]:
    """(section, nodes, {parameter: value}) of each section, in file order; shape errors raise."""
    file = Path(path).expanduser()
    where = f"params_file {str(file)!r}"
    if not file.is_file():
        raise LaunchConfigurationError(f"{where}: no such file")
    try:
        data = yaml.safe_load(file.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise LaunchConfigurationError(
            f"{where}: not readable as YAML: {_yaml_reason(exc)}"
        ) from exc
    if not isinstance(data, Mapping) or not data:
        raise LaunchConfigurationError(
            f"{where}: expected a mapping of node sections (fusion_node:, detector_node:, /**:),"
            f" got {type(data).__name__}"
        )
    sections = []
    for key, body in data.items():
        nodes = section_nodes(str(key), namespace)
        if not nodes:
            raise LaunchConfigurationError(
                f"{where}: section {key!r} matches no node of this launch file (use "
                f"{', '.join(NODES)} or /** for both)"
            )
        if not isinstance(body, Mapping) or set(body) != {"ros__parameters"}:
            raise LaunchConfigurationError(
                f"{where}: section {key!r} must hold exactly one key, ros__parameters"
            )
        params = body["ros__parameters"]
        if not isinstance(params, Mapping):
            raise LaunchConfigurationError(f"{where}: {key}.ros__parameters must be a mapping")
        sections.append((str(key), nodes, flatten(params)))
    return sections


def _yaml_reason(exc: Exception) -> str:
    """One line: where in the file and what the YAML parser found."""
    mark = getattr(exc, "problem_mark", None)
    if mark is None:
        return " ".join(str(exc).split())
    return f"line {mark.line + 1}, column {mark.column + 1}: {getattr(exc, 'problem', exc)}"


def file_values(
    path: str, namespace: str, tables: Mapping[str, tuple[tuple[Any, ...], Any]]
) -> dict[str, dict[str, Any]]:
    """node -> {parameter: value} from the params file, each key checked against the tables."""
    where = f"params_file {str(Path(path).expanduser())!r}"
    values: dict[str, dict[str, Any]] = {node: {} for node in NODES}
    for key, nodes, params in read_params_file(path, namespace):
        for name, value in params.items():
            owners = [n for n in nodes if name in _table(tables[n])] + (
                list(nodes) if name in COMMON_PARAMS else [])  # fmt: skip
            if not owners and name.startswith("qos_overrides."):
                owners = list(nodes)  # rclpy declares and checks these itself
            if not owners:
                known = sorted({p for n in nodes for p in _table(tables[n])} | set(COMMON_PARAMS))
                close = difflib.get_close_matches(name, known, n=1)
                raise LaunchConfigurationError(
                    f"{where}: {key}.{name}: unknown parameter of {' and '.join(nodes)}"
                    + (f" (did you mean {close[0]!r}?)" if close else "")
                )
            for node in owners:
                param = _table(tables[node]).get(name)
                expected = ros_type(param) if param is not None else COMMON_PARAMS.get(name)
                if expected and (reason := check_type(expected, value)):
                    raise LaunchConfigurationError(f"{where}: {key}.{name}: {reason}")
                values[node][name] = value
    return values


def _table(entry: tuple[tuple[Any, ...], Any]) -> dict[str, Any]:
    return {param.name: param for param in entry[0]}


def shipped_values(config: Path) -> dict[str, dict[str, Any]]:
    """node -> {parameter: value} of config/<node>.yaml (their ``/**`` sections)."""
    values = {}
    for node in NODES:
        data = yaml.safe_load((config / f"{node.removesuffix('_node')}.yaml").read_text()) or {}
        merged: dict[str, Any] = {}
        for body in data.values():
            merged.update(flatten((body or {}).get("ros__parameters", {})))
        values[node] = merged
    return values


# ------------------------------------------------------------------------ launch arguments
def record_given(context: Any, names: Iterable[str]) -> list:
    """Note which of this file's arguments were given (on the command line or by an including
    launch file): run before the declarations, which fill in the defaults of the others."""
    given = frozenset(name for name in names if name in context.launch_configurations)
    context.extend_locals({GIVEN_ARGUMENTS: given})
    return []


def argument_values(arguments: Mapping[str, str], given: Iterable[str]) -> dict:
    """node -> {parameter: value} of the launch arguments that were given."""
    values: dict[str, dict[str, Any]] = {node: {} for node in NODES}
    for argument, (nodes, param) in ARGUMENT_PARAMS.items():
        text = arguments[argument]
        if argument not in given or (argument == "detector_model" and not text):
            continue
        value: Any = text
        if argument in BOOL_ARGUMENTS:
            if text.lower() not in _TRUE + _FALSE:
                raise LaunchConfigurationError(
                    f"launch argument {argument}:={text!r}: expected true or false"
                )
            value = text.lower() in _TRUE
        for node in nodes:
            values[node][param] = value
    if model := values["detector_node"].get("model_path"):
        if not Path(model).expanduser().is_file():
            raise LaunchConfigurationError(
                f"launch argument detector_model:={model!r}: no such file"
            )
        values["detector_node"]["backend"] = "onnx"
    return values


def check_configuration(node: str, values: Mapping[str, Any], tables: Mapping, source: str):
    """Raise with ``source`` and the reason when ``node`` would refuse this configuration."""
    from mmdrfuse_ros.settings import defaults

    table, check = tables[node]
    for name, value in values.items():
        param = _table(tables[node]).get(name)
        if param is not None and (reason := check_type(ros_type(param), value)):
            raise LaunchConfigurationError(f"{source}: {node}.{name}: {reason}")
    if reason := check(defaults(table) | dict(values)):
        raise LaunchConfigurationError(f"{source}: {node}: {reason}")


def resolve_parameters(
    arguments: Mapping[str, str], given: Iterable[str], config: Path
) -> dict[str, dict[str, Any]]:
    """node -> the validated parameters to apply over the shipped YAML; raises with the cause."""
    level = arguments["log_level"]
    if level.lower() not in LOG_LEVELS:
        raise LaunchConfigurationError(
            f"launch argument log_level:={level!r}: expected one of {', '.join(LOG_LEVELS)}"
        )
    tables = parameter_tables()
    shipped = shipped_values(config)
    params_file = arguments["params_file"]
    namespace = arguments["namespace"]
    from_file = {node: {} for node in NODES}
    if params_file:
        from_file = file_values(params_file, namespace, tables)
    from_arguments = argument_values(arguments, given)
    resolved = {}
    for node in NODES:
        with_file = shipped[node] | from_file[node]
        if params_file:
            where = f"params_file {str(Path(params_file).expanduser())!r}"
            check_configuration(node, with_file, tables, where)
        final = with_file | from_arguments[node]
        check_configuration(node, final, tables, "launch arguments")
        use_sim_time = final.get("use_sim_time", False)
        resolved[node] = from_file[node] | from_arguments[node] | {"use_sim_time": use_sim_time}
    return resolved


def write_parameters(node: str, values: Mapping[str, Any]) -> str:
    """A ``/**`` params file of ``values`` for ``--params-file`` (YAML keeps the types exact)."""
    with tempfile.NamedTemporaryFile("w", prefix=f"{node}_", suffix=".yaml", delete=False) as file:
        yaml.safe_dump({"/**": {"ros__parameters": dict(values)}}, file, sort_keys=False)
    return file.name


# ------------------------------------------------------------------------ the nodes
def make_nodes(context: Any, config: Path) -> list[Node]:
    """The two nodes, built at launch time from the validated configuration."""
    arguments = dict(context.launch_configurations)
    given = context.get_locals_as_dict().get(GIVEN_ARGUMENTS, frozenset())
    resolved = resolve_parameters(arguments, given, config)
    environ = getattr(context, "environment", os.environ)
    profile = arguments["fastdds_profile"]
    common = {
        "package": PACKAGE,
        "namespace": arguments["namespace"],
        "output": "screen",
        "ros_arguments": ["--log-level", arguments["log_level"].lower()],
        "additional_env": profile_environment(profile, environ),
    }
    fused = arguments["fused_topic"]
    fusion = Node(
        executable="fusion_node",
        name="fusion_node",
        parameters=[
            str(config / "fusion.yaml"),
            write_parameters("fusion_node", resolved["fusion_node"]),
        ],
        remappings=[
            (topics.THERMAL_IMAGE, arguments["thermal_topic"]),
            (topics.RGB_IMAGE, arguments["rgb_topic"]),
            (topics.RGB_CAMERA_INFO, arguments["rgb_info_topic"]),
            (topics.FUSED_IMAGE, fused),
        ],
        **common,
    )
    detector = Node(
        executable="detector_node",
        name="detector_node",
        parameters=[
            str(config / "detector.yaml"),
            write_parameters("detector_node", resolved["detector_node"]),
        ],
        remappings=[(topics.FUSED_IMAGE, fused)],
        **common,
    )
    return [fusion, detector]


def generate_launch_description() -> LaunchDescription:
    config = Path(get_package_share_directory(PACKAGE)) / "config"
    table = argument_table(config)
    return LaunchDescription([
        OpaqueFunction(function=record_given, args=[[name for name, _, _ in table]]),
        *(DeclareLaunchArgument(name, default_value=default, description=description)
          for name, default, description in table),
        OpaqueFunction(function=make_nodes, args=[config]),
    ])  # fmt: skip
