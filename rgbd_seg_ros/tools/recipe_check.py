"""A few CPU training steps of each paper recipe, from ImageNet files and data made up here.

The paper recipes of ``config/train/`` take ImageNet weights per encoder stream, freeze experts
in their fine-tune stages and chain stages through ``init_from``; a unit test checks each piece,
but only a run of the recipe itself shows that the pieces fit together. For each recipe this
writes synthetic ImageNet files in the publishers' layouts (``tools.synthetic_weights``) for the
streams its stages load, renders a small synthetic dataset (``data.synth``), runs the real
trainer on the recipe with CPU-sized overrides (listed in the output, every one of them) and
prints, per stage, the parameters it trains, holds frozen and took from the files (the
trainer's ``stage_start`` events, whose numbers come from the loader's reports) and the loss of
every step with its terms.

    python -m rgbd_seg_ros.tools.recipe_check [--recipes ssma nanet] [--steps 2] [--json OUT]

The overrides keep each recipe's encoders (so each file layout is exercised at its real size)
and stage structure; they shrink the steps, batch, input size and the width of heads that have
a width option, and turn validation down to one frame at the end of each stage.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from rgbd_seg_ros.backends.base import SegBackend
from rgbd_seg_ros.backends.pretrained import match_weights, read_weight_file
from rgbd_seg_ros.data.synth.writers import write_dataset
from rgbd_seg_ros.errors import RgbdSegError
from rgbd_seg_ros.tools import synthetic_weights as sw
from rgbd_seg_ros.training.config import TrainConfig, load_config
from rgbd_seg_ros.training.context import plan_stage
from rgbd_seg_ros.training.model_init import (
    build_stage_model,
    meta_encoder_streams,
    takes_encoder_weights,
)
from rgbd_seg_ros.training.trainer import run_training

PAPER_RECIPES = ('ssma', 'adapnetpp', 'rfbnet', 'rfbnet_erfnet', 'nanet', 'depth_gating', 'ann')

# Frames of the synthetic dataset and the network input the overrides set.
FRAME_HW = (120, 160)
INPUT_HW = (64, 96)

# Every recipe: CPU, fp32 (bf16 autocast is CUDA-only anyway), no loader workers, one log row
# per step, no intermediate checkpoints, validation on one frame at the end of each stage.
COMMON_OVERRIDES: dict[str, Any] = {
    'device': 'cpu',
    'precision': 'fp32',
    'progress_bar': False,
    'log_every': 1,
    'checkpoint_every': 0,
    'data.num_workers': 0,
    'eval.every_steps': 0,
    'eval.max_frames': 1,
    'eval.batch_size': 1,
    'eval.multiscale_at_end': False,
}

# Narrower heads where the backend has a width option (the encoders stay the recipe's).
_SLIM_ADAPNET = {
    'easpp_channels': 32,
    'easpp_bottleneck': 16,
    'decoder_channels': 32,
    'skip_channels': 8,
}
HEAD_OVERRIDES: dict[str, dict[str, Any]] = {
    'ssma': _SLIM_ADAPNET,
    'adapnetpp': _SLIM_ADAPNET,
    'rfbnet': _SLIM_ADAPNET,
    'rfbnet_erfnet': {},
    'nanet': {'aspp_channels': 32, 'low_channels': 16, 'aux_channels': 32},
    'depth_gating': {'width': 64, 'depth_head_width': 32},
    'ann': {'context_channels': 32, 'key_channels': 16, 'value_channels': 16, 'aux_channels': 32},
}


@dataclass
class StepLoss:
    step: int
    loss: float
    terms: dict[str, float]  # the criterion's parts (loss_main, loss_aux0, loss_depth_bins0...)


@dataclass
class StageCheck:
    name: str
    parameters: int
    trained: int
    frozen: int
    initialised: dict[str, int]  # stream -> parameters replaced from its file (loader's report)
    layouts: dict[str, str]  # stream -> the layout the loader recognised
    freeze: list[str]
    frozen_bn: list[str]
    # stream -> parameters whose values equal the file's after the stage's initialisation,
    # counted here on a network built the way the trainer builds it
    equal_to_file: dict[str, int] = field(default_factory=dict)
    steps: list[StepLoss] = field(default_factory=list)
    val_miou: float | None = None


@dataclass
class RecipeCheck:
    recipe: str
    overrides: list[str]
    weight_files: dict[str, str]  # stream -> file name (layout of its publisher)
    stages: list[StageCheck] = field(default_factory=list)
    seconds: float = 0.0
    error: str | None = None

    def problems(self) -> list[str]:
        """What contradicts the report's invariants (empty when it holds)."""
        out = [f'run failed: {self.error}'] if self.error else []
        for s in self.stages:
            if s.trained + s.frozen != s.parameters:
                out.append(f'{s.name}: trained + frozen != parameters')
            if sum(s.initialised.values()) > s.parameters:
                out.append(f'{s.name}: more parameters initialised than the network has')
            if s.equal_to_file != s.initialised:
                out.append(
                    f'{s.name}: the loader reports {s.initialised} parameters initialised, '
                    f'{s.equal_to_file} equal the files'
                )
            if not s.steps or not all(math.isfinite(x.loss) for x in s.steps):
                out.append(f'{s.name}: a missing or non-finite loss')
        loaded = {k for s in self.stages for k, v in s.initialised.items() if v > 0}
        if set(self.weight_files) - loaded:
            out.append(f'files no stage loaded: {sorted(set(self.weight_files) - loaded)}')
        return out


