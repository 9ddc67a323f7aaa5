"""Where the node's time goes: the node_bench replay with py-spy attached to both processes.

Runs ``node_bench`` (the node as a child process, the replayer and the measuring subscriber in
this one) and, for the timed replay only, attaches ``py-spy record --native --threads --idle
--format raw`` to the node and to this process, and reads every thread's CPU time from
``/proc/<pid>/task``. Two tables come out:

* CPU by thread over the replay (``/proc``): what each Python thread, the Fast DDS threads and
  the native threads (torch's intra-op pool) of the node and of the bench process used, in ms
  per output frame and in % of one core. This is the only view of threads py-spy cannot see
  (Fast DDS's receive and event threads run no Python).
* Wall time per output frame of each Python thread, by stage (``profile_fold``): forward,
  pre-processing, deserialise + decode, post-process and serialise + publish per output,
  input callbacks, executor, hand-over wait, replayer, subscriber; split into running, waiting
  for the GIL and blocked.

py-spy stops the target for each sample (``--native`` cannot sample without stopping it), so
the profiled run is slower than a plain ``node_bench`` run: compare stages with each other,
take absolute rates from ``node_bench``. Attaching needs ptrace rights over the node (root, or
``kernel.yama.ptrace_scope`` 0 for one's own processes). The raw files are kept in ``--out``
for a flame graph (``py-spy`` raw format is the collapsed-stack format flamegraph.pl reads).
Run ``python -m rgbd_seg_ros.tools.node_profile --help``.
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rgbd_seg_ros.tools import node_bench, profile_fold

CLOCK_TICKS = os.sysconf('SC_CLK_TCK')


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog='node_profile', description=__doc__.splitlines()[0])
    parser.add_argument(
        '--checkpoint',
        default='',
        help="model to run (default: node_bench's random SSMA ResNet-18; pass the embedded "
        "model's path for the issue's default-model figures)",
    )
    parser.add_argument('--seconds', type=float, default=20.0, help='replay length (20)')
    parser.add_argument('--sample-rate', type=int, default=100, help='py-spy samples/s (100)')
    parser.add_argument('--out', default='', help='keep the raw profiles and JSON here')
    parser.add_argument('--py-spy', default='', help='py-spy executable (default: on PATH)')
    parser.add_argument(
        'bench_args',
        nargs=argparse.REMAINDER,
        help='after --: more node_bench options (e.g. -- --runtime onnxruntime)',
    )
    return parser.parse_args(argv)


def find_py_spy(explicit: str) -> str:
    """The py-spy executable: explicit, beside this interpreter, or on PATH."""
    search = os.path.dirname(sys.executable) + os.pathsep + os.environ.get('PATH', '')
    found = explicit or shutil.which('py-spy', path=search)
    if not found:
        raise SystemExit(
            'node_profile: py-spy not found; install it into the environment '
            '(pip install py-spy, listed in requirements/pinned.txt)'
        )
    return found


EXITED = -1  # the key of threads that ended during the replay (the replayer's thread)


def _stat_cpu(stat: str) -> tuple[str, float]:
    """(comm, user + system CPU seconds) from a /proc stat line."""
    fields = stat[stat.rindex(')') + 2 :].split()
    return stat[stat.index('(') + 1 : stat.rindex(')')], (
        int(fields[11]) + int(fields[12])
    ) / CLOCK_TICKS


def thread_cpu(pid: int) -> dict[int, tuple[str, float]]:
    """tid -> (comm, user + system CPU seconds) of every live thread of ``pid`` now, and under
    ``EXITED`` what the process total holds beyond them (threads that have ended)."""
    result = {}
    for task in Path(f'/proc/{pid}/task').iterdir():
        with contextlib.suppress(OSError):
            result[int(task.name)] = _stat_cpu((task / 'stat').read_text())
    total = _stat_cpu(Path(f'/proc/{pid}/stat').read_text())[1]
    result[EXITED] = ('', total - sum(cpu for _comm, cpu in result.values()))
    return result


class Profiler:
    """``around_replay`` for node_bench: py-spy on both processes, CPU per thread."""

    def __init__(self, py_spy: str, rate: int, folder: Path) -> None:
        self._py_spy = py_spy
        self._rate = rate
        self._folder = folder
        self.pids: dict[str, int] = {}
        self.cpu: dict[str, dict[int, tuple[str, float]]] = {}
        self.wall_s = 0.0
        self.load: dict[str, tuple[float, float, float]] = {}

    def raw_path(self, label: str) -> Path:
        return self._folder / f'{label}.pyspy.txt'

    @contextlib.contextmanager
    def __call__(self, node_pid: int) -> Iterator[None]:
        self.pids = {'node': node_pid, 'bench': os.getpid()}
        before = {label: thread_cpu(pid) for label, pid in self.pids.items()}
        self.load['start'] = os.getloadavg()
        procs = {label: self._start(label, pid) for label, pid in self.pids.items()}
        started = time.monotonic()
        try:
            yield
        finally:
            self.wall_s = time.monotonic() - started
            after = {label: thread_cpu(pid) for label, pid in self.pids.items()}
            self.load['end'] = os.getloadavg()
            for proc in procs.values():
                proc.send_signal(signal.SIGINT)
            for label, proc in procs.items():
                try:
                    proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
                log = (self._folder / f'{label}.pyspy.log').read_text(errors='replace')
                if not self.raw_path(label).exists():
                    raise RuntimeError(f'py-spy wrote no profile of the {label}:\n{log[-2000:]}')
            for label in self.pids:
                self.cpu[label] = {
                    tid: (comm, cpu - before[label].get(tid, (comm, 0.0))[1])
                    for tid, (comm, cpu) in after[label].items()
                }

    def _start(self, label: str, pid: int) -> subprocess.Popen[bytes]:
        args = [
            self._py_spy,
            'record',
            '--pid',
            str(pid),
            '--native',
            '--threads',
            '--idle',
            '--format',
            'raw',
            '--rate',
            str(self._rate),
            '--output',
            str(self.raw_path(label)),
        ]
        with open(self._folder / f'{label}.pyspy.log', 'wb') as log:
            proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        time.sleep(0.5)
        if proc.poll() is not None:
            text = (self._folder / f'{label}.pyspy.log').read_text(errors='replace')
            raise RuntimeError(f'py-spy could not attach to the {label} (pid {pid}):\n{text}')
        return proc


def cpu_rows(profiler: Profiler, names: dict[int, str], frames_out: int) -> list[dict[str, Any]]:
    """CPU per thread group of each process over the replay, from /proc."""
    groups: dict[tuple[str, str], float] = {}
    for label, threads in profiler.cpu.items():
        for tid, (comm, seconds) in threads.items():
            if tid == EXITED:
                group = 'threads that ended during the replay'
            elif tid in names:
                group = profile_fold.thread_kind(names[tid])
            elif comm.startswith('dds.'):
                group = 'Fast DDS threads (' + comm.split('.')[1] + ')'
            else:
                group = 'native threads (torch intra-op, others)'
            groups[(label, group)] = groups.get((label, group), 0.0) + seconds
    return [
        {
            'process': label,
            'thread': group,
            'cpu_ms_per_frame': seconds * 1e3 / max(frames_out, 1),
            'core_percent': 100.0 * seconds / max(profiler.wall_s, 1e-9),
        }
        for (label, group), seconds in sorted(groups.items())
    ]


def engine_output_lines() -> dict[int, str]:
    """The output each line of ``Engine._outputs`` and ``Engine._display`` works on (see
    profile_fold.output_lines; the two are in one file, so their line numbers differ)."""
    from rgbd_seg_ros.inference.engine import Engine

    lines: dict[int, str] = {}
    for method in (Engine._outputs, Engine._display):
        source, first = inspect.getsourcelines(method)
        lines.update(profile_fold.output_lines(source, first))
    return lines


def report(result: dict[str, Any]) -> str:
    bench = result['bench']
    load = result['load_average']
    lines = [
        node_bench.report(bench),
        f'profiled replay: {result["wall_s"]:.1f} s, load average (1 min) '
        f'{load["start"][0]:.2f} at start, {load["end"][0]:.2f} at end; '
        f'py-spy {result["sample_rate"]} samples/s',
        '',
        'CPU by thread (/proc), per output frame:',
        f'  {"process":7s} {"thread":42s} {"ms/frame":>9s} {"% core":>7s}',
    ]
    for row in result['cpu']:
        lines.append(
            f'  {row["process"]:7s} {row["thread"]:42s} {row["cpu_ms_per_frame"]:9.1f} '
            f'{row["core_percent"]:7.1f}'
        )
    lines += [
        '',
        'Wall time of each Python thread by stage (py-spy), ms per output frame:',
        f'  {"process":7s} {"thread":16s} {"stage":44s} {"running":>8s} {"GIL":>6s} '
        f'{"blocked":>8s}',
    ]
    for row in result['stages']:
        total = row['running_ms_per_frame'] + row['gil_wait_ms_per_frame']
        if total < 0.05:
            continue  # threads that only waited (idle pool threads) do not help the table
        lines.append(
            f'  {row["process"]:7s} {row["thread"][:16]:16s} {row["stage"][:44]:44s} '
            f'{row["running_ms_per_frame"]:8.1f} {row["gil_wait_ms_per_frame"]:6.1f} '
            f'{row["blocked_ms_per_frame"]:8.1f}'
        )
    return '\n'.join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    py_spy = find_py_spy(args.py_spy)
    extra = [a for a in args.bench_args if a != '--']
    bench_args = node_bench.parse_args(
        [
            '--seconds',
            str(args.seconds),
            *(['--checkpoint', args.checkpoint] * bool(args.checkpoint)),
            *extra,
        ]
    )
    with tempfile.TemporaryDirectory(prefix='node_profile_') as tmp:
        folder = Path(args.out) if args.out else Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        profiler = Profiler(py_spy, args.sample_rate, folder)
        bench = node_bench.measure(bench_args, Path(tmp), around_replay=profiler)
        fold = profile_fold.Fold(float(args.sample_rate))
        by_line = engine_output_lines()
        for label in profiler.pids:
            with open(profiler.raw_path(label), encoding='utf-8', errors='replace') as raw:
                fold.add(label, profile_fold.parse_raw(raw), by_line)
        frames_out = int(bench['frames_out'])
        result = {
            'bench': bench,
            'wall_s': profiler.wall_s,
            'sample_rate': args.sample_rate,
            'load_average': profiler.load,
            'cpu': cpu_rows(profiler, fold.thread_names, frames_out),
            'stages': fold.rows(frames_out),
        }
        print(report(result))
        if args.out:
            (folder / 'node_profile.json').write_text(json.dumps(result, indent=2))
    return 0 if bench['node_exit_code'] == 0 else 1


if __name__ == '__main__':
    sys.exit(main())
