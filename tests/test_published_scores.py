"""Scores as published: museval's BSS Eval v4 SDR (median over 1 s windows) and uSDR.

``sdr_museval`` is checked against museval itself: live when museval is importable (the
``test`` extra), else against values museval 0.4.1 computed for the same signals (numpy's
PCG64 streams are stable), hard-coded below."""

import numpy as np
import pytest
from scipy.signal import lfilter

from audio_utils.metrics import sdr_museval, usdr

SR = 44100
# museval 0.4.1 (bss_eval, window = hop = 44100, framewise_filters=False,
# bsseval_sources_version=False; np.nanmedian over windows), computed 2026-12-03
EXPECTED = {
    "stereo_two_sources": [17.28515082664039, 14.068619686662657],
    "short_mono": [19.774321008865588, 12.21970221906027],
    "uneven_length": [17.283755714737445, 14.059848434502442],
}


def signals(case):
    rng = np.random.default_rng({"stereo_two_sources": 0, "short_mono": 1,
                                 "uneven_length": 2}[case])
    n = {"stereo_two_sources": int(SR * 5.5), "short_mono": int(SR * 0.7),
         "uneven_length": int(SR * 3.3) + 17}[case]
    t = np.arange(n) / SR
    v = (0.3 * np.sin(2 * np.pi * 220 * t) * (np.sin(2 * np.pi * 0.3 * t) > 0)
         + 0.05 * rng.standard_normal(n))
    a = 0.2 * rng.standard_normal((2, n))
    v = np.stack([v, 0.8 * v])
    if case == "stereo_two_sources":
        v[:, :SR] = 0  # a silent first second in the vocals: a NaN window
    ev = v + 0.1 * a + 0.01 * rng.standard_normal((2, n))
    if case == "stereo_two_sources":
        ev[:, :SR] = 0
    ea = lfilter([0.9, 0.05], [1], a) + 0.2 * v
    out = [x.astype(np.float32) for x in (v, a, ev, ea)]
    if case == "short_mono":
        out = [x[:1] for x in out]
    return out


def museval_metrics():
    try:
        from museval import metrics
    except Exception:  # not installed, or its import needs ffmpeg (stempeg)
        return None
    return metrics


@pytest.mark.parametrize("case", sorted(EXPECTED))
def test_sdr_museval_matches_museval(case):
    v, a, ev, ea = signals(case)
    ours = [s.value for s in sdr_museval([v, a], [ev, ea])]
    expected = EXPECTED[case]
    metrics = museval_metrics()
    if metrics is not None:
        sdr = metrics.bss_eval(np.stack([v.T, a.T]), np.stack([ev.T, ea.T]), window=SR,
                               hop=SR, compute_permutation=False, framewise_filters=False,
                               bsseval_sources_version=False)[0]
        expected = list(np.nanmedian(sdr, axis=1))
    assert ours == pytest.approx(expected, abs=0.01)


def test_sdr_museval_silent_windows_and_sources():
    v, a, ev, ea = signals("stereo_two_sources")
    silent = np.zeros_like(v)
    scores = sdr_museval([silent, a], [ev, ea])
    assert all(not s.defined for s in scores) and "all zeros" in scores[0].reason
    # only the first window is silent: it is left out, not counted as a bad window
    full = sdr_museval([v[:, SR:], a[:, SR:]], [ev[:, SR:], ea[:, SR:]])
    assert full[0].value == pytest.approx(sdr_museval([v, a], [ev, ea])[0].value, abs=0.5)


def test_usdr_is_the_global_ratio():
    v, a, ev, ea = signals("uneven_length")
    d = ea.astype(np.float64) - a
    expected = 10 * np.log10(np.sum(a.astype(np.float64) ** 2) / np.sum(d ** 2))
    assert usdr(a, ea).value == pytest.approx(expected, abs=1e-9)
    assert not usdr(a, a).defined
    assert not usdr(np.zeros_like(a), ea).defined


def test_museval_sdr_is_fast():
    import time

    rng = np.random.default_rng(0)
    n = SR * 240
    ref = rng.standard_normal((2, n)).astype(np.float32)
    est = (ref + 0.1 * rng.standard_normal((2, n))).astype(np.float32)
    started = time.perf_counter()
    sdr_museval([ref, ref], [est, est])
    usdr(ref, est)
    assert time.perf_counter() - started < 4.0  # well under a second per output when idle
