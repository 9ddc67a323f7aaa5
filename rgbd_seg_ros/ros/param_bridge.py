"""Declare the node_params table on a node and route changes through its validators."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
from rclpy.node import Node
from rclpy.parameter import Parameter

from rgbd_seg_ros.ros import node_params


def declare_all(node: Node) -> dict[str, Any]:
    """Declare every parameter with its description; return the validated start values.

    A bad value from a params file is a startup error (fail fast with the reason) rather
    than a node that runs with something it cannot honour.
    """
    values: dict[str, Any] = {}
    for spec in node_params.PARAMS:
        descriptor = ParameterDescriptor(description=spec.description, read_only=spec.read_only)
        value = node.declare_parameter(spec.name, spec.default, descriptor).value
        reason = node_params.validate(spec.name, value)
        if reason:
            raise ValueError(f'invalid parameter: {reason}')
        values[spec.name] = value
    return values


def install_validator(node: Node, apply: Callable[[dict[str, Any]], str | None]) -> None:
    """Validate every change; ``apply`` may refuse a valid-looking change (bad checkpoint)."""

    def on_set(params: list[Parameter]) -> SetParametersResult:
        changes: dict[str, Any] = {}
        for param in params:
            reason = node_params.validate(param.name, param.value)
            if reason:
                return SetParametersResult(successful=False, reason=reason)
            changes[param.name] = param.value
        reason = apply(changes)
        return SetParametersResult(successful=reason is None, reason=reason or '')

    node.add_on_set_parameters_callback(on_set)
