"""VTrace's web page (``python main.py --web``): an entry point on top of the engine.

``web.jobs`` does the work with no Gradio import (sessions and their folders, building the
Config, running the songs through ``processors.engine.Engine``, re-blending kept stems, zips);
``web.app`` builds the Gradio page and its API on top of it and serves it.
"""

from utils.native_threads import quiet_idle_blas_threads

quiet_idle_blas_threads()
