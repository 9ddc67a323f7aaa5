"""Finding a recording's label topic when none is given (``--label-topic auto``, or the trainer
node's empty ``label_topic``).

A label topic is a raw ``sensor_msgs/Image`` topic whose name says labels (``label``,
``semantic``, ``segment``, ``class``), whose first message has a class-id encoding (mono8,
8UC1, mono16, 16UC1), and which is not the depth or colour topic. One such topic is the
answer; several, or none, is an error that lists what was found, so the user can name one.

This package's own output, ``.../segmentation/labels``, is never picked: in a robot's
recording it holds the running model's predictions, not ground truth (name it explicitly to
train on it anyway).
"""

from __future__ import annotations

from collections.abc import Collection

from rgbd_seg_ros.core.messages import LABEL_ENCODINGS
from rgbd_seg_ros.data.convert.colour_streams import RAW_IMAGE
from rgbd_seg_ros.data.recordings import Recording
from rgbd_seg_ros.errors import DatasetError

LABEL_NAME_HINTS: tuple[str, ...] = ('label', 'semantic', 'segment', 'class')
NODE_OUTPUT = 'segmentation/labels'


def first_encoding(rec: Recording, topic: str) -> str | None:
    """The ``encoding`` of the first readable message of ``topic`` (None when unreadable)."""
    for msg in rec.messages([topic]):
        try:
            return str(rec.deserialize(msg).encoding)
        except Exception:  # rosbags raises many types for damaged data
            return None
    return None


def detect_label_topic(rec: Recording, taken: Collection[str]) -> str:
    """The one label topic of ``rec`` (``taken``: the colour and depth topics), or
    DatasetError naming the candidates (several) or the label-like topics seen (none)."""
    named = [
        t.name
        for t in rec.topics.values()
        if t.msgtype == RAW_IMAGE
        and t.name not in taken
        and 'depth' not in t.name.lower()
        and any(hint in t.name.lower() for hint in LABEL_NAME_HINTS)
    ]
    encodings = {name: first_encoding(rec, name) for name in named}
    own = [n for n in named if n.rstrip('/').endswith(NODE_OUTPUT)]
    found = [n for n in named if encodings[n] in LABEL_ENCODINGS and n not in own]
    if len(found) == 1:
        return found[0]
    listing = '\n'.join(f'  {n} ({encodings[n]})' for n in found)
    if found:
        raise DatasetError(
            f'{rec.path.name}: several label topics; choose one with --label-topic TOPIC '
            f'(trainer_node: label_topic):\n{listing}'
        )
    seen = [
        f'  {n} ({encodings[n]}): '
        + ("the segmentation node's own output" if n in own else 'not a class-id encoding')
        for n in named
    ]
    detail = (
        'label-like image topics seen:\n' + '\n'.join(seen)
        if seen
        else 'no image topic is named like labels (' + ', '.join(LABEL_NAME_HINTS) + ')'
    )
    raise DatasetError(
        f'{rec.path.name}: no label topic found (an Image topic named like labels with '
        f'encoding {", ".join(LABEL_ENCODINGS)}); {detail}\ngive one with --label-topic TOPIC '
        '(trainer_node: label_topic), or convert without labels'
    )
