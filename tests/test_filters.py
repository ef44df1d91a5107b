"""Zero-phase filters, noise gate and gate weight on signals synthesized here.

Gate timing is measured on the output's gain (output / input, in dB): attack is the time from
the gain leaving the closed level (> range + 0.1 dB) to being within 0.1 dB of open, release
the reverse. With a full swing ramped linearly in dB that is the set time minus 0.2/|range|
of it, so a 1 ms tolerance is strict.
"""

import numpy as np
import pytest

from audio_utils.filters import (butter_zero_phase, gate_weight, noise_gate, required_context,
                                 shape_residual)
from utils.errors import InputError

SR = 16000


def _sine(freq, seconds, amp=1.0, phase=0.0, sr=SR):
    t = np.arange(int(seconds * sr)) / sr
    return amp * np.sin(2 * np.pi * freq * t + phase)


def _db(x):
    return 20 * np.log10(x)


@pytest.mark.parametrize("kind,cutoff,order", [("highpass", 80.0, 4), ("highpass", 200.0, 1),
                                               ("lowpass", 2000.0, 4), ("lowpass", 5000.0, 2)])
def test_butter_is_minus_3db_at_cutoff_and_flat_in_passband(kind, cutoff, order):
    pass_f = cutoff * 8 if kind == "highpass" else cutoff / 8
    stop_f = cutoff / 4 if kind == "highpass" else min(cutoff * 1.5, SR / 2 * 0.95)
    for freq, expect_db, tol in ((cutoff, -3.01, 0.5), (pass_f, 0.0, 0.1)):
        x = _sine(freq, 2.0)[None].astype(np.float32)
        y = butter_zero_phase(x, SR, cutoff, kind, order)
        mid = slice(SR // 2, 3 * SR // 2)   # away from the ends
        gain_db = _db(np.sqrt(np.mean(y[0, mid].astype(float) ** 2) / np.mean(x[0, mid] ** 2.0)))
        assert abs(gain_db - expect_db) < tol, (freq, gain_db)
    x = _sine(stop_f, 2.0)[None].astype(np.float32)
    y = butter_zero_phase(x, SR, cutoff, kind, order)
    assert np.abs(y[0, SR // 2:3 * SR // 2]).max() < 0.5   # well below -3 dB


@pytest.mark.parametrize("kind,cutoff", [("highpass", 100.0), ("lowpass", 1000.0)])
def test_butter_has_no_delay(kind, cutoff):
    n, at = 8001, 4000
    x = np.zeros((2, n), np.float32)
    x[:, at] = 1.0
    y = butter_zero_phase(x, SR, cutoff, kind, 4)
    assert np.argmax(np.abs(y[0])) == at
    np.testing.assert_allclose(y[:, at + 1:at + 2000], y[:, at - 1:at - 2000:-1], atol=1e-6)
    # A sine at the cutoff comes out scaled, not shifted: y is a multiple of x.
    x = _sine(cutoff, 2.0, amp=0.5, phase=0.7)[None].astype(np.float32)
    y = butter_zero_phase(x, SR, cutoff, kind, 4)[0, SR // 2:3 * SR // 2].astype(float)
    ref = x[0, SR // 2:3 * SR // 2].astype(float)
    scale = np.dot(y, ref) / np.dot(ref, ref)
    assert abs(_db(scale) + 3.01) < 0.5
    assert np.abs(y - scale * ref).max() < 1e-3


def test_butter_keeps_input_and_layout():
    x = np.random.default_rng(0).standard_normal((2, 4000)).astype(np.float32) * 0.1
    before = x.copy()
    y = butter_zero_phase(x, SR, 300.0, "highpass", 2)
    assert y.dtype == np.float32 and y.shape == x.shape and y is not x
    np.testing.assert_array_equal(x, before)


@pytest.mark.parametrize("cutoff,kind,order", [(8000.0, "lowpass", 4), (0.0, "highpass", 4),
                                               (100.0, "bandpass", 4), (100.0, "highpass", 0),
                                               (100.0, "highpass", 2.5)])
def test_butter_rejects_bad_parameters(cutoff, kind, order):
    x = np.zeros((1, 1000), np.float32)
    with pytest.raises(ValueError, match="="):
        butter_zero_phase(x, SR, cutoff, kind, order)


@pytest.mark.parametrize("n", [1, 2, 7, 15, 16])
def test_butter_handles_inputs_shorter_than_its_edge_padding(n):
    x = np.full((2, n), 0.5, np.float32)
    y = butter_zero_phase(x, SR, 1000.0, "lowpass", 4)
    assert y.shape == (2, n) and np.isfinite(y).all()
    np.testing.assert_allclose(y, x, atol=1e-4)          # DC passes a low-pass


def test_butter_rejects_samples_by_channels_layout():
    with pytest.raises(InputError):
        butter_zero_phase(np.zeros((1000, 2), np.float32), SR, 100.0, "highpass", 2)


def _burst_signal():
    """-63 dBFS floor everywhere, a -13 dBFS tone burst from 1.0 s to 2.0 s; 3 s stereo."""
    t = np.arange(3 * SR) / SR
    floor = 10 ** (-60 / 20) * np.sin(2 * np.pi * 310 * t + 0.3)
    burst = np.where((t >= 1.0) & (t < 2.0), 10 ** (-10 / 20) * np.sin(2 * np.pi * 1000 * t), 0)
    # The right channel's floor is 6 dB lower: a linked gate still treats both alike.
    return np.stack([floor + burst, 0.5 * floor + burst]).astype(np.float32)


def _gain_db(y, x):
    return _db(np.abs(y[0].astype(float) / x[0].astype(float)))


@pytest.mark.parametrize("attack_ms,release_ms,hold_ms", [(5.0, 100.0, 50.0),
                                                          (20.0, 40.0, 0.0)])
def test_noise_gate_passes_burst_attenuates_floor_with_set_ballistics(attack_ms, release_ms,
                                                                      hold_ms):
    x = _burst_signal()
    y = noise_gate(x, SR, -30.0, attack_ms, release_ms, hold_ms, -40.0)
    burst = slice(int(1.1 * SR), int(1.9 * SR))
    np.testing.assert_array_equal(y[:, burst], x[:, burst])              # open: untouched
    g = _gain_db(y, x)
    for floor in (slice(0, int(0.9 * SR)), slice(int(2.5 * SR), 3 * SR)):
        assert np.abs(g[floor] + 40.0).max() < 0.01                       # closed: -40 dB
        np.testing.assert_allclose(y[1, floor], x[1, floor] * 10 ** (-2), rtol=1e-5, atol=0)
    leaves_closed = np.flatnonzero(g > -40 + 0.1)
    fully_open = np.flatnonzero(g > -0.1)
    attack = (fully_open[0] - leaves_closed[0]) / SR * 1000
    release = (leaves_closed[-1] - fully_open[-1]) / SR * 1000
    assert abs(attack - attack_ms) < 1.0, attack
    assert abs(release - release_ms) < 1.0, release
    # Look-ahead: fully open by the onset; closing starts hold_ms after the level (20 ms
    # window, so 10 ms after the burst) drops.
    assert fully_open[0] <= 1.0 * SR
    assert abs(fully_open[-1] / SR * 1000 - (2000 + 10 + hold_ms)) < 2.0


def test_noise_gate_rejects_positive_range():
    with pytest.raises(ValueError, match="range_db"):
        noise_gate(_burst_signal(), SR, -30.0, 5.0, 100.0, 50.0, 6.0)


def test_gate_weight_is_exactly_one_without_vocals_and_w_active_with_them():
    vocals = _burst_signal()
    w = gate_weight(vocals, SR, -40.0, 10.0, 200.0, 100.0, 0.1)
    assert w.shape == (1, vocals.shape[1]) and w.dtype == np.float32
    free = np.r_[0:int(0.95 * SR), int(2.4 * SR):3 * SR]
    assert np.all(w[0, free] == 1.0)
    assert np.all(w[0, int(1.0 * SR):int(2.0 * SR)] == np.float32(0.1))
    ramp_in = w[0, int(0.95 * SR):int(1.0 * SR)]
    assert np.all(np.diff(ramp_in) <= 0) and ramp_in.min() < 1.0      # smooth, monotonic
    # The blend there is bit-identical to the original.
    rng = np.random.default_rng(1)
    original = rng.standard_normal((2, vocals.shape[1])).astype(np.float32) * 0.3
    instrumental = rng.standard_normal((2, vocals.shape[1])).astype(np.float32) * 0.3
    blend = w * original + (1 - w) * instrumental
    np.testing.assert_array_equal(blend[:, free], original[:, free])


def _blockwise(func, x, block, context):
    parts = []
    for start in range(0, x.shape[1], block):
        stop = min(x.shape[1], start + block)
        lo, hi = max(0, start - context), min(x.shape[1], stop + context)
        parts.append(func(x[:, lo:hi])[:, start - lo:stop - lo])
    return np.concatenate(parts, axis=1)


def test_blockwise_with_required_context_equals_whole():
    rng = np.random.default_rng(2)
    n = 6 * SR
    t = np.arange(n) / SR
    # Phrases of noise and bass with quiet bleed between them: every step has work to do.
    phrases = (np.sin(2 * np.pi * 0.7 * t) > 0.3).astype(float)
    sig = rng.standard_normal((2, n)) * 0.2 + np.sin(2 * np.pi * 45 * t) * 0.5
    x = (sig * (phrases + 0.003)).astype(np.float32)
    keys = dict(residual_hpf=80.0, residual_lpf=3000.0, filter_order=4, gate_threshold_db=-35.0,
                gate_attack_ms=5.0, gate_release_ms=100.0, gate_hold_ms=50.0)
    vkeys = dict(vocal_gate_threshold_db=-30.0, vocal_gate_attack_ms=10.0,
                 vocal_gate_release_ms=200.0, vocal_gate_hold_ms=100.0)
    chain_context = required_context(SR, **keys, gate_range_db=-40.0)   # extra keys ignored
    weight_context = required_context(SR, **vkeys)

    def chain(b):
        return shape_residual(b, SR, **keys, gate_range_db=-40.0)

    def weight(b):
        return gate_weight(b, SR, -30.0, 10.0, 200.0, 100.0, 0.2)

    def high_pass(b):
        return shape_residual(b, SR, residual_hpf=30.0, filter_order=4)

    hpf_context = required_context(SR, residual_hpf=30.0, filter_order=4)
    for func, context in ((chain, chain_context), (weight, weight_context),
                          (high_pass, hpf_context)):
        whole = func(x)
        assert np.abs(_blockwise(func, x, 7001, context) - whole).max() <= 1e-6
        # Without the margin the blocks do differ, so the check above can fail.
        assert np.abs(_blockwise(func, x, 7001, 0) - whole).max() > 1e-4


def test_required_context_grows_with_lower_cutoff_and_is_zero_when_off():
    assert required_context(SR) == 0
    low = required_context(SR, residual_hpf=40.0)
    high = required_context(SR, residual_hpf=160.0)
    assert low > high > 0
    both = required_context(SR, residual_hpf=160.0, gate_threshold_db=-40.0)
    assert both > high


def test_shape_residual_off_returns_equal_copy():
    x = np.random.default_rng(3).standard_normal((2, 1000)).astype(np.float32)
    y = shape_residual(x, SR)
    assert y is not x
    np.testing.assert_array_equal(x, y)
