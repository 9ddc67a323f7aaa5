"""Reading recordings with rosbags: rosbag2 (sqlite3, mcap) and ROS 1 ``.bag``, no ROS install.

:func:`find_recordings` turns a path (one file, one rosbag2 folder, or a folder holding many)
into recordings; :class:`Recording` lists topics and iterates raw messages.

Damaged recordings: when rosbags cannot open a file (a truncated mcap has no summary, a
truncated ``.db3`` has dangling pages, a truncated ``.bag`` has no index), a fallback reader
recovers what is readable: mcap is read record by record with the ``mcap`` stream reader,
sqlite3 from a zero-padded private copy (rows on missing pages are lost), ROS 1 chunk by chunk.
Errors during iteration end the iteration. Both are recorded in :attr:`Recording.damage`
rather than raised, so the readable part can be converted.
"""

from __future__ import annotations

import bz2
import os
import shutil
import sqlite3
import struct
import tempfile
import zlib
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from rgbd_seg_ros.errors import DatasetError

RECORDING_SUFFIXES = ('.bag', '.mcap', '.db3')
IMAGE_TYPES = ('sensor_msgs/msg/Image', 'sensor_msgs/msg/CompressedImage')
INFO_TYPE = 'sensor_msgs/msg/CameraInfo'


@dataclass(frozen=True)
class TopicInfo:
    """A topic of a recording: type, message count and mean rate over the recording."""

    name: str
    msgtype: str
    count: int
    rate_hz: float


@dataclass(frozen=True)
class RawMessage:
    """One serialised message: CDR for rosbag2, ROS 1 serialisation for ``.bag``."""

    topic: str
    msgtype: str
    log_time_ns: int
    data: bytes | memoryview


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
        self._fallback: _Fallback | None = None  # when rosbags cannot open the file
        self._late_fallback: _Fallback | None = None  # when it fails in the middle
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
            name: TopicInfo(name, msgtype, count, _rate(count, duration))
            for name, (msgtype, count) in sorted(counts.items())
        }

    def _open_fallback(self, err: Exception) -> None:
        files = self._storage_files()
        if not files:
            raise DatasetError(f'cannot open {self.path}: {err}') from err
        self.damage.append(f'cannot open normally ({err}); recovering the readable part')
        self._fallback = _make_fallback(files)
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
                    self._late_fallback = _make_fallback(files)
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


def _rate(count: int, duration_s: float) -> float:
    return (count - 1) / duration_s if count > 1 and duration_s > 0 else 0.0


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


# --------------------------------------------------------------------------------------------
# Fallback readers for damaged files
# --------------------------------------------------------------------------------------------


class _Fallback:
    ros1 = False

    def __init__(self, files: list[Path]) -> None:
        self.files = files
        self._types: dict[str, str] = {}  # topic -> msgtype
        self._defs: dict[str, tuple[str, str]] = {}  # msgtype -> (definition text, format)
        self._store: Any = None

    def scan(self, damage: list[str]) -> tuple[dict[str, TopicInfo], int, int]:
        counts: dict[str, int] = {}
        start = end = None
        for msg in self.messages(None, None, None, damage):
            counts[msg.topic] = counts.get(msg.topic, 0) + 1
            start = msg.log_time_ns if start is None else min(start, msg.log_time_ns)
            end = msg.log_time_ns if end is None else max(end, msg.log_time_ns)
        duration = max((end or 0) - (start or 0), 1) / 1e9
        topics = {
            name: TopicInfo(name, self._types[name], n, _rate(n, duration))
            for name, n in sorted(counts.items())
        }
        return topics, start or 0, end or 0

    def messages(
        self, wanted: set[str] | None, start: int | None, stop: int | None, damage: list[str]
    ) -> Iterator[RawMessage]:
        raise NotImplementedError

    def _keep(
        self, topic: str, t: int, wanted: set[str] | None, start: int | None, stop: int | None
    ) -> bool:
        return (
            (wanted is None or topic in wanted)
            and (start is None or t >= start)
            and (stop is None or t < stop)
        )

    def _typestore(self) -> Any:
        if self._store is None:
            from rosbags.typesys import Stores, get_typestore

            self._store = get_typestore(Stores.ROS1_NOETIC if self.ros1 else Stores.ROS2_JAZZY)
        return self._store

    def deserialize(self, msg: RawMessage) -> Any:
        store = self._typestore()
        if msg.msgtype not in store.types and msg.msgtype in self._defs:
            from rosbags.typesys import get_types_from_msg

            text, _ = self._defs[msg.msgtype]
            store.register(get_types_from_msg(text, msg.msgtype))
        if self.ros1:
            return store.deserialize_ros1(msg.data, msg.msgtype)
        return store.deserialize_cdr(msg.data, msg.msgtype)

    def close(self) -> None:
        pass


