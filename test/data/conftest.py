"""Fixtures of the data tests; the recording writer lives in bag_fixtures.py."""

from __future__ import annotations

import pytest
from bag_fixtures import write_recording


@pytest.fixture
def recording(tmp_path):
    """Factory: recording(name, storage, **write_recording kwargs) -> Recorded."""

    def make(name: str = 'rec', storage: str = 'mcap', **kw):
        path = tmp_path / 'bags' / (name + ('.bag' if storage == 'ros1' else ''))
        path.parent.mkdir(exist_ok=True)
        return write_recording(path, storage, **kw)

    return make
