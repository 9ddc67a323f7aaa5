"""Import structure of ``rgbd_seg_ros.backends``: modules import each other at module level
only, those imports form no cycle, and the registry's module list names exactly the modules
that register backends.

A function-level import between backend modules is how a cycle used to be hidden (encoders
built resnet/preact_resnet, which imported encoders back); the shared pieces now live lower
(``encoder_base``), so such an import is no longer needed anywhere. Function-level imports of
optional third-party packages (onnx, onnxruntime) stay allowed.
"""

from __future__ import annotations

import ast
from pathlib import Path

import rgbd_seg_ros.backends
from rgbd_seg_ros.backends.registry import BACKEND_MODULES

PACKAGE = 'rgbd_seg_ros.backends'
ROOT = Path(rgbd_seg_ros.backends.__file__).parent


def _modules() -> dict[str, ast.Module]:
    return {p.stem: ast.parse(p.read_text(encoding='utf-8')) for p in sorted(ROOT.glob('*.py'))}


def _targets(node: ast.Import | ast.ImportFrom) -> list[str]:
    """Backend modules (short names) an import statement reads."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    elif node.module == PACKAGE:
        names = [f'{PACKAGE}.{alias.name}' for alias in node.names]
    else:
        names = [node.module or '']
    return [n[len(PACKAGE) + 1 :].split('.')[0] for n in names if n.startswith(PACKAGE + '.')]


def _imports(tree: ast.Module) -> tuple[set[str], list[tuple[int, str]]]:
    """(backend modules imported at module level, (line, module) of nested ones)."""
    top: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            top.update(_targets(node))
    nested = [
        (node.lineno, target)
        for node in ast.walk(tree)
        if isinstance(node, (ast.Import, ast.ImportFrom)) and node not in tree.body
        for target in _targets(node)
    ]
    return top, nested


def test_backend_modules_import_each_other_at_module_level_only() -> None:
    nested = {
        f'{name}.py:{line} imports {target}'
        for name, tree in _modules().items()
        for line, target in _imports(tree)[1]
    }
    assert not nested, sorted(nested)


def test_no_import_cycle_inside_backends() -> None:
    graph = {name: _imports(tree)[0] for name, tree in _modules().items()}
    assert {'encoders', 'encoder_base', 'resnet', 'preact_resnet', 'pretrained'} <= set(graph)
    state: dict[str, str] = {}
    cycles: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 'open'
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 'open':
                cycles.append([*path[path.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 'done'

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert not cycles, cycles
    # The pieces the encoders share sit below them.
    assert 'encoders' not in graph['resnet'] | graph['preact_resnet'] | graph['pretrained']


def test_registry_module_list_matches_the_registering_modules() -> None:
    """BACKEND_MODULES is the one list of backend modules; it cannot drift from the code."""
    registering = {
        name
        for name, tree in _modules().items()
        if any(
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == 'register_backend'
            for node in ast.walk(tree)
        )
    }
    assert registering == set(BACKEND_MODULES)
    assert len(BACKEND_MODULES) == len(set(BACKEND_MODULES))
