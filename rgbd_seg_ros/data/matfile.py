"""Read variables from MATLAB ``.mat`` files without SciPy.

* v7.3 files are HDF5: read with h5py (numeric datasets, cell arrays of references, char
  arrays stored as uint16); MATLAB's column-major arrays come back transposed, as h5py sees
  them.
* v5 files (what ``save`` writes by default, e.g. NYUDv2's ``splits.mat`` and
  ``classMapping40.mat``): a small reader for numeric matrices, char arrays and cell arrays of
  those, compressed or not; arrays come back in MATLAB's shape (column-major reshaped).

Anything else (structs, objects, sparse) raises DatasetError.
"""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import numpy as np

from rgbd_seg_ros.errors import DatasetError

_MI_TYPES = {
    1: 'i1',
    2: 'u1',
    3: 'i2',
    4: 'u2',
    5: 'i4',
    6: 'u4',
    7: 'f4',
    9: 'f8',
    12: 'i8',
    13: 'u8',
    16: 'u1',
    17: 'u2',
    18: 'u4',
}
_MI_MATRIX, _MI_COMPRESSED = 14, 15
_MX_CELL, _MX_CHAR = 1, 4
_MX_NUMERIC = set(range(6, 16))
_HDF5_SIGNATURE = b'\x89HDF\r\n\x1a\n'


def is_hdf5(path: str | os.PathLike) -> bool:
    with open(path, 'rb') as stream:
        head = stream.read(1024)
    return _HDF5_SIGNATURE in head[:8] or head[512 : 512 + 8] == _HDF5_SIGNATURE


