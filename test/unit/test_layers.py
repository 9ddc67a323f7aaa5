"""The package's imports follow the layer order of doc/design.md §1, without cycles.

Every module of ``rgbd_seg_ros`` is parsed (not imported) and every import statement in it
counts, wherever it stands: at module level, inside a function, or under ``TYPE_CHECKING``. A
function-level import still ties the two modules together, and hiding a cycle that way is what
doc/design.md §1.2 forbids. ``from package import name`` counts as importing the submodule
``package.name`` when such a module exists, else the package itself. Importing a submodule
also runs its parents' ``__init__``, but that is not counted as an edge: Python starts the
parent first, so it cannot close a cycle. Imports built at run time (``importlib``, the
backend registry's list) are not seen; the registry only imports modules of its own layer.

Checked:

* the order written in doc/design.md §1.1 is the order below, and names every subpackage;
* no module imports a subpackage above its own; the root modules (``errors``, ``modes``,
  ``paths``) may be imported by every layer and import only each other;
* no import cycle inside a subpackage (a nested one such as ``data.convert`` belongs to its
  top-level subpackage) nor among the root modules;
* rclpy and ROS message packages only in ``ros`` and ``tools``; no torch in ``core``
  (doc/design.md §1.1, §1.2).

The checks run on the package and, to show that they can fail, on small made-up packages.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import rgbd_seg_ros

PACKAGE_DIR = Path(rgbd_seg_ros.__file__).resolve().parent
DESIGN = PACKAGE_DIR.parent / 'doc/design.md'

# Bottom to top, as in doc/design.md §1.1 (checked against its text below).
LAYERS: tuple[str, ...] = (
    'core',
    'backends',
    'data',
    'inference',
    'training',
    'ros',
    'tools',
    'cli',
)
# Modules directly under the package: importable from every layer.
ROOT_MODULES: tuple[str, ...] = ('errors', 'modes', 'paths')
# Third-party imports that only some layers may make: (layers allowed, how to recognise one).
ROS_ONLY_IN = ('ros', 'tools')
ROS_MODULE = re.compile(
    r'^(rclpy|rosidl_\w+|rosbag2_py|message_filters|cv_bridge|\w+_msgs|\w+_srvs|\w+_interfaces)$'
)
NO_TORCH_IN = ('core',)


@dataclass(frozen=True)
class Import:
    module: str  # the importing module, dotted
    target: str  # the imported module (of the package) or top-level name (third party)
    line: int


class Package:
    """The modules of one package directory and the imports they make."""

    def __init__(self, directory: Path, name: str) -> None:
        self.name = name
        self.paths: dict[str, Path] = {}
        self.packages: set[str] = set()
        for path in sorted(directory.rglob('*.py')):
            parts = [name, *path.relative_to(directory).with_suffix('').parts]
            if parts[-1] == '__init__':
                parts.pop()
                self.packages.add('.'.join(parts))
            self.paths['.'.join(parts)] = path

    def _resolve(self, module: str, node: ast.Import | ast.ImportFrom) -> list[str]:
        if isinstance(node, ast.Import):
            return [alias.name for alias in node.names]
        base = node.module or ''
        if node.level:
            anchor = module.split('.')
            if module not in self.packages:
                anchor = anchor[:-1]
            anchor = anchor[: len(anchor) - (node.level - 1)]
            base = '.'.join([*anchor, base] if base else anchor)
        return [
            f'{base}.{alias.name}' if f'{base}.{alias.name}' in self.paths else base
            for alias in node.names
        ]

    def _own(self, target: str) -> str:
        """The package module a dotted import name loads (the longest existing prefix)."""
        while target not in self.paths and '.' in target:
            target = target.rsplit('.', 1)[0]
        return target

    def imports(self) -> tuple[list[Import], list[Import]]:
        """(imports of the package's own modules, third-party imports), every statement."""
        own: list[Import] = []
        other: list[Import] = []
        for module, path in self.paths.items():
            tree = ast.parse(path.read_text(encoding='utf-8'), filename=str(path))
            for node in ast.walk(tree):
                if not isinstance(node, (ast.Import, ast.ImportFrom)):
                    continue
                for target in self._resolve(module, node):
                    if target == self.name or target.startswith(self.name + '.'):
                        own.append(Import(module, self._own(target), node.lineno))
                    elif target and not (isinstance(node, ast.ImportFrom) and node.level):
                        other.append(Import(module, target.split('.')[0], node.lineno))
        return own, other

    def layer(self, module: str) -> str | None:
        """The subpackage a module belongs to; None for the package itself and root modules."""
        parts = module.split('.')
        return parts[1] if len(parts) > 1 and module not in self.root_modules() else None

    def root_modules(self) -> set[str]:
        return {m for m in self.paths if m.count('.') == 1 and m not in self.packages}


def upward_imports(pkg: Package, layers: Iterable[str]) -> list[str]:
    """Imports against the order (and imports of a root module into a layer)."""
    rank = {name: i for i, name in enumerate(layers)}
    found = []
    for imp in pkg.imports()[0]:
        own, their = pkg.layer(imp.module), pkg.layer(imp.target)
        if their is None:
            continue
        if own is None:
            found.append(f'{imp.module}:{imp.line} (a root module) imports {imp.target}')
        elif their not in rank or own not in rank:
            unknown = own if own not in rank else their
            found.append(f'{imp.module}:{imp.line}: {unknown} is not in the layer order')
        elif rank[their] > rank[own]:
            found.append(f'{imp.module}:{imp.line} ({own}) imports {imp.target} ({their})')
    return sorted(found)


def cycles(pkg: Package) -> list[list[str]]:
    """Import cycles among the modules of one subpackage, or among the root modules."""
    graph: dict[str, set[str]] = {m: set() for m in pkg.paths}
    for imp in pkg.imports()[0]:
        if imp.target != imp.module and pkg.layer(imp.module) == pkg.layer(imp.target):
            graph[imp.module].add(imp.target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def connect(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                connect(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return sorted(found)


def misplaced_third_party(pkg: Package) -> list[str]:
    found = []
    for imp in pkg.imports()[1]:
        layer = pkg.layer(imp.module)
        if ROS_MODULE.match(imp.target) and layer not in ROS_ONLY_IN:
            found.append(f'{imp.module}:{imp.line} ({layer}) imports {imp.target}')
        if imp.target == 'torch' and layer in NO_TORCH_IN:
            found.append(f'{imp.module}:{imp.line} ({layer}) imports torch')
    return sorted(found)


def order_in_design(text: str) -> tuple[str, ...]:
    """The ``a < b < ...`` line of doc/design.md §1.1."""
    section = text.split('### 1.1', 1)[1].split('\n### ', 1)[0]
    match = re.search(r'^\s*(\w+(?:\s*<\s*\w+)+)\s*$', section, re.MULTILINE)
    assert match, 'doc/design.md §1.1 has no "core < ..." line'
    return tuple(part.strip() for part in match.group(1).split('<'))


# ---- the package -------------------------------------------------------------------------------


def test_layer_order_is_the_documented_one() -> None:
    text = DESIGN.read_text(encoding='utf-8')
    assert order_in_design(text) == LAYERS
    section = text.split('### 1.1', 1)[1].split('\n### ', 1)[0]
    for name in ROOT_MODULES:
        assert f'rgbd_seg_ros/{name}.py' in section, f'doc/design.md §1.1 does not name {name}'
    pkg = Package(PACKAGE_DIR, 'rgbd_seg_ros')
    subpackages = {m.split('.')[1] for m in pkg.packages if m.count('.') == 1}
    assert subpackages == set(LAYERS)
    assert {m.split('.')[1] for m in pkg.root_modules()} == set(ROOT_MODULES)


def test_no_import_against_the_layer_order() -> None:
    pkg = Package(PACKAGE_DIR, 'rgbd_seg_ros')
    own, _ = pkg.imports()
    assert len(own) > 300  # the parser sees the package's imports
    found = upward_imports(pkg, LAYERS)
    assert not found, 'imports against doc/design.md §1.1:\n' + '\n'.join(found)


def test_no_import_cycle_inside_a_subpackage() -> None:
    found = cycles(Package(PACKAGE_DIR, 'rgbd_seg_ros'))
    assert not found, 'import cycles (move the shared piece down):\n' + '\n'.join(
        ' -> '.join(cycle) for cycle in found
    )


def test_ros_and_torch_stay_in_their_layers() -> None:
    pkg = Package(PACKAGE_DIR, 'rgbd_seg_ros')
    assert {i.target for i in pkg.imports()[1]} >= {'rclpy', 'torch', 'sensor_msgs', 'numpy'}
    found = misplaced_third_party(pkg)
    assert not found, 'imports outside their layers (doc/design.md §1.2):\n' + '\n'.join(found)


# ---- the checks on made-up packages ------------------------------------------------------------


def _package(root: Path, files: dict[str, str]) -> Package:
    for rel, source in files.items():
        path = root / 'pkg' / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source)
    for directory in [root / 'pkg', *(p for p in (root / 'pkg').rglob('*') if p.is_dir())]:
        (directory / '__init__.py').touch()
    return Package(root / 'pkg', 'pkg')


def test_checks_find_injected_violations(tmp_path: Path) -> None:
    pkg = _package(
        tmp_path,
        {
            'errors.py': '',
            'core/a.py': (
                'from typing import TYPE_CHECKING\n'
                'from pkg.errors import X\n'
                'if TYPE_CHECKING:\n'
                '    from pkg.core import b\n'
            ),
            'core/b.py': 'def f():\n    from . import a\n',
            'core/c.py': 'import torch\nfrom pkg.ros import node\n',
            'ros/node.py': 'import rclpy\nfrom pkg.core.a import Y\n',
            'data/sub/x.py': 'from ..y import Z\n',
            'data/y.py': 'from pkg.data.sub import x\nfrom sensor_msgs.msg import Image\n',
        },
    )
    assert upward_imports(pkg, ('core', 'data', 'ros')) == [
        'pkg.core.c:2 (core) imports pkg.ros.node (ros)'
    ]
    assert upward_imports(pkg, ('core', 'ros')) == [
        'pkg.core.c:2 (core) imports pkg.ros.node (ros)',
        'pkg.data.sub.x:1: data is not in the layer order',
        'pkg.data.y:1: data is not in the layer order',
    ]
    assert cycles(pkg) == [['pkg.core.a', 'pkg.core.b'], ['pkg.data.sub.x', 'pkg.data.y']]
    assert misplaced_third_party(pkg) == [
        'pkg.core.c:1 (core) imports torch',
        'pkg.data.y:2 (data) imports sensor_msgs',
    ]


def test_root_modules_import_no_layer(tmp_path: Path) -> None:
    pkg = _package(tmp_path, {'errors.py': 'from pkg.core import a\n', 'core/a.py': ''})
    assert upward_imports(pkg, ('core',)) == ['pkg.errors:1 (a root module) imports pkg.core.a']


def test_order_is_read_from_the_design_text() -> None:
    text = '## 1. Layers\n\n### 1.1 Order\n\n```\na < b < c\n```\n\n### 1.2 Rules\n\nx < y\n'
    assert order_in_design(text) == ('a', 'b', 'c')
