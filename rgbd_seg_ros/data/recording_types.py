"""The values recording readers hand out, shared by the normal and the damaged-file readers."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TopicInfo:
    """A topic of a recording: type, message count and mean rate over the recording."""

    name: str
    msgtype: str
    count: int
    rate_hz: float


@dataclass(frozen=True)
class RawMessage:
    """One serialised message: CDR for rosbag2, ROS 1 serialisation for ``.bag``."""

    topic: str
    msgtype: str
    log_time_ns: int
    data: bytes | memoryview


def topic_rate(count: int, duration_s: float) -> float:
    """Mean rate of ``count`` messages spread over ``duration_s`` (0 when it is undefined)."""
    return (count - 1) / duration_s if count > 1 and duration_s > 0 else 0.0
