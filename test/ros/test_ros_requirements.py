"""requirements/ros.txt must install beside the distribution's numpy 1.x.

Jazzy's and Humble's apt packages (cv_bridge, h5py, matplotlib, OpenCV) are built against
numpy 1.x, so the pip step must never need numpy 2. pip's resolver proves it: the file is
resolved together with ``numpy==1.26.*`` (the numpy Ubuntu 24.04 ships) for the target
machine, not for this one. The test interpreter is Python 3.11 while Jazzy runs Ubuntu 24.04's
Python 3.12, so pip is given the target's Python version and platform tags (which forces
``--only-binary=:all:``: sdists could only be built for this interpreter). pip evaluates
environment markers with the running interpreter though, so the resolved set is then checked
again with the target's markers: every requirement that applies there must be met inside the
set.

torch is resolved alone with ``--no-deps``: its closure is the CUDA runtime wheels (gigabytes
whenever a wheel lacks separate metadata) and pure-Python helpers; what matters for numpy is
that torch itself does not require it, which its metadata shows.

Skipped, saying why, only when the package registry cannot be reached.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
ROS_TXT = ROOT / 'requirements' / 'ros.txt'
# pip alone decides what to fetch and from where: the machine's pip configuration (extra local
# indexes, constraints) is left out so the answer is the one a ROS user gets.
PIP = [sys.executable, '-m', 'pip', '--isolated', '--disable-pip-version-check']
SEPARATE = {'torch'}  # resolved with --no-deps (see the module docstring)


@dataclass(frozen=True)
class Target:
    """A ROS machine: Ubuntu release, its Python and glibc, the numpy apt leaves in place."""

    name: str
    python: str  # major.minor.micro of the distribution's python3
    glibc: tuple[int, int]
    numpy: str

    def platforms(self) -> list[str]:
        # pip matches only the platform tags it is given: list every manylinux tag the
        # distribution's glibc accepts, newest first, as pip does on that machine.
        major, minor = self.glibc
        tags = [f'manylinux_{major}_{m}_x86_64' for m in range(minor, 4, -1)]
        return [*tags, 'manylinux2014_x86_64', 'manylinux2010_x86_64', 'manylinux1_x86_64']

    def markers(self, extra: str = '') -> dict[str, str]:
        return {
            'python_version': '.'.join(self.python.split('.')[:2]),
            'python_full_version': self.python,
            'implementation_name': 'cpython',
            'implementation_version': self.python,
            'platform_python_implementation': 'CPython',
            'os_name': 'posix',
            'sys_platform': 'linux',
            'platform_system': 'Linux',
            'platform_machine': 'x86_64',
            'platform_release': '',
            'platform_version': '',
            'extra': extra,
        }


JAZZY = Target('Ubuntu 24.04 (Jazzy)', '3.12.3', (2, 39), '1.26.*')
# Humble's apt numpy is 1.21; onnx needs newer, so pip adds numpy 1.26 to the venv there.
HUMBLE = Target('Ubuntu 22.04 (Humble)', '3.10.12', (2, 35), '1.26.*')


def pip_target_args(target: Target) -> list[str]:
    args = ['--only-binary=:all:', '--implementation', 'cp']
    args += ['--python-version', '.'.join(target.python.split('.')[:2])]
    for tag in target.platforms():
        args += ['--platform', tag]
    return args


def registry_unreachable() -> str | None:
    """Why the registry cannot be used (None when it answers): pip's own probe of its index,
    one try of 5 s, with the same settings the resolution uses (pip itself, found on every
    index, can only be missing when the index did not answer)."""
    probe = subprocess.run(
        [*PIP, 'index', 'versions', 'pip', '--timeout', '5', '--retries', '0'],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    if probe.returncode == 0:
        return None
    last = (probe.stderr.strip().splitlines() or ['no answer'])[-1]
    return f'pip could not read its package index within 5 s ({last})'


def requirement_lines(path: Path) -> list[Requirement]:
    lines = (line.split('#', 1)[0].strip() for line in path.read_text().splitlines())
    return [Requirement(line) for line in lines if line]


def for_target(requirements: list[Requirement], target: Target) -> list[str]:
    """The lines that apply on ``target``, markers evaluated there (pip would use this Python)."""
    out = []
    for req in requirements:
        if req.marker is None or req.marker.evaluate(target.markers()):
            extras = f'[{",".join(sorted(req.extras))}]' if req.extras else ''
            out.append(f'{req.name}{extras}{req.specifier}')
    return out


def resolve(requirements: list[str], target: Target, *extra: str) -> list[dict]:
    """pip's dry-run report ('install' entries) for ``requirements`` on ``target``."""
    command = [*PIP, 'install', '--dry-run', '--quiet', '--ignore-installed', '--report', '-']
    done = subprocess.run(
        [*command, *pip_target_args(target), *extra, *requirements],
        check=False,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, (
        f'pip cannot resolve {requirements} for {target.name}:\n{done.stderr[-4000:]}'
    )
    return json.loads(done.stdout)['install']


def applicable(item: dict, target: Target) -> list[Requirement]:
    """The requirements of one resolved distribution whose markers hold on ``target``."""
    extras = item.get('requested_extras') or ['']
    out = []
    for line in item['metadata'].get('requires_dist') or []:
        req = Requirement(line)
        marker = req.marker
        if marker is None or any(marker.evaluate(target.markers(e)) for e in extras):
            out.append(req)
    return out


def unmet_on_target(report: list[dict], target: Target) -> list[str]:
    """Requirements that apply on ``target`` and that the resolved set does not meet."""
    versions = {
        canonicalize_name(item['metadata']['name']): Version(item['metadata']['version'])
        for item in report
    }
    unmet = []
    for item in report:
        for req in applicable(item, target):
            have = versions.get(canonicalize_name(req.name))
            if have is None:
                unmet.append(f'{item["metadata"]["name"]} requires {req}: not resolved')
            elif not req.specifier.contains(have, prereleases=True):
                unmet.append(f'{item["metadata"]["name"]} requires {req}, resolved {have}')
    return unmet


@pytest.fixture(scope='module')
def registry() -> None:
    reason = registry_unreachable()
    if reason:
        pytest.skip(f'cannot resolve requirements/ros.txt: {reason}')


def test_ros_requirements_are_pinned_and_cap_numpy():
    for req in requirement_lines(ROS_TXT):
        if canonicalize_name(req.name) == 'numpy':
            assert not req.specifier.contains('2.0.0'), 'numpy must stay below 2'
        else:
            assert str(req.specifier).startswith('=='), f'{req} is not pinned'


@pytest.mark.slow
@pytest.mark.parametrize('target', [JAZZY, HUMBLE], ids=['jazzy', 'humble'])
def test_ros_requirements_resolve_with_numpy_1(registry, target):
    requirements = for_target(requirement_lines(ROS_TXT), target)
    together = [r for r in requirements if canonicalize_name(Requirement(r).name) not in SEPARATE]
    report = resolve([*together, f'numpy=={target.numpy}'], target)
    numpy = next(i for i in report if canonicalize_name(i['metadata']['name']) == 'numpy')
    assert Version(numpy['metadata']['version']).major == 1
    assert unmet_on_target(report, target) == []

    alone = [r for r in requirements if canonicalize_name(Requirement(r).name) in SEPARATE]
    report = resolve(alone, target, '--no-deps')
    assert {canonicalize_name(i['metadata']['name']) for i in report} == SEPARATE
    version = Version(numpy['metadata']['version'])
    refused = [
        f'{item["metadata"]["name"]} requires {req}'
        for item in report
        for req in applicable(item, target)
        if canonicalize_name(req.name) == 'numpy' and not req.specifier.contains(version)
    ]
    assert refused == []


def test_marker_check_sees_what_pip_on_this_python_cannot():
    """The target-marker pass catches a numpy 2 requirement that applies only on the target."""
    report = [
        {
            'metadata': {
                'name': 'example',
                'version': '1.0',
                'requires_dist': ['numpy>=2; python_version >= "3.12"', 'numpy>=1.21'],
            }
        },
        {'metadata': {'name': 'numpy', 'version': '1.26.4'}},
    ]
    assert unmet_on_target(report, JAZZY) == [
        'example requires numpy>=2; python_version >= "3.12", resolved 1.26.4'
    ]
    assert unmet_on_target(report, HUMBLE) == []
