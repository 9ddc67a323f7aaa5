"""Training configuration: dataclasses read from YAML, overridable with dotted ``key=value`` pairs.

A recipe (``config/train/<name>.yaml``) is a mapping whose keys mirror :class:`TrainConfig`. A
recipe may name a ``base`` recipe whose values it overrides (deep merge). Command-line overrides
(``--set optim.lr=1e-4``, ``--set stages.0.steps=200``) apply to the merged mapping before it
is turned into dataclasses, so a typo fails with the list of valid keys. The resolved
configuration is written beside the training outputs (``config.yaml``) and embedded in every
checkpoint's provenance. Only these dataclasses reach the trainer; never an argparse namespace.
"""

from __future__ import annotations

import copy
import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from rgbd_seg_ros.core.atomic_files import atomic_write_bytes
from rgbd_seg_ros.errors import ConfigError
from rgbd_seg_ros.modes import (
    DEPTH_ENCODINGS,
    ENCODER_STREAMS,
    PRECISIONS,
    SPEC_RESOLUTIONS,
    DepthEncoding,
    Precision,
)


@dataclass
class ModelConfig:
    """Which backend to train and how to build and initialise it."""

    backend: str = 'ssma'
    options: dict[str, Any] = field(default_factory=dict)  # backend config dataclass overrides
    pretrained: str | None = None  # project checkpoint to start from (fine-tuning)
    pretrained_strict: bool = False  # False: skip keys whose shapes differ (e.g. a new classifier)
    # ImageNet weight files of the encoders by input stream, {rgb: path, depth: path}: local
    # files (torchvision ResNet, timm resnetv2, ERFNet's; .pth or .safetensors; nothing is
    # downloaded). Every stage that starts from scratch loads them into its backend's encoder
    # streams, all tensors or an error; a stream without a file starts from random weights.
    encoder_weights: dict[str, str | None] = field(default_factory=dict)
    # Module-name prefixes of encoder parameters (their own learning rate, freezing). Empty:
    # the backend's ``encoder_prefixes`` attribute, else parameters under ``encoder``.
    encoder_prefixes: list[str] = field(default_factory=list)


@dataclass
class DataConfig:
    """Dataset in the project layout and how samples become tensors."""

    root: str = ''
    train_split: str = 'train'
    val_split: str = 'val'
    depth_encoding: DepthEncoding = 'metric'  # the depth stream's input (core.depth)
    depth_params: dict[str, Any] = field(default_factory=dict)
    rgb_mean: list[float] = field(default_factory=lambda: [0.485, 0.456, 0.406])
    rgb_std: list[float] = field(default_factory=lambda: [0.229, 0.224, 0.225])
    # Network input size: {'policy': 'native'} or {'policy': 'fixed', 'height': H, 'width': W}.
    # With 'fixed', evaluation resizes inputs to H x W and logits back to the label size.
    resolution: dict[str, Any] = field(default_factory=lambda: {'policy': 'native'})
    class_weighting: str = 'none'  # none | median_frequency
    num_workers: int = 2
    max_frames: int | None = None  # use only the first N frames of each split (smoke runs)


@dataclass
class AugmentConfig:
    """Joint geometric augmentation of colour, depth and labels; photometric on colour only."""

    enabled: bool = True
    crop: list[int] | None = None  # [height, width] of training crops; None: the image size
    scale: list[float] = field(default_factory=lambda: [0.5, 2.0])  # uniform range
    scale_set: list[float] | None = None  # discrete choices instead of the range (NANet)
    rotation_deg: float = 0.0  # uniform in [-r, r]
    # shear factor magnitude range [lo, hi] (Valada et al.'s skew, 0.05-0.10): a random sign,
    # along x or y with equal chance; None: no shear
    skew: list[float] | None = None
    hflip: bool = True  # probability 0.5
    # Zooming in by s divides depth by s (the scene looks s times closer). Kong & Fowlkes do
    # this; the other papers only resize, which keeps jet colours and HHA values as measured.
    depth_follows_scale: bool = False
    brightness: float = 0.0  # additive shift, uniform in [-b, b] on the 0..255 scale
    contrast: list[float] | None = None  # multiplicative range around the mean, e.g. [0.5, 1.5]
    saturation: float = 0.0  # uniform factor in [1-s, 1+s]
    noise_std: float = 0.0  # Gaussian noise on the 0..255 scale
    # Gaussian vignette on colour: sigma range [lo, hi] in pixels of the output frame (Valada
    # et al.'s 210-300 at 768x384); the centre keeps its value. None: no vignette
    vignetting: list[float] | None = None


