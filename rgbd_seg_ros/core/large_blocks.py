"""Large blocks go back to the system when freed, so a few big frames do not keep their memory.

glibc's malloc serves a block above its mmap threshold with a mapping of its own, returned to
the system on free. By default, though, it raises that threshold to the size of the largest
such block freed so far (up to 32 MB on 64-bit systems): after a 4000 x 3000 frame, blocks of
10-30 MB (the frame's bytes, its decoded copy, the depth) come from the heap instead, whose
free space is rarely given back, and the process stays hundreds of megabytes larger for good.
Setting the threshold turns that adjustment off. At :data:`LARGE_BLOCK_BYTES` (8 MB) the
buffers of a frame within the node's input bound stay on the heap as before (every per-frame
buffer of a 640 x 480 frame is smaller), and anything larger is returned when freed.

Fixing that threshold also fixes glibc's trim threshold, the free space at the top of a heap
above which free() hands memory back, at its 128 KB default (it, too, would otherwise grow
with the mmap threshold). The node then gave back and faulted in again every frame's buffers:
measured with every output subscribed on the 2-core VM, 54,000 page faults a second and 19 %
of a core in the kernel. :data:`KEEP_FREE_BYTES` (64 MB) keeps a few frames' worth of free
heap mapped: 500 faults a second and 4 % of a core in the kernel, and at most 64 MB per heap
held beyond what is in use.

A threshold set by the user (glibc's ``MALLOC_MMAP_THRESHOLD_`` or ``MALLOC_TRIM_THRESHOLD_``)
is left as it is; elsewhere than glibc this does nothing. Standard library only, so any
process may call it.
"""

from __future__ import annotations

import ctypes
import os

LARGE_BLOCK_BYTES = 8 << 20
KEEP_FREE_BYTES = 64 << 20
# mallopt parameters, from glibc's malloc.h, and the variables a user sets them with
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_USER_SETTING = 'MALLOC_MMAP_THRESHOLD_'
_USER_TRIM_SETTING = 'MALLOC_TRIM_THRESHOLD_'


def return_large_blocks(threshold: int = LARGE_BLOCK_BYTES, keep: int = KEEP_FREE_BYTES) -> bool:
    """Fix malloc's mmap threshold at ``threshold`` bytes and its trim threshold at ``keep``
    bytes; True when the mmap threshold was set here."""
    if _USER_SETTING in os.environ:
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc (or no C library symbols to look up)
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    if _USER_TRIM_SETTING not in os.environ:
        mallopt(_M_TRIM_THRESHOLD, keep)
    return bool(mallopt(_M_MMAP_THRESHOLD, threshold))
