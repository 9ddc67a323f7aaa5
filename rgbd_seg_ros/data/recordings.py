"""Reading recordings with rosbags: rosbag2 (sqlite3, mcap) and ROS 1 ``.bag``, no ROS install.

:func:`find_recordings` turns a path (one file, one rosbag2 folder, or a folder holding many)
into recordings; :class:`Recording` lists topics and iterates raw messages.

Damaged recordings: when rosbags cannot open a file (a truncated mcap has no summary, a
truncated ``.db3`` has dangling pages, a truncated ``.bag`` has no index), or fails in the
middle of one, a reader of :mod:`damaged_readers` recovers what is readable. Both are recorded
in :attr:`Recording.damage` rather than raised, so the readable part can be converted.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import Any

from rgbd_seg_ros.data.damaged_readers import DamagedFileReader, damaged_file_reader
from rgbd_seg_ros.data.recording_types import RawMessage, TopicInfo, topic_rate
from rgbd_seg_ros.errors import DatasetError

RECORDING_SUFFIXES = ('.bag', '.mcap', '.db3')
IMAGE_TYPES = ('sensor_msgs/msg/Image', 'sensor_msgs/msg/CompressedImage')
INFO_TYPE = 'sensor_msgs/msg/CameraInfo'


# --------------------------------------------------------------------------------------------
# Discovery
# --------------------------------------------------------------------------------------------


def _is_rosbag2_dir(path: Path) -> bool:
    return (path / 'metadata.yaml').is_file()


def find_recordings(path: str | os.PathLike) -> list[Path]:
    """Recordings at ``path``: a ``.bag``/``.mcap``/``.db3`` file, a rosbag2 folder (with
    ``metadata.yaml``), or a folder searched recursively for both. Sorted; DatasetError when
    there are none."""
    root = Path(path)
    if not root.exists():
        raise DatasetError(f'{root} does not exist')
    if root.is_file():
        if root.suffix not in RECORDING_SUFFIXES:
            raise DatasetError(
                f'{root} is not a recording (expected {", ".join(RECORDING_SUFFIXES)} or a '
                'rosbag2 folder)'
            )
        return [root]
    if _is_rosbag2_dir(root):
        return [root]
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        dirnames.sort()
        for name in list(dirnames):
            if _is_rosbag2_dir(here / name):
                found.append(here / name)
                dirnames.remove(name)
        found.extend(here / f for f in sorted(filenames) if Path(f).suffix in RECORDING_SUFFIXES)
    if not found:
        raise DatasetError(f'no recordings (.bag, .mcap, .db3, rosbag2 folders) under {root}')
    return sorted(found)


def recording_name(path: Path, root: Path | None = None) -> str:
    """A stable, file-name-safe name for a recording: its path relative to ``root`` (the
    folder it was found in) without the recording suffix, or just its own name."""
    from rgbd_seg_ros.data.layout import safe_frame_id

    rel = Path(path.name)
    if root is not None and root.is_dir() and root != path:
        try:
            rel = path.relative_to(root)
        except ValueError:
            rel = Path(path.name)
    text = str(rel)
    if path.suffix in RECORDING_SUFFIXES and path.is_file():
        text = text[: -len(path.suffix)]
    return safe_frame_id(text, max_length=80)


def header_stamp_ns(data: bytes | memoryview, ros1: bool) -> int:
    """The ``header.stamp`` of a serialised message whose first field is a Header.

    CDR: 4-byte encapsulation (byte 1 = 1 for little endian), then int32 sec, uint32 nanosec.
    ROS 1: uint32 seq, uint32 sec, uint32 nsec.
    """
    if len(data) < 12:
        raise DatasetError('message too short to hold a header')
    if ros1:
        sec, nsec = struct.unpack_from('<II', data, 4)
    else:
        order = '<' if data[1] == 1 else '>'
        sec, nsec = struct.unpack_from(order + 'iI', data, 4)
    return sec * 1_000_000_000 + nsec


# --------------------------------------------------------------------------------------------
# Recording
# --------------------------------------------------------------------------------------------


class Recording:
    """One recording, opened with rosbags or, when damaged, with a fallback reader."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.damage: list[str] = []
        self.ros1 = False
        self._reader: Any = None
        self._fallback: DamagedFileReader | None = None  # when rosbags cannot open the file
        self._late_fallback: DamagedFileReader | None = None  # when it fails in the middle
        self._topics: dict[str, TopicInfo] = {}
        self.start_ns = self.end_ns = 0
        self._open()

    # -- opening ----------------------------------------------------------------------------
    def _open(self) -> None:
        from rosbags.highlevel import AnyReader

        from rgbd_seg_ros.data.rosbag_messages import ROS2_JAZZY, typestore_of

        try:
            reader = AnyReader([self.path], default_typestore=typestore_of(ROS2_JAZZY))
            reader.open()
        except Exception as err:
            self._open_fallback(err)
            return
        self._reader = reader
        self.ros1 = not reader.is2
        self.start_ns, self.end_ns = reader.start_time, reader.end_time
        duration = max(self.end_ns - self.start_ns, 1) / 1e9
        counts: dict[str, tuple[str, int]] = {}
        for conn in reader.connections:
            msgtype, count = counts.get(conn.topic, (conn.msgtype, 0))
            counts[conn.topic] = (msgtype, count + conn.msgcount)
        self._topics = {
            name: TopicInfo(name, msgtype, count, topic_rate(count, duration))
            for name, (msgtype, count) in sorted(counts.items())
        }

    def _open_fallback(self, err: Exception) -> None:
        files = self._storage_files()
        if not files:
            raise DatasetError(f'cannot open {self.path}: {err}') from err
        self.damage.append(f'cannot open normally ({err}); recovering the readable part')
        self._fallback = damaged_file_reader(files)
        self.ros1 = self._fallback.ros1
        try:
            self._topics, self.start_ns, self.end_ns = self._fallback.scan(self.damage)
        except Exception as err2:
            raise DatasetError(
                f'cannot read {self.path}: {err}; recovery failed: {err2}'
            ) from err2
        if not self._topics:
            raise DatasetError(f'cannot read {self.path}: {err}; nothing recoverable')

    def _storage_files(self) -> list[Path]:
        if self.path.is_file():
            return [self.path]
        return sorted(
            p for p in self.path.iterdir() if p.suffix in RECORDING_SUFFIXES and p.is_file()
        )

    # -- context manager --------------------------------------------------------------------
    def __enter__(self) -> Recording:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        for fallback in (self._fallback, self._late_fallback):
            if fallback is not None:
                fallback.close()
        self._fallback = self._late_fallback = None

    # -- queries ----------------------------------------------------------------------------
    @property
    def damaged(self) -> bool:
        return bool(self.damage)

    @property
    def topics(self) -> dict[str, TopicInfo]:
        return self._topics

    def require_topic(self, name: str, allowed_types: Collection[str]) -> TopicInfo:
        """The topic ``name``; DatasetError listing the available topics when it is missing or
        of the wrong type."""
        info = self._topics.get(name)
        if info is None:
            import difflib

            close = difflib.get_close_matches(name, list(self._topics), n=1)
            hint = f' (did you mean {close[0]!r}?)' if close else ''
            raise DatasetError(
                f'{self.path.name}: no topic {name!r}{hint}; available topics:\n'
                + format_topics(self._topics.values())
            )
        if info.msgtype not in allowed_types:
            raise DatasetError(
                f'{self.path.name}: topic {name!r} has type {info.msgtype}, expected one of '
                + ', '.join(allowed_types)
            )
        return info

    def messages(
        self, topics: Collection[str], start: int | None = None, stop: int | None = None
    ) -> Iterator[RawMessage]:
        """Raw messages of ``topics`` in log order, log time in ``[start, stop)``.

        When rosbags fails in the middle of a file (a corrupt chunk, a damaged page), the rest
        is read with the fallback reader (messages already delivered are not repeated); what
        cannot be read is skipped and noted in :attr:`damage`.
        """
        wanted = set(topics)
        seen: set[tuple[str, int]] | None = None
        fallback = self._fallback
        if self._reader is not None:
            seen = set()
            try:
                conns = [c for c in self._reader.connections if c.topic in wanted]
                for conn, log_time, data in self._reader.messages(conns, start=start, stop=stop):
                    seen.add((conn.topic, log_time))
                    yield RawMessage(conn.topic, conn.msgtype, log_time, data)
                return
            except Exception as err:  # rosbags raises many types for damaged data
                self._note(f'reading stopped early: {type(err).__name__}: {err}')
                files = self._storage_files()
                if not files:
                    return
                self._note('reading the rest record by record')
                if self._late_fallback is None:
                    self._late_fallback = damaged_file_reader(files)
                fallback = self._late_fallback
        if fallback is None:
            return
        try:
            for msg in fallback.messages(wanted, start, stop, self.damage):
                if seen is None or (msg.topic, msg.log_time_ns) not in seen:
                    yield msg
        except DatasetError:
            raise
        except Exception as err:
            self._note(f'reading stopped early: {type(err).__name__}: {err}')

    def _note(self, text: str) -> None:
        if text not in self.damage:
            self.damage.append(text)

    def deserialize(self, msg: RawMessage) -> Any:
        """The message object (rosbags dataclass) of ``msg``."""
        if self._reader is not None:
            return self._reader.deserialize(msg.data, msg.msgtype)
        assert self._fallback is not None
        return self._fallback.deserialize(msg)

    def header_stamp(self, msg: RawMessage) -> int:
        return header_stamp_ns(msg.data, self.ros1)


def format_topics(topics: Collection[TopicInfo]) -> str:
    """Topics as an aligned table: name, type, count, rate."""
    if not topics:
        return '  (no topics)'
    width = max(len(t.name) for t in topics)
    twidth = max(len(t.msgtype) for t in topics)
    return '\n'.join(
        f'  {t.name:{width}s}  {t.msgtype:{twidth}s}  {t.count:7d} msgs  {t.rate_hz:7.2f} Hz'
        for t in sorted(topics, key=lambda t: t.name)
    )
