"""Which topics of a recording to convert: the given ones (checked) or picked by name (the
label topic, when asked for, by name and encoding: :mod:`.label_topics`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rgbd_seg_ros.data.convert.colour_streams import colour_pair
from rgbd_seg_ros.data.convert.label_topics import detect_label_topic
from rgbd_seg_ros.data.convert.options import ConvertOptions
from rgbd_seg_ros.data.recordings import IMAGE_TYPES, INFO_TYPE, Recording, format_topics
from rgbd_seg_ros.errors import DatasetError

_COLOUR_HINTS = ('color', 'colour', 'rgb')
_NOT_COLOUR = (
    'depth',
    'label',
    'semantic',
    'segment',
    'mask',
    'confidence',
    'infra',
    'ir/',
    'disparity',
    'overlay',
    'normal',
)
_DEPTH_HINTS = ('registered', 'aligned', 'align')
_TRANSPORT_SUFFIXES = ('/compressed', '/compresseddepth', '/theora', '/zstd')


@dataclass(frozen=True)
class TopicChoice:
    """The topics of one recording to convert. ``colour_compressed`` is the ``/compressed``
    copy of the raw ``colour`` topic when both were recorded: frames come from both, by stamp
    (:mod:`.colour_streams`)."""

    colour: str
    depth: str
    info: str
    label: str | None = None
    colour_compressed: str | None = None

    def describe(self, colour: str | None = None) -> str:
        """``rgb=...;depth=...;info=...[;labels=...]``: the choice, or with ``colour`` the
        topics of one frame (whose colour came from that topic)."""
        if colour is None:
            colour = self.colour + (f'+{self.colour_compressed}' if self.colour_compressed else '')
        parts = [f'rgb={colour}', f'depth={self.depth}', f'info={self.info}']
        if self.label:
            parts.append(f'labels={self.label}')
        return ';'.join(parts)

    def topics(self) -> list[str]:
        """The topics to read, each once."""
        names = [self.colour, self.depth, self.info]
        if self.colour_compressed:
            names.append(self.colour_compressed)
        if self.label:
            names.append(self.label)
        return list(dict.fromkeys(names))


def _pick(
    candidates: list[str], hints: Sequence[str], what: str, flag: str, rec: Recording
) -> str:
    if len(candidates) == 1:
        return candidates[0]
    preferred = [c for c in candidates if any(h in c.lower() for h in hints)]
    if len(preferred) == 1:
        return preferred[0]
    # image_transport republishes raw images under .../compressed(Depth): prefer the raw one.
    raw = [c for c in (preferred or candidates) if not c.lower().endswith(_TRANSPORT_SUFFIXES)]
    if len(raw) == 1:
        return raw[0]
    listing = '\n'.join(f'  {c}' for c in (preferred or candidates))
    if not candidates:
        raise DatasetError(
            f'{rec.path.name}: no {what} topic found; give it with {flag}. Available topics:\n'
            + format_topics(rec.topics.values())
        )
    raise DatasetError(
        f'{rec.path.name}: several {what} topics, choose one with {flag}:\n{listing}'
    )


def choose_topics(rec: Recording, options: ConvertOptions) -> TopicChoice:
    """The topics to convert: the given ones (checked), the rest picked when unambiguous."""
    topics = rec.topics
    images = [t.name for t in topics.values() if t.msgtype in IMAGE_TYPES]
    if options.colour_topic:
        colour = rec.require_topic(options.colour_topic, IMAGE_TYPES).name
    else:
        cands = [n for n in images if not any(x in n.lower() for x in _NOT_COLOUR)]
        colour = _pick(cands, _COLOUR_HINTS, 'colour image', '--rgb-topic', rec)
    colour, compressed = colour_pair(topics, colour)
    if options.depth_topic:
        depth = rec.require_topic(options.depth_topic, IMAGE_TYPES).name
    else:
        cands = [n for n in images if 'depth' in n.lower() and n != colour]
        depth = _pick(cands, _DEPTH_HINTS, 'depth image', '--depth-topic', rec)
    if options.info_topic:
        info = rec.require_topic(options.info_topic, (INFO_TYPE,)).name
    else:
        infos = [t.name for t in topics.values() if t.msgtype == INFO_TYPE]
        colour_ns = colour.rsplit('/', 1)[0]
        same_ns = [n for n in infos if n.rsplit('/', 1)[0] == colour_ns]
        info = _pick(same_ns or infos, (), 'camera_info', '--info-topic', rec)
    label = None
    if options.label_topic:
        label = rec.require_topic(options.label_topic, IMAGE_TYPES).name
    elif options.detect_label_topic:
        label = detect_label_topic(rec, {colour, depth, compressed or colour})
    return TopicChoice(colour, depth, info, label, compressed)
