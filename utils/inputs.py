"""Finding inputs and naming tracks: folders expanded into TrackInputs with unique, safe
names, the identity of an input file, and the default output folder.

Plumbing: imports nothing from audio_utils/ or processors/.
"""

import errno
import hashlib
import logging
import os
import re
import stat
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from utils.errors import InputError, UsageError

log = logging.getLogger(__name__)

# soundfile (libsndfile >= 1.1 for MP3) reads the first group directly, in this order of
# preference; the rest go through ffmpeg. Together: what the CLI scans folders for.
SOUNDFILE_EXTENSIONS = (".wav", ".flac", ".mp3", ".ogg", ".aiff", ".aif")
FFMPEG_EXTENSIONS = (".m4a", ".aac", ".opus", ".webm")
AUDIO_EXTENSIONS = SOUNDFILE_EXTENSIONS + FFMPEG_EXTENSIONS
MAX_NAME_BYTES = 200
_WINDOWS_RESERVED = re.compile(r"^(con|prn|aux|nul|com\d|lpt\d)(\..*)?$", re.IGNORECASE)


@dataclass(frozen=True)
class TrackInput:
    """One track to process: where its audio is and what it is called in outputs."""

    path: Path
    name: str
    meta: tuple = ()  # (key, value) pairs from a download: title, uploader, url...
    separated_name: str = ""  # folder under separated/<model>/; Demucs uses the file's stem

    @property
    def stems_name(self):
        return self.separated_name or self.name


def sanitize_name(s, max_bytes=MAX_NAME_BYTES):
    """A name safe for one path component: no separators, no control/format characters
    (bidi overrides included), no leading dots/dashes, no Windows reserved names, at most
    ``max_bytes`` UTF-8 bytes (never splitting a character); never empty ("untitled").
    Bytes of a file name that were not UTF-8 (``os.fsdecode``'s surrogate escapes, e.g. a
    Latin-1 ``caf\xe9``) are read as Latin-1, so the name stays recognisable ("café")."""
    text = unicodedata.normalize("NFC", _unescape_bytes(str(s)))
    # Category C covers control, format (U+202E...), surrogates and unassigned code points.
    text = "".join(" " if unicodedata.category(c)[0] == "C" else c for c in text)
    text = re.sub(r'[/\\:*?"<>|]', "_", text)
    text = re.sub(r"\s+", " ", text).strip()
    text = text.lstrip(".-_ ")
    text = text.encode("utf-8")[:max(int(max_bytes), 1)].decode("utf-8", errors="ignore")
    text = text.rstrip(" .")  # Windows drops trailing dots/spaces, making names collide
    if _WINDOWS_RESERVED.match(text):
        text = ("_" + text).encode("utf-8")[:max_bytes].decode("utf-8", errors="ignore")
    return text or "untitled"


def collect_inputs(paths, recursive=False, exclude=()):
    """Expand files and folders into TrackInputs, in a stable order, with unique names.

    Folders are scanned for AUDIO_EXTENSIONS (descending with ``recursive``, following links
    to folders but never around a loop). Folders in ``exclude`` (the output, separated,
    download and log folders) are not scanned, except one that is, or holds, the input
    folder itself (``-o`` equal to or above ``-i``): there only VTrace's own per-track output
    folders (holding ``<folder>_vtrace.json``) are skipped. An entry named like audio that is
    not a regular file (a FIFO, a socket, a link loop, a dangling link) is kept as a track,
    which then fails alone with its reason; it is never opened here. A missing path is a
    UsageError; a named file with another extension is kept (its decoding decides).
    """
    excluded = {_resolved(e) for e in exclude if e}
    found = []
    for raw in paths:
        p = Path(raw)
        if _is_dir(p):
            root = _resolved(p)
            whole = {e for e in excluded if not _inside(root, e)}
            found.extend(sorted(_scan(p, recursive, whole)))
        elif p.exists() or p.is_symlink():
            found.append(p)
        else:
            raise UsageError(f"input={raw}: no such file or folder")
    tracks, seen_paths, used = [], set(), set()
    for f in found:
        key = _resolved(f)
        if key in seen_paths:
            continue
        seen_paths.add(key)
        name, separated = sanitize_name(f.stem), f.stem
        if _unescape_bytes(f.stem) != f.stem:
            separated = name  # stems folders and manifests get valid UTF-8 names
        if name.lower() in used:  # a/song.wav and b/song.mp3 must not overwrite each other
            name = f"{sanitize_name(f.stem, MAX_NAME_BYTES - 7)}-{_short_hash(key)}"
            separated = name
        used.add(name.lower())
        tracks.append(TrackInput(f, name, (), separated))
    return tracks


