"""Depth supervision of depth-aware gating (Kong & Fowlkes' Eq. 1) through the real trainer, on
rendered synthetic rooms: the depth branch's losses fall, its bins agree with the sensor's, and
the stages of the paper's schedule chain.

Chance level: the bin edges are the 20/40/60/80 % quantiles of the room's measured depths, so
each bin holds about a fifth of the pixels; chance agreement is the share of the most frequent
bin (printed with the measured agreement; ``pytest -s`` shows them).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from rgbd_seg_ros.backends.checkpoint import build_from_checkpoint
from rgbd_seg_ros.backends.depth_gating import DepthGatingNet, sensor_bin_probs
from rgbd_seg_ros.data.layout import DatasetReader
from rgbd_seg_ros.data.synth import synthesize
from rgbd_seg_ros.errors import ConfigError
from rgbd_seg_ros.training.config import TrainConfig, load_config
from rgbd_seg_ros.training.context import plan_stage
from rgbd_seg_ros.training.dataset import SegDataset
from rgbd_seg_ros.training.model_init import build_stage_model
from rgbd_seg_ros.training.run_data import wants_depth_targets
from rgbd_seg_ros.training.trainer import run_training

HEIGHT, WIDTH = 48, 64
SMALL = {'encoder': 'resnet18', 'width': 32, 'depth_head_width': 16, 'dropout': 0.0}


@pytest.fixture(scope='module')
def rooms(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One rendered room, 20 frames at 64x48 (16 train, 2 val, 2 test)."""
    root = tmp_path_factory.mktemp('synth_rooms') / 'ds'
    synthesize(7, 20, width=WIDTH, height=HEIGHT, dataset_root=root, resume=False, nthreads=1)
    return root


def _room_bins(root: Path) -> dict[str, Any]:
    """Backend options binning this room's depths into five equally filled bins."""
    reader = DatasetReader(root)
    records = list(reader.frames('train'))
    depth = np.concatenate([reader.load(r.frame_id).depth_mm.ravel() for r in records])
    edges = np.percentile(depth[depth > 0] / 1000.0, [20, 40, 60, 80])
    return {
        'bin_edges_m': [round(float(e), 3) for e in edges],
        'reference_focal_px': float(records[0].K[0, 0]),
    }


def _classes(root: Path) -> int:
    return DatasetReader(root).meta.num_classes


def _overrides(root: Path, out: Path, options: dict[str, Any], **extra: Any) -> list[str]:
    values: dict[str, Any] = {
        'model.options': options,
        'data.root': str(root),
        'data.num_workers': 0,
        'output_dir': str(out),
        'device': 'cpu',
        'precision': 'fp32',
        'progress_bar': False,
        'checkpoint_every': 0,
        'log_every': 5,
        'eval.every_steps': 0,
        'eval.multiscale_at_end': False,
        'augment.crop': None,
        'augment.scale': [0.8, 1.25],
        'augment.rotation_deg': 0.0,
        'optim.name': 'adam',
        'optim.lr': 1.0e-3,
        'optim.weight_decay': 0.0,
    }
    values.update(extra)
    return [f'{k}={json.dumps(v)}' for k, v in values.items()]  # JSON is YAML


def _agreement(model: DepthGatingNet, dataset: SegDataset) -> tuple[float, float]:
    """(share of valid pixels whose predicted bin is the sensor's, share of the commonest bin)
    over every frame of ``dataset``, at full resolution."""
    model.eval()
    agree = total = 0
    counts = np.zeros(len(model.edges_fz) + 1)
    for i in range(len(dataset)):
        item = dataset[i]
        with torch.no_grad():
            _, bins = model.predict_depth(item['rgb'][None], None, item['K'][None])
        probs, valid = sensor_bin_probs(
            item['depth_m'][None], item['K'][None, 0, 0], model.edges_fz, 1
        )
        target, mask = probs.argmax(1), valid[:, 0]
        agree += int((bins[mask] == target[mask]).sum())
        total += int(mask.sum())
        counts += np.bincount(target[mask].numpy(), minlength=len(counts))
    return agree / total, float(counts.max() / counts.sum())


def _hybrid_hole_agreement(model: DepthGatingNet, dataset: SegDataset) -> float:
    """Share of 8x8 cells whose hybrid gate, with the frame's depth removed, picks the bin the
    sensor measured there: in holes hybrid gating mixes the predicted channels."""
    hybrid = DepthGatingNet(
        model.num_classes,
        type(model.config)(**{**vars(model.config), 'gating_source': 'hybrid'}),
    )
    hybrid.load_state_dict(model.state_dict())
    hybrid.eval()
    agree = total = 0
    for i in range(len(dataset)):
        item = dataset[i]
        K = item['K'][None]
        with torch.no_grad():
            gate = hybrid.forward_all(item['rgb'][None], torch.zeros_like(item['depth'])[None], K)
        probs, valid = sensor_bin_probs(item['depth_m'][None], K[:, 0, 0], hybrid.edges_fz, 8)
        mask = valid[:, 0]
        agree += int((gate.gates[0].argmax(1)[mask] == probs.argmax(1)[mask]).sum())
        total += int(mask.sum())
    return agree / total


