"""A stage's network: built from its backend and initialised the way the recipe says.

The weights start from, in this order of precedence: the stage's ``init_from`` entries (earlier
stages or checkpoint files, with key prefix maps), the previous stage's last weights (same
backend and options), or ``model.pretrained`` (first stage only). A stage that gets its weights
from none of these starts from scratch: its backend's encoder streams take the ImageNet files of
``model.encoder_weights`` (:func:`takes_encoder_weights`), the other layers keep their random
initialisation. Building reseeds the RNGs with the run's seed, so every rank and every resume
starts from identical weights.

:func:`check_encoder_weights_plan` matches every ImageNet file against the encoders of the
stages that will load it before the run starts (networks on the meta device, shapes only), so a
wrong file fails at once instead of after the stages before it have trained for days.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

from rgbd_seg_ros.backends.base import SegBackend
from rgbd_seg_ros.backends.checkpoint import load_checkpoint
from rgbd_seg_ros.backends.encoder_base import Encoder
from rgbd_seg_ros.backends.pretrained import (
    LoadReport,
    load_encoder_weights,
    match_weights,
    read_weight_file,
)
from rgbd_seg_ros.backends.registry import build_backend
from rgbd_seg_ros.errors import CheckpointError, ConfigError
from rgbd_seg_ros.modes import EncoderStream
from rgbd_seg_ros.training import checkpointing as ck
from rgbd_seg_ros.training.config import TrainConfig
from rgbd_seg_ros.training.context import StagePlan, plan_stage


def build_stage_model(
    config: TrainConfig, plan: StagePlan, num_classes: int, note: Callable[[str], None]
) -> nn.Module:
    """The stage's network on the CPU, initialised; ``note`` hears where weights came from."""
    return build_stage_network(config, plan, num_classes, note)[0]


def build_stage_network(
    config: TrainConfig, plan: StagePlan, num_classes: int, note: Callable[[str], None]
) -> tuple[nn.Module, dict[str, LoadReport]]:
    """:func:`build_stage_model`, with what each encoder stream loaded from its ImageNet file
    (the streams that took one), so the trainer can report initialised parameter counts."""
    ck.seed_all(config.seed)  # identical initial weights on every rank and on resume
    model = build_backend(plan.backend, num_classes=num_classes, **plan.options)
    for path, loaded, skipped in initialise(model, config, plan):
        note(f'{plan.name}: initialised from {path} ({loaded} tensors, {skipped} skipped)')
    reports: dict[str, LoadReport] = {}
    if takes_encoder_weights(config, plan.index):
        reports = load_stream_files(model, config.model.encoder_weights, note, plan.name)
    return model, reports


def weights_file(path: Path) -> dict[str, torch.Tensor]:
    """The state dict of a project checkpoint, whatever backend wrote it."""
    _, state = load_checkpoint(path, check_backend=False)
    return state


def takes_encoder_weights(config: TrainConfig, index: int) -> bool:
    """Whether stage ``index`` starts from scratch, i.e. :func:`initialise` gives it nothing:
    no ``init_from``, no previous stage it continues, no ``model.pretrained`` (first stage)."""
    stage = config.stages[index]
    if stage.init_from:
        return False
    if index > 0 and stage.continue_previous:
        prev = config.stages[index - 1]
        return config.stage_backend(prev) != config.stage_backend(stage)
    return not (index == 0 and config.model.pretrained)


