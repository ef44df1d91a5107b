"""The separated/ layout: where a track's stems live.

The layout is Demucs' own: ``<separated_dir>/<model>/<track>/{vocals,no_vocals}.<ext>``.
VTrace writes it, reuses it when present, and accepts stems other tools placed there.

Plumbing: imports nothing from audio_utils/ or processors/.
"""

import json
from pathlib import Path

from utils.atomic_files import write_text_atomic
from utils.inputs import SOUNDFILE_EXTENSIONS

# Beside the stems VTrace writes: what they were separated from (the mix's content hash, the
# model and its settings) and the identity of each stem file as written.
STEMS_RECORD = "vtrace_stems.json"


def model_folder(model):
    """The folder Demucs names after a model (``hf://org/name`` becomes ``org_name``)."""
    return model.replace("hf://", "").replace("/", "_")


def stem_paths(separated_dir, model, track):
    """``(vocals, no_vocals)`` paths of a track's stems if both exist, else None.

    Any audio extension (WAV first); Spleeter's ``accompaniment`` is taken for ``no_vocals``.
    """
    folder = stems_folder(separated_dir, model, track)
    out = []
    for names in (("vocals",), ("no_vocals", "accompaniment")):
        found = [folder / f"{n}{ext}" for n in names
                 for ext in SOUNDFILE_EXTENSIONS]
        found = [p for p in found if p.is_file()]
        if not found:
            return None
        out.append(found[0])
    return tuple(out)


def stems_folder(separated_dir, model, track):
    return Path(separated_dir) / model_folder(model) / track


def read_stems_record(folder):
    """The record VTrace wrote beside a folder's stems, or None (stems of another tool, or a
    record that cannot be read)."""
    try:
        record = json.loads((Path(folder) / STEMS_RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def write_stems_record(folder, record):
    write_text_atomic(Path(folder) / STEMS_RECORD, json.dumps(record, indent=2))


def remove_stems_record(folder):
    (Path(folder) / STEMS_RECORD).unlink(missing_ok=True)
