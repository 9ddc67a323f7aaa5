"""The QoS of the node's inputs and outputs, and which policies a user may override.

Each profile is a default: rclpy's ``qos_overrides.<resolved topic>.<entity>.<policy>``
parameters replace history, depth and reliability at start (ros/topics.py writes them).
"""

from __future__ import annotations

from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.qos_overriding_options import QoSOverridingOptions


def input_qos(depth: int) -> QoSProfile:
    """Best effort, keep last ``depth``: what camera drivers publish (sensor data)."""
    return QoSProfile(
        depth=depth, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.BEST_EFFORT
    )


def output_qos() -> QoSProfile:
    """Reliable, keep last 2: a slow subscriber gets the newest outputs, never a backlog."""
    return QoSProfile(
        depth=2, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE
    )


def overridable() -> QoSOverridingOptions:
    """History, depth and reliability open to ``qos_overrides.*`` parameters."""
    return QoSOverridingOptions.with_default_policies()
