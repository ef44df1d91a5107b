"""Logging, set up once per run: console on stderr and one DEBUG file per run under logs/.

Modules only call ``logging.getLogger(__name__)``; ``setup_logging`` is called by ``main``.
"""

import errno
import logging
import os
import sys
import time
from pathlib import Path

_HANDLER_MARK = "_vtrace_handler"


def setup_logging(level="INFO", quiet=False, log_dir="logs", keep=20):
    """Configure the root logger; returns the path of this run's log file (or None).

    Console: ``level`` (WARNING with ``quiet``), short lines on stderr. File: everything at
    DEBUG with timestamps, ``<log_dir>/vtrace_<date>_<time>_<pid>.log``, created at its first
    line (a run that ends with a usage error leaves none); the ``keep`` newest run logs are
    kept, older ones deleted. Calling it again (tests call ``main`` many times) replaces the
    handlers instead of adding more.
    """
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, _HANDLER_MARK, False):
            root.removeHandler(h)
            h.close()
    root.setLevel(logging.DEBUG)

    console = logging.StreamHandler(sys.stderr)
    console.setLevel(logging.WARNING if quiet else getattr(logging, level))
    console.setFormatter(logging.Formatter("%(levelname)s: %(message)s"
                                           if level == "DEBUG" else "%(message)s"))
    _add(root, console)

    log_path = None
    try:
        folder = Path(log_dir)
        folder.mkdir(parents=True, exist_ok=True)
        _prune(folder, keep - 1)  # this run's file makes ``keep``
        log_path = folder / time.strftime(f"vtrace_%Y%m%d_%H%M%S_{os.getpid()}.log")
        file_handler = _LogFile(log_path, encoding="utf-8", delay=True)
        file_handler.setLevel(logging.DEBUG)
        file_handler.setFormatter(logging.Formatter(
            "%(asctime)s %(levelname)-7s %(processName)s %(name)s: %(message)s"))
        _add(root, file_handler)
    except OSError as exc:
        logging.getLogger(__name__).warning("log_dir=%s: cannot write a log file (%s); "
                                            "logging to the console only", log_dir, exc)
    # Third-party chatter stays in the file unless debugging.
    for noisy in ("numba", "matplotlib", "urllib3", "PIL", "httpx", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return log_path


def _prune(folder, keep):
    """Delete all but the ``keep`` newest ``vtrace_*.log`` files in ``folder``."""
    logs = sorted(folder.glob("vtrace_*.log"), key=lambda p: (p.stat().st_mtime_ns, p.name))
    for old in logs[:max(0, len(logs) - max(0, keep))]:
        try:
            old.unlink()
        except OSError:
            pass


def _add(root, handler):
    setattr(handler, _HANDLER_MARK, True)
    root.addHandler(handler)


class _LogFile(logging.FileHandler):
    """The run's log file. When it cannot be written (a full disk), it says so once on stderr
    and stops, instead of logging's traceback for every record; the console goes on."""

    broken = False

    def emit(self, record):
        if not self.broken:
            super().emit(record)

    def handleError(self, record):
        exc = sys.exc_info()[1]
        if not isinstance(exc, OSError):
            super().handleError(record)  # a bad format string: logging's own report
            return
        self.broken = True
        folder = Path(self.baseFilename).parent
        why = (f"no space left on {folder}" if exc.errno in (errno.ENOSPC, errno.EDQUOT)
               else exc.strerror or str(exc))
        try:
            sys.stderr.write(f"vtrace: log file {self.baseFilename}: {why}; logging to the "
                             "console only\n")
        except (OSError, ValueError):
            pass
