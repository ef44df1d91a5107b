"""Known answers for processors.vtrace_core and audio_utils.audio_checks."""

import math

import numpy as np
import pytest

from processors import vtrace_core as core
from audio_utils.audio_checks import check_audio
from utils.errors import InputError


@pytest.mark.parametrize("mode,alpha,expected", [
    ("linear", 0.25, 0.25),
    ("exp", 0.5, math.exp(-0.5)),
    ("log", 0.5, math.log(1.5)),
    ("power", 0.5, 0.25),
    ("smoothstep", 0.0, 0.0),
    ("smoothstep", 0.5, 0.5),
    ("smoothstep", 1.0, 1.0),
    ("smoothstep", 0.25, 3 * 0.0625 - 2 * 0.015625),
])
def test_weights_per_mode(mode, alpha, expected):
    assert core.blend_weight(alpha, mode, gamma=2.0) == pytest.approx(expected, abs=1e-12)


def test_power_uses_gamma():
    assert core.blend_weight(0.5, "power", gamma=3.0) == pytest.approx(0.125)


def test_unknown_mode_is_a_config_error():
    with pytest.raises(ValueError, match="blend_mode='cubic'"):
        core.blend_weight(0.5, "cubic")


def test_blend_of_ones_and_zeros():
    o = np.ones((2, 8), np.float32)
    i = np.zeros((2, 8), np.float32)
    np.testing.assert_array_equal(core.blend(o, i, 0.3), np.full((2, 8), 0.3, np.float32))
    np.testing.assert_array_equal(core.blend(o, i, 1.0), o)
    np.testing.assert_array_equal(core.blend(o, i, 0.0), i)


def test_blend_equals_instrumental_plus_weighted_residual():
    rng = np.random.default_rng(1)
    o, i = rng.uniform(-1, 1, (2, 2, 1000)).astype(np.float32)
    for w in (0.0, 0.1, 0.5, math.exp(-1), 1.0):
        b = core.blend(o, i, w)
        assert b.dtype == np.float32
        np.testing.assert_allclose(b, i + w * (o - i), atol=2e-7)


def test_time_varying_weight_keeps_original_exactly_where_w_is_one():
    rng = np.random.default_rng(2)
    o, i = rng.uniform(-1, 1, (2, 2, 100)).astype(np.float32)
    w = np.ones((1, 100), np.float32)
    w[:, 50:] = 0.1
    b = core.blend(o, i, w)
    np.testing.assert_array_equal(b[:, :50], o[:, :50])
    np.testing.assert_allclose(b[:, 50:], 0.1 * o[:, 50:] + 0.9 * i[:, 50:], atol=1e-7)


def test_phase_cancel_gives_back_instrumental_when_voice_alpha_is_one():
    rng = np.random.default_rng(3)
    o, i, vm = rng.uniform(-1, 1, (3, 2, 4096)).astype(np.float32)
    r = core.residual(o, i)
    v = core.voice(r, vm, 1.0)
    np.testing.assert_array_equal(v, r)
    # O - (O - I) == I to float32 precision: one rounding of each subtraction
    np.testing.assert_allclose(core.phase_cancel(o, v), i, atol=2.5e-7, rtol=0)


def test_voice_mixes_residual_and_model_vocals():
    r = np.ones((1, 4), np.float32)
    vm = np.zeros((1, 4), np.float32)
    np.testing.assert_allclose(core.voice(r, vm, 0.25), np.full((1, 4), 0.25))
    np.testing.assert_array_equal(core.voice(r, vm, 0.0), vm)


def test_inputs_are_not_modified():
    rng = np.random.default_rng(4)
    o, i = rng.uniform(-1, 1, (2, 2, 64)).astype(np.float32)
    o0, i0 = o.copy(), i.copy()
    core.blend(o, i, 0.5)
    r = core.residual(o, i)
    core.phase_cancel(o, core.voice(r, i, 0.5))
    np.testing.assert_array_equal(o, o0)
    np.testing.assert_array_equal(i, i0)


def test_clip_gain_only_above_full_scale():
    assert core.clip_gain(0.5) == 1.0
    assert core.clip_gain(1.0) == 1.0
    assert core.clip_gain(2.0) == 0.5
    assert core.clip_gain(float("nan")) == 1.0


@pytest.mark.parametrize("mode", ["linear", "exp", "log", "power", "smoothstep"])
def test_vocal_gain_db_inverts_the_weight(mode):
    lo = core.blend_weight(0.0, mode, 2.0)
    hi = core.blend_weight(1.0, mode, 2.0)
    for frac in (0.1, 0.5, 0.9):
        w = lo + frac * (hi - lo)
        if w <= 0:
            continue
        db = 20 * math.log10(w)
        a = core.alpha_for_vocal_gain_db(db, mode, 2.0)
        assert 20 * math.log10(core.blend_weight(a, mode, 2.0)) == pytest.approx(db, abs=0.01)


def test_vocal_gain_db_minus_20_is_linear_alpha_0_1():
    assert core.alpha_for_vocal_gain_db(-20.0, "linear") == pytest.approx(0.1)


def test_vocal_gain_out_of_reach_names_the_range():
    with pytest.raises(ValueError, match=r"vocal_gain_db=-20.*exp.*-8.69 dB"):
        core.alpha_for_vocal_gain_db(-20.0, "exp")


def test_check_audio_rejects_wrong_layouts():
    with pytest.raises(InputError, match="float32"):
        check_audio(np.zeros((2, 10)))
    with pytest.raises(InputError, match="channels, samples"):
        check_audio(np.zeros(10, np.float32))
    with pytest.raises(InputError, match=r"\(samples, channels\)"):
        check_audio(np.zeros((1000, 2), np.float32))
    with pytest.raises(InputError, match="NaN"):
        check_audio(np.array([[0.0, np.nan]], np.float32))
    x = np.zeros((2, 10), np.float32)
    assert check_audio(x) is x
