"""The RViz config of one launch: the shipped template with its frame and topics filled in.

RViz reads topics and the fixed frame from its config file only, so a node in a namespace
(``/cam1/segmentation/overlay``) or a camera whose images are stamped with another frame than
the template's needs a config of its own. The launch file renders one per start into a
temporary file; the template keeps the un-namespaced topics the node publishes by default.
Plain YAML and the standard library only (imported by ``ros2 launch``).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import tempfile
from pathlib import Path
from typing import Any

import yaml

from rgbd_seg_ros.errors import ConfigError

OUTPUT_PREFIX = '/segmentation/'  # the node's outputs, relative names resolved in '/'


def namespaced(namespace: str, topic: str) -> str:
    """``topic`` (absolute, in '/') moved into ``namespace`` ('' or '/' keep it where it is)."""
    parts = [p for p in namespace.split('/') if p]
    return '/' + '/'.join([*parts, *(p for p in topic.split('/') if p)])


def render(template: str, namespace: str, frame: str) -> str:
    """The template with ``frame`` as fixed frame and the node's topics under ``namespace``."""
    if not frame:
        raise ConfigError('RViz needs a fixed frame: the frame_id of the colour images')
    config: Any = yaml.safe_load(template)
    try:
        manager = config['Visualization Manager']
        manager['Global Options']['Fixed Frame'] = frame
        displays = manager['Displays']
    except (KeyError, TypeError) as exc:
        raise ConfigError(f'not an RViz config: missing {exc}') from exc
    for display in displays:
        topic = display.get('Topic')
        if isinstance(topic, dict) and str(topic.get('Value', '')).startswith(OUTPUT_PREFIX):
            topic['Value'] = namespaced(namespace, topic['Value'])
    return yaml.safe_dump(config, sort_keys=False)


def write_temporary(template: Path, namespace: str, frame: str) -> Path:
    """Render ``template`` into a file removed when this process exits; returns its path."""
    text = render(template.read_text(encoding='utf-8'), namespace, frame)
    handle, name = tempfile.mkstemp(prefix='rgbd_seg_', suffix='.rviz')
    with os.fdopen(handle, 'w', encoding='utf-8') as stream:
        stream.write(text)
    atexit.register(_remove, Path(name))
    return Path(name)


def _remove(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
