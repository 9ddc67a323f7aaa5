"""StopRequest in this process: real signals sent to ourselves, handlers restored after."""

from __future__ import annotations

import os
import signal

import pytest

from rgbd_seg_ros.core.stop_request import STOP_SIGNALS, StopRequest, StopRequested


@pytest.fixture
def restore_handlers():
    saved = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)


def deliver(sig: signal.Signals) -> None:
    """Send ``sig`` to ourselves; Python runs the handler at the next bytecode boundary."""
    os.kill(os.getpid(), sig)
    signal.pthread_sigmask(signal.SIG_BLOCK, [])  # a call: the pending handler runs here


def test_the_first_signal_raises_once_while_starting_and_the_rest_are_ignored(restore_handlers):
    stop = StopRequest().install()
    with pytest.raises(StopRequested, match='SIGINT'):
        deliver(signal.SIGINT)
    assert stop.requested and stop.signals == 1
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGINT):
        deliver(sig)  # ignored by the kernel now: neither raises nor ends this process
    assert all(signal.getsignal(sig) == signal.SIG_IGN for sig in STOP_SIGNALS)
    assert stop.requested


def test_once_spinning_a_signal_only_sets_the_flag(restore_handlers):
    stop = StopRequest().install()
    stop.spinning()
    assert not stop.requested
    deliver(signal.SIGTERM)
    assert stop.requested and stop.signals == 1
    deliver(signal.SIGINT)
    assert stop.requested