def stream_encoders(config: TrainConfig) -> dict[str, str]:
    """The encoder of each stream some stage starts from ImageNet (the streams the recipe's
    ``model.encoder_weights`` names), built on the meta device: the files to write."""
    out: dict[str, str] = {}
    for _index, streams in meta_encoder_streams(config):
        for stream, encoder in streams.items():
            if stream in config.model.encoder_weights and stream not in out:
                out[stream] = getattr(encoder, 'name', '') or type(encoder).__name__.lower()
    return {k: 'erfnet' if v == 'erfnetencoder' else v for k, v in out.items()}


def count_equal_to_files(config: TrainConfig, files: dict[str, Path]) -> dict[str, dict[str, int]]:
    """Per stage that starts from the files, per stream: how many encoder parameters equal the
    file's tensors (after the key mapping and first-convolution adaptation of the layout) once
    the stage's network is built and initialised by the trainer's own function, independently
    of what the loader reports. The encoders do not depend on the class count (2 here)."""
    states = {stream: read_weight_file(path) for stream, path in files.items()}
    out: dict[str, dict[str, int]] = {}
    for index, stage in enumerate(config.stages):
        if not takes_encoder_weights(config, index):
            continue
        plan = plan_stage(config, index, Path(config.output_dir))
        model = build_stage_model(config, plan, 2, lambda _: None)
        streams = model.encoder_streams() if isinstance(model, SegBackend) else {}
        counts: dict[str, int] = {}
        for stream, encoder in streams.items():
            if stream not in states:
                continue
            want = match_weights(encoder, states[stream]).loadable
            counts[stream] = sum(
                p.numel()
                for key, p in encoder.named_parameters()
                if key in want and torch.equal(p.detach(), want[key].to(p.dtype))
            )
        out[stage.name] = counts
        del model
    return out


def write_weight_files(encoders: dict[str, str], folder: Path) -> dict[str, Path]:
    """One synthetic ImageNet file per stream (seeded by stream, so two streams of the same
    encoder get different values and a mix-up would show)."""
    folder.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}
    for seed, (stream, encoder) in enumerate(sorted(encoders.items()), 1):
        state, name, fmt = sw.imagenet_file(encoder, seed)
        files[stream] = sw.write(state, folder / f'{stream}-{name}', fmt)
    return files


def recipe_overrides(recipe: str, data_root: Path, out_dir: Path, steps: int) -> list[str]:
    """The CPU-sized overrides of ``recipe`` (``key=value``, values as YAML)."""
    base = load_config(recipe)
    values: dict[str, Any] = dict(COMMON_OVERRIDES)
    values['data.root'] = str(data_root)
    values['output_dir'] = str(out_dir)
    if (base.data.resolution or {}).get('policy') == 'fixed':
        height, width = INPUT_HW
        values['data.resolution'] = {'policy': 'fixed', 'height': height, 'width': width}
    if base.augment.crop:
        values['augment.crop'] = list(INPUT_HW)
    for key, value in HEAD_OVERRIDES.get(recipe, {}).items():
        values[f'model.options.{key}'] = value
    for i in range(len(base.stages)):
        values[f'stages.{i}.steps'] = steps
        values[f'stages.{i}.batch_size'] = 2
    return [f'{k}={json.dumps(v)}' for k, v in values.items()]


def check_recipe(recipe: str, data_root: Path, work: Path, steps: int) -> RecipeCheck:
    """Run ``recipe`` for ``steps`` steps per stage in ``work``; failures are reported."""
    overrides = recipe_overrides(recipe, data_root, work / 'run', steps)
    result = RecipeCheck(recipe, overrides, {})
    start = time.perf_counter()
    by_stage: dict[str, StageCheck] = {}

    def progress(info: dict[str, Any]) -> None:
        if info.get('event') == 'stage_start':
            loaded = info['encoder_weights']
            stage = StageCheck(
                name=info['stage'],
                parameters=info['parameters'],
                trained=info['trained_parameters'],
                frozen=info['frozen_parameters'],
                initialised={k: v['parameters'] for k, v in loaded.items()},
                layouts={k: v['layout'] for k, v in loaded.items()},
                freeze=info['freeze'],
                frozen_bn=info['frozen_bn'],
            )
            by_stage[stage.name] = stage
            result.stages.append(stage)
        elif info.get('event') == 'step' and 'loss' in info:
            stage = by_stage[info['stage']]
            terms = {k: float(v) for k, v in info.items() if k.startswith('loss_')}
            stage.steps.append(StepLoss(info['step'], float(info['loss']), terms))
            if info.get('val_miou') is not None:
                stage.val_miou = float(info['val_miou'])

    try:
        config = load_config(recipe, overrides)
        files = write_weight_files(stream_encoders(config), work / 'imagenet')
        for stream, path in files.items():
            config.model.encoder_weights[stream] = str(path)
            result.overrides.append(f'model.encoder_weights.{stream}={path.name}')
        result.weight_files = {k: v.name for k, v in files.items()}
        equal = count_equal_to_files(config, files)
        run_training(config, progress=progress)
        for stage in result.stages:
            stage.equal_to_file = equal.get(stage.name, {})
    except (RgbdSegError, RuntimeError, ValueError) as err:
        result.error = f'{type(err).__name__}: {err}'
    result.seconds = time.perf_counter() - start
    return result


