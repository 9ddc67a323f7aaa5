"""Start project nodes as subprocesses (console script + --ros-args) and stop them cleanly.

Shared by the test harness, the demo and the benchmarks: each started process is stopped with
SIGINT (a node must then exit 0), escalated to SIGTERM and SIGKILL if it hangs, and always
reaped, so no run leaves a node behind. A started node is told its starter's pid
(``RGBD_SEG_PARENT_PID``) and dies with it (``rgbd_seg_ros.core.parent_death``), so not even a
starter killed with SIGKILL leaves one.
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

from rgbd_seg_ros.core.parent_death import PARENT_PID_VARIABLE


def console_script(name: str) -> str:
    """Path of a console script installed beside this interpreter (or on PATH)."""
    search = os.path.dirname(sys.executable) + os.pathsep + os.environ.get('PATH', '')
    path = shutil.which(name, path=search)
    if path is None:
        raise FileNotFoundError(f'console script {name!r} is not installed')
    return path


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
        own_group: bool = False,
    ) -> NodeProcess:
        """Start ``executable``; ``own_group``: in a new process group (and session) led by
        the node, so a test can signal the group the way a terminal's Ctrl-C does."""
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
                args,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                stdin=subprocess.DEVNULL,
                start_new_session=own_group,
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
