"""Scoring a fine-tuned candidate and the serving model for the quality gate.

Both are scored on the same held-out frames of the job's dataset (the test blocks of its
recordings, else the validation blocks; doc/design.md §4.1), evenly spread when there are
more than the frame budget, through the segmentation node's own pipeline
(:func:`rgbd_seg_ros.training.pipeline_eval.evaluate_engine`). The figures are written into
the candidate's metrics; :func:`rgbd_seg_ros.training.gate.decide` reads them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from rgbd_seg_ros.backends.checkpoint import load_checkpoint, save_checkpoint
from rgbd_seg_ros.data.layout import DatasetReader, FrameRecord
from rgbd_seg_ros.data.selection import subsample
from rgbd_seg_ros.errors import RgbdSegError
from rgbd_seg_ros.inference.engine import Engine
from rgbd_seg_ros.training.gate import GateScores, ServingModel
from rgbd_seg_ros.training.metrics import finite_or_none
from rgbd_seg_ros.training.pipeline_eval import evaluate_engine, held_out_split, labelled_records

METRICS_KEY = 'gate'  # where the figures go in the candidate checkpoint's metrics


def _miou(engine: Engine, reader: DatasetReader, records: Sequence[FrameRecord]) -> float | None:
    metrics = evaluate_engine(engine, reader, records)
    return finite_or_none(metrics.miou) if metrics.scored else None


def score_models(
    dataset: str | Path,
    candidate: str | Path,
    serving: ServingModel,
    *,
    device: str = 'cpu',
    max_frames: int | None = None,
) -> GateScores:
    """Score ``candidate`` and the serving model on the dataset's held-out frames (at most
    ``max_frames``, evenly spread over the split). A serving model that cannot be loaded or
    run is reported in ``serving_error``, not raised."""
    reader = DatasetReader(dataset)
    split = held_out_split(reader)
    records = labelled_records(reader, split)
    if max_frames:
        records = [records[i] for i in subsample(np.arange(len(records)), max_frames).tolist()]
    candidate_miou = _miou(Engine.from_checkpoint(candidate, device=device), reader, records)
    serving_miou, error = None, serving.error
    if serving.checkpoint:
        try:
            engine = Engine.from_checkpoint(serving.checkpoint, device=device)
            serving_miou = _miou(engine, reader, records)
        except (RgbdSegError, OSError, RuntimeError, ValueError) as err:
            error = f'{type(err).__name__}: {err}'
    return GateScores(
        split=split,
        frames=len(records),
        candidate=str(candidate),
        candidate_miou=candidate_miou,
        serving=serving.checkpoint,
        serving_miou=serving_miou,
        serving_error=error,
    )


def record_scores(checkpoint: str | Path, scores: GateScores) -> None:
    """Write ``scores`` into the checkpoint's metrics (atomic rewrite of the file)."""
    meta, state = load_checkpoint(checkpoint, check_backend=False)
    meta.metrics = {**meta.metrics, METRICS_KEY: scores.to_dict()}
    save_checkpoint(checkpoint, state, meta)
