"""Training log (CSV, appended row by row, survives resume) and the loss / mIoU plot (PNG)."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

from rgbd_seg_ros.core.atomic_files import atomic_path

LOG_FIELDS: tuple[str, ...] = (
    'stage',
    'step',
    'epoch',
    'loss',
    'lr',
    'images_per_s',
    'val_miou',
    'val_pixel_acc',
    'val_mean_class_acc',
)


class CsvLog:
    """Append-only CSV with a fixed header; on resume, rows after ``keep_until_step`` (steps
    that the resumed run will redo) are dropped."""

    def __init__(self, path: str | Path, keep_until_step: int | None = None) -> None:
        self.path = Path(path)
        rows = read_log(self.path) if self.path.is_file() else []
        if keep_until_step is not None:
            rows = [r for r in rows if int(float(r['step'])) <= keep_until_step]
        else:
            rows = []
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, 'w', newline='', encoding='utf-8') as stream:
            writer = csv.DictWriter(stream, fieldnames=LOG_FIELDS)
            writer.writeheader()
            writer.writerows(rows)

    def append(self, row: dict[str, Any]) -> None:
        clean = {k: _fmt(row.get(k)) for k in LOG_FIELDS}
        with open(self.path, 'a', newline='', encoding='utf-8') as stream:
            csv.DictWriter(stream, fieldnames=LOG_FIELDS).writerow(clean)


def _fmt(value: Any) -> str:
    if value is None:
        return ''
    if isinstance(value, float):
        return f'{value:.6g}'
    return str(value)


def read_log(path: str | Path) -> list[dict[str, str]]:
    with open(path, newline='', encoding='utf-8') as stream:
        return list(csv.DictReader(stream))


def _series(rows: list[dict[str, str]], key: str) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    for row in rows:
        value = row.get(key, '')
        if value not in ('', None):
            y = float(value)
            if not math.isnan(y):
                xs.append(float(row['step']))
                ys.append(y)
    return xs, ys


def plot_log(csv_path: str | Path, png_path: str | Path, title: str = '') -> Path:
    """Loss (left axis) and validation mIoU (right axis) against the step."""
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    rows = read_log(csv_path)
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
    try:
        xs, ys = _series(rows, 'loss')
        ax.plot(xs, ys, color='tab:blue', linewidth=1.0, label='training loss')
        ax.set_xlabel('step')
        ax.set_ylabel('loss', color='tab:blue')
        ax2 = ax.twinx()
        xs, ys = _series(rows, 'val_miou')
        ax2.plot(
            xs, [100 * y for y in ys], color='tab:red', marker='o', markersize=3, label='val mIoU'
        )
        ax2.set_ylabel('val mIoU (%)', color='tab:red')
        ax.set_title(title or Path(csv_path).parent.name)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        png_path = Path(png_path)
        with atomic_path(png_path, fsync=False) as tmp:
            fig.savefig(tmp, format='png')
    finally:
        plt.close(fig)
    return png_path
