"""Each set of modes is written once (``rgbd_seg_ros.modes``) and every layer accepts exactly it.

The guard parses the package: a tuple, list, set or argument list of two or more values of one
mode set, written out anywhere but ``modes.py``, is a second copy of that set that can drift.
A mapping keyed by mode values is allowed where it is annotated with the mode's alias and covers
every value (the torch dtypes, the depth channel counts).
"""

from __future__ import annotations

import argparse
import ast
from pathlib import Path

import pytest
import torch

from rgbd_seg_ros import modes
from rgbd_seg_ros.backends.checkpoint import CheckpointMeta, InputSpec
from rgbd_seg_ros.cli.main import build_parser
from rgbd_seg_ros.core import depth as core_depth
from rgbd_seg_ros.errors import ConfigError
from rgbd_seg_ros.inference.engine import Engine
from rgbd_seg_ros.inference.precision import TORCH_DTYPES, autocast_dtype
from rgbd_seg_ros.modes import (
    BENCH_MODES,
    COLOUR_TRANSPORTS,
    DEPTH_ENCODINGS,
    OVERSIZE_POLICIES,
    PRECISIONS,
    RESOLUTION_POLICIES,
    RUNTIMES,
    SPEC_RESOLUTIONS,
    as_choice,
)
from rgbd_seg_ros.ros.node_params import BY_NAME, validate
from rgbd_seg_ros.training.config import TrainConfig, from_dict

PACKAGE_DIR = Path(modes.__file__).resolve().parent
MODE_SETS = {
    'Precision': PRECISIONS,
    'Runtime': RUNTIMES,
    'DepthEncoding': DEPTH_ENCODINGS,
    'ResolutionPolicy': RESOLUTION_POLICIES,
    'BenchMode': BENCH_MODES,
    'ColourTransport': COLOUR_TRANSPORTS,
    'OversizePolicy': OVERSIZE_POLICIES,
}
NOT_A_MODE = ('', 'FP32', 'fp64', 'tensorrt', 'disparity', 'auto', 0, None)


def _strings(nodes: list[ast.expr | None]) -> tuple[str, ...] | None:
    values = [n.value for n in nodes if isinstance(n, ast.Constant)]
    if len(values) != len(nodes) or not all(isinstance(v, str) for v in values):
        return None
    return tuple(values)


def _mode_of(values: tuple[str, ...] | None) -> str | None:
    """The mode whose values these are, when there are two or more distinct ones."""
    if values is None or len(set(values)) < 2:
        return None
    for alias, choices in MODE_SETS.items():
        if set(values) <= set(choices):
            return alias
    return None


def _annotations(tree: ast.AST) -> dict[int, str]:
    """id(dict node) -> source of the annotation it is assigned under."""
    found = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.AnnAssign) and isinstance(node.value, ast.Dict):
            found[id(node.value)] = ast.unparse(node.annotation)
    return found


def copies_of_mode_sets(source: str) -> list[str]:
    """``line: text`` of every literal that repeats values of a mode set in ``source``."""
    tree = ast.parse(source)
    annotated = _annotations(tree)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Tuple | ast.List | ast.Set):
            alias = _mode_of(_strings(list(node.elts)))
        elif isinstance(node, ast.Call):
            alias = _mode_of(_strings(list(node.args)))
        elif isinstance(node, ast.Dict):
            keys = _strings(list(node.keys))
            alias = _mode_of(keys)
            if alias and set(keys) == set(MODE_SETS[alias]):
                # a complete mapping keyed by the alias is the one allowed form
                alias = None if alias in annotated.get(id(node), '') else alias
        else:
            continue
        if alias:
            found.append(f'{node.lineno}: {ast.unparse(node)[:80]} (a {alias} list)')
    return found


def test_no_module_but_modes_lists_the_choices():
    found = {
        str(path.relative_to(PACKAGE_DIR)): copies
        for path in sorted(PACKAGE_DIR.rglob('*.py'))
        if path.name != 'modes.py'
        and (copies := copies_of_mode_sets(path.read_text(encoding='utf-8')))
    }
    assert found == {}


@pytest.mark.parametrize(
    'source',
    [
        "choices = ('fp32', 'bf16', 'fp16')",
        "parser.add_argument('--precision', choices=['fp32', 'fp16'])",
        "check = _one_of('torch', 'onnxruntime')",
        "if policy in {'native', 'fixed'}: pass",
        "MODES = ('eager', 'compile', 'cudagraph', 'onnxruntime')",
        "DTYPES = {'fp32': 1, 'fp16': 2, 'bf16': 3}",  # a complete map, but not typed by alias
        "CHANNELS: dict[DepthEncoding, int] = {'metric': 1, 'jet': 3}",  # incomplete
    ],
)
def test_the_guard_finds_a_copy(source):
    assert copies_of_mode_sets(source)


@pytest.mark.parametrize(
    'source',
    [
        "DTYPES: dict[Precision, int] = {'fp32': 1, 'fp16': 2, 'bf16': 3}",
        "if precision == 'fp32': pass",
        "FORMATS = ('png', 'npy')",
        "OUTPUTS = ('labels', 'points', 'none')",  # one mode value among others
    ],
)
def test_the_guard_lets_pass(source):
    assert not copies_of_mode_sets(source)


def test_aliases_and_tuples_agree():
    assert PRECISIONS == ('fp32', 'fp16', 'bf16')
    assert RUNTIMES == ('auto', 'torch', 'onnxruntime')
    assert DEPTH_ENCODINGS == ('metric', 'jet', 'hha', 'none')
    assert SPEC_RESOLUTIONS == ('native', 'fixed')
    assert ('checkpoint', *SPEC_RESOLUTIONS) == RESOLUTION_POLICIES
    assert BENCH_MODES == ('eager', 'compile', 'cudagraph', 'compile_cudagraph', 'onnxruntime')


