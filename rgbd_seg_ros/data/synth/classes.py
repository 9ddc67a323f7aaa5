"""The synthetic scenes' class list: structure (floor, wall, ceiling), openings and furniture."""

from __future__ import annotations

from rgbd_seg_ros.data.layout import ClassInfo

FLOOR, WALL, CEILING, DOOR, WINDOW, TABLE, CHAIR, SHELF, CABINET, SOFA, BOX, BALL, COLUMN, LAMP = (
    range(14)
)

#: Label value of pixels where the ray hit nothing (cannot happen inside a closed room).
IGNORE_INDEX = 255

SYNTH_CLASSES: list[ClassInfo] = [
    ClassInfo(FLOOR, 'floor', (128, 64, 128)),
    ClassInfo(WALL, 'wall', (174, 199, 232)),
    ClassInfo(CEILING, 'ceiling', (112, 128, 144)),
    ClassInfo(DOOR, 'door', (214, 39, 40)),
    ClassInfo(WINDOW, 'window', (197, 176, 213)),
    ClassInfo(TABLE, 'table', (255, 127, 14)),
    ClassInfo(CHAIR, 'chair', (44, 160, 44)),
    ClassInfo(SHELF, 'shelf', (148, 103, 189)),
    ClassInfo(CABINET, 'cabinet', (140, 86, 75)),
    ClassInfo(SOFA, 'sofa', (227, 119, 194)),
    ClassInfo(BOX, 'box', (188, 189, 34)),
    ClassInfo(BALL, 'ball', (23, 190, 207)),
    ClassInfo(COLUMN, 'column', (255, 187, 120)),
    ClassInfo(LAMP, 'lamp', (255, 255, 0)),
]

CLASS_NAMES: list[str] = [c.name for c in SYNTH_CLASSES]