def _make_fallback(files: list[Path]) -> _Fallback:
    kind = files[0].suffix
    if kind == '.mcap':
        return _McapFallback(files)
    if kind == '.db3':
        return _SqliteFallback(files)
    return _Ros1Fallback(files)


class _McapFallback(_Fallback):
    """Reads an mcap file record by record (no summary section needed); the uncompressed or
    streamable (zstd, lz4) part of a chunk cut short is still read."""

    def messages(self, wanted, start, stop, damage):
        self._damage = damage
        for path in self.files:
            state = {'schemas': {}, 'channels': {}}
            with open(path, 'rb') as stream:
                try:
                    if stream.read(8) != _MCAP_MAGIC:
                        raise DatasetError('no mcap magic at the start')
                    while True:
                        head = stream.read(9)
                        if not head:
                            break
                        if len(head) < 9:
                            raise EOFError('record header cut short')
                        op, length = struct.unpack('<BQ', head)
                        body = stream.read(length)
                        complete = len(body) == length
                        if op == 0x06:  # chunk
                            yield from self._chunk(body, complete, state, wanted, start, stop)
                        elif complete:
                            yield from self._record(op, body, state, wanted, start, stop)
                        if not complete:
                            raise EOFError('file ends inside a record')
                        if op == 0x02:  # footer
                            break
                except Exception as err:
                    note = (
                        f'{path.name}: readable part ends near byte {stream.tell()}: '
                        f'{err or type(err).__name__}'
                    )
                    if note not in damage:
                        damage.append(note)

    def _damage_note(self, text: str) -> None:
        if text not in self._damage:
            self._damage.append(text)

    def _record(self, op, body, state, wanted, start, stop):
        if op == 0x03:  # schema
            sid, pos = struct.unpack_from('<H', body)[0], 2
            name, pos = _mcap_str(body, pos)
            encoding, pos = _mcap_str(body, pos)
            (n,) = struct.unpack_from('<I', body, pos)
            self._defs[name] = (bytes(body[pos + 4 : pos + 4 + n]).decode(), encoding)
            state['schemas'][sid] = name
        elif op == 0x04:  # channel
            cid, sid = struct.unpack_from('<HH', body)
            topic, _ = _mcap_str(body, 4)
            msgtype = state['schemas'].get(sid, '')
            state['channels'][cid] = (topic, msgtype)
            self._types[topic] = msgtype
        elif op == 0x05:  # message
            cid, _, log_time = struct.unpack_from('<HIQ', body)
            topic, msgtype = state['channels'].get(cid, ('', ''))
            if topic and self._keep(topic, log_time, wanted, start, stop):
                yield RawMessage(topic, msgtype, log_time, bytes(body[22:]))

    def _chunk(self, body, complete, state, wanted, start, stop):
        if len(body) < 28:
            return
        (crc,) = struct.unpack_from('<I', body, 24)
        compression, pos = _mcap_str(body, 28)
        records = body[pos + 8 :]
        if complete and crc and compression == '' and zlib.crc32(records) != crc:
            self._damage_note('an mcap chunk failed its CRC check; its messages are skipped')
            return
        if compression == 'zstd':
            import zstandard

            records = zstandard.ZstdDecompressor().decompressobj().decompress(records)
        elif compression == 'lz4':
            import lz4.frame

            records = lz4.frame.LZ4FrameDecompressor().decompress(records)
        elif compression:
            raise DatasetError(f'unsupported mcap chunk compression {compression!r}')
        if complete and crc and compression and zlib.crc32(records) != crc:
            self._damage_note('an mcap chunk failed its CRC check; its messages are skipped')
            return
        view = memoryview(records)
        spans = []
        pos = 0
        while pos + 9 <= len(view):
            op, length = struct.unpack_from('<BQ', view, pos)
            if op not in _MCAP_OPCODES or pos + 9 + length > len(view):
                break
            spans.append((op, pos + 9, pos + 9 + length))
            pos += 9 + length
        if pos < len(view) and complete:
            # The record before a corrupt one most likely holds the start of the damage.
            dropped = spans.pop() if spans else None
            self._damage_note(
                f'an mcap chunk is corrupt after {pos} of {len(view)} bytes: the rest of it'
                + (' and the record before' if dropped else '')
                + ' is skipped'
                + ('' if crc else ' (the file has no CRCs to verify the earlier records)')
            )
        for op, a, b in spans:
            yield from self._record(op, view[a:b], state, wanted, start, stop)


