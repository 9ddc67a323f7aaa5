"""``rgbd-seg train / eval / export`` end to end (in-process, with the test backend)."""

from __future__ import annotations

import json

import pytest
import train_fixtures as tf

from rgbd_seg_ros.cli import main as cli_main
from rgbd_seg_ros.cli.train_cmd import torchrun_command

OURS = ('train_cmd', 'eval_cmd', 'export_cmd')


def main(argv):
    """``rgbd-seg`` with only this suite's subcommands (other modules may be mid-change)."""
    saved = cli_main.SUBCOMMAND_MODULES
    cli_main.SUBCOMMAND_MODULES = OURS
    try:
        return cli_main.main(argv)
    finally:
        cli_main.SUBCOMMAND_MODULES = saved


def test_subcommands_registered():
    assert set(OURS) <= set(cli_main.SUBCOMMAND_MODULES)


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    base = tmp_path_factory.mktemp('cli')
    root = tf.write_dataset(base / 'ds', n_train=12, n_val=4)
    out = base / 'run'
    args = ['train', '--recipe', 'tiny_cpu', '--data', str(root), '--output-dir', str(out)]
    for item in tf.tiny_overrides(
        root, out, steps=6, **{'eval.multiscale_at_end': 'true', 'eval.scales': '[1.0, 1.25]'}
    ):
        if not item.startswith(('data.root=', 'output_dir=')):
            args += ['--set', item]
    assert main(args) == 0
    return root, out


def test_train_writes_run(trained, capsys):
    _, out = trained
    assert (out / 'train' / 'best.safetensors').is_file()
    assert (out / 'config.yaml').is_file()
    # resuming a finished run is a no-op that reports the same result
    before = (out / 'train' / 'best.safetensors').read_bytes()
    assert main(['train', '--resume', '--output-dir', str(out)]) == 0
    assert capsys.readouterr().out.strip().endswith('best.safetensors')
    assert (out / 'train' / 'best.safetensors').read_bytes() == before
    summary = json.loads((out / 'metrics.json').read_text())
    assert summary['msflip_scales'] == [1.0, 1.25] and 'val_msflip_miou' in summary


def test_eval_prints_table(trained, capsys, tmp_path):
    root, out = trained
    code = main(
        [
            'eval',
            str(out / 'train' / 'best.safetensors'),
            '--data',
            str(root),
            '--scales',
            '0.75,1.0',
            '--num-workers',
            '0',
            '--logits',
            '--json',
            str(tmp_path / 'm.json'),
        ]
    )
    assert code == 0
    captured = capsys.readouterr()
    text = captured.out
    assert 'single-scale' in text and 'MS+flip' in text and 'near_box' in text
    doc = json.loads((tmp_path / 'm.json').read_text(), parse_constant=_no_nan)
    assert 0.0 <= doc['single-scale']['miou'] <= 1.0 and doc['scales'] == [0.75, 1.0]
    # the node pipeline comes first and is the default; the logit figures say what they are
    assert text.splitlines()[0].split() == ['node', 'single-scale', 'MS+flip']
    assert 'logits upsampled bilinearly' in captured.err
    assert doc['pipelines']['node'].startswith('engine as in the node')


def _no_nan(token: str) -> None:
    raise AssertionError(f'not strict JSON: {token}')


def _eval(root, checkpoint, json_path, *extra) -> int:
    args = ['eval', str(checkpoint), '--data', str(root), '--json', str(json_path), *extra]
    return main(args)