def write_synthetic_dataset(root: Path, frames: int = 8) -> Path:
    """A small rendered room (one scene: train, val and test blocks) at ``FRAME_HW``."""
    write_dataset(root, seed=0, num_frames=frames, height=FRAME_HW[0], width=FRAME_HW[1])
    return root


def _loss_text(step: StepLoss) -> str:
    terms = ', '.join(f'{k.removeprefix("loss_")} {v:.4f}' for k, v in step.terms.items())
    return f'{step.step}: {step.loss:.4f}' + (f' ({terms})' if terms else '')


def _initialised_text(stage: StageCheck) -> str:
    if not stage.initialised:
        return '-'
    return ', '.join(
        f'{k} {v:,} ({stage.layouts[k]})' for k, v in sorted(stage.initialised.items())
    )


def _equal_text(stage: StageCheck) -> str:
    return ', '.join(f'{k} {v:,}' for k, v in sorted(stage.equal_to_file.items())) or '-'


def _frozen_text(stage: StageCheck) -> str:
    text = f'{stage.frozen:,}'
    if stage.freeze:
        text += f' (freeze {", ".join(stage.freeze)})'
    if stage.frozen_bn:
        text += f' (BN statistics fixed: {", ".join(stage.frozen_bn)})'
    return text


def format_report(results: Sequence[RecipeCheck], common: Sequence[str]) -> str:
    """Markdown: the common overrides, then per recipe its own overrides and a stage table."""
    lines = [
        'Every recipe: ' + ' '.join(f'`{o}`' for o in common),
        f'Synthetic dataset: data.synth, one room, {FRAME_HW[0]}x{FRAME_HW[1]} frames.',
        '',
    ]
    for r in results:
        own = [o for o in r.overrides if o not in common and not o.startswith(_PATH_KEYS)]
        lines.append(f'### {r.recipe}: {len(r.stages)} stage(s), {r.seconds:.1f} s')
        lines.append('overrides: ' + ' '.join(f'`{o}`' for o in own))
        lines.append('')
        lines.append(
            '| stage | parameters | trained | frozen | initialised from the files (loader) '
            '| equal to the files after init | loss per step (terms) | val mIoU % |'
        )
        lines.append('|---|---:|---:|---|---|---|---|---:|')
        for s in r.stages:
            miou = '' if s.val_miou is None else f'{100 * s.val_miou:.2f}'
            lines.append(
                f'| {s.name} | {s.parameters:,} | {s.trained:,} | {_frozen_text(s)} | '
                f'{_initialised_text(s)} | {_equal_text(s)} | '
                f'{"; ".join(_loss_text(x) for x in s.steps)} | {miou} |'
            )
        for problem in r.problems():
            lines.append(f'**FAILED**: {problem}')
        lines.append('')
    return '\n'.join(lines)


_PATH_KEYS = ('data.root=', 'output_dir=')


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog='python -m rgbd_seg_ros.tools.recipe_check', description=__doc__.split('\n')[0]
    )
    parser.add_argument('--recipes', nargs='+', default=list(PAPER_RECIPES), metavar='NAME')
    parser.add_argument('--steps', type=int, default=2, help='steps per stage (default 2)')
    parser.add_argument('--threads', type=int, default=1, help='torch CPU threads (default 1)')
    parser.add_argument('--json', type=Path, default=None, help='also write the results here')
    args = parser.parse_args(argv)
    if args.steps < 1:
        parser.error('--steps must be at least 1')
    common = [f'{k}={json.dumps(v)}' for k, v in COMMON_OVERRIDES.items()]
    results = []
    total = time.perf_counter()
    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, args.threads))
    try:
        with tempfile.TemporaryDirectory(prefix='recipe_check_') as tmp:
            data = write_synthetic_dataset(Path(tmp) / 'data')
            for recipe in args.recipes:
                print(f'[recipe_check] {recipe} ...', file=sys.stderr, flush=True)
                results.append(check_recipe(recipe, data, Path(tmp) / recipe, args.steps))
    finally:
        torch.set_num_threads(threads)  # a caller in the same process keeps its setting
    report = format_report(results, common)
    seconds = time.perf_counter() - total
    print(report)
    print(f'{len(results)} recipe(s) in {seconds:.1f} s, {args.threads} torch thread(s)')
    if args.json:
        payload = {'seconds': seconds, 'recipes': [asdict(r) for r in results]}
        args.json.write_text(json.dumps(payload, indent=2) + '\n')
    return 1 if any(r.problems() for r in results) else 0


if __name__ == '__main__':
    sys.exit(main())
