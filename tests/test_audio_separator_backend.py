"""The audio-separator backend (RoFormer models) end to end, offline, with random weights in the
published configurations (bench/make_roformer_models.py): shrunk copies for most tests, each
full-size configuration once on a 1 s clip."""

import json
import logging
import sys
import warnings

import numpy as np
import pytest

from main import main
from tests.conftest import SR, read, tone_mix, write

BS = "model_bs_roformer_ep_317_sdr_12.9755"
MEL = "vocals_mel_band_roformer"


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """No test here downloads: the backend finds no network even where there is one."""
    if "processors.audio_separator_backend" in sys.modules or _importable():
        import processors.audio_separator_backend as backend

        monkeypatch.setattr(backend, "_network_reachable", lambda *a, **k: False)


def _importable():
    import importlib.util

    try:
        return importlib.util.find_spec("audio_separator") is not None
    except (ImportError, ValueError):
        return False


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    pytest.importorskip("audio_separator")
    from bench.make_roformer_models import write_model

    folder = tmp_path_factory.mktemp("roformers")
    write_model(folder, BS, shrunk=True, seed=1)
    write_model(folder, MEL, shrunk=True, seed=2)
    write_model(folder, MEL, shrunk=True, seed=3, target=None,
                instruments=["vocals", "drums", "bass", "other"])
    return folder  # checkpoints and YAMLs only: no download_checks.json


def _args(tmp_path, models, model, *extra):
    return ["-i", str(tmp_path / "songs"), "--model", model, "--model-repo", str(models),
            "--separated-dir", str(tmp_path / "sep"), "-o", str(tmp_path / "out"), "--quiet",
            "--log-dir", str(tmp_path / "logs"), "--device", "cpu"] + list(extra)


def _song(tmp_path, name="song", seconds=3.0, gain=1.0, seed=0, subtype="FLOAT"):
    vocals, inst = tone_mix(seconds=seconds, seed=seed)
    return write(tmp_path / "songs" / f"{name}.wav", (vocals + inst) * gain, subtype=subtype)


def _snr(ref, est):
    return 10 * np.log10(np.sum(ref.astype(np.float64) ** 2)
                         / max(np.sum((ref.astype(np.float64) - est) ** 2), 1e-30))


def test_one_track_offline_from_a_folder_of_checkpoint_and_yaml(tmp_path, models):
    repo = tmp_path / "repo"  # a folder holding only the checkpoint and its YAML
    repo.mkdir()
    for ext in ("ckpt", "yaml"):
        (repo / f"{MEL}_tiny.{ext}").write_bytes((models / f"{MEL}_tiny.{ext}").read_bytes())
    mix = _song(tmp_path)
    assert main(_args(tmp_path, repo, f"{MEL}_tiny.ckpt")) == 0
    assert (repo / "download_checks.json").is_file()  # VTrace supplied it
    stems = tmp_path / "sep" / f"{MEL}_tiny" / "song"  # the model's name without extension
    vocals, sr = read(stems / "vocals.wav")
    no_vocals, _ = read(stems / "no_vocals.wav")
    original, _ = read(mix)
    assert sr == SR and vocals.shape == original.shape
    assert np.array_equal(no_vocals, original - vocals)  # single target: mix - target exactly
    manifest = json.loads((tmp_path / "out" / f"{MEL}_tiny" / "song" / "song_vtrace.json")
                          .read_text())
    assert manifest["model"] == f"{MEL}_tiny.ckpt"
    assert manifest["run"]["models"] == [f"{MEL}_tiny.ckpt"]
    assert manifest["run"]["device"] == "cpu"
    assert manifest["stems"]["separated_by_this_run"] is True


def test_a_batch_then_a_resumed_batch(tmp_path, models, monkeypatch, capsys):
    for i in range(2):
        _song(tmp_path, f"s{i}", seconds=2.0, seed=i)
    assert main(_args(tmp_path, models, f"{BS}_tiny.ckpt")) == 0
    assert "2 ok" in capsys.readouterr().out
    _song(tmp_path, "s2", seconds=2.0, seed=2)  # a track added since

    import processors.audio_separator_backend as backend

    loads = []
    real = backend.AudioSeparatorBackend._load_separator
    monkeypatch.setattr(backend.AudioSeparatorBackend, "_load_separator",
                        lambda self: loads.append(1) or real(self))
    assert main(_args(tmp_path, models, f"{BS}_tiny.ckpt")) == 0
    out = capsys.readouterr().out
    assert "1 ok, 2 skipped" in out and loads == [1]
    # other outputs from the same stems: the model is not loaded again
    assert main(_args(tmp_path, models, f"{BS}_tiny.ckpt", "-ba", "0.4")) == 0
    assert "3 ok" in capsys.readouterr().out and loads == [1]


