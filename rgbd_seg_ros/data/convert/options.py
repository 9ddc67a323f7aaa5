"""What ``bag2dataset`` can be told; times in seconds."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Literal

from rgbd_seg_ros.data.convert.labelling import Labeller
from rgbd_seg_ros.data.dataset_lock import WRITERS_WAIT_S
from rgbd_seg_ros.data.layout import ClassInfo
from rgbd_seg_ros.errors import ConfigError

LabelSource = Literal['topic', 'pseudo', 'none']


@dataclass
class ConvertOptions:
    """Everything a conversion can be told.

    ``labeller`` pseudo-labels frames (see :class:`Labeller`); it needs ``classes`` (and
    ``ignore_index``) to name its ids, which whoever builds the labeller knows.
    """

    colour_topic: str | None = None
    depth_topic: str | None = None
    info_topic: str | None = None
    label_topic: str | None = None
    detect_label_topic: bool = False  # find the label topic (when label_topic is not given)
    slop_s: float = 0.02
    info_slop_s: float = 1.0
    min_gap_s: float = 0.0
    duplicate_threshold: float = 0.0
    max_frames: int | None = None
    ratios: tuple[float, float, float] = (0.8, 0.1, 0.1)
    block_s: float = 10.0
    guard_s: float = 0.0
    label_map: dict[int, int] | None = None
    classes: list[ClassInfo] | None = None
    ignore_index: int = 255
    labeller: Labeller | None = None
    confidence_threshold: float = 0.5
    jobs: int = 1
    chunk_frames: int = 300
    resume: bool = True
    fsync: bool = True
    progress: bool = True
    writers_wait_s: float = WRITERS_WAIT_S  # for the workers of a killed run to exit

    def check(self) -> None:
        if self.label_source == 'topic' and self.labeller is not None:
            raise ConfigError('choose one label source: --label-topic or --checkpoint')
        if self.labeller is not None and self.classes is None:
            raise ConfigError('pseudo-labelling needs the class list the labeller predicts')
        if self.slop_s <= 0 or self.info_slop_s <= 0:
            raise ConfigError('slop values must be positive')
        if self.jobs < 1 or self.chunk_frames < 1:
            raise ConfigError('--jobs and --chunk-frames must be at least 1')
        if not 0.0 <= self.confidence_threshold <= 1.0:
            raise ConfigError('--confidence-threshold must be in [0, 1]')
        if self.label_map and self.label_source != 'topic':
            raise ConfigError('--label-map only applies to --label-topic')

    @property
    def label_source(self) -> LabelSource:
        if self.label_topic or self.detect_label_topic:
            return 'topic'
        return 'pseudo' if self.labeller is not None else 'none'

    def provenance(self) -> dict[str, Any]:
        """The options as the dataset's provenance records them (JSON types only)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in ('classes', 'progress', 'writers_wait_s'):
                continue
            if f.name == 'label_map' and value is not None:
                value = {str(k): v for k, v in value.items()}
            elif f.name == 'labeller':
                value = None if value is None else repr(value)
            elif f.name == 'ratios':
                value = list(value)
            out[f.name] = value
        return out
