"""Known answers for utils/evaluate_metrics.py and utils/evaluation.py on numpy-made signals."""

import csv
import json
import warnings

import numpy as np
import pytest
import soundfile as sf

from audio_utils import metrics as em
from processors import evaluation as ev
from utils.errors import InputError
from tests.conftest import leftovers

SR = 16000


def speechlike(seconds=2.0, sr=SR, seed=0, channels=2):
    """Syllable-rate gated harmonics with a moving pitch: enough structure for STOI."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    f0 = 140 + 30 * np.sin(2 * np.pi * 0.8 * t)
    phase = 2 * np.pi * np.cumsum(f0) / sr
    voiced = sum(np.sin(k * phase) / k for k in range(1, 12))
    syllables = np.clip(np.sin(2 * np.pi * 4 * t), 0, None) ** 2
    x = 0.2 * voiced * syllables + 0.002 * rng.standard_normal(t.size)
    return np.stack([x, 0.8 * x][:channels]).astype(np.float32)


def noise(shape, seed=1, level=0.1):
    return (level * np.random.default_rng(seed).standard_normal(shape)).astype(np.float32)


def at_snr(ref, snr_db, seed=3):
    n = np.random.default_rng(seed).standard_normal(ref.shape)
    n *= np.sqrt(np.sum(ref.astype(float) ** 2) / np.sum(n ** 2)) * 10 ** (-snr_db / 20)
    return (ref + n).astype(np.float32)


# ---- metrics ----------------------------------------------------------------------------

def test_identical_signals_mse_zero_cosine_one():
    x = speechlike()
    m = em.basic_metrics(x, x.copy())
    assert m["mse"].value == 0.0
    assert m["cosine"].value == pytest.approx(1.0, abs=1e-12)
    assert m["si_sdr"].value is None and "infinite" in m["si_sdr"].reason


def test_negated_signal_cosine_minus_one():
    x = speechlike()
    assert em.cosine(x, -x).value == pytest.approx(-1.0, abs=1e-12)
    assert em.mse(x, -x).value == pytest.approx(4 * np.mean(x.astype(float) ** 2), rel=1e-6)


@pytest.mark.parametrize("snr_db", [0.0, 10.0, 25.0])
def test_sdr_of_reference_plus_noise_matches_snr(snr_db):
    refs = [speechlike(seconds=2.0), noise((2, 2 * SR), seed=5)]
    est = at_snr(refs[0], snr_db)
    one = em.bss_eval([refs[0]], [est])[0]
    assert one["sdr"][0].value == pytest.approx(snr_db, abs=0.1)
    assert em.si_sdr(refs[0], est).value == pytest.approx(snr_db, abs=0.1)


def test_si_sdr_and_sdr_unchanged_by_scaling():
    ref = speechlike()
    est = at_snr(ref, 12.0)
    for scale in (0.25, 3.0):
        scaled = (est * np.float32(scale)).astype(np.float32)
        assert em.si_sdr(ref, scaled).value == pytest.approx(em.si_sdr(ref, est).value,
                                                              abs=1e-6)
        assert (em.bss_eval([ref], [scaled])[0]["sdr"][0].value
                == pytest.approx(em.bss_eval([ref], [est])[0]["sdr"][0].value, abs=1e-6))


def test_bss_eval_matches_mir_eval_and_fast_bss_eval():
    """Second implementations: mir_eval (BSS Eval v3 reference code) and fast_bss_eval."""
    import fast_bss_eval
    import mir_eval
    import torch

    rng = np.random.default_rng(7)
    n = SR
    refs = np.stack([speechlike(1.0, channels=1)[0], noise((1, n), seed=8)[0]])
    est = np.stack([refs[0] + 0.3 * refs[1] + 0.05 * rng.standard_normal(n),
                    refs[1] + np.convolve(refs[1], [0, 0.4, 0.2], "same") + 0.2 * refs[0]])
    est = est.astype(np.float32)
    ours = em.bss_eval([r[None] for r in refs], [e[None] for e in est])[0]
    ours = np.array([[s.value for s in ours[k]] for k in ("sdr", "sir", "sar")])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # mir_eval 0.8 deprecates bss_eval
        mir = np.array(mir_eval.separation.bss_eval_sources(
            refs.astype(float), est.astype(float), compute_permutation=False)[:3])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # torch's threaded LU fails intermittently after other torch use
    try:
        fast = np.array([t.numpy() for t in fast_bss_eval.bss_eval_sources(
            torch.from_numpy(refs.astype(float)), torch.from_numpy(est.astype(float)),
            compute_permutation=False)])
    finally:
        torch.set_num_threads(threads)
    np.testing.assert_allclose(ours, mir, atol=0.01)
    np.testing.assert_allclose(ours, fast, atol=0.01)
    assert em.si_sdr(refs[:1], est[:1]).value == pytest.approx(
        float(fast_bss_eval.si_sdr(refs[:1].astype(float), est[:1].astype(float))[0]),
        abs=1e-6)


def test_stereo_bss_eval_pools_channels():
    """Stereo equals mono BSS Eval of the channels laid end to end with silence between."""
    import mir_eval

    refs = [speechlike(1.0), noise((2, SR), seed=2)]
    ests = [(refs[0] + 0.2 * refs[1]).astype(np.float32),
            (refs[1] + 0.1 * noise((2, SR), seed=4)).astype(np.float32)]
    ours = em.bss_eval(refs, ests)[0]
    gap = np.zeros(2 * em.FILTER_LENGTH)

    def laid_out(x):
        return np.concatenate([x[0], gap, x[1]])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        sdr, sir, sar, _ = mir_eval.separation.bss_eval_sources(
            np.stack([laid_out(r) for r in refs]), np.stack([laid_out(e) for e in ests]),
            compute_permutation=False)
    np.testing.assert_allclose([s.value for s in ours["sdr"]], sdr, atol=0.01)
    np.testing.assert_allclose([s.value for s in ours["sir"]], sir, atol=0.01)


def test_stoi_identical_speechlike_is_one_and_noise_lowers_it():
    x = speechlike(3.0)
    for extended in (False, True):
        assert em.stoi(x, x.copy(), SR, extended).value == pytest.approx(1.0, abs=1e-3)
    noisy = at_snr(x, -5.0)
    assert em.stoi(x, noisy, SR).value < 0.9


def test_stoi_matches_pystoi():
    from pystoi import stoi as pystoi

    x = speechlike(3.0, sr=em.STOI_RATE, channels=1)
    y = at_snr(x, 0.0)
    for extended in (False, True):
        want = pystoi(x[0].astype(float), y[0].astype(float), em.STOI_RATE, extended)
        assert em.stoi(x, y, em.STOI_RATE, extended).value == pytest.approx(want, abs=1e-6)
    x16, y16 = speechlike(3.0, channels=1), at_snr(speechlike(3.0, channels=1), 0.0)
    want = pystoi(x16[0].astype(float), y16[0].astype(float), SR)
    # soxr instead of pystoi's Octave-style resampler: scores differ in the 3rd decimal at most
    assert em.stoi(x16, y16, SR).value == pytest.approx(want, abs=5e-3)


def test_stoi_too_short_is_undefined_with_reason():
    x = speechlike(0.3)
    score = em.stoi(x, x.copy(), SR)
    assert score.value is None and "too little" in score.reason and "needs 30" in score.reason


def test_silent_signals_are_undefined_with_reason():
    x = speechlike(1.0)
    silent = np.zeros_like(x)
    for score in (em.cosine(silent, x), em.si_sdr(silent, x), em.stoi(silent, x, SR)):
        assert score.value is None and "reference is silent" in score.reason
    for score in (em.cosine(x, silent), em.si_sdr(x, silent), em.stoi(x, silent, SR)):
        assert score.value is None and "estimate is silent" in score.reason
    assert em.mse(x, silent).value > 0
    res = em.bss_eval([x, noise(x.shape)], [silent, noise(x.shape, seed=9)])[0]
    assert res["sdr"][0].value is None and "estimate is silent" in res["sdr"][0].reason
    assert res["sdr"][1].value is not None
    assert res["sir"][1].value is None and "silent" in res["sir"][1].reason


def test_mixture_sdr_equals_sdr_against_the_summed_target():
    refs = [speechlike(1.0), noise((2, SR), seed=2)]
    est = (0.3 * refs[0] + refs[1] + 0.05 * noise((2, SR), seed=6)).astype(np.float32)
    target = (0.3 * refs[0] + refs[1]).astype(np.float32)
    via_mixture = em.bss_eval(refs, mixtures=[((0.3, 1.0), est)])[0]["sdr"][0].value
    direct = em.bss_eval([target], [est])[0]["sdr"][0].value
    assert via_mixture == pytest.approx(direct, abs=1e-4)


def test_nan_input_gives_undefined_scores_not_nan():
    x = speechlike(1.0)
    bad = x.copy()
    bad[0, 100] = np.nan
    for score in (em.cosine(x, bad), em.mse(bad, x), em.stoi(x, bad, SR),
                  em.bss_eval([x], [bad])[0]["sdr"][0]):
        assert score.value is None and "NaN" in score.reason
    signals, _, _ = track()
    signals["voice"] = bad
    with pytest.raises(InputError, match="voice"):
        ev.evaluate_track(signals, SR, None, False, 0.4)


def test_vocal_level_change_measures_the_blend_gain():
    vocals, inst = speechlike(1.0), noise((2, SR))
    original = vocals + inst
    for w in (0.5, 0.1):
        blended = (w * original + (1 - w) * inst).astype(np.float32)
        assert em.vocal_level_change_db(blended, original, inst).value == pytest.approx(
            20 * np.log10(w), abs=1e-3)
    undefined = em.vocal_level_change_db(inst, original, inst)
    assert undefined.value is None and "-inf" in undefined.reason


def test_layout_and_shape_mistakes_raise_input_error():
    x = speechlike(1.0)
    with pytest.raises(InputError, match="samples, channels"):
        em.mse(x.T.copy(), x.T.copy())
    with pytest.raises(InputError, match="shape"):
        em.mse(x, x[:, :-1])


# ---- per-track evaluation ----------------------------------------------------------------

def track(w=0.4, va=0.6, seconds=1.5):
    vocals, accomp = speechlike(seconds), noise((2, int(seconds * SR)), level=0.05)
    original = vocals + accomp
    artifacts = noise(vocals.shape, seed=11, level=0.002)  # keeps SAR finite
    model_vocals = (0.9 * vocals + 0.05 * accomp + artifacts).astype(np.float32)
    model_instr = (original - model_vocals).astype(np.float32)
    voice = (va * (original - model_instr) + (1 - va) * model_vocals).astype(np.float32)
    signals = {"original": original, "blended": (w * original + (1 - w) * model_instr)
               .astype(np.float32), "voice": voice,
               "phase_cancel": (original - voice).astype(np.float32),
               "model_instrumental": model_instr, "model_vocals": model_vocals}
    return signals, vocals, accomp


def write_stems(folder, stems, ext="flac"):
    folder.mkdir(parents=True)
    for name, x in stems.items():
        sf.write(str(folder / f"{name}.{ext}"), x.T, SR, subtype="FLOAT" if ext == "wav"
                 else "PCM_24")


@pytest.mark.parametrize("layout", ["accompaniment", "no_vocals", "drums+bass+other"])
def test_find_reference_detects_layouts(tmp_path, layout):
    vocals, accomp = speechlike(1.0), noise((2, SR), level=0.05)
    if layout == "drums+bass+other":
        parts = {"drums": 0.5 * accomp, "bass": 0.3 * accomp, "other": 0.2 * accomp}
        write_stems(tmp_path / "song", {"vocals": vocals, **parts})
    else:
        write_stems(tmp_path / "song", {"vocals": vocals, layout: accomp}, ext="wav")
    ref = ev.find_reference(tmp_path, "song")
    assert ref["layout"] == layout and ref["sr"] == SR
    assert ref["vocals"].dtype == np.float32 and ref["vocals"].shape == vocals.shape
    np.testing.assert_allclose(ref["accompaniment"], accomp, atol=1e-5)


def test_find_reference_missing_is_none(tmp_path):
    assert ev.find_reference(tmp_path, "absent") is None
    write_stems(tmp_path / "song", {"vocals": speechlike(0.5)})
    assert ev.find_reference(tmp_path, "song") is None


def test_evaluate_track_known_answers():
    w = 0.4
    signals, vocals, accomp = track(w=w)
    ref = {"vocals": vocals, "accompaniment": accomp, "sr": SR, "layout": "test", "files": []}
    report = ev.evaluate_track(signals, SR, ref, estoi=False, vocal_gain=w)
    assert report["vocal_change_db"] == pytest.approx(20 * np.log10(w), abs=1e-3)
    assert report["vocal_change_expected_db"] == pytest.approx(20 * np.log10(w))
    assert set(report["model"]) == {"phase_cancel", "voice", "blended"}
    assert report["model"]["voice"]["against"] == "model_vocals"
    assert 0.0 < report["model"]["voice"]["stoi"] <= 1.0
    truth = report["reference"]
    # the blend of a perfect-sum mix equals accompaniment + w*vocals up to the model error
    assert truth["blended"]["sdr"] > 20
    assert truth["voice"]["sdr"] > 10 and truth["voice"]["sir"] is not None
    assert report["undefined"] == {}
    json.dumps(report, allow_nan=False)
    estoi = ev.evaluate_track(signals, SR, None, estoi=True, vocal_gain=None)
    assert "estoi" in estoi["model"]["voice"] and estoi["reference"] is None
    assert "vocal_gain" in estoi["undefined"]["vocal_change_expected_db"]


def test_reference_at_other_rate_and_length_is_matched():
    import soxr

    signals, vocals, accomp = track()
    up = {k: np.ascontiguousarray(soxr.resample(x.T, SR, 2 * SR).T[:, :-7]).astype(np.float32)
          for k, x in (("vocals", vocals), ("accompaniment", accomp))}
    report = ev.evaluate_track(signals, SR, dict(up, sr=2 * SR), False, 0.4)
    assert abs(report["reference"]["length_mismatch_samples"]) <= 4
    assert report["reference"]["voice"]["sdr"] > 10


def test_unusable_reference_is_reported_not_raised():
    signals, vocals, accomp = track()
    mono = {"vocals": vocals[:1], "accompaniment": accomp[:1], "sr": SR}
    report = ev.evaluate_track(signals, SR, mono, False, 0.4)
    assert report["reference"] is None and "channels=1" in report["undefined"]["reference"]


def test_evaluate_track_silent_output_is_reported_not_raised():
    signals, vocals, accomp = track()
    signals["voice"] = np.zeros_like(signals["voice"])
    report = ev.evaluate_track(signals, SR, None, estoi=False, vocal_gain=0.4)
    assert report["model"]["voice"]["cosine"] is None
    assert "estimate is silent" in report["undefined"]["model.voice.cosine"]


def test_reports_csv_schema_and_json(tmp_path):
    signals, vocals, accomp = track()
    ref = {"vocals": vocals, "accompaniment": accomp, "sr": SR, "layout": "test", "files": []}
    rows = [ev.report_row("with ref", ev.evaluate_track(signals, SR, ref, False, 0.4)),
            ev.report_row("no ref", ev.evaluate_track(signals, SR, None, False, 0.4))]
    path = tmp_path / "vtrace_eval.csv"
    ev.write_batch_csv(path, rows)
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames) == tuple(ev.CSV_COLUMNS)
        got = list(reader)
    assert [r["track"] for r in got] == ["with ref", "no ref"]
    assert float(got[0]["ref_voice_sdr"]) > 0 and got[1]["ref_voice_sdr"] == ""
    assert float(got[1]["model_voice_cosine"]) == pytest.approx(rows[1]["model_voice_cosine"])
    assert {"track", "eval_seconds", "model_phase_cancel_stoi", "ref_blended_si_sdr",
            "undefined"} <= set(ev.CSV_COLUMNS)
    report_path = tmp_path / "mix_eval.json"
    ev.write_track_report(report_path, {"a": 1.5, "b": None})
    assert json.loads(report_path.read_text()) == {"a": 1.5, "b": None}
    assert leftovers(tmp_path) == []  # no temporary file left behind
    table = ev.format_table(rows)
    assert "with ref" in table and "vocal SDR vtrace" in table and "-" in table


def test_table_puts_model_stems_beside_outputs_with_a_verdict():
    rows = [{"track": "a", "eval_seconds": 1.0, "vocal_change_db": -20.0,
             "ref_model_instrumental_sdr": 10.0, "ref_phase_cancel_sdr": 11.25,
             "ref_model_vocals_sdr": 8.0, "ref_voice_sdr": 8.04},
            {"track": "b", "eval_seconds": 1.0, "vocal_change_db": -20.0,
             "ref_voice_sdr": 3.0}]
    lines = ev.format_table(rows).splitlines()
    assert "inst SDR model  inst SDR vtrace  vocal SDR model  vocal SDR vtrace" in lines[0]
    assert lines[1].endswith("instrumental +1.2 dB, vocal as the model's vs the model's stems")
    assert "10.0" in lines[1] and "11.2" in lines[1]
    assert lines[2].endswith("instrumental not measured, vocal not measured vs the model's "
                             "stems")


def test_plot_track_writes_png(tmp_path):
    signals, _, _ = track(seconds=1.0)
    path = tmp_path / "mix_eval.png"
    ev.plot_track(path, signals, SR)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_published_scores_and_gains_per_output(tmp_path):
    """sdr_museval and usdr for every output with a reference, and the change of each VTrace
    output against the model's own stem (the repair's gain) in sdr, sdr_museval and usdr."""
    signals, vocals, accomp = track(w=0.3)
    ref = {"vocals": vocals, "accompaniment": accomp, "sr": SR, "layout": "test", "files": []}
    report = ev.evaluate_track(signals, SR, ref, estoi=False, vocal_gain=0.3)
    truth = report["reference"]
    for out in ev.REFERENCE_PAIRS:
        against = vocals if out in ("voice", "model_vocals") else accomp
        if out == "blended":
            against = accomp + np.float32(0.3) * vocals
        assert truth[out]["usdr"] == pytest.approx(em.usdr(against, signals[out]).value)
        assert truth[out]["sdr_museval"] is not None
    for out, model in ev.GAIN_PAIRS.items():
        for m in ("sdr", "sdr_museval", "usdr"):
            assert truth[out][f"{m}_gain"] == pytest.approx(truth[out][m] - truth[model][m])
    row = ev.report_row("t", report)
    assert row["ref_phase_cancel_usdr_gain"] == truth["phase_cancel"]["usdr_gain"]
    assert row["ref_voice_sdr_gain"] == truth["voice"]["sdr_gain"]
    assert row["ref_blended_sdr_museval"] == truth["blended"]["sdr_museval"]
    assert {"ref_voice_usdr", "ref_model_vocals_sdr_museval", "ref_phase_cancel_sdr"} <= set(
        ev.CSV_COLUMNS)


def test_verdict_adds_the_usdr_change_when_measured():
    row = {"ref_model_instrumental_sdr": 10.0, "ref_phase_cancel_sdr": 11.25,
           "ref_model_vocals_sdr": 8.0, "ref_voice_sdr": 8.04,
           "ref_phase_cancel_usdr_gain": 2.61, "ref_voice_usdr_gain": 0.02}
    assert ev.verdict(row) == ("instrumental +1.2 dB, vocal as the model's vs the model's "
                               "stems (uSDR instrumental +2.6 dB, vocal +0.0 dB)")
