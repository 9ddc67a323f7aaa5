"""Latency helpers, FLOP count, matmul peak, execution-mode runners and ``rgbd-seg bench``
on tiny sizes (nothing here runs at camera resolution)."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from rgbd_seg_ros.backends.registry import build_backend
from rgbd_seg_ros.cli.main import main
from rgbd_seg_ros.tools import bench_sweep
from rgbd_seg_ros.tools.bench_sweep import SweepConfig, add_baseline_ratios, run_one
from rgbd_seg_ros.tools.measure import (
    PeakMemory,
    count_flops,
    measure_matmul_peak,
    percentile,
    time_forward,
)
from rgbd_seg_ros.tools.runners import available_modes, make_runner


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


def test_count_flops_of_a_tiny_conv_net() -> None:
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1, bias=False),
        torch.nn.ReLU(),
        torch.nn.Flatten(),
        torch.nn.Linear(8 * 16 * 16, 10),
    )
    conv_macs = 16 * 16 * 8 * 3 * 3 * 3  # output pixels x out channels x in channels x 3x3
    linear_macs = 8 * 16 * 16 * 10
    assert count_flops(net, torch.zeros(1, 3, 16, 16)) == 2 * (conv_macs + linear_macs)


def _tiny_backend() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_backend('esanet_add', 5, encoder='resnet18', decoder_channels=16).eval()


def test_matmul_peak_and_fraction() -> None:
    peak = measure_matmul_peak('cpu', torch.float32, sizes=(128, 256))
    assert math.isfinite(peak) and peak > 0
    n = 256
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.matmul(a, b)
    start = time.perf_counter()
    torch.matmul(a, b)
    achieved = 2 * n**3 / (time.perf_counter() - start)
    assert 0 < achieved / peak < 1.5


def test_eager_and_onnxruntime_runners_match_the_model(tmp_path: Path) -> None:
    model = _tiny_backend()
    rgb, depth = torch.randn(1, 3, 64, 64), torch.rand(1, 1, 64, 64) * 4
    with torch.no_grad():
        expected = model(rgb, depth)
    eager = make_runner('eager', model, rgb, depth)
    assert eager() is None
    torch.testing.assert_close(eager.output(), expected)
    ort = make_runner('onnxruntime', model, rgb, depth, workdir=tmp_path)
    ort()
    got = ort.output()
    assert got.shape == expected.shape
    assert float((got - expected).abs().max()) < 1e-3


@pytest.mark.slow
def test_compile_runner_matches_the_model() -> None:
    class Tiny(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.rgb = torch.nn.Conv2d(3, 4, 3, padding=1)
            self.depth = torch.nn.Conv2d(1, 4, 1)

        def forward(self, rgb: torch.Tensor, depth: torch.Tensor) -> torch.Tensor:
            return torch.relu(self.rgb(rgb) + self.depth(depth))

    model = Tiny().eval()
    rgb, depth = torch.randn(1, 3, 16, 16), torch.rand(1, 1, 16, 16)
    with torch.no_grad():
        expected = model(rgb, depth)
    runner = make_runner('compile', model, rgb, depth)  # compiles here (inductor, ~8 s)
    torch.testing.assert_close(runner.output(), expected)


def test_unavailable_and_failing_modes_are_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    assert 'cudagraph' not in available_modes('cpu')
    model = _tiny_backend()
    rgb, depth = torch.randn(1, 3, 32, 32), torch.rand(1, 1, 32, 32)
    config = SweepConfig(['esanet_add'], ['resnet18'], [(32, 32)], ['cpu'], iters=1, warmup=0)

    def row(mode: str, precision: str = 'fp32') -> dict:
        base = {'backend': 'esanet_add', 'encoder': 'resnet18', 'device': 'cpu', 'size': '32x32'}
        return run_one(
            {**base, 'mode': mode, 'precision': precision}, model, rgb, depth, config, 1.0
        )

    assert 'compile_cudagraph' not in available_modes('cpu')
    for mode in ('cudagraph', 'compile_cudagraph'):
        graph = row(mode)
        assert graph['status'] == 'skipped' and 'CUDA' in graph['reason']
        assert graph['p50_ms'] is None
    half = row('eager', 'fp16')
    assert half['status'] == 'skipped' and 'fp32' in half['reason']

    def broken(*args, **kwargs):
        raise RuntimeError('inductor could not compile\nlong trace')

    monkeypatch.setattr(bench_sweep, 'make_runner', broken)
    failed = row('compile')
    assert failed['status'] == 'failed'
    assert failed['reason'] == 'RuntimeError: inductor could not compile'


def test_ratio_to_baseline_uses_the_matching_row() -> None:
    def row(backend: str, p50: float, **kw) -> dict:
        base = {
            'encoder': 'resnet18',
            'size': '64x64',
            'device': 'cpu',
            'precision': 'fp32',
            'mode': 'eager',
            'status': 'ok',
        }
        return {**base, **kw, 'backend': backend, 'p50_ms': p50}

    rows = [
        row('esanet_add', 10.0),
        row('esanet_add', 4.0, mode='onnxruntime'),
        row('esanet_add', 40.0, encoder='resnet50'),
        row('esanet_add', 30.0, size='32x32', status='failed'),
        row('ssma', 25.0),
        row('ssma', 6.0, mode='onnxruntime'),
        row('ssma', 100.0, encoder='resnet50'),
        row('ssma', 7.0, size='32x32'),
    ]
    add_baseline_ratios(rows, 'esanet_add')
    assert [r['ratio_to_baseline'] for r in rows] == [1.0, 1.0, 1.0, None, 2.5, 1.5, 2.5, None]


def test_peak_memory_sees_rss_growth() -> None:
    with PeakMemory('cpu', interval_s=0.001) as memory:
        block = np.ones(64 * 2**20 // 8)  # 64 MiB, touched
        time.sleep(0.02)
        del block
    assert memory.kind == 'rss_growth'
    assert memory.mb is not None and memory.mb > 40


def test_bench_command_writes_json(tmp_path: Path, capsys) -> None:
    out = tmp_path / 'bench.json'
    argv = [
        'bench',
        '--sizes',
        '64x64',
        '--backends',
        'adapnetpp',
        '--encoders',
        'resnet18',
        '--iters',
        '1',
        '--warmup',
        '0',
        '--modes',
        'eager',
        'onnxruntime',
        '--json',
        str(out),
        '--no-hha',
    ]
    assert main(argv) == 0
    doc = json.loads(out.read_text())
    assert set(doc) >= {'machine', 'matmul_peak', 'forward', 'hha', 'node'}
    assert doc['machine']['cpu_cores'] >= 1 and doc['machine']['torch']
    (peak,) = doc['matmul_peak']
    assert peak['device'] == 'cpu' and peak['tflops'] > 0
    rows = doc['forward']
    keys = [(r['backend'], r['mode']) for r in rows]
    assert keys == [
        ('esanet_add', 'eager'),
        ('esanet_add', 'onnxruntime'),
        ('adapnetpp', 'eager'),
        ('adapnetpp', 'onnxruntime'),
    ]
    for r in rows:
        assert r['status'] == 'ok' and r['size'] == '64x64' and r['device'] == 'cpu'
        assert r['gflops'] > 0 and r['p50_ms'] > 0
        assert r['achieved_tflops'] == pytest.approx(r['gflops'] / r['p50_ms'])
        assert 0 < r['fraction_of_peak'] < 1.5
        assert r['peak_mem_kind'] == 'rss_growth' and r['peak_mem_mb'] >= 0
        base = next(b for b in rows if b['backend'] == 'esanet_add' and b['mode'] == r['mode'])
        assert r['ratio_to_baseline'] == pytest.approx(r['p50_ms'] / base['p50_ms'])
        # the same logits as the fp32 eager forward: exactly for eager, to float noise for ORT
        limit = 0.0 if r['mode'] == 'eager' else 1e-4
        assert r['diff_to_fp32_eager'] is not None and r['diff_to_fp32_eager'] <= limit
    assert doc['node'] is None
    out_text = capsys.readouterr().out
    assert 'matmul peak cpu fp32' in out_text and 'x base' in out_text


def test_bench_size_alias_without_baseline(tmp_path: Path) -> None:
    out = tmp_path / 'bench.json'
    argv = [
        'bench',
        '--size',
        '32x48',
        '--backends',
        'adapnetpp',
        '--encoders',
        'resnet18',
        '--iters',
        '1',
        '--warmup',
        '0',
        '--modes',
        'eager',
        '--no-baseline',
        '--no-hha',
        '--json',
        str(out),
    ]
    assert main(argv) == 0
    (row,) = json.loads(out.read_text())['forward']
    assert row['backend'] == 'adapnetpp' and row['size'] == '32x48'
    assert row['ratio_to_baseline'] is None


def test_bench_node_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    from rgbd_seg_ros.tools import node_bench

    seen = {}

    def measure(args, workdir):
        seen['args'], seen['workdir'] = args, workdir
        return {'size': 'x'.join(map(str, args.size)), 'node_exit_code': 0}

    monkeypatch.setattr(node_bench, 'measure', measure)
    monkeypatch.setattr(node_bench, 'report', lambda result: 'NODE REPORT')
    out = tmp_path / 'bench.json'
    argv = [
        'bench',
        '--no-forward',
        '--no-hha',
        '--node',
        '--node-seconds',
        '2',
        '--node-size',
        '240x320',
        '--json',
        str(out),
    ]
    assert main(argv) == 0
    args = seen['args']
    assert args.checkpoint == '' and args.seconds == 2.0 and args.size == (320, 240)
    doc = json.loads(out.read_text())
    assert doc['node'] == {'size': '320x240', 'node_exit_code': 0}
    assert doc['forward'] == [] and doc['matmul_peak'] == []
    assert 'NODE REPORT' in capsys.readouterr().out


def test_node_bench_counts_its_own_cpu_and_page_faults() -> None:
    """What the replayer and the measuring subscriber cost is measured, not assumed."""
    import mmap
    import resource

    from rgbd_seg_ros.tools import node_bench

    before = resource.getrusage(resource.RUSAGE_SELF)
    pages = 4096
    with mmap.mmap(-1, pages * mmap.PAGESIZE) as block:  # fresh pages: each write faults one in
        if hasattr(mmap, 'MADV_NOHUGEPAGE'):  # not one 2 MB page per 512 (THP 'always')
            block.madvise(mmap.MADV_NOHUGEPAGE)
        for page in range(pages):
            block[page * mmap.PAGESIZE] = 1
    busy_until = time.process_time() + 0.2
    while time.process_time() < busy_until:
        pass
    usage = node_bench._usage_since(before, elapsed=2.0)
    assert usage['page_faults_per_s'] >= pages / 2 / 2.0  # at least half the pages counted
    assert 10.0 <= usage['cpu_percent'] < 100.0  # >= 0.2 s of CPU over the 2 s given
    result = {
        'size': '640x480',
        'rate_hz': 30.0,
        'machine': 'test',
        'frames_in': 1,
        'frames_out': 1,
        'output_rate_hz': 1.0,
        'node_cpu_percent': 50.0,
        'load_average': (0.0, 0.0, 0.0),
        'bench_cpu_percent': usage['cpu_percent'],
        'bench_page_faults_per_s': usage['page_faults_per_s'],
        'latency_ms': {},
        'node': {},
        'drops': {},
    }
    line = node_bench.report(result).splitlines()[2]
    assert line.startswith('  this process (replay + measuring subscriber): CPU ')
    assert f'{usage["page_faults_per_s"]:.0f} page faults/s' in line
