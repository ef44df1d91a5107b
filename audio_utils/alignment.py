"""Timing correction: the offset and polarity between the original and a pair of stems.

Stems written by other tools, or passed through a lossy codec, can be shifted against the
original (an MP3 round trip adds about 1105 samples) or inverted. ``O - I`` is only a vocal
when both line up to the sample, so the offset is estimated by FFT cross-correlation of the
original against the sum of the stems (which should rebuild the original) and then removed.

Pure functions on float32 ``(channels, samples)`` arrays.
"""

from dataclasses import dataclass

import numpy as np

from audio_utils.audio_checks import check_audio
from audio_utils.matching import channel_sum

# Below this normalised correlation the stems do not resemble the original enough to trust a lag.
MIN_CONFIDENCE = 0.2


@dataclass(frozen=True)
class Offset:
    """``stems[t + lag] * polarity`` lines up with ``original[t]``.

    lag: samples; positive when the stems are late (delayed) against the original.
    polarity: +1, or -1 when the stems are inverted.
    confidence: normalised cross-correlation at the peak, 0..1.
    """

    lag: int = 0
    polarity: int = 1
    confidence: float = 1.0


def estimate_offset(original, stems_sum, max_lag):
    """Estimate the lag and polarity of ``stems_sum`` against ``original``.

    Args:
        original: float32 ``(channels, n)``: an excerpt of the original.
        stems_sum: float32 ``(channels, n + 2*max_lag)``: the stems' sum over the same excerpt
            extended by ``max_lag`` samples on both sides (zeros outside the file).
        max_lag: largest lag searched, in samples, in both directions.

    Returns:
        Offset. When the correlation is too weak to trust (silence, unrelated stems) the
        result is lag 0, polarity +1 with the measured (low) confidence.
    """
    check_audio(original, "original excerpt", finite=False)
    check_audio(stems_sum, "stems excerpt", finite=False)
    n = original.shape[1]
    if stems_sum.shape[1] != n + 2 * max_lag:
        raise ValueError("stems excerpt must be the original's excerpt plus max_lag each side")
    # float32 FFTs: the true lag's peak stands far above float32 rounding (stems that rebuild
    # the original correlate at ~1), and they take half the time of float64 ones.
    ref, sig = channel_sum(original), channel_sum(stems_sum)
    ref_energy = energy(ref)
    if n == 0 or ref_energy == 0.0 or not np.any(sig):
        return Offset(0, 1, 0.0)

    # corr[k] = sum_t sig[t + k] * ref[t], k = 0..2*max_lag; lag = k - max_lag. A circular
    # correlation of length >= len(sig) is exact for these k (t + k never wraps), and numpy's
    # FFT spares the second it takes to import scipy.signal.
    size = _fast_size(len(sig))
    spec = np.fft.rfft(sig, size) * np.conj(np.fft.rfft(ref, size))
    corr = np.fft.irfft(spec, size)[:2 * max_lag + 1]
    # The peak of the raw correlation, not of the normalised one: normalising by a window
    # that is mostly zeros (a lag near the file's edge) would inflate a tiny overlap.
    k = int(np.argmax(np.abs(corr)))
    # normalised by the energy of sig's length-n window at that lag
    confidence = float(abs(corr[k]) / np.sqrt(max(energy(sig[k:k + n]), 1e-30) * ref_energy))
    if confidence < MIN_CONFIDENCE:
        return Offset(0, 1, confidence)
    return Offset(k - max_lag, 1 if corr[k] > 0 else -1, min(confidence, 1.0))


def _fast_size(n):
    """The smallest 2^a 3^b 5^c >= n: sizes pocketfft transforms fastest."""
    best = 1 << (n - 1).bit_length()
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            m = p35
            while m < n:
                m *= 2
            best = min(best, m)
            p35 *= 3
        p5 *= 5
    return best


def analysis_windows(length, sr, seconds=10.0, count=3):
    """Candidate ``(start, stop)`` excerpts for estimating the offset of a ``length``-sample
    file: the whole file when short, else ``count`` windows of ``seconds`` centred at evenly
    spaced points (a quarter, half and three quarters of the way for 3). The caller keeps the
    loudest, so a silent break or intro does not decide the offset."""
    n = int(seconds * sr)
    if length <= n:
        return [(0, length)]
    starts = [(length * (i + 1)) // (count + 1) - n // 2 for i in range(count)]
    return [(min(max(a, 0), length - n), min(max(a, 0), length - n) + n) for a in starts]


def explained_db(original, stems_sum):
    """How well ``stems_sum`` rebuilds ``original``: ``10*log10(sum O^2 / sum (O - S)^2)`` in
    dB over every sample and channel (float32 ``(channels, n)`` each, the offset already
    applied; or equal-length lists of such pairs, excerpts measured as one). inf when the
    rebuild is exact, about 0 dB or less for stems of another song (uncorrelated:
    ``-10*log10(1 + P_S/P_O)``). None when the original is silent."""
    pairs = (list(zip(original, stems_sum)) if isinstance(original, (list, tuple))
             else [(original, stems_sum)])
    total = residual = 0.0
    for o, s in pairs:
        check_audio(o, "original")
        check_audio(s, "stems_sum", channels=o.shape[0])
        if s.shape != o.shape:
            raise ValueError(f"stems_sum {s.shape} must be shaped like original {o.shape}")
        total += energy(o)
        residual += energy(o, minus=s)
    if total <= 0.0:
        return None
    return float("inf") if residual == 0.0 else 10.0 * np.log10(total / residual)


def energy(x, minus=None, chunk=1 << 15):
    """``sum(x**2)`` (``sum((x - minus)**2)`` with ``minus``) over float32 ``(..., n)`` arrays,
    in float64.

    Taken ``chunk`` samples at a time, so the float64 copy stays in the CPU cache instead of
    faulting in a temporary the size of ``x`` (a short process pays for every page it touches
    first). Plain numpy, not BLAS: a BLAS dot product wakes OpenBLAS's threads, which then
    spin for a while on the cores the rest of the track needs."""
    total = 0.0
    for a in range(0, x.shape[-1], chunk):
        y = x[..., a:a + chunk].astype(np.float64)
        if minus is not None:
            y -= minus[..., a:a + chunk]
        y *= y
        total += float(y.sum())
    return total