_MCAP_MAGIC = b'\x89MCAP0\r\n'
_MCAP_OPCODES = frozenset(range(0x01, 0x11))


def _mcap_str(body, pos: int) -> tuple[str, int]:
    (n,) = struct.unpack_from('<I', body, pos)
    return bytes(body[pos + 4 : pos + 4 + n]).decode(), pos + 4 + n


class _SqliteFallback(_Fallback):
    """Reads a damaged rosbag2 ``.db3`` from a private copy, zero-padded to its declared size
    so the schema parses; rows on missing pages are lost."""

    def __init__(self, files: list[Path]) -> None:
        super().__init__(files)
        self._tmp = Path(tempfile.mkdtemp(prefix='rgbd_seg_db3_'))
        self._copies: list[tuple[Path, Path]] = []
        for i, path in enumerate(files):
            copy = self._tmp / f'{i}.db3'
            shutil.copyfile(path, copy)
            with open(copy, 'rb') as stream:
                header = stream.read(100)
            if header[:16] == b'SQLite format 3\x00':
                page_size = struct.unpack('>H', header[16:18])[0]
                page_size = 65536 if page_size == 1 else page_size
                pages = struct.unpack('>I', header[28:32])[0]
                if pages * page_size > copy.stat().st_size:
                    os.truncate(copy, pages * page_size)
            self._copies.append((path, copy))

    def messages(self, wanted, start, stop, damage):
        for path, copy in self._copies:
            con = sqlite3.connect(f'file:{copy}?mode=ro&immutable=1', uri=True)
            try:
                topics = {
                    tid: (name, msgtype)
                    for tid, name, msgtype in con.execute('SELECT id, name, type FROM topics')
                }
                for _, (name, msgtype) in topics.items():
                    self._types[name] = msgtype
                rows = con.execute(
                    'SELECT topic_id, timestamp, data FROM messages NOT INDEXED ORDER BY id'
                )
                try:
                    for tid, t, data in rows:
                        name, msgtype = topics.get(tid, ('', ''))
                        if name and self._keep(name, t, wanted, start, stop):
                            yield RawMessage(name, msgtype, t, data)
                except sqlite3.DatabaseError as err:
                    note = f'{path.name}: rows after the damaged part are lost ({err})'
                    if note not in damage:
                        damage.append(note)
            finally:
                con.close()

    def close(self) -> None:
        shutil.rmtree(self._tmp, ignore_errors=True)


