"""Synthetic scene generator: determinism, geometry, sensor model, recordings and datasets."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from rgbd_seg_ros.core.projection import backproject
from rgbd_seg_ros.data.synth import (
    IGNORE_INDEX,
    SYNTH_CLASSES,
    TOPICS,
    StructuredLightModel,
    SynthSequence,
    generate_sequence,
    intrinsics,
    make_scene,
    write_dataset,
    write_recording,
)
from rgbd_seg_ros.data.synth import classes as C
from rgbd_seg_ros.data.synth.geometry2d import inside, overlap
from rgbd_seg_ros.data.synth.render import RenderOutput
from rgbd_seg_ros.data.synth.sensor_noise import quantise_depth, simulate_depth
from rgbd_seg_ros.data.synth.writers import frames_per_scene, split_of

W, H = 80, 60
FPS = 15.0


def world_points(depth_m: np.ndarray, K: np.ndarray, pose: np.ndarray) -> np.ndarray:
    """Back-project depth (m) with K and move the points into the world frame (NaN invalid)."""
    cam = backproject(depth_m.astype(np.float32), K).reshape(-1, 3).astype(np.float64)
    return (cam @ pose[:3, :3].T + pose[:3, 3]).reshape(*depth_m.shape, 3)


@pytest.fixture(scope='module')
def seq() -> SynthSequence:
    return SynthSequence(11, 30, W, H, FPS)


@pytest.fixture(scope='module')
def frames(seq: SynthSequence) -> list:
    return [seq.frame(i) for i in (0, 10, 20, 29)]


# -- determinism ---------------------------------------------------------------------------


def test_same_seed_is_bit_identical_and_other_seeds_differ(frames) -> None:
    again = next(generate_sequence(11, 30, W, H, FPS))
    first = frames[0]
    for name in ('rgb', 'depth_mm', 'labels', 'K', 'pose', 'depth_true_m'):
        a, b = getattr(first, name), getattr(again, name)
        assert a.dtype == b.dtype and np.array_equal(a, b), name
    assert again.stamp_ns == first.stamp_ns
    other = next(generate_sequence(12, 30, W, H, FPS))
    assert not np.array_equal(other.rgb, first.rgb)
    assert not np.array_equal(other.depth_mm, first.depth_mm)


def test_frames_do_not_depend_on_render_order(seq, frames) -> None:
    assert np.array_equal(seq.frame(20).depth_mm, frames[2].depth_mm)
    assert np.array_equal(seq.frame(0).rgb, frames[0].rgb)


# -- frame contract ------------------------------------------------------------------------


def test_frame_types_shapes_and_stamps(frames) -> None:
    for f in frames:
        assert f.rgb.shape == (H, W, 3) and f.rgb.dtype == np.uint8
        assert f.depth_mm.shape == (H, W) and f.depth_mm.dtype == np.uint16
        assert f.labels.shape == (H, W) and f.labels.dtype == np.uint8
        assert f.K.shape == (3, 3)
        # a closed room: every ray hits something, so nothing is unlabelled
        assert not np.any(f.labels == IGNORE_INDEX)
        assert f.labels.max() < len(SYNTH_CLASSES)
        assert 0.05 < np.mean(f.depth_mm > 0) < 1.0  # holes, but mostly measured
    idx = [f.index for f in frames]
    stamps = [f.stamp_ns for f in frames]
    assert stamps == [stamps[0] + round(i * 1e9 / FPS) for i in idx]
    assert len(SYNTH_CLASSES) >= 12
    assert [c.id for c in SYNTH_CLASSES] == list(range(len(SYNTH_CLASSES)))


def test_intrinsics_scale_with_size() -> None:
    K640 = intrinsics(640, 480)
    K80 = intrinsics(80, 60)
    assert K640[0, 0] == K640[1, 1]
    # same field of view; pixel-centre convention: c' = (c + 0.5) * s - 0.5
    assert K80[0, 0] == pytest.approx(K640[0, 0] / 8)
    assert K80[0, 2] == pytest.approx((K640[0, 2] + 0.5) / 8 - 0.5)
    assert K80[1, 2] == pytest.approx((K640[1, 2] + 0.5) / 8 - 0.5)


# -- geometry: labels, depth, K and pose agree ---------------------------------------------


def test_floor_ceiling_and_walls_back_project_where_they_are(seq, frames) -> None:
    X, Y, Hroom = seq.room.size
    seen_floor = 0
    for f in frames:
        pts = world_points(f.depth_true_m, f.K, f.pose)
        floor = f.labels == C.FLOOR
        seen_floor += floor.sum()
        if floor.any():
            assert np.abs(pts[floor][:, 2]).max() < 2e-3
        ceiling = f.labels == C.CEILING
        if ceiling.any():
            assert np.abs(pts[ceiling][:, 2] - Hroom).max() < 2e-3
        wall = f.labels == C.WALL
        if wall.any():
            p = pts[wall]
            to_plane = np.min(np.abs(np.stack([p[:, 0], X - p[:, 0], p[:, 1], Y - p[:, 1]])), 0)
            # plaster planes, plus skirting boards and window reveals a few cm off them
            assert np.mean(to_plane < 2e-3) > 0.8
            assert to_plane.max() < 0.45  # at most the shell behind the walls
        # the noisy sensor depth agrees with the exact depth where it measured
        valid = f.depth_mm > 0
        err = np.abs(f.depth_mm[valid] / 1000.0 - f.depth_true_m[valid])
        assert np.median(err / f.depth_true_m[valid]) < 0.01
    assert seen_floor > 0


def test_camera_height_speed_and_clearance(seq) -> None:
    poses = seq.poses
    xyz = poses[:, :3, 3]
    assert np.all((xyz[:, 2] > 1.1) & (xyz[:, 2] < 1.7))
    speed = np.linalg.norm(np.diff(xyz[:, :2], axis=0), axis=1) * FPS
    assert np.all(speed < 1.1)
    assert 0.3 < speed.mean() < 1.05
    # the optical axis stays near horizontal-to-downward and turns smoothly
    forward = poses[:, :3, 2]
    assert np.all(forward[:, 2] < 0.2)
    turn = np.degrees(np.arccos(np.clip(np.sum(forward[1:] * forward[:-1], 1), -1, 1))) * FPS
    assert turn.max() < 120.0
    room = seq.room
    cells = np.floor(xyz[:, :2] / room.grid_res).astype(int)
    clearance = room.clearance[cells[:, 1], cells[:, 0]]
    assert clearance.min() > 0.25


@pytest.mark.parametrize('seed', [0, 1, 2, 3, 4, 5])
def test_objects_do_not_intersect_and_are_supported(seed: int) -> None:
    room = make_scene(seed)
    X, Y, Hroom = room.size
    objs = {o.instance: o for o in room.objects}
    assert len(objs) == len(room.objects)

    def ancestors(o) -> set[int]:
        out = set()
        while o.support >= 0:
            out.add(o.support)
            o = objs[o.support]
        return out

    classes = {o.cls for o in room.objects}
    assert {C.DOOR, C.LAMP} <= classes
    for o in room.objects:
        assert o.footprint[:, 0].min() >= -1e-6 and o.footprint[:, 0].max() <= X + 1e-6
        assert o.footprint[:, 1].min() >= -1e-6 and o.footprint[:, 1].max() <= Y + 1e-6
        assert 0.0 <= o.z0 < o.z1 <= Hroom + 1e-6
        if o.support == -1:
            assert o.z0 == 0.0
        elif o.support >= 0:
            base = objs[o.support]
            assert base.z0 < o.z0 <= base.z1 + 1e-6  # on a shelf board or on top
            assert inside(o.footprint, base.footprint, margin=-1e-6)
    for a, b in itertools.combinations(room.objects, 2):
        if a.instance in ancestors(b) or b.instance in ancestors(a):
            continue
        if a.z1 <= b.z0 or b.z1 <= a.z0:
            continue
        assert not overlap(a.footprint, b.footprint), (a.cls, b.cls)


def test_some_classes_share_colour_and_texture_with_others() -> None:
    # boxes painted like the wall and table tops made of the floor's material: only geometry
    # (depth) tells them apart
    box_like_wall = table_like_floor = 0
    for seed in range(12):
        mesh = make_scene(seed).mesh
        mats = {
            cls: set(np.unique(mesh.tri_material[mesh.tri_class == cls]).tolist())
            for cls in (C.WALL, C.FLOOR, C.BOX, C.TABLE)
        }
        box_like_wall += bool(mats[C.WALL] & mats[C.BOX])
        table_like_floor += bool(mats[C.FLOOR] & mats[C.TABLE])
    assert box_like_wall >= 2
    assert table_like_floor >= 2


# -- sensor model ----------------------------------------------------------------------------


class _NoOcclusion:
    def occluded(self, origin, targets):
        return np.zeros(len(targets), bool)


def _plane(
    z: float, albedo: float = 0.5, cos: float = 1.0, ir: float = 0.0, shape=(120, 160)
) -> RenderOutput:
    h, w = shape
    return RenderOutput(
        depth_m=np.full(shape, z, np.float32),
        labels=np.zeros(shape, np.uint8),
        radiance=np.zeros((h, w, 3), np.float32),
        albedo=np.full(shape, albedo, np.float32),
        cos_incidence=np.full(shape, cos, np.float32),
        ir_dropout=np.full(shape, ir, np.float32),
        points=np.zeros((h, w, 3), np.float32),
        hit=np.ones(shape, bool),
    )


def _sim(out: RenderOutput, seed: int = 0) -> np.ndarray:
    h, w = out.depth_m.shape
    return simulate_depth(
        out, np.eye(4), intrinsics(w, h), _NoOcclusion(), np.random.default_rng(seed)
    )


def test_quantisation_step_grows_with_distance() -> None:
    model = StructuredLightModel()

    def step(z: float) -> float:
        levels = np.unique(quantise_depth(np.linspace(z * 0.97, z * 1.03, 5000), model))
        return float(np.median(np.diff(levels)))

    s1, s2, s4 = step(1.0), step(2.0), step(4.0)
    assert s1 == pytest.approx(1.0 / model.fb * model.subpixel, rel=0.1)  # z^2 / (f b) / 8
    assert s2 == pytest.approx(4 * s1, rel=0.15)
    assert s4 == pytest.approx(16 * s1, rel=0.15)
    # the simulated sensor shows the same: few, coarse levels far away, fine ones close by
    near, far = _sim(_plane(1.0)), _sim(_plane(4.0))
    assert np.median(np.diff(np.unique(far[far > 0]))) > 8 * np.median(
        np.diff(np.unique(near[near > 0]))
    )
    assert np.std(far[far > 0]) > 4 * np.std(near[near > 0])


def test_missing_depth_on_dark_glancing_glass_and_out_of_range() -> None:
    def measured(out: RenderOutput) -> float:
        return float(np.mean(_sim(out) > 0))

    assert measured(_plane(2.0, albedo=0.5)) > 0.95
    assert measured(_plane(2.0, albedo=0.01)) < 0.3  # black
    assert measured(_plane(2.0, cos=0.05)) < 0.2  # glancing
    assert measured(_plane(2.0, ir=0.85)) < 0.3  # glass
    assert measured(_plane(9.0)) == 0.0  # beyond the working range
    assert measured(_plane(0.2)) == 0.0  # too close


def test_holes_concentrate_at_depth_edges() -> None:
    rates = []
    for seed in (3, 4):
        seq = SynthSequence(seed, 20, 160, 120, FPS)
        for i in (0, 10, 19):
            f = seq.frame(i)
            z = f.depth_true_m
            pad = np.pad(z, 1, mode='edge')
            windows = np.stack(
                [
                    pad[1 + dy : 1 + dy + z.shape[0], 1 + dx : 1 + dx + z.shape[1]]
                    for dy in (-1, 0, 1)
                    for dx in (-1, 0, 1)
                ]
            )
            edge = (windows.max(0) - windows.min(0)) > 0.08 * z
            hole = f.depth_mm == 0
            rates.append((hole[edge].sum(), edge.sum(), hole[~edge].sum(), (~edge).sum()))
    r = np.array(rates, np.float64).sum(0)
    edge_rate, flat_rate = r[0] / r[1], r[2] / r[3]
    assert r[1] > 100
    assert edge_rate > 0.3
    assert edge_rate > 3 * flat_rate


# -- writers ---------------------------------------------------------------------------------


def test_splits_are_by_scene_or_contiguous_blocks() -> None:
    assert frames_per_scene(10, 3) == [4, 3, 3]
    assert [split_of(s, 0, 5, 10) for s in range(10)] == ['train'] * 8 + ['val', 'test']
    blocks = [split_of(0, i, 20, 1) for i in range(20)]
    assert blocks == ['train'] * 16 + ['val'] * 2 + ['test'] * 2
    assert [split_of(0, i, 3, 2) for i in range(3)] == ['train', 'val', 'test']


def test_recording_reads_back_with_rosbags(tmp_path) -> None:
    from rosbags.highlevel import AnyReader
    from rosbags.typesys import Stores, get_typestore

    from rgbd_seg_ros.core.image_codec import decode_image

    n = 4
    path = write_recording(tmp_path / 'bag', 11, n, width=W, height=H, fps=FPS)
    assert list(path.glob('*.mcap'))
    ref = SynthSequence(11, n, W, H, FPS)
    expected = [ref.frame(i) for i in range(n)]
    seen: dict[str, list] = {}
    with AnyReader([path], default_typestore=get_typestore(Stores.ROS2_JAZZY)) as reader:
        types = {c.topic: c.msgtype for c in reader.connections}
        assert types == {topic: msgtype for topic, (msgtype, _) in TOPICS.items()}
        for conn, t, raw in reader.messages():
            msg = reader.deserialize(raw, conn.msgtype)
            stamp = msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec
            assert t >= stamp
            seen.setdefault(conn.topic, []).append((stamp, msg))
    assert {k: len(v) for k, v in seen.items()} == {topic: n for topic in TOPICS}
    for topic, (_, encoding) in TOPICS.items():
        for k, (stamp, msg) in enumerate(seen[topic]):
            f = expected[k]
            assert stamp == f.stamp_ns
            assert msg.header.frame_id == 'camera_color_optical_frame'
            if encoding is None:  # camera_info matches the render
                assert (msg.width, msg.height) == (W, H)
                assert np.allclose(np.asarray(msg.k).reshape(3, 3), f.K)
                continue
            assert msg.encoding == encoding
            img = decode_image(
                msg.encoding, msg.height, msg.width, msg.step, msg.is_bigendian, msg.data
            )
            if encoding == 'mono8':  # decode_image gives RGB for mono8
                assert img.shape == (H, W, 3)
                img = img[..., 0]
            want = {'rgb8': f.rgb, '16UC1': f.depth_mm, 'mono8': f.labels}[encoding]
            assert img.dtype == want.dtype and np.array_equal(img, want)


def test_dataset_written_and_read_back(tmp_path) -> None:
    from rgbd_seg_ros.data.layout import DatasetReader

    root = tmp_path / 'ds'
    summary = write_dataset(root, 5, 6, scenes=3, width=W, height=H, fps=FPS)
    assert summary.frames_rendered == 6
    reader = DatasetReader(root)
    assert [c.name for c in reader.meta.classes] == [c.name for c in SYNTH_CLASSES]
    assert reader.meta.ignore_index == IGNORE_INDEX
    assert reader.meta.provenance['seed'] == 5
    records = reader.frames()
    assert len(records) == 6
    by_split = {s: {r.source for r in reader.frames(s)} for s in ('train', 'val', 'test')}
    assert by_split == {
        'train': {'synth:seed=5:scene=0'},
        'val': {'synth:seed=5:scene=1'},
        'test': {'synth:seed=5:scene=2'},
    }
    scene1 = SynthSequence(5, 2, W, H, FPS, scene=1)
    f = scene1.frame(1)
    rec = next(r for r in records if r.source.endswith('scene=1') and r.stamp_ns == f.stamp_ns)
    sample = reader.load(rec.frame_id)
    assert np.array_equal(sample.rgb, f.rgb)
    assert np.array_equal(sample.depth_mm, f.depth_mm)
    assert np.array_equal(sample.labels, f.labels)
    assert np.allclose(rec.K, f.K)
    # a second run resumes: nothing to render
    again = write_dataset(root, 5, 6, scenes=3, width=W, height=H, fps=FPS)
    assert again.frames_rendered == 0 and again.frames_skipped == 6


def test_cli_writes_dataset_and_recording(tmp_path, capsys) -> None:
    from rgbd_seg_ros.cli.main import main

    out = tmp_path / 'out'
    sheet = tmp_path / 'sheet.png'
    rc = main(
        [
            'synth',
            '--out',
            str(out),
            '--seed',
            '2',
            '--frames',
            '3',
            '--size',
            '80x60',
            '--format',
            'both',
            '--quiet',
            '--preview',
            str(sheet),
        ]
    )
    assert rc == 0
    import cv2

    assert cv2.imread(str(sheet)).shape == (3 * 60, 3 * 80, 3)
    assert (out / 'dataset.yaml').is_file() and (out / 'index.csv').is_file()
    assert len(list((out / 'rgb').glob('*.png'))) == 3
    assert list((out / 'recordings').glob('synth_2_scene000/*.mcap'))
    assert 'frames/s' in capsys.readouterr().out
    assert main(['synth', '--out', str(out), '--frames', '0']) == 2
