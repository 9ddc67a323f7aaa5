"""The fast post-processing forms equal the obvious ones (argmax, softmax max, integer blend)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rgbd_seg_ros.core.palette import overlay as reference_overlay
from rgbd_seg_ros.inference.postprocess import (
    RayCache,
    ReducedLogits,
    blend_overlay,
    cloud_classes,
    cloud_xyz,
    compact_rows,
    softmax_max,
)


@pytest.mark.parametrize('num_classes', [1, 2, 14, 255, 300])
def test_labels_and_confidence_match_argmax_and_softmax(num_classes):
    logits = torch.randn(1, num_classes, 9, 13, generator=torch.Generator().manual_seed(0))
    reduced = ReducedLogits(logits)
    labels, conf = reduced.labels, reduced.confidence()
    assert torch.equal(labels.long(), logits.argmax(1)[0])
    torch.testing.assert_close(conf, torch.softmax(logits, 1).amax(1)[0])
    assert labels.dtype == (torch.uint8 if num_classes <= 256 else torch.int32)


@pytest.mark.parametrize('num_classes', [255, 256, 257])
def test_label_type_boundary_and_nan_pixels_give_a_valid_class(num_classes):
    logits = torch.randn(1, num_classes, 3, 4, generator=torch.Generator().manual_seed(5))
    logits[0, num_classes - 1, 0, 1] = 100.0  # the last class wins here
    logits[0, 0, 2, 3] = 100.0  # the first class wins here
    logits[0, :, 1, 2] = float('nan')
    labels = ReducedLogits(logits).labels
    assert labels.dtype == (torch.uint8 if num_classes <= 256 else torch.int32)
    assert int(labels[0, 1]) == num_classes - 1 and int(labels[2, 3]) == 0
    assert 0 <= int(labels[1, 2]) < num_classes
    keep = torch.ones(3, 4, dtype=torch.bool)
    keep[1, 2] = False
    assert torch.equal(labels.long()[keep], logits.argmax(1)[0][keep])


def test_ties_resolve_to_the_first_channel_like_argmax():
    logits = torch.zeros(1, 5, 2, 3)
    logits[0, 3, 0, 0] = 1.0
    logits[0, 1, 0, 0] = 1.0  # tie between 1 and 3: argmax says 1
    reduced = ReducedLogits(logits)
    labels, conf = reduced.labels, reduced.confidence()
    assert labels[0, 0] == 1 and labels[1, 2] == 0
    assert torch.equal(labels.long(), logits.argmax(1)[0])
    assert conf[1, 2] == pytest.approx(0.2)


def test_nan_logits_stay_in_range():
    logits = torch.randn(1, 4, 3, 3)
    logits[0, :, 1, 1] = float('nan')
    labels = ReducedLogits(logits).labels
    assert int(labels.min()) >= 0 and int(labels.max()) <= 3


def test_labels_from_the_runtime_are_kept_clamped_and_confidence_still_comes_from_logits():
    logits = torch.randn(1, 6, 5, 7, generator=torch.Generator().manual_seed(2))
    given = logits.argmax(1)[0].to(torch.int32)
    given[0, 0] = 9  # out of range: clamped to the last class
    given[0, 1] = 258  # would wrap to class 2 if narrowed to a byte before clamping
    reduced = ReducedLogits(logits, given.clone())
    assert reduced.labels[0, 0] == 5 and reduced.labels[0, 1] == 5
    assert torch.equal(reduced.labels.long()[1:], given.long()[1:])
    assert reduced.labels.dtype == torch.uint8
    torch.testing.assert_close(reduced.confidence(), torch.softmax(logits, 1).amax(1)[0])


def test_byte_labels_from_the_runtime_are_used_in_place():
    """ONNX Runtime's uint8 ArgMax output becomes the labels without a copy (nothing
    image-sized is written between the forward and the labels publish)."""
    logits = torch.randn(1, 12, 6, 8, generator=torch.Generator().manual_seed(4))
    given = logits.argmax(1)[0].to(torch.uint8)
    reduced = ReducedLogits(logits, given)
    assert reduced.labels.data_ptr() == given.data_ptr()
    assert torch.equal(reduced.labels.long(), logits.argmax(1)[0])


@pytest.mark.parametrize(
    'shape',
    [
        (12, 480, 640),  # the reference camera: 34 rows per block
        (3, 37, 101),  # the last block is short
        (2, 1, 1),
        (300, 5, 2000),  # one row is beyond the block size: a row per block
    ],
)
def test_softmax_max_in_row_blocks_equals_softmax_over_the_whole_image(shape):
    logits = 6 * torch.randn(1, *shape, generator=torch.Generator().manual_seed(4))
    expected = torch.softmax(logits.double(), 1).amax(1)[0].float()
    conf = softmax_max(logits)
    assert conf.shape == shape[1:] and conf.dtype == torch.float32
    torch.testing.assert_close(conf, expected)


@pytest.mark.parametrize('spread', [100.0, 1000.0, 1e30])
def test_logits_far_below_the_maximum_give_the_exact_confidence(spread, monkeypatch):
    """exp() of a logit more than ~87 below the maximum underflows (the slow path of torch's
    CPU exp); the confidence raises such logits to -80 first, which changes no float32 result.
    """
    from rgbd_seg_ros.inference import postprocess

    generator = torch.Generator().manual_seed(6)
    logits = torch.randn(1, 12, 40, 50, generator=generator) * spread
    logits[0, :, 0, 0] = torch.tensor([0.0, -85.0, -86.0, -87.5, -88.0, -150.0] + [-1e4] * 6)
    logits[0, :, 0, 1] = torch.tensor([1.0, 0.0] + [-100.0] * 10)  # two near, ten far
    logits[0, :, 0, 2] = float('-inf')
    logits[0, 0, 0, 2] = 0.0
    conf = softmax_max(logits)
    torch.testing.assert_close(conf, torch.softmax(logits.double(), 1).amax(1)[0].float())
    monkeypatch.setattr(postprocess, '_EXP_FLOOR', float('-inf'))  # no floor: the slow path
    assert torch.equal(conf, softmax_max(logits))
    assert conf[0, 2] == 1.0
    assert conf[0, 1] == pytest.approx(1 / (1 + np.exp(-1.0)), abs=1e-7)


@pytest.mark.parametrize('width', [33, 640])  # 33: a width the sum's vectors do not divide
def test_softmax_max_writes_only_the_rows_it_is_given(width, monkeypatch):
    from rgbd_seg_ros.inference import postprocess

    monkeypatch.setattr(postprocess, '_CPU_BLOCK_BYTES', 7 * width * 4 * 9)  # 9 rows a block
    logits = 5 * torch.randn(1, 7, 90, width, generator=torch.Generator().manual_seed(8))
    assert postprocess.softmax_block_rows(logits) == 9
    whole = softmax_max(logits)
    torch.testing.assert_close(whole, torch.softmax(logits.double(), 1).amax(1)[0].float())
    out = torch.full((90, width), -1.0)
    assert softmax_max(logits, out, slice(18, 45)) is out
    assert torch.equal(out[18:45], whole[18:45])  # split at block boundaries: the same bits
    assert bool((out[:18] == -1).all()) and bool((out[45:] == -1).all())
    softmax_max(logits, out, slice(0, 18))
    softmax_max(logits, out, slice(45, None))
    assert torch.equal(out, whole)
    assert torch.equal(ReducedLogits(logits).confidence(), whole)
    partial = torch.full((90, width), -1.0)
    softmax_max(logits, partial, slice(10, 47))  # any rows: the same to rounding
    torch.testing.assert_close(partial[10:47], whole[10:47])
    assert bool((partial[:10] == -1).all()) and bool((partial[47:] == -1).all())


def test_an_infinite_logit_is_the_label_like_argmax():
    logits = torch.zeros(1, 4, 1, 3)
    logits[0, 2, 0, 0] = float('inf')
    logits[0, 1, 0, 1] = float('inf')
    logits[0, 3, 0, 1] = float('inf')  # tie of infinities: the first, as argmax
    labels = ReducedLogits(logits).labels
    assert labels.tolist() == [[2, 1, 0]]
    assert torch.equal(labels.long(), logits.argmax(1)[0])


def test_softmax_max_propagates_nan_per_pixel_only():
    logits = torch.randn(1, 4, 40, 30)
    logits[0, 2, 17, 3] = float('nan')
    conf = softmax_max(logits)
    assert torch.isnan(conf[17, 3])
    assert int(torch.isnan(conf).sum()) == 1


def _labels_graph(path, shape):
    """A graph whose 'logits' output is its input, then add_labels_output's ArgMax."""
    import onnx
    from onnx import TensorProto, helper

    from rgbd_seg_ros.inference.onnx_forward import add_labels_output

    graph = helper.make_graph(
        [helper.make_node('Identity', ['x'], ['logits'])],
        'labels_head',
        [helper.make_tensor_value_info('x', TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info('logits', TensorProto.FLOAT, shape)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid('', 17)])
    onnx.save(model, str(path))
    add_labels_output(path)
    return path


@pytest.mark.parametrize(
    ('shape', 'dtype'),
    [
        ([1, 5, 4, 6], np.uint8),
        (['batch', 5, 'height', 'width'], np.uint8),
        ([1, 300, 4, 6], np.int32),  # ids above 255 need more than a byte
        ([1, 'classes', 4, 6], np.int32),  # a class count the graph does not state
    ],
)
def test_onnx_runtimes_argmax_head_equals_the_engines_labels(tmp_path, shape, dtype):
    """The labels the ONNX graph computes (ties: first channel) are the ones torch's reduction
    gives; NaN logits still give a class id; 8-bit where every id fits a byte."""
    import onnxruntime as ort

    classes = 300 if 300 in shape else 5
    path = _labels_graph(tmp_path / 'head.onnx', shape)
    session = ort.InferenceSession(str(path), providers=['CPUExecutionProvider'])
    logits = torch.randn(1, classes, 4, 6, generator=torch.Generator().manual_seed(3))
    logits[0, 1, 0, 0] = logits[0, 3, 0, 0] = 50.0  # tie: channel 1
    logits[0, :, 2, 2] = 7.0  # all-way tie: channel 0
    logits[0, :, 3, 5] = float('nan')
    logits[0, classes - 1, 1, 1] = 60.0  # the last class: 299 does not fit a byte
    _, labels = session.run(['logits', 'labels'], {'x': logits.numpy()})
    assert labels.dtype == dtype and labels.shape == (1, 4, 6)
    reference = ReducedLogits(logits).labels.numpy()
    keep = np.ones((4, 6), bool)
    keep[3, 5] = False
    np.testing.assert_array_equal(labels[0][keep], reference[keep])
    assert labels[0, 0, 0] == 1 and labels[0, 2, 2] == 0 and labels[0, 1, 1] == classes - 1
    assert 0 <= labels[0, 3, 5] < classes


@pytest.mark.parametrize('alpha', [0.0, 0.25, 0.5, 0.7, 1.0])
def test_integer_overlay_equals_the_numpy_reference(alpha):
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (7, 11, 3), dtype=np.uint8)
    colour = rng.integers(0, 256, (7, 11, 3), dtype=np.uint8)
    out = blend_overlay(torch.from_numpy(rgb), torch.from_numpy(colour), alpha).numpy()
    np.testing.assert_array_equal(out, reference_overlay(rgb, colour, alpha))


