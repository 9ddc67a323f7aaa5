"""Recordings -> dataset layout (``rgbd-seg bag2dataset``).

Per recording, a planning pass reads only header stamps and decides which messages make which
frame (:mod:`.planning`, with the topics chosen by :mod:`.topics`). The planned frames are cut
into chunks of consecutive frames; each chunk is one job for a worker process (:mod:`.chunk`,
run by :mod:`.parallel`), which reads just its time range, decodes, labels (from a label topic
or an injected :class:`Labeller`, :mod:`.labelling`) and writes frames atomically. The parent
(:mod:`.driver`) folds the journals into ``index.csv`` and writes the typed report
(:mod:`.report`) as ``conversion_report.json``. Reruns resume.
"""

from rgbd_seg_ros.data.convert.driver import REPORT_FILE, convert
from rgbd_seg_ros.data.convert.labelling import Labeller
from rgbd_seg_ros.data.convert.options import ConvertOptions, LabelSource
from rgbd_seg_ros.data.convert.report import (
    ConversionReport,
    FrameCounts,
    RecordingReport,
    Totals,
    format_report,
)
from rgbd_seg_ros.data.convert.topics import TopicChoice, choose_topics

__all__ = [
    'REPORT_FILE',
    'ConversionReport',
    'ConvertOptions',
    'FrameCounts',
    'LabelSource',
    'Labeller',
    'RecordingReport',
    'TopicChoice',
    'Totals',
    'choose_topics',
    'convert',
    'format_report',
]