def load_mat(path: str | os.PathLike, names: list[str] | None = None) -> dict[str, object]:
    """Variables of a .mat file (all, or those in ``names``)."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f'{path} does not exist')
    if is_hdf5(path):
        return _load_hdf5(path, names)
    return _load_v5(path, names)


# -- v7.3 (HDF5) ---------------------------------------------------------------------------


def _load_hdf5(path: Path, names: list[str] | None) -> dict[str, object]:
    import h5py

    out: dict[str, object] = {}
    with h5py.File(path, 'r') as f:
        for key in f:
            if key.startswith('#') or (names and key not in names):
                continue
            out[key] = _h5_value(f, f[key])
    return out


def _h5_value(f, node):
    import h5py

    if not isinstance(node, h5py.Dataset):
        raise DatasetError(f'{node.name}: MATLAB structs are not supported')
    cls = node.attrs.get('MATLAB_class', b'')
    cls = cls.decode() if isinstance(cls, bytes) else str(cls)
    data = node[()]
    if cls == 'char':
        return ''.join(chr(c) for c in np.asarray(data).ravel(order='F'))
    if cls == 'cell' or data.dtype == h5py.ref_dtype:
        return [_h5_value(f, f[ref]) for ref in np.asarray(data).T.ravel()]
    return np.asarray(data)


# -- v5 --------------------------------------------------------------------------------------


def _load_v5(path: Path, names: list[str] | None) -> dict[str, object]:
    data = path.read_bytes()
    if len(data) < 128:
        raise DatasetError(f'{path} is too short for a MATLAB file')
    endian = data[126:128]
    if endian == b'IM':
        order = '<'
    elif endian == b'MI':
        order = '>'
    else:
        raise DatasetError(f'{path} is neither a v5 nor a v7.3 (HDF5) MATLAB file')
    out: dict[str, object] = {}
    pos = 128
    try:
        while pos + 8 <= len(data):
            mtype, body, pos = _element(data, pos, order)
            if mtype == _MI_COMPRESSED:
                inner = zlib.decompress(body)
                mtype, body, _ = _element(inner, 0, order)
            if mtype != _MI_MATRIX:
                continue
            name, value = _matrix(body, order)
            if not names or name in names:
                out[name] = value
    except (struct.error, zlib.error, ValueError, IndexError) as err:
        raise DatasetError(f'{path}: corrupt MATLAB file ({err})') from err
    return out


def _element(data: bytes, pos: int, order: str) -> tuple[int, bytes, int]:
    """One data element: (type, payload, position after padding)."""
    (first,) = struct.unpack_from(order + 'I', data, pos)
    if first >> 16:  # small data element: 2-byte size, 2-byte type, 4 bytes data
        size, mtype = first >> 16, first & 0xFFFF
        return mtype, data[pos + 4 : pos + 4 + size], pos + 8
    mtype, size = struct.unpack_from(order + 'II', data, pos)
    start = pos + 8
    end = start + size
    if end > len(data):
        raise ValueError('element runs past the end of the file')
    padded = end if mtype == _MI_COMPRESSED else start + ((size + 7) // 8) * 8
    return mtype, data[start:end], padded


def _numbers(mtype: int, payload: bytes, order: str) -> np.ndarray:
    if mtype not in _MI_TYPES:
        raise ValueError(f'unsupported MATLAB data type {mtype}')
    return np.frombuffer(payload, np.dtype(order + _MI_TYPES[mtype]))


def _matrix(body: bytes, order: str) -> tuple[str, object]:
    pos = 0
    _, flags, pos = _element(body, pos, order)
    mx_class = _numbers(6, flags, order)[0] & 0xFF
    _, dims_raw, pos = _element(body, pos, order)
    dims = tuple(int(d) for d in _numbers(5, dims_raw, order))
    _, name_raw, pos = _element(body, pos, order)
    name = name_raw.decode('ascii', 'replace')
    if mx_class == _MX_CELL:
        cells = []
        for _ in range(int(np.prod(dims))):
            mtype, cell_body, pos = _element(body, pos, order)
            cells.append(_matrix(cell_body, order)[1] if mtype == _MI_MATRIX else None)
        return name, cells
    if mx_class == _MX_CHAR:
        mtype, payload, pos = _element(body, pos, order)
        if mtype == 16:
            return name, payload.decode('utf-8')
        codes = _numbers(mtype, payload, order).reshape(dims, order='F')
        rows = codes.reshape(dims[0], -1, order='F') if codes.ndim else codes
        return name, '\n'.join(''.join(chr(c) for c in row) for row in np.atleast_2d(rows))
    if mx_class not in _MX_NUMERIC:
        raise ValueError(f'variable {name!r}: MATLAB class {mx_class} is not supported')
    mtype, payload, pos = _element(body, pos, order)
    values = _numbers(mtype, payload, order)
    return name, values.reshape(dims, order='F')


def save_mat_v5(path: str | os.PathLike, variables: dict[str, object]) -> None:
    """Write numeric arrays, strings and lists of strings as an uncompressed v5 .mat file
    (for tests and for converting mapping files; MATLAB and SciPy read it)."""

    def element(mtype: int, payload: bytes) -> bytes:
        pad = (-len(payload)) % 8
        return struct.pack('<II', mtype, len(payload)) + payload + b'\0' * pad

    def matrix(name: str, value: object) -> bytes:
        if isinstance(value, str):
            cls, dims = _MX_CHAR, (1, len(value))
            data = element(4, np.asarray([ord(c) for c in value], '<u2').tobytes())
        elif isinstance(value, list):
            cls, dims = _MX_CELL, (1, len(value))
            data = b''.join(matrix('', v) for v in value)
        else:
            arr = np.atleast_2d(np.asarray(value, np.float64))
            cls, dims = 6, arr.shape
            data = element(9, arr.ravel(order='F').astype('<f8').tobytes())
        body = (
            element(6, struct.pack('<II', cls, 0))
            + element(5, np.asarray(dims, '<i4').tobytes())
            + element(1, name.encode('ascii'))
            + data
        )
        return element(_MI_MATRIX, body)

    header = b'MATLAB 5.0 MAT-file, written by rgbd_seg_ros'.ljust(116) + b'\0' * 8
    header += struct.pack('<H', 0x0100) + b'IM'
    Path(path).write_bytes(header + b''.join(matrix(k, v) for k, v in variables.items()))
