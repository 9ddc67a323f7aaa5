"""Benchmarks, the demo and the recording replayer: tools built on the library, not part of it.

Nothing below ``tools`` is imported by the library layers (``core`` to ``ros``); only ``cli`` and
the console scripts reach in here.
"""
