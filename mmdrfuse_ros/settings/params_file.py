"""ROS parameters YAML files for this package's nodes, checked without ROS.

    from mmdrfuse_ros.settings.params_file import ParamsFileError, load_params_file
    values = load_params_file("my_bag/mmdrfuse_params.yaml")   # node -> {parameter: value}
    reason = check_params_file("my_bag/mmdrfuse_params.yaml")   # or None

A params file holds sections ``fusion_node:`` / ``detector_node:`` (also written ``/fusion_node``,
``/**/fusion_node`` or ``<namespace>/fusion_node``) for one node and ``/**:`` for both, each with
``ros__parameters:``. rcl refuses a whole node for one bad value (``slop: 1`` is an integer, not a
double) and says little about which file caused it, so the launch file, ``mmdrfuse bag`` and
``mmdrfuse calibrate`` check files here first, against the nodes' own parameter tables
(:mod:`.fusion`, :mod:`.detector`): every key a known parameter (with a did-you-mean), of its ROS
type, and the resulting configuration one the node accepts. Every message names the file, the
key and the reason.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ..topics import DETECTOR_NODE, FUSION_NODE
from .spec import Param, by_name, defaults

NODES = (FUSION_NODE, DETECTOR_NODE)
#: parameters every rclpy node has, accepted in any section: name -> ROS type
COMMON_PARAMS = {"use_sim_time": "bool"}
#: parameters rclpy declares and checks itself (QoSOverridingOptions), accepted as they are
RCLPY_PREFIXES = ("qos_overrides.",)


class ParamsFileError(ValueError):
    """A params file or parameter values a node would refuse: names the source, key and why."""


@dataclass(frozen=True)
class Section:
    """One top-level section of a params file: its key, the nodes it applies to, its values."""

    key: str
    nodes: tuple[str, ...]
    params: dict[str, Any]


# ------------------------------------------------------------------------ the nodes' tables
def parameter_table(node: str) -> tuple[Param, ...]:
    """The parameter table ``node`` declares its ROS parameters from."""
    if node == FUSION_NODE:
        from .fusion import FUSION_PARAMS

        return FUSION_PARAMS
    if node == DETECTOR_NODE:
        from .detector import DETECTOR_PARAMS

        return DETECTOR_PARAMS
    raise ValueError(f"no parameter table for {node!r}: one of {', '.join(NODES)}")


def node_check(node: str, load_model: bool = True) -> Callable[[Mapping[str, Any]], str | None]:
    """The node's own check of one whole configuration (the reason it refuses it, or None)."""
    if node == FUSION_NODE:
        from .fusion import check_fusion_values

        return check_fusion_values
    from .detector import check_detector_values

    parameter_table(node)  # an unknown node raises
    return lambda values: check_detector_values(values, load_model=load_model)


# ------------------------------------------------------------------------ ROS types
def ros_type(param: Param) -> str:
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
    if isinstance(value, (list, tuple)):
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


def expected_type(node: str, name: str) -> str | None:
    """The ROS type of ``node``'s parameter ``name``; None when rclpy itself checks it or
    ``node`` has no such parameter."""
    param = by_name(parameter_table(node)).get(name)
    return ros_type(param) if param is not None else COMMON_PARAMS.get(name)


# ------------------------------------------------------------------------ reading a file
def describe(path: str | Path) -> str:
    """How messages name a params file: ``params_file '<path>'``."""
    return f"params_file {str(Path(path).expanduser())!r}"


def section_nodes(key: str, namespace: str = "") -> tuple[str, ...]:
    """The nodes a params-file section applies to (none: not one of this package's nodes)."""
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


def _yaml_reason(exc: Exception) -> str:
    """One line: where in the file and what the YAML parser found."""
    mark = getattr(exc, "problem_mark", None)
    if mark is None:
        return " ".join(str(exc).split())
    return f"line {mark.line + 1}, column {mark.column + 1}: {getattr(exc, 'problem', exc)}"


