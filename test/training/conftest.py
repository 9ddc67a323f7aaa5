"""Training tests: the test-only backend is registered for each module and removed after."""

from __future__ import annotations

import pytest
import train_fixtures


@pytest.fixture(scope='module', autouse=True)
def _tiny_backend():
    with pytest.MonkeyPatch.context() as mp:
        train_fixtures.register(mp)
        yield
