"""Malformed checkpoints, written from one good one: every way a file set as ``checkpoint`` has
gone wrong (by mistake or on purpose), each loaded file a candidate that must be refused.

``malformed(folder, good)`` writes them next to each other and returns ``{case: path}``;
``good`` is a sealed safetensors checkpoint of a registered backend. Files that need a digest
to reach the check they are about get a correct one, so what is refused is the content.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from rgbd_seg_ros.backends import checkpoint as ckpt
from rgbd_seg_ros.backends import registry
from rgbd_seg_ros.backends.checkpoint import CheckpointMeta, InputSpec
from rgbd_seg_ros.backends.checkpoint_limits import MAX_WEIGHT_BYTES


class Payload:
    """Pickles to a call of ``Path.touch(marker)``: loading it must never run it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Callable[..., Any], tuple[Path]]:
        return (Path.touch, (self.marker,))


def write_safetensors(
    path: Path, state: dict[str, torch.Tensor], doc: Any, digest: str | bool | None = True
) -> Path:
    """``doc`` (a dict or raw text) as the metadata; ``digest=True`` computes the right one."""
    text = doc if isinstance(doc, str) else json.dumps(doc, sort_keys=True)
    metadata = {'format': 'pt', ckpt.META_KEY: text}
    if digest is True:
        metadata[ckpt.DIGEST_KEY] = ckpt._digest(text, state)
    elif isinstance(digest, str):
        metadata[ckpt.DIGEST_KEY] = digest
    save_file(state, str(path), metadata=metadata)
    return path


def write_torch(path: Path, state: dict[str, torch.Tensor], meta: Any, sha256: Any = True) -> Path:
    if sha256 is True:
        sha256 = ckpt._digest(json.dumps(meta, sort_keys=True, ensure_ascii=False), state)
    torch.save({'meta': meta, 'state_dict': state, 'sha256': sha256}, path)
    return path


def _header_file(path: Path, header: bytes, body: bytes = b'') -> Path:
    path.write_bytes(struct.pack('<Q', len(header)) + header + body)
    return path


def good_checkpoint(path: Path, num_classes: int = 4, seed: int = 0) -> Path:
    """A small real checkpoint (ERFNet encoder, about 8 MB) the corpus is made from."""
    torch.manual_seed(seed)
    model = registry.build_backend('erfnet_enc', num_classes=num_classes)
    meta = CheckpointMeta(
        backend='erfnet_enc',
        config=registry.config_to_dict(model.config),
        class_names=[f'class_{i}' for i in range(num_classes)],
        input_spec=InputSpec(depth_encoding='metric', depth_params={'max_depth_m': 10.0}),
        provenance={'made_by': 'checkpoint corpus', 'seed': seed},
    )
    ckpt.save_checkpoint(path, model, meta)
    return path


