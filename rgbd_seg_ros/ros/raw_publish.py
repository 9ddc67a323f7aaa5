"""Publishing serialised messages with the GIL released.

rclpy's ``Publisher.publish`` of bytes copies them into a C++ string and calls rcl with the GIL
held throughout, so for the 12 MB of outputs of a 640x480 frame the node's other thread, the
executor that takes the next camera frame, waits 10-20 ms a frame (the middleware's own copy and
its delivery over shared memory happen inside that call). Here rcl's public C function
``rcl_publish_serialized_message`` is called through ctypes, which releases the GIL for the
call, on the publisher's rcl handle (``Publisher.handle.pointer``, the address rclpy exposes for
this kind of use), held open for the call as rclpy's own ``publish`` holds it, from one buffer
the message's parts are copied into (the copy rclpy makes into its string). rcl copies the
message before it returns, as the rmw contract for serialised messages requires.

The C library is the one rclpy itself loaded (found in ``/proc/self/maps``), never another copy
on the library path. Where it cannot be found (not Linux) or rclpy's handle has no address,
``RawPublisher`` publishes through rclpy as before.
"""

from __future__ import annotations

import ctypes
import re
from pathlib import Path
from typing import Any

from rgbd_seg_ros.ros.serialized import SerializedParts

_RCL_RET_OK = 0
_MAPS = '/proc/self/maps'


class _Allocator(ctypes.Structure):
    """rcutils_allocator_t (unused by the call: rclpy passes a zero one too)."""

    _fields_ = (
        ('allocate', ctypes.c_void_p),
        ('deallocate', ctypes.c_void_p),
        ('reallocate', ctypes.c_void_p),
        ('zero_allocate', ctypes.c_void_p),
        ('state', ctypes.c_void_p),
    )


class _SerializedMessage(ctypes.Structure):
    """rcl_serialized_message_t, i.e. rcutils_uint8_array_t."""

    _fields_ = (
        ('buffer', ctypes.c_void_p),
        ('buffer_length', ctypes.c_size_t),
        ('buffer_capacity', ctypes.c_size_t),
        ('allocator', _Allocator),
    )


class _ErrorString(ctypes.Structure):
    """rcutils_error_string_t."""

    _fields_ = (('str', ctypes.c_char * 1024),)


def loaded_library(pattern: re.Pattern[str], maps: str = _MAPS) -> str | None:
    """Path of the library already mapped into this process whose file name matches."""
    try:
        text = Path(maps).read_text()
    except OSError:
        return None
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 6 and _matches(pattern, fields[-1]):
            return fields[-1]
    return None


def _matches(pattern: re.Pattern[str], path: str) -> bool:
    return path.startswith('/') and pattern.match(path.rsplit('/', 1)[-1]) is not None


class RawPublisher:
    """Publishes ``SerializedParts`` on rclpy publishers without holding the GIL."""

    RCL = re.compile(r'^librcl\.so(\.\d+)*$')
    RCUTILS = re.compile(r'^librcutils\.so(\.\d+)*$')

    def __init__(self, maps: str = _MAPS) -> None:
        """``maps``: where this process's mapped libraries are listed (a test points it at a
        list without rcl to exercise the fallback)."""
        self._publish_c: Any = None
        self._error: Any = None
        self._reset: Any = None
        rcl = loaded_library(self.RCL, maps)
        if rcl is None:
            return
        function = ctypes.CDLL(rcl).rcl_publish_serialized_message
        function.argtypes = (
            ctypes.c_void_p,
            ctypes.POINTER(_SerializedMessage),
            ctypes.c_void_p,
        )
        function.restype = ctypes.c_int
        self._publish_c = function
        rcutils = loaded_library(self.RCUTILS, maps)
        if rcutils is not None:
            library = ctypes.CDLL(rcutils)
            self._error = library.rcutils_get_error_string
            self._error.argtypes = ()
            self._error.restype = _ErrorString
            self._reset = library.rcutils_reset_error
            self._reset.argtypes = ()
            self._reset.restype = None

    @property
    def releases_gil(self) -> bool:
        """Whether publishing goes through rcl directly (False: through rclpy)."""
        return self._publish_c is not None

    def publish(self, publisher: Any, message: SerializedParts) -> None:
        """Publish ``message`` on the rclpy ``publisher``; errors as rclpy raises them
        (``InvalidHandle`` for a destroyed publisher, RuntimeError when rcl fails)."""
        handle = publisher.handle
        if self._publish_c is None or not hasattr(handle, 'pointer'):
            publisher.publish(message.join())
            return
        buffer = message.contiguous()
        serialized = _SerializedMessage(buffer.ctypes.data, buffer.size, buffer.size)
        with handle:  # the publisher cannot be destroyed during the call
            ret = self._publish_c(handle.pointer, ctypes.byref(serialized), None)
        if ret != _RCL_RET_OK:
            raise RuntimeError(f'failed to publish on {publisher.topic_name}: {self._rcl_error()}')

    def _rcl_error(self) -> str:
        if self._error is None or self._reset is None:
            return 'rcl error (no detail)'
        text: str = self._error().str.decode(errors='replace')
        self._reset()
        return text
