"""Files that appear complete or not at all: temporary names, renames, and their cleanup.

Every file VTrace writes goes to a temporary name in its final folder (``TMP_MARK`` in the
name) or into a work folder (``WORK_PREFIX``), and is renamed into place when complete, so an
interrupted run never leaves a file that looks finished. ``is_temp`` says whether a path is
one of those; ``remove_stale_temps`` deletes what an interrupted run left. ``output_lock``
keeps a second run out of an output folder in use, whose temporary files are live.

Plumbing: imports nothing from audio_utils/ or processors/.
"""

import errno
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

from utils.errors import OutputError, UsageError

TMP_MARK = ".vtrace-tmp"
WORK_PREFIX = ".vtrace-work-"
LOCK_NAME = ".vtrace.lock"  # in the output folder while a run uses it (not a temporary file)
_UMASK = os.umask(0)
os.umask(_UMASK)


def no_space(folder, exc):
    """An OutputError "no space left on <folder>" when ``exc``, raised writing in ``folder``,
    means the disk (or the user's quota) is full, else None. libsndfile words a failed write
    "System error" without the errno: then the file system's free blocks decide."""
    if isinstance(exc, OutputError):
        return None
    full = isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)
    if not full and not isinstance(exc, OSError) and "system error" in str(exc).lower():
        try:
            full = os.statvfs(folder).f_bavail == 0
        except (OSError, AttributeError):  # no statvfs on Windows
            full = False
    return OutputError(f"no space left on {folder}; free some space and run again") \
        if full else None


def new_temp(final_path, suffix):
    """A temporary file next to ``final_path`` with the permissions a plain open() would give
    (mkstemp's are owner-only)."""
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{final_path.stem[:80]}", suffix=TMP_MARK + suffix,
                                   dir=final_path.parent)
    except OSError as exc:
        full = no_space(final_path.parent, exc)
        if full is not None:
            raise full from None
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


@contextmanager
def output_lock(folder, label="output", fix="give another -o", lock_path=None):
    """Hold the lock of output folder ``folder`` (which must exist) for the ``with`` block.

    An exclusive ``flock`` on ``folder/.vtrace.lock``, which holds the pid of the run that owns
    it and is removed when the block ends (the kernel drops the lock of a run that dies, so a
    killed run never locks a folder for good). Another run holding it raises UsageError
    naming the folder (as ``label=folder``), that run's pid and ``fix``. ``lock_path``: another
    lock file than ``folder/.vtrace.lock`` (its folder must exist). Where ``flock`` does not exist (Windows) or the file
    system refuses it, the block runs unlocked.
    """
    folder = Path(folder)
    try:
        import fcntl
    except ImportError:
        yield None
        return
    path = Path(lock_path) if lock_path is not None else folder / LOCK_NAME
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666 & ~_UMASK)
        except OSError as exc:
            raise UsageError(f"{label}={folder}: cannot write in it ({exc.strerror}); give "
                             "a folder that can be written") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            other = _read_pid(fd)
            os.close(fd)
            raise UsageError(f"{label}={folder} is in use by another VTrace run (pid "
                             f"{other or 'unknown'}); wait for it to end or {fix}") from None
        except OSError:  # no locks on this file system: run as before
            os.close(fd)
            yield None
            return
        # The run that held it may have removed the file just before: lock the one on disk.
        try:
            st, now = os.fstat(fd), os.stat(path)
            if (st.st_dev, st.st_ino) == (now.st_dev, now.st_ino):
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
    except OSError:
        pass  # the lock holds without the pid
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)  # still locked: nobody can take a file about to vanish
        os.close(fd)


def _read_pid(fd):
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None
