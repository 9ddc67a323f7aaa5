"""One runner per execution mode: a callable that runs one forward on fixed inputs.

``rgbd-seg bench`` compares the ways a backend's forward can execute on one device, at one
fixed input size (what a camera node sees), batch 1:

- ``eager``: ``model(rgb, depth)`` under ``inference_mode`` (and autocast for fp16/bf16);
- ``compile``: ``torch.compile(model)`` (default mode; inductor, which on the CPU builds C++
  with the system compiler);
- ``cudagraph``: CUDA only; the forward is captured once with ``torch.cuda.CUDAGraph`` after a
  warm-up on a side stream, and each call replays it (no Python, no launch overhead);
- ``compile_cudagraph``: CUDA only; ``torch.compile`` in mode 'reduce-overhead' (its graph
  replayed as CUDA graphs) with inductor's freezing (weights folded as constants);
- ``onnxruntime``: the model exported with :func:`rgbd_seg_ros.backends.export.export_onnx`
  and run by an ``InferenceSession`` (CUDA execution provider on a CUDA device with inputs and
  output bound in device memory, otherwise the CPU provider with torch's thread count); fp32.

Every factory builds the runner and calls it once, so that compilation, graph capture or an
unsupported operator fails there (and not inside the timed loop), and a compile step never
counts as latency even with ``--warmup 0``. :class:`ModeUnavailableError` means the mode cannot run
here (no CUDA, no ONNX Runtime provider, precision not supported); the benchmark records it as
a skipped row.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rgbd_seg_ros.errors import ConfigError, RgbdSegError
from rgbd_seg_ros.inference.precision import autocast_dtype
from rgbd_seg_ros.modes import BENCH_MODES, CUDA_GRAPH_MODES, BenchMode


class ModeUnavailableError(RgbdSegError):
    """The execution mode cannot run on this device or at this precision (a skipped row)."""


class Runner:
    """``runner()`` runs one forward and discards it; ``runner.output()`` returns the logits.

    ``step`` runs the forward and returns its logits in whatever form the mode produces.
    """

    def __init__(self, step: Callable[[], Any]) -> None:
        self._step = step

    def __call__(self) -> None:
        self._step()

    def output(self) -> torch.Tensor:
        """One more forward; its logits as a float32 CPU tensor (for parity checks)."""
        out = self._step()
        return torch.as_tensor(out).detach().float().cpu().clone()


def _autocast(device: torch.device, precision: str, cache: bool = True) -> Any:
    dtype = autocast_dtype(precision)  # validates
    if dtype is None:
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype, cache_enabled=cache)


def _torch_step(
    model: Callable[..., Any],
    rgb: torch.Tensor,
    depth: torch.Tensor,
    ctx_factory: Callable[[], AbstractContextManager[Any]],
) -> Callable[[], Any]:
    def step() -> Any:
        with torch.inference_mode(), ctx_factory():
            return model(rgb, depth)

    return step


def _ready(step: Callable[[], Any]) -> Runner:
    runner = Runner(step)
    runner()  # compile / capture / first-call set-up happens here, not in the timed loop
    return runner


def eager_runner(
    model: nn.Module, rgb: torch.Tensor, depth: torch.Tensor, precision: str = 'fp32'
) -> Runner:
    """Plain eager forward."""
    device = rgb.device
    _autocast(device, precision)  # validates
    return _ready(_torch_step(model, rgb, depth, lambda: _autocast(device, precision)))


def compile_runner(
    model: nn.Module, rgb: torch.Tensor, depth: torch.Tensor, precision: str = 'fp32'
) -> Runner:
    """``torch.compile`` (default mode), compiled by the first call made here.

    Dynamo's caches are reset first: every backend shares ``SegBackend.forward``, and after a
    few models its recompile limit would otherwise make later models run eagerly unnoticed.
    """
    import torch._dynamo

    device = rgb.device
    _autocast(device, precision)
    torch._dynamo.reset()
    compiled = torch.compile(model)
    return _ready(_torch_step(compiled, rgb, depth, lambda: _autocast(device, precision)))


def cudagraph_runner(
    model: nn.Module, rgb: torch.Tensor, depth: torch.Tensor, precision: str = 'fp32'
) -> Runner:
    """Capture one forward at the inputs' fixed size in a CUDA graph; each call replays it.

    Autocast's weight-cast cache is disabled (cached casts made during capture would be freed
    memory at replay time), as PyTorch's CUDA-graph notes require.
    """
    device = rgb.device
    if device.type != 'cuda':
        raise ModeUnavailableError('CUDA graphs need a CUDA device')
    static_rgb, static_depth = rgb.clone(), depth.clone()
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side), torch.no_grad(), _autocast(device, precision, cache=False):
        for _ in range(3):
            model(static_rgb, static_depth)
    torch.cuda.current_stream(device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.no_grad(), _autocast(device, precision, cache=False), torch.cuda.graph(graph):
        static_out = model(static_rgb, static_depth)

    def step() -> torch.Tensor:
        graph.replay()
        return static_out

    return _ready(step)


def compile_cudagraph_runner(
    model: nn.Module, rgb: torch.Tensor, depth: torch.Tensor, precision: str = 'fp32'
) -> Runner:
    """``torch.compile`` as a deployment would run it on a GPU: mode 'reduce-overhead' (the
    compiled graph replayed as CUDA graphs) with inductor's freezing (weights are constants, so
    autocast's weight casts and other weight-only work are folded at compile time).

    Compiled and recorded by the first calls made here, not in the timed loop.
    """
    import torch._dynamo
    import torch._inductor.config as inductor_config

    device = rgb.device
    if device.type != 'cuda':
        raise ModeUnavailableError('CUDA graphs need a CUDA device')
    _autocast(device, precision)
    torch._dynamo.reset()
    compiled = torch.compile(model, mode='reduce-overhead')
    step = _torch_step(compiled, rgb, depth, lambda: _autocast(device, precision))
    with inductor_config.patch(freezing=True):
        runner = _ready(step)
        runner()  # CUDA-graph trees record on a later call than the one that compiles
    return runner


def onnxruntime_providers(device: torch.device) -> list[str]:
    """The execution providers the ``onnxruntime`` mode uses on ``device``.

    Raises :class:`ModeUnavailableError` when ONNX Runtime or the device's provider is missing.
    """
    try:
        import onnxruntime as ort
    except ImportError:
        raise ModeUnavailableError('onnxruntime is not installed') from None
    available = ort.get_available_providers()
    if device.type == 'cuda':
        if 'CUDAExecutionProvider' not in available:
            raise ModeUnavailableError(
                'this onnxruntime build has no CUDAExecutionProvider (install onnxruntime-gpu)'
            )
        return ['CUDAExecutionProvider', 'CPUExecutionProvider']
    if device.type != 'cpu':
        raise ModeUnavailableError(f'onnxruntime mode runs on cpu or cuda, not {device.type}')
    return ['CPUExecutionProvider']


def onnxruntime_runner(
    model: nn.Module,
    rgb: torch.Tensor,
    depth: torch.Tensor,
    precision: str = 'fp32',
    *,
    workdir: str | Path,
) -> Runner:
    """Export ``model`` at the inputs' size into ``workdir`` and run it with ONNX Runtime."""
    import numpy as np

    from rgbd_seg_ros.backends.export import example_intrinsics
    from rgbd_seg_ros.inference.onnx_forward import export_session

    device = rgb.device
    if precision != 'fp32':
        raise ModeUnavailableError('the onnxruntime mode runs the fp32 export only')
    providers = onnxruntime_providers(device)
    h, w = rgb.shape[-2:]
    session, names = export_session(
        model, Path(workdir) / 'model.onnx', h, w, depth.shape[1], providers
    )
    feeds = {'rgb': rgb.contiguous(), 'depth': depth.contiguous()}  # NCHW, not channels_last
    feeds['K'] = example_intrinsics(rgb.shape[0], h, w, device)  # read by needs_intrinsics graphs
    if device.type == 'cpu':
        inputs = {n: np.ascontiguousarray(feeds[n].numpy(), dtype=np.float32) for n in names}
        return _ready(lambda: session.run(['logits'], inputs)[0])
    out_shape = [d if isinstance(d, int) else 1 for d in session.get_outputs()[0].shape]
    logits = torch.empty(out_shape, device=device, dtype=torch.float32)
    binding = session.io_binding()
    index = device.index if device.index is not None else torch.cuda.current_device()
    for n in names:
        t = feeds[n].float()
        feeds[n] = t
        binding.bind_input(n, 'cuda', index, np.float32, list(t.shape), t.data_ptr())
    binding.bind_output('logits', 'cuda', index, np.float32, out_shape, logits.data_ptr())

    def step() -> torch.Tensor:
        session.run_with_iobinding(binding)
        return logits

    return _ready(step)


