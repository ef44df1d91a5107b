"""Settings native thread pools read once, when their library loads.

OpenBLAS (numpy's BLAS) starts a worker per core when numpy is imported, and each worker spins
on its core for about 2^28 cycles (a tenth of a second) before it sleeps: at start, and after
every BLAS call. Measured with perf on a four-minute post-processing run (2 cores): 20% of the
CPU samples were those workers spinning after the alignment's two dot products, and 8% the
spin at start, on the core the decoding and writing threads needed.
``OPENBLAS_THREAD_TIMEOUT=4`` (2^4 cycles, OpenBLAS's minimum) makes idle workers sleep at once;
BLAS calls still use every core. A user's own setting wins. OpenBLAS reads it when it loads,
so the packages whose modules import numpy (``audio_utils``, ``processors``, ``web``) call
``quiet_idle_blas_threads`` first thing; where numpy was imported earlier it is too late and
changes nothing.
"""

import os


def quiet_idle_blas_threads(environ=None):
    """Set ``OPENBLAS_THREAD_TIMEOUT=4`` in ``environ`` (default ``os.environ``) unless it is
    set. Returns the value in effect."""
    environ = os.environ if environ is None else environ
    return environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")
