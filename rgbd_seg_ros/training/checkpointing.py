"""Training-state files (exact resume) and project checkpoints of a training run.

Two kinds of files per stage folder:

* ``last.safetensors`` / ``best.safetensors``: project checkpoints (``save_checkpoint``), i.e.
  weights plus metadata (backend, config, classes, palette, input spec, provenance, metrics).
* ``train_state.pt``: everything needed to continue exactly: model, optimiser, scheduler and
  grad-scaler state, step, epoch, best metric, and the RNG states of python, numpy and torch
  (of every rank). Only tensors and plain containers, so ``torch.load(weights_only=True)``
  reads it. Written atomically (temporary file, fsync, rename).

:class:`CheckpointWriter` is the one place that knows what a run puts in a checkpoint's
metadata, so every stage writes the same and a stage does not need the trainer to write one.
"""

from __future__ import annotations

import functools
import random
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from rgbd_seg_ros.backends.checkpoint import (
    CheckpointMeta,
    InputSpec,
    open_regular_file,
    save_checkpoint,
)
from rgbd_seg_ros.backends.registry import config_to_dict
from rgbd_seg_ros.core.atomic_files import atomic_output
from rgbd_seg_ros.data.layout import DatasetMeta
from rgbd_seg_ros.errors import CheckpointError
from rgbd_seg_ros.training.config import TrainConfig, to_dict
from rgbd_seg_ros.training.distributed import DistContext

STATE_FILE = 'train_state.pt'
LAST_FILE = 'last.safetensors'
BEST_FILE = 'best.safetensors'


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` to a temporary file in the same folder, fsync, then rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path) as stream:
        torch.save(obj, stream)


def load_train_state(path: str | Path) -> dict[str, Any]:
    """Read a training state (no code execution: ``weights_only=True``); any failure, a FIFO
    or a damaged file included, is a ``CheckpointError`` naming the file."""
    with open_regular_file(Path(path)) as stream:
        try:  # the open file, never the name (torch reads '.safetensors' names differently)
            state = torch.load(stream, map_location='cpu', weights_only=True)
        except Exception as err:
            first = (str(err).strip().splitlines() or [''])[0]
            raise CheckpointError(
                f'{path}: cannot read training state ({type(err).__name__}: {first})'
            ) from None
    if not isinstance(state, dict):
        raise CheckpointError(f'{path}: a training state is a dict, got {type(state).__name__}')
    return state


def seed_all(seed: int) -> None:
    """Seed python, numpy (legacy global) and torch: the RNGs ``rng_state`` saves."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """RNG states of python, numpy (legacy global) and torch (CPU and CUDA), as plain data."""
    version, internal, gauss = random.getstate()
    # numpy's stubs type the default call as legacy=False: say legacy=True (the default) out loud
    legacy = np.random.get_state(legacy=True)
    assert isinstance(legacy, tuple)  # the global legacy generator is an MT19937
    name, keys, pos, has_gauss, cached = legacy
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


def _rgb_triple(values: Sequence[float]) -> tuple[float, float, float]:
    r, g, b = values
    return r, g, b


@dataclass(frozen=True)
class CheckpointWriter:
    """Writes a run's project checkpoints: the weights with the run's classes, palette, input
    spec and provenance. Only rank 0 writes; every rank may call."""

    config: TrainConfig
    dataset: DatasetMeta
    dist: DistContext

    def metadata(
        self, module: nn.Module, backend: str, stage: str, step: int, metrics: dict[str, Any]
    ) -> CheckpointMeta:
        d = self.config.data
        classes = self.dataset.classes_by_id()  # one output per class, in id order
        return CheckpointMeta(
            backend=backend,
            config=config_to_dict(module.config),
            class_names=[c.name or f'class_{c.id}' for c in classes],
            palette=[(int(c.color[0]), int(c.color[1]), int(c.color[2])) for c in classes],
            class_ids=[c.id for c in classes],
            ignore_index=int(self.dataset.ignore_index),
            input_spec=InputSpec(
                _rgb_triple(d.rgb_mean),
                _rgb_triple(d.rgb_std),
                d.depth_encoding,
                dict(d.depth_params),
                dict(d.resolution),
            ),
            provenance={
                'recipe': self.config.recipe,
                'stage': stage,
                'step': step,
                'dataset': str(Path(d.root).resolve()),
                'dataset_provenance': self.dataset.provenance,
                'git_commit': git_commit(),
                'torch': torch.__version__,
                'world_size': self.dist.world_size,
                'created_unix': time.time(),
                'train_config': to_dict(self.config),
            },
            metrics=metrics,
        )

    def save(
        self,
        path: Path,
        module: nn.Module,
        backend: str,
        stage: str,
        step: int,
        metrics: dict[str, Any],
    ) -> Path:
        """``path``, written on rank 0 (atomically, by ``save_checkpoint``)."""
        if self.dist.is_main:
            save_checkpoint(path, module, self.metadata(module, backend, stage, step, metrics))
        return path
