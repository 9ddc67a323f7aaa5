"""SIGINT and SIGTERM as one request to stop, however many arrive and whenever they arrive.

A terminal's Ctrl-C reaches every process of the group and ``ros2 launch`` forwards another
SIGINT, so a node sees two or more signals milliseconds apart, at any moment: while Python
imports torch, while the model loads, while frames flow, while it shuts down. Python's own
handler raises KeyboardInterrupt at each of them, wherever the main thread happens to be (in
a ``finally``, in a lock, in a checkpoint write), and the process dies with a traceback and a
non-zero status. rclpy's handler shuts the context down from its own thread at once, so a
worker still publishing meets an invalid context.

``StopRequest`` replaces both. Until :meth:`spinning` is called the first signal raises
``StopRequested`` once in the main thread, so a start-up that may take seconds (imports, model
loading) is abandoned at once; from then on a signal only sets :attr:`requested`, which the
main loop polls. After the first signal both are ignored, so any number may follow; the
process stops in its own order (worker, executor, node, context) and exits 0.

Two ways of ignoring, one after the other. Until :meth:`settle`, later signals reach a Python
handler that does nothing: a second signal that arrived while the main thread was inside one
long C call (a 50 ms gap during ``import torch``) is already marked pending in the interpreter
when the first one's handler runs, and had that handler set ``SIG_IGN``, Python would find the
pending one without a handler and print "Signal 15 ignored due to race condition" with a
traceback. :meth:`settle`, the entry point's last step, makes the kernel ignore them: Python
resets a handler it installed to the default while the interpreter finalises (a signal then
would kill the process with -2 or -15) but leaves an ignored signal ignored.

Standard library only (it sits in ``core``), so an entry point installs it before importing
anything heavy.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Sequence
from types import FrameType

STOP_SIGNALS: tuple[signal.Signals, ...] = (signal.SIGINT, signal.SIGTERM)


class StopRequested(BaseException):
    """Raised in the main thread by the first stop signal while the process is starting.

    A BaseException like KeyboardInterrupt, so no ``except Exception`` on the way swallows it.
    """


class StopRequest:
    """Counts stop signals; see the module docstring for when the first one raises."""

    def __init__(self) -> None:
        # Plain attributes, no locks: the handler runs in the main thread between bytecodes
        # and must never wait for something the interrupted code holds.
        self.requested = False
        self.signals = 0
        self._raise_first = True

    def install(self, signals: Sequence[int] = STOP_SIGNALS) -> StopRequest:
        """Handle ``signals`` from now on (main thread only; elsewhere nothing is installed)."""
        if threading.current_thread() is threading.main_thread():
            for signum in signals:
                signal.signal(signum, self._on_signal)
        return self

    def spinning(self) -> None:
        """From now on a signal only sets :attr:`requested` (the main loop polls it)."""
        self._raise_first = False

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.signals += 1
        if self.requested:
            return
        self.requested = True
        for stop_signal in STOP_SIGNALS:  # later ones, even those already pending: no effect
            signal.signal(stop_signal, _ignore)
        if self._raise_first:
            self._raise_first = False
            raise StopRequested(signal.Signals(signum).name)

    def settle(self, signals: Sequence[int] = STOP_SIGNALS) -> None:
        """From now on the kernel ignores ``signals``, and none is left pending (the last step
        before the interpreter finalises; main thread only, elsewhere nothing changes).

        The signals are blocked first: Python runs the handler of any signal it has already
        marked pending when that call returns, and a signal that arrives while they are
        blocked waits in the kernel, which discards it when the disposition becomes
        ``SIG_IGN``.
        """
        if threading.current_thread() is not threading.main_thread():
            return
        self._raise_first = False  # a signal that is still pending now only stops
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, signals)
        try:
            for signum in signals:
                signal.signal(signum, signal.SIG_IGN)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)


def _ignore(signum: int, frame: FrameType | None) -> None:
    """A stop signal after the first: the stop is already under way."""
