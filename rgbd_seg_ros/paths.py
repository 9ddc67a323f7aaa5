"""Where the package's data folders (config/, launch/, models/, rviz/) live.

After a colcon build or a ``pip install`` they sit in ``<prefix>/share/rgbd_seg_ros``; in an
editable install (the README's environment) they are the folders of the source checkout.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

PACKAGE = 'rgbd_seg_ros'
# The embedded default model, relative to the share folder: the node, the trainer's fine-tuning
# jobs and the demo all fall back to it when no checkpoint is given.
DEFAULT_MODEL = Path('models') / 'default.safetensors'


def _candidates() -> list[Path]:
    found: list[Path] = []
    for prefix in os.environ.get('AMENT_PREFIX_PATH', '').split(os.pathsep):
        if prefix:
            found.append(Path(prefix) / 'share' / PACKAGE)
    found.append(Path(sys.prefix) / 'share' / PACKAGE)
    found.append(Path(__file__).resolve().parent.parent)  # source checkout
    return found


def share_dir() -> Path:
    """The folder holding config/, launch/, models/ and rviz/ for this installation."""
    for candidate in _candidates():
        if (candidate / 'config' / 'segment.yaml').is_file():
            return candidate
    raise FileNotFoundError(
        f'cannot find the {PACKAGE} share folder (looked in '
        + ', '.join(str(c) for c in _candidates())
        + ')'
    )


def config_path(*parts: str) -> Path:
    """A file below the installed config/ folder."""
    return share_dir().joinpath('config', *parts)


def default_model() -> Path | None:
    """The embedded default model, or None when this installation ships none."""
    try:
        path = share_dir() / DEFAULT_MODEL
    except FileNotFoundError:
        return None
    return path if path.is_file() else None