@pytest.mark.parametrize("seconds", [4.0, 12.0])  # audio-separator's short-track segment, the YAML's
def test_stems_equal_audio_separators_own_output(tmp_path, models, seconds):
    """audio-separator's Separator on the same file and model: its stems are the mix scaled to
    peak 0.9, separated, each stem scaled to peak 0.9; undone, they equal VTrace's."""
    from audio_separator.separator import Separator

    from processors.audio_separator_backend import AudioSeparatorBackend

    mix = _song(tmp_path, seconds=seconds, gain=2.5)  # louder than 0.9: its gain is exercised
    (models / "download_checks.json").unlink(missing_ok=True)
    ours = AudioSeparatorBackend(f"{BS}_tiny.ckpt", model_repo=models, device="cpu")
    ours.check_options()  # writes download_checks.json when offline (no network here)
    ours.separate_file(mix, tmp_path / "vt")
    from bench.make_roformer_models import write_download_checks

    write_download_checks(models)  # audio-separator itself finds local models only listed
    with warnings.catch_warnings():  # its constructor silences every warning process-wide
        theirs = Separator(log_level=logging.ERROR, model_file_dir=str(models),
                           output_dir=str(tmp_path / "as"), use_soundfile=True)
    theirs.load_model(f"{BS}_tiny.ckpt")
    files = theirs.separate(str(mix))
    original, _ = read(mix)
    g = 0.9 / np.abs(original).max()
    for ours_name, tag in (("vocals", "(vocals)"), ("no_vocals", "(other)")):
        v, _ = read(tmp_path / "vt" / f"{ours_name}.wav")
        t, _ = read(tmp_path / "as" / next(f for f in files if tag in f))
        expected = v * g
        expected *= min(1.0, 0.9 / np.abs(expected).max())  # its per-stem normalisation
        assert _snr(expected, t) >= 60, ours_name


def test_multi_stem_model_writes_demucs_names(tmp_path, models):
    from processors.audio_separator_backend import AudioSeparatorBackend

    mix = _song(tmp_path, seconds=2.0)
    sep = AudioSeparatorBackend(f"{MEL}_tiny_vocals+drums+bass+other.ckpt", model_repo=models,
                                device="cpu")
    sep.separate_file(mix, tmp_path / "st")
    stems = {n: read(tmp_path / "st" / f"{n}.wav")[0]
             for n in ("vocals", "no_vocals", "drums", "bass", "other")}
    np.testing.assert_allclose(stems["no_vocals"], stems["drums"] + stems["bass"]
                               + stems["other"], atol=1e-6)


def test_ensemble_of_two_averages_and_keeps_each_models_stems(tmp_path, models):
    _song(tmp_path, seconds=2.0)
    ensemble = f"{BS}_tiny.ckpt,{MEL}_tiny.ckpt"
    assert main(_args(tmp_path, models, ensemble)) == 0
    sep = tmp_path / "sep"
    a = read(sep / f"{BS}_tiny" / "song" / "vocals.wav")[0]
    b = read(sep / f"{MEL}_tiny" / "song" / "vocals.wav")[0]
    avg = read(sep / f"{BS}_tiny+{MEL}_tiny" / "song" / "vocals.wav")[0]
    np.testing.assert_allclose(avg, (a + b) / 2, atol=1e-7)
    manifest = json.loads((tmp_path / "out" / f"{BS}_tiny+{MEL}_tiny" / "song"
                           / "song_vtrace.json").read_text())
    assert manifest["run"]["models"] == [f"{BS}_tiny.ckpt", f"{MEL}_tiny.ckpt"]
    # --model A --model B is the same ensemble
    assert main(_args(tmp_path, models, f"{BS}_tiny.ckpt", "--model", f"{MEL}_tiny.ckpt")) == 0


