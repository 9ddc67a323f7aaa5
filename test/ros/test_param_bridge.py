"""Descriptors carry node_params' bounds; integers count as reals for real-valued parameters."""

from __future__ import annotations

import math

import pytest
from rcl_interfaces.msg import ParameterType

from rgbd_seg_ros.ros import node_params, param_bridge


@pytest.mark.parametrize('spec', node_params.PARAMS, ids=lambda spec: spec.name)
def test_every_descriptor_states_what_the_validator_checks(spec):
    descriptor = param_bridge.descriptor(spec)
    assert descriptor.description == spec.description
    assert descriptor.read_only == spec.read_only
    check = spec.check
    if isinstance(check, node_params.FloatRange):
        assert descriptor.type == ParameterType.PARAMETER_DOUBLE
        [bounds] = descriptor.floating_point_range
        assert (bounds.from_value, bounds.to_value) == (check.low, check.high)
        assert node_params.validate(spec.name, check.high) is None
        assert node_params.validate(spec.name, check.high + 1) is not None
        assert (node_params.validate(spec.name, check.low) is None) != check.low_open
    elif isinstance(check, node_params.IntRange):
        assert descriptor.type == ParameterType.PARAMETER_INTEGER
        [bounds] = descriptor.integer_range
        assert bounds.from_value == check.low and bounds.step == 1
        assert node_params.validate(spec.name, check.low) is None
        assert node_params.validate(spec.name, check.low - 1) is not None
        if check.high is not None:
            assert bounds.to_value == check.high
            assert node_params.validate(spec.name, check.high) is None
            assert node_params.validate(spec.name, check.high + 1) is not None
    else:
        assert not descriptor.floating_point_range and not descriptor.integer_range


def test_the_input_bound_is_described_with_its_range():
    [bounds] = param_bridge.descriptor(node_params.BY_NAME['max_input_pixels']).integer_range
    assert (bounds.from_value, bounds.to_value) == (0, node_params.MAX_PIXELS)


def test_integers_are_reals_only_for_real_valued_parameters():
    assert node_params.coerce('points.max_range', 5) == 5.0
    assert isinstance(node_params.coerce('points.max_range', 5), float)
    assert node_params.coerce('points.stride', 5) == 5 and isinstance(
        node_params.coerce('points.stride', 5), int
    )
    assert node_params.coerce('overlay_alpha', True) is True  # a bool is not a number here
    assert node_params.validate('overlay_alpha', True) is not None
    assert node_params.validate('slop', 0) is None
    assert node_params.validate('slop', math.nan) is not None


def test_parameters_that_are_not_the_nodes_own_never_reach_apply():
    """rclpy declares qos_overrides.* while subscriptions are created, through the same
    callback: they must not reconfigure parts that may not exist yet."""
    import rclpy
    from rclpy.context import Context
    from rclpy.node import Node

    context = Context()
    rclpy.init(context=context, args=[])
    try:
        node = Node('param_bridge_probe', context=context)
        applied: list[dict] = []
        param_bridge.install_validator(node, applied.append)
        node.declare_parameter('qos_overrides./x.subscription.depth', 5)
        assert applied == []
        node.declare_parameter('slop', 0.02)
        assert applied == [{'slop': 0.02}]
        node.destroy_node()
    finally:
        rclpy.shutdown(context=context)
