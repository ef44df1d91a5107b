"""Files that appear complete or not at all: temporary names, renames, and their cleanup.

Every file VTrace writes goes to a temporary name in its final folder (``TMP_MARK`` in the
name) or into a work folder (``WORK_PREFIX``), and is renamed into place when complete, so an
interrupted run never leaves a file that looks finished. ``is_temp`` says whether a path is
one of those; ``remove_stale_temps`` deletes what an interrupted run left.

Plumbing: imports nothing from audio_utils/ or processors/.
"""

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

from utils.errors import OutputError

TMP_MARK = ".vtrace-tmp"
WORK_PREFIX = ".vtrace-work-"
_UMASK = os.umask(0)
os.umask(_UMASK)


def new_temp(final_path, suffix):
    """A temporary file next to ``final_path`` with the permissions a plain open() would give
    (mkstemp's are owner-only)."""
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{final_path.stem[:80]}", suffix=TMP_MARK + suffix,
                                   dir=final_path.parent)
    except OSError as exc:
        raise OutputError(f"cannot write in folder={str(final_path.parent)!r}: "
                          f"{exc.strerror}; check it exists and is writable") from None
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_UMASK)
    return Path(tmp)


def is_temp(path):
    """True when ``path`` is a temporary file or work folder of VTrace's (either scheme)."""
    name = Path(path).name
    return TMP_MARK in name or name.startswith(WORK_PREFIX)


@contextmanager
def atomic_path(final_path):
    """Yield a temporary path next to ``final_path``; rename it over ``final_path`` on success.

    On any error (Ctrl-C included) the temporary file is removed, so an interrupted run never
    leaves a file that looks finished.
    """
    final_path = Path(final_path)
    final_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = new_temp(final_path, final_path.suffix)
    try:
        yield tmp
        os.replace(tmp, final_path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path, text):
    """Write ``text`` to ``path`` through a temporary file and a rename."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def remove_stale_temps(folder):
    """Delete temporary files and work folders an interrupted earlier run left in ``folder``."""
    folder = Path(folder)
    if folder.is_dir():
        for p in folder.iterdir():
            if not is_temp(p):
                continue
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