@pytest.mark.slow
def test_depth_branch_learns_the_sensor_bins(rooms: Path, tmp_path: Path) -> None:
    options = {**SMALL, **_room_bins(rooms), 'num_loops': 0, 'gating_source': 'predicted'}
    stage = {
        'name': 'gating',
        'steps': 60,
        'batch_size': 4,
        'frozen_bn': [],
        'loss': {'depth_bin_weight': 1.0, 'depth_reg_weight': 0.1},
    }
    cfg = load_config('depth_gating', _overrides(rooms, tmp_path / 'run', options, stages=[stage]))
    assert wants_depth_targets(cfg)
    frames = SegDataset(
        rooms,
        'train',
        depth_encoding='metric',
        depth_params={'max_depth_m': 10.0},
        depth_targets=True,
    )
    untrained = build_stage_model(
        cfg, plan_stage(cfg, 0, tmp_path / 'run'), _classes(rooms), print
    )
    assert isinstance(untrained, DepthGatingNet)
    before, chance = _agreement(untrained, frames)
    events: list[dict[str, Any]] = []
    path = run_training(cfg, progress=events.append)
    rows = [e for e in events if e.get('event') == 'step']
    bins_loss = [e['loss_depth_bins0'] for e in rows]
    reg_loss = [e['loss_log_depth0'] for e in rows]
    model, _ = build_from_checkpoint(path)
    assert isinstance(model, DepthGatingNet)
    after, _ = _agreement(model, frames)
    holes = _hybrid_hole_agreement(model, frames)
    print(
        f'depth bins on {len(frames)} training frames (eval mode): chance {chance:.3f}, '
        f'untrained {before:.3f}, trained {after:.3f}, hybrid gate in holes {holes:.3f}; '
        f'bin CE {bins_loss[0]:.3f} -> {bins_loss[-1]:.3f}, '
        f'log-depth MSE {reg_loss[0]:.3f} -> {reg_loss[-1]:.3f}'
    )
    assert np.mean(bins_loss[-3:]) < 0.9 * np.mean(bins_loss[:3])
    assert np.mean(reg_loss[-3:]) < 0.5 * np.mean(reg_loss[:3])
    assert after > chance + 0.1 and after > before + 0.1
    assert holes > chance + 0.1


def test_depth_weights_need_a_depth_branch(rooms: Path, tmp_path: Path) -> None:
    options = {**SMALL, 'gating_source': 'none', 'num_loops': 0}
    stage = {'name': 'baseline', 'steps': 1, 'batch_size': 2, 'loss': {'depth_bin_weight': 0.1}}
    cfg = load_config('depth_gating', _overrides(rooms, tmp_path / 'run', options, stages=[stage]))
    with pytest.raises(ConfigError, match='predicts no depth'):
        run_training(cfg)
    assert not wants_depth_targets(TrainConfig())
    with pytest.raises(ConfigError, match='depth_'):
        load_config('depth_gating', ['stages.1.loss.depth_bin_weight=-1'])


@pytest.mark.slow
def test_the_recipe_stages_chain(rooms: Path, tmp_path: Path) -> None:
    """config/train/depth_gating.yaml, two steps per stage: baseline -> gating (the baseline's
    3x3 layer starts all five branches) -> one unroll (from the feed-forward step) -> two
    unrolls -> segmentation-only fine-tune; depth terms exactly where the recipe weighs them."""
    from rgbd_seg_ros.backends.checkpoint import load_checkpoint

    options = {**SMALL, **_room_bins(rooms)}
    extra: dict[str, Any] = {'augment.scale': [0.5, 2.0], 'augment.rotation_deg': 10.0}
    for i in range(5):
        extra[f'stages.{i}.steps'] = 2
    out = tmp_path / 'run'
    cfg = load_config('depth_gating', _overrides(rooms, out, options, **extra))
    names = [s.name for s in cfg.stages]
    assert names == ['baseline', 'gating', 'loop1', 'loop2', 'finetune']
    events: list[dict[str, Any]] = []
    run_training(cfg, progress=events.append)
    depth_keys = {
        name: sorted(
            {
                k
                for e in events
                if e.get('event') == 'step' and e['stage'] == name
                for k in e
                if k.startswith(('loss_depth', 'loss_log_depth'))
            }
        )
        for name in names
    }
    assert depth_keys == {
        'baseline': [],
        'gating': ['loss_depth_bins0', 'loss_log_depth0'],
        'loop1': ['loss_depth_bins0', 'loss_depth_bins1', 'loss_log_depth0', 'loss_log_depth1'],
        'loop2': [f'loss_{t}{i}' for t in ('depth_bins', 'log_depth') for i in range(3)],
        'finetune': [],
    }

    def last(stage: str) -> dict[str, torch.Tensor]:
        return load_checkpoint(out / stage / 'last.safetensors', check_backend=False)[1]

    baseline, gating = last('baseline'), last('gating')
    start = build_stage_model(cfg, plan_stage(cfg, 1, out), _classes(rooms), print).state_dict()
    for k in range(5):
        for name in ('0.weight', '1.weight', '1.running_mean'):
            src = baseline[f'ff.gating.branches.0.{name}']
            assert torch.equal(start[f'ff.gating.branches.{k}.{name}'], src)
    assert torch.equal(start['res6.0.weight'], baseline['res6.0.weight'])
    start = build_stage_model(cfg, plan_stage(cfg, 2, out), _classes(rooms), print).state_dict()
    assert torch.equal(start['loop.depth_head.bins.weight'], gating['ff.depth_head.bins.weight'])
    assert torch.equal(start['ff.depth_head.bins.weight'], gating['ff.depth_head.bins.weight'])
    model, _ = build_from_checkpoint(out / 'finetune' / 'last.safetensors')
    assert isinstance(model, DepthGatingNet) and model.num_loops == 2 and model.predicts_depth()
