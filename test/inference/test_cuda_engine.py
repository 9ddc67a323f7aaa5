"""The engine's CUDA paths held to its CPU path on the same frames.

The CPU path is checked against numpy and known logits elsewhere; on a GPU the engine uploads
through pinned memory, runs channels_last under fp16/bf16 autocast and post-processes on the
device, and none of that runs on a CPU-only machine. So these tests skip there, and
``bench/gpu_check.sh`` runs them on a GPU machine.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tiny_backend import near_a_boundary, register, write_checkpoint

from rgbd_seg_ros.core.cloud import CLOUD_DTYPE
from rgbd_seg_ros.inference.engine import CloudOptions, Engine
from rgbd_seg_ros.inference.postprocess import softmax_max

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device'),
]

H, W = 120, 160
K = np.array([[120.0, 0, 79.5], [0, 120.0, 59.5], [0, 0, 1]])
ALL = ('labels', 'confidence', 'color', 'overlay', 'points')


@pytest.fixture(autouse=True)
def _tiny_backend(monkeypatch):
    register(monkeypatch)


@pytest.fixture
def checkpoint(tmp_path):
    write_checkpoint(tmp_path / 'm.safetensors')
    return tmp_path / 'm.safetensors'


def scene(seed: int = 3):
    """Depth from 0.5 to 6 m (both label boundaries crossed) with NaN, inf and zero patches."""
    rng = np.random.default_rng(seed)
    depth_m = np.repeat(np.linspace(0.5, 6.0, W, dtype=np.float32)[None], H, axis=0)
    depth_m += rng.normal(0, 0.01, (H, W)).astype(np.float32)
    depth_m[0, :5] = np.nan
    depth_m[1, :5] = np.inf
    depth_m[2, :5] = 0.0
    rgb = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    return rgb, depth_m


@pytest.fixture
def no_tf32(monkeypatch):
    """fp32 on CUDA may run convolutions in TF32 (torch's default for cuDNN), which rounds the
    inputs to 10 mantissa bits; the fp32 comparison is exact only without it."""
    monkeypatch.setattr(torch.backends.cudnn, 'allow_tf32', False)
    matmul = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision('highest')
    yield
    torch.set_float32_matmul_precision(matmul)


@pytest.mark.parametrize('precision', ['fp32', 'fp16', 'bf16'])
@pytest.mark.parametrize('organized', [False, True])
def test_every_output_on_cuda_equals_the_cpu_output(checkpoint, no_tf32, precision, organized):
    rgb, depth_m = scene()
    cpu = Engine.from_checkpoint(checkpoint, device='cpu')
    gpu = Engine.from_checkpoint(checkpoint, device='cuda', precision=precision)
    opts = CloudOptions(stride=2 if organized else 1, max_range=5.0, organized=organized)
    want = cpu.predict(rgb, depth_m, K, outputs=ALL, cloud=opts)
    got = gpu.predict(rgb, depth_m, K, outputs=ALL, cloud=opts)

    margin = {'fp32': 0.0, 'fp16': 0.05, 'bf16': 0.15}[precision]
    settled = ~near_a_boundary(depth_m, margin) if margin else np.ones((H, W), bool)
    assert got.labels.dtype == want.labels.dtype and got.labels.shape == (H, W)
    np.testing.assert_array_equal(got.labels[settled], want.labels[settled])
    # fp32: 1e-4, since the CPU reference's first exp in a process may be 1e-4 off at one
    # element (torch's, with two or more threads; test_engine.py says more).
    atol = {'fp32': 1e-4, 'fp16': 5e-3, 'bf16': 4e-2}[precision]
    np.testing.assert_allclose(got.confidence[settled], want.confidence[settled], atol=atol)
    np.testing.assert_array_equal(got.color[settled], want.color[settled])
    assert np.abs(got.overlay[settled].astype(int) - want.overlay[settled]).max() <= 1

    assert got.points.dtype == CLOUD_DTYPE and got.points.shape == want.points.shape
    for name in ('x', 'y', 'z'):  # geometry does not depend on the model's precision
        np.testing.assert_allclose(got.points[name], want.points[name], rtol=1e-6, atol=1e-6)
    if precision == 'fp32':
        np.testing.assert_array_equal(got.points['label'], want.points['label'])
        np.testing.assert_array_equal(got.points['rgb'], want.points['rgb'])
        np.testing.assert_allclose(got.points['confidence'], want.points['confidence'], atol=1e-4)
    else:  # near-boundary pixels may flip; the cloud has no pixel index to exclude them by
        assert np.mean(got.points['label'] == want.points['label']) > 0.95


def test_the_cuda_cloud_lands_in_the_callers_buffer(checkpoint):
    rgb, depth_m = scene()
    gpu = Engine.from_checkpoint(checkpoint, device='cuda')
    for opts in (
        CloudOptions(stride=1, max_range=5.0),
        CloudOptions(stride=1, max_range=0.1),  # nothing kept
        CloudOptions(stride=3, max_range=4.0, organized=True),
    ):
        own = gpu.predict(rgb, depth_m, K, outputs=('points',), cloud=opts).points
        given = []

        def cloud_buffer(shape, given=given):
            given.append(np.full(shape, 7, CLOUD_DTYPE))  # stale bytes must all be replaced
            return given[-1]

        got = gpu.predict(
            rgb, depth_m, K, outputs=('points',), cloud=opts, cloud_buffer=cloud_buffer
        ).points
        assert len(given) == 1 and got is given[0]
        assert got.tobytes() == own.tobytes()


def test_cuda_frames_in_a_row_do_not_leak_into_each_other(checkpoint, no_tf32):
    """Uploads are non-blocking from pinned buffers that the next frame reuses."""
    gpu = Engine.from_checkpoint(checkpoint, device='cuda')
    cpu = Engine.from_checkpoint(checkpoint, device='cpu')
    frames = [scene(seed) for seed in range(4)]
    frames[2] = (frames[2][0], frames[2][1][:, ::-1].copy())  # far on the left this time
    got = [gpu.predict(rgb, depth, K).labels for rgb, depth in frames]
    for (rgb, depth), labels in zip(frames, got, strict=True):
        np.testing.assert_array_equal(labels, cpu.predict(rgb, depth, K).labels)


def test_the_side_thread_on_cuda_gives_the_one_threads_outputs(checkpoint, no_tf32):
    """``side_thread=True`` on CUDA (off there by default; ``publish_cost --side-thread on``
    and gpu_check's ``publish_cost_gpu`` step measure it): the cloud's x y z made on the side
    thread during the forward, the confidence in halves, the colour images on the side thread,
    every output as the one-thread engine makes it, emitted once each, frame after frame."""
    single = Engine.from_checkpoint(checkpoint, device='cuda', side_thread=False)
    threaded = Engine.from_checkpoint(checkpoint, device='cuda', side_thread=True)
    assert threaded.side_thread and not single.side_thread
    for opts in (CloudOptions(max_range=5.0), CloudOptions(stride=2, organized=True)):
        for seed in range(3):
            rgb, depth_m = scene(seed)
            want = single.predict(rgb, depth_m, K, outputs=ALL, cloud=opts)
            emitted = []
            got = threaded.predict(
                rgb,
                depth_m,
                K,
                ALL,
                cloud=opts,
                emit=lambda n, a, out=emitted: out.append((n, a.copy())),
            )
            assert sorted(name for name, _ in emitted) == sorted(ALL)
            for name, array in emitted:
                assert array.tobytes() == getattr(got, name).tobytes(), name
            for name in ('labels', 'color', 'overlay'):
                np.testing.assert_array_equal(getattr(got, name), getattr(want, name))
            # a reduction split in two may round 1 ulp apart from the whole
            np.testing.assert_allclose(got.confidence, want.confidence, rtol=1e-6)
            assert got.points.shape == want.points.shape
            for name in ('x', 'y', 'z', 'rgb', 'label'):
                np.testing.assert_array_equal(got.points[name], want.points[name])
            np.testing.assert_allclose(
                got.points['confidence'], want.points['confidence'], rtol=1e-6
            )


def test_softmax_max_on_cuda_equals_float64_softmax():
    logits = 6 * torch.randn(1, 12, 480, 640, generator=torch.Generator().manual_seed(4))
    expected = torch.softmax(logits.double(), 1).amax(1)[0].float()
    got = softmax_max(logits.cuda())
    assert got.device.type == 'cuda' and got.dtype == torch.float32
    torch.testing.assert_close(got.cpu(), expected, atol=2e-6, rtol=1e-5)


@pytest.mark.parametrize('precision', ['fp32', 'bf16'])
def test_cuda_graph_replay_equals_the_eager_forward(precision):
    from rgbd_seg_ros.backends.registry import build_backend
    from rgbd_seg_ros.tools.runners import cudagraph_runner, eager_runner

    torch.manual_seed(0)
    model = build_backend('esanet_add', num_classes=12).cuda().eval()
    model = model.to(memory_format=torch.channels_last)
    rgb = torch.randn(1, 3, 96, 128, device='cuda').contiguous(memory_format=torch.channels_last)
    depth = torch.randn(1, 1, 96, 128, device='cuda')
    eager = eager_runner(model, rgb, depth, precision).output()
    graph = cudagraph_runner(model, rgb, depth, precision).output()
    tol = {'fp32': 1e-3, 'bf16': 5e-2}[precision] * float(eager.abs().max())
    torch.testing.assert_close(graph, eager, atol=tol, rtol=0)


def test_an_fp16_overflow_on_cuda_runs_in_bf16(checkpoint):
    rgb, depth_m = scene()
    cpu = Engine.from_checkpoint(checkpoint, device='cpu')
    gpu = Engine.from_checkpoint(checkpoint, device='cuda', precision='fp16')
    for engine in (cpu, gpu):
        with torch.no_grad():  # the same argmax, logits up to 1.2e5: past fp16's 65504
            engine.model.head.weight.mul_(1e4)
            engine.model.head.bias.mul_(1e4)
    with pytest.warns(RuntimeWarning, match='fp16 overflowed'):
        got = gpu.predict(rgb, depth_m, K)
    assert gpu.precision == 'bf16'
    settled = ~near_a_boundary(depth_m, 0.15)
    want = cpu.predict(rgb, depth_m, K)
    np.testing.assert_array_equal(got.labels[settled], want.labels[settled])
