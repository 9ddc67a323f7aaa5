"""Self-describing checkpoints: everything needed to run a model, loadable without running code.

Two containers, both read and written here:

``*.safetensors`` (the default; any name that does not end in ``.pt``/``.pth``)
    One safetensors file. Its header metadata (a ``str -> str`` map) holds

    * ``format``: ``"pt"`` (the safetensors convention),
    * ``rgbd_seg_ros``: the JSON document of ``CheckpointMeta`` (backend, config, class_names,
      palette, ignore_index, input_spec, provenance, metrics, format_version, and class_ids
      when output c is not label id c),
    * ``rgbd_seg_ros_sha256``: SHA-256 over that document and every tensor (name, dtype,
      shape, bytes), so a flipped byte anywhere in the header or the weights is caught.

    Its tensors are the model's ``state_dict()``: parameters and every buffer, BN running
    statistics included, and non-float buffers such as ``num_batches_tracked`` kept as they are.

``*.pt`` / ``*.pth``
    ``torch.save({'meta': <the same JSON-able dict>, 'state_dict': {...}, 'sha256': <hex>})``,
    read back with ``torch.load(weights_only=True)``: only tensors and plain containers are
    unpickled, so a crafted file cannot run code.

Readers tell the containers apart by their first bytes, not by the name. Every problem on load
(missing, truncated or corrupt file, bad or missing metadata, unknown ``format_version`` or
backend, a state dict that does not match the model the metadata builds) raises
``CheckpointError`` whose message starts with the path and names the problem.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, TypeGuard

import safetensors.torch
import torch
from safetensors import SafetensorError, safe_open
from torch import nn

from rgbd_seg_ros.backends.checkpoint_limits import (
    MAX_HEADER_BYTES,
    MAX_LABEL_ID,
    check_class_count,
    check_depth_params,
    check_input_size,
    check_plain_json,
    check_rgb_normalisation,
    check_weight_bytes,
)
from rgbd_seg_ros.backends.registry import build_backend, get_entry
from rgbd_seg_ros.core.atomic_files import atomic_path, fsync_dir
from rgbd_seg_ros.core.depth import depth_channels as encoding_channels
from rgbd_seg_ros.core.depth import resolve_depth_params
from rgbd_seg_ros.core.palette import default_palette
from rgbd_seg_ros.errors import CheckpointError, ConfigError
from rgbd_seg_ros.modes import SPEC_RESOLUTIONS, DepthEncoding

FORMAT_VERSION = 1
META_KEY = 'rgbd_seg_ros'
DIGEST_KEY = 'rgbd_seg_ros_sha256'
_TORCH_SUFFIXES = ('.pt', '.pth')
_SHOWN_KEYS = 8  # how many key names an error message lists per category
_OPTIONAL_FIELDS = frozenset({'class_ids'})  # may be absent from older files

__all__ = [
    'FORMAT_VERSION',
    'CheckpointError',
    'CheckpointMeta',
    'InputSpec',
    'build_from_checkpoint',
    'check_state_dict',
    'load_checkpoint',
    'open_regular_file',
    'read_checkpoint_meta',
    'save_checkpoint',
    'seal_checkpoint',
]


@dataclass
class InputSpec:
    """How raw frames become network inputs (what the engine and the data loaders both do)."""

    rgb_mean: tuple[float, float, float] = (0.485, 0.456, 0.406)  # on [0, 1] RGB
    rgb_std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    depth_encoding: DepthEncoding = 'metric'
    depth_params: dict = field(default_factory=dict)  # e.g. {'max_depth_m': 10.0}
    resolution: dict = field(default_factory=lambda: {'policy': 'native'})

    def to_dict(self) -> dict[str, Any]:
        return {
            'rgb_mean': [float(v) for v in self.rgb_mean],
            'rgb_std': [float(v) for v in self.rgb_std],
            'depth_encoding': self.depth_encoding,
            'depth_params': dict(self.depth_params),
            'resolution': dict(self.resolution),
        }

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> InputSpec:
        """Validated InputSpec from its dict form; ``ValueError`` names the bad field."""
        if not isinstance(doc, Mapping):
            raise ValueError(f'input_spec must be a mapping, got {type(doc).__name__}')
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(doc) - fields)
        if unknown:
            raise ValueError(f'input_spec has unknown field(s) {unknown}; valid: {sorted(fields)}')
        spec = cls(**dict(doc))
        spec.validate()
        return spec

    def validate(self) -> None:
        """Raise ``ValueError`` when a field is malformed."""

        for name in ('rgb_mean', 'rgb_std'):
            values = getattr(self, name)
            if (
                not isinstance(values, (list, tuple))
                or len(values) != 3
                or not all(_is_number(v) and math.isfinite(v) for v in values)
            ):
                raise ValueError(f'input_spec.{name} must be 3 finite numbers, got {values!r}')
            setattr(self, name, tuple(float(v) for v in values))
        if any(v <= 0 for v in self.rgb_std):
            raise ValueError(f'input_spec.rgb_std must be positive, got {self.rgb_std!r}')
        check_rgb_normalisation(self.rgb_mean, self.rgb_std)
        if not isinstance(self.depth_params, Mapping):
            raise ValueError('input_spec.depth_params must be a mapping')
        self.depth_params = dict(self.depth_params)
        try:
            check_depth_params(resolve_depth_params(self.depth_encoding, self.depth_params))
        except ConfigError as err:
            raise ValueError(f'input_spec: {err}') from None
        res = self.resolution
        if not isinstance(res, Mapping) or res.get('policy') not in SPEC_RESOLUTIONS:
            policies = ' or '.join(repr(p) for p in SPEC_RESOLUTIONS)
            raise ValueError(f'input_spec.resolution must have policy {policies}, got {res!r}')
        res = dict(res)
        if res['policy'] == 'fixed':
            for key in ('height', 'width'):
                value = res.get(key)
                if not _is_int(value) or value < 1:
                    raise ValueError(
                        f'input_spec.resolution.{key} must be a positive integer for the '
                        f"'fixed' policy, got {value!r}"
                    )
            check_input_size(res['height'], res['width'], 'input_spec.resolution')
            extra = sorted(set(res) - {'policy', 'height', 'width'})
        else:
            extra = sorted(set(res) - {'policy'})
        if extra:
            raise ValueError(f'input_spec.resolution has unknown key(s) {extra}')
        self.resolution = res


@dataclass
class CheckpointMeta:
    """Everything a checkpoint says about its model besides the weights."""

    backend: str
    config: dict
    class_names: list[str]
    palette: list[tuple[int, int, int]] = field(default_factory=list)
    ignore_index: int = 255
    input_spec: InputSpec = field(default_factory=InputSpec)
    provenance: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    format_version: int = FORMAT_VERSION
    # The dataset label id of each output channel; empty: output c is label id c (then the
    # field is left out of the file). Outputs are dense, one per class, so an id that is no
    # class gets no output (doc/design.md §3.2).
    class_ids: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        if isinstance(self.input_spec, Mapping):
            self.input_spec = InputSpec.from_dict(self.input_spec)
        if not self.palette and isinstance(self.class_names, (list, tuple)):
            self.palette = [
                (int(r), int(g), int(b)) for r, g, b in default_palette(len(self.class_names))
            ]

    @property
    def num_classes(self) -> int:
        """Number of outputs of the network (one per class)."""
        return len(self.class_names)

    @property
    def label_ids(self) -> list[int]:
        """The label id the node publishes for each output, in output order."""
        return list(self.class_ids) if self.class_ids else list(range(len(self.class_names)))

    @property
    def depth_channels(self) -> int:
        return encoding_channels(self.input_spec.depth_encoding)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able form (the document stored in the file)."""
        doc = {
            'backend': self.backend,
            'config': _jsonable(self.config),
            'class_names': list(self.class_names),
            'palette': [[int(c) for c in row] for row in self.palette],
            'ignore_index': int(self.ignore_index),
            'input_spec': self.input_spec.to_dict(),
            'provenance': _jsonable(self.provenance),
            'metrics': _jsonable(self.metrics),
            'format_version': int(self.format_version),
        }
        if self.class_ids:  # only when output c is not label id c
            doc['class_ids'] = [int(i) for i in self.class_ids]
        return doc

    @classmethod
    def from_dict(cls, doc: Any) -> CheckpointMeta:
        """Validated meta from its dict form; ``ValueError`` names the bad or missing field."""
        if not isinstance(doc, Mapping):
            raise ValueError(f'metadata must be a JSON object, got {type(doc).__name__}')
        version = doc.get('format_version')
        if not _is_int(version):
            raise ValueError(f'format_version missing or not an integer: {version!r}')
        if version != FORMAT_VERSION:
            raise ValueError(
                f'unknown format_version {version} (this build reads {FORMAT_VERSION})'
            )
        names = [f.name for f in dataclasses.fields(cls)]
        # class_ids arrived after the first checkpoints were written: absent means identity.
        missing = [n for n in names if n not in doc and n not in _OPTIONAL_FIELDS]
        if missing:
            raise ValueError(f'metadata field(s) missing: {missing}')
        unknown = sorted(set(doc) - set(names))
        if unknown:
            raise ValueError(f'unknown metadata field(s) {unknown}')
        if not isinstance(doc['palette'], list) or not doc['palette']:
            raise ValueError(f'palette must be a non-empty list, got {doc["palette"]!r}')
        fields = {n: doc[n] for n in names if n != 'input_spec' and n in doc}
        meta = cls(**fields, input_spec=InputSpec.from_dict(doc['input_spec']))
        meta.validate()
        return meta

    def validate(self) -> None:
        """Raise ``ValueError`` when a field is malformed."""
        if not isinstance(self.backend, str) or not self.backend:
            raise ValueError(f'backend must be a non-empty string, got {self.backend!r}')
        if not isinstance(self.config, Mapping) or not all(
            isinstance(k, str) for k in self.config
        ):
            raise ValueError('config must be a mapping with string keys')
        names = self.class_names
        if (
            not isinstance(names, (list, tuple))
            or not names
            or not all(isinstance(n, str) for n in names)
        ):
            raise ValueError('class_names must be a non-empty list of strings')
        check_class_count(len(names))
        self.class_names = list(names)
        pal = self.palette
        if not isinstance(pal, (list, tuple)) or len(pal) != len(names):
            raise ValueError(
                f'palette must have one colour per class ({len(names)}), got '
                f'{len(pal) if isinstance(pal, (list, tuple)) else pal!r}'
            )
        rows: list[tuple[int, int, int]] = []
        for row in pal:
            if (
                not isinstance(row, (list, tuple))
                or len(row) != 3
                or not all(_is_int(c) and 0 <= c <= 255 for c in row)
            ):
                raise ValueError(f'palette entries must be 3 integers in 0..255, got {row!r}')
            rows.append((int(row[0]), int(row[1]), int(row[2])))
        self.palette = rows
        if not _is_int(self.ignore_index):
            raise ValueError(f'ignore_index must be an integer, got {self.ignore_index!r}')
        self.class_ids = _checked_class_ids(self.class_ids, len(names), self.ignore_index)
        if not isinstance(self.input_spec, InputSpec):
            raise ValueError('input_spec must be an InputSpec')
        self.input_spec.validate()
        for name in ('provenance', 'metrics'):
            if not isinstance(getattr(self, name), Mapping):
                raise ValueError(f'{name} must be a mapping')
        if self.format_version != FORMAT_VERSION:
            raise ValueError(
                f'unknown format_version {self.format_version} (this build writes '
                f'{FORMAT_VERSION})'
            )
        declared = self.config.get('depth_channels')
        if declared is not None and declared != self.depth_channels:
            raise ValueError(
                f'config.depth_channels is {declared} but depth encoding '
                f'{self.input_spec.depth_encoding!r} gives {self.depth_channels} channel(s)'
            )


