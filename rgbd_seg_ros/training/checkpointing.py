"""Training-state files (exact resume) and project checkpoints of a training run.

Two kinds of files per stage folder:

* ``last.safetensors`` / ``best.safetensors``: project checkpoints (``save_checkpoint``), i.e.
  weights plus metadata (backend, config, classes, palette, input spec, provenance, metrics).
* ``train_state.pt``: everything needed to continue exactly: model, optimiser, scheduler and
  grad-scaler state, step, epoch, best metric, and the RNG states of python, numpy and torch
  (of every rank). Only tensors and plain containers, so ``torch.load(weights_only=True)``
  reads it. Written atomically (temporary file, fsync, rename).
"""

from __future__ import annotations

import functools
import os
import random
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

STATE_FILE = 'train_state.pt'
LAST_FILE = 'last.safetensors'
BEST_FILE = 'best.safetensors'


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` to a temporary file in the same folder, fsync, then rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f'.{path.name}.', suffix='.tmp', dir=path.parent)
    try:
        with os.fdopen(fd, 'wb') as stream:
            torch.save(obj, stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_train_state(path: str | Path) -> dict[str, Any]:
    """Read a training state (no code execution: ``weights_only=True``)."""
    return torch.load(path, map_location='cpu', weights_only=True)


def rng_state() -> dict[str, Any]:
    """RNG states of python, numpy (legacy global) and torch (CPU and CUDA), as plain data."""
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        'python': [version, list(internal), gauss],
        'numpy': {
            'name': name,
            'keys': torch.from_numpy(keys.astype(np.int64)),
            'pos': int(pos),
            'has_gauss': int(has_gauss),
            'cached_gaussian': float(cached),
        },
        'torch': torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state['cuda'] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state['python']
    random.setstate((version, tuple(internal), gauss))
    n = state['numpy']
    np.random.set_state(
        (
            n['name'],
            n['keys'].numpy().astype(np.uint32),
            n['pos'],
            n['has_gauss'],
            n['cached_gaussian'],
        )
    )
    torch.set_rng_state(state['torch'])
    if 'cuda' in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state['cuda'])


@functools.lru_cache(maxsize=8)
def git_commit(path: str | Path | None = None) -> str | None:
    """The commit of the source checkout (with ``-dirty``), or None outside a git checkout."""
    where = Path(path) if path else Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ['git', 'describe', '--always', '--dirty', '--abbrev=40'],
            cwd=where,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def strip_ddp_prefix(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """State dict of a DDP-wrapped or compiled model with the wrapper prefix removed."""
    out = {}
    for key, value in state.items():
        name = key
        for prefix in ('module.', '_orig_mod.'):
            if name.startswith(prefix):
                name = name[len(prefix) :]
        out[name] = value
    return out


def remap_state(
    state: dict[str, torch.Tensor], mapping: dict[str, str]
) -> dict[str, torch.Tensor]:
    """Keys under a source prefix renamed to the destination prefix; others dropped.
    An empty mapping keeps every key."""
    if not mapping:
        return dict(state)
    out = {}
    for key, value in state.items():
        for src, dst in mapping.items():
            if src == '' or key.startswith(src):
                out[dst + key[len(src) :]] = value
                break
    return out


def load_partial(
    model: torch.nn.Module, state: dict[str, torch.Tensor], strict: bool = False
) -> dict[str, list[str]]:
    """Copy the entries of ``state`` whose name and shape match ``model``.

    Returns {'loaded', 'missing' (model keys not in state), 'skipped' (unknown or shape
    mismatch)}; with ``strict`` any missing or skipped key is an error.
    """
    own = model.state_dict()
    loaded, skipped = [], []
    with torch.no_grad():
        for key, value in state.items():
            if key in own and own[key].shape == value.shape:
                own[key].copy_(value.to(own[key].dtype))
                loaded.append(key)
            else:
                skipped.append(key)
    missing = sorted(set(own) - set(loaded))
    if strict and (missing or skipped):
        raise ValueError(f'strict load: missing {missing[:8]}..., skipped {skipped[:8]}...')
    return {'loaded': loaded, 'missing': missing, 'skipped': skipped}
