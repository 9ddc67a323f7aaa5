"""Where a training run reports to: its caller's progress sink, stderr notes, a stop request.

One object for all three so the parts of a run get this rather than the trainer, and only
rank 0 speaks (every rank of a DDP job runs the same code).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

ProgressFn = Callable[[dict[str, Any]], None]
StopFn = Callable[[], bool]


@dataclass(frozen=True)
class RunEvents:
    """The caller's callbacks of one run, bound to this process's rank."""

    is_main: bool = True
    progress: ProgressFn | None = None
    should_stop: StopFn | None = None

    def emit(self, info: dict[str, Any]) -> None:
        """A progress event (``event``, ``stage``, ``step``...) for the caller, rank 0 only."""
        if self.progress is not None and self.is_main:
            self.progress(info)

    def note(self, text: str) -> None:
        """A line for the person watching the run, on rank 0's stderr."""
        if self.is_main:
            print(f'[train] {text}', file=sys.stderr)

    def stop_requested(self) -> bool:
        """This rank's caller asks to stop (ranks agree on it through a collective)."""
        return bool(self.should_stop is not None and self.should_stop())