def initialise(
    model: nn.Module, config: TrainConfig, plan: StagePlan
) -> list[tuple[str, int | str, int]]:
    """Load the stage's initial weights into ``model``; one (source, loaded, skipped) per
    source. ``ConfigError`` when an ``init_from`` entry matches nothing (or, strict, not all)."""
    stage, out_dir = plan.stage, plan.run_dir
    reports: list[tuple[str, int | str, int]] = []
    if stage.init_from:
        for init in stage.init_from:
            if init.checkpoint:
                path = Path(init.checkpoint)
            else:
                assert init.stage is not None  # TrainConfig.validate: one of stage, checkpoint
                path = out_dir / init.stage / ck.LAST_FILE
            state = ck.remap_state(weights_file(path), init.map)
            report = ck.load_partial(model, state, strict=False)
            if not report['loaded']:
                raise ConfigError(f'stage {stage.name}: init_from {path} matched no weights')
            if init.strict and report['skipped']:
                raise ConfigError(
                    f'stage {stage.name}: init_from {path}: keys without a '
                    f'match {report["skipped"][:5]}'
                )
            reports.append((str(path), len(report['loaded']), len(report['skipped'])))
    elif plan.index > 0 and stage.continue_previous:
        prev = config.stages[plan.index - 1]
        if config.stage_backend(prev) == config.stage_backend(stage):
            path = out_dir / prev.name / ck.LAST_FILE
            ck.load_partial(model, weights_file(path), strict=True)
            reports.append((str(path), 'all', 0))
    elif plan.index == 0 and config.model.pretrained:
        path = Path(config.model.pretrained)
        report = ck.load_partial(model, weights_file(path), strict=config.model.pretrained_strict)
        reports.append((str(path), len(report['loaded']), len(report['skipped'])))
    return reports


def load_stream_files(
    model: nn.Module, files: Mapping[str, str | None], note: Callable[[str], None], stage: str
) -> dict[str, LoadReport]:
    """Load the ImageNet file of each of ``model``'s encoder streams; ``note`` hears a line per
    stream saying what it starts from. Every tensor of an encoder comes from its file, or this
    raises (``backends.pretrained``). Returns the loader's report of each stream with a file."""
    streams = model.encoder_streams() if isinstance(model, SegBackend) else {}
    reports: dict[str, LoadReport] = {}
    for name, encoder in streams.items():
        path = files.get(name)
        count = sum(p.numel() for p in encoder.parameters())
        if not path:
            note(
                f'{stage}: {name} encoder: random initialisation ({count:,} parameters; '
                f'no model.encoder_weights.{name})'
            )
            continue
        reports[name] = load_encoder_weights(encoder, path)
        note(f'{stage}: {name} encoder initialised from {reports[name]}')
    return reports


def meta_encoder_streams(
    config: TrainConfig,
) -> Iterator[tuple[int, dict[EncoderStream, Encoder]]]:
    """(stage index, encoder streams) of each stage that starts from the ImageNet files, its
    network built on the meta device (shapes only, no memory; the encoders do not depend on the
    class count, 2 here)."""
    for index in range(len(config.stages)):
        if not takes_encoder_weights(config, index):
            continue
        plan = plan_stage(config, index, Path(config.output_dir))
        with torch.device('meta'):
            model = build_backend(plan.backend, num_classes=2, **plan.options)
        yield index, model.encoder_streams() if isinstance(model, SegBackend) else {}


def check_encoder_weights_plan(config: TrainConfig, finished: Collection[str] = ()) -> None:
    """Before any stage runs: every file of ``model.encoder_weights`` fits the encoder of each
    stage that will load it, and each one is used by some stage. ``CheckpointError`` (a file
    that does not fit, naming the stage and stream) or ``ConfigError`` (a file no stage uses).
    Stages in ``finished`` (a resumed run's done stages) will not load again: not read."""
    files = {name: path for name, path in config.model.encoder_weights.items() if path}
    if not files:
        return
    cache: dict[str, dict[str, Tensor]] = {}
    used: set[str] = set()
    for index, streams in meta_encoder_streams(config):
        stage = config.stages[index]
        for name, encoder in streams.items():
            path = files.get(name)
            if path is None:
                continue
            used.add(name)
            if stage.name in finished:
                continue
            if path not in cache:
                cache[path] = read_weight_file(path)
            found = match_weights(encoder, cache[path])
            if not found.ok:
                raise CheckpointError(
                    f'stage {stage.name}, model.encoder_weights.{name}: {path} does not fit '
                    f'its {getattr(encoder, "name", type(encoder).__name__)} encoder '
                    f'({found.layout} layout): {found.problems()}. This encoder loads '
                    f'{encoder.weight_files}'
                )
    unused = sorted(set(files) - used)
    if unused:
        raise ConfigError(
            f'model.encoder_weights: no stage starts a {", ".join(unused)} encoder from scratch, '
            'so the file would never be read (stages with init_from, model.pretrained or '
            "continuing the previous stage keep their weights; a backend's encoder_streams() "
            'names the streams it has)'
        )
