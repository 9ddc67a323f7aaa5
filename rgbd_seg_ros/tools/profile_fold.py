"""Fold py-spy's raw samples of the running node into the stages of a frame.

py-spy (``record --native --threads --idle --format raw``) writes one line per distinct stack:
``thread (TID): NAME;root frame;...;leaf frame COUNT``, Python frames as ``func (path:line)``,
native ones as ``func (library)`` or a bare address. Every sample of every thread is kept
(``--idle``), so a stage's share is wall time of that thread, whether it ran or waited.

Each sample is given one stage by the innermost frame that names one (``STAGE_FRAMES``), so the
forward inside ``process`` is ``forward``, not ``worker other``. Work on one output is split by
where the engine was: post-processing is the code of the engine's ``_outputs`` and ``_display``
before that output's ``emit`` call (``output_lines`` maps their lines), the confidence's
``softmax_max`` and the cloud's ``CloudJob`` wherever they run (the worker or the engine's side
thread), and serialisation and publish is everything inside the worker's ``publish``. A sample
whose innermost native frame, right below the last Python frame, is ``pthread_cond_timedwait``
is waiting for the GIL (CPython's ``take_gil``: py-spy
merges the interpreter's own frames away, so the GIL wait shows as that libc call directly
under Python code); rclpy's wait set, Python locks, sleeps and condition variables are
``blocked`` (``state_of``).
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

_LINE = re.compile(r'^thread \((?P<tid>\d+)\): (?P<name>[^;]*);(?P<stack>.*) (?P<count>\d+)$')
_FRAME = re.compile(r'^(?P<func>.*?) \((?P<where>[^()]*)\)$')

# (function, path suffix) -> stage, tried from the innermost frame outwards.
STAGE_FRAMES: tuple[tuple[str, str, str], ...] = (
    ('_forward', 'inference/engine.py', 'forward'),
    ('_upload', 'inference/engine.py', 'pre-processing (upload, normalise, resize)'),
    ('_preprocess', 'inference/engine.py', 'pre-processing (upload, normalise, resize)'),
    ('deserialize_triple', 'ros/frame_input.py', 'deserialise + decode (worker)'),
    ('frame_arrays', 'ros/frame_input.py', 'deserialise + decode (worker)'),
    ('softmax_max', 'inference/postprocess.py', 'post-process: confidence'),
    ('_start_cloud', 'inference/engine.py', 'post-process: points'),
    ('write_xyz', 'inference/cloud_job.py', 'post-process: points'),
    ('write_classes', 'inference/cloud_job.py', 'post-process: points'),
    ('finish', 'inference/cloud_job.py', 'post-process: points'),
    ('take', 'core/handover.py', 'hand-over: waiting for a frame'),
    ('_on_input', 'ros/segmentation_node.py', 'input callbacks (stamp, pairing)'),
    ('publish', 'ros/segmentation_node.py', 'diagnostics'),
    ('process', 'ros/segment_worker.py', 'worker: other'),
    ('play', 'tools/replay.py', 'replayer (publish 3 messages per frame)'),
    ('on_output', 'tools/node_bench.py', 'measuring subscriber (callbacks)'),
    ('_take_subscription', 'rclpy/executors.py', 'DDS take (message bytes into Python)'),
    ('_wait_for_ready_callbacks', 'rclpy/executors.py', 'executor: wait set (build, wait)'),
    ('handler', 'rclpy/executors.py', 'executor: dispatch'),
    ('_spin_once_impl', 'rclpy/executors.py', 'executor: dispatch'),
    ('_worker', 'concurrent/futures/thread.py', 'executor pool: idle'),
)
# The engine's methods that emit outputs, whose lines ``output_lines`` maps: ``_outputs`` on
# the worker, ``_display`` (colour, overlay) on the engine's side thread or the worker.
_EMITTING = ('_outputs', '_display')
# Native frames below the last Python frame that mean the thread is blocked, not running:
# rclpy's wait set, Python locks and queues, sleeps, C++ condition variables, polling.
_BLOCKING = frozenset(
    {
        'rcl_wait',
        'PyThread_acquire_lock_timed',
        'clock_nanosleep',
        'nanosleep',
        'pthread_cond_wait',
        'pthread_cond_clockwait',
        'std::condition_variable::wait',
        'sem_wait',
        'sem_timedwait',
        'sem_clockwait',
        'epoll_wait',
        'poll',
        'select',
    }
)


@dataclass(frozen=True)
class Frame:
    func: str
    where: str  # 'path:line' for Python frames, the library for native ones, '' for addresses

    @property
    def is_python(self) -> bool:
        return re.search(r'\.py:\d+$', self.where) is not None or self.where.startswith('<')

    @property
    def path(self) -> str:
        return self.where.rsplit(':', 1)[0] if self.is_python else self.where

    @property
    def line(self) -> int:
        return int(self.where.rsplit(':', 1)[1]) if self.is_python else -1


@dataclass
class Sample:
    tid: int
    thread: str
    frames: list[Frame]  # root first
    count: int


def parse_raw(lines: Iterable[str]) -> list[Sample]:
    """py-spy raw lines -> samples; lines of another form are ignored."""
    samples = []
    for line in lines:
        match = _LINE.match(line.rstrip('\n'))
        if not match:
            continue
        frames = []
        for text in match['stack'].split(';'):
            found = _FRAME.match(text)
            frames.append(Frame(found['func'], found['where']) if found else Frame(text, ''))
        samples.append(Sample(int(match['tid']), match['name'], frames, int(match['count'])))
    return samples


def state_of(frames: list[Frame]) -> str:
    """'gil' (waiting for the GIL), 'blocked' (waiting in the OS) or 'running'.

    Below the last Python frame: a blocking call (``_BLOCKING``) means blocked; otherwise a
    ``pthread_cond_timedwait`` as the innermost named frame is CPython taking the GIL back
    (directly under Python code, or after a C call such as a torch op or ``time.sleep``
    released it).
    """
    last_python = max((i for i, f in enumerate(frames) if f.is_python), default=-1)
    native = [f.func for f in frames[last_python + 1 :] if not f.func.startswith('0x')]
    if any(func in _BLOCKING for func in native):
        return 'blocked'
    if native and native[-1] == 'pthread_cond_timedwait':
        return 'gil'
    return 'running'


def output_lines(source_lines: list[str], first_line: int) -> dict[int, str]:
    """Line number -> output name for the engine's ``_outputs``: each line belongs to the
    output of the next ``emit('<name>'`` at or after it (lines after the last emit: 'points')."""
    mapping: dict[int, str] = {}
    pending: list[int] = []
    for offset, text in enumerate(source_lines):
        number = first_line + offset
        pending.append(number)
        found = re.search(r"emit\('(\w+)'", text)
        if found:
            for n in pending:
                mapping[n] = found[1]
            pending = []
    for n in pending:
        mapping[n] = 'points'
    return mapping


def stage_of(frames: list[Frame], outputs_by_line: Mapping[int, str]) -> str:
    """The stage a stack is in (see the module docstring)."""
    publishing = any(
        f.func in ('publish', 'finish', '_send_info') and f.path.endswith('ros/segment_worker.py')
        for f in frames
    )
    for frame in reversed(frames):
        if frame.func == '_send_info' and frame.path.endswith('ros/segment_worker.py'):
            return 'serialise + publish: camera_info'
        if frame.func in _EMITTING and frame.path.endswith('inference/engine.py'):
            output = outputs_by_line.get(frame.line, 'other')
            return f'{"serialise + publish" if publishing else "post-process"}: {output}'
        for func, suffix, stage in STAGE_FRAMES:
            if frame.func == func and frame.path.endswith(suffix):
                return stage
    return 'other'


@dataclass
class Fold:
    """Samples per (process label, thread name, stage), split by state."""

    rate_hz: float
    counts: dict[tuple[str, str, str], dict[str, int]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(int))
    )
    thread_names: dict[int, str] = field(default_factory=dict)

    def add(self, label: str, samples: list[Sample], outputs_by_line: Mapping[int, str]) -> None:
        for sample in samples:
            self.thread_names[sample.tid] = sample.thread
            key = (label, thread_kind(sample.thread), stage_of(sample.frames, outputs_by_line))
            self.counts[key][state_of(sample.frames)] += sample.count

    def rows(self, frames_out: int) -> list[dict[str, object]]:
        """One row per (process, thread, stage): ms per output frame, running / GIL / blocked."""
        rows: list[dict[str, object]] = []
        per_frame = 1e3 / self.rate_hz / max(frames_out, 1)
        for (label, thread, stage), states in sorted(self.counts.items()):
            rows.append(
                {
                    'process': label,
                    'thread': thread,
                    'stage': stage,
                    'running_ms_per_frame': states.get('running', 0) * per_frame,
                    'gil_wait_ms_per_frame': states.get('gil', 0) * per_frame,
                    'blocked_ms_per_frame': states.get('blocked', 0) * per_frame,
                }
            )
        return rows


def thread_kind(name: str) -> str:
    """Executor threads are numbered by the pool; fold them into one row."""
    return 'executor pool' if name.startswith('ThreadPoolExecutor') else name
