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


def test_explained_db_known_answers():
    """``O - S = k*O`` rebuilds the mix to ``-20*log10(k)`` dB; exact stems give inf; a
    silent mix gives None; excerpts as a list measure as their concatenation."""
    o = tone_mix(seconds=2.0)[1]
    assert alignment.explained_db(o, 0.9 * o) == pytest.approx(20.0, abs=1e-4)
    assert alignment.explained_db(o, o.copy()) == float("inf")
    assert alignment.explained_db(np.zeros_like(o), o) is None
    rng = np.random.default_rng(5)
    s = (o + 0.05 * rng.standard_normal(o.shape)).astype(np.float32)
    parts = [(0, 20000), (20000, 70001), (70001, o.shape[1])]
    whole = alignment.explained_db(o, s)
    listed = alignment.explained_db([o[:, a:b] for a, b in parts],
                                    [s[:, a:b] for a, b in parts])
    assert listed == pytest.approx(whole, abs=1e-9)
    with pytest.raises(ValueError, match="shaped like"):
        alignment.explained_db(o, s[:, :-1])


def test_energy_is_the_float64_sum_of_squares():
    """Chunked (several chunks and a partial one), on a transposed view as BlockReader gives,
    with and without a second signal subtracted."""
    rng = np.random.default_rng(6)
    frames = rng.standard_normal((100_003, 2)).astype(np.float32)
    other = rng.standard_normal((2, 100_003)).astype(np.float32)
    x = frames.T  # not contiguous
    x64 = x.astype(np.float64)
    assert alignment.energy(x) == pytest.approx(float(np.sum(x64 ** 2)), rel=1e-12)
    assert alignment.energy(x, minus=other) == pytest.approx(
        float(np.sum((x64 - other) ** 2)), rel=1e-12)
    assert alignment.energy(x[0, :0]) == 0.0


@pytest.mark.parametrize("channels", [1, 2, 6])
def test_channel_sum_on_interleaved_frames(channels):
    """Row by row, on a transposed view of interleaved frames as BlockReader returns: the
    float32 sum (exactly the same as numpy's for two channels), or float64 when asked."""
    from audio_utils.matching import channel_sum

    frames = np.random.default_rng(7).standard_normal((10_001, channels)).astype(np.float32)
    x = frames.T
    got = channel_sum(x)
    assert got.dtype == np.float32 and got.shape == (10_001,)
    np.testing.assert_allclose(got, x.sum(axis=0, dtype=np.float64), rtol=1e-5, atol=1e-5)
    if channels <= 2:
        assert np.array_equal(got, x.sum(axis=0, dtype=np.float32))
    assert np.array_equal(x, frames.T)  # input untouched
    got64 = channel_sum(x, np.float64)
    assert got64.dtype == np.float64
    np.testing.assert_allclose(got64, x.astype(np.float64).sum(axis=0), rtol=1e-12)
