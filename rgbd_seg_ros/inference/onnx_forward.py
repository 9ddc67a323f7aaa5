"""The engine's forward pass in ONNX Runtime (CPU), exported per input size on first use.

On the 2-core CPU, ``rgbd-seg bench`` measured ONNX Runtime's CPU provider at 1.1x (SSMA,
ResNet-18) to 2x (the two-stream baseline, ResNet-50) faster than torch eager for the same
fp32 graph at 480x640 (bench/cpu-2core). The graph is fixed-size (the exporter in
backends/export.py), so one session is built per network input size the node meets, and the
export costs seconds once per size. A backend whose forward reads the camera intrinsics
(``needs_intrinsics``: depth_gating bins on the focal length) is exported with ``K`` as a graph
input, so its session takes the K of every frame like the torch forward does.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from rgbd_seg_ros.errors import ConfigError

if TYPE_CHECKING:
    from onnxruntime import InferenceSession


class OnnxForward:
    """``forward(rgb, depth, K=None) -> logits`` through ONNX Runtime, one session per input
    size; ``K [1,3,3]`` is read by the graphs of backends that need it (and required there)."""

    def __init__(self, model: torch.nn.Module, depth_channels: int) -> None:
        try:
            import onnxruntime  # noqa: F401
        except ImportError as err:
            raise ConfigError('runtime onnxruntime needs the onnxruntime package') from err
        self._model = model
        self._depth_channels = depth_channels
        self._workdir = tempfile.TemporaryDirectory(prefix='rgbd_seg_onnx_')
        self._sessions: dict[tuple[int, int], tuple[InferenceSession, list[str]]] = {}

    def __call__(
        self, rgb: torch.Tensor, depth: torch.Tensor, K: torch.Tensor | None = None
    ) -> torch.Tensor:
        height, width = rgb.shape[-2:]
        session, names = self._sessions.get((height, width)) or self._build(height, width)
        feeds = {'rgb': rgb, 'depth': depth, 'K': K}
        inputs = {}
        for name in names:
            tensor = feeds[name]
            if tensor is None:
                raise ValueError(f'the exported graph reads {names}; got None for one of them')
            inputs[name] = np.ascontiguousarray(tensor.numpy(), dtype=np.float32)
        return torch.from_numpy(session.run(['logits'], inputs)[0])

    def _build(self, height: int, width: int) -> tuple[InferenceSession, list[str]]:
        path = Path(self._workdir.name) / f'model_{height}x{width}.onnx'
        entry = export_session(self._model, path, height, width, self._depth_channels)
        self._sessions[(height, width)] = entry
        return entry


def export_session(
    model: torch.nn.Module,
    path: Path,
    height: int,
    width: int,
    depth_channels: int,
    providers: Sequence[str] = ('CPUExecutionProvider',),
) -> tuple[InferenceSession, list[str]]:
    """Export ``model`` at ``height`` x ``width`` to ``path`` and open an ONNX Runtime session.

    Returns the session and the input names it reads (the exporter drops unused inputs).
    Sessions that run on the CPU get torch's thread budget (the node's cpu_threads), for the
    same reason torch does.
    """
    import onnxruntime as ort

    from rgbd_seg_ros.backends.export import export_onnx

    export_onnx(model, path, height, width, depth_channels)
    options = ort.SessionOptions()
    if list(providers) == ['CPUExecutionProvider']:
        options.intra_op_num_threads = torch.get_num_threads()
        options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=list(providers))
    return session, [node.name for node in session.get_inputs()]
