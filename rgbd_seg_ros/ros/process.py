"""Start project nodes as subprocesses (console script + --ros-args) and stop them cleanly.

Shared by the test harness, the demo and the benchmarks: each started process is stopped with
SIGINT (a node must then exit 0), escalated to SIGTERM and SIGKILL if it hangs, and always
reaped, so no run leaves a node behind.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml


def console_script(name: str) -> str:
    """Path of a console script installed beside this interpreter (or on PATH)."""
    search = os.path.dirname(sys.executable) + os.pathsep + os.environ.get('PATH', '')
    path = shutil.which(name, path=search)
    if path is None:
        raise FileNotFoundError(f'console script {name!r} is not installed')
    return path


PARENT_PID_VARIABLE = 'RGBD_SEG_PARENT_PID'


def die_with_parent() -> None:
    """Called by a node at start: get SIGTERM when the process that started it dies.

    A harness killed by SIGKILL or a broken pipe never runs its clean-up, and its node would
    keep running (and keep a DDS participant alive); Linux's PR_SET_PDEATHSIG makes the kernel
    end it. The starter names itself in ``RGBD_SEG_PARENT_PID`` (NodeProcess does); without it
    this does nothing. Done in the child rather than in a ``preexec_fn``, which can deadlock in
    a threaded starter. If the starter already died before this ran, the node exits at once.
    """
    expected = os.environ.get(PARENT_PID_VARIABLE)
    if not expected or not sys.platform.startswith('linux'):
        return
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # pragma: no cover - no prctl in this libc
        return
    if os.getppid() != int(expected):
        raise SystemExit(f'the process that started this node ({expected}) has already exited')


def write_params(path: Path, params: dict[str, Any]) -> Path:
    """A ROS params file applying ``params`` to every node (``/**``)."""
    path.write_text(yaml.safe_dump({'/**': {'ros__parameters': params}}), encoding='utf-8')
    return path


@dataclass
class NodeProcess:
    """A node running as a subprocess, its combined output in ``log_path``."""

    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    @classmethod
    def start(
        cls,
        executable: str,
        workdir: Path,
        env: dict[str, str],
        params: dict[str, Any] | Path | None = None,
        remap: dict[str, str] | None = None,
        tag: str = '',
    ) -> NodeProcess:
        args = [console_script(executable), '--ros-args']
        if isinstance(params, dict):
            params = write_params(workdir / f'{executable}{tag}_params.yaml', params)
        if params is not None:
            args += ['--params-file', str(params)]
        for source, target in (remap or {}).items():
            args += ['-r', f'{source}:={target}']
        log_path = workdir / f'{executable}{tag}.log'
        env = {**env, PARENT_PID_VARIABLE: str(os.getpid())}
        with open(log_path, 'wb') as log:
            proc = subprocess.Popen(
                args, stdout=log, stderr=subprocess.STDOUT, env=env, stdin=subprocess.DEVNULL
            )
        return cls(executable, proc, log_path)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors='replace') if self.log_path.exists() else ''

    def interrupt(self, timeout: float = 20.0) -> int:
        """SIGINT and wait; escalate if the node hangs. Returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.proc.returncode

    def kill(self) -> None:
        """SIGTERM, then SIGKILL; always reaps."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if self.proc.poll() is not None:
                break
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=5.0)
            except subprocess.TimeoutExpired:
                continue
        self.proc.wait()
