"""ONNX export of a backend at a fixed input resolution.

Exporter choice (measured with torch 2.13, onnx 1.23, onnxscript 0.7, on 2 CPU cores, SSMA
with ResNet-18 encoders at 96x128): the TorchScript exporter (``dynamo=False``) takes about 3 s
and writes the requested opset 17; the ``torch.export``-based exporter (``dynamo=True``, the
default since torch 2.9) takes about 13 s and always emits opset 18 -- its down-conversion to
17 fails on the Resize/Reduce nodes ("axes_input_to_attribute" assertion) and it then keeps 18.
Both match the torch outputs to ~1e-6. So ``dynamo=False`` is used: faster, and it honours
``opset`` (opset 17 runs on older ONNX Runtime / TensorRT builds). Its DeprecationWarning is
silenced here; pass ``dynamo=True`` to use the new exporter instead.

The graph has inputs ``rgb`` [1,3,H,W] and ``depth`` [1,depth_channels,H,W], plus ``K``
[1,3,3] (the camera matrix of the network input) for a backend that sets ``needs_intrinsics``,
and output ``logits`` [1,num_classes,H,W]. K is an input rather than a constant so that one
graph serves every camera, as the torch forward does. The TorchScript exporter drops inputs a
graph never reads (a unimodal ``adapnetpp`` keeps only ``rgb`` or ``depth``; ``depth_gating``
with predicted gating reads neither depth nor K), so feed the session the inputs it lists
(:func:`onnx_input_names`). The backend name, class count and input names are stored in the
model's metadata.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from rgbd_seg_ros.backends.base import needs_intrinsics


def example_intrinsics(
    batch_size: int, height: int, width: int, device: torch.device | str = 'cpu'
) -> torch.Tensor:
    """A plausible ``K [B,3,3]`` for an input of ``height x width`` (fx = fy = width, centred
    principal point): the example the exporter traces with; the graph reads the real one."""
    K = torch.tensor(
        [[float(width), 0.0, width / 2], [0.0, float(width), height / 2], [0.0, 0.0, 1.0]],
        device=device,
    )
    return K.expand(batch_size, 3, 3).contiguous()


def export_onnx(
    model: nn.Module,
    path: str | Path,
    height: int,
    width: int,
    depth_channels: int,
    opset: int = 17,
    *,
    batch_size: int = 1,
    dynamo: bool = False,
    metadata: dict[str, str] | None = None,
) -> Path:
    """Export ``model`` (a backend) for ``height x width`` inputs; returns the written path.

    The model is exported in eval mode on its current device and its train/eval mode is
    restored afterwards. The file is written to a temporary name and renamed into place.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device('cpu')
    inputs = [
        torch.zeros(batch_size, 3, height, width, device=device),
        torch.zeros(batch_size, depth_channels, height, width, device=device),
    ]
    names = ['rgb', 'depth']
    if needs_intrinsics(model):
        inputs.append(example_intrinsics(batch_size, height, width, device))
        names.append('K')
    was_training = model.training
    model.eval()
    tmp = path.with_name(path.name + '.tmp')
    try:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore', DeprecationWarning)
            warnings.simplefilter('ignore', UserWarning)
            warnings.simplefilter('ignore', torch.jit.TracerWarning)
            with torch.no_grad():
                kwargs: dict[str, Any] = {
                    'input_names': names,
                    'output_names': ['logits'],
                    'opset_version': opset,
                    'dynamo': dynamo,
                }
                if not dynamo:
                    kwargs['do_constant_folding'] = True
                torch.onnx.export(model, tuple(inputs), str(tmp), **kwargs)
        _add_metadata(tmp, model, height, width, metadata)
        tmp.replace(path)
    finally:
        model.train(was_training)
        if tmp.exists():
            tmp.unlink()
        data = tmp.with_name(tmp.name + '.data')
        if data.exists():
            data.unlink()
    return path


def _add_metadata(
    path: Path, model: nn.Module, height: int, width: int, extra: dict[str, str] | None
) -> None:
    import onnx

    proto = onnx.load(str(path))
    info = {
        'num_classes': str(getattr(model, 'num_classes', '')),
        'height': str(height),
        'width': str(width),
        'inputs': ','.join(i.name for i in proto.graph.input),
    }
    config = getattr(model, 'config', None)
    if config is not None:
        info['encoder'] = str(getattr(config, 'encoder', ''))
    info['backend_class'] = type(model).__name__
    info.update(extra or {})
    for key, value in info.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, str(path))


def onnx_input_names(path: str | Path) -> list[str]:
    """Names of the graph inputs of an exported model (a subset of ``rgb``, ``depth``, ``K``)."""
    import onnx

    return [i.name for i in onnx.load(str(path), load_external_data=False).graph.input]


def run_onnx(path: str | Path, rgb: Any, depth: Any, K: Any = None) -> Any:
    """Run an exported model with ONNX Runtime (CPU) on numpy/torch inputs; returns logits.

    ``K`` ([1,3,3], see :func:`export_onnx`) is needed only when the graph reads it.
    """
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=['CPUExecutionProvider'])
    feeds = {'rgb': rgb, 'depth': depth, 'K': K}
    inputs = {}
    for node in session.get_inputs():
        value = feeds[node.name]
        if value is None:
            raise ValueError(f'{path} reads the input {node.name!r}; pass it')
        if isinstance(value, torch.Tensor):
            value = value.detach().cpu().numpy()
        inputs[node.name] = np.ascontiguousarray(value, dtype=np.float32)
    return session.run(['logits'], inputs)[0]
