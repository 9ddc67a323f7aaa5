"""The type check of ``./run test``: mypy over the package, held to the burn-down list.

mypy reads its configuration from ``pyproject.toml`` ([tool.mypy]): the modules named in the
strict override must pass with no error at all; the rest is checked leniently, and the errors it
still has are listed in ``mypy-burndown.txt``, each with the reason it is there. The check fails

* on an error that is not on the list (fix it; list it only with a reason, and never in a
  strict module), and
* on a listed error that no longer occurs, so that its line is deleted and the list only
  shrinks.

An entry names the file, the message and the error code, not the line, so edits elsewhere in a
file leave it valid; an error that occurs twice is listed twice.

Usage: ``python test/typecheck.py`` (from ``./run test``, inside the environment).
"""

from __future__ import annotations

import fnmatch
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: mypy brings tomli there
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
BURNDOWN = ROOT / 'mypy-burndown.txt'
REASON_MARK = '  # '
_ERROR = re.compile(r'^(?P<path>\S+\.pyi?):\d+: error: (?P<message>.+?)  \[(?P<code>[a-z-]+)\]$')


def error_key(path: str, message: str, code: str) -> str:
    """How an error is named on the list: the file, the message and the code, no line."""
    return f'{path}: {message}  [{code}]'


def parse_errors(output: str) -> Counter[str]:
    """The errors in mypy's output, by key, with how often each occurs."""
    found: Counter[str] = Counter()
    for line in output.splitlines():
        match = _ERROR.match(line)
        if match:
            found[error_key(match['path'], match['message'], match['code'])] += 1
    return found


def parse_burndown(text: str) -> Counter[str]:
    """The listed errors by key; ``ValueError`` for an entry without a reason."""
    listed: Counter[str] = Counter()
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith('#'):
            continue
        key, mark, reason = line.partition(REASON_MARK)
        if not mark or not reason.strip():
            raise ValueError(
                f'{BURNDOWN.name}:{number}: an entry needs its reason after "{REASON_MARK}"'
            )
        listed[key.strip()] += 1
    return listed


def strict_patterns(pyproject: dict[str, Any]) -> list[str]:
    """Module patterns of the overrides that hold modules strict (disallow_untyped_defs)."""
    patterns: list[str] = []
    for override in pyproject.get('tool', {}).get('mypy', {}).get('overrides', []):
        if override.get('disallow_untyped_defs'):
            modules = override['module']
            patterns += [modules] if isinstance(modules, str) else list(modules)
    return patterns


def module_of(path: str) -> str:
    """``rgbd_seg_ros/core/x.py`` -> ``rgbd_seg_ros.core.x`` (a package's ``__init__`` is the
    package)."""
    parts = list(Path(path).with_suffix('').parts)
    if parts[-1] == '__init__':
        parts.pop()
    return '.'.join(parts)


def is_strict(module: str, patterns: list[str]) -> bool:
    """Whether mypy's override patterns (``a.b`` or ``a.b.*``, the latter including ``a.b``)
    name ``module``."""
    for pattern in patterns:
        if pattern.endswith('.*') and module == pattern[:-2]:
            return True
        if fnmatch.fnmatchcase(module, pattern):
            return True
    return False


def problems(found: Counter[str], listed: Counter[str], strict: list[str]) -> list[str]:
    """What makes the check fail, one line each (empty: it passes)."""
    out = [
        f'listed in a strict module (strict modules take no burn-down): {key}'
        for key in sorted(listed)
        if is_strict(module_of(key.split(': ', 1)[0]), strict)
    ]
    new, gone = found - listed, listed - found
    out += [f'new error, not on the list: {key}' for key in sorted(new.elements())]
    out += [
        f'no longer occurs, delete its line from {BURNDOWN.name}: {key}'
        for key in sorted(gone.elements())
    ]
    return out


def run_mypy() -> tuple[int, str]:
    result = subprocess.run(
        [sys.executable, '-m', 'mypy', '--no-pretty', '--no-color-output'],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    return result.returncode, result.stdout + result.stderr


def main() -> int:
    returncode, output = run_mypy()
    found = parse_errors(output)
    if returncode not in (0, 1) or (returncode == 1 and not found):
        print(output, end='')
        print(f'typecheck: mypy failed to run (exit {returncode})', file=sys.stderr)
        return 2
    listed = parse_burndown(BURNDOWN.read_text(encoding='utf-8'))
    with open(ROOT / 'pyproject.toml', 'rb') as stream:
        strict = strict_patterns(tomllib.load(stream))
    failures = problems(found, listed, strict)
    if failures:
        new = {key for key in found - listed}
        for line in output.splitlines():  # the new errors with their lines, to fix them
            match = _ERROR.match(line)
            if match and error_key(match['path'], match['message'], match['code']) in new:
                print(line)
        for failure in failures:
            print(f'typecheck: {failure}')
        return 1
    total = sum(found.values())
    print(f'typecheck: mypy passes; {total} error(s), all on the burn-down list')
    return 0


if __name__ == '__main__':
    sys.exit(main())
