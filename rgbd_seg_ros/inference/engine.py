"""The inference engine: a checkpoint path in, labels/confidence/colour/overlay/cloud out.

Everything after the host-to-device copy happens on the model's device (resize, normalise,
depth encoding, forward, argmax, softmax confidence, colourise, overlay, back-projection), and
each requested output crosses back to the host once. Outputs nobody asked for are never
computed. The engine knows nothing about ROS; the node and the bag converter both use it.
"""

from __future__ import annotations

import functools
import importlib.util
import time
import warnings
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from rgbd_seg_ros.backends.base import needs_intrinsics, runs_without_depth
from rgbd_seg_ros.backends.checkpoint import CheckpointMeta, build_from_checkpoint
from rgbd_seg_ros.backends.checkpoint_limits import check_input_size
from rgbd_seg_ros.core.cloud import CLOUD_DTYPE
from rgbd_seg_ros.core.label_space import is_identity
from rgbd_seg_ros.errors import ConfigError, FrameError
from rgbd_seg_ros.inference.cloud_job import CloudBuffer, CloudJob, CloudOptions
from rgbd_seg_ros.inference.depth_encoding import encode_depth_torch, sanitise_depth
from rgbd_seg_ros.inference.postprocess import (
    RayCache,
    ReducedLogits,
    blend_overlay,
    softmax_block_rows,
)
from rgbd_seg_ros.inference.precision import TORCH_DTYPES
from rgbd_seg_ros.inference.side_thread import SideTask, SideTasks
from rgbd_seg_ros.inference.threads import available_cores
from rgbd_seg_ros.modes import (
    PRECISIONS,
    RESOLUTION_POLICIES,
    RUNTIMES,
    Precision,
    ResolutionPolicy,
    Runtime,
    as_choice,
)

Emit = Callable[[str, np.ndarray], None]
ALL_OUTPUTS = frozenset({'labels', 'confidence', 'color', 'overlay', 'points'})
__all__ = ['CloudBuffer', 'CloudOptions', 'Emit', 'Engine', 'Prediction']


@dataclass
class Prediction:
    """Host arrays at the camera's resolution; None for outputs that were not requested."""

    labels: np.ndarray
    confidence: np.ndarray | None = None
    color: np.ndarray | None = None
    overlay: np.ndarray | None = None
    points: np.ndarray | None = None  # CLOUD_DTYPE records, 1-D dense or 2-D organised
    timings_ms: dict[str, float] = field(default_factory=dict)


def onnxruntime_installed() -> bool:
    """Whether the onnxruntime package can be found (not imported: that costs a second)."""
    return importlib.util.find_spec('onnxruntime') is not None


def resolve_device(name: str) -> torch.device:
    """'auto' -> first CUDA device if present, else CPU; 'cuda' on a machine without one fails."""
    if name == 'auto':
        return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    device = torch.device(name)
    if device.type == 'cuda':
        if not torch.cuda.is_available():
            raise ConfigError(f'device {name!r} requested but CUDA is not available')
        if (device.index or 0) >= torch.cuda.device_count():
            raise ConfigError(
                f'device {name!r} does not exist ({torch.cuda.device_count()} CUDA device(s))'
            )
    return device


