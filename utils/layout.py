"""The separated/ layout: where a track's stems live.

The layout is Demucs' own: ``<separated_dir>/<model>/<track>/{vocals,no_vocals}.<ext>``.
VTrace writes it, reuses it when present, and accepts stems other tools placed there.

Plumbing: imports nothing from audio_utils/ or processors/.
"""

from pathlib import Path

from utils.inputs import SOUNDFILE_EXTENSIONS


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
