"""Repair: give the part of the mix that neither model stem holds back to the stem it belongs to.

All audio is float32 ``(channels, samples)`` at one sample rate, already matched (see
``audio_utils``). Nothing here does I/O or modifies its inputs.

With ``O`` the original, ``Vm`` the model's vocals and ``I`` its instrumental, the left-out
part is ``e = O - Vm - I`` (what an ``add`` model lost or invented). The repair splits ``e``
per time-frequency region into ``e_v + e_i = e`` and returns the repaired stems

    ``V' = Vm + e_v``,  ``I' = O - V'``  (so ``V' + I' = O`` to float precision).

Modes (``MODES``):

- ``none``: no repair; the stems are returned as they are.
- ``wiener``: ``e_v = M * e`` in an STFT (2048 points, hop 512, Hann), with the soft mask
  ``M = Pv / (Pv + Pi)`` from the stems' powers smoothed over a few bins and frames, each
  power held over the following frames with a decay (so a reverb tail or a decay the model
  dropped goes with the stem that was sounding), and, where both stems are silent but ``e``
  is not (a band limit: highs cut at 11 or 16 kHz), the mask of the highest band below that
  still has stem content.
- ``project``: first the parts of ``e`` that look like one of the stems: ``e`` is regressed
  on the two stems per region (real gains ``a``, ``b``: ``e ~ a*Vm + b*I``). A positive gain
  means that stem came out too quiet (lost bass, a vocal turned down), so that part goes back
  to it; a negative gain means the mix holds less of that sound than the stems say, i.e. the
  other stem holds a copy of it (bleed), so it goes to the other stem. What the regression
  does not explain is split as in ``wiener``. When the stems are masks of the mix (parallel
  to it in every bin) the regression reduces to a split by the stems' powers, like ``wiener``.

Blockwise processing: the STFT frames sit on a grid fixed in the track (frame ``k`` centred on
sample ``k*hop``), the track is zero outside ``[0, total)``, and all smoothing is finite, so a
block computed with ``context(sr)`` samples of margin on each side equals the same samples of
the whole-track result (up to float rounding, ~1e-7).
"""

import numpy as np

MODES = ("none", "wiener", "project")

N_FFT = 2048
HOP = 512
SMOOTH_BINS = 2     # +- bins of the power smoothing
SMOOTH_FRAMES = 2   # +- frames of the power smoothing
HOLD_FRAMES = 24    # how long a stem's power is held (24 * 512 / 44100 = 0.28 s)
HOLD_DECAY_DB = 1.0  # per frame decay of the held power
# A block whose left-out part never exceeds this is left as is: two 16-bit steps (-84 dBFS),
# so stems that sum to the mix but went through 16-bit files (each rounded) count as summing.
EMPTY_LIMIT = 2.0 ** -14
_EPS = 1e-20


def context(sr):
    """Samples of margin each side of a block so blockwise results equal whole-track ones."""
    frames = SMOOTH_FRAMES * 2 + HOLD_FRAMES + 4
    return N_FFT + frames * HOP


def leftover(original, instrumental, vocals):
    """``e = O - Vm - I``, float32 ``(channels, samples)``."""
    return (original - vocals - instrumental).astype(np.float32, copy=False)


def repair(original, instrumental, vocals, mode, start=0, total=None):
    """The repaired stems ``(instrumental', vocals')`` for a block, float32 ``(channels, n)``.

    Args:
        original, instrumental, vocals: float32 ``(channels, n)``, the block ``[start,
            start + n)`` of the track (with its margin, if it is a block of a longer track).
        mode: one of ``MODES``.
        start: the block's first sample in the track (fixes the STFT grid).
        total: the track's length in samples (None: the block is the whole track's end).
    Returns:
        ``(I', V')`` with ``V' = Vm + e_v`` and ``I' = O - V'``. With ``none``, or when the
        left-out part is below ``EMPTY_LIMIT`` everywhere in the block, the stems themselves.
    """
    if mode not in MODES:
        raise ValueError(f"repair mode={mode!r} is not one of {', '.join(MODES)}")
    e = leftover(original, instrumental, vocals)
    if mode == "none" or e.size == 0 or float(np.max(np.abs(e))) < EMPTY_LIMIT:
        return instrumental, vocals
    ev = split(e, instrumental, vocals, mode, start)
    v = (vocals + ev).astype(np.float32, copy=False)
    return np.subtract(original, v, dtype=np.float32), v