def test_eval_defaults_to_the_node_pipeline(trained, capsys, tmp_path):
    from rgbd_seg_ros.data.layout import DatasetReader
    from rgbd_seg_ros.inference.engine import Engine
    from rgbd_seg_ros.training.pipeline_eval import evaluate_engine, labelled_records

    root, out = trained
    best = out / 'train' / 'best.safetensors'
    assert _eval(root, best, tmp_path / 'm.json') == 0
    captured = capsys.readouterr()
    assert captured.out.splitlines()[0].split() == ['node']
    assert 'MS+flip' not in captured.out
    assert 'mIoU over the classes present in the ground truth' in captured.err
    doc = json.loads((tmp_path / 'm.json').read_text(), parse_constant=_no_nan)
    assert set(doc) >= {'node', 'split', 'frames', 'class_ids', 'miou_over'}
    assert doc['class_ids'] == [0, 1, 2, 3] and doc['class_names'] == tf.CLASS_NAMES
    # the very function the trainer's gate calls
    reader = DatasetReader(root)
    expected = evaluate_engine(
        Engine.from_checkpoint(best, device='cpu'), reader, labelled_records(reader, 'val')
    )
    assert doc['node']['miou'] == expected.miou and doc['frames'] == 4


def test_eval_without_classes_or_labelled_pixels_fails(trained, capsys, tmp_path):
    import shutil

    import numpy as np

    from rgbd_seg_ros.data.layout import LABELS_DIR, DatasetMeta, encode_png

    root, out = trained
    best = out / 'train' / 'best.safetensors'
    no_classes = tmp_path / 'no_classes'
    shutil.copytree(root, no_classes)
    meta = DatasetMeta.load(no_classes / 'dataset.yaml')
    meta.classes = []
    meta.save(no_classes / 'dataset.yaml')
    assert _eval(no_classes, best, tmp_path / 'a.json') == 2
    assert 'lists no classes' in capsys.readouterr().err
    assert not (tmp_path / 'a.json').exists()

    unlabelled = tmp_path / 'unlabelled'
    shutil.copytree(root, unlabelled)
    for path in (unlabelled / LABELS_DIR).glob('*.png'):
        path.write_bytes(encode_png(np.full((48, 64), 255, np.uint8)))
    assert _eval(unlabelled, best, tmp_path / 'b.json') == 2
    assert 'no labelled pixel' in capsys.readouterr().err
    assert not (tmp_path / 'b.json').exists()


def test_export_writes_onnx_and_metadata(trained, tmp_path):
    _, out = trained
    onnx_path = tmp_path / 'm.onnx'
    code = main(
        [
            'export',
            str(out / 'train' / 'best.safetensors'),
            '-o',
            str(onnx_path),
            '--height',
            '48',
            '--width',
            '64',
        ]
    )
    assert code == 0 and onnx_path.stat().st_size > 1000
    meta = json.loads(onnx_path.with_suffix('.json').read_text())
    assert meta['backend'] == tf.TINY and meta['class_names'] == tf.CLASS_NAMES
    assert meta['onnx']['height'] == 48 and meta['input_spec']['depth_encoding'] == 'metric'


def test_bad_config_is_a_clean_error(capsys):
    assert main(['train', '--recipe', 'tiny_cpu', '--set', 'optim.nope=1']) == 2
    assert 'nope' in capsys.readouterr().err


def test_torchrun_equivalent():
    import argparse

    args = argparse.Namespace(
        recipe='ssma', overrides=['optim.lr=0.1'], data='/d', output_dir='/o', resume=True
    )
    cmd = torchrun_command(args, 4)
    assert cmd[1:5] == ['-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=4']
    assert cmd[5:7] == ['-m', 'rgbd_seg_ros.training.run']
    assert cmd[7:] == [
        '--recipe',
        'ssma',
        '--set',
        'optim.lr=0.1',
        '--data',
        '/d',
        '--output-dir',
        '/o',
        '--resume',
    ]


def test_bench_prints_images_per_second(capsys):
    code = main(
        [
            'train',
            '--bench',
            '--backends',
            tf.TINY,
            '--height',
            '48',
            '--width',
            '64',
            '--steps',
            '1',
            '--warmup',
            '1',
            '--device',
            'cpu',
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert 'images/s' in out and tf.TINY in out
