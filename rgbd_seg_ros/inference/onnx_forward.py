"""The engine's forward pass in ONNX Runtime (CPU), exported per input size on first use.

On the 2-core CPU, ``rgbd-seg bench`` measured ONNX Runtime's CPU provider at 1.1x (SSMA,
ResNet-18) to 2x (the two-stream baseline, ResNet-50) faster than torch eager for the same
fp32 graph at 480x640 (bench/cpu-2core). The graph is fixed-size (the exporter in
backends/export.py), so one session is built per network input size the node meets, and the
export costs seconds once per size. A backend whose forward reads the camera intrinsics
(``needs_intrinsics``: depth_gating bins on the focal length) is exported with ``K`` as a graph
input, so its session takes the K of every frame like the torch forward does.

The node's default runtime 'auto' uses this class on the CPU and falls back to torch for any
input size that does not export; its single ``session.run`` per frame also releases the GIL
once, where torch's eager forward takes it back after every op (doc/design.md §2.13).

The session's graph ends in an ArgMax over the classes (first maximum, as ``argmax``), so the
labels come out of ``session.run`` with the logits: ONNX Runtime's ArgMax of 480x640x12
logits takes 3-4 ms on one thread of the 2-core VM, without the GIL, where the engine's own
reduction took 9-13 ms and in the node up to 22 ms (its buffers are fresh memory every frame).
The logits are still returned for the confidence, computed after the labels are published.
"""

from __future__ import annotations

import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from rgbd_seg_ros.backends.export import export_onnx
from rgbd_seg_ros.errors import ConfigError

if TYPE_CHECKING:
    from onnxruntime import InferenceSession


class OnnxForward:
    """``forward(rgb, depth, K=None) -> logits`` through ONNX Runtime, one session per input
    size; ``K [1,3,3]`` is read by the graphs of backends that need it (and required there).

    With ``fall_back`` (the runtime 'auto'), a size whose export or session fails is recorded
    in ``fallbacks`` with its reason and the call returns None for it from then on, so the
    engine runs torch there; without it the failure is raised (runtime 'onnxruntime').

    A session's intra-op threads are torch's thread budget when it opens; when that budget
    changes (the node's ``cpu_threads`` parameter), the next call reopens the session from the
    file already exported, so the change takes effect without a new export.
    """

    def __init__(
        self, model: torch.nn.Module, depth_channels: int, fall_back: bool = False
    ) -> None:
        try:
            import onnxruntime  # noqa: F401
        except ImportError as err:
            raise ConfigError('runtime onnxruntime needs the onnxruntime package') from err
        self._model = model
        self._depth_channels = depth_channels
        self._fall_back = fall_back
        self._workdir = tempfile.TemporaryDirectory(prefix='rgbd_seg_onnx_')
        self._sessions: dict[tuple[int, int], _Session] = {}
        self.fallbacks: dict[tuple[int, int], str] = {}

    def prepare(self, height: int, width: int) -> None:
        """Export and open the session for this input size now (a model with a fixed input
        size is exported while it loads, not on the first frame)."""
        self._session(height, width)

    def __call__(
        self, rgb: torch.Tensor, depth: torch.Tensor, K: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor] | None:
        """``(logits [1,C,H,W], labels [H,W] uint8, or int32 beyond 256 classes)``, or None
        where torch runs this size."""
        entry = self._session(*rgb.shape[-2:])
        if entry is None:
            return None
        session, names = entry
        feeds = {'rgb': rgb, 'depth': depth, 'K': K}
        inputs = {}
        for name in names:
            tensor = feeds[name]
            if tensor is None:
                raise ValueError(f'the exported graph reads {names}; got None for one of them')
            inputs[name] = np.ascontiguousarray(tensor.numpy(), dtype=np.float32)
        logits, labels = session.run(['logits', LABELS_OUTPUT], inputs)
        return torch.from_numpy(logits), torch.from_numpy(labels[0])

    def session_threads(self) -> dict[tuple[int, int], int]:
        """Intra-op threads of each open session, by input size."""
        return {size: entry.threads for size, entry in self._sessions.items()}

    def _session(self, height: int, width: int) -> tuple[InferenceSession, list[str]] | None:
        size = (height, width)
        entry = self._sessions.get(size)
        if entry is not None:
            if entry.threads != torch.get_num_threads():
                entry = self._sessions[size] = _Session.open(entry.path)
            return entry.session, entry.names
        if size in self.fallbacks:
            return None
        path = Path(self._workdir.name) / f'model_{height}x{width}.onnx'
        try:
            export_onnx(self._model, path, height, width, self._depth_channels)
            add_labels_output(path)
            entry = _Session.open(path)
        except Exception as err:  # whatever the exporter or ONNX Runtime raised
            if not self._fall_back:
                raise
            self.fallbacks[size] = f'{type(err).__name__}: {err}'[:300]
            warnings.warn(
                f'ONNX Runtime cannot run this model at {height}x{width} '
                f'({self.fallbacks[size]}); torch runs that size',
                RuntimeWarning,
                stacklevel=2,
            )
            return None
        self._sessions[size] = entry
        return entry.session, entry.names