@dataclass
class LossConfig:
    """Cross-entropy with the ignore index, auxiliary heads and optional OHEM."""

    ignore_index: int | None = None  # None: the dataset's
    aux: bool = True  # use the backend's auxiliary outputs
    aux_weights: list[float] | None = None  # None: the backend's SegOutput.aux_weights
    aux_resize: str = 'labels'  # labels: nearest-resize labels to each aux map; logits: upsample
    ohem: bool = False
    ohem_thresh: float = 0.7  # keep pixels whose true-class probability is below this ...
    ohem_min_kept: int = 100000  # ... but at least this many (per batch)
    label_smoothing: float = 0.0
    # Depth supervision of a backend's own depth branch (depth_gating), per prediction step:
    # lambda_c (depth-bin cross-entropy) and lambda_r (log-depth regression) of Kong & Fowlkes'
    # Eq. 1. Either above 0 makes the dataset deliver metric depth and K with every sample.
    depth_bin_weight: float = 0.0
    depth_reg_weight: float = 0.0


@dataclass
class OptimConfig:
    """Optimiser and learning rates (the encoder may have its own)."""

    name: str = 'adam'  # sgd | adam | adamw
    lr: float = 1e-3
    encoder_lr: float | None = None  # None: lr
    momentum: float = 0.9
    nesterov: bool = False
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    weight_decay: float = 0.0
    no_decay_norm_bias: bool = True  # no weight decay on norm weights and biases
    grad_clip: float | None = None  # max global gradient norm


@dataclass
class ScheduleConfig:
    """Learning-rate schedule, per optimiser step."""

    name: str = 'poly'  # poly | cosine | constant
    power: float = 0.9
    warmup_steps: int = 0
    warmup_start: float = 0.1  # factor of the base lr at step 0 of the warm-up
    min_lr_ratio: float = 0.0  # floor, as a fraction of each group's base lr


@dataclass
class InitFrom:
    """Initialise (part of) a stage's model from an earlier stage or a checkpoint file."""

    stage: str | None = None  # a stage of this run (its last.safetensors)
    checkpoint: str | None = None  # or a project checkpoint file
    # {source prefix: destination prefix}; only keys under a source prefix are copied.
    # Empty: every key, names unchanged.
    map: dict[str, str] = field(default_factory=dict)
    strict: bool = False  # True: every destination key must be found with the same shape


@dataclass
class StageConfig:
    """One stage of a recipe (SSMA trains experts, then fusion, then the decoder alone)."""

    name: str = 'train'
    steps: int = 1000
    batch_size: int = 8
    backend: str | None = None  # None: model.backend
    backend_options: dict[str, Any] = field(default_factory=dict)  # merged over model.options
    optim: dict[str, Any] = field(default_factory=dict)  # overrides of the run's optim
    schedule: dict[str, Any] = field(default_factory=dict)  # overrides of the run's schedule
    loss: dict[str, Any] = field(default_factory=dict)  # overrides of the run's loss
    freeze: list[str] = field(default_factory=list)  # prefixes: no grad, BN in eval mode
    # prefixes whose BatchNorm layers keep their running statistics (eval mode) while their
    # parameters still train (Kong & Fowlkes' frozen backbone BN)
    frozen_bn: list[str] = field(default_factory=list)
    init_from: list[InitFrom] = field(default_factory=list)
    # Continue from the previous stage's weights when init_from is empty and the backend and
    # its options are the same.
    continue_previous: bool = True


@dataclass
class EvalConfig:
    """Validation during training and the final evaluation."""

    every_steps: int = 500  # 0: only at the end of each stage
    batch_size: int = 1
    max_frames: int | None = None  # validate on the first N frames only
    scales: list[float] = field(default_factory=lambda: [0.5, 0.75, 1.0, 1.25, 1.5, 1.75])
    flip: bool = True
    multiscale_at_end: bool = True  # also report MS+flip after the last stage


