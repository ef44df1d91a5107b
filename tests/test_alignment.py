"""Alignment recovers inserted delays and inverted polarity; matching keeps durations."""

import numpy as np
import pytest

from audio_utils import alignment
from audio_utils.matching import match_channels, resample
from tests.conftest import tone_mix

SR = 44100


def _shifted(x, lag):
    """``x`` delayed by ``lag`` samples (advanced if negative), zeros shifted in."""
    y = np.zeros_like(x)
    if lag >= 0:
        y[:, lag:] = x[:, :x.shape[1] - lag]
    else:
        y[:, :lag] = x[:, -lag:]
    return y


def _excerpt(x, start, stop):
    out = np.zeros((x.shape[0], stop - start), np.float32)
    lo, hi = max(start, 0), min(stop, x.shape[1])
    out[:, lo - start:hi - start] = x[:, lo:hi]
    return out


@pytest.mark.parametrize("lag", [1, -1, 1105, -1105, 44100, -44100])
@pytest.mark.parametrize("polarity", [1, -1])
def test_delay_inserted_is_recovered(lag, polarity):
    vocals, inst = tone_mix(seconds=4.0, seed=7)
    mix = vocals + inst
    stems = polarity * _shifted(mix, lag)
    max_lag = int(1.5 * SR)
    start, stop = alignment.analysis_windows(mix.shape[1], SR)[0]
    off = alignment.estimate_offset(_excerpt(mix, start, stop),
                                    _excerpt(stems, start - max_lag, stop + max_lag), max_lag)
    assert (off.lag, off.polarity) == (lag, polarity)
    assert off.confidence > 0.7  # up to 1 s of the 4 s excerpt is shifted out


def test_unrelated_stems_are_left_alone():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((2, SR)).astype(np.float32)
    b = rng.standard_normal((2, SR + 2 * 1000)).astype(np.float32)
    off = alignment.estimate_offset(a, b, 1000)
    assert (off.lag, off.polarity) == (0, 1)
    assert off.confidence < alignment.MIN_CONFIDENCE


def test_silence_gives_zero_lag():
    off = alignment.estimate_offset(np.zeros((2, 100), np.float32),
                                    np.zeros((2, 120), np.float32), 10)
    assert off == alignment.Offset(0, 1, 0.0)


@pytest.mark.parametrize("sr_in,sr_out", [(48000, 44100), (22050, 44100), (44100, 16000),
                                          (32000, 44100)])
def test_resampling_keeps_duration_within_one_sample(sr_in, sr_out):
    n = 12345
    x = np.random.default_rng(0).uniform(-0.5, 0.5, (2, n)).astype(np.float32)
    y = resample(x, sr_in, sr_out)
    assert y.dtype == np.float32 and y.shape[0] == 2
    assert abs(y.shape[1] - n * sr_out / sr_in) <= 1


def test_resampling_keeps_a_sine():
    sr_in, sr_out = 48000, 44100
    t = np.arange(sr_in) / sr_in
    x = np.sin(2 * np.pi * 1000 * t, dtype=np.float64).astype(np.float32)[None]
    y = resample(x, sr_in, sr_out)
    t2 = np.arange(y.shape[1]) / sr_out
    ref = np.sin(2 * np.pi * 1000 * t2)
    err = y[0, 1000:-1000] - ref[1000:-1000]
    assert np.sqrt(np.mean(err ** 2)) < 1e-3


def test_mono_is_duplicated_and_stereo_averaged():
    m = np.array([[0.1, 0.2, 0.3]], np.float32)
    np.testing.assert_array_equal(match_channels(m, 2), np.vstack([m, m]))
    s = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)
    np.testing.assert_allclose(match_channels(s, 1), [[0.5, 0.5]])


def test_five_one_keeps_the_centre_centred():
    n = 100
    x = np.zeros((6, n), np.float32)  # L R C LFE Ls Rs
    x[2] = 1.0  # only the centre channel
    y = match_channels(x, 2)
    assert y.shape == (2, n)
    np.testing.assert_allclose(y[0], y[1])
    assert y[0, 0] > 0.2
    x = np.zeros((6, n), np.float32)
    x[0] = 1.0  # only the left channel stays on the left
    y = match_channels(x, 2)
    assert y[0, 0] > 0 and y[1, 0] == 0
    common = np.ones((6, n), np.float32)
    np.testing.assert_allclose(match_channels(common, 2), np.ones((2, n)), rtol=1e-6)


def test_analysis_windows_cover_the_track_and_stay_inside():
    assert alignment.analysis_windows(1000, 100, seconds=20) == [(0, 1000)]
    windows = alignment.analysis_windows(100 * 60, 100, seconds=10)
    assert len(windows) == 3 and all(b - a == 1000 and 0 <= a and b <= 6000 for a, b in windows)
    assert windows[0][0] < windows[1][0] < windows[2][0]
