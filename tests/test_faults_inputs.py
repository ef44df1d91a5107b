"""Issue 12: inputs a real machine has (bad directory entries, odd names, half-copied files,
an output folder among the songs). Each test failed before its fix; all are small and fast."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import read, tone_mix, write

ROOT = Path(__file__).resolve().parents[1]


def _song(folder, name="mix", seconds=1.0, seed=0):
    """A song ``folder/<name>.wav`` and its stems in ``folder/../separated/test/<name>/``."""
    vocals, inst = tone_mix(seconds, seed=seed)
    mix = write(Path(folder) / f"{name}.wav", vocals + inst)
    sep = Path(folder).parent / "separated" / "test" / name
    write(sep / "vocals.wav", vocals)
    write(sep / "no_vocals.wav", inst)
    return mix


def _cli(tmp_path, *args, timeout=60):
    """Run main.py in a child process (a hang fails the test instead of blocking it)."""
    cmd = [sys.executable, str(ROOT / "main.py"), "--model", "test",
           "--separated-dir", str(tmp_path / "separated"), "--log-dir", str(tmp_path / "logs"),
           "--quiet", "--device", "cpu", *map(str, args)]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run(cmd, capture_output=True, timeout=timeout, cwd=tmp_path, env=env)
    return proc.returncode, proc.stdout.decode("utf-8", "replace"), \
        proc.stderr.decode("utf-8", "replace")


# ---- item 11: one bad directory entry must not stop the batch ---------------------------

def test_symlink_loops_and_fifo_fail_alone(tmp_path):
    songs = tmp_path / "songs"
    _song(songs)
    (songs / "loop.wav").symlink_to("loop.wav")            # a link to itself
    (songs / "a.flac").symlink_to("b.flac")                 # two links to each other
    (songs / "b.flac").symlink_to("a.flac")
    (songs / "sub").mkdir()
    (songs / "sub" / "back").symlink_to("..")               # a folder loop for --recursive
    os.mkfifo(songs / "pipe.wav")                           # nobody ever writes to it
    rc, out, err = _cli(tmp_path, "-i", songs, "--recursive", "-o", tmp_path / "out")
    assert rc == 1, err
    assert "Traceback" not in out + err
    assert "1 ok" in out and "4 failed" in out, out
    assert (tmp_path / "out" / "test" / "mix" / "mix_blended.wav").is_file()
    lines = out.splitlines()
    assert any("pipe" in ln and "not a regular file" in ln for ln in lines), out
    assert any("loop" in ln and "symbolic link loop" in ln for ln in lines), out


def test_fifo_given_as_input_fails_without_hanging(tmp_path):
    songs = tmp_path / "songs"
    mix = _song(songs)
    fifo = tmp_path / "stream.wav"
    os.mkfifo(fifo)
    rc, out, err = _cli(tmp_path, "-i", mix, fifo, "-o", tmp_path / "out", timeout=60)
    assert rc == 1 and "1 ok" in out and "1 failed" in out, out + err
    assert "not a regular file" in out and "Traceback" not in out + err


def test_file_identity_never_opens_a_fifo(tmp_path):
    from utils.errors import InputError
    from utils.inputs import file_identity
    fifo = tmp_path / "p.wav"
    os.mkfifo(fifo)
    with pytest.raises(InputError, match="not a regular file"):
        file_identity(fifo)


# ---- item 16: output folder equal to, or a parent of, the input folder -------------------

def test_output_folder_equal_to_input_folder(tmp_path):
    songs = tmp_path / "songs"
    _song(songs, "one")
    _song(songs, "two", seed=1)
    rc, out, err = _cli(tmp_path, "-i", songs, "-o", songs)
    assert rc == 0 and "2 ok" in out, out + err
    assert (songs / "test" / "one" / "one_blended.wav").is_file()
    # A rerun, even recursive, sees the same two songs and none of VTrace's outputs.
    rc, out, err = _cli(tmp_path, "-i", songs, "-o", songs, "--recursive")
    assert rc == 0 and "2 skipped" in out and "blended" not in out, out + err


def test_output_folder_parent_of_input_folder(tmp_path):
    album = tmp_path / "songs" / "album"
    _song(album, "one")
    rc, out, err = _cli(tmp_path, "-i", album, "-o", tmp_path / "songs",
                        "--separated-dir", album.parent / "separated")
    assert rc == 0 and "1 ok" in out, out + err
    assert (tmp_path / "songs" / "test" / "one" / "one_blended.wav").is_file()


# ---- item 12: file names that are not UTF-8 -----------------------------------------------

def test_latin1_file_name_works_end_to_end(tmp_path):
    songs = tmp_path / "songs"
    vocals, inst = tone_mix(1.0)
    raw = os.fsencode(songs) + b"/caf\xe9.wav"
    songs.mkdir()
    import soundfile as sf
    with open(raw, "wb") as f:
        sf.write(f, (vocals + inst).T, 44100, format="WAV", subtype="FLOAT")
    sep = tmp_path / "separated" / "test" / "café"
    write(sep / "vocals.wav", vocals)
    write(sep / "no_vocals.wav", inst)
    rc, out, err = _cli(tmp_path, "-i", songs, "-o", tmp_path / "out")
    assert rc == 0 and "1 ok" in out, out + err
    assert "Logging error" not in err and "Traceback" not in err
    manifest = tmp_path / "out" / "test" / "café" / "café_vtrace.json"
    data = json.loads(manifest.read_text(encoding="utf-8"))
    assert data["input"]["path"].endswith("caf\\xe9.wav")
    log_text = "".join(p.read_text(encoding="utf-8") for p in (tmp_path / "logs").glob("*"))
    assert "café" in log_text


def test_sanitize_name_maps_undecodable_bytes():
    from utils.inputs import sanitize_name
    assert sanitize_name(os.fsdecode(b"caf\xe9")) == "café"
    assert sanitize_name(os.fsdecode(b"\xff\xfe song")) == "ÿþ song"


# ---- item 5 (header part): a WAV whose header promises more than the file holds -----------

@pytest.mark.parametrize("fmt", ["WAV", "RF64"])
def test_half_copied_wav_fails_with_one_line(tmp_path, fmt):
    import soundfile as sf

    from audio_utils.audio_io import audio_info
    from utils.errors import InputError
    x = np.zeros((44100, 2), np.float32)
    full = tmp_path / "full.wav"
    sf.write(str(full), x, 44100, format=fmt, subtype="PCM_16")
    cut = tmp_path / "cut.wav"
    data = full.read_bytes()
    cut.write_bytes(data[:len(data) // 2])
    with pytest.raises(InputError) as err:
        audio_info(cut)
    msg = str(err.value)
    assert msg.startswith("cut.wav: truncated: header promises 44100 frames, file holds ")
    assert msg.endswith("; re-copy the file") and "\n" not in msg
    assert audio_info(full) == (44100, 2, 44100)


def test_half_copied_wav_fails_its_track(tmp_path):
    songs = tmp_path / "songs"
    _song(songs)
    good = _song(songs, "half", seed=1)
    data = good.read_bytes()
    good.write_bytes(data[:len(data) // 2])
    rc, out, err = _cli(tmp_path, "-i", songs, "-o", tmp_path / "out")
    assert rc == 1 and "1 ok" in out and "1 failed" in out, out + err
    assert "truncated: header promises 44100 frames" in out