class _Ros1Fallback(_Fallback):
    """Reads a ROS 1 bag (format 2.0) chunk by chunk without its index."""

    ros1 = True

    def messages(self, wanted, start, stop, damage):
        for path in self.files:
            conns: dict[int, tuple[str, str]] = {}
            with open(path, 'rb') as stream:
                if stream.read(13) != b'#ROSBAG V2.0\n':
                    damage.append(f'{path.name}: not a ROS 1 bag (format 2.0)')
                    continue
                try:
                    while True:
                        record = _read_ros1_record(stream)
                        if record is None:
                            break
                        header, data, complete = record
                        op = header.get('op', b'\0')[0]
                        if op == 0x05:  # chunk
                            data = _ros1_chunk_data(header, data, complete)
                            yield from self._chunk_messages(data, conns, wanted, start, stop)
                            if not complete:
                                raise EOFError('chunk cut short')
                        elif op == 0x07:
                            self._connection(header, data, conns)
                        elif not complete:
                            raise EOFError('record cut short')
                except Exception as err:
                    note = f'{path.name}: readable part ends near byte {stream.tell()}: {err}'
                    if note not in damage:
                        damage.append(note)

    def _connection(self, header: dict, data: bytes, conns: dict) -> None:
        fields = _ros1_fields(data)
        conn = struct.unpack('<I', header['conn'])[0]
        topic = header['topic'].decode()
        rostype = fields.get('type', b'').decode()
        pkg, _, name = rostype.partition('/')
        msgtype = f'{pkg}/msg/{name}' if '/msg/' not in rostype else rostype
        conns[conn] = (topic, msgtype)
        self._types[topic] = msgtype
        if 'message_definition' in fields:
            self._defs[msgtype] = (fields['message_definition'].decode(), 'ros1msg')

    def _chunk_messages(self, data, conns, wanted, start, stop):
        view = memoryview(data)
        pos = 0
        while pos + 4 <= len(view):
            (hlen,) = struct.unpack_from('<I', view, pos)
            if pos + 4 + hlen + 4 > len(view):
                return
            header = _ros1_fields(bytes(view[pos + 4 : pos + 4 + hlen]))
            (dlen,) = struct.unpack_from('<I', view, pos + 4 + hlen)
            body_start = pos + 8 + hlen
            if body_start + dlen > len(view):
                return
            body = bytes(view[body_start : body_start + dlen])
            pos = body_start + dlen
            op = header.get('op', b'\0')[0]
            if op == 0x07:
                self._connection(header, body, conns)
            elif op == 0x02:
                conn = struct.unpack('<I', header['conn'])[0]
                sec, nsec = struct.unpack('<II', header['time'])
                t = sec * 1_000_000_000 + nsec
                topic, msgtype = conns.get(conn, ('', ''))
                if topic and self._keep(topic, t, wanted, start, stop):
                    yield RawMessage(topic, msgtype, t, body)


def _ros1_fields(data: bytes) -> dict[str, bytes]:
    fields: dict[str, bytes] = {}
    pos = 0
    while pos + 4 <= len(data):
        (n,) = struct.unpack_from('<I', data, pos)
        entry = data[pos + 4 : pos + 4 + n]
        pos += 4 + n
        key, sep, value = entry.partition(b'=')
        if sep:
            fields[key.decode(errors='replace')] = value
    return fields


def _read_ros1_record(stream: BinaryIO) -> tuple[dict[str, bytes], bytes, bool] | None:
    raw = stream.read(4)
    if len(raw) < 4:
        return None
    (hlen,) = struct.unpack('<I', raw)
    header_bytes = stream.read(hlen)
    if len(header_bytes) < hlen:
        raise EOFError('record header cut short')
    raw = stream.read(4)
    if len(raw) < 4:
        raise EOFError('record length cut short')
    (dlen,) = struct.unpack('<I', raw)
    data = stream.read(dlen)
    return _ros1_fields(header_bytes), data, len(data) == dlen


def _ros1_chunk_data(header: dict[str, bytes], data: bytes, complete: bool) -> bytes:
    compression = header.get('compression', b'none').decode()
    if compression == 'none':
        return data
    if not complete:
        raise EOFError(f'{compression} chunk cut short')
    if compression == 'bz2':
        return bz2.decompress(data)
    if compression == 'lz4':
        import lz4.frame

        return lz4.frame.decompress(data)
    raise DatasetError(f'unsupported ROS 1 chunk compression {compression!r}')
