"""StopRequest in this process: real signals sent to ourselves, handlers restored after."""

from __future__ import annotations

import os
import signal
import sys
import threading

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


def to_this_thread(sig: signal.Signals) -> None:
    """Send ``sig`` to the main thread itself: while it blocks the signal, the signal stays
    pending there (sent to the process, the kernel would hand it to another thread of the test
    process, whose C handler would mark it pending in Python at once)."""
    signal.pthread_kill(threading.main_thread().ident, sig)


def test_the_first_signal_raises_once_while_starting_and_the_rest_are_ignored(restore_handlers):
    stop = StopRequest().install()
    with pytest.raises(StopRequested, match='SIGINT'):
        deliver(signal.SIGINT)
    assert stop.requested and stop.signals == 1
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGINT):
        deliver(sig)  # a handler that does nothing: neither raises nor ends this process
    assert stop.requested and stop.signals == 1
    stop.settle()  # the entry point's last step: the kernel ignores them from here on
    assert all(signal.getsignal(sig) == signal.SIG_IGN for sig in STOP_SIGNALS)
    deliver(signal.SIGINT)
    assert stop.signals == 1


def test_once_spinning_a_signal_only_sets_the_flag(restore_handlers):
    stop = StopRequest().install()
    stop.spinning()
    assert not stop.requested
    deliver(signal.SIGTERM)
    assert stop.requested and stop.signals == 1
    deliver(signal.SIGINT)
    assert stop.requested


def test_a_second_signal_already_pending_when_the_first_is_handled_is_quietly_ignored(
    restore_handlers,
):
    """Both signals arrive while the main thread is in one C call (here: while they are
    blocked), so Python has marked both pending before the first handler runs. Had that
    handler set SIG_IGN, the second would be reported as an unraisable "Signal 15 ignored due
    to race condition" with a traceback in the node's log (seen in a start-up signal test)."""
    unraisable = []
    saved_hook = sys.unraisablehook
    sys.unraisablehook = unraisable.append
    stop = StopRequest().install()
    try:
        signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        to_this_thread(signal.SIGINT)
        to_this_thread(signal.SIGTERM)
        with pytest.raises(StopRequested, match='SIGINT'):
            signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
        signal.pthread_sigmask(signal.SIG_BLOCK, [])  # Python handles the pending SIGTERM here
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
        sys.unraisablehook = saved_hook
    assert [str(item.exc_value) for item in unraisable] == []
    assert stop.requested and stop.signals == 1


def test_settle_leaves_the_kernel_ignoring_them_and_nothing_pending(restore_handlers):
    stop = StopRequest().install()
    stop.spinning()
    deliver(signal.SIGINT)
    assert stop.requested
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    to_this_thread(signal.SIGTERM)  # pending in the kernel while settle runs
    try:
        stop.settle()
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    assert all(signal.getsignal(sig) == signal.SIG_IGN for sig in STOP_SIGNALS)
    assert signal.sigpending() == set()
    deliver(signal.SIGTERM)  # ignored by the kernel: this process goes on
