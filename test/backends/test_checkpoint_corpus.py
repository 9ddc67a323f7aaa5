"""Every malformed checkpoint is refused with a CheckpointError naming it, whatever went wrong
inside the reader: the corpus of test/checkpoint_corpus.py, then seeded random damage to a
good file (each damaged file is refused, or loads exactly the original content)."""

from __future__ import annotations

import random
import re
from pathlib import Path

import pytest
import torch
from checkpoint_corpus import good_checkpoint, malformed, valid_despite_the_name

from rgbd_seg_ros.backends.checkpoint import (
    build_from_checkpoint,
    load_checkpoint,
    read_checkpoint_meta,
)
from rgbd_seg_ros.errors import CheckpointError


@pytest.fixture(scope='module')
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Path]]:
    folder = tmp_path_factory.mktemp('corpus')
    good = good_checkpoint(folder / 'good.safetensors')
    bad = folder / 'bad'
    bad.mkdir()
    return good, malformed(bad, good)


CASES = [
    'zip_pickle_named_safetensors',
    'pickle_payload_named_safetensors',
    'provenance_holds_bytes',
    'metrics_hold_a_tensor',
    'ssma_eta_skip_0',
    'class_names_3000_for_fewer_weights',
    'class_names_70000',
    'class_ids_beyond_16_bits',
    'fixed_resolution_2000x2600',
    'rgb_std_1e-300',
    'rgb_std_negative',
    'rgb_mean_1e300',
    'rgb_std_nan',
    'max_depth_m_1e-300',
    'max_depth_m_1e300',
    'format_version_2',
    'unknown_backend',
    'config_unknown_field',
    'metadata_not_an_object',
    'metadata_not_json',
    'metadata_nested_deeply',
    'weight_of_the_wrong_shape',
    'float_weight_stored_as_int',
    'weight_missing',
    'digest_missing',
    'digest_wrong',
    'digest_not_hex',
    'torch_digest_missing',
    'torch_digest_as_bytes',
    'flipped_weight_byte',
    'empty_file',
    'random_bytes',
    'text_named_pt',
    'header_length_2^63',
    'header_length_past_end',
    'header_not_json',
    'header_a_list',
    'tensor_declared_past_the_end',
    'sparse_file_declaring_huge_weights',
    'unknown_dtype',
    'metadata_not_strings',
    'fifo',
    'symlink_to_fifo',
    'character_device',
    'folder',
    'missing_file',
]


def test_the_corpus_is_complete(corpus) -> None:
    _, cases = corpus
    names = set(cases)
    assert {n for n in names if not n.startswith('truncated_')} == set(CASES)
    assert sum(n.startswith('truncated_') for n in names) >= 8


@pytest.mark.parametrize('case', [*CASES, 'truncated'])
def test_every_malformed_file_is_refused_naming_it(corpus, case: str) -> None:
    _, cases = corpus
    paths = (
        [p for n, p in cases.items() if n.startswith('truncated_')]
        if case == 'truncated'
        else [cases[case]]
    )
    for path in paths:
        with pytest.raises(CheckpointError) as info:
            build_from_checkpoint(path)
        assert str(path) in str(info.value)
    assert not (paths[0].parent / 'payload_ran').exists()


@pytest.mark.parametrize(
    ('case', 'reason'),
    [
        ('provenance_holds_bytes', 'JSON cannot hold'),
        ('metrics_hold_a_tensor', 'holds a Tensor'),
        ('ssma_eta_skip_0', 'ZeroDivisionError'),
        ('class_names_3000_for_fewer_weights', '3000 classes'),
        ('class_names_70000', '70000 classes is outside 1..65535'),
        ('class_ids_beyond_16_bits', '0..65535'),
        ('fixed_resolution_2000x2600', '2000x2600'),
        ('rgb_std_1e-300', 'rgb_std must lie in'),
        ('max_depth_m_1e-300', 'max_depth_m'),
        ('float_weight_stored_as_int', 'dtype mismatch'),
        ('digest_missing', 'no integrity digest'),
        ('torch_digest_missing', 'no integrity digest'),
        ('digest_wrong', 'checksum mismatch'),
        ('header_length_2^63', 'header of'),
        ('tensor_declared_past_the_end', 'bad entry'),
        ('sparse_file_declaring_huge_weights', 'refused before reading'),
        ('fifo', 'a FIFO'),
        ('symlink_to_fifo', 'a FIFO'),
        ('character_device', 'a character device'),
        ('folder', 'is a folder'),
    ],
)
def test_refusals_say_why(corpus, case: str, reason: str) -> None:
    _, cases = corpus
    with pytest.raises(CheckpointError, match=re.escape(reason)):
        build_from_checkpoint(cases[case])


