"""The typed package: it ships ``py.typed``, and the type check's burn-down list can only
shrink (the comparison ``test/typecheck.py`` makes in ``./run test``)."""

from __future__ import annotations

import subprocess
from collections import Counter
from importlib import resources
from pathlib import Path

import pytest
import typecheck

import rgbd_seg_ros

ROOT = Path(__file__).resolve().parents[2]

NEW = 'rgbd_seg_ros/data/x.py: Name "y" is not defined  [name-defined]'
OLD = 'rgbd_seg_ros/training/z.py: Incompatible return value type  [return-value]'
STRICT = ['rgbd_seg_ros.core.*', 'rgbd_seg_ros.errors']


def test_the_installed_package_is_marked_typed() -> None:
    # the package as Python imports it (here the editable install; the wheel test in
    # test/ros/test_package_files.py checks the built wheel)
    assert resources.files(rgbd_seg_ros).joinpath('py.typed').is_file()


def test_py_typed_is_tracked_and_declared_as_package_data() -> None:
    tracked = subprocess.run(
        ['git', 'ls-files', '--error-unmatch', 'rgbd_seg_ros/py.typed'],
        cwd=ROOT,
        capture_output=True,
        check=False,
    )
    if b'not a git repository' in tracked.stderr:
        pytest.skip('not a git checkout')
    assert tracked.returncode == 0, tracked.stderr.decode()
    assert "package_data={PACKAGE: ['py.typed']}" in (ROOT / 'setup.py').read_text()


def test_parse_errors_keys_by_file_message_and_code_not_line() -> None:
    output = '\n'.join(
        [
            'rgbd_seg_ros/data/x.py:3: error: Name "y" is not defined  [name-defined]',
            'rgbd_seg_ros/data/x.py:9: error: Name "y" is not defined  [name-defined]',
            'rgbd_seg_ros/data/x.py:9: note: See https://mypy.readthedocs.io',
            'Found 2 errors in 1 file (checked 1 source file)',
        ]
    )
    assert typecheck.parse_errors(output) == Counter({NEW: 2})


def test_burndown_entries_need_a_reason() -> None:
    listed = typecheck.parse_burndown(f'# header\n\n{NEW}  # why\n{NEW}  # again\n')
    assert listed == Counter({NEW: 2})
    with pytest.raises(ValueError, match='reason'):
        typecheck.parse_burndown(f'{NEW}\n')
    with pytest.raises(ValueError, match='reason'):
        typecheck.parse_burndown(f'{NEW}  #  \n')


def test_new_errors_and_gone_entries_both_fail() -> None:
    assert typecheck.problems(Counter({NEW: 1}), Counter({NEW: 1}), STRICT) == []
    new = typecheck.problems(Counter({NEW: 2}), Counter({NEW: 1}), STRICT)
    assert new == [f'new error, not on the list: {NEW}']
    gone = typecheck.problems(Counter(), Counter({OLD: 1}), STRICT)
    assert gone == [f'no longer occurs, delete its line from mypy-burndown.txt: {OLD}']


def test_strict_modules_take_no_burndown() -> None:
    key = 'rgbd_seg_ros/core/depth.py: Returning Any  [no-any-return]'
    failures = typecheck.problems(Counter({key: 1}), Counter({key: 1}), STRICT)
    assert failures == [f'listed in a strict module (strict modules take no burn-down): {key}']
    assert typecheck.is_strict('rgbd_seg_ros.core', STRICT)
    assert typecheck.is_strict('rgbd_seg_ros.errors', STRICT)
    assert not typecheck.is_strict('rgbd_seg_ros.errors_more', STRICT)
    assert not typecheck.is_strict('rgbd_seg_ros.corex.y', STRICT)
    assert typecheck.module_of('rgbd_seg_ros/core/__init__.py') == 'rgbd_seg_ros.core'


def test_strict_patterns_come_from_pyproject() -> None:
    with open(ROOT / 'pyproject.toml', 'rb') as stream:
        patterns = typecheck.strict_patterns(typecheck.tomllib.load(stream))
    for module in (
        'rgbd_seg_ros.core.messages',
        'rgbd_seg_ros.inference.engine',
        'rgbd_seg_ros.ros.segmentation_node',
        'rgbd_seg_ros.errors',
        'rgbd_seg_ros.modes',
        'rgbd_seg_ros.paths',
    ):
        assert typecheck.is_strict(module, patterns), module
    assert not typecheck.is_strict('rgbd_seg_ros.backends.rfbnet', patterns)


def test_the_burndown_list_parses_and_names_only_lenient_modules() -> None:
    listed = typecheck.parse_burndown(typecheck.BURNDOWN.read_text(encoding='utf-8'))
    with open(ROOT / 'pyproject.toml', 'rb') as stream:
        patterns = typecheck.strict_patterns(typecheck.tomllib.load(stream))
    for key in listed:
        path = key.split(': ', 1)[0]
        assert (ROOT / path).is_file(), key
        assert not typecheck.is_strict(typecheck.module_of(path), patterns), key
