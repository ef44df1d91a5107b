"""Streaming BS.1770 meter against pyloudnorm, true peak, and match_gain, on synthetic audio."""

import math
import warnings

import numpy as np
import pyloudnorm
import pytest

from audio_utils.loudness import LoudnessMeter, match_gain, measure
from utils.errors import InputError


def _program(sr, channels, seconds, seed=0):
    """Tone and noise with loud and near-silent stretches, so both gates have work to do."""
    rng = np.random.default_rng(seed)
    n = int(seconds * sr)
    t = np.arange(n) / sr
    envelope = np.where((t % 2.0) < 1.2, 1.0, 0.01)
    rows = [np.sin(2 * np.pi * (110 * (c + 1)) * t) * 0.3 + rng.standard_normal(n) * 0.05
            for c in range(channels)]
    return (np.array(rows) * envelope).astype(np.float32)


def _feed_in_random_blocks(meter, x, seed=1):
    rng = np.random.default_rng(seed)
    pos = 0
    while pos < x.shape[1]:
        size = int(rng.integers(1, meter.sr // 2))
        meter.feed(x[:, pos:pos + size])
        pos += size


@pytest.mark.parametrize("sr,channels,seconds", [(44100, 2, 5.37), (48000, 1, 3.05),
                                                 (22050, 5, 2.0), (11025, 2, 4.4)])
def test_streaming_meter_matches_pyloudnorm(sr, channels, seconds):
    x = _program(sr, channels, seconds)
    reference = pyloudnorm.Meter(sr).integrated_loudness(x.T.astype(np.float64))
    meter = LoudnessMeter(sr, channels)
    _feed_in_random_blocks(meter, x)
    assert abs(meter.integrated_lufs() - reference) < 0.05
    whole_lufs, whole_peak = measure(x, sr)
    assert abs(whole_lufs - reference) < 0.05
    assert meter.true_peak_dbtp() == pytest.approx(whole_peak, abs=0.01)


def test_meter_follows_gain_exactly():
    x = _program(48000, 2, 3.0)
    louder, _ = measure(x * np.float32(2.0), 48000)
    quiet, _ = measure(x, 48000)
    assert louder - quiet == pytest.approx(20 * math.log10(2.0), abs=0.01)


def test_silence_and_too_short_give_minus_inf_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert measure(np.zeros((2, 48000), np.float32), 48000) == (-math.inf, -math.inf)
        pulse = (0.5 * np.hanning(1001))[None].astype(np.float32)       # 21 ms, smooth
        lufs, peak = measure(pulse, 48000)
        assert lufs == -math.inf and peak == pytest.approx(20 * math.log10(0.5), abs=0.01)


def test_true_peak_finds_the_peak_between_samples():
    sr = 48000
    n = 2 * sr
    # A tone at sr/4 sampled 45 degrees off its crests: samples reach only 0.707 of the peak.
    tone = 0.5 * np.sin(2 * np.pi * (sr / 4) * np.arange(n) / sr + np.pi / 4)
    fade = np.ones(n)
    fade[:4800] = np.hanning(9600)[:4800]           # no click at the ends to overshoot
    fade[-4800:] = np.hanning(9600)[4800:]
    x = (tone * fade)[None].astype(np.float32)
    _, peak = measure(x, sr)
    assert 20 * math.log10(np.abs(x).max()) < -8.9                     # sample peak -9.03
    assert peak == pytest.approx(20 * math.log10(0.5), abs=0.2)        # true peak -6.02


def test_match_gain_reaches_target_when_ceiling_allows():
    sr = 44100
    original = _program(sr, 2, 4.0, seed=3)
    output = original * np.float32(0.3)
    target, _ = measure(original, sr)
    lufs, peak = measure(output, sr)
    result = match_gain(target, lufs, peak)
    assert result.gain > 1.0 and "matched" in result.reason
    matched, matched_peak = measure(output * np.float32(result.gain), sr)
    assert abs(matched - target) < 0.1
    assert matched_peak <= -1.0


def test_match_gain_is_limited_by_true_peak_ceiling():
    sr = 44100
    original = _program(sr, 2, 4.0, seed=4)
    peaky = original.copy()
    peaky[:, sr] = 0.99                          # one loud click holds the level down
    output = peaky * np.float32(0.3)
    target, _ = measure(original * np.float32(2.5), sr)
    lufs, peak = measure(output, sr)
    result = match_gain(target, lufs, peak)
    assert "ceiling" in result.reason
    matched, matched_peak = measure(output * np.float32(result.gain), sr)
    assert matched < target - 0.1
    assert matched_peak <= -1.0 + 1e-4
    assert matched_peak == pytest.approx(-1.0, abs=0.01)   # and it uses all the headroom


@pytest.mark.parametrize("target,measured,peak", [(-math.inf, -20.0, -3.0),
                                                  (-14.0, -math.inf, -math.inf),
                                                  (-math.inf, -math.inf, -math.inf)])
def test_match_gain_leaves_silence_alone_with_a_reason(target, measured, peak):
    result = match_gain(target, measured, peak)
    assert result.gain == 1.0 and "silent" in result.reason


def test_match_gain_rejects_nan():
    with pytest.raises(ValueError, match="measured_lufs"):
        match_gain(-14.0, float("nan"), -3.0)


def test_meter_checks_its_input_and_refuses_feed_after_reading():
    meter = LoudnessMeter(48000, 2)
    with pytest.raises(InputError):
        meter.feed(np.zeros((1, 4800), np.float32))          # wrong channel count
    with pytest.raises(InputError):
        meter.feed(np.zeros((4800, 2), np.float32))          # (samples, channels)
    meter.feed(np.zeros((2, 4800), np.float32))
    meter.integrated_lufs()
    with pytest.raises(ValueError):
        meter.feed(np.zeros((2, 4800), np.float32))
    with pytest.raises(ValueError):
        LoudnessMeter(48000, 6)
