"""The whole CLI with a real Demucs model that needs no download (demucs_unittest)."""

import json
import sys

import numpy as np

from main import main
from tests.conftest import SR, read, tone_mix, write


def _args(tmp_path, *extra):
    return ["-i", str(tmp_path / "songs"), "--model", "demucs_unittest",
            "--separated-dir", str(tmp_path / "sep"), "-o", str(tmp_path / "out"), "--quiet",
            "--log-dir", str(tmp_path / "logs"), "--device", "cpu"] + list(extra)


def test_separates_writes_layout_and_reuses_it(tmp_path, capsys, monkeypatch):
    vocals, inst = tone_mix(seconds=2.0)
    write(tmp_path / "songs" / "stereo.wav", vocals + inst, subtype="PCM_16")
    write(tmp_path / "songs" / "mono.flac", (vocals + inst)[:1] * 0.5, sr=32000,
          subtype="PCM_16")
    assert main(_args(tmp_path)) == 0
    for name, channels, sr in (("stereo", 2, SR), ("mono", 1, 32000)):
        stems = tmp_path / "sep" / "demucs_unittest" / name
        assert (stems / "vocals.wav").is_file() and (stems / "no_vocals.wav").is_file()
        original, _ = read(tmp_path / "songs" / f"{name}.{'wav' if channels == 2 else 'flac'}")
        for k in ("blended", "vocal_residual", "phase_cancel"):
            x, rate = read(tmp_path / "out" / "demucs_unittest" / name / f"{name}_{k}.wav")
            assert rate == sr and x.shape == original.shape  # input's length, rate, channels
        manifest = json.loads((tmp_path / "out" / "demucs_unittest" / name / f"{name}_vtrace.json").read_text())
        assert manifest["stems"]["separated_by_this_run"] is True

    # a second run finds the stems and never loads the model
    import processors.separation as separation

    def boom(*a, **k):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(separation, "_load_model", boom)
    assert main(_args(tmp_path, "-ba", "0.5")) == 0
    assert "2 ok" in capsys.readouterr().out


def test_cleanup_removes_only_what_this_run_created(tmp_path):
    vocals, inst = tone_mix(seconds=1.0)
    write(tmp_path / "songs" / "new.wav", vocals + inst)
    write(tmp_path / "songs" / "old.wav", vocals + inst)
    keep = tmp_path / "sep" / "demucs_unittest" / "old"
    write(keep / "vocals.wav", vocals)
    write(keep / "no_vocals.wav", inst)
    assert main(_args(tmp_path, "--cleanup")) == 0
    assert not (tmp_path / "sep" / "demucs_unittest" / "new").exists()
    assert (keep / "vocals.wav").is_file() and (keep / "no_vocals.wav").is_file()
    assert (tmp_path / "out" / "demucs_unittest" / "new" / "new_blended.wav").is_file()


def test_reseparate_separates_again(tmp_path):
    vocals, inst = tone_mix(seconds=1.0)
    write(tmp_path / "songs" / "s.wav", vocals + inst)
    stems = tmp_path / "sep" / "demucs_unittest" / "s"
    write(stems / "vocals.wav", np.zeros_like(vocals))  # a poor split that still sums to
    write(stems / "no_vocals.wav", vocals + inst)       # the mix, so it passes the check
    assert main(_args(tmp_path)) == 0
    assert not read(stems / "vocals.wav")[0].any()  # reused as they were
    assert main(_args(tmp_path, "--force")) == 0  # outputs again, from the same stems
    assert not read(stems / "vocals.wav")[0].any()
    assert main(_args(tmp_path, "--reseparate", "--other-method", "minus")) == 0
    v, sr = read(stems / "vocals.wav")
    n, _ = read(stems / "no_vocals.wav")
    assert sr == SR and v.any()
    np.testing.assert_allclose(v + n, vocals + inst, atol=1e-5)  # minus: no_vocals = mix - v


def test_unknown_model_fails_each_track_with_one_line(tmp_path, capsys):
    vocals, inst = tone_mix(seconds=1.0)
    write(tmp_path / "songs" / "s.wav", vocals + inst)
    write(tmp_path / "songs" / "t.wav", vocals + inst)
    args = _args(tmp_path)
    args[args.index("demucs_unittest")] = "no_such_model"
    assert main(args) == 1
    captured = capsys.readouterr()
    rows = [line for line in captured.out.splitlines() if line[:2] in ("s ", "t ")]
    assert len(rows) == 2
    for row in rows:
        assert "failed" in row and "no_such_model" in row and "--model-repo" in row
    assert "Traceback" not in captured.err
    assert not (tmp_path / "sep").exists() and not (tmp_path / "out").exists()  # no empty ones


