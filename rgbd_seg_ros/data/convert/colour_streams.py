"""A camera's colour frames from its raw topic and image_transport's ``/compressed`` copy.

Drivers that alternate between the two, and recorders that keep the compressed stream when
bandwidth runs short, leave frames on ``<raw>/compressed`` that the raw topic lacks (a fifth
of the pairable frames, in one robot recording). When both topics were recorded the colour
stream is their union by header stamp: the raw message where both have one (no compression
loss), the compressed one where only it exists.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

from rgbd_seg_ros.data.recording_types import TopicInfo
from rgbd_seg_ros.data.recordings import IMAGE_TYPES, Recording
from rgbd_seg_ros.errors import DatasetError

RAW_IMAGE, COMPRESSED_IMAGE = IMAGE_TYPES
_SUFFIX = '/compressed'


def colour_pair(topics: dict[str, TopicInfo], colour: str) -> tuple[str, str | None]:
    """(raw topic, its compressed copy or None) for the colour topic ``colour``; naming either
    of the two gives both, when both were recorded with the expected types."""
    if colour.endswith(_SUFFIX):
        raw = topics.get(colour[: -len(_SUFFIX)])
        if raw is not None and raw.msgtype == RAW_IMAGE:
            return raw.name, colour
        return colour, None
    compressed = topics.get(colour + _SUFFIX)
    if compressed is not None and compressed.msgtype == COMPRESSED_IMAGE:
        return colour, compressed.name
    return colour, None


@dataclass(frozen=True)
class ColourSources:
    """How a recording's colour stamps divide between the raw and the compressed topic."""

    raw_topic: str
    compressed_topic: str
    raw: int  # messages on the raw topic (all used)
    compressed_only: int  # compressed messages whose stamp the raw topic lacks (used)
    both: int  # compressed messages whose stamp the raw topic has too (raw used)

    def to_dict(self) -> dict[str, str | int]:
        return asdict(self)

    def describe(self) -> str:
        return (
            f'{self.raw} on {self.raw_topic}, {self.compressed_only} only on '
            f'{self.compressed_topic} (used), {self.both} on both (raw used)'
        )


def merge_colour_stamps(
    raw: Sequence[int], compressed: Sequence[int], raw_topic: str, compressed_topic: str
) -> tuple[list[int], ColourSources]:
    """Indices of the ``compressed`` stamps to use (those ``raw`` lacks), and the counts."""
    have = set(raw)
    fill = [i for i, stamp in enumerate(compressed) if stamp not in have]
    sources = ColourSources(
        raw_topic, compressed_topic, len(raw), len(fill), len(compressed) - len(fill)
    )
    return fill, sources


def count_colour_sources(rec: Recording, raw_topic: str, compressed_topic: str) -> ColourSources:
    """The counts of :func:`merge_colour_stamps` for ``rec`` (reads both colour topics)."""
    stamps: dict[str, list[int]] = {raw_topic: [], compressed_topic: []}
    for msg in rec.messages(list(stamps)):
        try:
            stamps[msg.topic].append(rec.header_stamp(msg))
        except DatasetError:
            continue
    return merge_colour_stamps(
        stamps[raw_topic], stamps[compressed_topic], raw_topic, compressed_topic
    )[1]