def file_identity(path):
    """What identifies an input's content for resume: size, mtime and a hash of its ends."""
    path = Path(path)
    check_regular(path)
    try:
        st = path.stat()
        h = hashlib.sha256()
        with open(path, "rb") as f:
            h.update(f.read(1 << 16))
            if st.st_size > 1 << 17:
                f.seek(-(1 << 16), os.SEEK_END)
                h.update(f.read(1 << 16))
    except FileNotFoundError:
        raise InputError(f"{path}: file not found (dangling link?)") from None
    except OSError as exc:
        raise InputError(f"{path.name}: cannot read file ({exc.strerror or exc})") from None
    return {"path": display_path(_resolved(path)), "size": st.st_size, "mtime_ns": st.st_mtime_ns,
            "sha256_ends": h.hexdigest()}


def content_hash(path, chunk=1 << 20):
    """SHA-256 of the whole file (hex): what binds stems to the mix they came from, wherever
    the file is and whatever its mtime."""
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            while block := f.read(chunk):
                h.update(block)
    except OSError as exc:
        raise InputError(f"{Path(path).name}: cannot read file ({exc.strerror or exc})") \
            from None
    return h.hexdigest()


def check_regular(path):
    """Raise InputError (one line) unless ``path`` is a regular file (following links);
    never opens it, so a FIFO or a device cannot block."""
    path = Path(path)
    try:
        st = os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            why = "is a symbolic link loop"
        elif exc.errno == errno.ENOENT:
            why = ("is a dangling link (its target is not found)" if path.is_symlink()
                   else "is not found")
        else:
            why = f"cannot be read ({exc.strerror or exc})"
        raise InputError(f"{display_path(path)} {why}; point VTrace at an audio file") from None
    if not stat.S_ISREG(st.st_mode):
        kind = ("a folder" if stat.S_ISDIR(st.st_mode) else
                "a FIFO (named pipe)" if stat.S_ISFIFO(st.st_mode) else
                "a socket" if stat.S_ISSOCK(st.st_mode) else
                "a device" if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) else
                "special")
        raise InputError(f"{display_path(path)}: not a regular file ({kind}); give an audio "
                         "file")
    return st


def display_path(path):
    """``str(path)`` as valid UTF-8: bytes of a non-UTF-8 name shown as ``\\xe9``, so logs,
    summaries and JSON manifests can always hold it."""
    return os.fsencode(str(path)).decode("utf-8", "backslashreplace")


def default_output_dir(first_input):
    p = Path(first_input)
    base = p if p.is_dir() else p.parent
    return base / "vtrace_output"


def _resolved(p):
    try:
        return Path(p).resolve()
    except (OSError, RuntimeError):  # RuntimeError: a symlink loop (Python < 3.13)
        return Path(os.path.abspath(p))


def _is_dir(p):
    try:
        return stat.S_ISDIR(os.stat(p).st_mode)
    except OSError:
        return False


def _scan(folder, recursive, excluded):
    """Audio-named entries under ``folder``; never follows a folder link around a loop and
    never opens a file. ``excluded``: folders skipped whole."""
    files, seen, todo = [], set(), [Path(folder)]
    while todo:
        d = todo.pop()
        try:
            st = os.stat(d)
            entries = sorted(os.scandir(d), key=lambda e: e.name)
        except OSError as exc:
            log.warning("%s: cannot list folder (%s); skipped", display_path(d),
                        exc.strerror or exc)
            continue
        if (st.st_dev, st.st_ino) in seen:
            continue  # a link back to a folder already scanned
        seen.add((st.st_dev, st.st_ino))
        for entry in entries:
            path = Path(entry.path)
            if entry.name.startswith(".") or any(_inside(path, e) for e in excluded):
                continue
            try:
                is_dir = entry.is_dir()  # follows links; False for a loop or dangling link
            except OSError:
                is_dir = False
            if is_dir:
                if recursive and not _is_own_output(path):
                    todo.append(path)
            elif path.suffix.lower() in AUDIO_EXTENSIONS:
                files.append(path)
    return files


def _is_own_output(folder):
    """A per-track output folder of VTrace's: it holds ``<folder name>_vtrace.json``."""
    return (folder / f"{folder.name}_vtrace.json").is_file()


def _unescape_bytes(text):
    # os.fsdecode maps an undecodable byte 0xNN to U+DCNN; read it as Latin-1 instead.
    return re.sub("[\udc80-\udcff]", lambda m: chr(ord(m.group()) - 0xDC00), text)


def _inside(path, folder):
    try:
        _resolved(path).relative_to(folder)
        return True
    except ValueError:
        return False


def _short_hash(path):
    return hashlib.sha1(str(path).encode("utf-8", "surrogateescape")).hexdigest()[:6]