def split(e, instrumental, vocals, mode, start=0):
    """The vocal share ``e_v`` of the left-out part ``e``, float32 ``(channels, n)``; the
    instrumental's share is ``e - e_v``. ``start`` is the block's first sample in the track."""
    E, grid = _stft(e, start)
    Xi, _ = _stft(instrumental, start)
    Xv, _ = _stft(vocals, start)
    # the stems' powers per bin, channels pooled: shared by the regression and the mask
    pvv, pii = _power(Xv), _power(Xi)
    if mode == "project":
        a, b = _regress(E, Xv, Xi, pvv, pii)
        Dv = _scaled(np.maximum(a, 0), Xv) + _scaled(np.minimum(b, 0), Xi)
        E -= _scaled(a, Xv)
        E -= _scaled(b, Xi)
    else:
        Dv = np.zeros_like(E)
    Dv += _scaled(_mask(pvv, pii, _power(E)), E)
    return _istft(Dv, grid, e.shape[1])


def _scaled(g, X):
    """``g[None] * X`` for real gains ``g`` ``(bins, frames)`` and complex64 ``X``
    ``(channels, bins, frames)``, in float32 on X's real and imaginary parts (numpy would
    first turn ``g`` into a complex array, several times slower)."""
    if not X.flags.c_contiguous:  # _stft's (channels, frames, bins) memory, transposed
        return _scaled(g.T, X.transpose(0, 2, 1)).transpose(0, 2, 1)
    g2 = np.repeat(g.astype(np.float32, copy=False), 2, axis=1)  # (re, im) of each bin
    flat = X.view(np.float32)
    return (g2[None] * flat).view(np.complex64)


def _power(X):
    """``sum_c |X_c|^2``, float32 ``(bins, frames)``, of complex ``(channels, bins, frames)``."""
    return np.einsum("cbf,cbf->bf", X.real, X.real) + np.einsum("cbf,cbf->bf", X.imag, X.imag)


def _cross(X, Y):
    """``sum_c Re(X_c conj(Y_c))``, float32 ``(bins, frames)``."""
    return np.einsum("cbf,cbf->bf", X.real, Y.real) + np.einsum("cbf,cbf->bf", X.imag, Y.imag)


def _regress(E, Xv, Xi, pvv, pii):
    """Real gains ``(a, b)`` per bin, ``(bins, frames)``: least squares ``E ~ a*Xv + b*Xi``
    over the smoothing neighbourhood, both channels pooled, lightly regularised. ``pvv``,
    ``pii``: ``_power`` of ``Xv`` and ``Xi``. The sums are smoothed in float32; the normal
    equations are solved in float64 (the ridge keeps their determinant at >= 4 % of
    ``rvv * rii``, so float32 sums lose at most ~1e-5 of it)."""
    def s(x):
        return _smooth(x, 1, SMOOTH_FRAMES, np.float32).astype(np.float64)
    rvv, rii, rvi = s(pvv), s(pii), s(_cross(Xv, Xi))
    ev, ei = s(_cross(E, Xv)), s(_cross(E, Xi))
    ridge = 1e-2 * (rvv + rii) + _EPS
    rvv, rii = rvv + ridge, rii + ridge
    det = rvv * rii - rvi * rvi
    a = (rii * ev - rvi * ei) / det
    b = (rvv * ei - rvi * ev) / det
    return np.clip(a, -1.0, 4.0), np.clip(b, -1.0, 4.0)