class Engine:
    """A loaded model plus its input spec; ``predict`` runs one frame end to end."""

    def __init__(
        self,
        model: torch.nn.Module,
        meta: CheckpointMeta,
        device: torch.device,
        precision: Precision = 'fp32',
        resolution_policy: ResolutionPolicy = 'checkpoint',
        fixed_size: tuple[int, int] | None = None,
        source: str = '',
        runtime: Runtime = 'torch',
        side_thread: bool | None = None,
    ) -> None:
        """``runtime`` 'auto' (the node's default) resolves to ONNX Runtime on a CPU where
        onnxruntime is installed, torch otherwise; an input size whose export fails then runs
        on torch (``runtime`` says which). A library Engine defaults to torch, which needs no
        export per input size. ``side_thread`` (None: on a CPU with more than one usable core)
        shares the work after the labels with a second thread (inference/side_thread.py); on
        CUDA the device already runs it apart from the host."""
        precision = as_choice(precision, PRECISIONS, 'precision')
        runtime = requested = as_choice(runtime, RUNTIMES, 'runtime')
        resolution_policy = as_choice(resolution_policy, RESOLUTION_POLICIES, 'resolution_policy')
        if resolution_policy == 'fixed' and fixed_size:
            try:  # the same bounds as a checkpoint's own fixed resolution
                check_input_size(*fixed_size, what='fixed input size')
            except ValueError as err:
                raise ConfigError(str(err)) from None
        self.model = model.eval().to(device)
        self.meta = meta
        self.device = device
        self.source = source
        # Half precision only pays off (and is only well supported) on CUDA.
        self.precision = precision if device.type == 'cuda' else 'fp32'
        self.resolution_policy = resolution_policy
        self.fixed_size = fixed_size
        spec = meta.input_spec
        # (x / 255 - mean) / std as one multiply-add per pixel.
        std = torch.tensor(spec.rgb_std, device=device).view(1, 3, 1, 1)
        self._rgb_scale = 1.0 / (255.0 * std)
        self._rgb_bias = -torch.tensor(spec.rgb_mean, device=device).view(1, 3, 1, 1) / std
        self._rays = RayCache()
        palette = np.asarray(meta.palette, dtype=np.uint8).reshape(-1, 3)
        self._palette = torch.from_numpy(palette).to(device)
        packed = (
            (palette[:, 0].astype(np.uint32) << 16)
            | (palette[:, 1].astype(np.uint32) << 8)
            | palette[:, 2].astype(np.uint32)
        )
        self._palette_packed = torch.from_numpy(packed.view(np.int32)).to(device)
        # Output index -> the dataset's label id, when the two differ (doc/design.md §3.2).
        ids = meta.label_ids
        self.max_label_id = max(ids)
        self._label_ids = (
            None if is_identity(ids) else torch.tensor(ids, dtype=torch.int32, device=device)
        )
        if device.type == 'cuda':
            # Module.to takes memory_format at run time; torch's overloads leave it out.
            self.model = self.model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        # Depth-aware gating bins on f/Z: such a backend gets the K of the network input.
        self._needs_K = needs_intrinsics(self.model)
        #: Whether predict() works on a frame without valid depth (all zero): the node then
        #: keeps publishing labels when depth drops out.
        self.runs_without_depth = runs_without_depth(self.model)
        self._onnx = None
        if runtime == 'onnxruntime' and device.type != 'cpu':
            raise ConfigError('runtime onnxruntime is the CPU path; on CUDA use torch')
        if runtime == 'auto':
            runtime = (
                'onnxruntime' if device.type == 'cpu' and onnxruntime_installed() else 'torch'
            )
        if runtime == 'onnxruntime':
            from rgbd_seg_ros.inference.onnx_forward import OnnxForward

            self._onnx = OnnxForward(
                self.model,
                int(meta.config.get('depth_channels', 1)),
                fall_back=requested == 'auto',
            )
            if self.fixed_network_size is not None:  # export now, not on the first frame
                self._onnx.prepare(*self.fixed_network_size)
        self._runtime: Runtime = runtime
        if side_thread is None:
            side_thread = device.type == 'cpu' and available_cores() > 1
        self._side = SideTasks(threaded=side_thread)

    def __del__(self) -> None:
        side = getattr(self, '_side', None)  # absent when __init__ raised before it
        if side is not None:
            side.close()

    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path,
        device: str = 'auto',
        precision: Precision = 'fp32',
        resolution_policy: ResolutionPolicy = 'checkpoint',
        fixed_size: tuple[int, int] | None = None,
        runtime: Runtime = 'torch',
        side_thread: bool | None = None,
    ) -> Engine:
        """Load a checkpoint (no code execution) and place it on ``device``."""
        dev = resolve_device(device)
        model, meta = build_from_checkpoint(path, device=str(dev))
        return cls(
            model,
            meta,
            dev,
            precision,
            resolution_policy,
            fixed_size,
            str(path),
            runtime,
            side_thread,
        )

    @property
    def runtime(self) -> str:
        """What runs the forward: 'torch' or 'onnxruntime' ('auto' resolved), and for
        'auto' the input sizes that fell back to torch because their export failed."""
        fallen = self._onnx.fallbacks if self._onnx is not None else {}
        if not fallen:
            return self._runtime
        sizes = ', '.join(f'{h}x{w}: {reason}' for (h, w), reason in fallen.items())
        return f'{self._runtime}; torch for {sizes}'

    @property
    def side_thread(self) -> bool:
        """Whether the work after the labels is shared with a second thread (``side_thread``
        as resolved: None meant a CPU with two or more usable cores)."""
        return self._side.threaded

    @property
    def num_classes(self) -> int:
        """Number of outputs of the network (classes)."""
        return self.meta.num_classes

    @property
    def fixed_network_size(self) -> tuple[int, int] | None:
        """The network's input size (height, width) where it does not follow the camera's."""
        if self.resolution_policy == 'fixed' and self.fixed_size:
            return self.fixed_size
        if self.resolution_policy == 'checkpoint':
            res = self.meta.input_spec.resolution or {}
            if res.get('policy') == 'fixed':
                return int(res['height']), int(res['width'])
        return None

    def network_size(self, height: int, width: int) -> tuple[int, int]:
        """Input size of the network for a camera of ``height`` x ``width``."""
        return self.fixed_network_size or (height, width)

    @torch.inference_mode()
    def predict(
        self,
        rgb: np.ndarray,
        depth: np.ndarray,
        K: np.ndarray,
        outputs: Collection[str] = ('labels', 'confidence'),
        overlay_alpha: float = 0.5,
        cloud: CloudOptions | None = None,
        emit: Emit | None = None,
        cloud_buffer: CloudBuffer | None = None,
    ) -> Prediction:
        """Segment one frame; ``depth`` must already have the colour image's size.

        ``emit(name, array)`` is called with each output as soon as it is on the host, in the
        order labels, confidence, points, color, overlay, so a node publishes the labels
        before anything else is computed and the cloud before the images meant for people.
        ``cloud_buffer(shape)``, when given, provides the array the cloud is written into
        (and emitted as); the engine allocates it otherwise. With the side thread on it is
        called there, during the forward, and ``emit`` may be called from either thread.
        """
        _check_frame(rgb, depth)
        wanted = set(outputs) | {'labels'}
        t0 = time.perf_counter()
        rgb_t, depth_m, K_t = self._upload(rgb, depth, K)
        net_h, net_w = self.network_size(rgb.shape[0], rgb.shape[1])
        x_rgb, x_depth, K_net = self._preprocess(rgb_t, depth_m, K_t, net_h, net_w)
        t1 = self._sync_time()
        # The cloud's x y z need no labels: on the side thread they are written while the
        # forward runs (ONNX Runtime and torch release the GIL for it); otherwise the task runs
        # when its result is asked for, after the confidence is published.
        geometry = (
            self._side.submit(
                _start_cloud,
                functools.partial(
                    CloudJob,
                    depth_m,
                    K_t,
                    cloud or CloudOptions(),
                    self._rays,
                    self._palette_packed,
                    cloud_buffer or _own_cloud_buffer,
                ),
            )
            if 'points' in wanted
            else None
        )
        try:
            logits, net_labels = self._forward(x_rgb, x_depth, K_net)
            t2 = self._sync_time()
            result = self._outputs(
                wanted,
                ReducedLogits(logits, net_labels),
                rgb_t,
                depth_m,
                overlay_alpha,
                geometry,
                emit or _ignore,
            )
        finally:
            if geometry is not None:
                geometry.settle()  # never leave the side thread writing into a freed frame
        t3 = time.perf_counter()
        result.timings_ms.update(
            {
                'preprocess': (t1 - t0) * 1e3,
                'forward': (t2 - t1) * 1e3,
                'postprocess': (t3 - t2) * 1e3,
                'total': (t3 - t0) * 1e3,
            }
        )
        return result

    def warmup(self, height: int, width: int) -> None:
        """Run one dummy frame so the first real one does not pay for allocator/kernel setup."""
        K = np.array([[width, 0, width / 2], [0, width, height / 2], [0, 0, 1]], float)
        self.predict(
            np.zeros((height, width, 3), np.uint8),
            np.ones((height, width), np.float32),
            K,
            outputs=('labels',),
        )

    def _sync_time(self) -> float:
        if self.device.type == 'cuda':
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def _upload(
        self, rgb: np.ndarray, depth: np.ndarray, K: np.ndarray
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        cuda = self.device.type == 'cuda'

        def to_device(array: np.ndarray) -> torch.Tensor:
            tensor = _input_tensor(np.ascontiguousarray(array))
            if cuda:
                tensor = tensor.pin_memory()
            return tensor.to(self.device, non_blocking=cuda)

        rgb_t = to_device(rgb)
        raw = to_device(depth)
        # Sanitised here, once: the depth encoding is told so (sanitised=True) and skips it.
        if raw.dtype in (torch.uint16, torch.int32):
            depth_m = raw.to(torch.float32).mul_(0.001)  # in place: the copy is new anyway
        else:
            depth_m = sanitise_depth(raw)
        K_t = torch.as_tensor(K, dtype=torch.float32).reshape(3, 3).to(self.device)
        return rgb_t, depth_m, K_t

    def _preprocess(
        self, rgb_t: torch.Tensor, depth_m: torch.Tensor, K_t: torch.Tensor, net_h: int, net_w: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Network inputs ``(rgb [1,3,h,w], depth [1,C,h,w], K [3,3])`` at the network size."""
        height, width = depth_m.shape
        x_rgb = torch.empty(1, 3, height, width, device=self.device)
        x_rgb.copy_(rgb_t.permute(2, 0, 1).unsqueeze(0))
        x_depth = depth_m.view(1, 1, height, width)
        K_net = K_t
        if (net_h, net_w) != (height, width):
            x_rgb = F.interpolate(x_rgb, size=(net_h, net_w), mode='bilinear', align_corners=False)
            x_depth = F.interpolate(x_depth, size=(net_h, net_w), mode='nearest')
            scale = torch.tensor([[net_w / width], [net_h / height], [1.0]], device=self.device)
            K_net = K_t * scale
        # Normalising after the resize equals normalising before it (bilinear interpolation
        # is affine, up to float rounding) and touches only the network's pixels: a camera
        # frame 16x the size of the embedded model's input costs two passes less.
        x_rgb = x_rgb.mul_(self._rgb_scale).add_(self._rgb_bias)
        spec = self.meta.input_spec
        x_depth = encode_depth_torch(
            x_depth, K_net.unsqueeze(0), spec.depth_encoding, spec.depth_params, sanitised=True
        )
        return x_rgb, x_depth, K_net

    def _forward(
        self, x_rgb: torch.Tensor, x_depth: torch.Tensor, K_net: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(logits, labels)``; labels only where the runtime computes them itself."""
        # Only a backend that reads K gets it, batched as the forward contract says.
        K = (K_net.unsqueeze(0),) if self._needs_K else ()
        if self._onnx is not None:
            exported = self._onnx(x_rgb, x_depth, *K)
            if exported is not None:  # None: this size fell back to torch (runtime 'auto')
                return exported
        if self.device.type == 'cuda':
            x_rgb = x_rgb.contiguous(memory_format=torch.channels_last)
            x_depth = x_depth.contiguous(memory_format=torch.channels_last)
        logits = self._logits(x_rgb, x_depth, K, self.precision)
        if self.precision == 'fp16' and not bool(torch.isfinite(logits).all()):
            # fp16 ends at 65504. Deep residual stacks can pass it (seen on a GPU: the ANN
            # backend's ResNet-101 with untrained weights, all logits NaN), and argmax would
            # publish NaN logits as labels. bf16 has fp32's range at the same speed on GPUs
            # that have it (Ampere and later): this frame and every later one run in bf16.
            self.precision = 'bf16'
            warnings.warn(
                'fp16 overflowed in this model (non-finite logits); running in bf16 from now on',
                RuntimeWarning,
                stacklevel=2,
            )
            logits = self._logits(x_rgb, x_depth, K, self.precision)
        return logits, None

    def _logits(
        self,
        x_rgb: torch.Tensor,
        x_depth: torch.Tensor,
        K: tuple[torch.Tensor, ...],
        precision: Precision,
    ) -> torch.Tensor:
        logits: torch.Tensor
        if precision == 'fp32':
            logits = self.model(x_rgb, x_depth, *K)
        else:
            with torch.autocast(self.device.type, dtype=TORCH_DTYPES[precision]):
                logits = self.model(x_rgb, x_depth, *K)
        return logits.float()

    def _to_camera(self, image: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """Nearest-neighbour resize of a per-pixel map (labels stay valid ids, no blending)."""
        if image.shape[-2:] == (height, width):
            return image
        return F.interpolate(image[None, None].float(), size=(height, width), mode='nearest')[
            0, 0
        ].to(image.dtype)

    def _outputs(
        self,
        wanted: set[str],
        reduced: ReducedLogits,
        rgb_t: torch.Tensor,
        depth_m: torch.Tensor,
        alpha: float,
        geometry: SideTask | None,
        emit: Emit,
    ) -> Prediction:
        """Labels first, then confidence, cloud, colour, overlay; with the side thread on, the
        colour images may come at any time after the labels (they are made there).
        ``geometry`` gives the cloud's job with its x y z written, when a cloud is wanted."""
        height, width = depth_m.shape
        outputs = self._to_camera(reduced.labels, height, width)
        labels = outputs if self._label_ids is None else self._label_ids[outputs.to(torch.int64)]
        label_dtype = torch.uint8 if self.max_label_id <= 255 else torch.int32
        host_labels = labels.to(label_dtype).cpu().numpy()
        if label_dtype == torch.int32:
            host_labels = host_labels.astype(np.uint16)
        result = Prediction(labels=host_labels)
        emit('labels', host_labels)
        # With the side thread on, it takes the lower half of the confidence and of the cloud's
        # geometry, then the colour images: mapping consumes labels, confidence and the cloud,
        # while the colour and overlay images are for people looking at RViz.
        side = self._side
        conf = conf_rest = geometry_rest = display = job = None
        conf_rows = geometry_rows = slice(None)
        tasks: list[SideTask] = []
        try:
            if wanted & {'confidence', 'points'}:
                conf = torch.empty(reduced.logits.shape[2:], device=reduced.logits.device)
                if side.threaded:  # first, so it runs while this thread prepares the rest
                    conf_rows, rest = _halves(conf.shape[0], softmax_block_rows(reduced.logits))
                    conf_rest = side.submit(reduced.confidence, conf, rest)
                    tasks.append(conf_rest)
            # Palette row of each pixel, shared by the cloud's rgb field and the colour image.
            index = (
                outputs.to(torch.int64).clamp_(0, len(self._palette) - 1)
                if wanted & {'color', 'overlay', 'points'}
                else None
            )
            if geometry is not None and side.threaded:  # its x y z were written meanwhile
                assert index is not None
                job = geometry.result()
                geometry_rows, rest = _halves(job.rows)
                geometry_rest = side.submit(job.write_classes, labels, index, rest)
                tasks.append(geometry_rest)
            if wanted & {'color', 'overlay'}:
                assert index is not None
                display = side.submit(self._display, wanted, index, rgb_t, alpha, emit, result)
                tasks.append(display)
            if conf is not None:
                reduced.confidence(conf, conf_rows)
                if conf_rest is not None:
                    conf_rest.result()
                conf = self._to_camera(conf, height, width)
                if 'confidence' in wanted:
                    result.confidence = conf.cpu().numpy()
                    emit('confidence', result.confidence)
            if geometry is not None:
                assert conf is not None and index is not None
                if job is None:  # one thread: the whole cloud now, once the confidence is out
                    job = geometry.result()
                job.write_classes(labels, index, geometry_rows)
                if geometry_rest is not None:
                    geometry_rest.result()
                result.points = job.finish(conf)
                result.timings_ms['cloud'] = job.seconds * 1e3
                emit('points', result.points)
            if display is not None:
                display.result()
        finally:
            for task in tasks:
                task.settle()  # never leave the side thread writing into a freed frame
        return result

    def _display(
        self,
        wanted: set[str],
        index: torch.Tensor,
        rgb_t: torch.Tensor,
        alpha: float,
        emit: Emit,
        result: Prediction,
    ) -> None:
        """The colour image and the overlay, each emitted when made."""
        colour = self._palette.index_select(0, index.view(-1)).view(*index.shape, 3)
        if 'color' in wanted:
            result.color = colour.cpu().numpy()
            emit('color', result.color)
        if 'overlay' in wanted:
            result.overlay = self._overlay(rgb_t, colour, alpha)
            emit('overlay', result.overlay)

    def _overlay(self, rgb_t: torch.Tensor, colour: torch.Tensor, alpha: float) -> np.ndarray:
        if self.device.type == 'cpu':
            # OpenCV's blend is ~10x faster than any torch form on the CPU (same rounding
            # to nearest; at most 1 apart from the 1/256-quantised integer form on the GPU).
            return cv2.addWeighted(rgb_t.numpy(), 1.0 - alpha, colour.numpy(), alpha, 0.0)
        return blend_overlay(rgb_t, colour, alpha).cpu().numpy()


def _start_cloud(make_job: Callable[[], CloudJob]) -> CloudJob:
    """A frame's cloud job made (its records' buffer: the size follows from the depth alone
    unless ``min_confidence`` is set) and its x y z written: the part that needs no labels."""
    job = make_job()
    job.write_xyz()
    return job


def _halves(rows: int, multiple: int = 1) -> tuple[slice, slice]:
    """The upper and lower halves of ``rows`` rows, split at a multiple of ``multiple``."""
    middle = min(rows, round(rows / 2 / multiple) * multiple)
    return slice(0, middle), slice(middle, rows)


def _input_tensor(array: np.ndarray) -> torch.Tensor:
    """``array``'s memory as a tensor, read-only memory included.

    The node's colour and depth arrive as read-only views of the bytes the messages came in
    (ros/frame_input.py); copying them here would undo that. The engine only reads its
    inputs (every step writes a new tensor; test_engine checks the input bytes afterwards),
    so torch's warning that it cannot keep such a tensor read-only does not apply.
    """
    if array.flags.writeable:
        return torch.from_numpy(array)
    with warnings.catch_warnings():
        warnings.filterwarnings('ignore', 'The given NumPy array is not writable')
        return torch.from_numpy(array)


def _own_cloud_buffer(shape: tuple[int, ...]) -> np.ndarray:
    """The engine's own cloud array, where the caller gives none."""
    return np.empty(shape, CLOUD_DTYPE)


def _ignore(_name: str, _array: np.ndarray) -> None:
    """The default ``emit``: outputs are only returned."""


def _check_frame(rgb: np.ndarray, depth: np.ndarray) -> None:
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise FrameError(f'colour must be HxWx3 uint8, got {rgb.dtype} {rgb.shape}')
    if depth.shape != rgb.shape[:2]:
        raise FrameError(f'depth {depth.shape} and colour {rgb.shape[:2]} sizes differ')
    if depth.dtype not in (np.uint16, np.float32):
        raise FrameError(f'depth must be uint16 (mm) or float32 (m), got {depth.dtype}')
