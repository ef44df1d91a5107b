"""Issue 7 end to end: attenuation modes, vocal gain in dB, gate blend, residual cleanup,
loudness match, all through main()."""

import json
import math

import numpy as np
import pytest

from audio_utils.filters import shape_residual
from main import main
from tests.conftest import SR, read


def run(song, *extra, out="out"):
    return main(["-i", str(song["dir"]), "--model", "test", "--separated-dir",
                 str(song["sep"]), "-o", str(song["tmp"] / out), "--quiet", "--log-dir",
                 str(song["tmp"] / "logs"), "--wav-format", "float32"] + list(extra))


def out(song, key, folder="out"):
    return read(song["tmp"] / folder / "test" / "mix" / f"mix_{key}.wav")[0]


def rms(x):
    return float(np.sqrt(np.mean(x.astype(np.float64) ** 2)))


def test_smoothstep_mode(song):
    assert run(song, "--blend-mode", "smoothstep", "-ba", "0.25") == 0
    w = 3 * 0.25 ** 2 - 2 * 0.25 ** 3
    np.testing.assert_allclose(out(song, "blended"), w * song["mix"] + (1 - w) * song["inst"],
                               atol=1e-6)


@pytest.mark.parametrize("mode,db", [("linear", -20.0), ("log", -14.0), ("power", -30.0),
                                     ("smoothstep", -25.0), ("exp", -6.0), ("gate", -20.0)])
def test_vocal_gain_db_gives_that_gain(song, mode, db):
    assert run(song, "--blend-mode", mode, "--vocal-gain-db", str(db),
               "--vocal-gate-threshold-db", "-90") == 0
    vocal_before = song["mix"] - song["inst"]
    vocal_after = out(song, "blended") - song["inst"]
    active = np.abs(song["vocals"]).max(axis=0) > 0  # gate mode changes only vocal passages
    measured = 20 * math.log10(rms(vocal_after[:, active]) / rms(vocal_before[:, active]))
    assert measured == pytest.approx(db, abs=0.01)


def test_vocal_gain_out_of_reach_fails_clearly(song, capsys):
    assert run(song, "--blend-mode", "exp", "--vocal-gain-db", "-20") == 2
    assert "vocal_gain_db=-20" in capsys.readouterr().err


def test_gate_mode_leaves_vocal_free_passages_bit_identical(song):
    assert run(song, "--blend-mode", "gate", "-ba", "0.1", "--vocal-gate-release-ms", "50",
               "--vocal-gate-hold-ms", "20") == 0
    b = out(song, "blended")
    vocal = np.abs(song["vocals"]).max(axis=0) > 0
    # vocal-free samples at least 0.15 s away from any vocal (past attack, hold and release)
    margin = int(0.15 * SR)
    near = np.convolve(vocal.astype(float), np.ones(2 * margin + 1), mode="same") > 0
    free = ~near
    assert free.sum() > SR // 4
    np.testing.assert_array_equal(b[:, free], song["mix"][:, free])
    loud = np.abs(song["vocals"]).max(axis=0) > 0.2
    np.testing.assert_allclose(b[:, loud], (0.1 * song["mix"] + 0.9 * song["inst"])[:, loud],
                               atol=1e-6)


def test_phase_cancel_is_original_minus_cleaned_residual(song):
    assert run(song, "--residual-hpf", "120", "--gate-threshold-db", "-50",
               "--block-seconds", "1") == 0
    residual = song["mix"] - song["inst"]
    cleaned = shape_residual(residual.astype(np.float32), SR, residual_hpf=120.0, filter_order=2,
                             gate_threshold_db=-50.0)
    np.testing.assert_allclose(out(song, "vocal_residual"), cleaned, atol=1e-6)
    np.testing.assert_allclose(out(song, "phase_cancel"),
                               song["mix"] - out(song, "vocal_residual"), atol=1e-6)


def test_loudness_match(song):
    import pyloudnorm

    assert run(song, "--match-loudness", "-ba", "0.0") == 0
    meter = pyloudnorm.Meter(SR)
    target = meter.integrated_loudness(song["mix"].T.astype(np.float64))
    got = meter.integrated_loudness(out(song, "blended").T.astype(np.float64))
    manifest = json.loads((song["tmp"] / "out/test/mix/mix_vtrace.json").read_text())
    tp = manifest["loudness"]["blended"]["true_peak_dbtp"]
    assert tp <= -1.0 + 1e-6
    if tp < -1.01:  # not limited by the ceiling
        assert got == pytest.approx(target, abs=0.1)
    else:
        assert got < target
    assert manifest["loudness"]["original"]["integrated_lufs"] == pytest.approx(target, abs=0.1)