LABELS_OUTPUT = 'labels'


def add_labels_output(path: Path) -> None:
    """Append a ``labels = ArgMax(logits, axis=1)`` output to the graph at ``path`` (keepdims
    0, first maximum on ties), rewriting the file in place.

    The labels are uint8 where the class count is known and at most 256, int32 otherwise:
    the node publishes 8-bit labels for such models, and ArgMax's int64 (2.4 MB at 480x640)
    cast to uint8 inside the run means the engine neither reads 1.2 MB of int32 labels nor
    converts them after the forward (measured at 480x640 with SSMA: see the README).
    """
    import onnx
    from onnx import TensorProto, helper

    proto = onnx.load(str(path))
    graph = proto.graph
    logits = next(output for output in graph.output if output.name == 'logits')
    # Known sizes stay known, named ones keep their name, unknown ones stay unknown.
    dims: list[int | str | None] = [
        d.dim_value if d.HasField('dim_value') else (d.dim_param or None)
        for d in logits.type.tensor_type.shape.dim
    ]
    classes = dims[1] if len(dims) == 4 else None
    small = isinstance(classes, int) and 0 < classes <= 256
    label_type = TensorProto.UINT8 if small else TensorProto.INT32
    graph.node.extend(
        [
            helper.make_node(
                'ArgMax', ['logits'], ['labels_int64'], axis=1, keepdims=0, select_last_index=0
            ),
            helper.make_node('Cast', ['labels_int64'], [LABELS_OUTPUT], to=label_type),
        ]
    )
    shape = [dims[0], *dims[2:]] if len(dims) == 4 else None
    graph.output.append(helper.make_tensor_value_info(LABELS_OUTPUT, label_type, shape))
    onnx.save(proto, str(path))


@dataclass(frozen=True)
class _Session:
    """An open session, the inputs its graph reads, its file and its intra-op threads."""

    session: InferenceSession
    names: list[str]
    path: Path
    threads: int

    @classmethod
    def open(cls, path: Path) -> _Session:
        """The CPU session of ``path`` with torch's current thread budget."""
        threads = torch.get_num_threads()
        session, names = open_session(path)
        return cls(session, names, path, threads)


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
    export_onnx(model, path, height, width, depth_channels)
    return open_session(path, providers)


def open_session(
    path: Path, providers: Sequence[str] = ('CPUExecutionProvider',)
) -> tuple[InferenceSession, list[str]]:
    """An ONNX Runtime session of the exported ``path`` and the input names it reads; on the
    CPU with torch's current thread budget."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if list(providers) == ['CPUExecutionProvider']:
        options.intra_op_num_threads = torch.get_num_threads()
        options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=list(providers))
    return session, [node.name for node in session.get_inputs()]
