"""The fusion node's parameters that suit a bag, written next to it: ``<bag>/mmdrfuse_params.yaml``.

Why: nodes started by ``ros2 launch`` know nothing of the bag's calibration; without the
homography they resize the thermal image instead of registering it, and the fused frames are
wrong. ``mmdrfuse bag synth`` and ``bag from-folders`` therefore write a ROS params file (a
``fusion_node:`` section) holding the bag's homography and the thermal normalisation that suits
its thermal encoding, and ``mmdrfuse bag info`` prints the commands that use it::

    ros2 launch mmdrfuse_ros fusion.launch.py params_file:=<bag>/mmdrfuse_params.yaml \\
        use_sim_time:=true
    ros2 bag play <bag> --clock

Every key is checked against the node's parameter table
(:data:`mmdrfuse_ros.settings.fusion.FUSION_PARAMS`: name, ROS type, choices, the node's own
check) before the file is written, so the file always loads.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from mmdrfuse_ros.outputs import write_result
from mmdrfuse_ros.topics import FUSION_NODE

PARAMS_FILE = "mmdrfuse_params.yaml"
NODE = FUSION_NODE

_HEADER = """\
# fusion_node parameters for this bag, written by {source}.
# Use them with the nodes started by launch, and play the bag on sim time:
#   ros2 launch mmdrfuse_ros fusion.launch.py params_file:={path} use_sim_time:=true
#   ros2 bag play {bag} --clock
"""


def thermal_norm_for(encoding: str) -> str:
    """The normalisation that suits a thermal encoding: 8-bit frames are already an image
    (``auto`` keeps them as they are); 16-bit radiometric counts need a per-frame window."""
    return "auto" if encoding in ("mono8", "8UC1") else "percentile"


def fusion_params_for(
    homography: Sequence[Sequence[float]] | None,
    thermal_encoding: str,
    independent_frames: bool = False,
) -> dict[str, Any]:
    """The fusion node's parameters for a bag: its homography (None: the cameras are aligned),
    the thermal normalisation for its encoding, and, for ``independent_frames`` (dataset
    pairs, not a video), no temporal smoothing of the thermal window."""
    params: dict[str, Any] = {"thermal_norm": thermal_norm_for(thermal_encoding)}
    if homography is not None:
        params["homography"] = [float(v) for row in homography for v in row]
    if independent_frames:
        params["thermal_smoothing"] = 0.0
    check_params(params)
    return params


def check_params(params: Mapping[str, Any]) -> None:
    """ValueError unless the fusion node would accept every value (the params-file rules of
    :func:`mmdrfuse_ros.settings.params_file.check_node_params`)."""
    from mmdrfuse_ros.settings.params_file import check_node_params

    check_node_params(NODE, dict(params), "bag params")


def params_path(bag: str | Path) -> Path:
    """Where a bag's params file lives: inside the bag folder (next to a bare storage file)."""
    bag = Path(bag)
    return (bag if bag.is_dir() else bag.parent) / PARAMS_FILE


def write_params(bag: str | Path, params: Mapping[str, Any], source: str) -> Path | None:
    """Write the bag's params file (checked first); returns its path, or where it went when
    the bag folder could not take it (:func:`mmdrfuse_ros.outputs.write_result`)."""
    check_params(params)
    path = params_path(bag)
    header = _HEADER.format(source=source, path=shlex.quote(str(path.resolve())),
                            bag=shlex.quote(str(Path(bag).resolve())))
    body = yaml.safe_dump({NODE: {"ros__parameters": dict(params)}}, sort_keys=False,
                          default_flow_style=None, width=4096)
    return write_result(path, header + body, "bag's params file")


def read_params(bag: str | Path) -> dict[str, Any] | None:
    """The ``fusion_node`` parameters of a bag's params file, or None when it has none;
    ValueError when the file is there but unusable."""
    path = params_path(bag)
    if not path.is_file():
        return None
    try:
        doc = yaml.safe_load(path.read_text())
        params = dict(doc[NODE]["ros__parameters"])
    except (OSError, yaml.YAMLError, KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{path}: not a {NODE} params file ({type(exc).__name__}: {exc})") \
            from None
    check_params(params)
    return params


def play_commands(bag: str | Path) -> list[str]:
    """The shell lines that replay ``bag`` into nodes started by launch (with its params file
    when it has one)."""
    bag = Path(bag).resolve()
    path = params_path(bag)
    launch = "ros2 launch mmdrfuse_ros fusion.launch.py"
    if path.is_file():
        launch += f" params_file:={shlex.quote(str(path))}"
    return [f"{launch} use_sim_time:=true", f"ros2 bag play {shlex.quote(str(bag))} --clock"]