def test_cloud_columns_are_back_projection_and_palette_bits_each_written_once():
    K = torch.tensor([[100.0, 0, 4.0], [0, 80.0, 3.0], [0, 0, 1]])
    z = torch.rand(6, 8) + 0.5
    ray_x, ray_y = RayCache().rays(K, 6, 8, 1)
    labels = torch.randint(0, 3, (6, 8), dtype=torch.int32)
    conf = torch.rand(6, 8)
    packed = torch.tensor([0x102030, 0x405060, 0x708090], dtype=torch.int32)
    buf = cloud_xyz(z, ray_x, ray_y, out=torch.empty(6, 8, 6))
    assert cloud_classes(labels, labels.long(), packed, out=buf) is buf
    buf[..., 5] = conf  # the caller's column (CloudJob.finish)
    u = torch.arange(8.0).view(1, -1)
    v = torch.arange(6.0).view(-1, 1)
    torch.testing.assert_close(buf[..., 0], (u - 4.0) / 100.0 * z)
    torch.testing.assert_close(buf[..., 1], (v - 3.0) / 80.0 * z)
    assert torch.equal(buf[..., 3].view(torch.int32), packed[labels.long()])
    assert torch.equal(buf[..., 4].view(torch.int32), labels)
    keep = z > 1.0
    assert not bool(keep.all())
    assert torch.equal(compact_rows(buf, keep), buf[keep])
    everything = torch.ones_like(keep)
    assert torch.equal(compact_rows(buf, everything), buf[everything])
    into = torch.empty(int(keep.sum()), 6)
    assert compact_rows(buf, keep, out=into) is into
    assert torch.equal(into, buf[keep])
    written = torch.full((6, 8, 6), 7.0)
    assert cloud_classes(labels, labels.long(), packed, out=written) is written
    assert bool((written[..., :3] == 7.0).all())  # x y z are cloud_xyz's, left as they were
    assert cloud_xyz(z, ray_x, ray_y, out=written) is written
    assert bool((written[..., 5] == 7.0).all())  # the confidence column left as it was
    written[..., 5] = conf
    assert torch.equal(written, buf)


def test_ray_cache_follows_a_change_of_intrinsics_and_stride():
    cache = RayCache()
    K = torch.tensor([[100.0, 0, 4.0], [0, 80.0, 3.0], [0, 0, 1]])
    first = cache.rays(K, 6, 8, 1)
    assert cache.rays(K, 6, 8, 1) is first
    assert cache.rays(K, 6, 8, 2)[0].shape == (1, 4)
    K2 = K.clone()
    K2[0, 0] = 50.0
    expected = (torch.arange(8.0) - 4.0).view(1, -1) / 50
    torch.testing.assert_close(cache.rays(K2, 6, 8, 1)[0], expected)