def _mask(pvv, pii, pee):
    """The vocal share of the left-out part per bin, ``(bins, frames)`` in [0, 1], from the
    powers (``_power``) of the vocals, the instrumental and the left-out part."""
    # float32 is enough here (a ratio of powers); the regression needs float64
    pv = _hold(_smooth(pvv, SMOOTH_BINS, SMOOTH_FRAMES, np.float32))
    pi = _hold(_smooth(pii, SMOOTH_BINS, SMOOTH_FRAMES, np.float32))
    pe = _smooth(pee, SMOOTH_BINS, SMOOTH_FRAMES, np.float32)
    mask = pv / (pv + pi + _EPS)
    # band limit: where both stems are silent but e is not, take the mask of the highest
    # band below that has stem content (bands of 16 bins, ~340 Hz at 44.1 kHz)
    dead = (pv + pi) < 1e-3 * pe
    if dead.any():
        band = 16
        nb = mask.shape[0] // band
        pvb = pv[:nb * band].reshape(nb, band, -1).sum(1)
        pib = pi[:nb * band].reshape(nb, band, -1).sum(1)
        peb = pe[:nb * band].reshape(nb, band, -1).sum(1)
        live = (pvb + pib) >= 1e-2 * peb
        ratio = pvb / (pvb + pib + _EPS)
        idx = np.where(live, np.arange(nb)[:, None], 0)
        idx = np.maximum.accumulate(idx, axis=0)
        filled = np.take_along_axis(ratio, idx, axis=0)
        filled = np.where(live.any(0, keepdims=True) | (idx > 0), filled, 0.5)
        per_bin = np.repeat(filled, band, axis=0)
        per_bin = np.concatenate([per_bin, np.repeat(per_bin[-1:], mask.shape[0] - nb * band,
                                                     axis=0)])
        mask = np.where(dead, per_bin, mask)
    return mask


def _hold(p):
    """Each frame's power held over the next ``HOLD_FRAMES`` frames with a decay:
    ``max_k p[t-k] * d^k`` for k in 0..HOLD_FRAMES, as a running maximum of
    ``log p[t'] + c*t'`` (``c = -log d`` per frame) over the last frames, minus ``c*t``."""
    from scipy.ndimage import maximum_filter1d

    c = HOLD_DECAY_DB / 10 * np.log(10)
    ramp = (c * np.arange(p.shape[1])).astype(p.dtype)
    with np.errstate(divide="ignore"):
        lg = np.log(np.maximum(p, p.dtype.type(1e-30))) + ramp  # running sums can dip below 0
    # window [t - HOLD_FRAMES, t]: size HOLD_FRAMES + 1, shifted to end at t
    size = HOLD_FRAMES + 1
    held = maximum_filter1d(lg, size, axis=1, mode="constant", cval=-np.inf,
                            origin=(size - 1) // 2 if size % 2 else size // 2 - 1)
    return np.exp(held - ramp)


def _smooth(x, bins, frames, dtype=np.float64):
    """Moving average over ``+-bins`` bins and ``+-frames`` frames (edges: nearest), as
    ``dtype``."""
    from scipy.ndimage import uniform_filter

    return uniform_filter(x.astype(dtype, copy=False), size=(2 * bins + 1, 2 * frames + 1),
                          mode="nearest")


def _window():
    n = np.arange(N_FFT)
    return (0.5 - 0.5 * np.cos(2 * np.pi * n / N_FFT)).astype(np.float32)


def _stft(x, start):
    """STFT on the track's grid: frame ``k`` centred on sample ``k*HOP``; returns
    ``(complex64 (channels, bins, frames), (k0, buffer offset))``."""
    c, n = x.shape
    k0 = (start - N_FFT // 2) // HOP
    k1 = (start + n - 1 + N_FFT // 2) // HOP
    b0 = k0 * HOP - N_FFT // 2
    buf = np.zeros((c, (k1 - k0) * HOP + N_FFT), np.float32)
    buf[:, start - b0:start - b0 + n] = x
    from scipy import fft  # single precision for float32, unlike numpy's

    frames = np.lib.stride_tricks.sliding_window_view(buf, N_FFT, axis=1)[:, ::HOP]
    X = fft.rfft(frames * _window(), axis=2).astype(np.complex64, copy=False)
    return X.transpose(0, 2, 1), start - b0


def _istft(X, offset, n):
    """Overlap-add inverse of ``_stft`` (Hann synthesis, normalised by the summed squared
    window), cropped to the block's ``n`` samples."""
    win = _window()
    from scipy import fft

    frames = fft.irfft(X.transpose(0, 2, 1), n=N_FFT, axis=2).astype(np.float32, copy=False) * win
    c, f, _ = frames.shape
    length = (f - 1) * HOP + N_FFT
    out = np.zeros((c, length), np.float32)
    norm = np.zeros(length, np.float32)
    for k in range(f):
        out[:, k * HOP:k * HOP + N_FFT] += frames[:, k]
        norm[k * HOP:k * HOP + N_FFT] += win * win
    return (out[:, offset:offset + n] / np.maximum(norm[offset:offset + n], 1e-6)).astype(
        np.float32)
