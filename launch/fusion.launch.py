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
with a non-zero exit and names the file, the key and the reason (the checks are
:mod:`mmdrfuse_ros.settings.params_file`, which ``mmdrfuse bag`` and ``mmdrfuse calibrate`` use
on the params files they write). The nodes then get the
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

import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml
from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch_ros.actions import Node

from launch import LaunchDescription
from mmdrfuse_ros import topics
from mmdrfuse_ros.resources import PACKAGE
from mmdrfuse_ros.settings.params_file import (
    NODES,
    ParamsFileError,
    check_configuration,
    describe,
    file_values,
    shipped_values,
)
from mmdrfuse_ros.transport import DEFAULT_PROFILE_NAME, PROFILE_VARIABLES, profile_environment

LOG_LEVELS = ("debug", "info", "warn", "error", "fatal")
#: launch argument -> (nodes, parameter) it sets when it is given
ARGUMENT_PARAMS = {
    "use_sim_time": (NODES, "use_sim_time"),
    "device": ((topics.FUSION_NODE,), "device"),
    "weights": ((topics.FUSION_NODE,), "weights"),
    "autostart": ((topics.FUSION_NODE,), "autostart"),
    "detector_model": ((topics.DETECTOR_NODE,), "model_path"),
    "publish_detection_image": ((topics.DETECTOR_NODE,), "publish_image"),
}
#: node (and executable) -> its shipped parameters file in config/
CONFIG_FILES = {topics.FUSION_NODE: "fusion.yaml", topics.DETECTOR_NODE: "detector.yaml"}
BOOL_ARGUMENTS = ("use_sim_time", "autostart", "publish_detection_image")
#: the context local that holds the names of the arguments given to this launch
GIVEN_ARGUMENTS = "mmdrfuse_ros_given_arguments"
_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")


class LaunchConfigurationError(ParamsFileError):
    """A launch argument the nodes would refuse: names the argument and the reason."""


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
        ("weights", "", "student checkpoint path, or a shipped student: '' = default (best on the "
         "picture), detection (best for the pedestrian detector)"),
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
    if model := values[topics.DETECTOR_NODE].get("model_path"):
        if not Path(model).expanduser().is_file():
            raise LaunchConfigurationError(
                f"launch argument detector_model:={model!r}: no such file"
            )
        values[topics.DETECTOR_NODE]["backend"] = "onnx"
    return values


def resolve_parameters(
    arguments: Mapping[str, str], given: Iterable[str], config: Path
) -> dict[str, dict[str, Any]]:
    """node -> the validated parameters to apply over the shipped YAML; raises with the cause."""
    level = arguments["log_level"]
    if level.lower() not in LOG_LEVELS:
        raise LaunchConfigurationError(
            f"launch argument log_level:={level!r}: expected one of {', '.join(LOG_LEVELS)}"
        )
    shipped = shipped_values(config)
    params_file = arguments["params_file"]
    from_file = {node: {} for node in NODES}
    if params_file:
        from_file = file_values(params_file, arguments["namespace"])
    from_arguments = argument_values(arguments, given)
    resolved = {}
    for node in NODES:
        with_file = shipped[node] | from_file[node]
        if params_file:
            check_configuration(node, with_file, describe(params_file), strict=False)
        final = with_file | from_arguments[node]
        check_configuration(node, final, "launch arguments", strict=False)
        use_sim_time = final.get("use_sim_time", False)
        resolved[node] = from_file[node] | from_arguments[node] | {"use_sim_time": use_sim_time}
    return resolved


def write_parameters(node: str, values: Mapping[str, Any]) -> str:
    """A ``/**`` params file of ``values`` for ``--params-file`` (YAML keeps the types exact)."""
    with tempfile.NamedTemporaryFile("w", prefix=f"{node}_", suffix=".yaml", delete=False) as file:
        yaml.safe_dump({"/**": {"ros__parameters": dict(values)}}, file, sort_keys=False)
    return file.name


# ------------------------------------------------------------------------ the nodes
def node_parameters(node: str, config: Path, resolved: Mapping[str, Mapping[str, Any]]) -> list:
    """A node's ``parameters``: its shipped ``config/<name>.yaml``, then the validated values
    over it (:func:`write_parameters`)."""
    return [str(config / CONFIG_FILES[node]), write_parameters(node, resolved[node])]


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
        executable="fusion_node",  # the console script (setup.py)
        name=topics.FUSION_NODE,
        parameters=node_parameters(topics.FUSION_NODE, config, resolved),
        remappings=[
            (topics.THERMAL_IMAGE, arguments["thermal_topic"]),
            (topics.RGB_IMAGE, arguments["rgb_topic"]),
            (topics.RGB_CAMERA_INFO, arguments["rgb_info_topic"]),
            (topics.FUSED_IMAGE, fused),
        ],
        **common,
    )
    detector = Node(
        executable="detector_node",  # the console script (setup.py)
        name=topics.DETECTOR_NODE,
        parameters=node_parameters(topics.DETECTOR_NODE, config, resolved),
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