@dataclass
class TrainConfig:
    """Everything one training run needs."""

    recipe: str = ''
    seed: int = 0
    output_dir: str = 'runs/train'
    device: str = 'auto'  # auto | cpu | cuda | cuda:N
    precision: Precision = 'fp32'  # fp16/bf16: autocast on CUDA only
    channels_last: bool = True  # on CUDA only
    sync_bn: bool = True  # SyncBatchNorm under multi-GPU DDP (CUDA only; CPU ranks instead
    # take rank 0's BN statistics before every validation and checkpoint)
    checkpoint_every: int = 500  # steps between last.safetensors + training state
    log_every: int = 10
    progress_bar: bool = True
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    stages: list[StageConfig] = field(default_factory=lambda: [StageConfig()])
    eval: EvalConfig = field(default_factory=EvalConfig)

    def validate(self) -> None:
        """Reject inconsistent values with a message naming the key."""
        choices = {
            'precision': (self.precision, PRECISIONS),
            'data.depth_encoding': (self.data.depth_encoding, DEPTH_ENCODINGS),
            'data.resolution.policy': (
                (self.data.resolution or {'policy': 'native'}).get('policy'),
                SPEC_RESOLUTIONS,
            ),
            'optim.name': (self.optim.name, ('sgd', 'adam', 'adamw')),
            'schedule.name': (self.schedule.name, ('poly', 'cosine', 'constant')),
            'data.class_weighting': (self.data.class_weighting, ('none', 'median_frequency')),
            'loss.aux_resize': (self.loss.aux_resize, ('labels', 'logits')),
        }
        for key, (value, valid) in choices.items():
            if value not in valid:
                raise ConfigError(f'{key}={value!r}; valid: {", ".join(valid)}')
        if not self.stages:
            raise ConfigError('stages: at least one stage is required')
        names = [s.name for s in self.stages]
        if len(set(names)) != len(names):
            raise ConfigError(f'stages: names must be unique, got {names}')
        for i, stage in enumerate(self.stages):
            if stage.steps < 1 or stage.batch_size < 1:
                raise ConfigError(f'stages.{i}: steps and batch_size must be positive')
            loss = self.stage_loss(stage)
            if loss.depth_bin_weight < 0 or loss.depth_reg_weight < 0:
                raise ConfigError(f'stages.{i}: loss.depth_*_weight must be >= 0')
            for init in stage.init_from:
                if (init.stage is None) == (init.checkpoint is None):
                    raise ConfigError(
                        f'stages.{i}.init_from: give exactly one of stage, checkpoint'
                    )
                if init.stage is not None and init.stage not in names[:i]:
                    raise ConfigError(
                        f'stages.{i}.init_from: {init.stage!r} is not an earlier stage'
                    )
        for stream, path in self.model.encoder_weights.items():
            if stream not in ENCODER_STREAMS:
                raise ConfigError(
                    f'model.encoder_weights.{stream}: unknown stream; valid: '
                    f'{", ".join(ENCODER_STREAMS)}'
                )
            if path is not None and (not isinstance(path, str) or not path):
                raise ConfigError(f'model.encoder_weights.{stream}: expected a file path')
        if self.augment.crop is not None and len(self.augment.crop) != 2:
            raise ConfigError('augment.crop must be [height, width]')
        for key in ('skew', 'vignetting'):
            bounds = getattr(self.augment, key)
            if bounds is not None and (len(bounds) != 2 or not 0 <= bounds[0] <= bounds[1]):
                raise ConfigError(f'augment.{key} must be [low, high] with 0 <= low <= high')

    def stage_optim(self, stage: StageConfig) -> OptimConfig:
        return replace_from_dict(self.optim, stage.optim, 'optim')

    def stage_schedule(self, stage: StageConfig) -> ScheduleConfig:
        return replace_from_dict(self.schedule, stage.schedule, 'schedule')

    def stage_loss(self, stage: StageConfig) -> LossConfig:
        return replace_from_dict(self.loss, stage.loss, 'loss')

    def stage_backend(self, stage: StageConfig) -> tuple[str, dict[str, Any]]:
        options = dict(self.model.options)
        options.update(stage.backend_options)
        return stage.backend or self.model.backend, options


# --------------------------------------------------------------------------- dict <-> dataclass


def _strip_optional(tp: Any) -> tuple[Any, bool]:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


def _convert(tp: Any, value: Any, where: str) -> Any:
    tp, optional = _strip_optional(tp)
    if value is None:
        if optional or tp is Any:
            return None
        raise ConfigError(f'{where}: a value is required')
    origin = typing.get_origin(tp)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f'{where}: expected a mapping, got {value!r}')
        return from_dict(tp, value, where)
    if origin is list:
        if not isinstance(value, list | tuple):
            raise ConfigError(f'{where}: expected a list, got {value!r}')
        (item,) = typing.get_args(tp)
        return [_convert(item, v, f'{where}.{i}') for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f'{where}: expected a mapping, got {value!r}')
        return copy.deepcopy(value)
    if tp is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):  # YAML reads 1e-3 (no dot) as a string
        try:
            return float(value)
        except ValueError:
            pass
    if tp in (int, float, str, bool) and not (
        isinstance(value, tp) and not (tp is int and isinstance(value, bool))
    ):
        raise ConfigError(f'{where}: expected {tp.__name__}, got {value!r}')
    return value


