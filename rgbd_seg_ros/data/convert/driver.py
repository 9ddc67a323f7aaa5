"""One conversion run: find the recordings, plan them, convert their chunks, report.

Nothing already written is touched by a rerun: frames whose row is in the index (or a
journal) are skipped, so an interrupted conversion resumes where it stopped. Planning writes
nothing; a run with no frame to make leaves the output folder as it was. Otherwise the
dataset is locked from the first write to the report (the workers write under that lock, and
are stopped before it is released), and the report is written atomically next to it.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rgbd_seg_ros import __version__
from rgbd_seg_ros.core.atomic_files import atomic_write_bytes
from rgbd_seg_ros.data import layout
from rgbd_seg_ros.data.convert.chunk import ChunkJob, ChunkResult, ChunkSettings
from rgbd_seg_ros.data.convert.class_list import dataset_label_ids, name_label_ids
from rgbd_seg_ros.data.convert.options import ConvertOptions
from rgbd_seg_ros.data.convert.parallel import WorkerPool
from rgbd_seg_ros.data.convert.planning import RecordingPlan, plan_recording
from rgbd_seg_ros.data.convert.report import ConversionReport, build_report
from rgbd_seg_ros.data.dataset_lock import DatasetLock
from rgbd_seg_ros.data.layout import DatasetMeta
from rgbd_seg_ros.data.recordings import find_recordings, recording_name
from rgbd_seg_ros.errors import DatasetError

REPORT_FILE = 'conversion_report.json'


def convert(
    inputs: Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    options: ConvertOptions,
    log: Callable[[str], None] = lambda text: print(text, file=sys.stderr),
) -> ConversionReport:
    """Convert every recording under ``inputs`` into the dataset at ``out``; returns the
    report (also written to ``out/conversion_report.json``)."""
    options.check()
    started = time.perf_counter()
    root = Path(out)
    if root.exists() and not root.is_dir():
        raise DatasetError(f'{root} exists and is not a folder')
    paths: list[tuple[Path, Path]] = []
    for item in inputs:
        base = Path(item)
        paths.extend((p, base) for p in find_recordings(base))
    names = [recording_name(p, b) for p, b in paths]
    if len(set(names)) != len(names):
        dupes = sorted(n for n, c in Counter(names).items() if c > 1)
        raise DatasetError(
            f'several recordings map to the same name: {dupes}; convert them '
            'separately or rename them'
        )
    if not options.resume and (root / layout.INDEX_FILE).exists():
        raise DatasetError(f'{root} already holds a dataset; pass --resume or pick a new folder')
    with WorkerPool(options.jobs, options.labeller) as pool:
        log(f'planning {len(paths)} recording(s)')
        planning = dataclasses.replace(options, labeller=None)  # workers get it once
        plan_args = [(str(p), str(b) if b.is_dir() else None, planning) for p, b in paths]
        plans = pool.map(plan_recording, plan_args)
        for plan in plans:
            if plan.error:
                log(f'{plan.name}: {plan.error}')
        if not any(plan.frames for plan in plans):
            # Every recording failed, or none has a frame to make: the output is left as it
            # was (no empty dataset, no report file); the report says why.
            existing = len(layout.read_all_records(root)) if root.is_dir() else 0
            meta = _initial_meta(root, options)
            return _report(plans, [], root, options, meta, started, existing)
        root.mkdir(parents=True, exist_ok=True)
        with DatasetLock(root, options.writers_wait_s) as lock:
            if lock.removed_temporaries:
                log(f'removed {lock.removed_temporaries} temporary file(s) of a killed run')
            return _convert_locked(plans, pool, root, options, started)


def _convert_locked(
    plans: list[RecordingPlan],
    pool: WorkerPool,
    root: Path,
    options: ConvertOptions,
    started: float,
) -> ConversionReport:
    meta = _initial_meta(root, options)
    meta.provenance = _provenance(options, plans)
    owner = os.getpid()
    layout.DatasetWriter(
        root, meta, resume=options.resume, finalize=False, owner_pid=owner
    ).close()
    settings = ChunkSettings.of(options)
    jobs = [
        ChunkJob(plan.path, chunk, plan.topics, str(root), meta, settings, plan.name, owner)
        for plan in plans
        if plan.topics is not None
        for chunk in plan.chunks(options.chunk_frames)
    ]
    total = sum(len(j.frames) for j in jobs)
    try:
        results = pool.convert_chunks(jobs, total, options.progress)
    except BaseException:
        pool.close(stop=True)  # no worker may write once the lock is released
        raise
    finally:
        layout.finalize_index(root)  # every journalled frame is in index.csv, also on a stop
    report = _report(
        plans, results, root, options, meta, started, len(layout.read_all_records(root))
    )
    if options.label_source == 'topic' and options.classes is None:
        name_label_ids(root, meta, dataset_label_ids(root, report))
    atomic_write_bytes(root / REPORT_FILE, report.to_json().encode())
    return report


def _report(
    plans: list[RecordingPlan],
    results: list[ChunkResult],
    root: Path,
    options: ConvertOptions,
    meta: DatasetMeta,
    started: float,
    dataset_frames: int,
) -> ConversionReport:
    return build_report(
        plans,
        results,
        output=str(root),
        seconds=time.perf_counter() - started,
        dataset_frames=dataset_frames,
        ignore_index=meta.ignore_index,
        label_source=options.label_source,
    )


def _initial_meta(root: Path, options: ConvertOptions) -> DatasetMeta:
    if options.classes is not None:
        return DatasetMeta(classes=list(options.classes), ignore_index=options.ignore_index)
    existing = root / layout.META_FILE
    if existing.is_file():
        old = DatasetMeta.load(existing)
        return DatasetMeta(classes=old.classes, ignore_index=old.ignore_index)
    return DatasetMeta(classes=[], ignore_index=options.ignore_index)


def _provenance(options: ConvertOptions, plans: list[RecordingPlan]) -> dict[str, Any]:
    return {
        'tool': 'rgbd-seg bag2dataset',
        'version': __version__,
        'created_utc': time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime()),
        'recordings': [{'name': p.name, 'path': p.path} for p in plans],
        'options': options.provenance(),
    }
