"""DistributedDataParallel on CPU: 2 processes (gloo over loopback) end with identical weights."""

from __future__ import annotations

import os

import pytest
import torch
import torch.multiprocessing as mp
import train_fixtures as tf

from rgbd_seg_ros.training.distributed import free_port


def _run_rank(rank, world, port, root, out, result):
    os.environ.update(
        {
            'MASTER_ADDR': '127.0.0.1',
            'MASTER_PORT': str(port),
            'RANK': str(rank),
            'WORLD_SIZE': str(world),
            'LOCAL_RANK': str(rank),
        }
    )
    torch.set_num_threads(1)
    tf.register()  # a fresh process: no test fixtures here
    from pathlib import Path

    from rgbd_seg_ros.training import distributed as dd
    from rgbd_seg_ros.training.config import load_config
    from rgbd_seg_ros.training.trainer import Trainer

    cfg = load_config('tiny_cpu', tf.tiny_overrides(Path(root), Path(out), steps=6, device='cpu'))
    ctx = dd.setup('cpu')
    try:
        trainer = Trainer(cfg, ctx)
        trainer.run()
        state = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
        torch.save(
            {'rank': ctx.rank, 'world': ctx.world_size, 'state': state},
            Path(result) / f'rank{rank}.pt',
        )
    finally:
        dd.teardown(ctx)


@pytest.mark.slow
def test_two_cpu_ranks_hold_identical_weights(tmp_path):
    root = tf.write_dataset(tmp_path / 'ds', n_train=16, n_val=4)
    (tmp_path / 'res').mkdir()
    mp.spawn(
        _run_rank,
        args=(2, free_port(), str(root), str(tmp_path / 'out'), str(tmp_path / 'res')),
        nprocs=2,
        join=True,
    )
    r0 = torch.load(tmp_path / 'res' / 'rank0.pt', weights_only=True)
    r1 = torch.load(tmp_path / 'res' / 'rank1.pt', weights_only=True)
    assert (r0['world'], r1['world']) == (2, 2) and (r0['rank'], r1['rank']) == (0, 1)
    assert tf.state_allclose(r0['state'], r1['state'], atol=0.0)
    # they trained: the weights moved away from the seeded initialisation
    from rgbd_seg_ros.backends.checkpoint import load_checkpoint

    _, saved = load_checkpoint(
        tmp_path / 'out' / 'train' / 'last.safetensors', check_backend=False
    )
    assert tf.state_allclose(saved, r0['state'], atol=0.0)
