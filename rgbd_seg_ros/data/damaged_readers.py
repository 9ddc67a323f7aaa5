"""Readers that recover the readable part of a damaged recording, without an index.

A recording cut short (a recorder killed, a disk full, a copy interrupted) or corrupted in the
middle cannot be opened by rosbags, which needs the summary, the index or intact pages. These
readers go through the file from the start and yield every message they can still parse:

* mcap: record by record (no summary needed); the streamable part of a chunk cut short is
  still read, a chunk failing its CRC is skipped;
* sqlite3 (rosbag2 ``.db3``): from a private copy zero-padded to its declared size so the
  schema parses; rows on missing pages are lost;
* ROS 1 ``.bag`` (format 2.0): chunk by chunk without the index.

What they could not read is appended to the ``damage`` list the caller passes, never raised,
so the caller converts what is left and reports the rest.
"""

from __future__ import annotations

import bz2
import os
import shutil
import sqlite3
import struct
import tempfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from rgbd_seg_ros.data.recording_types import RawMessage, TopicInfo, topic_rate
from rgbd_seg_ros.errors import DatasetError


class DamagedFileReader:
    """The messages of damaged storage files of one recording, read without an index."""

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
            name: TopicInfo(name, self._types[name], n, topic_rate(n, duration))
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


def damaged_file_reader(files: list[Path]) -> DamagedFileReader:
    """The reader for the storage format of ``files`` (the storage files of one recording)."""
    kind = files[0].suffix
    if kind == '.mcap':
        return _McapReader(files)
    if kind == '.db3':
        return _SqliteReader(files)
    return _Ros1Reader(files)


class _McapReader(DamagedFileReader):
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


class _SqliteReader(DamagedFileReader):
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


class _Ros1Reader(DamagedFileReader):
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