def test_offline_and_not_on_disk_is_one_line_exit_2(tmp_path, capsys):
    pytest.importorskip("audio_separator")
    _song(tmp_path, seconds=1.0)
    (tmp_path / "empty").mkdir()
    assert main(_args(tmp_path, tmp_path / "empty", f"{MEL}.ckpt")) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert f"model={MEL}.ckpt" in err and f"{MEL}.yaml" in err and str(tmp_path / "empty") in err
    assert not (tmp_path / "out").exists()  # before any track ran


def test_segment_is_refused_for_a_roformer(tmp_path, models, capsys):
    _song(tmp_path, seconds=1.0)
    assert main(_args(tmp_path, models, f"{MEL}_tiny.ckpt", "--segment", "4")) == 2
    assert "segment=4.0 applies to Demucs models only" in capsys.readouterr().err


def test_missing_sota_extra_is_one_line_exit_2(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "audio_separator", None)  # not importable
    _song(tmp_path, seconds=1.0)
    (tmp_path / "repo").mkdir()
    assert main(_args(tmp_path, tmp_path / "repo", "x.ckpt")) == 2
    err = capsys.readouterr().err
    assert 'pip install "vtrace[sota]"' in err and "model=x.ckpt" in err


def test_missing_extra_does_not_matter_when_the_stems_exist(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "audio_separator", None)
    vocals, inst = tone_mix(seconds=1.0)
    write(tmp_path / "songs" / "song.wav", vocals + inst)
    write(tmp_path / "sep" / "x" / "song" / "vocals.wav", vocals)
    write(tmp_path / "sep" / "x" / "song" / "no_vocals.wav", inst)
    (tmp_path / "repo").mkdir()
    assert main(_args(tmp_path, tmp_path / "repo", "x.ckpt")) == 0


@pytest.mark.parametrize("name", [BS, MEL])
def test_each_full_size_config_runs_on_a_short_clip(tmp_path, name):
    pytest.importorskip("audio_separator")
    from bench.make_roformer_models import write_model
    from processors.audio_separator_backend import AudioSeparatorBackend

    write_model(tmp_path / "m", name)
    mix = _song(tmp_path, seconds=1.0)
    sep = AudioSeparatorBackend(f"{name}.ckpt", model_repo=tmp_path / "m", device="cpu")
    result = sep.separate_file(mix, tmp_path / "st")
    vocals, _ = read(result.vocals)
    assert vocals.shape == (2, SR) and np.isfinite(vocals).all() and np.abs(vocals).max() > 0


def test_the_factory_picks_the_backend_from_the_model_name():
    from processors.audio_separator_backend import AudioSeparatorBackend
    from processors.ensemble import EnsembleSeparator
    from processors.separation import DemucsSeparator
    from processors.separators import make_separator

    assert isinstance(make_separator("htdemucs_ft"), DemucsSeparator)
    for name in ("a.ckpt", "b.ONNX", "c.pth", "htdemucs_ft.yaml"):
        assert isinstance(make_separator(name), AudioSeparatorBackend), name
    both = make_separator("a.ckpt, htdemucs", device="cpu")
    assert isinstance(both, EnsembleSeparator)
    assert [type(m) for m in both.members] == [AudioSeparatorBackend, DemucsSeparator]


def test_stems_folder_is_the_model_name_without_extension():
    from utils.layout import model_folder

    assert model_folder(f"{BS}.ckpt") == BS  # only the extension goes, not ".9755"
    assert model_folder("hf://org/name") == "org_name"
    assert model_folder(f"{BS}.ckpt,{MEL}.ckpt") == f"{BS}+{MEL}"


def test_an_empty_model_in_a_list_is_a_usage_error(tmp_path, capsys):
    _song(tmp_path, seconds=1.0)
    assert main(["-i", str(tmp_path / "songs"), "--model", "a.ckpt,", "--quiet",
                 "--log-dir", str(tmp_path / "logs")]) == 2
    assert "model='a.ckpt,': an empty model name" in capsys.readouterr().err


def test_all_sources_writes_a_single_target_models_other_source(tmp_path, models):
    from processors.audio_separator_backend import AudioSeparatorBackend

    mix = _song(tmp_path, seconds=2.0)
    sep = AudioSeparatorBackend(f"{MEL}_tiny.ckpt", model_repo=models, device="cpu",
                                all_sources=True)
    assert sep.sources == ("vocals", "other")  # the YAML's instruments
    sep.separate_file(mix, tmp_path / "st")
    other, _ = read(tmp_path / "st" / "other.wav")
    assert np.array_equal(other, read(tmp_path / "st" / "no_vocals.wav")[0])
