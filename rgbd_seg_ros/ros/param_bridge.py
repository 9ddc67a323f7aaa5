"""Declare the node_params table on a node and route changes through its validators.

Each descriptor carries what node_params knows, so ``ros2 param describe`` shows it: the
description, read-only, and the bounds of a number as FloatingPointRange / IntegerRange.
Real-valued parameters take an integer too (``max_range: 5`` in a params file, ``ros2 param set
... points.max_range 5``): rclpy types a parameter by its default and refuses an INTEGER for a
DOUBLE, so the integer is turned into its real before rclpy checks the type, by a pre-set
callback at run time (rclpy >= Iron) and by replacing the descriptor at declaration (rclpy
does not run pre-set callbacks for overrides).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rcl_interfaces.msg import (
    FloatingPointRange,
    IntegerRange,
    ParameterDescriptor,
    SetParametersResult,
)
from rclpy.node import Node
from rclpy.parameter import Parameter

from rgbd_seg_ros.ros import node_params

INT64_MAX = 2**63 - 1


def descriptor(spec: node_params.ParamSpec) -> ParameterDescriptor:
    """The descriptor of ``spec``: description, read-only, range and (static) type."""
    out = ParameterDescriptor(description=spec.description, read_only=spec.read_only)
    out.type = Parameter.Type.from_parameter_value(spec.default).value
    check = spec.check
    if isinstance(check, node_params.FloatRange):
        out.floating_point_range = [
            FloatingPointRange(from_value=float(check.low), to_value=float(check.high), step=0.0)
        ]
        if check.low_open:
            out.additional_constraints = f'greater than {check.low:g}'
    elif isinstance(check, node_params.IntRange):
        high = INT64_MAX if check.high is None else check.high
        out.integer_range = [IntegerRange(from_value=check.low, to_value=high, step=1)]
    return out


def _declare(node: Node, spec: node_params.ParamSpec) -> Any:
    # Declared dynamically typed, so an override of the wrong type reaches validate() (a clear
    # reason) and an integer for a real is accepted; then the final descriptor (static type,
    # range, read-only) replaces it, holding the validated value.
    loose = ParameterDescriptor(description=spec.description, dynamic_typing=True)
    declared = node.declare_parameter(spec.name, spec.default, loose).value
    value = node_params.coerce(spec.name, declared)
    reason = node_params.validate(spec.name, value)
    if reason:
        raise ValueError(f'invalid parameter: {reason}')
    node.set_descriptor(
        spec.name, descriptor(spec), Parameter(spec.name, value=value).get_parameter_value()
    )
    return value


def declare_all(node: Node) -> dict[str, Any]:
    """Declare every parameter with its descriptor; return the validated start values.

    A bad value from a params file is a startup error (fail fast with the reason) rather
    than a node that runs with something it cannot honour.
    """
    return {spec.name: _declare(node, spec) for spec in node_params.PARAMS}


def _as_declared(params: list[Parameter]) -> list[Parameter]:
    """Integers for real-valued parameters as reals, before rclpy checks the types."""
    out = []
    for param in params:
        value = node_params.coerce(param.name, param.value)
        same = value is param.value
        out.append(param if same else Parameter(param.name, Parameter.Type.DOUBLE, value))
    return out


def install_validator(node: Node, apply: Callable[[dict[str, Any]], str | None]) -> None:
    """Validate every change; ``apply`` may refuse a valid-looking change (bad checkpoint)."""

    def on_set(params: list[Parameter]) -> SetParametersResult:
        changes: dict[str, Any] = {}
        for param in params:
            reason = node_params.validate(param.name, param.value)
            if reason:
                return SetParametersResult(successful=False, reason=reason)
            if param.name in node_params.BY_NAME:  # not rclpy's own (qos_overrides.*, ...)
                changes[param.name] = param.value
        if not changes:
            return SetParametersResult(successful=True)
        reason = apply(changes)
        return SetParametersResult(successful=reason is None, reason=reason or '')

    # Pre-set callbacks came with rclpy in Iron; on Humble an integer for a real is taken from
    # a params file (declaration above) but refused by rclpy's type check at run time.
    if hasattr(node, 'add_pre_set_parameters_callback'):
        node.add_pre_set_parameters_callback(_as_declared)
    node.add_on_set_parameters_callback(on_set)
