"""Camera presets: a driver's default topic names and colour frame (config/cameras/<name>.yaml).

The launch file remaps the node's inputs to a preset's topics and gives RViz its frame. Each
preset records the driver release it was checked against, because drivers rename topics
between releases (zed-ros2-wrapper 5.1 did) and a stale name only shows as a node that never
receives a frame. Plain YAML and the standard library only: ``ros2 launch`` imports this with
the distribution's Python.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from rgbd_seg_ros.errors import ConfigError

STREAMS = ('rgb', 'depth', 'info')


@dataclass(frozen=True)
class CameraPreset:
    """One driver's defaults: absolute topics per stream and the frame of its colour images."""

    name: str
    driver: str
    checked: str  # driver release (and commit) the names were read from
    frame: str
    topics: dict[str, str]


def preset_names(folder: Path) -> list[str]:
    return sorted(path.stem for path in folder.glob('*.yaml'))


def load_preset(folder: Path, name: str) -> CameraPreset:
    """The preset ``name`` from ``folder``; a ConfigError names the choices or the bad field."""
    path = folder / f'{name}.yaml'
    if not path.is_file():
        raise ConfigError(f'unknown camera preset {name!r}; available: {preset_names(folder)}')
    data = yaml.safe_load(path.read_text(encoding='utf-8'))
    if not isinstance(data, dict):
        raise ConfigError(f'{path}: not a mapping')
    topics = data.get('topics')
    if not isinstance(topics, dict) or set(topics) != set(STREAMS):
        raise ConfigError(f'{path}: topics must name exactly {list(STREAMS)}')
    for stream, topic in topics.items():
        if not isinstance(topic, str) or not topic.startswith('/'):
            raise ConfigError(f'{path}: topics.{stream} must be an absolute topic name')
    fields = {key: data.get(key) for key in ('driver', 'checked', 'frame')}
    for key, value in fields.items():
        if not isinstance(value, str) or not value:
            raise ConfigError(f'{path}: {key} must be a non-empty string')
    return CameraPreset(
        name=name,
        driver=str(fields['driver']),
        checked=str(fields['checked']),
        frame=str(fields['frame']),
        topics={str(k): str(v) for k, v in topics.items()},
    )
