"""Issue 18: any target stem, per-stem rebalance, the full Demucs layout, and --midi.

Known answers on four-stem layouts synthesized here; a six-stem separation with a tiny
random-weight model of htdemucs_6s' shape; bad input (unknown stem, missing stem, silence).
"""

import json

import numpy as np
import pytest

from main import main
from processors import vtrace_core as core
from tests.conftest import SR, leftovers, read, write

FOUR = ("drums", "bass", "other", "vocals")
SIX = FOUR + ("guitar", "piano")


def _four_stems(seconds=2.0, seed=1):
    """Four distinct synthetic stems, float32 ``(2, n)`` each, that sum below full scale."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SR)
    t = np.arange(n) / SR
    drums = 0.15 * rng.standard_normal(n) * (np.sin(2 * np.pi * 4 * t) > 0.6)
    bass = 0.25 * np.sin(2 * np.pi * 55 * t)
    other = 0.1 * np.sin(2 * np.pi * 330 * t) * (1 + np.sin(2 * np.pi * 0.7 * t))
    vocals = 0.2 * np.sin(2 * np.pi * (440 * t + 3 * np.sin(2 * np.pi * 5 * t)))
    stems = {}
    for k, x in zip(FOUR, (drums, bass, other, vocals)):
        stems[k] = np.stack([x, 0.7 * x + 0.01 * rng.standard_normal(n)]).astype(np.float32)
    return stems


def _layout(tmp_path, stems, model="tool", track="mix"):
    mix = sum(stems.values())
    write(tmp_path / "songs" / f"{track}.wav", mix)
    for name, x in stems.items():
        write(tmp_path / "sep" / model / track / f"{name}.wav", x)
    return mix


def _run(tmp_path, *extra, model="tool"):
    return main([str(tmp_path / "songs"), "--separated-dir", str(tmp_path / "sep"), "-o",
                 str(tmp_path / "out"), "--quiet", "--log-dir", str(tmp_path / "logs"),
                 "--model", model, "--wav-format", "float32", *extra])


def _out(tmp_path, name, model="tool", track="mix"):
    return read(tmp_path / "out" / model / track / f"{track}_{name}")[0]


def test_rebalance_equals_its_formula(tmp_path):
    stems = _four_stems()
    mix = _layout(tmp_path, stems)
    assert _run(tmp_path, "--stem-gain", "vocals=-20", "bass=+3", "drums=-inf") == 0
    got = _out(tmp_path, "rebalanced.wav")
    g = {"vocals": 10 ** (-20 / 20), "bass": 10 ** (3 / 20), "drums": 0.0}
    want = mix + sum((g[k] - 1) * stems[k] for k in g)  # "other" stays at unity
    assert np.max(np.abs(got - want)) < 1e-5
    manifest = json.loads((tmp_path / "out/tool/mix/mix_vtrace.json").read_text())
    assert manifest["rebalance"]["gains_db"] == {"vocals": -20.0, "bass": 3.0, "drums": "-inf"}
    assert manifest["params"]["stem_gain"] == ["vocals=-20", "bass=+3", "drums=-inf"]
    # the vocal outputs are made too, from vocals and the sum of the other stems
    assert np.max(np.abs(_out(tmp_path, "phase_cancel.wav")
                         - (stems["drums"] + stems["bass"] + stems["other"]))) < 1e-5


def test_a_vocal_gain_rebalances_a_two_stem_layout(tmp_path):
    stems = _four_stems()
    inst = stems["drums"] + stems["bass"] + stems["other"]
    mix = _layout(tmp_path, {"vocals": stems["vocals"], "no_vocals": inst})
    assert _run(tmp_path, "--stem-gain", "vocals=-6") == 0
    want = mix + (10 ** (-6 / 20) - 1) * stems["vocals"]
    assert np.max(np.abs(_out(tmp_path, "rebalanced.wav") - want)) < 1e-5


def test_rebalance_core_leaves_what_no_stem_holds_and_its_inputs():
    rng = np.random.default_rng(0)
    o = rng.standard_normal((2, 1000)).astype(np.float32)
    s = rng.standard_normal((2, 1000)).astype(np.float32)
    kept = (o.copy(), s.copy())
    assert np.array_equal(core.rebalance(o, [(s, 0.0)]), o)
    np.testing.assert_allclose(core.rebalance(o, [(s, -6.0)]),
                               o + (10 ** (-6 / 20) - 1) * s, atol=1e-6)
    assert np.array_equal(o, kept[0]) and np.array_equal(s, kept[1])


def test_rebalance_clips_with_the_one_common_gain(tmp_path):
    stems = _four_stems()
    _layout(tmp_path, stems)
    assert _run(tmp_path, "--stem-gain", "bass=+12", "--repair", "none") == 0
    got = _out(tmp_path, "rebalanced.wav")
    manifest = json.loads((tmp_path / "out/tool/mix/mix_vtrace.json").read_text())
    gains = manifest["gain"]
    assert len(set(gains.values())) == 1 and gains["rebalanced"] < 1  # one gain, all outputs
    assert np.max(np.abs(got)) <= 1.0 + 1e-6


@pytest.mark.parametrize("repair", ["none", "project"])
def test_target_bass_equals_the_vocal_formulas_with_roles_swapped(tmp_path, repair):
    stems = _four_stems()
    _layout(tmp_path, stems)
    assert _run(tmp_path, "--target-stem", "bass", "-a", "0.3", "--repair", repair) == 0
    rest = (stems["drums"] + stems["other"]) + stems["vocals"]  # the layout's order
    # the same song with bass as "vocals" and the rest as "no_vocals" in a two-stem layout
    write(tmp_path / "sep" / "swap" / "mix" / "vocals.wav", stems["bass"])
    write(tmp_path / "sep" / "swap" / "mix" / "no_vocals.wav", rest)
    assert _run(tmp_path, "-a", "0.3", "--repair", repair, model="swap") == 0
    for bass_name, vocal_name in (("bass_blended", "blended"), ("bass_residual", "vocal_residual"),
                                  ("bass_phase_cancel", "phase_cancel")):
        got = _out(tmp_path, f"{bass_name}.wav")
        assert np.array_equal(got, _out(tmp_path, f"{vocal_name}.wav", model="swap"))
    if repair == "none":  # and those formulas, written out
        mix = sum(stems.values())
        np.testing.assert_allclose(_out(tmp_path, "bass_blended.wav"),
                                   0.3 * mix + 0.7 * rest, atol=1e-5)
        np.testing.assert_allclose(_out(tmp_path, "bass_residual.wav"), mix - rest, atol=1e-5)
        np.testing.assert_allclose(_out(tmp_path, "bass_phase_cancel.wav"), rest, atol=1e-5)
    folder = tmp_path / "out" / "tool" / "mix"
    assert {p.name for p in folder.iterdir()} == {
        "mix_bass_blended.wav", "mix_bass_residual.wav", "mix_bass_phase_cancel.wav",
        "mix_vtrace.json"}


def test_target_with_other_method_minus_is_the_mix_less_the_target(tmp_path):
    stems = _four_stems()
    mix = _layout(tmp_path, stems)
    assert _run(tmp_path, "--target-stem", "drums", "--other-method", "minus",
                "--repair", "none") == 0
    np.testing.assert_allclose(_out(tmp_path, "drums_phase_cancel.wav"), mix - stems["drums"],
                               atol=1e-5)
    np.testing.assert_allclose(_out(tmp_path, "drums_residual.wav"), stems["drums"], atol=1e-5)


def test_unknown_stem_is_a_usage_error_listing_the_models_stems(tmp_path, capsys):
    _layout(tmp_path, _four_stems())
    assert _run(tmp_path, "--target-stem", "guitar") == 2
    err = capsys.readouterr().err
    assert "--target-stem guitar" in err and "drums, bass, other, vocals" in err
    assert not (tmp_path / "out" / "tool").exists()
    # a Demucs model known by name: its stems are known without loading it
    assert _run(tmp_path, "--stem-gain", "vocals=-6", "flute=-3", model="htdemucs") == 2
    err = capsys.readouterr().err
    assert "--stem-gain flute: model=htdemucs has no stem flute" in err
    assert "(its stems: drums, bass, other, vocals)" in err


@pytest.mark.parametrize("bad", ["vocals", "vocals=loud", "=3", "Vocals=-3", "vocals=+60"])
def test_malformed_stem_gain_is_a_usage_error(tmp_path, capsys, bad):
    _layout(tmp_path, _four_stems())
    assert _run(tmp_path, "--stem-gain", bad) == 2
    assert "expected NAME=DB" in capsys.readouterr().err


def test_layout_missing_a_stem_fails_that_track_saying_which_and_where(tmp_path, capsys):
    stems = _four_stems()
    _layout(tmp_path, stems)
    _layout(tmp_path, {k: v for k, v in stems.items() if k != "bass"}, track="short")
    assert _run(tmp_path, "--target-stem", "bass") == 1
    out = capsys.readouterr().out
    folder = tmp_path / "sep" / "tool" / "short"
    assert f"no bass stem for short in {folder} (it holds: drums, other, vocals)" in \
        " ".join(out.split())
    assert (tmp_path / "out/tool/mix/mix_bass_residual.wav").is_file()  # the batch went on


def test_two_stem_jobs_are_unchanged_by_a_full_layout(tmp_path):
    # a folder holding both layouts: a vocal job reads vocals + no_vocals as always
    stems = _four_stems()
    _layout(tmp_path, stems)
    inst = stems["drums"] + stems["bass"]  # deliberately not the sum of the other three
    write(tmp_path / "sep" / "tool" / "mix" / "no_vocals.wav", inst)
    assert _run(tmp_path, "--repair", "none", "--no-align") == 0
    manifest = json.loads((tmp_path / "out/tool/mix/mix_vtrace.json").read_text())
    assert set(manifest["stems"]["identity"]) == {"vocals", "no_vocals"}
    np.testing.assert_allclose(_out(tmp_path, "phase_cancel.wav"), inst, atol=1e-6)


def test_a_vocal_job_reads_demucs_four_stem_layout_without_no_vocals(tmp_path):
    stems = _four_stems()
    _layout(tmp_path, stems)  # what `demucs song.wav` writes: no no_vocals.wav
    assert _run(tmp_path, "--repair", "none") == 0
    np.testing.assert_allclose(_out(tmp_path, "phase_cancel.wav"),
                               stems["drums"] + stems["bass"] + stems["other"], atol=1e-5)
    manifest = json.loads((tmp_path / "out/tool/mix/mix_vtrace.json").read_text())
    assert set(manifest["stems"]["identity"]) == set(FOUR)


# ---------------------------------------------------------------- --midi

MELODY = [(0.25, 0.65, 60), (0.70, 1.10, 64), (1.10, 1.50, 67), (1.80, 2.30, 72),
          (2.36, 2.70, 72), (2.90, 3.50, 65)]  # legato steps and a repeated note


def _sine_melody(notes, seconds=4.0):
    t = np.arange(int(seconds * SR)) / SR
    y = np.zeros_like(t)
    for a, b, p in notes:
        m = (t >= a) & (t < b)
        env = np.minimum(1, np.minimum((t[m] - a) / 0.02, (b - t[m]) / 0.03))
        y[m] += 0.4 * env * np.sin(2 * np.pi * 440 * 2 ** ((p - 69) / 12) * (t[m] - a))
    return np.stack([y, y]).astype(np.float32)


def test_midi_recovers_a_sine_melody(tmp_path):
    pretty_midi = pytest.importorskip("pretty_midi")
    voc = _sine_melody(MELODY)
    inst = (0.2 * np.sin(2 * np.pi * 55 * np.arange(voc.shape[1]) / SR)).astype(np.float32)
    inst = np.stack([inst, inst])
    write(tmp_path / "songs" / "mix.wav", voc + inst)
    write(tmp_path / "sep" / "tool" / "mix" / "vocals.wav", voc)
    write(tmp_path / "sep" / "tool" / "mix" / "no_vocals.wav", inst)
    assert _run(tmp_path, "--midi") == 0
    path = tmp_path / "out/tool/mix/mix_vocals.mid"
    notes = pretty_midi.PrettyMIDI(str(path)).instruments[0].notes
    assert [n.pitch for n in notes] == [p for _, _, p in MELODY]
    for n, (a, b, _) in zip(notes, MELODY):
        assert abs(n.start - a) < 0.05 and abs(n.end - b) < 0.08
    manifest = json.loads((tmp_path / "out/tool/mix/mix_vtrace.json").read_text())
    assert "mix_vocals.mid" in " ".join(manifest["files"]) and manifest["warnings"] == []


def test_midi_on_silence_writes_an_empty_file_and_a_warning(tmp_path, capsys):
    pretty_midi = pytest.importorskip("pretty_midi")
    inst = _four_stems()["bass"]
    silent = np.zeros_like(inst)
    write(tmp_path / "songs" / "mix.wav", inst)
    write(tmp_path / "sep" / "tool" / "mix" / "vocals.wav", silent)
    write(tmp_path / "sep" / "tool" / "mix" / "no_vocals.wav", inst)
    assert _run(tmp_path, "--midi") == 0
    song = pretty_midi.PrettyMIDI(str(tmp_path / "out/tool/mix/mix_vocals.mid"))
    assert sum(len(i.notes) for i in song.instruments) == 0
    manifest = json.loads((tmp_path / "out/tool/mix/mix_vtrace.json").read_text())
    assert any("no pitched note" in w for w in manifest["warnings"])
    assert "no pitched note" in capsys.readouterr().out  # the summary says so


# ---------------------------------------------------------------- six-stem separation

TINY6 = dict(sources=list(SIX), channels=4, depth=4, t_layers=1, t_heads=1, nfft=1024,
             dconv_comp=2, segment=1, samplerate=SR)


@pytest.fixture(scope="module")
def repo6(tmp_path_factory):
    """A tiny random-weight HTDemucs with htdemucs_6s' sources, as ``tiny6.th``."""
    import torch
    from demucs.htdemucs import HTDemucs

    root = tmp_path_factory.mktemp("models6")
    torch.manual_seed(6)
    torch.save({"klass": HTDemucs, "args": (), "kwargs": TINY6,
                "state": HTDemucs(**TINY6).state_dict()}, root / "tiny6.th")
    return root