def test_as_choice_returns_the_value_or_names_the_valid_ones():
    assert as_choice('bf16', PRECISIONS, 'precision') == 'bf16'
    expected = r"precision must be one of fp32, fp16, bf16; 'x' is not valid"
    with pytest.raises(ConfigError, match=expected):
        as_choice('x', PRECISIONS, 'precision')


def test_mappings_keyed_by_a_mode_cover_it():
    assert set(TORCH_DTYPES) == set(PRECISIONS)
    assert [core_depth.depth_channels(e) for e in DEPTH_ENCODINGS] == [1, 3, 3, 0]
    assert set(core_depth.DEPTH_PARAM_DEFAULTS) == set(DEPTH_ENCODINGS)
    assert autocast_dtype('fp32') is None
    assert autocast_dtype('bf16') is torch.bfloat16
    with pytest.raises(ConfigError, match='precision must be one of'):
        autocast_dtype('fp64')


# ----------------------------------------------------------------- every layer accepts the set


@pytest.mark.parametrize(
    'name, choices',
    [
        ('precision', PRECISIONS),
        ('runtime', RUNTIMES),
        ('resolution_policy', RESOLUTION_POLICIES),
    ],
)
def test_node_parameters_accept_exactly_the_set(name, choices):
    assert BY_NAME[name].default == choices[0]
    for value in choices:
        assert validate(name, value) is None
    for value in NOT_A_MODE:
        if value not in choices:  # 'auto' is a runtime, and a device, but no other mode
            assert validate(name, value) is not None
    assert validate(name, 'x') == f'{name} must be one of {", ".join(choices)}'


@pytest.mark.parametrize(
    'keyword, choices',
    [
        ('precision', PRECISIONS),
        ('runtime', RUNTIMES),
        ('resolution_policy', RESOLUTION_POLICIES),
    ],
)
def test_the_engine_accepts_exactly_the_set(keyword, choices):
    def engine(value):
        meta = CheckpointMeta('conv', {'depth_channels': 1}, ['a', 'b', 'c'])
        return Engine(torch.nn.Conv2d(1, 3, 1), meta, torch.device('cpu'), **{keyword: value})

    for value in choices:
        # on the CPU every precision runs as fp32, and runtime 'auto' is ONNX Runtime
        expected = {'precision': 'fp32', 'runtime': value.replace('auto', 'onnxruntime')}
        assert getattr(engine(value), keyword) == expected.get(keyword, value)
    for value in NOT_A_MODE:
        if value in choices:
            continue
        with pytest.raises(ConfigError, match=f'{keyword} must be one of {", ".join(choices)}'):
            engine(value)


def test_the_checkpoint_input_spec_accepts_exactly_the_set():
    for encoding in DEPTH_ENCODINGS:
        assert InputSpec.from_dict({'depth_encoding': encoding}).depth_encoding == encoding
    for policy in SPEC_RESOLUTIONS:
        size = {'height': 32, 'width': 48} if policy == 'fixed' else {}
        spec = InputSpec.from_dict({'resolution': {'policy': policy, **size}})
        assert spec.resolution['policy'] == policy
    for value in NOT_A_MODE:
        with pytest.raises(ValueError, match='depth encoding must be one of'):
            InputSpec.from_dict({'depth_encoding': value})
        with pytest.raises(ValueError, match="must have policy 'native' or 'fixed'"):
            InputSpec.from_dict({'resolution': {'policy': value}})


def _choices(parser: argparse.ArgumentParser, *path_and_flag: str) -> tuple:
    *path, flag = path_and_flag
    for name in path:
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = sub.choices[name]
    action = next(a for a in parser._actions if flag in a.option_strings)
    return tuple(action.choices)


@pytest.mark.parametrize(
    'path, choices',
    [
        (('train', '--precision'), PRECISIONS),
        (('eval', '--precision'), PRECISIONS),
        (('bench', '--precisions'), PRECISIONS),
        (('bench', '--node-precision'), PRECISIONS),
        (('bench', '--modes'), BENCH_MODES),
    ],
)
def test_the_cli_offers_exactly_the_set(path, choices):
    assert _choices(build_parser(), *path) == choices


def test_the_node_benchmark_offers_exactly_the_set():
    from rgbd_seg_ros.tools import node_bench

    for flag, choices in (
        ('--precision', PRECISIONS),
        ('--runtime', RUNTIMES),
        ('--resolution-policy', RESOLUTION_POLICIES),
    ):
        for value in choices:
            assert (
                getattr(node_bench.parse_args([flag, value]), flag[2:].replace('-', '_')) == value
            )
        with pytest.raises(SystemExit):
            node_bench.parse_args([flag, 'x'])


@pytest.mark.parametrize(
    'key, choices',
    [
        ('precision', PRECISIONS),
        ('data.depth_encoding', DEPTH_ENCODINGS),
        ('data.resolution.policy', SPEC_RESOLUTIONS),
    ],
)
def test_the_training_config_accepts_exactly_the_set(key, choices):
    def config(value):
        doc: dict = {}
        *parents, leaf = key.split('.')
        inner = doc
        for part in parents:
            inner = inner.setdefault(part, {})
        inner[leaf] = value
        if key == 'data.resolution.policy' and value == 'fixed':
            inner.update(height=32, width=48)
        return from_dict(TrainConfig, doc)

    for value in choices:
        config(value).validate()
    for value in NOT_A_MODE:
        # None is refused while reading (a value is required), the others by validate()
        fragment = key if value is None else rf'{key}=.*; valid: {", ".join(choices)}'
        with pytest.raises(ConfigError, match=fragment):
            config(value).validate()
