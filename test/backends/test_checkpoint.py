"""Checkpoint format: round trips in both containers, atomic writes, and every way a file can be
bad raising one CheckpointError that names the path and the problem.

A tiny backend is registered here (``_ckpt_test_tiny``) so these tests do not depend on the real
backends; the registry is told its backend modules are already loaded.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from torch import nn

from rgbd_seg_ros.backends import checkpoint as ckpt
from rgbd_seg_ros.backends import registry
from rgbd_seg_ros.backends.checkpoint import (
    CheckpointMeta,
    InputSpec,
    build_from_checkpoint,
    load_checkpoint,
    read_checkpoint_meta,
    save_checkpoint,
    seal_checkpoint,
)
from rgbd_seg_ros.errors import CheckpointError

TINY = '_ckpt_test_tiny'


@dataclass
class TinyConfig:
    encoder: str = 'tiny'
    depth_channels: int = 1
    width: int = 4
    rates: tuple[int, ...] = (1, 2)


class TinyNet(nn.Module):
    def __init__(self, num_classes: int, config: TinyConfig) -> None:
        super().__init__()
        assert isinstance(config.rates, tuple)  # JSON lists must come back as tuples
        self.num_classes = num_classes
        self.config = config
        self.output_stride = 1
        self.stem = nn.Conv2d(3 + config.depth_channels, config.width, 3, padding=1)
        self.bn = nn.BatchNorm2d(config.width)
        self.head = nn.Conv2d(config.width, num_classes, 1)

    def forward(self, rgb: torch.Tensor, depth: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.bn(self.stem(torch.cat([rgb, depth], 1)))))


@pytest.fixture(autouse=True)
def _tiny_backend_registered(monkeypatch: pytest.MonkeyPatch) -> None:
    """Register TinyNet in a copy of the registry, restored after each test, so the real
    backends are neither needed here nor joined by TinyNet in other test modules."""
    monkeypatch.setattr(registry, '_REGISTRY', dict(registry._REGISTRY))
    monkeypatch.setattr(registry, '_LOADED', True)
    registry.register_backend(TINY, TinyConfig, summary='test-only backend')(TinyNet)


def make_meta(**overrides) -> CheckpointMeta:
    fields = dict(
        backend=TINY,
        config={'encoder': 'tiny', 'depth_channels': 1, 'width': 4, 'rates': [1, 2]},
        class_names=['wall', 'floor', 'chair'],
        input_spec=InputSpec(depth_encoding='metric', depth_params={'max_depth_m': 8.0}),
        provenance={'dataset': 'synthetic', 'seed': 3, 'git': 'abc123'},
        metrics={'miou': 0.5, 'per_class_iou': [0.4, 0.5, 0.6]},
    )
    fields.update(overrides)
    return CheckpointMeta(**fields)


def trained_model() -> TinyNet:
    torch.manual_seed(0)
    model = registry.build_backend(TINY, num_classes=3, encoder='tiny', width=4)
    model.train()
    with torch.no_grad():
        for _ in range(3):  # move BN running stats and num_batches_tracked off their defaults
            model(torch.randn(2, 3, 8, 8), torch.rand(2, 1, 8, 8))
    return model


@pytest.fixture
def saved(tmp_path: Path) -> tuple[Path, TinyNet, CheckpointMeta]:
    model, meta = trained_model(), make_meta()
    path = tmp_path / 'model.safetensors'
    save_checkpoint(path, model, meta)
    return path, model, meta


def assert_same_state(a: dict, b: dict) -> None:
    assert set(a) == set(b)
    for key, value in a.items():
        assert value.dtype == b[key].dtype, key
        assert torch.equal(value.cpu(), b[key].cpu()), key


@pytest.mark.parametrize('name', ['model.safetensors', 'model.pt', 'model.pth', 'model.ckpt'])
def test_round_trip(tmp_path: Path, name: str) -> None:
    model, meta = trained_model(), make_meta()
    path = tmp_path / name
    save_checkpoint(path, model, meta)
    loaded_meta, state = load_checkpoint(path)
    assert loaded_meta.to_dict() == meta.to_dict()
    assert loaded_meta.num_classes == 3
    assert loaded_meta.palette == [tuple(map(int, c)) for c in meta.palette]
    assert state['bn.num_batches_tracked'].dtype == torch.int64
    assert int(state['bn.num_batches_tracked']) == 3
    assert_same_state(model.state_dict(), state)

    built, built_meta = build_from_checkpoint(path)
    assert not built.training
    assert built.config.rates == (1, 2)
    assert built_meta.input_spec.depth_params == {'max_depth_m': 8.0}
    assert_same_state(model.state_dict(), built.state_dict())
    model.eval()
    rgb, depth = torch.randn(1, 3, 5, 7), torch.rand(1, 1, 5, 7)
    with torch.no_grad():
        assert torch.equal(model(rgb, depth), built(rgb, depth))


def test_container_is_detected_from_content(tmp_path: Path) -> None:
    model, meta = trained_model(), make_meta()
    save_checkpoint(tmp_path / 'a.pt', model, meta)
    save_checkpoint(tmp_path / 'b.safetensors', model, meta)
    (tmp_path / 'a.pt').rename(tmp_path / 'a.weights')
    (tmp_path / 'b.safetensors').rename(tmp_path / 'b.pt')
    for name in ('a.weights', 'b.pt'):
        assert_same_state(model.state_dict(), load_checkpoint(tmp_path / name)[1])


def test_safetensors_header_holds_the_json_document(saved) -> None:
    from safetensors import safe_open

    path, model, meta = saved
    with safe_open(str(path), framework='pt') as handle:
        header = handle.metadata()
        keys = set(handle.keys())
    doc = json.loads(header['rgbd_seg_ros'])
    assert doc['backend'] == TINY
    assert doc['format_version'] == 1
    assert set(doc) == {
        'backend',
        'config',
        'class_names',
        'palette',
        'ignore_index',
        'input_spec',
        'provenance',
        'metrics',
        'format_version',
    }
    assert keys == set(model.state_dict())
    assert read_checkpoint_meta(path).to_dict() == meta.to_dict()


def test_state_dict_and_wrapped_models_save_the_same(tmp_path: Path) -> None:
    model, meta = trained_model(), make_meta()
    save_checkpoint(tmp_path / 'sd.safetensors', model.state_dict(), meta)
    save_checkpoint(tmp_path / 'dp.safetensors', nn.DataParallel(model), meta)
    a = load_checkpoint(tmp_path / 'sd.safetensors')[1]
    b = load_checkpoint(tmp_path / 'dp.safetensors')[1]
    assert_same_state(a, b)
    assert not any(k.startswith('module.') for k in b)


def test_tied_and_non_contiguous_tensors(tmp_path: Path) -> None:
    base = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    state = {'a': base, 'b': base, 'c': base.t(), 'd': base[1:]}
    path = tmp_path / 'tied.safetensors'
    save_checkpoint(path, state, make_meta())
    loaded = load_checkpoint(path)[1]
    for key, value in state.items():
        assert torch.equal(loaded[key], value)


# --- atomic writes ---------------------------------------------------------------------------


def test_failed_save_keeps_old_file_and_leaves_no_temporary(
    saved, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, _, _ = saved
    before = path.read_bytes()

    def exploding_save_file(tensors, filename, metadata=None):
        Path(filename).write_bytes(b'partial')
        raise OSError('disk full')

    import safetensors.torch

    monkeypatch.setattr(safetensors.torch, 'save_file', exploding_save_file)
    other = trained_model()
    torch.nn.init.zeros_(other.head.weight)
    with pytest.raises(OSError, match='disk full'):
        save_checkpoint(path, other, make_meta())
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]


def test_failed_torch_save_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def exploding_save(obj, stream):
        stream.write(b'PK\x03\x04partial')
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, 'save', exploding_save)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path / 'new.pt', trained_model(), make_meta())
    assert list(tmp_path.iterdir()) == []


def test_invalid_meta_is_refused_before_writing(tmp_path: Path) -> None:
    path = tmp_path / 'bad.safetensors'
    with pytest.raises(CheckpointError, match='palette'):
        save_checkpoint(path, trained_model(), make_meta(palette=[(1, 2, 3)]))
    with pytest.raises(CheckpointError, match='depth_channels'):
        save_checkpoint(
            path, trained_model(), make_meta(input_spec=InputSpec(depth_encoding='hha'))
        )
    with pytest.raises(CheckpointError, match='cannot store'):
        save_checkpoint(path, trained_model(), make_meta(provenance={'x': object()}))
    assert list(tmp_path.iterdir()) == []


# --- damaged files ----------------------------------------------------------------------------


def expect_error(path: Path, *fragments: str) -> CheckpointError:
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert str(path) in message
    for fragment in fragments:
        assert fragment in message, message
    return info.value


def test_missing_empty_folder_and_foreign_files(tmp_path: Path) -> None:
    expect_error(tmp_path / 'nope.safetensors', 'not found')
    (tmp_path / 'empty.safetensors').write_bytes(b'')
    expect_error(tmp_path / 'empty.safetensors', 'empty')
    expect_error(tmp_path, 'folder')
    (tmp_path / 'text.safetensors').write_text('hello, this is not a checkpoint\n')
    expect_error(tmp_path / 'text.safetensors', 'not a checkpoint')
    (tmp_path / 'huge.safetensors').write_bytes(struct.pack('<Q', 1 << 40) + b'{}')
    expect_error(tmp_path / 'huge.safetensors', 'corrupt')


@pytest.mark.parametrize('name', ['model.safetensors', 'model.pt'])
def test_truncated_files(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    save_checkpoint(path, trained_model(), make_meta())
    data = path.read_bytes()
    cut = tmp_path / ('cut' + path.suffix)
    for size in (1, 8, 9, 20, len(data) // 3, len(data) // 2, len(data) - 100, len(data) - 1):
        cut.write_bytes(data[:size])
        with pytest.raises(CheckpointError) as info:
            load_checkpoint(cut)
        assert str(cut) in str(info.value)


def test_every_flipped_header_byte_is_caught_or_harmless(saved) -> None:
    path, model, meta = saved
    data = path.read_bytes()
    header_len = struct.unpack('<Q', data[:8])[0]
    flipped = path.parent / 'flipped.safetensors'
    header = data[: 8 + header_len]
    # Flips there change nothing that is loaded: the safetensors padding, the conventional
    # 'format' entry, and the digest's key name (without it the file is refused for having no
    # digest; were it loaded, the content would still be compared below).
    allowed = set(range(8 + len(header[8:].rstrip(b' ')), 8 + header_len))
    for token in (b'"format":"pt"', b'"rgbd_seg_ros_sha256"'):
        start = header.index(token)
        allowed.update(range(start, start + len(token)))
    harmless = set()
    for pos in range(8 + header_len):
        damaged = bytearray(data)
        damaged[pos] ^= 0x5A
        flipped.write_bytes(bytes(damaged))
        try:
            loaded_meta, state = load_checkpoint(flipped)
        except CheckpointError as err:
            assert str(flipped) in str(err)
            continue
        # Only a flip that leaves the content equal may load (header padding spaces).
        assert loaded_meta.to_dict() == meta.to_dict()
        assert_same_state(model.state_dict(), state)
        harmless.add(pos)
    assert harmless <= allowed


def test_flipped_weight_byte_is_caught(saved) -> None:
    path, _, _ = saved
    data = bytearray(path.read_bytes())
    data[-7] ^= 0x01
    path.write_bytes(bytes(data))
    expect_error(path, 'checksum mismatch')


def test_flipped_byte_in_torch_container(tmp_path: Path) -> None:
    path = tmp_path / 'model.pt'
    save_checkpoint(path, trained_model(), make_meta())
    data = path.read_bytes()
    for pos in range(0, len(data), max(1, len(data) // 60)):
        damaged = bytearray(data)
        damaged[pos] ^= 0xFF
        path.write_bytes(bytes(damaged))
        try:
            load_checkpoint(path)
        except CheckpointError as err:
            assert str(path) in str(err)


# --- wrong metadata ---------------------------------------------------------------------------


def write_raw(path: Path, tensors: dict, metadata: dict, sealed: bool = True) -> Path:
    """A safetensors file with exactly ``metadata``; ``sealed`` adds the digest over it, so
    what is checked is the metadata, not the seal."""
    from safetensors.torch import save_file

    if sealed and ckpt.META_KEY in metadata:
        digest = ckpt._digest(metadata[ckpt.META_KEY], tensors)
        metadata = {**metadata, ckpt.DIGEST_KEY: digest}
    save_file(tensors, str(path), metadata=metadata)
    return path


def good_doc() -> dict:
    return make_meta().to_dict()


@pytest.mark.parametrize(
    ('mutate', 'fragment'),
    [
        (lambda d: d.pop('backend'), "missing: ['backend']"),
        (lambda d: d.pop('input_spec'), "missing: ['input_spec']"),
        (lambda d: d.update(format_version=2), 'unknown format_version 2'),
        (lambda d: d.update(format_version='1'), 'format_version'),
        (lambda d: d.update(backend='no_such_backend'), "unknown backend 'no_such_backend'"),
        (lambda d: d.update(class_names=[]), 'class_names'),
        (lambda d: d.update(palette=[[1, 2, 3]]), 'palette'),
        (lambda d: d.update(palette=[[1, 2, 300]] * 3), 'palette'),
        (lambda d: d.update(ignore_index='255'), 'ignore_index'),
        (lambda d: d.update(surprise=1), 'unknown metadata field'),
        (lambda d: d['input_spec'].update(depth_encoding='lidar'), 'lidar'),
        (lambda d: d['input_spec'].update(depth_params={'max_depth': 5}), 'max_depth'),
        (lambda d: d['input_spec'].update(rgb_std=[1, 0, 1]), 'rgb_std'),
        (lambda d: d['input_spec'].update(resolution={'policy': 'fixed', 'height': 4}), 'width'),
        (lambda d: d['config'].update(depth_channels=3), 'depth_channels'),
    ],
)
def test_wrong_metadata(tmp_path: Path, mutate, fragment: str) -> None:
    doc = good_doc()
    mutate(doc)
    path = write_raw(
        tmp_path / 'm.safetensors', trained_model().state_dict(), {'rgbd_seg_ros': json.dumps(doc)}
    )
    expect_error(path, fragment)


def test_metadata_not_json_or_absent(tmp_path: Path) -> None:
    state = trained_model().state_dict()
    expect_error(
        write_raw(tmp_path / 'a.safetensors', state, {'rgbd_seg_ros': '{oops'}), 'not valid JSON'
    )
    expect_error(
        write_raw(tmp_path / 'b.safetensors', state, {'rgbd_seg_ros': '[1, 2]'}), 'JSON object'
    )
    expect_error(
        write_raw(tmp_path / 'c.safetensors', state, {'format': 'pt'}),
        "no 'rgbd_seg_ros' metadata",
    )
    expect_error(write_raw(tmp_path / 'd.safetensors', state, {}), 'metadata')


def test_a_file_without_digest_is_refused_until_sealed(tmp_path: Path) -> None:
    model = trained_model()
    path = write_raw(
        tmp_path / 'x.safetensors',
        model.state_dict(),
        {'rgbd_seg_ros': json.dumps(good_doc())},
        sealed=False,
    )
    expect_error(path, 'no integrity digest', 'rgbd-seg seal')
    with pytest.raises(CheckpointError, match='no integrity digest'):
        read_checkpoint_meta(path)
    assert seal_checkpoint(path).class_names == ['wall', 'floor', 'chair']
    built, _ = build_from_checkpoint(path)
    assert_same_state(model.state_dict(), built.state_dict())


def test_sealing_never_launders_a_damaged_file(saved) -> None:
    path, _, _ = saved
    data = bytearray(path.read_bytes())
    data[-7] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match='checksum mismatch'):
        seal_checkpoint(path)
    assert path.read_bytes() == bytes(data)


# --- weights that do not match the model -------------------------------------------------------


def test_mismatching_weights_name_the_keys(tmp_path: Path) -> None:
    state = trained_model().state_dict()
    path = tmp_path / 'w.safetensors'

    wide = registry.build_backend(TINY, num_classes=3, width=6).state_dict()
    save_checkpoint(path, wide, make_meta())
    with pytest.raises(CheckpointError) as info:
        build_from_checkpoint(path)
    message = str(info.value)
    assert str(path) in message and 'shape mismatch' in message
    assert 'stem.weight (checkpoint (6, 4, 3, 3), model (4, 4, 3, 3))' in message

    partial = dict(state)
    del partial['bn.running_var']
    partial['extra.weight'] = torch.zeros(1)
    save_checkpoint(path, partial, make_meta())
    with pytest.raises(CheckpointError) as info:
        build_from_checkpoint(path)
    message = str(info.value)
    assert '1 missing key(s): bn.running_var' in message
    assert '1 unexpected key(s): extra.weight' in message

    save_checkpoint(path, state, make_meta(class_names=['a', 'b']))  # head has 3 outputs
    with pytest.raises(CheckpointError, match=r'head\.weight'):
        build_from_checkpoint(path)


def test_bad_backend_config_is_a_checkpoint_error(tmp_path: Path) -> None:
    path = tmp_path / 'c.safetensors'
    config = {'encoder': 'tiny', 'depth_channels': 1, 'widht': 4}
    save_checkpoint(path, trained_model(), make_meta(config=config))
    with pytest.raises(CheckpointError, match='widht'):
        build_from_checkpoint(path)


# --- the torch container -----------------------------------------------------------------------


def test_torch_container_loads_with_weights_only(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / 'model.pt'
    model = trained_model()
    save_checkpoint(path, model, make_meta())
    raw = torch.load(path, weights_only=True)
    assert set(raw) == {'meta', 'state_dict', 'sha256'}
    assert raw['meta']['backend'] == TINY

    calls = []
    real_load = torch.load

    def spy(*args, **kwargs):
        calls.append(kwargs.get('weights_only'))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, 'load', spy)
    build_from_checkpoint(path)
    assert calls == [True]


def test_hand_written_torch_container(tmp_path: Path) -> None:
    model = trained_model()
    path = tmp_path / 'hand.pt'
    torch.save({'meta': good_doc(), 'state_dict': model.state_dict()}, path)
    expect_error(path, 'no integrity digest')
    seal_checkpoint(path)
    built, meta = build_from_checkpoint(path)
    assert meta.class_names == ['wall', 'floor', 'chair']
    assert_same_state(model.state_dict(), built.state_dict())
    torch.save({'state_dict': model.state_dict()}, path)
    expect_error(path, "'meta' and 'state_dict'")
    torch.save({'meta': good_doc(), 'state_dict': {'a': 1}}, path)
    expect_error(path, 'state_dict must map names to tensors')


class _Payload:
    marker = ''

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_pickle_payload_is_never_executed(tmp_path: Path) -> None:
    marker = tmp_path / 'pwned'
    payload = _Payload()
    payload.marker = str(marker)
    path = tmp_path / 'evil.pt'
    torch.save({'meta': good_doc(), 'state_dict': {}, 'x': payload}, path)
    expect_error(path, 'unsafe')
    assert not marker.exists()


def test_load_never_imports_pickle_for_safetensors(saved, monkeypatch) -> None:
    path, _, _ = saved

    def forbidden(*args, **kwargs):
        raise AssertionError('torch.load must not be used for safetensors files')

    monkeypatch.setattr(torch, 'load', forbidden)
    load_checkpoint(path)


def test_no_temporary_files_after_many_saves(tmp_path: Path) -> None:
    model, meta = trained_model(), make_meta()
    for name in ('a.safetensors', 'a.safetensors', 'b.pt', 'b.pt'):
        save_checkpoint(tmp_path / name, model, meta)
    assert sorted(os.listdir(tmp_path)) == ['a.safetensors', 'b.pt']


def test_meta_dict_is_accepted_and_module_exports() -> None:
    meta = CheckpointMeta.from_dict(good_doc())
    assert meta.depth_channels == 1
    assert ckpt.FORMAT_VERSION == 1


@pytest.mark.parametrize('name', ['model.safetensors', 'model.pt'])
def test_checkpoints_are_readable_by_group_and_others(tmp_path: Path, name: str) -> None:
    """0644 under umask 022, like any other file: a node running as another user loads it."""
    old = os.umask(0o022)
    try:
        save_checkpoint(tmp_path / name, trained_model(), make_meta())
    finally:
        os.umask(old)
    assert (tmp_path / name).stat().st_mode & 0o777 == 0o644
