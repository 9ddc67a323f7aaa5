"""Build camera messages from numpy arrays and write recordings, with rosbags (no ROS install).

Used by the tests, the synthetic-recording generator and benchmarks:

```
from rgbd_seg_ros.data.rosbag_messages import RecordingWriter, IMAGE, CAMERA_INFO

with RecordingWriter('out.mcap_dir', storage='mcap') as rec:
    rec.add_topic('/camera/color/image_raw', IMAGE)
    rec.add_topic('/camera/color/camera_info', CAMERA_INFO)
    for stamp_ns, rgb in frames:
        rec.write('/camera/color/image_raw', stamp_ns, rec.image(rgb, 'rgb8', stamp_ns, 'cam'))
        rec.write('/camera/color/camera_info', stamp_ns, rec.camera_info(K, 640, 480, stamp_ns))
```

``storage`` is ``'mcap'`` or ``'sqlite3'`` (a rosbag2 folder, metadata version 9) or
``'ros1'`` (a ROS 1 ``.bag`` file; use the ``ROS1_NOETIC`` typestore). The message builders
take a typestore (or a :class:`Stores` value) and fill in the header stamp in nanoseconds.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from pathlib import Path
from typing import Any, Literal

import numpy as np
from rosbags.typesys import Stores, get_typestore
from rosbags.typesys.store import Typestore

from rgbd_seg_ros.core import image_codec
from rgbd_seg_ros.errors import DatasetError

ROS2_JAZZY = Stores.ROS2_JAZZY
ROS2_HUMBLE = Stores.ROS2_HUMBLE
ROS1_NOETIC = Stores.ROS1_NOETIC

IMAGE = 'sensor_msgs/msg/Image'
COMPRESSED_IMAGE = 'sensor_msgs/msg/CompressedImage'
CAMERA_INFO = 'sensor_msgs/msg/CameraInfo'
STORAGES = ('mcap', 'sqlite3', 'ros1')


@functools.cache
def _cached_store(store: Stores) -> Typestore:
    return get_typestore(store)


def typestore_of(store: Stores | Typestore | str) -> Typestore:
    """A Typestore from a Stores value, its name (``'ros2_jazzy'``) or a Typestore."""
    if isinstance(store, Typestore):
        return store
    if isinstance(store, str):
        try:
            store = Stores(store.lower())
        except ValueError:
            raise DatasetError(
                f'unknown typestore {store!r} (e.g. {", ".join(s.value for s in Stores)})'
            ) from None
    return _cached_store(store)


def make_header(store: Stores | Typestore, stamp_ns: int, frame_id: str = '', seq: int = 0) -> Any:
    """std_msgs/Header with ``stamp_ns`` split into sec/nanosec (``seq`` only for ROS 1)."""
    ts = typestore_of(store)
    stamp_ns = int(stamp_ns)
    if stamp_ns < 0:
        raise DatasetError(f'negative stamp {stamp_ns}')
    time = ts.types['builtin_interfaces/msg/Time'](
        sec=stamp_ns // 1_000_000_000, nanosec=stamp_ns % 1_000_000_000
    )
    header_cls = ts.types['std_msgs/msg/Header']
    if 'seq' in _field_names(header_cls):
        return header_cls(seq=seq, stamp=time, frame_id=frame_id)
    return header_cls(stamp=time, frame_id=frame_id)


def _field_names(message_class: object) -> set[str]:
    """The fields of a rosbags message class (its classes are dataclasses; rosbags' typing
    says less), which is how ROS 1 and ROS 2 spellings are told apart."""
    if not (isinstance(message_class, type) and dataclasses.is_dataclass(message_class)):
        raise DatasetError(f'{message_class!r} is not a rosbags message class')
    return {f.name for f in dataclasses.fields(message_class)}


def _bytes_array(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype=np.uint8)


def make_image(
    store: Stores | Typestore,
    array: np.ndarray,
    encoding: str,
    stamp_ns: int,
    frame_id: str = 'camera',
    *,
    row_padding: int = 0,
    bigendian: bool = False,
) -> Any:
    """sensor_msgs/Image from an array (see :func:`image_codec.encode_image` for layouts)."""
    ts = typestore_of(store)
    array = np.asarray(array)
    step, data = image_codec.encode_image(
        array, encoding, row_padding=row_padding, bigendian=bigendian
    )
    return ts.types[IMAGE](
        header=make_header(ts, stamp_ns, frame_id),
        height=array.shape[0],
        width=array.shape[1],
        encoding=encoding,
        is_bigendian=int(bigendian),
        step=step,
        data=_bytes_array(data),
    )


def make_compressed_image(
    store: Stores | Typestore,
    array: np.ndarray,
    stamp_ns: int,
    frame_id: str = 'camera',
    *,
    codec: str = 'jpeg',
    quality: int = 95,
) -> Any:
    """sensor_msgs/CompressedImage (jpeg or png) from RGB uint8 HxWx3 or a mono image."""
    ts = typestore_of(store)
    fmt, data = image_codec.encode_compressed(array, codec, quality)
    return ts.types[COMPRESSED_IMAGE](
        header=make_header(ts, stamp_ns, frame_id), format=fmt, data=_bytes_array(data)
    )


def make_compressed_depth(
    store: Stores | Typestore, depth: np.ndarray, stamp_ns: int, frame_id: str = 'camera'
) -> Any:
    """compressedDepth CompressedImage from uint16 mm or float32 m depth."""
    ts = typestore_of(store)
    fmt, data = image_codec.encode_compressed_depth(depth)
    return ts.types[COMPRESSED_IMAGE](
        header=make_header(ts, stamp_ns, frame_id), format=fmt, data=_bytes_array(data)
    )


def make_camera_info(
    store: Stores | Typestore,
    K: np.ndarray,
    width: int,
    height: int,
    stamp_ns: int,
    *,
    frame_id: str = 'camera',
    D: np.ndarray | None = None,
    distortion_model: str = 'plumb_bob',
    P: np.ndarray | None = None,
) -> Any:
    """sensor_msgs/CameraInfo for a pinhole camera with matrix ``K`` (3x3); P is [K|0] unless
    given (3x4, the rectified image's projection)."""
    ts = typestore_of(store)
    K = np.asarray(K, np.float64).reshape(3, 3)
    d = np.zeros(5, np.float64) if D is None else np.asarray(D, np.float64).ravel()
    if P is None:
        P = np.zeros((3, 4), np.float64)
        P[:, :3] = K
    P = np.asarray(P, np.float64).reshape(3, 4)
    cls = ts.types[CAMERA_INFO]
    roi = ts.types['sensor_msgs/msg/RegionOfInterest'](
        x_offset=0, y_offset=0, height=0, width=0, do_rectify=False
    )
    upper = 'K' in _field_names(cls)  # ROS 1 spells the matrices in capitals
    matrices = {'d': d, 'k': K.ravel(), 'r': np.eye(3).ravel(), 'p': P.ravel()}
    return cls(
        header=make_header(ts, stamp_ns, frame_id),
        height=int(height),
        width=int(width),
        distortion_model=distortion_model,
        binning_x=0,
        binning_y=0,
        roi=roi,
        **{(k.upper() if upper else k): v for k, v in matrices.items()},
    )


class RecordingWriter:
    """Writes a recording: rosbag2 (``mcap`` / ``sqlite3``) or ROS 1 (``ros1``).

    ``path`` is the bag folder for rosbag2 (it must not exist yet) or the ``.bag`` file for
    ROS 1. Topics are declared with :meth:`add_topic` before :meth:`write`. The builders
    :meth:`image`, :meth:`compressed_image`, :meth:`compressed_depth`, :meth:`camera_info` use
    this writer's typestore.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        storage: str = 'mcap',
        typestore: Stores | Typestore | str = ROS2_JAZZY,
        *,
        version: Literal[8, 9] = 9,
    ) -> None:
        if storage not in STORAGES:
            raise DatasetError(f'storage must be one of {STORAGES}, got {storage!r}')
        self.path = Path(path)
        self.storage = storage
        if storage == 'ros1' and typestore == ROS2_JAZZY:
            typestore = ROS1_NOETIC
        self.store = typestore_of(typestore)
        if storage == 'ros1':
            from rosbags.rosbag1 import Writer as Writer1

            self._writer: Any = Writer1(self.path)
            self._serialize = self.store.serialize_ros1
        else:
            from rosbags.rosbag2 import StoragePlugin, Writer

            plugin = StoragePlugin.MCAP if storage == 'mcap' else StoragePlugin.SQLITE3
            self._writer = Writer(self.path, version=version, storage_plugin=plugin)
            self._serialize = self.store.serialize_cdr
        self._writer.open()
        self._connections: dict[str, Any] = {}
        self.count = 0

    def __enter__(self) -> RecordingWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def add_topic(self, name: str, msgtype: str) -> None:
        """Declare ``name`` with message type ``msgtype`` (e.g. :data:`IMAGE`)."""
        if name in self._connections:
            raise DatasetError(f'topic {name!r} already added')
        self._connections[name] = self._writer.add_connection(name, msgtype, typestore=self.store)

    def write(self, topic: str, stamp_ns: int, msg: Any) -> None:
        """Serialise ``msg`` and write it with receive time ``stamp_ns``."""
        self.write_raw(topic, stamp_ns, bytes(self._serialize(msg, msg.__msgtype__)))

    def write_raw(self, topic: str, stamp_ns: int, data: bytes) -> None:
        """Write an already serialised message."""
        try:
            connection = self._connections[topic]
        except KeyError:
            raise DatasetError(f'topic {topic!r} was not added') from None
        self._writer.write(connection, int(stamp_ns), data)
        self.count += 1

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    # -- message builders bound to this writer's typestore ----------------------------------
    def image(
        self, array: np.ndarray, encoding: str, stamp_ns: int, frame_id: str = 'camera', **kw: Any
    ) -> Any:
        return make_image(self.store, array, encoding, stamp_ns, frame_id, **kw)

    def compressed_image(
        self, array: np.ndarray, stamp_ns: int, frame_id: str = 'camera', **kw: Any
    ) -> Any:
        return make_compressed_image(self.store, array, stamp_ns, frame_id, **kw)

    def compressed_depth(self, depth: np.ndarray, stamp_ns: int, frame_id: str = 'camera') -> Any:
        return make_compressed_depth(self.store, depth, stamp_ns, frame_id)

    def camera_info(
        self,
        K: np.ndarray,
        width: int,
        height: int,
        stamp_ns: int,
        frame_id: str = 'camera',
        **kw: Any,
    ) -> Any:
        return make_camera_info(self.store, K, width, height, stamp_ns, frame_id=frame_id, **kw)
