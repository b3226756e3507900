"""ROS parameters from the tables of :mod:`mmdrfuse_ros.settings`: descriptors, declaration,
reading values back."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.exceptions import ParameterNotDeclaredException, ParameterUninitializedException
from rclpy.node import Node
from rclpy.parameter import Parameter

from mmdrfuse_ros.settings.spec import Param

_ARRAY_TYPES = {
    "bool_array": Parameter.Type.BOOL_ARRAY,
    "integer_array": Parameter.Type.INTEGER_ARRAY,
    "double_array": Parameter.Type.DOUBLE_ARRAY,
    "string_array": Parameter.Type.STRING_ARRAY,
}


def descriptor_for(spec: Param) -> ParameterDescriptor:
    """The ParameterDescriptor that makes rclpy enforce the ranges and documents the choices."""
    description = spec.description
    if spec.choices:
        description += f" [{', '.join(spec.choices)}]"
    descriptor = ParameterDescriptor(description=description)
    if spec.choices:
        descriptor.additional_constraints = f"one of: {', '.join(spec.choices)}"
    if spec.int_range:
        descriptor.integer_range = [
            IntegerRange(from_value=spec.int_range[0], to_value=spec.int_range[1], step=1)
        ]
    if spec.float_range:
        descriptor.floating_point_range = [
            FloatingPointRange(from_value=spec.float_range[0], to_value=spec.float_range[1])
        ]
    return descriptor


def declare_all(node: Node, params: Iterable[Param]) -> None:
    """Declare every parameter of a table (arrays without a default by their type)."""
    for spec in params:
        default = _ARRAY_TYPES[spec.array_type] if spec.array_type else spec.default
        node.declare_parameter(spec.name, default, descriptor_for(spec))


def all_declared(node: Node, params: Iterable[Param]) -> bool:
    return all(node.has_parameter(spec.name) for spec in params)


def read_values(node: Node, params: Iterable[Param]) -> dict[str, Any]:
    """``{name: value}`` of a table's parameters; None for unset arrays and undeclared names."""
    values: dict[str, Any] = {}
    for spec in params:
        try:
            values[spec.name] = node.get_parameter(spec.name).value
        except (ParameterUninitializedException, ParameterNotDeclaredException):
            values[spec.name] = None  # an array declared without a default, or not declared yet
    return values
