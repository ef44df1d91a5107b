"""glibc malloc settings for model inference: keep freed memory for reuse.

A separation allocates and frees activations of tens to hundreds of MB for every model segment.
glibc serves blocks over its mmap threshold (128 KiB, rising to at most 32 MiB) with fresh
mmap'd pages and unmaps them on free, so every segment page-faults its whole working set in
again, and the kernel zeroes each page: measured with htdemucs on a 30 s clip, 2.6-3.4 million
minor faults and 7 of 40 CPU seconds in the kernel. Serving them from the heap instead, and
not trimming its top below ``TRIM_BYTES``, lets the next segment reuse the same pages: 0.3
million faults, under 1 s in the kernel, for about 90 MiB more at the median peak (README,
Benchmarks: issue 15, third set).

Kept pages are reused in place, but the heap's free holes can only grow with a long track's
mix of block sizes (measured: peak RSS 1285 MiB at 1 minute, 1496 MiB at 10 without
releasing, against 1316 and 1342 MiB with glibc's defaults), so the separator hands free pages
back with ``release_free_memory`` every ``RELEASE_EVERY_S`` of audio and after each track.

Process-wide and not undone: called when a separator loads its model (the separation process
or worker), never for stems-only runs. A user's own malloc settings in the environment win.
"""

import ctypes
import ctypes.util
import logging
import os
import sys

logger = logging.getLogger(__name__)

# mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
# Free memory at the heap's top above this goes back to the OS. Larger than one segment's
# working set (so the walk never trims), small enough that a finished track's memory is returned.
TRIM_BYTES = 512 * 2 ** 20
# Seconds of separated audio between two ``release_free_memory`` calls: each costs one re-fault
# of a segment's working set (a fraction of a second), against about 40 s of CPU separating.
RELEASE_EVERY_S = 60.0
# The environment variables through which a user tunes glibc malloc; any of them set: hands off.
USER_SETTINGS = ("MALLOC_MMAP_MAX_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_",
                 "MALLOC_TOP_PAD_", "MALLOC_ARENA_MAX")


def _user_tuned(environ) -> bool:
    return (any(name in environ for name in USER_SETTINGS)
            or "glibc.malloc." in environ.get("GLIBC_TUNABLES", ""))


def _glibc():
    """The process's glibc, or None (another platform or C library)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    # gnu_get_libc_version exists in glibc only (not musl)
    return libc if hasattr(libc, "gnu_get_libc_version") else None


def keep_freed_memory(environ=None) -> bool:
    """Make glibc malloc serve large blocks from the heap and keep up to ``TRIM_BYTES`` free at
    its top. Returns True when applied; False on other C libraries and platforms, or when the
    user set malloc variables (``USER_SETTINGS``, ``GLIBC_TUNABLES=glibc.malloc.*``).
    Idempotent."""
    environ = os.environ if environ is None else environ
    libc = None if _user_tuned(environ) else _glibc()
    if libc is None:
        return False
    mallopt = libc.mallopt
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    applied = bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_BYTES))
    if not applied:
        logger.debug("glibc mallopt refused the separation settings; keeping its defaults")
    return applied


def release_free_memory() -> None:
    """Return the free pages of every malloc arena to the OS (glibc ``malloc_trim(0)``); a
    no-op elsewhere."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim.argtypes, libc.malloc_trim.restype = [ctypes.c_size_t], ctypes.c_int
        libc.malloc_trim(0)
