"""Finding inputs and naming tracks: folders expanded into TrackInputs with unique, safe
names, the identity of an input file, and the default output folder.

Plumbing: imports nothing from audio_utils/ or processors/.
"""

import hashlib
import logging
import os
import re
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
    ``max_bytes`` UTF-8 bytes (never splitting a character); never empty ("untitled")."""
    text = unicodedata.normalize("NFC", str(s))
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

    Folders are scanned for AUDIO_EXTENSIONS (descending with ``recursive``); folders in
    ``exclude`` (the output and separated folders) are never scanned. A missing path is a
    UsageError; a named file with another extension is kept (its decoding decides).
    """
    excluded = {_resolved(e) for e in exclude if e}
    found = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            walker = p.rglob("*") if recursive else p.iterdir()
            files = []
            for f in walker:
                if any(_inside(f, e) for e in excluded) or f.name.startswith("."):
                    continue
                if f.suffix.lower() in AUDIO_EXTENSIONS and (f.is_file() or f.is_symlink()):
                    files.append(f)
            found.extend(sorted(files))
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
        if name.lower() in used:  # a/song.wav and b/song.mp3 must not overwrite each other
            name = f"{sanitize_name(f.stem, MAX_NAME_BYTES - 7)}-{_short_hash(key)}"
            separated = name
        used.add(name.lower())
        tracks.append(TrackInput(f, name, (), separated))
    return tracks


def file_identity(path):
    """What identifies an input's content for resume: size, mtime and a hash of its ends."""
    path = Path(path)
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
    return {"path": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns,
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


def default_output_dir(first_input):
    p = Path(first_input)
    base = p if p.is_dir() else p.parent
    return base / "vtrace_output"


def _resolved(p):
    try:
        return Path(p).resolve()
    except OSError:
        return Path(os.path.abspath(p))


def _inside(path, folder):
    try:
        _resolved(path).relative_to(folder)
        return True
    except ValueError:
        return False


def _short_hash(path):
    return hashlib.sha1(str(path).encode("utf-8", "surrogateescape")).hexdigest()[:6]