def malformed(folder: Path, good: Path) -> dict[str, Path]:
    """Every malformed case, written into ``folder`` (which must exist)."""
    meta, state = ckpt.load_checkpoint(good)
    doc = meta.to_dict()
    data = good.read_bytes()
    cases: dict[str, Path] = {}

    def doc_with(**changes: Any) -> dict[str, Any]:
        out = json.loads(json.dumps(doc))
        for dotted, value in changes.items():
            *parents, last = dotted.split('__')
            where = out
            for key in parents:
                where = where[key]
            where[last] = value
        return out

    def sealed(name: str, document: Any, tensors: dict[str, torch.Tensor] = state) -> None:
        cases[name] = write_safetensors(folder / f'{name}.safetensors', tensors, document)

    # What the issue found killing the node.
    zipped = folder / 'zip_pickle.safetensors'
    torch.save({'weights': [1, 2, 3]}, zipped)
    cases['zip_pickle_named_safetensors'] = zipped
    marker = folder / 'payload_ran'
    torch.save({'meta': doc, 'state_dict': {}, 'x': Payload(marker)}, folder / 'evil.safetensors')
    cases['pickle_payload_named_safetensors'] = folder / 'evil.safetensors'
    cases['provenance_holds_bytes'] = write_torch(
        folder / 'bytes.pt', state, doc_with(provenance={'blob': b'\x00\x01'}), sha256='0' * 64
    )
    cases['metrics_hold_a_tensor'] = write_torch(
        folder / 'tensor.pt', state, doc_with(metrics={'miou': torch.tensor(0.5)}), '0' * 64
    )
    ssma = registry.config_to_dict(registry.make_config('ssma', ssma_eta_skip=0))
    sealed('ssma_eta_skip_0', doc_with(backend='ssma', config=ssma))
    # Metadata that would have allocated or poisoned the model.
    many = 3000
    sealed(
        'class_names_3000_for_fewer_weights',
        doc_with(class_names=[f'c{i}' for i in range(many)], palette=[[1, 2, 3]] * many),
    )
    huge = 70000
    sealed(
        'class_names_70000',
        doc_with(class_names=[f'c{i}' for i in range(huge)], palette=[[1, 2, 3]] * huge),
    )
    sealed(
        'class_ids_beyond_16_bits',
        doc_with(class_ids=[70000 + i for i in range(meta.num_classes)]),
    )
    fixed = {'policy': 'fixed', 'height': 2000, 'width': 2600}
    sealed('fixed_resolution_2000x2600', doc_with(input_spec__resolution=fixed))
    sealed('rgb_std_1e-300', doc_with(input_spec__rgb_std=[1e-300, 0.2, 0.2]))
    sealed('rgb_std_negative', doc_with(input_spec__rgb_std=[-0.2, 0.2, 0.2]))
    sealed('rgb_mean_1e300', doc_with(input_spec__rgb_mean=[1e300, 0.2, 0.2]))
    sealed('rgb_std_nan', _nan_std(doc))
    depth_params = dict(doc['input_spec']['depth_params'], max_depth_m=1e-300)
    sealed('max_depth_m_1e-300', doc_with(input_spec__depth_params=depth_params))
    depth_params = dict(doc['input_spec']['depth_params'], max_depth_m=1e300)
    sealed('max_depth_m_1e300', doc_with(input_spec__depth_params=depth_params))
    sealed('format_version_2', doc_with(format_version=2))
    sealed('unknown_backend', doc_with(backend='no_such_backend'))
    sealed('config_unknown_field', doc_with(config__no_such_option=1))
    sealed('metadata_not_an_object', [1, 2, 3])
    sealed('metadata_not_json', '{"backend": ')
    sealed('metadata_nested_deeply', '[' * 100_000 + ']' * 100_000)
    # Weights that do not fit the metadata.
    name = max(state, key=lambda k: state[k].numel())
    reshaped = dict(state)
    reshaped[name] = state[name].reshape(-1)
    sealed('weight_of_the_wrong_shape', doc, reshaped)
    floating = next(k for k, v in state.items() if v.is_floating_point())
    as_int = dict(state)
    as_int[floating] = state[floating].to(torch.int32)
    sealed('float_weight_stored_as_int', doc, as_int)
    missing = dict(state)
    missing.pop(floating)
    sealed('weight_missing', doc, missing)
    # The digest.
    cases['digest_missing'] = write_safetensors(folder / 'nodigest.safetensors', state, doc, None)
    cases['digest_wrong'] = write_safetensors(
        folder / 'baddigest.safetensors', state, doc, 'f' * 64
    )
    cases['digest_not_hex'] = write_safetensors(
        folder / 'shortdigest.safetensors', state, doc, 'x'
    )
    cases['torch_digest_missing'] = write_torch(folder / 'nodigest.pt', state, doc, None)
    cases['torch_digest_as_bytes'] = write_torch(folder / 'bytesdigest.pt', state, doc, b'0' * 64)
    flipped = bytearray(data)
    flipped[-3] ^= 0x10
    (folder / 'flipped_weight.safetensors').write_bytes(bytes(flipped))
    cases['flipped_weight_byte'] = folder / 'flipped_weight.safetensors'
    # Damaged containers.
    (folder / 'empty.safetensors').write_bytes(b'')
    cases['empty_file'] = folder / 'empty.safetensors'
    (folder / 'random.safetensors').write_bytes(os.urandom(4096))
    cases['random_bytes'] = folder / 'random.safetensors'
    (folder / 'text.pt').write_text('not a checkpoint\n')
    cases['text_named_pt'] = folder / 'text.pt'
    for size in (1, 8, 9, 100, len(data) // 2, len(data) - 1):
        cut = folder / f'truncated_{size}.safetensors'
        cut.write_bytes(data[:size])
        cases[f'truncated_safetensors_{size}'] = cut
    pt = folder / 'whole.pt'
    ckpt.save_checkpoint(pt, state, meta)
    pt_data = pt.read_bytes()
    for size in (4, 100, len(pt_data) // 2, len(pt_data) - 1):
        cut = folder / f'truncated_{size}.pt'
        cut.write_bytes(pt_data[:size])
        cases[f'truncated_pt_{size}'] = cut
    cases['header_length_2^63'] = _header_file(folder / 'h63.safetensors', b'{}' + b' ' * 6)
    raw = bytearray(cases['header_length_2^63'].read_bytes())
    raw[:8] = struct.pack('<Q', 1 << 63)
    cases['header_length_2^63'].write_bytes(bytes(raw))
    cases['header_length_past_end'] = folder / 'hpast.safetensors'
    cases['header_length_past_end'].write_bytes(struct.pack('<Q', 1 << 20) + b'{"a":1}')
    cases['header_not_json'] = _header_file(folder / 'hnj.safetensors', b'{not json}')
    cases['header_a_list'] = _header_file(folder / 'hlist.safetensors', b'[1, 2]  ')
    meta_text = json.dumps(doc)
    header = {'__metadata__': {ckpt.META_KEY: meta_text, ckpt.DIGEST_KEY: '0' * 64}}
    huge_tensor = {'dtype': 'F32', 'shape': [1 << 20, 1 << 20], 'data_offsets': [0, 16]}
    cases['tensor_declared_past_the_end'] = _header_file(
        folder / 'hbig.safetensors', json.dumps({**header, 'w': huge_tensor}).encode(), b'0' * 16
    )
    total = MAX_WEIGHT_BYTES // 4 + 1  # float32 values: one more than allowed
    sparse = folder / 'sparse_huge.safetensors'
    entry = {'dtype': 'F32', 'shape': [total], 'data_offsets': [0, total * 4]}
    _header_file(sparse, json.dumps({**header, 'w': entry}).encode())
    with open(sparse, 'r+b') as stream:  # a sparse file: the size without the disk space
        stream.truncate(stream.seek(0, os.SEEK_END) + total * 4)
    cases['sparse_file_declaring_huge_weights'] = sparse
    odd = {'dtype': 'C64', 'shape': [2], 'data_offsets': [0, 16]}
    cases['unknown_dtype'] = _header_file(
        folder / 'hdtype.safetensors', json.dumps({**header, 'w': odd}).encode(), b'0' * 16
    )
    cases['metadata_not_strings'] = _header_file(
        folder / 'hmeta.safetensors', json.dumps({'__metadata__': {'a': 1}}).encode()
    )
    # Not regular files, and paths that are no file at all.
    fifo = folder / 'fifo.safetensors'
    os.mkfifo(fifo)
    cases['fifo'] = fifo
    link = folder / 'link_to_fifo.safetensors'
    link.symlink_to(fifo)
    cases['symlink_to_fifo'] = link
    cases['character_device'] = Path('/dev/zero')
    cases['folder'] = folder
    cases['missing_file'] = folder / 'missing.safetensors'
    return cases


def _nan_std(doc: dict[str, Any]) -> str:
    """The document with a NaN rgb_std, as JSON text (json.dumps writes NaN bare)."""
    out = json.loads(json.dumps(doc))
    out['input_spec']['rgb_std'] = [float('nan'), 0.2, 0.2]
    return json.dumps(out)


def valid_despite_the_name(folder: Path, good: Path) -> Path:
    """A valid torch container named ``.safetensors`` (a common mistake): content decides."""
    meta, state = ckpt.load_checkpoint(good)
    pt = folder / 'renamed.pt'
    ckpt.save_checkpoint(pt, state, meta)
    renamed = folder / 'renamed_pt.safetensors'
    pt.rename(renamed)
    return renamed