def test_six_stem_separation_runs_end_to_end(tmp_path, repo6, capsys):
    stems = _four_stems(seconds=1.5)
    write(tmp_path / "songs" / "mix.wav", sum(stems.values()))
    args = ("--model-repo", str(repo6), "--target-stem", "guitar", "--stem-gain",
            "piano=-6", "vocals=-20", "--device", "cpu")
    assert _run(tmp_path, *args, model="tiny6") == 0
    folder = tmp_path / "sep" / "tiny6" / "mix"
    files = {p.name for p in folder.iterdir()}
    assert {f"{s}.wav" for s in SIX} | {"no_vocals.wav", "vocals.wav"} <= files
    sep = {s: read(folder / f"{s}.wav")[0] for s in SIX + ("no_vocals",)}
    # add: no_vocals is the sum of the sources other than vocals
    np.testing.assert_allclose(sep["no_vocals"], sum(sep[s] for s in SIX if s != "vocals"),
                               atol=1e-5)
    out = tmp_path / "out" / "tiny6" / "mix"
    for name in ("guitar_blended", "guitar_residual", "guitar_phase_cancel", "rebalanced"):
        assert (out / f"mix_{name}.wav").is_file()
    record = json.loads((folder / "vtrace_stems.json").read_text())
    assert set(record["stems"]) == set(SIX) | {"no_vocals"}
    assert leftovers(tmp_path) == []
    capsys.readouterr()
    assert _run(tmp_path, *args, model="tiny6") == 0  # resumes: nothing separated again
    assert "1 skipped" in capsys.readouterr().out
    # a two-stem job reuses the same separation
    assert _run(tmp_path, "--model-repo", str(repo6), "--device", "cpu", model="tiny6") == 0
    assert (out / "mix_blended.wav").is_file()
    assert json.loads((folder / "vtrace_stems.json").read_text()) == record
    # a stem the loaded model lacks: a usage error before any track runs
    (tmp_path / "songs" / "other.wav").write_bytes((tmp_path / "songs" / "mix.wav").read_bytes())
    capsys.readouterr()
    assert _run(tmp_path, "--model-repo", str(repo6), "--target-stem", "flute",
                model="tiny6") == 2
    assert "its stems: drums, bass, other, vocals, guitar, piano" in capsys.readouterr().err


