"""Keep the memory a renderer frees in the process's heap, for the next pair to reuse.

A capture rendered at the camera's resolution allocates and frees tensors of 5–35 MB dozens of
times per pair. glibc's malloc hands memory back to the kernel when the top of its heap holds more
than its trim threshold free (and serves the largest blocks with mmap), so the next tensor of the
same size is new memory that the kernel zeroes page by page. Raising the trim threshold and the mmap
threshold (to its maximum, 32 MB on 64-bit) keeps that memory for reuse: 512² synthesis does 12 %
more pairs per CPU-second, the same bytes, and its peak memory stays within a few percent
(docs/benchmarks.md, "Synthesis speed after profiling").
"""

from __future__ import annotations

import ctypes
import sys
from functools import cache

# mallopt(3) parameters (malloc.h)
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3
SETTINGS = ((M_MMAP_THRESHOLD, 32 << 20), (M_TRIM_THRESHOLD, 1 << 30), (M_TOP_PAD, 256 << 20))


@cache
def reuse_freed_memory() -> bool:
    """Tell this process's malloc to keep freed large blocks (once per process); False where it cannot (no glibc)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library this process already runs on
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    taken = [mallopt(parameter, value) == 1 for parameter, value in SETTINGS]  # each, even if one is refused
    return all(taken)  # musl's stub returns 0
