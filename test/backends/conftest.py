"""Fixtures shared by the backend tests (helpers live in ``backend_testing.py``)."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _seeded() -> None:
    """Every backend test starts from the same RNG state (deterministic weights and inputs)."""
    torch.manual_seed(0)