def test_model_sources_table_matches_a_loaded_model():
    from demucs.pretrained import get_model

    from processors.models import MODEL_SOURCES

    assert tuple(get_model("demucs_unittest").sources) == MODEL_SOURCES["demucs_unittest"]
    assert MODEL_SOURCES["htdemucs_6s"] == SIX


def test_midi_without_its_extra_is_one_usage_line(tmp_path, capsys, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a, **k: None
                        if name.split(".")[0] == "pretty_midi" else real(name, *a, **k))
    _layout(tmp_path, _four_stems())
    assert _run(tmp_path, "--midi") == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith('vtrace: error: --midi needs the midi extra: pip install "vtrace[midi]"')
    assert "\n" not in err and not (tmp_path / "out" / "tool").exists()


def test_a_stems_only_rebalance_imports_no_heavy_module(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    _layout(tmp_path, _four_stems())
    code = (f"import sys; sys.path.insert(0, {str(Path(__file__).parents[1])!r})\n"
            "from main import main\n"
            f"rc = main([{str(tmp_path / 'songs')!r}, '--separated-dir', "
            f"{str(tmp_path / 'sep')!r}, '-o', {str(tmp_path / 'out')!r}, '--quiet', "
            f"'--log-dir', {str(tmp_path / 'logs')!r}, '--model', 'tool', "
            "'--target-stem', 'bass', '--stem-gain', 'drums=-6'])\n"
            "print(rc, sorted(m for m in ('torch', 'demucs', 'librosa', 'pretty_midi') "
            "if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=120)
    assert r.stdout.strip().splitlines()[-1] == "0 []", r.stderr
