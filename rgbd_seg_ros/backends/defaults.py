"""A backend's default options as commented YAML, made from its config dataclass alone.

The config dataclasses are the one source of every backend default. Each field carries its
explanation as an attribute docstring (the string literal under the field, which Sphinx and
editors show too), so ``rgbd-seg backends --defaults NAME`` prints :func:`defaults_yaml`: the
field values with those docs as comments, ready to be copied into ``model.options`` of a
training recipe and edited. Nothing else keeps a copy of the defaults.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import itertools
import textwrap
from typing import Any

import yaml

from rgbd_seg_ros.backends.registry import get_entry


def field_docs(config_cls: type) -> dict[str, str]:
    """Attribute docstrings of a dataclass's fields, a subclass's overriding its bases'.

    Read from the source; a class whose source is not available (a frozen build) has none.
    """
    docs: dict[str, str] = {}
    for klass in reversed(config_cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            source = textwrap.dedent(inspect.getsource(klass))
        except (OSError, TypeError):
            continue
        body = ast.parse(source).body[0].body  # type: ignore[attr-defined]  # a class's source
        for stmt, after in itertools.pairwise(body):
            if (
                isinstance(stmt, ast.AnnAssign)
                and isinstance(stmt.target, ast.Name)
                and isinstance(after, ast.Expr)
                and isinstance(after.value, ast.Constant)
                and isinstance(after.value.value, str)
            ):
                docs[stmt.target.id] = inspect.cleandoc(after.value.value)
    return docs


def _plain(value: Any) -> Any:
    """Tuples become lists (YAML has no tuple); everything else is already plain data."""
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    return value


class _Dumper(yaml.SafeDumper):
    """Safe YAML with lists on one line (``dilations: [1, 2, 4, 8, 16]``), as a human writes
    a recipe."""


_Dumper.add_representer(
    list,
    lambda dumper, data: dumper.represent_sequence(
        yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, data, flow_style=True
    ),
)


def _comment(text: str) -> list[str]:
    return [f'# {line}'.rstrip() for line in text.splitlines()]


def defaults_yaml(name: str) -> str:
    """The default options of backend ``name`` as YAML, each field under its doc as comments.

    ``yaml.safe_load`` of the result, passed to ``registry.make_config(name, **options)``,
    gives the default config back.
    """
    entry = get_entry(name)
    config = entry.config_cls()
    docs = field_docs(entry.config_cls)
    lines = _comment(inspect.cleandoc(entry.config_cls.__doc__ or entry.summary))
    for f in dataclasses.fields(config):
        lines.append('')
        lines += _comment(docs.get(f.name, ''))
        value = {f.name: _plain(getattr(config, f.name))}
        lines.append(yaml.dump(value, Dumper=_Dumper, sort_keys=False).rstrip())
    return '\n'.join(lines) + '\n'


__all__ = ['defaults_yaml', 'field_docs']
