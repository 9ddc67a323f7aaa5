"""The quality gate in front of a hot-swap: never replace the serving model by a worse one.

After a fine-tuning job trains a candidate, the candidate and the model the segmentation node
is serving are scored on the same held-out frames of the job's dataset through the node's own
pipeline (:mod:`rgbd_seg_ros.training.gate_scoring`); both figures go into the candidate's
metrics. The trainer node then swaps only when :func:`decide` says so: the candidate's mIoU
beats the serving model's by more than a margin, or the swap is forced. This module holds
the figures and the decision only (no torch), so the node can import it cheaply.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

MIOU_OVER = 'classes present in the ground truth of the held-out frames'


@dataclass(frozen=True)
class ServingModel:
    """What the segmentation node is serving, as the trainer node found out."""

    checkpoint: str | None  # a path; '' when the node serves no model; None when unknown
    error: str | None = None  # why it is unknown


@dataclass(frozen=True)
class GateScores:
    """Candidate and serving model on the same held-out frames (mIoU in [0, 1])."""

    split: str
    frames: int
    candidate: str
    candidate_miou: float | None  # None: no labelled held-out pixel of any class
    serving: str | None  # as in ServingModel.checkpoint
    serving_miou: float | None  # None: nothing serving, or it could not be scored
    serving_error: str | None = None
    miou_over: str = MIOU_OVER
    pipeline: str = 'node'  # the engine as the segmentation node runs it

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> GateScores:
        return cls(**{f.name: doc[f.name] for f in fields(cls) if f.name in doc})


@dataclass(frozen=True)
class GateDecision:
    swap: bool
    reason: str


def decide(scores: GateScores, margin: float = 0.0, force: bool = False) -> GateDecision:
    """Swap when the candidate's mIoU exceeds the serving model's by more than ``margin``
    (mIoU in [0, 1]; 0: any improvement), or when ``force``; the reason says which figures
    decided."""
    cand, serv = scores.candidate_miou, scores.serving_miou
    where = f'on {scores.frames} held-out frame(s) [{scores.split}]'
    figures = f'candidate mIoU {_pct(cand)} vs serving {_pct(serv)} {where}'
    if force:
        return GateDecision(True, f'swap forced (force_swap); {figures}')
    if cand is None:
        return GateDecision(False, f'kept the serving model: the candidate scored nothing {where}')
    if scores.serving == '':
        return GateDecision(True, f'no model was serving; candidate mIoU {_pct(cand)} {where}')
    if serv is None:
        why = scores.serving_error or 'no labelled pixel'
        return GateDecision(
            False,
            f'kept the serving model: it could not be scored ({why}); '
            'set force_swap to swap anyway',
        )
    gain = cand - serv
    if gain > margin:
        return GateDecision(
            True, f'{figures}: +{100 * gain:.2f} points, more than the margin ({_pct(margin)})'
        )
    return GateDecision(
        False,
        f'kept the serving model: {figures}: {100 * gain:+.2f} points, not more than the '
        f'margin ({_pct(margin)})',
    )


def _pct(value: float | None) -> str:
    return 'n/a' if value is None or not math.isfinite(value) else f'{100 * value:.2f}'