def test_metadata_is_read_without_tensors(corpus, monkeypatch: pytest.MonkeyPatch) -> None:
    good, cases = corpus
    import safetensors

    def no_tensor_reads(*_args, **_kwargs):
        raise AssertionError('reading metadata must not open the tensors')

    monkeypatch.setattr('rgbd_seg_ros.backends.checkpoint.safe_open', no_tensor_reads)
    assert read_checkpoint_meta(good).backend == 'erfnet_enc'
    # The weight byte flipped is not seen by a metadata read (the weights are not read) ...
    assert read_checkpoint_meta(cases['flipped_weight_byte']).backend == 'erfnet_enc'
    assert safetensors  # (the reader module stays importable)
    monkeypatch.undo()
    # ... but by any load of the weights.
    with pytest.raises(CheckpointError, match='checksum mismatch'):
        load_checkpoint(cases['flipped_weight_byte'])


def test_a_valid_torch_container_named_safetensors_loads(corpus, tmp_path: Path) -> None:
    good, _ = corpus
    renamed = valid_despite_the_name(tmp_path, good)
    model, meta = build_from_checkpoint(renamed)
    _, state = load_checkpoint(good)
    assert meta.backend == 'erfnet_enc'
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key


def _damage(data: bytes, rng: random.Random) -> bytes:
    out = bytearray(data)
    kind = rng.randrange(5)
    header_end = 8 + int.from_bytes(data[:8], 'little')
    if kind == 0:  # flip bytes anywhere
        for _ in range(rng.randint(1, 4)):
            out[rng.randrange(len(out))] ^= rng.randint(1, 255)
    elif kind == 1:  # flip bytes in the header
        for _ in range(rng.randint(1, 4)):
            out[rng.randrange(min(header_end, len(out)))] ^= rng.randint(1, 255)
    elif kind == 2:  # truncate
        del out[rng.randrange(len(out)) :]
    elif kind == 3:  # insert random bytes
        at = rng.randrange(len(out))
        out[at:at] = rng.randbytes(rng.randint(1, 64))
    else:  # a random header length
        out[:8] = rng.getrandbits(64).to_bytes(8, 'little')
    return bytes(out)


@pytest.mark.parametrize('container', ['safetensors', 'pt'])
def test_random_damage_is_refused_or_harmless(corpus, tmp_path: Path, container: str) -> None:
    good, _ = corpus
    meta, state = load_checkpoint(good)
    source = good
    if container == 'pt':
        from rgbd_seg_ros.backends.checkpoint import save_checkpoint

        source = tmp_path / 'good.pt'
        save_checkpoint(source, state, meta)
    data = source.read_bytes()
    rng = random.Random(17)
    damaged = tmp_path / f'damaged.{container}'
    refused = 0
    for _ in range(40):
        damaged.write_bytes(_damage(data, rng))
        try:
            loaded_meta, loaded = load_checkpoint(damaged)
        except CheckpointError as err:
            assert str(damaged) in str(err)
            refused += 1
            continue
        assert loaded_meta.to_dict() == meta.to_dict()
        assert set(loaded) == set(state)
        assert all(torch.equal(loaded[k], state[k]) for k in state)
    assert refused > 0


def test_rgbd_seg_seal(corpus, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from rgbd_seg_ros.cli.main import main

    _, cases = corpus
    unsealed = tmp_path / 'unsealed.safetensors'
    unsealed.write_bytes(cases['digest_missing'].read_bytes())
    damaged = tmp_path / 'damaged.safetensors'
    damaged.write_bytes(cases['digest_wrong'].read_bytes())
    assert main(['seal', str(unsealed)]) == 0
    assert f'sealed {unsealed}: erfnet_enc, 4 classes' in capsys.readouterr().out
    build_from_checkpoint(unsealed)
    assert main(['seal', str(damaged)]) == 2
    assert 'checksum mismatch' in capsys.readouterr().err
    with pytest.raises(CheckpointError, match='checksum mismatch'):
        load_checkpoint(damaged)
