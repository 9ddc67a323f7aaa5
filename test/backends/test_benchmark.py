"""Latency helper and the ``rgbd-seg bench`` subcommand on a tiny size."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from rgbd_seg_ros.cli.main import main
from rgbd_seg_ros.inference.benchmark import percentile, time_forward


def test_percentile() -> None:
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0
    assert percentile([1.0, 2.0], 95) == 1.95
    assert percentile([5.0], 95) == 5.0


def test_time_forward_restores_mode() -> None:
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 2, 1))

    class Wrapper(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = model

        def forward(self, rgb, depth):
            return self.net(rgb) + depth

    wrapper = Wrapper().train()
    stats = time_forward(wrapper, torch.zeros(1, 3, 8, 8), torch.zeros(1, 1, 8, 8), 1, 3)
    assert set(stats) >= {'p50_ms', 'p95_ms', 'fps'}
    assert stats['p95_ms'] >= stats['p50_ms'] > 0
    assert wrapper.training


def test_bench_command_writes_json(tmp_path: Path, capsys) -> None:
    out = tmp_path / 'bench.json'
    code = main(
        [
            'bench',
            '--backends',
            'adapnetpp',
            '--encoders',
            'resnet18',
            '--size',
            '32x48',
            '--iters',
            '1',
            '--warmup',
            '0',
            '--no-hha',
            '--json',
            str(out),
        ]
    )
    assert code == 0
    doc = json.loads(out.read_text())
    (row,) = doc['forward']
    assert row['backend'] == 'adapnetpp' and row['size'] == '32x48' and row['device'] == 'cpu'
    assert 'p50' in capsys.readouterr().out
