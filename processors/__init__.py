"""The stages and the engine: the pure core (vtrace_core), Demucs separation and its stream,
rendering, the per-track pipeline, evaluation, the Engine every front door calls, progress
reporting and the batch of worker processes.

May import: audio_utils/, utils/ and third-party packages. Never the entry points
(main.py, config_loader.py, logger.py): the Config reaches the engine as an object.
"""

from utils.native_threads import quiet_idle_blas_threads

quiet_idle_blas_threads()
