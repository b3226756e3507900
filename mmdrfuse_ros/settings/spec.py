"""Parameter specs: what a node parameter is called, its default, its meaning and its limits.

The tables in :mod:`.fusion` and :mod:`.detector` are built from :class:`Param`; the nodes turn
each one into a ROS parameter descriptor, and every other tool (replay, launch checks, CLIs)
reads the same tables without importing rclpy.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

#: element types of array parameters that are declared without a default
ARRAY_TYPES = ("bool_array", "integer_array", "double_array", "string_array")


@dataclass(frozen=True)
class Param:
    """One parameter: its default, description and constraints.

    ``live``: a change is applied while the node runs, by rebuilding its engine or detector;
    other parameters apply at the next configure/activate. ``array_type``: for an array that
    has no default (``default`` is None then), the element type the node declares it with.
    """

    name: str
    default: Any
    description: str
    choices: tuple[str, ...] = ()
    int_range: tuple[int, int] | None = None
    float_range: tuple[float, float] | None = None
    live: bool = False
    array_type: str | None = None

    def __post_init__(self) -> None:
        if self.array_type is not None and self.array_type not in ARRAY_TYPES:
            raise ValueError(f"{self.name}: array_type must be one of {ARRAY_TYPES}")
        if self.array_type is not None and self.default is not None:
            raise ValueError(f"{self.name}: array_type is only for arrays without a default")


#: a parameter both nodes' tables hold: how long an input may be silent before /diagnostics warns
INPUT_TIMEOUT = Param(
    "input_timeout", 3.0, "seconds without a message on an input before /diagnostics turns "
    "WARN naming the topic (a dead camera, a wrong remap); 0 = never", float_range=(0.0, 3600.0),
)


def defaults(params: Iterable[Param]) -> dict[str, Any]:
    """``{name: default}`` of a table; arrays without a default are None ("unset")."""
    return {p.name: p.default for p in params}


def by_name(params: Iterable[Param]) -> dict[str, Param]:
    return {p.name: p for p in params}


def describe_param(spec: Param) -> str:
    """One parameter for ``--help`` and docs: name, default, limits, whether it applies live
    (while the node runs), then the description, wrapped."""
    head = f"  {spec.name} = {'(unset)' if spec.default is None else repr(spec.default)}"
    if spec.choices:
        head += f"  [one of: {', '.join(spec.choices)}]"
    elif bounds := spec.int_range or spec.float_range:
        head += f"  [{bounds[0]} .. {bounds[1]}]"
    if spec.live:
        head += "  (live)"
    body = textwrap.fill(spec.description, width=96, initial_indent=" " * 6,
                         subsequent_indent=" " * 6)
    return f"{head}\n{body}"


def format_table(params: Iterable[Param]) -> str:
    """A parameter table as text, one entry per parameter."""
    return "\n".join(describe_param(p) for p in params)


def check_choice(spec: Param, value: Any) -> str | None:
    """Why ``value`` is not one of the parameter's choices, or None."""
    if spec.choices and value not in spec.choices:
        return f"{spec.name} must be one of {list(spec.choices)}, got {value!r}"
    return None


def check_range(spec: Param, value: Any) -> str | None:
    """Why ``value`` is outside the parameter's (inclusive) range, or None."""
    bounds = spec.int_range or spec.float_range
    if bounds is None or isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if not bounds[0] <= value <= bounds[1]:
        return f"{spec.name} must be in [{bounds[0]}, {bounds[1]}], got {value}"
    return None


def check_table(params: Iterable[Param], values: Mapping[str, Any]) -> str | None:
    """The first value (of those given) outside its parameter's choices or range, or None.

    rclpy enforces the ranges through the descriptors but not the choices; tools without rclpy
    get both here.
    """
    for spec in params:
        value = values.get(spec.name)
        if value is None:
            continue
        if reason := check_choice(spec, value) or check_range(spec, value):
            return reason
    return None
