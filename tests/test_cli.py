"""The whole CLI on songs synthesized into tmp_path in the separated layout."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from main import main
from tests.conftest import SR, leftovers, read, tone_mix, write

ROOT = Path(__file__).resolve().parents[1]


def run(song, *extra, out="out"):
    args = ["-i", str(song["dir"]), "--model", "test", "--separated-dir", str(song["sep"]),
            "-o", str(song["tmp"] / out), "--log-dir", str(song["tmp"] / "logs"), "--quiet"]
    return main(args + list(extra))


def outputs(song, out="out", name="mix"):
    folder = song["tmp"] / out / "test" / name
    return {k: read(folder / f"{name}_{k}.wav")[0]
            for k in ("blended", "vocal_residual", "phase_cancel")}


def test_outputs_equal_their_formulas(song, capsys):
    assert run(song, "-ba", "0.25", "--wav-format", "float32") == 0
    o, i = song["mix"], song["inst"]
    out = outputs(song)
    np.testing.assert_allclose(out["blended"], 0.25 * o + 0.75 * i, atol=1e-6)
    np.testing.assert_allclose(out["vocal_residual"], o - i, atol=1e-6)
    np.testing.assert_allclose(out["phase_cancel"], i, atol=1e-6)
    summary = capsys.readouterr().out
    assert "mix" in summary and "1 ok" in summary
    manifest = json.loads((song["tmp"] / "out/test/mix/mix_vtrace.json").read_text())
    assert manifest["offset"]["lag_samples"] == 0 and manifest["gain"]["blended"] == 1.0
    assert manifest["params"]["blend_alpha"] == 0.25 and manifest["samplerate"] == SR


@pytest.mark.parametrize("mode,w", [("exp", np.exp(-0.5)), ("log", np.log(1.5)),
                                    ("power", 0.25)])
def test_blend_modes_reach_the_files(song, mode, w):
    assert run(song, "-ba", "0.5", "--blend-mode", mode, "--wav-format", "float32") == 0
    np.testing.assert_allclose(outputs(song)["blended"],
                               w * song["mix"] + (1 - w) * song["inst"], atol=1e-6)


def test_voice_alpha_mixes_model_vocals(song):
    assert run(song, "-va", "0.5", "--wav-format", "float32") == 0
    o, i, vm = song["mix"], song["inst"], song["vocals"]
    out = outputs(song)
    np.testing.assert_allclose(out["vocal_residual"], 0.5 * (o - i) + 0.5 * vm, atol=1e-6)
    np.testing.assert_allclose(out["phase_cancel"], o - out["vocal_residual"], atol=1e-6)


def test_delayed_inverted_stems_give_the_same_outputs(song):
    assert run(song, "--wav-format", "float32", out="aligned") == 0
    lag = 1105  # what an MP3 round trip adds
    folder = song["sep"] / "test" / "mix"
    for stem, x in (("vocals", song["vocals"]), ("no_vocals", song["inst"])):
        delayed = np.concatenate([np.zeros((2, lag), np.float32), -x], axis=1)
        write(folder / f"{stem}.wav", delayed)
    assert run(song, "--wav-format", "float32", out="delayed") == 0
    a, d = outputs(song, "aligned"), outputs(song, "delayed")
    for k in a:
        np.testing.assert_array_equal(a[k], d[k])
    manifest = json.loads((song["tmp"] / "delayed/test/mix/mix_vtrace.json").read_text())
    assert manifest["offset"]["lag_samples"] == lag and manifest["offset"]["polarity"] == -1
    assert run(song, "--wav-format", "float32", "--no-align", out="unaligned") == 0
    assert not np.allclose(outputs(song, "unaligned")["phase_cancel"], song["inst"], atol=1e-3)


def test_stems_at_another_rate_and_mono_original(tmp_path):
    vocals, inst = tone_mix(seconds=2.0, channels=1)
    write(tmp_path / "in" / "mono.wav", vocals + inst)
    from audio_utils.matching import resample

    sep = tmp_path / "sep" / "m" / "mono"
    write(sep / "vocals.wav", np.repeat(resample(vocals, SR, 48000), 2, 0), sr=48000)
    write(sep / "no_vocals.wav", np.repeat(resample(inst, SR, 48000), 2, 0), sr=48000)
    rc = main(["-i", str(tmp_path / "in"), "--model", "m", "--separated-dir",
               str(tmp_path / "sep"), "-o", str(tmp_path / "out"), "--quiet",
               "--log-dir", str(tmp_path / "logs"), "--repair", "none"])
    assert rc == 0
    pc, sr = read(tmp_path / "out/m/mono/mono_phase_cancel.wav")
    assert sr == SR and pc.shape == inst.shape  # the input's length, rate and channels
    # the stem comes back as the round trip through 48 kHz (band-limited to below 22.05 kHz)
    expected = resample(resample(inst, SR, 48000), 48000, SR)
    assert np.sqrt(np.mean((pc - expected)[:, 2000:-2000] ** 2)) < 1e-4


def test_clip_gain_is_common_to_all_outputs(song):
    loud = 3.0 * song["mix"]
    write(song["mix_path"], loud)
    write(song["sep"] / "test/mix/vocals.wav", 3.0 * song["vocals"])
    write(song["sep"] / "test/mix/no_vocals.wav", 3.0 * song["inst"])
    assert run(song, "--wav-format", "float32") == 0
    manifest = json.loads((song["tmp"] / "out/test/mix/mix_vtrace.json").read_text())
    gains = set(manifest["gain"].values())
    assert len(gains) == 1 and gains.pop() < 1.0
    out = outputs(song)
    assert max(np.abs(x).max() for x in out.values()) <= 1.0 + 1e-6
    g = manifest["gain"]["blended"]
    # the outputs still add up: phase cancel + vocal == gained original
    np.testing.assert_allclose(out["phase_cancel"] + out["vocal_residual"], g * loud, atol=1e-5)


def test_rerun_skips_done_tracks_and_recomputes_changed_parameters(song, capsys):
    assert run(song) == 0
    capsys.readouterr()
    assert run(song) == 0
    assert "skipped" in capsys.readouterr().out
    assert run(song, "-ba", "0.5") == 0
    assert "1 ok" in capsys.readouterr().out


def test_usage_errors_exit_2(tmp_path, capsys):
    assert main(["--log-dir", str(tmp_path)]) == 2
    assert main(["-i", str(tmp_path / "missing.wav"), "--log-dir", str(tmp_path)]) == 2
    assert "missing.wav" in capsys.readouterr().err
    assert main(["-ba", "7"]) == 2
    assert main(["--no-such-option"]) == 2
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["-i", str(empty), "--log-dir", str(tmp_path)]) == 2


def test_a_bad_file_fails_alone(song, capsys):
    (song["dir"] / "broken.wav").write_bytes(b"this is not audio at all")
    (song["dir"] / "empty.flac").write_bytes(b"")
    assert run(song) == 1
    out = capsys.readouterr().out
    assert "broken" in out and "empty" in out and "failed" in out and "1 ok" in out
    assert (song["tmp"] / "out/test/mix/mix_blended.wav").is_file()
    assert leftovers(song["tmp"] / "out") == []


def test_output_and_separated_folders_are_not_scanned(song):
    out_inside = song["dir"] / "vtrace_output"
    rc = main(["-i", str(song["dir"]), "--model", "test", "--separated-dir",
               str(song["sep"]), "--quiet", "--log-dir", str(song["tmp"] / "logs"),
               "--recursive"])
    assert rc == 0 and (out_inside / "test" / "mix" / "mix_blended.wav").is_file()
    rc = main(["-i", str(song["dir"]), "--model", "test", "--separated-dir",
               str(song["sep"]), "--quiet", "--log-dir", str(song["tmp"] / "logs"),
               "--recursive", "-ba", "0.3"])
    assert rc == 0
    assert not (out_inside / "mix_blended").exists()  # its own outputs were not inputs


def test_subprocess_help_and_no_torch_on_stems_only_runs(song):
    r = subprocess.run([sys.executable, "main.py", "--help"], cwd=ROOT, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0
    for group in ("input:", "separation (Demucs):", "blend and residual:", "output:",
                  "evaluation:", "run:"):
        assert group in r.stdout
    code = (
        "import sys; from main import main; "
        f"rc = main(['-i', {str(song['dir'])!r}, '--model', 'test', '--separated-dir', "
        f"{str(song['sep'])!r}, '-o', {str(song['tmp'] / 'sub')!r}, '--quiet', "
        f"'--log-dir', {str(song['tmp'] / 'logs')!r}]); "
        "print('TORCH' if 'torch' in sys.modules else 'NOTORCH'); sys.exit(rc)")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    assert "NOTORCH" in r.stdout and "1 ok" in r.stdout
    r = subprocess.run([sys.executable, "main.py", "-i", str(song["tmp"] / "nothing")],
                       cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "nothing" in r.stderr


@pytest.mark.parametrize("extra,tol", [((), 0.0), (("--residual-hpf", "100",
                                                      "--blend-mode", "gate"), 1e-6)])
def test_block_processing_equals_whole_track_processing(song, extra, tol):
    assert run(song, "--wav-format", "float32", "--block-seconds", "0.5", *extra,
               out="blocks") == 0
    assert run(song, "--wav-format", "float32", "--block-seconds", "600", *extra,
               out="whole") == 0
    blocks, whole = outputs(song, "blocks"), outputs(song, "whole")
    for k in whole:
        np.testing.assert_allclose(blocks[k], whole[k], atol=tol, rtol=0)


def test_offset_found_when_the_middle_of_the_track_is_silent(tmp_path):
    vocals, inst = tone_mix(seconds=30.0)
    mix = vocals + inst
    gap = slice(10 * SR, 20 * SR)
    vocals[:, gap] = inst[:, gap] = mix[:, gap] = 0  # a silent break in the middle
    write(tmp_path / "in" / "brk.wav", mix)
    lag = 1105
    for name, x in (("vocals", vocals), ("no_vocals", inst)):
        write(tmp_path / "sep" / "m" / "brk" / f"{name}.wav",
              np.concatenate([np.zeros((2, lag), np.float32), x], axis=1))
    assert main(["-i", str(tmp_path / "in"), "--model", "m", "--separated-dir",
                 str(tmp_path / "sep"), "-o", str(tmp_path / "out"), "--quiet",
                 "--log-dir", str(tmp_path / "logs")]) == 0
    manifest = json.loads((tmp_path / "out/m/brk/brk_vtrace.json").read_text())
    assert manifest["offset"]["lag_samples"] == lag


def test_spleeter_accompaniment_and_flac_stems_are_accepted(song):
    folder = song["sep"] / "test" / "mix"
    (folder / "no_vocals.wav").unlink()
    write(folder / "accompaniment.flac", song["inst"], subtype="PCM_24")
    assert run(song, "--wav-format", "float32") == 0
    np.testing.assert_allclose(outputs(song)["phase_cancel"], song["inst"], atol=1e-6)