def _mode_runs(mode: BenchMode, device: torch.device) -> bool:
    if mode in CUDA_GRAPH_MODES:
        return device.type == 'cuda'
    if mode == 'onnxruntime':
        try:
            onnxruntime_providers(device)
        except ModeUnavailableError:
            return False
    return True


def available_modes(device: Any) -> list[BenchMode]:
    """The modes that can run on ``device`` (the benchmark's default)."""
    device = torch.device(device)
    return [mode for mode in BENCH_MODES if _mode_runs(mode, device)]


def make_runner(
    mode: str,
    model: nn.Module,
    rgb: torch.Tensor,
    depth: torch.Tensor,
    precision: str = 'fp32',
    *,
    workdir: str | Path | None = None,
) -> Runner:
    """Build the runner of ``mode``; ``workdir`` (a scratch folder) is needed by onnxruntime."""
    if mode == 'eager':
        return eager_runner(model, rgb, depth, precision)
    if mode == 'compile':
        return compile_runner(model, rgb, depth, precision)
    if mode == 'cudagraph':
        return cudagraph_runner(model, rgb, depth, precision)
    if mode == 'compile_cudagraph':
        return compile_cudagraph_runner(model, rgb, depth, precision)
    if mode == 'onnxruntime':
        if workdir is None:
            raise ConfigError('the onnxruntime mode needs a scratch folder (workdir)')
        return onnxruntime_runner(model, rgb, depth, precision, workdir=workdir)
    raise ConfigError(f'unknown mode {mode!r}; valid modes: {", ".join(BENCH_MODES)}')


__all__ = [
    'ModeUnavailableError',
    'Runner',
    'available_modes',
    'compile_cudagraph_runner',
    'compile_runner',
    'cudagraph_runner',
    'eager_runner',
    'make_runner',
    'onnxruntime_providers',
    'onnxruntime_runner',
]