def _read_yaml(path: str | Path) -> Any:
    file = Path(path).expanduser()
    if not file.is_file():
        raise ParamsFileError(f"{describe(path)}: no such file")
    try:
        return yaml.safe_load(file.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ParamsFileError(
            f"{describe(path)}: not readable as YAML: {_yaml_reason(exc)}"
        ) from exc


def read_sections(path: str | Path, namespace: str = "") -> list[Section]:
    """The sections of a params file, in file order; a file of the wrong shape raises."""
    where = describe(path)
    data = _read_yaml(path)
    if not isinstance(data, Mapping) or not data:
        raise ParamsFileError(
            f"{where}: expected a mapping of node sections (fusion_node:, detector_node:, /**:),"
            f" got {type(data).__name__}"
        )
    sections = []
    for key, body in data.items():
        nodes = section_nodes(str(key), namespace)
        if not nodes:
            raise ParamsFileError(
                f"{where}: section {key!r} matches no node (use {', '.join(NODES)}"
                + (f", {namespace.strip('/')}/<node>" if namespace.strip("/") else "")
                + " or /** for both)"
            )
        if not isinstance(body, Mapping) or set(body) != {"ros__parameters"}:
            raise ParamsFileError(f"{where}: section {key!r} must hold exactly one key, "
                                  "ros__parameters")  # fmt: skip
        params = body["ros__parameters"]
        if not isinstance(params, Mapping):
            raise ParamsFileError(f"{where}: {key}.ros__parameters must be a mapping")
        sections.append(Section(str(key), nodes, flatten(params)))
    return sections


def _owners(name: str, nodes: tuple[str, ...]) -> list[str]:
    """The nodes among ``nodes`` that take parameter ``name``."""
    if name in COMMON_PARAMS or name.startswith(RCLPY_PREFIXES):
        return list(nodes)
    return [node for node in nodes if name in by_name(parameter_table(node))]


def _unknown(where: str, section: Section, name: str) -> ParamsFileError:
    known = sorted({p.name for n in section.nodes for p in parameter_table(n)} | set(COMMON_PARAMS))
    close = difflib.get_close_matches(name, known, n=1)
    return ParamsFileError(
        f"{where}: {section.key}.{name}: unknown parameter of {' and '.join(section.nodes)}"
        + (f" (did you mean {close[0]!r}?)" if close else "")
    )


def file_values(path: str | Path, namespace: str = "") -> dict[str, dict[str, Any]]:
    """node -> {parameter: value} of a params file, each key checked for its name and ROS type.

    ``/**`` gives each node the parameters it has (a key neither has is an error); a later
    section overrides an earlier one, as in rcl.
    """
    where = describe(path)
    values: dict[str, dict[str, Any]] = {node: {} for node in NODES}
    for section in read_sections(path, namespace):
        for name, value in section.params.items():
            owners = _owners(name, section.nodes)
            if not owners:
                raise _unknown(where, section, name)
            for node in owners:
                expected = expected_type(node, name)
                if expected and (reason := check_type(expected, value)):
                    raise ParamsFileError(f"{where}: {section.key}.{name}: {reason}")
                values[node][name] = value
    return values


# ------------------------------------------------------------------------ whole configurations
def check_configuration(
    node: str,
    values: Mapping[str, Any],
    source: str,
    load_model: bool = True,
    strict: bool = True,
) -> None:
    """ParamsFileError naming ``source`` when ``node`` would refuse ``values`` (laid over its
    table's defaults): a wrong ROS type or its own check's reason, and with ``strict`` a
    parameter it lacks (``strict=False``: ignored, as rclpy ignores an undeclared override,
    for values whose names were checked where they came from)."""
    table = parameter_table(node)
    known = by_name(table)
    for name, value in values.items():
        if strict and not _owners(name, (node,)):
            close = difflib.get_close_matches(name, sorted(known), n=1)
            raise ParamsFileError(
                f"{source}: {node}.{name}: unknown parameter of {node}"
                + (f" (did you mean {close[0]!r}?)" if close else "")
            )
        expected = expected_type(node, name)
        if expected and (reason := check_type(expected, value)):
            raise ParamsFileError(f"{source}: {node}.{name}: {reason}")
    configuration = {k: v for k, v in values.items() if k in known}
    if reason := node_check(node, load_model)(defaults(table) | configuration):
        raise ParamsFileError(f"{source}: {node}: {reason}")


def load_params_file(
    path: str | Path,
    namespace: str = "",
    base: Mapping[str, Mapping[str, Any]] | None = None,
    load_model: bool = True,
) -> dict[str, dict[str, Any]]:
    """node -> {parameter: value} of a params file, checked whole: names, types, and each
    node's configuration (its defaults, then ``base[node]``, e.g. the shipped YAML, then the
    file). ``load_model=False`` does not open a detector model file to check it."""
    values = file_values(path, namespace)
    for node in NODES:
        merged = dict((base or {}).get(node, {})) | values[node]
        check_configuration(node, merged, describe(path), load_model, strict=False)
    return values


def check_params_file(
    path: str | Path,
    namespace: str = "",
    base: Mapping[str, Mapping[str, Any]] | None = None,
    load_model: bool = True,
) -> str | None:
    """Why a node would refuse this params file (the message names file and key), or None."""
    try:
        load_params_file(path, namespace, base, load_model)
    except ParamsFileError as exc:
        return str(exc)
    return None


def check_node_params(node: str, params: Mapping[str, Any], source: str | None = None) -> None:
    """ParamsFileError unless ``node`` accepts ``params`` over its defaults: for a tool that
    writes a params file (its ``source`` names it in the message; default the node)."""
    check_configuration(node, params, source or "parameters", load_model=False)


def shipped_values(config: str | Path) -> dict[str, dict[str, Any]]:
    """node -> {parameter: value} of a package config folder's ``<name>.yaml`` files (all
    their sections merged: the shipped files hold one ``/**`` section each)."""
    values = {}
    for node in NODES:
        data = yaml.safe_load((Path(config) / f"{node.removesuffix('_node')}.yaml").read_text())
        merged: dict[str, Any] = {}
        for body in (data or {}).values():
            merged.update(flatten((body or {}).get("ros__parameters", {})))
        values[node] = merged
    return values


def params_document(values: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """A params file's content: one section per node (or ``/**``) holding ``values[key]``."""
    return {key: {"ros__parameters": dict(params)} for key, params in values.items() if params}