def test_segment_the_model_cannot_take_ends_the_run_up_front(tmp_path, capsys, monkeypatch):
    import processors.separation as separation

    monkeypatch.setattr(separation, "_max_segment", lambda model: 1.0)
    vocals, inst = tone_mix(seconds=1.0)
    write(tmp_path / "songs" / "s.wav", vocals + inst)
    assert main(_args(tmp_path, "--segment", "5")) == 2
    err = capsys.readouterr().err
    assert "segment" in err and "1 track(s)" in err and not (tmp_path / "out").exists()


def test_50_ms_clip_separates_and_a_too_short_one_fails_alone(tmp_path, capsys):
    vocals, inst = tone_mix(seconds=1.0)
    write(tmp_path / "songs" / "ok.wav", vocals + inst)
    write(tmp_path / "songs" / "clip.wav", (vocals + inst)[:, :int(0.05 * SR)])
    write(tmp_path / "songs" / "blip.wav", (vocals + inst)[:, :3])
    assert main(_args(tmp_path, "--shifts", "0")) == 1
    out = capsys.readouterr().out
    rows = {line.split()[0]: line for line in out.splitlines()[2:-1]}
    assert " ok " in rows["clip"] and " ok " in rows["ok"]
    assert "too short for model=demucs_unittest" in rows["blip"], rows["blip"]
    # the failed track leaves no folder: no empty stems folder, no output folder
    assert not (tmp_path / "sep" / "demucs_unittest" / "blip").exists()
    assert not list((tmp_path / "sep" / "demucs_unittest").glob(".*"))  # nor its lock
    assert not (tmp_path / "out" / "demucs_unittest" / "blip").exists()
    clip, _ = read(tmp_path / "out" / "demucs_unittest" / "clip" / "clip_blended.wav")
    assert clip.shape == (2, int(0.05 * SR))


def test_stems_only_run_never_imports_torch(tmp_path):
    import subprocess

    vocals, inst = tone_mix(seconds=1.0)
    write(tmp_path / "songs" / "s.wav", vocals + inst)
    write(tmp_path / "sep" / "demucs_unittest" / "s" / "vocals.wav", vocals)
    write(tmp_path / "sep" / "demucs_unittest" / "s" / "no_vocals.wav", inst)
    code = ("import sys; from main import main; rc = main(sys.argv[1:]); "
            "sys.exit(rc if 'torch' not in sys.modules else 99)")
    r = subprocess.run([sys.executable, "-c", code] + _args(tmp_path), capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr


def test_no_network_and_no_cache_is_one_plain_line(tmp_path, capsys, monkeypatch):
    import processors.separation as separation

    monkeypatch.setattr(separation, "_network_reachable", lambda *a, **k: False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty_hf_cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_torch_home"))
    vocals, inst = tone_mix(seconds=1.0)
    write(tmp_path / "songs" / "s.wav", vocals + inst)
    write(tmp_path / "songs" / "t.wav", vocals + inst)
    args = _args(tmp_path)
    args[args.index("demucs_unittest")] = "htdemucs"
    args.remove("--quiet")
    assert main(args) == 1
    captured = capsys.readouterr()
    # the long reason once for the run, a short line per track
    assert captured.err.count("no network") == 1
    reason = next(x for x in captured.err.splitlines() if "no network" in x)
    assert "htdemucs" in reason and "--model-repo" in reason
    rows = [x for x in captured.out.splitlines() if x[:2] in ("s ", "t ")]
    assert len(rows) == 2 and all("cannot be loaded" in r and len(r) < 200 for r in rows)


def test_unavailable_device_is_a_usage_error_before_any_track(tmp_path, capsys, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    vocals, inst = tone_mix(seconds=1.0)
    write(tmp_path / "songs" / "s.wav", vocals + inst)
    args = _args(tmp_path)
    args[args.index("cpu")] = "cuda"
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "device=cuda is not available" in err and "--device cpu" in err
    assert not (tmp_path / "out").exists() and not (tmp_path / "sep").exists()


def test_model_repo_that_is_not_a_folder_is_a_usage_error(tmp_path, capsys):
    vocals, inst = tone_mix(seconds=1.0)
    write(tmp_path / "songs" / "s.wav", vocals + inst)
    assert main(_args(tmp_path, "--model-repo", str(tmp_path / "nowhere"))) == 2
    assert "model_repo=" in capsys.readouterr().err and not (tmp_path / "out").exists()


def test_nothing_from_model_loading_reaches_stdout(tmp_path, capsys, monkeypatch):
    import demucs.pretrained

    real = demucs.pretrained.get_model

    def chatty(name, repo=None):
        print("Downloading: 100%|##########| 80.2M/80.2M")  # what download helpers do
        return real(name, repo)

    monkeypatch.setattr(demucs.pretrained, "get_model", chatty)
    vocals, inst = tone_mix(seconds=1.0)
    write(tmp_path / "songs" / "s.wav", vocals + inst)
    assert main(_args(tmp_path)) == 0
    captured = capsys.readouterr()
    assert "Downloading" not in captured.out and "Downloading" in captured.err