def from_dict(cls: type, data: dict[str, Any], where: str = '') -> Any:
    """Build dataclass ``cls`` from a mapping; unknown keys are an error naming the valid ones."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(names))
    if unknown:
        prefix = f'{where}: ' if where else ''
        raise ConfigError(f'{prefix}unknown key(s) {unknown}; valid: {names}')
    kwargs = {k: _convert(hints[k], v, f'{where}.{k}' if where else k) for k, v in data.items()}
    return cls(**kwargs)


def to_dict(config: Any) -> dict[str, Any]:
    """Plain data (YAML/JSON-safe) form of a config dataclass."""
    return dataclasses.asdict(config)


def replace_from_dict(config: Any, overrides: dict[str, Any], where: str) -> Any:
    """A copy of dataclass ``config`` with ``overrides`` applied (validated like YAML)."""
    merged = to_dict(config)
    merged.update(overrides)
    return from_dict(type(config), merged, where)


# --------------------------------------------------------------------------- YAML and overrides


def _deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def recipe_dir() -> Path:
    """The installed ``config/train`` folder."""
    from rgbd_seg_ros.paths import config_path

    try:
        return config_path('train')
    except FileNotFoundError:
        return Path(__file__).resolve().parents[2] / 'config' / 'train'


def resolve_recipe_path(name_or_path: str | Path) -> Path:
    """A recipe file path, or the name of one in ``config/train`` (with or without .yaml)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    for candidate in (recipe_dir() / f'{name_or_path}.yaml', recipe_dir() / str(name_or_path)):
        if candidate.is_file():
            return candidate
    known = sorted(p.stem for p in recipe_dir().glob('*.yaml'))
    raise ConfigError(f'no recipe {str(name_or_path)!r}; give a YAML path or one of {known}')


def load_recipe_dict(name_or_path: str | Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Read a recipe mapping, following ``base:`` (relative to the file, or a recipe name)."""
    path = resolve_recipe_path(name_or_path).resolve()
    if path in _seen:
        raise ConfigError(f'{path}: recipe bases form a cycle')
    with open(path, encoding='utf-8') as stream:
        data = yaml.safe_load(stream) or {}
    if not isinstance(data, dict):
        raise ConfigError(f'{path}: expected a mapping')
    base = data.pop('base', None)
    data.setdefault('recipe', path.stem)
    if base:
        base_path = path.parent / base
        parent = load_recipe_dict(base_path if base_path.is_file() else base, (*_seen, path))
        parent.pop('recipe', None)
        data = _deep_merge(parent, data)
    return data


def apply_override(data: dict[str, Any], assignment: str) -> None:
    """Apply one ``dotted.key=value`` (value parsed as YAML) to ``data`` in place.

    Numeric path parts index lists (``stages.1.steps=10``).
    """
    if '=' not in assignment:
        raise ConfigError(f'override {assignment!r}: expected key=value')
    key, raw = assignment.split('=', 1)
    parts = key.strip().split('.')
    if not all(parts):
        raise ConfigError(f'override {assignment!r}: empty key')
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as err:
        raise ConfigError(f'override {assignment!r}: {err}') from err
    node: Any = data
    for i, part in enumerate(parts[:-1]):
        nxt = parts[i + 1]
        if isinstance(node, list):
            node = _list_item(node, part, assignment)
            continue
        if part not in node or node[part] is None:
            node[part] = [] if nxt.isdigit() else {}
        node = node[part]
    last = parts[-1]
    if isinstance(node, list):
        index = _list_index(node, last, assignment, allow_append=True)
        if index == len(node):
            node.append(value)
        else:
            node[index] = value
    else:
        node[last] = value


def _list_index(node: list, part: str, assignment: str, allow_append: bool = False) -> int:
    if not part.isdigit():
        raise ConfigError(f'override {assignment!r}: {part!r} indexes a list; use a number')
    index = int(part)
    limit = len(node) + (1 if allow_append else 0)
    if index >= limit:
        raise ConfigError(f'override {assignment!r}: index {index} out of range ({len(node)})')
    return index


def _list_item(node: list, part: str, assignment: str) -> Any:
    index = _list_index(node, part, assignment, allow_append=True)
    if index == len(node):
        node.append({})
    return node[index]


def load_config(
    recipe: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()
) -> TrainConfig:
    """Recipe (name or path; None: all defaults) plus ``key=value`` overrides -> TrainConfig."""
    data = load_recipe_dict(recipe) if recipe else {}
    for assignment in overrides:
        apply_override(data, assignment)
    config = from_dict(TrainConfig, data)
    config.validate()
    return config


def save_config(config: TrainConfig, path: str | Path) -> None:
    """Write the resolved configuration as YAML (atomically)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = yaml.safe_dump(to_dict(config), sort_keys=False)
    atomic_write_bytes(path, text.encode('utf-8'))


def read_config(path: str | Path) -> TrainConfig:
    """Read a resolved configuration written by :func:`save_config`."""
    with open(path, encoding='utf-8') as stream:
        data = yaml.safe_load(stream) or {}
    config = from_dict(TrainConfig, data)
    config.validate()
    return config
