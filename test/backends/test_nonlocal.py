"""Asymmetric non-local blocks: exact pyramid pooling, block behaviour, ONNX export, benchmark."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from rgbd_seg_ros.backends.nonlocal_blocks import (
    AFNB,
    APNB,
    ANNContextHead,
    CrossModalAFNB,
    NonLocalBlock,
    pyramid_pool,
    pyramid_pool_matrix,
    pyramid_pool_reference,
)
from rgbd_seg_ros.tools.nonlocal_bench import analytic_gmacs, bench_nonlocal, format_bench_table


def _randomise(module: torch.nn.Module) -> None:
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.2)
        for m in module.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) + 0.5)


@pytest.mark.parametrize('size', [(60, 80), (30, 40), (7, 13), (3, 5), (1, 1), (97, 131), (8, 8)])
def test_pooling_matrix_equals_adaptive_pooling(size: tuple[int, int]) -> None:
    x = torch.randn(2, 3, *size, dtype=torch.float64)
    ref = pyramid_pool_reference(x)
    assert ref.shape == (2, 3, 110)
    got = pyramid_pool(x)
    assert torch.allclose(got, ref, atol=1e-12)
    full = pyramid_pool_matrix(*size, dtype=torch.float64)  # S x N
    assert full.shape == (110, size[0] * size[1])
    assert torch.allclose(full.sum(1), torch.ones(110, dtype=torch.float64))
    assert torch.allclose(x.flatten(2) @ full.T, ref, atol=1e-12)


def _apnb_reference(block: APNB, x: torch.Tensor) -> torch.Tensor:
    """APNB written with adaptive_avg_pool2d (the paper's definition)."""
    B, _, H, W = x.shape
    key_map = block.f_key(x)
    query = key_map.flatten(2)
    key = pyramid_pool_reference(key_map)
    value = pyramid_pool_reference(block.f_value(x))
    sim = torch.softmax(query.transpose(1, 2) @ key / block.key_channels**0.5, -1)
    ctx = (value @ sim.transpose(1, 2)).reshape(B, -1, H, W)
    return block.fuse(torch.cat([block.w_out(ctx), x], 1))


def test_apnb_matches_reference_and_shapes() -> None:
    block = APNB(16, 16, key_channels=8, value_channels=8).eval()
    _randomise(block)
    x = torch.randn(2, 16, 23, 37)
    with torch.no_grad():
        y = block(x)
        assert y.shape == x.shape
        assert torch.allclose(y, _apnb_reference(block, x), atol=1e-5)
    assert block.anchors == 110


def test_zero_initialised_output_projection_makes_a_no_op() -> None:
    block = APNB(16, 16, key_channels=8, value_channels=8, fuse=False).eval()
    x = torch.randn(1, 16, 12, 20)
    with torch.no_grad():
        assert torch.equal(block(x), x)
    nl = NonLocalBlock(16, 8, 8).eval()
    with torch.no_grad():
        assert torch.equal(nl(x), x)


@pytest.mark.parametrize('share', ['qk', 'kv', 'none'])
def test_apnb_sharing_variants(share: str) -> None:
    block = APNB(16, 24, key_channels=8, value_channels=8, share=share)
    y = block(torch.randn(2, 16, 9, 11))
    assert y.shape == (2, 24, 9, 11)
    if share == 'qk':
        assert block.f_query is block.f_key
    if share == 'kv':
        assert block.f_value is None


def test_afnb_keys_at_another_resolution() -> None:
    block = AFNB(12, 20, 20, key_channels=8, value_channels=8)
    high, low = torch.randn(2, 20, 30, 40), torch.randn(2, 12, 15, 20)
    assert block(low, high).shape == (2, 20, 30, 40)
    cross = CrossModalAFNB(20, 12, 16, key_channels=8, value_channels=8)
    assert cross(high, low).shape == (2, 16, 30, 40)
    head = ANNContextHead(20, 16, low_channels=12, key_channels=8, value_channels=8)
    assert head(high, low).shape == (2, 16, 30, 40)
    with pytest.raises(ValueError):
        head(high)
    assert ANNContextHead(20, 16, key_channels=8, value_channels=8)(high).shape == (2, 16, 30, 40)


def test_non_local_equals_apnb_when_anchors_are_all_positions() -> None:
    """With an 8x8 input, pyramid level 8 is the identity, so APNB's affinity covers NB's."""
    nl = NonLocalBlock(8, 4, 4).eval()
    _randomise(nl)
    x = torch.randn(1, 8, 8, 8)
    with torch.no_grad():
        full = nl(x)
        q = nl.f_key(x).flatten(2)
        v = nl.f_value(x).flatten(2)
        sim = torch.softmax(q.transpose(1, 2) @ q / 2.0, -1)
        ref = x + nl.w_out((v @ sim.transpose(1, 2)).reshape(1, 4, 8, 8))
    assert torch.allclose(full, ref, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize('dynamo', [False, True])
def test_onnx_export_at_480x640_feature_size(tmp_path: Path, dynamo: bool) -> None:
    """60x80 (480x640 at OS8) is where adaptive_avg_pool2d breaks the TorchScript exporter."""
    ort = pytest.importorskip('onnxruntime')
    head = ANNContextHead(32, 16, low_channels=24, key_channels=8, value_channels=8).eval()
    _randomise(head)
    high, low = torch.randn(1, 32, 60, 80), torch.randn(1, 24, 30, 40)
    path = tmp_path / 'ann.onnx'
    import warnings

    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter('ignore')
        torch.onnx.export(
            head,
            (high, low),
            str(path),
            input_names=['high', 'low'],
            dynamo=dynamo,
            opset_version=18 if dynamo else 17,
        )
        expected = head(high, low).numpy()
    session = ort.InferenceSession(str(path), providers=['CPUExecutionProvider'])
    names = [i.name for i in session.get_inputs()]
    feeds = dict(zip(names, (high.numpy(), low.numpy()), strict=True))
    got = session.run(None, feeds)[0]
    assert abs(got - expected).max() < 1e-4


def test_bench_direction_and_table() -> None:
    rows = bench_nonlocal(24, 40, channels=64, key_channels=16, iters=1)
    nb, ap = rows
    assert (nb.block, ap.block) == ('NB', 'APNB')
    assert nb.gmacs > ap.gmacs and nb.peak_mb > ap.peak_mb
    # NB: the closed form exactly; APNB: the closed form plus the (small) pooling products
    assert nb.gmacs == pytest.approx(analytic_gmacs('NB', 64, 16, 24, 40), rel=0.01)
    assert ap.gmacs >= analytic_gmacs('APNB', 64, 16, 24, 40)
    # the affinity dominates NB's memory: N x N fp32 (twice: logits and softmax)
    assert nb.peak_mb >= (24 * 40) ** 2 * 4 / 2**20
    text = format_bench_table(rows, 64, 16)
    assert 'NB / APNB' in text and 'APNB' in text


def test_analytic_counts_reproduce_paper_nb_rows() -> None:
    # doc/backends/ann.md §4.4: the NB rows of the paper's Table 1 are MAC counts with shared
    # q/k and W_o
    assert analytic_gmacs('NB', 2048, 256, 128, 256) == pytest.approx(601.4, rel=0.01)
    assert analytic_gmacs('NB', 2048, 256, 96, 96) == pytest.approx(58.0, rel=0.01)


def test_cli_entry(capsys: pytest.CaptureFixture[str]) -> None:
    import argparse

    from rgbd_seg_ros.cli import bench_nonlocal_cmd

    parser = argparse.ArgumentParser()
    bench_nonlocal_cmd.register(parser.add_subparsers())
    args = parser.parse_args(
        [
            'bench-nonlocal',
            '--height',
            '16',
            '--width',
            '24',
            '--channels',
            '32',
            '--key-channels',
            '8',
            '--iters',
            '1',
            '--device',
            'cpu',
        ]
    )
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert 'NB / APNB' in out


def test_pooled_keys_are_smooth_in_gradients() -> None:
    block = APNB(8, 8, key_channels=4, value_channels=4, zero_init=False)
    x = torch.randn(2, 8, 10, 14, requires_grad=True)
    F.mse_loss(block(x), torch.zeros(2, 8, 10, 14)).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert all(p.grad is not None for p in block.parameters())
