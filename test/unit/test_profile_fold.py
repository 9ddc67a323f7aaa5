"""Folding py-spy's raw samples into the node's stages (tools/profile_fold.py)."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from rgbd_seg_ros.inference.engine import Engine
from rgbd_seg_ros.tools import profile_fold
from rgbd_seg_ros.tools.node_profile import engine_output_lines

ROOT = Path(__file__).resolve().parents[2]
WORKER = (
    'thread (7): segment_worker;0x7f (libc.so.6);thread_run (libpython3.11.so.1.0);'
    '_loop (rgbd_seg_ros/ros/segment_worker.py:140);'
    'process (rgbd_seg_ros/ros/segment_worker.py:160)'
)


def _line(stack: str, count: int) -> str:
    return f'{stack} {count}'


def test_raw_lines_parse_into_threads_frames_and_counts():
    lines = [
        _line(WORKER + ';_forward (rgbd_seg_ros/inference/engine.py:300);0x7f12 (libc.so.6)', 5),
        'py-spy> not a sample line',
    ]
    (sample,) = profile_fold.parse_raw(lines)
    assert (sample.tid, sample.thread, sample.count) == (7, 'segment_worker', 5)
    assert sample.frames[-2] == profile_fold.Frame(
        '_forward', 'rgbd_seg_ros/inference/engine.py:300'
    )
    assert sample.frames[-2].is_python and sample.frames[-2].line == 300
    assert not sample.frames[-1].is_python


@pytest.mark.parametrize(
    ('tail', 'state'),
    [
        ('', 'running'),
        (';torch::autograd::THPVariable_conv2d (libtorch_python.so)', 'running'),
        (';pthread_cond_timedwait (libc.so.6);0x7f (libc.so.6)', 'gil'),
        (
            ';torch::autograd::THPVariable_conv2d (libtorch_python.so);'
            'pybind11::gil_scoped_release::~gil_scoped_release (libtorch_python.so);'
            'pthread_cond_timedwait (libc.so.6)',
            'gil',
        ),
        (
            ';lock_PyThread_acquire_lock (libpython3.11.so.1.0);'
            'PyThread_acquire_lock_timed (libpython3.11.so.1.0);0x7f (libc.so.6)',
            'blocked',
        ),
        (
            ';rcl_wait (librcl.so);eprosima::fastdds::dds::detail::WaitSetImpl::wait '
            '(libfastrtps.so.2.14);pthread_cond_timedwait (libc.so.6)',
            'blocked',
        ),
    ],
)
def test_gil_waits_are_told_from_blocking_and_running(tail, state):
    (sample,) = profile_fold.parse_raw(
        [_line(WORKER + ';_forward (rgbd_seg_ros/inference/engine.py:300)' + tail, 1)]
    )
    assert profile_fold.state_of(sample.frames) == state


def test_output_work_is_split_by_the_engines_emit_calls():
    source = [
        'def _outputs(self):\n',
        '    reduced = ReducedLogits(logits)\n',
        "    emit('labels', host)\n",
        '    conf = reduced.confidence()\n',
        "    emit('confidence', conf)\n",
        '    cloud = self._cloud()\n',
    ]
    by_line = profile_fold.output_lines(source, 100)
    assert [by_line[n] for n in range(100, 106)] == [
        'labels',
        'labels',
        'labels',
        'confidence',
        'confidence',
        'points',
    ]
    outputs = '_outputs (rgbd_seg_ros/inference/engine.py:{})'
    publish = 'publish (rgbd_seg_ros/ros/segment_worker.py:220);image_bytes (x/serialized.py:50)'
    cases = {
        outputs.format(101): 'post-process: labels',
        outputs.format(102) + ';' + publish: 'serialise + publish: labels',
        outputs.format(104) + ';' + publish: 'serialise + publish: confidence',
        outputs.format(105) + ';write_classes (rgbd_seg_ros/inference/cloud_job.py:90)': (
            'post-process: points'
        ),
        # x y z on the side thread during the forward: the cloud's, not the forward's
        '_inference_mode_call (rgbd_seg_ros/inference/side_thread.py:90);'
        '_start_cloud (rgbd_seg_ros/inference/engine.py:560);'
        'write_xyz (rgbd_seg_ros/inference/cloud_job.py:99)': 'post-process: points',
        outputs.format(103) + ';softmax_max (rgbd_seg_ros/inference/postprocess.py:99)': (
            'post-process: confidence'
        ),
        # the engine's side thread: no _outputs frame, the task's own function
        '_worker (/usr/lib/python3.11/concurrent/futures/thread.py:83);'
        '_inference_mode_call (rgbd_seg_ros/inference/side_thread.py:90);'
        'softmax_max (rgbd_seg_ros/inference/postprocess.py:99)': 'post-process: confidence',
        '_inference_mode_call (rgbd_seg_ros/inference/side_thread.py:90);'
        'finish (rgbd_seg_ros/inference/cloud_job.py:120)': 'post-process: points',
        '_upload (rgbd_seg_ros/inference/engine.py:250)': (
            'pre-processing (upload, normalise, resize)'
        ),
        'deserialize_triple (rgbd_seg_ros/ros/frame_input.py:40)': (
            'deserialise + decode (worker)'
        ),
        'record_frame (rgbd_seg_ros/core/node_metrics.py:80)': 'worker: other',
    }
    for tail, stage in cases.items():
        (sample,) = profile_fold.parse_raw([_line(WORKER + ';' + tail, 1)])
        assert profile_fold.stage_of(sample.frames, by_line) == stage, tail


def test_the_real_engine_emits_every_output_the_fold_names():
    by_line = engine_output_lines()
    assert set(by_line.values()) == {'labels', 'confidence', 'color', 'overlay', 'points'}
    for method in (Engine._outputs, Engine._display):
        lines, first = inspect.getsourcelines(method)
        assert set(range(first, first + len(lines))) <= set(by_line)
    lines, first = inspect.getsourcelines(Engine._display)
    display = {by_line[n] for n in range(first, first + len(lines))}
    assert display == {'color', 'overlay'}


def test_fold_rows_are_ms_per_output_frame_by_state():
    fold = profile_fold.Fold(rate_hz=100.0)
    forward = WORKER + ';_forward (rgbd_seg_ros/inference/engine.py:300)'
    samples = profile_fold.parse_raw(
        [_line(forward, 30), _line(forward + ';pthread_cond_timedwait (libc.so.6)', 10)]
    )
    fold.add('node', samples, {})
    (row,) = fold.rows(frames_out=2)
    assert row['stage'] == 'forward' and row['thread'] == 'segment_worker'
    assert row['running_ms_per_frame'] == pytest.approx(150.0)  # 30 samples x 10 ms / 2 frames
    assert row['gil_wait_ms_per_frame'] == pytest.approx(50.0)


def test_target_table_gives_median_spread_and_whether_each_target_is_met():
    from rgbd_seg_ros.tools.node_targets import table

    def bench(rate, labels, points):
        return {
            'output_rate_hz': rate,
            'latency_ms': {'labels': {'p50': labels}, 'points': {'p50': points}},
            'load_average_around': (1.0, 1.5),
        }

    runs = {'default': [bench(16.0, 40.0, 70.0), bench(14.0, 50.0, 50.0), bench(20.0, 44.0, 55.0)]}
    text, rows = table(runs)
    by_name = {row['target']: row for row in rows}
    assert set(by_name) == {'outputs per second', 'labels latency p50', 'cloud latency p50'}
    assert by_name['outputs per second']['median'] == 16.0
    assert by_name['outputs per second']['spread'] == pytest.approx(6.0 / 16.0)
    assert by_name['outputs per second']['met']
    assert by_name['labels latency p50']['met']  # median 44 <= 45
    assert by_name['cloud latency p50']['met']  # median 55 <= 60
    runs['default'][2] = bench(20.0, 60.0, 75.0)
    _text, rows = table(runs)
    assert not {row['target']: row for row in rows}['cloud latency p50']['met']
    assert 'load average around the default runs: 1.00-1.50' in text


def test_target_table_shows_the_speed_probe_and_results_carry_no_local_paths(tmp_path):
    from rgbd_seg_ros.tools.node_targets import _portable, speed_probe, table

    run = {'output_rate_hz': 9.0, 'latency_ms': {}, 'load_average_around': (1.0, 1.2)}
    text, _rows = table({'default': [{**run, 'speed_probe_ms_around': (36.5, 41.25)}]})
    assert 'speed probe (ms, lower is faster) around the default runs: 36.5-41.2' in text
    assert 0.0 < speed_probe(frames=1) < 60_000.0
    inside = Path.cwd() / 'models' / 'default.safetensors'
    assert _portable(str(inside)) == str(Path('models') / 'default.safetensors')
    assert _portable(str(tmp_path / 'elsewhere' / 'm.safetensors')) == 'm.safetensors'
