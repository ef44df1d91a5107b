"""Primitives on float32 ``(channels, samples)`` arrays and audio files: checks, reading and
writing in blocks, decoding and encoding, channel/rate/length matching, alignment, filters and
gates, loudness, and metrics.

May import: utils/ and third-party packages. Never processors/ or the entry points.
"""

from utils.native_threads import quiet_idle_blas_threads

quiet_idle_blas_threads()
