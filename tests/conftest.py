"""Shared fixtures: songs synthesized in numpy, written in Demucs' separated layout."""

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

SR = 44100


def tone_mix(seconds=3.0, sr=SR, seed=0, channels=2):
    """A synthetic song: ``(vocals, instrumental)`` float32 ``(channels, samples)``.

    The instrumental has a bass line and noise bursts, the vocal a vibrato tone in phrases, so
    the cross-correlation has a single clear peak and both stems are non-trivial.
    """
    rng = np.random.default_rng(seed)
    n = int(seconds * sr)
    t = np.arange(n) / sr
    bass = 0.25 * np.sin(2 * np.pi * 55 * t) * (1 + 0.5 * np.sin(2 * np.pi * 2 * t))
    hats = 0.08 * rng.standard_normal(n) * (np.sin(2 * np.pi * 4 * t) > 0.7)
    inst = np.stack([bass + hats, bass - 0.5 * hats])[:channels]
    phrase = (np.sin(2 * np.pi * 0.5 * t) > -0.2).astype(float)
    voc = 0.3 * np.sin(2 * np.pi * (440 * t + 3 * np.sin(2 * np.pi * 5 * t))) * phrase
    vocals = np.stack([voc, 0.8 * voc])[:channels]
    return vocals.astype(np.float32), inst.astype(np.float32)


def write(path, x, sr=SR, subtype="FLOAT"):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), x.T, sr, subtype=subtype)
    return path


def leftovers(root):
    """Temporary files and work folders of VTrace's anywhere under ``root`` (the code's own
    ``is_temp`` decides, so a new temporary scheme cannot slip past these checks)."""
    from utils.atomic_files import is_temp

    root = Path(root)
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if is_temp(p)) \
        if root.exists() else []


def read(path):
    data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    return data.T, sr


@pytest.fixture
def song(tmp_path):
    """A song ``mix.wav`` plus its stems in ``separated/test/mix/``; returns a dict."""
    vocals, inst = tone_mix()
    mix = vocals + inst
    songs = tmp_path / "songs"
    write(songs / "mix.wav", mix)
    sep = tmp_path / "separated"
    write(sep / "test" / "mix" / "vocals.wav", vocals)
    write(sep / "test" / "mix" / "no_vocals.wav", inst)
    return {"dir": songs, "mix_path": songs / "mix.wav", "sep": sep, "mix": mix,
            "vocals": vocals, "inst": inst, "tmp": tmp_path}


@pytest.fixture(autouse=True)
def _absl_handler_on_the_real_stderr():
    """absl's logging handler (imported by a RoFormer model's dependencies) keeps the
    sys.stderr of its import, here pytest's capture file, and closes that file when a later
    ``logging.config.dictConfig`` (uvicorn's, under the web page) shuts handlers down; pytest
    then fails writing its own capture. Point it at the real stderr, which absl never closes."""
    yield
    import sys

    absl_logging = sys.modules.get("absl.logging")
    if absl_logging is not None:
        absl_logging.get_absl_handler().python_handler.stream = sys.__stderr__
