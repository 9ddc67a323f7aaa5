"""Which header stamps a frame may carry: decided once, before the frame goes anywhere.

A stamp travels into every output the frame produces and into the latency figures, so a stamp
that is not a point in time must stop the frame at the door: ``builtin_interfaces/Time`` holds
a signed ``sec`` and an unsigned ``nanosec``, and a negative ``sec`` or a ``nanosec`` of a
whole second or more is not a time ROS clocks produce (rclpy refuses to build a ``Time`` from
the first, and the second would be republished as it came).
"""

from __future__ import annotations

NS_PER_S = 1_000_000_000


def stamp_problem(sec: int, nanosec: int) -> str | None:
    """Why ``sec``/``nanosec`` is not a valid stamp, or None when it is."""
    if sec < 0:
        return f'stamp has a negative sec ({sec})'
    if not 0 <= nanosec < NS_PER_S:
        return f'stamp nanosec {nanosec} is not below one second'
    return None
