"""The layout as a torch Dataset: tensors, depth encodings, class weights, resumable sampler."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import train_fixtures as tf

from rgbd_seg_ros.training.config import AugmentConfig
from rgbd_seg_ros.training.dataset import (
    SegDataset,
    StreamBatchSampler,
    class_frequencies,
    median_frequency_weights,
    shard_indices,
)


@pytest.fixture(scope='module')
def root(tmp_path_factory):
    return tf.write_dataset(tmp_path_factory.mktemp('dsdata') / 'ds', n_train=6, n_val=2)


@pytest.mark.parametrize('encoding, channels', [('metric', 1), ('jet', 3), ('hha', 3)])
def test_items_follow_the_input_spec(root, encoding, channels):
    ds = SegDataset(root, 'train', depth_encoding=encoding)
    item = ds[0]
    assert item['rgb'].shape == (3, 48, 64) and item['rgb'].dtype == torch.float32
    assert item['depth'].shape == (channels, 48, 64)
    assert item['labels'].dtype == torch.int64
    assert set(item['labels'].unique().tolist()) <= {0, 1, 2, 3, 255}
    # colour normalised with the ImageNet statistics
    raw = ds.reader.load(ds.records[0].frame_id).rgb.astype(np.float32) / 255.0
    expected = (raw[..., 0] - 0.485) / 0.229
    np.testing.assert_allclose(item['rgb'][0].numpy(), expected, rtol=1e-5, atol=1e-5)


def test_augmented_items_are_reproducible_per_position(root):
    aug = AugmentConfig(crop=[32, 40], rotation_deg=10.0, brightness=10.0)
    ds = SegDataset(root, 'train', depth_encoding='metric', augment=aug, seed=3)
    a, b, c = ds[(1, 17)], ds[(1, 17)], ds[(1, 18)]
    assert a['rgb'].shape == (3, 32, 40)
    assert torch.equal(a['rgb'], b['rgb']) and torch.equal(a['labels'], b['labels'])
    assert not torch.equal(a['rgb'], c['rgb'])


def test_unknown_ids_become_ignore(root, tmp_path):
    # a model that knows only two of the dataset's classes
    ds = SegDataset(root, 'val', depth_encoding='metric', class_ids=[0, 1])
    labels = ds[0]['labels']
    assert set(labels.unique().tolist()) <= {0, 1, 255}


def test_median_frequency_weights():
    counts = np.array([100, 10, 0, 50])
    image_pixels = np.array([200, 100, 0, 100])
    # f = [0.5, 0.1, -, 0.5], median 0.5
    w = median_frequency_weights(counts, image_pixels)
    np.testing.assert_allclose(w, [1.0, 5.0, 0.0, 1.0])


def test_class_frequencies_on_dataset(root):
    ds = SegDataset(root, 'train', depth_encoding='metric')
    counts, image_pixels = class_frequencies(ds)
    assert counts.sum() > 0.95 * 6 * 48 * 64  # all but the ignored pixels
    assert np.all(image_pixels[counts > 0] >= counts[counts > 0])


def test_sampler_resumes_and_shards():
    full = StreamBatchSampler(10, 3, seed=1)
    it = iter(full)
    batches = [next(it) for _ in range(8)]
    resumed = iter(StreamBatchSampler(10, 3, seed=1, start_step=5))
    assert [next(resumed) for _ in range(3)] == batches[5:]
    # every epoch is a permutation: 10 positions cover each frame once
    positions = [p for b in batches for p in b][:10]
    assert sorted(i for i, _ in positions) == list(range(10))
    # two ranks split each global batch without overlap
    r0 = next(iter(StreamBatchSampler(10, 2, seed=1, rank=0, world_size=2)))
    r1 = next(iter(StreamBatchSampler(10, 2, seed=1, rank=1, world_size=2)))
    assert {p for _, p in r0} | {p for _, p in r1} == {0, 1, 2, 3}
    assert shard_indices(5, 0, 2) + shard_indices(5, 1, 2) == [0, 2, 4, 1, 3]


def test_items_carry_K_and_on_request_metric_depth(root):
    plain = SegDataset(root, 'train', depth_encoding='hha')[0]
    assert 'depth_m' not in plain  # only runs that supervise a depth branch pay for it
    assert plain['K'].dtype == torch.float32
    np.testing.assert_allclose(plain['K'].numpy(), [[50, 0, 31.5], [0, 50, 23.5], [0, 0, 1]])
    ds = SegDataset(root, 'train', depth_encoding='hha', depth_targets=True)
    item = ds[0]
    assert item['depth_m'].shape == (1, 48, 64) and item['depth_m'].dtype == torch.float32
    raw = ds.reader.load(ds.records[0].frame_id).depth_mm
    np.testing.assert_allclose(item['depth_m'][0].numpy(), raw / 1000.0, rtol=1e-6)


@pytest.mark.parametrize('crop', [None, [32, 40]])
def test_K_keeps_f_over_Z_the_apparent_size_whether_or_not_depth_follows_the_zoom(root, crop):
    """Zoom 2: depth halves (the camera moved closer) and the focal stays, or depth stays and
    the focal doubles; either way f/Z, which depth-aware gating bins on, is the same."""
    from rgbd_seg_ros.backends.depth_gating import sensor_bin_probs

    items = {}
    for follows in (True, False):
        aug = AugmentConfig(crop=crop, scale=[2.0, 2.0], hflip=False, depth_follows_scale=follows)
        ds = SegDataset(
            root, 'train', depth_encoding='metric', augment=aug, seed=5, depth_targets=True
        )
        items[follows] = ds[(2, 9)]
    zoomed, resized = items[True], items[False]
    assert torch.equal(zoomed['labels'], resized['labels'])
    assert torch.allclose(zoomed['depth_m'] * 2.0, resized['depth_m'])
    assert zoomed['K'][0, 0] == pytest.approx(50.0) and resized['K'][0, 0] == pytest.approx(100.0)
    assert torch.allclose(zoomed['K'][:, 2], resized['K'][:, 2])  # principal point: the warp's
    edges = (20.0, 30.0, 50.0, 80.0)
    bins = [
        sensor_bin_probs(it['depth_m'][None], it['K'][None, 0, 0], edges, 1)[0]
        for it in (zoomed, resized)
    ]
    assert torch.equal(bins[0], bins[1])
