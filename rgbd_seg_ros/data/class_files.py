"""Class lists and label-id maps given by path on the command line.

Class list (``--classes``): YAML/JSON, either a list of ``{id, name, color}`` entries or a
mapping with a ``classes`` key holding that list (so any ``dataset.yaml`` works), optionally
with ``ignore_index``. ``color`` is ``[r, g, b]`` and may be left out (black).

Label map (``--label-map``): the recording's label ids -> the dataset's ids. Either
YAML/JSON ``{source_id: target_id}`` (or the same under a ``map`` key), or CSV/text lines
``source_id,target_id`` (``#`` comments allowed). Ids not in the map become the ignore index;
a target equal to the ignore index marks a class to drop.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from rgbd_seg_ros.data.layout import ClassInfo, DatasetMeta
from rgbd_seg_ros.errors import ConfigError, DatasetError


def _load_structured(path: Path) -> object:
    import yaml

    try:
        text = path.read_text(encoding='utf-8')
    except OSError as err:
        raise ConfigError(f'cannot read {path}: {err}') from err
    try:
        return json.loads(text) if path.suffix == '.json' else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as err:
        raise ConfigError(f'{path} is not valid YAML/JSON: {err}') from err


def load_classes(path: str | os.PathLike) -> tuple[list[ClassInfo], int | None]:
    """Classes (and the ignore index when the file gives one) from ``path``."""
    path = Path(path)
    data = _load_structured(path)
    ignore = None
    if isinstance(data, dict):
        ignore = data.get('ignore_index')
        data = data.get('classes')
    if not isinstance(data, list) or not data:
        raise ConfigError(f'{path}: expected a list of classes ({{id, name, color}})')
    try:
        classes = [
            ClassInfo(int(c['id']), str(c['name']), tuple(c.get('color') or (0, 0, 0)))
            for c in data
        ]
        DatasetMeta(classes, ignore_index=255 if ignore is None else int(ignore))
    except (KeyError, TypeError, ValueError, DatasetError) as err:
        raise ConfigError(f'{path}: bad class entry: {err}') from err
    return classes, None if ignore is None else int(ignore)


def load_label_map(path: str | os.PathLike) -> dict[int, int]:
    """The id map in ``path`` (see the module docstring)."""
    path = Path(path)
    mapping: dict[int, int] = {}
    if path.suffix in ('.csv', '.txt'):
        try:
            lines = path.read_text(encoding='utf-8').splitlines()
        except OSError as err:
            raise ConfigError(f'cannot read {path}: {err}') from err
        for number, raw in enumerate(lines, 1):
            line = raw.split('#', 1)[0].strip()
            if not line:
                continue
            parts = [p.strip() for p in line.replace(';', ',').split(',')]
            try:
                mapping[int(parts[0])] = int(parts[1])
            except (IndexError, ValueError):
                if number == 1 and not parts[0].lstrip('-').isdigit():
                    continue  # header row
                raise ConfigError(f'{path}:{number}: expected "source_id,target_id"') from None
    else:
        data = _load_structured(path)
        if isinstance(data, dict) and isinstance(data.get('map'), dict):
            data = data['map']
        if not isinstance(data, dict):
            raise ConfigError(f'{path}: expected a mapping source_id: target_id')
        try:
            mapping = {int(k): int(v) for k, v in data.items()}
        except (TypeError, ValueError) as err:
            raise ConfigError(f'{path}: ids must be integers: {err}') from err
    if not mapping:
        raise ConfigError(f'{path}: the label map is empty')
    bad = [k for k, v in mapping.items() if not (0 <= k <= 65535 and 0 <= v <= 65535)]
    if bad:
        raise ConfigError(f'{path}: ids must be in 0..65535 (bad entries for {bad[:5]})')
    return mapping