def _checked_class_ids(ids: Any, count: int, ignore_index: int) -> list[int]:
    """``ids`` as a list, empty for the identity; ``ValueError`` unless one distinct label id
    in 0..65535 per class, none of them the ignore index."""
    if not isinstance(ids, (list, tuple)) or not all(_is_int(i) for i in ids):
        raise ValueError(f'class_ids must be a list of integers, got {ids!r}')
    if not ids:
        return []
    if len(ids) != count:
        raise ValueError(f'class_ids must have one id per class ({count}), got {len(ids)}')
    if len(set(ids)) != len(ids) or not all(0 <= i <= MAX_LABEL_ID for i in ids):
        raise ValueError(f'class_ids must be distinct ids in 0..{MAX_LABEL_ID}, got {list(ids)}')
    if ignore_index in ids:
        raise ValueError(f'class_ids include the ignore index {ignore_index}')
    # Output c is id c: stored as absent, which every reader of format 1 understands.
    return [] if list(ids) == list(range(count)) else [int(i) for i in ids]


def _is_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _jsonable(value: Any) -> Any:
    """Tuples -> lists, dataclasses -> dicts, numpy/torch scalars -> Python numbers, paths ->
    strings; raises TypeError for anything JSON cannot hold."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if hasattr(value, 'item') and callable(value.item):  # numpy / torch scalars
        try:
            return _jsonable(value.item())
        except (TypeError, ValueError, RuntimeError):
            pass
    raise TypeError(f'cannot store {type(value).__name__} in checkpoint metadata')


def _meta_json(meta: CheckpointMeta) -> str:
    return json.dumps(meta.to_dict(), sort_keys=True, ensure_ascii=False)


def _tensor_bytes(tensor: torch.Tensor) -> memoryview:
    flat = tensor.detach().contiguous().reshape(-1)
    try:
        return flat.view(torch.uint8).numpy().data
    except (RuntimeError, TypeError):
        return memoryview(flat.numpy().tobytes())


def _digest(meta_json: str, tensors: Mapping[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    h.update(b'rgbd_seg_ros checkpoint v1\0')
    h.update(meta_json.encode('utf-8'))
    for name in sorted(tensors):
        t = tensors[name]
        h.update(f'\0{name}\0{t.dtype}\0{tuple(t.shape)}\0'.encode())
        h.update(_tensor_bytes(t))
    return h.hexdigest()


def _unwrap_model(model: nn.Module) -> nn.Module:
    while True:
        inner = getattr(model, '_orig_mod', None)  # torch.compile
        if isinstance(inner, nn.Module):
            model = inner
            continue
        if isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
            model = model.module
            continue
        return model


def _cpu_state_dict(model_or_state_dict: Any) -> dict[str, torch.Tensor]:
    """Detached, contiguous CPU tensors, none sharing memory (safetensors refuses aliases)."""
    state: Mapping[str, torch.Tensor]
    if isinstance(model_or_state_dict, nn.Module):
        state = _unwrap_model(model_or_state_dict).state_dict()
    elif isinstance(model_or_state_dict, Mapping):
        state = model_or_state_dict
    else:
        raise TypeError(
            f'expected an nn.Module or a state dict, got {type(model_or_state_dict).__name__}'
        )
    out: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for name, value in state.items():
        if not isinstance(name, str):
            raise TypeError(f'state dict key {name!r} is not a string')
        if not isinstance(value, torch.Tensor):
            raise TypeError(f'state dict entry {name!r} is a {type(value).__name__}, not a tensor')
        t = value.detach().to('cpu')
        ptr = t.untyped_storage().data_ptr()
        if not t.is_contiguous() or ptr in seen or t.numel() == 0:
            t = t.contiguous().clone()
            ptr = t.untyped_storage().data_ptr()
        seen.add(ptr)
        out[name] = t
    return out


def _is_torch_container(path: Path) -> bool:
    return path.suffix.lower() in _TORCH_SUFFIXES


def save_checkpoint(
    path: str | os.PathLike[str],
    model_or_state_dict: nn.Module | Mapping[str, torch.Tensor],
    meta: CheckpointMeta | Mapping[str, Any],
) -> None:
    """Write a checkpoint atomically: a temporary file in the same folder, fsync, rename.

    A ``.pt``/``.pth`` name writes the torch container, anything else safetensors. On any
    failure the destination is untouched and no temporary file is left behind. ``meta`` is
    validated first, so a file this writes always loads.
    """
    path = Path(path)
    if isinstance(meta, Mapping):
        meta = CheckpointMeta.from_dict(meta)
    try:
        meta.validate()
        doc = _meta_json(meta)
    except (ValueError, TypeError) as err:
        raise CheckpointError(f'{path}: refusing to save invalid metadata: {err}') from None
    tensors = _cpu_state_dict(model_or_state_dict)
    digest = _digest(doc, tensors)
    folder = path.parent if str(path.parent) else Path('.')
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:  # mode 0666 less the umask, like any other file
        if _is_torch_container(path):
            with open(tmp, 'wb') as stream:
                torch.save(
                    {'meta': json.loads(doc), 'state_dict': tensors, 'sha256': digest}, stream
                )
        else:
            safetensors.torch.save_file(
                tensors, str(tmp), metadata={'format': 'pt', META_KEY: doc, DIGEST_KEY: digest}
            )
    fsync_dir(folder)


def _refused(path: Path, err: BaseException) -> CheckpointError:
    """A CheckpointError for any failure while reading: its type and first line, no traceback."""
    return CheckpointError(
        f'{path}: cannot read checkpoint ({type(err).__name__}: {_first_line(err)})'
    )


def open_regular_file(path: Path) -> BinaryIO:
    """``path`` opened for reading, refused unless it is a regular file.

    The open itself never blocks: a FIFO opened without O_NONBLOCK waits for a writer, which
    wedged whoever loaded it. What is opened is checked with fstat, so the file that is read is
    the file that was checked.
    """
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, 'O_CLOEXEC', 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise CheckpointError(f'{path}: checkpoint file not found') from None
    except OSError as err:
        raise CheckpointError(f'{path}: cannot open checkpoint: {err.strerror or err}') from None
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise CheckpointError(f'{path}: is a folder, not a checkpoint file')
        if not stat.S_ISREG(mode):
            raise CheckpointError(
                f'{path}: not a regular file ({_file_kind(mode)}); only regular files are read '
                'as checkpoints'
            )
        os.set_blocking(fd, True)
        return os.fdopen(fd, 'rb')
    except BaseException:
        os.close(fd)
        raise


def _file_kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISFIFO, 'a FIFO'),
        (stat.S_ISSOCK, 'a socket'),
        (stat.S_ISCHR, 'a character device'),
        (stat.S_ISBLK, 'a block device'),
    ):
        if test(mode):
            return name
    return 'not a regular file'


def _sniff(path: Path, stream: BinaryIO) -> str:
    """'safetensors' or 'torch' from the first bytes; CheckpointError otherwise."""
    head = stream.read(9)
    stream.seek(0)
    if len(head) == 0:
        raise CheckpointError(f'{path}: checkpoint file is empty')
    if head.startswith(b'PK\x03\x04'):
        return 'torch'
    if len(head) == 9 and head[8:9] == b'{':
        return 'safetensors'
    raise CheckpointError(
        f'{path}: not a checkpoint (neither safetensors nor a torch.save zip file)'
    )


def _fd_path(stream: BinaryIO) -> str | None:
    """A path that reopens exactly the open file (Linux), for readers that want a path."""
    link = f'/proc/self/fd/{stream.fileno()}'
    return link if os.path.exists(link) else None


@dataclass
class _Header:
    """What a checkpoint says before any tensor is read."""

    doc: Any  # the metadata document: JSON text (safetensors) or a dict (torch)
    digest: Any  # the stored digest, None when absent
    layout: dict[str, torch.Tensor]  # name -> a tensor on the 'meta' device: dtype and shape


_SAFETENSORS_DTYPES = {
    'F64': torch.float64,
    'F32': torch.float32,
    'F16': torch.float16,
    'BF16': torch.bfloat16,
    'I64': torch.int64,
    'I32': torch.int32,
    'I16': torch.int16,
    'I8': torch.int8,
    'U64': torch.uint64,
    'U32': torch.uint32,
    'U16': torch.uint16,
    'U8': torch.uint8,
    'BOOL': torch.bool,
    'F8_E4M3': torch.float8_e4m3fn,
    'F8_E5M2': torch.float8_e5m2,
}


def _safetensors_header(path: Path, stream: BinaryIO) -> _Header:
    """The header of a safetensors file, bounded and checked against the file size."""
    size = os.fstat(stream.fileno()).st_size
    length = int.from_bytes(stream.read(8), 'little')
    if length > MAX_HEADER_BYTES or 8 + length > size:
        raise CheckpointError(
            f'{path}: corrupt or truncated safetensors file: header of {length} bytes in a '
            f'file of {size} (headers over {MAX_HEADER_BYTES} bytes are refused)'
        )
    data_size = size - 8 - length
    try:
        header = json.loads(stream.read(length).decode('utf-8'))
    except (UnicodeDecodeError, ValueError, RecursionError) as err:
        raise CheckpointError(f'{path}: corrupt safetensors header: {err}') from None
    if not isinstance(header, dict):
        raise CheckpointError(f'{path}: corrupt safetensors header: not a JSON object')
    metadata = header.pop('__metadata__', None) or {}
    if not isinstance(metadata, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
    ):
        raise CheckpointError(f'{path}: corrupt safetensors header: metadata is not str -> str')
    layout: dict[str, torch.Tensor] = {}
    for name, value in header.items():
        entry = value if isinstance(value, dict) else {}
        dtype = _SAFETENSORS_DTYPES.get(entry.get('dtype'))  # type: ignore[arg-type]
        shape, offsets = entry.get('shape'), entry.get('data_offsets')
        if (
            dtype is None
            or not isinstance(shape, list)
            or not all(_is_int(n) and n >= 0 for n in shape)
            or not isinstance(offsets, list)
            or len(offsets) != 2
            or not all(_is_int(n) for n in offsets)
            or not 0 <= offsets[0] <= offsets[1] <= data_size
            or offsets[1] - offsets[0] != math.prod(shape) * dtype.itemsize
        ):
            raise CheckpointError(
                f'{path}: corrupt or truncated safetensors file: bad entry for tensor {name!r}'
            )
        layout[name] = torch.empty(shape, dtype=dtype, device='meta')
    if META_KEY not in metadata:
        raise CheckpointError(
            f'{path}: safetensors file has no {META_KEY!r} metadata (not written by '
            'rgbd_seg_ros, or the header is damaged)'
        )
    return _Header(metadata[META_KEY], metadata.get(DIGEST_KEY), layout)


def _safetensors_tensors(path: Path, stream: BinaryIO) -> dict[str, torch.Tensor]:
    try:
        with safe_open(_fd_path(stream) or str(path), framework='pt', device='cpu') as handle:
            return {k: handle.get_tensor(k) for k in handle.keys()}  # noqa: SIM118
    except SafetensorError as err:
        raise CheckpointError(f'{path}: corrupt or truncated safetensors file: {err}') from None
    except Exception as err:  # any failure of the reader is a refusal, whatever its type
        raise _refused(path, err) from None


def _torch_object(path: Path, stream: BinaryIO) -> Any:
    """``torch.load(weights_only=True)`` of the open file, its tensors mapped rather than read
    where the platform gives the open file a path. Never by the file's name: torch hands any
    ``.safetensors`` name to the safetensors reader."""
    link = _fd_path(stream)
    try:
        if link is not None:
            return torch.load(link, map_location='cpu', weights_only=True, mmap=True)
        return torch.load(stream, map_location='cpu', weights_only=True)
    except Exception as err:  # corrupt, truncated or unsafe: any type is a refusal
        raise CheckpointError(
            f'{path}: corrupt, truncated or unsafe torch checkpoint ({type(err).__name__}: '
            f'{_first_line(err)})'
        ) from None


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else ''


def _torch_parts(path: Path, obj: Any) -> tuple[_Header, dict[str, torch.Tensor]]:
    if not isinstance(obj, dict) or 'meta' not in obj or 'state_dict' not in obj:
        raise CheckpointError(
            f"{path}: torch checkpoint must be a dict with 'meta' and 'state_dict'"
        )
    state = obj['state_dict']
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise CheckpointError(f'{path}: state_dict must map names to tensors')
    try:
        check_plain_json(obj['meta'], 'meta')
    except ValueError as err:
        raise CheckpointError(f'{path}: invalid checkpoint metadata: {err}') from None
    layout = {k: torch.empty(v.shape, dtype=v.dtype, device='meta') for k, v in state.items()}
    return _Header(obj['meta'], obj.get('sha256'), layout), state


def _parse_meta(path: Path, doc: Any) -> CheckpointMeta:
    if isinstance(doc, str):
        try:
            doc = json.loads(doc)
        except (ValueError, RecursionError) as err:
            raise CheckpointError(
                f'{path}: checkpoint metadata is not valid JSON: {err}'
            ) from None
    try:
        check_plain_json(doc)
        return CheckpointMeta.from_dict(doc)
    except (ValueError, TypeError) as err:
        raise CheckpointError(f'{path}: invalid checkpoint metadata: {err}') from None


def _require_digest(path: Path, digest: Any) -> str:
    if digest is None:
        raise CheckpointError(
            f'{path}: no integrity digest ({DIGEST_KEY!r}); every checkpoint rgbd_seg_ros '
            'writes has one. A file you trust can be sealed with `rgbd-seg seal PATH`'
        )
    if not isinstance(digest, str) or len(digest) != 64:
        raise CheckpointError(f'{path}: integrity digest is not a SHA-256 hex string')
    return digest


def _stored_doc(doc: Any) -> str:
    return doc if isinstance(doc, str) else json.dumps(doc, sort_keys=True, ensure_ascii=False)


class _Reader:
    """One checkpoint file, opened once: the header first, the tensors only when asked."""

    def __init__(self, path: Path, require_digest: bool = True) -> None:
        self.path = path
        self.stream = open_regular_file(path)
        try:
            self.kind = _sniff(path, self.stream)
            self._torch_state: dict[str, torch.Tensor] = {}
            self._state: dict[str, torch.Tensor] | None = None
            if self.kind == 'safetensors':
                self.header = _safetensors_header(path, self.stream)
            else:
                self.header, self._torch_state = _torch_parts(
                    path, _torch_object(path, self.stream)
                )
            try:
                check_weight_bytes(sum(t.nbytes for t in self.header.layout.values()))
            except ValueError as err:
                raise CheckpointError(f'{path}: refused before reading: {err}') from None
            self.digest = _require_digest(path, self.header.digest) if require_digest else None
            self.meta = _parse_meta(path, self.header.doc)
        except BaseException:
            self.stream.close()
            raise

    def __enter__(self) -> _Reader:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stream.close()

    def tensors(self) -> dict[str, torch.Tensor]:
        """Every tensor, read into memory and checked against the digest."""
        if self._state is None:
            if self.kind == 'safetensors':
                self._state = _safetensors_tensors(self.path, self.stream)
            else:  # out of the file mapping: a file changed later cannot touch them
                self._state = {k: v.clone() for k, v in self._torch_state.items()}
        digest = self.digest or self.header.digest
        if digest is not None and _digest(_stored_doc(self.header.doc), self._state) != digest:
            raise CheckpointError(
                f'{self.path}: checksum mismatch: the weights or metadata were modified or '
                'corrupted'
            )
        return self._state


def read_checkpoint_meta(path: str | os.PathLike[str]) -> CheckpointMeta:
    """Only the metadata: the safetensors header, or the torch container with its tensors
    mapped, not read. The digest must be present (it is verified when the weights are read)."""
    with _Reader(Path(path)) as reader:
        return reader.meta


def load_checkpoint(
    path: str | os.PathLike[str], check_backend: bool = True
) -> tuple[CheckpointMeta, dict[str, torch.Tensor]]:
    """Metadata and CPU state dict of a checkpoint, verified; never executes code.

    ``check_backend`` also requires the backend name to be registered (the registry imports
    the backend modules).
    """
    path = Path(path)
    with _Reader(path) as reader:
        if check_backend:
            _check_backend(path, reader.meta)
        return reader.meta, reader.tensors()


def seal_checkpoint(path: str | os.PathLike[str]) -> CheckpointMeta:
    """Give a checkpoint without an integrity digest one, rewriting it atomically.

    For files made by hand or by older tools: everything else is checked as on any load, and
    a digest that is present must match (sealing never launders a damaged file).
    """
    path = Path(path)
    with _Reader(path, require_digest=False) as reader:
        meta, state = reader.meta, reader.tensors()
    save_checkpoint(path, state, meta)
    return meta


def _check_backend(path: Path, meta: CheckpointMeta) -> None:
    try:
        get_entry(meta.backend)
    except ConfigError as err:
        raise CheckpointError(f'{path}: {err}') from None


def _summarise(names: list[str]) -> str:
    shown = ', '.join(names[:_SHOWN_KEYS])
    more = len(names) - _SHOWN_KEYS
    return shown + (f' (+{more} more)' if more > 0 else '')


def check_state_dict(
    expected: Mapping[str, torch.Tensor], found: Mapping[str, torch.Tensor]
) -> list[str]:
    """Problems (missing, unexpected, shape-mismatched keys) loading ``found`` where
    ``expected`` (a model's state dict) is wanted; empty when they match."""
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    shapes = sorted(
        f'{k} (checkpoint {tuple(found[k].shape)}, model {tuple(expected[k].shape)})'
        for k in set(expected) & set(found)
        if tuple(found[k].shape) != tuple(expected[k].shape)
    )
    problems = []
    if missing:
        problems.append(f'{len(missing)} missing key(s): {_summarise(missing)}')
    if unexpected:
        problems.append(f'{len(unexpected)} unexpected key(s): {_summarise(unexpected)}')
    if shapes:
        problems.append(f'{len(shapes)} shape mismatch(es): {_summarise(shapes)}')
    return problems


def _restore_tuples(config_cls: type, config: Mapping[str, Any]) -> dict[str, Any]:
    """JSON turned the config's tuple fields into lists; turn them back."""
    out = dict(config)
    if not dataclasses.is_dataclass(config_cls):
        return out
    for f in dataclasses.fields(config_cls):
        if f.name not in out or not isinstance(out[f.name], list):
            continue
        default = f.default
        if default is dataclasses.MISSING and f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        if isinstance(default, tuple):
            out[f.name] = _deep_tuple(out[f.name])
    return out


def _deep_tuple(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_deep_tuple(v) for v in value)
    return value


def build_from_checkpoint(
    path: str | os.PathLike[str], device: str | torch.device = 'cpu'
) -> tuple[nn.Module, CheckpointMeta]:
    """Build the model the checkpoint describes, load its weights strictly, eval mode.

    The model is first built on the ``meta`` device (shapes, no memory) and compared with the
    shapes the file declares, so metadata that does not fit its weights (3000 class names
    for a 14-class head, a config asking for a huge network) is refused before any tensor is
    read or any real model allocated. Any failure is a ``CheckpointError``.
    """
    path = Path(path)
    with _Reader(path) as reader:
        meta = reader.meta
        _check_backend(path, meta)
        _check_layout(path, meta, _build(path, meta, torch.device('meta')), reader.header.layout)
        state = reader.tensors()
    model = _build(path, meta, torch.device('cpu'))
    try:
        model.load_state_dict(state, strict=True)
        model.to(device)
    except Exception as err:  # a strict load that still fails, or a device that cannot take it
        raise CheckpointError(f'{path}: cannot load weights: {_first_line(err)}') from None
    model.eval()
    return model, meta


def _build(path: Path, meta: CheckpointMeta, device: torch.device) -> nn.Module:
    """The backend the metadata describes, its parameters created on ``device``."""
    try:
        config = _restore_tuples(get_entry(meta.backend).config_cls, meta.config)
        with device:
            return build_backend(meta.backend, num_classes=meta.num_classes, **config)
    except Exception as err:  # a config the backend cannot take, whatever it raises
        raise CheckpointError(
            f'{path}: cannot build backend {meta.backend!r} from its config: '
            f'{type(err).__name__}: {_first_line(err)}'
        ) from None


def _check_layout(
    path: Path, meta: CheckpointMeta, model: nn.Module, layout: Mapping[str, torch.Tensor]
) -> None:
    expected = model.state_dict()
    problems = check_state_dict(expected, layout)
    kinds = sorted(
        f'{k} (checkpoint {layout[k].dtype}, model {expected[k].dtype})'
        for k in set(expected) & set(layout)
        if layout[k].is_floating_point() != expected[k].is_floating_point()
    )
    if kinds:
        problems.append(f'{len(kinds)} dtype mismatch(es): {_summarise(kinds)}')
    if problems:
        raise CheckpointError(
            f'{path}: weights do not match backend {meta.backend!r} built from the '
            f'checkpoint config ({meta.num_classes} classes): ' + '; '.join(problems)
        )


def state_dict_from(
    source: Any, what: str = 'model', backend: str | None = None
) -> Mapping[str, torch.Tensor]:
    """Weights from a module, a state dict or a checkpoint path (staged-training inputs).

    With ``backend``, a checkpoint of another backend is refused, naming ``what`` it was for.
    """
    if isinstance(source, nn.Module):
        return source.state_dict()
    if isinstance(source, Mapping):
        return source
    if isinstance(source, (str, os.PathLike)):
        meta, state = load_checkpoint(source)
        if backend is not None and meta.backend != backend:
            raise CheckpointError(
                f'{source}: {what} must come from a {backend} checkpoint, not {meta.backend!r}'
            )
        return state
    raise TypeError(f'cannot read a {what} from {type(source).__name__}')
