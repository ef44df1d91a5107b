"""Quality metrics on float32 ``(channels, samples)`` audio: MSE, cosine, STOI/ESTOI, SDR family.

Pure module: no I/O, no logging, inputs are never modified. Every metric returns a ``Score``;
when a metric has no meaningful value (silent signal, too little speech for STOI, a perfect
match making a ratio infinite) ``Score.value`` is None and ``Score.reason`` says why, instead of
raising or inventing a number.

Definitions (``ref`` = reference, ``est`` = estimate, same shape, channels pooled):
- ``mse``: mean of (est - ref)**2 over all samples, in squared full-scale units.
- ``cosine``: <est, ref> / (|est| |ref|) over all samples, in [-1, 1].
- ``stoi``: STOI (Taal 2011) or ESTOI (Jensen 2016) of the mono downmix, as pystoi computes it
  (pystoi's constants and 1/3-octave matrix); vectorised because pystoi's Python loops and
  resampler take ~3 s per 240 s pair. Resampling to 10 kHz uses soxr (differs from pystoi's
  Octave-style resampler by ~1e-5 in the score).
- ``bss_eval``: SDR/SIR/SAR in dB, BSS Eval v3 definitions with a 512-tap distortion filter on
  the whole signal, as ``fast_bss_eval.bss_eval_sources(..., compute_permutation=False)`` and
  ``mir_eval.separation.bss_eval_sources``; channels are pooled (as if concatenated with
  silence between them). Only the 512 correlation lags the metric uses are computed (block
  FFT), because fast_bss_eval's full-length FFTs take ~16 s for a 240 s stereo pair.
- ``si_sdr``: scale-invariant SDR (Le Roux 2019) in dB, channels pooled; equals
  ``fast_bss_eval.si_sdr`` (checked in tests) but shares one pass with MSE and cosine.
- ``vocal_level_change_db``: 20*log10(rms(blended - instrumental) / rms(original - instrumental)).
"""

from dataclasses import dataclass

import numpy as np

from processors.audio_checks import check_audio
from utils.errors import InputError

SILENCE_PEAK = 1e-6
"""A signal whose absolute peak is below this (-120 dBFS) counts as silent."""

FILTER_LENGTH = 512
STOI_RATE = 10000
_BLOCK = 1 << 14
_BLOCKS_PER_STEP = 8
_CHUNK = 1 << 20
_STOI_FRAMES_PER_STEP = 4096


@dataclass(frozen=True)
class Score:
    """One metric value, or None with the reason it is undefined."""

    value: float | None
    reason: str | None = None

    @property
    def defined(self) -> bool:
        return self.value is not None


def _undefined(reason: str) -> Score:
    return Score(None, reason)


def _pair(reference: np.ndarray, estimate: np.ndarray) -> None:
    check_audio(reference, "reference")
    check_audio(estimate, "estimate")
    if reference.shape != estimate.shape:
        raise InputError(f"metric inputs differ in shape: reference={reference.shape}, "
                         f"estimate={estimate.shape}; trim or pad them to the same "
                         "(channels, samples) first")


def _peak(x: np.ndarray) -> float:
    return max(float(x.max()), -float(x.min())) if x.size else 0.0


def is_silent(x: np.ndarray) -> bool:
    """True when every sample of ``x`` is below ``SILENCE_PEAK`` in magnitude."""
    return _peak(x) < SILENCE_PEAK


def _silence_reason(ref_silent: bool, est_silent: bool) -> str | None:
    if ref_silent:
        return "reference is silent (peak below -120 dBFS)"
    if est_silent:
        return "estimate is silent (peak below -120 dBFS)"
    return None


def _ratio_db(num: float, den: float, what: str) -> Score:
    # A perfect match makes the denominator vanish; its dB value would be +inf (not JSON).
    if den <= num * 1e-12:
        return _undefined(f"{what} is infinite: the estimate matches the reference exactly")
    return Score(float(10.0 * np.log10(num / den)))


def _sums(reference: np.ndarray, estimate: np.ndarray) -> dict[str, float]:
    """One float64 pass in chunks (whole-track float64 copies are slow on long tracks)."""
    r_flat, e_flat = reference.reshape(-1), estimate.reshape(-1)
    acc = dict.fromkeys(("rr", "ee", "re", "dd", "r_peak", "e_peak"), 0.0)
    for i in range(0, r_flat.size, _CHUNK):
        r = r_flat[i:i + _CHUNK].astype(np.float64)
        e = e_flat[i:i + _CHUNK].astype(np.float64)
        d = e - r
        # einsum, not BLAS: OpenBLAS threads stall for ms per call when the cores are busy.
        acc["rr"] += np.einsum("i,i->", r, r)
        acc["ee"] += np.einsum("i,i->", e, e)
        acc["re"] += np.einsum("i,i->", r, e)
        acc["dd"] += np.einsum("i,i->", d, d)
        acc["r_peak"] = max(acc["r_peak"], float(np.abs(r).max()))
        acc["e_peak"] = max(acc["e_peak"], float(np.abs(e).max()))
    acc["n"] = r_flat.size
    return acc


def _energy(x: np.ndarray) -> float:
    flat = x.reshape(-1)
    return float(sum(np.einsum("i,i->", c, c, dtype=np.float64)
                     for c in (flat[i:i + _CHUNK] for i in range(0, flat.size, _CHUNK))))


def basic_metrics(reference: np.ndarray, estimate: np.ndarray) -> dict[str, Score]:
    """``mse``, ``cosine`` and ``si_sdr`` of two float32 (channels, samples) arrays, one pass.

    SI-SDR (Le Roux et al. 2019, zero_mean=False as fast_bss_eval.si_sdr) follows from the
    same sums as the cosine: SI-SDR = 10*log10(cos^2 / (1 - cos^2)).
    """
    _pair(reference, estimate)
    s = _sums(reference, estimate)
    out = {"mse": Score(float(s["dd"] / s["n"])) if s["n"] else _undefined("signals are empty")}
    reason = _silence_reason(s["r_peak"] < SILENCE_PEAK, s["e_peak"] < SILENCE_PEAK)
    if reason:
        out["cosine"] = out["si_sdr"] = _undefined(reason)
        return out
    cos = s["re"] / np.sqrt(s["rr"] * s["ee"])
    out["cosine"] = Score(float(np.clip(cos, -1.0, 1.0)))
    # 1 - cos^2 from the error energy of the best scaled reference, avoiding cancellation.
    scale = s["re"] / s["rr"]
    residual = max(s["ee"] - 2 * scale * s["re"] + scale * scale * s["rr"], 0.0)
    out["si_sdr"] = _ratio_db(scale * scale * s["rr"], residual, "SI-SDR")
    return out


def mse(reference: np.ndarray, estimate: np.ndarray) -> Score:
    """Mean squared error over all channels and samples (full-scale units squared)."""
    return basic_metrics(reference, estimate)["mse"]


def cosine(reference: np.ndarray, estimate: np.ndarray) -> Score:
    """Cosine similarity of the two signals flattened over channels; undefined if one is silent."""
    return basic_metrics(reference, estimate)["cosine"]


def si_sdr(reference: np.ndarray, estimate: np.ndarray) -> Score:
    """Scale-invariant SDR in dB, channels pooled; undefined if silent or a perfect match."""
    return basic_metrics(reference, estimate)["si_sdr"]


def vocal_level_change_db(blended: np.ndarray, original: np.ndarray,
                          instrumental: np.ndarray) -> Score:
    """Vocal level of ``blended`` relative to ``original``, in dB.

    The vocal part of a signal is taken as what is left after subtracting ``instrumental``
    (the model's or the true accompaniment); all three are float32 (channels, samples).
    """
    _pair(original, blended)
    _pair(original, instrumental)
    vocal_in = _sums(instrumental, original)["dd"]
    vocal_out = _sums(instrumental, blended)["dd"]
    floor = SILENCE_PEAK ** 2 * original.size
    if vocal_in < floor:
        return _undefined("original has no vocal over the instrumental (original - "
                          "instrumental is silent)")
    if vocal_out < floor:
        return _undefined("blend has no vocal left (blended - instrumental is silent): "
                          "the change is -inf dB")
    return Score(float(10.0 * np.log10(vocal_out / vocal_in)))


# ---- STOI -------------------------------------------------------------------------------

def for_stoi(x: np.ndarray, sr: int) -> np.ndarray:
    """Mono downmix of ``x`` resampled to 10 kHz, float32 shaped (1, samples).

    STOI works at 10 kHz; converting each signal once lets several comparisons share it.
    """
    import soxr

    check_audio(x, "signal")
    mono = x[0] if x.shape[0] == 1 else np.add.reduce(x, axis=0) / np.float32(x.shape[0])
    if sr != STOI_RATE:
        mono = soxr.resample(mono, sr, STOI_RATE)
    return np.asarray(mono, dtype=np.float32)[None, :]


def _speech_blocks(x: np.ndarray, y: np.ndarray, window: np.ndarray):
    """pystoi's remove_silent_frames, as half-frame blocks (no framed copies of the signal).

    Frames are 256 samples at hop 128, so frame i is blocks i and i+1 of 128 samples; a frame
    is kept when its energy is within 40 dB of the loudest reference frame. Returns the
    overlap-added kept frames of x and y, each shaped (blocks, 128).
    """
    hop = len(window) // 2
    count = -(-(len(x) - 2 * hop) // hop) if len(x) > 2 * hop else 0
    bx = x[:(count + 1) * hop].reshape(count + 1, hop)
    by = y[:(count + 1) * hop].reshape(count + 1, hop)
    w1, w2 = window[:hop], window[hop:]
    energy = (np.einsum("ij,ij,j->i", bx[:-1], bx[:-1], w1 * w1)
              + np.einsum("ij,ij,j->i", bx[1:], bx[1:], w2 * w2))
    level = 20 * np.log10(np.sqrt(energy) + np.finfo(float).eps)
    kept = np.flatnonzero((level.max() - 40.0 - level) < 0)

    def overlap_add(b):
        out = np.zeros((len(kept) + 1, hop))
        out[:-1] += b[kept] * w1
        out[1:] += b[kept + 1] * w2
        return out

    return overlap_add(bx), overlap_add(by)


def _third_octave_envelopes(blocks: np.ndarray, window: np.ndarray, obm: np.ndarray) -> np.ndarray:
    """1/3-octave band magnitudes (bands, frames) of frames [block k, block k+1] * window."""
    from scipy import fft

    hop = len(window) // 2
    n_frames = len(blocks) - 2  # pystoi: range(0, len - 256, 128)
    out = np.empty((obm.shape[0], max(n_frames, 0)))
    for i in range(0, n_frames, _STOI_FRAMES_PER_STEP):
        j = min(i + _STOI_FRAMES_PER_STEP, n_frames)
        frames = np.concatenate([blocks[i:j] * window[:hop], blocks[i + 1:j + 1] * window[hop:]],
                                axis=1)
        spec = fft.rfft(frames, n=512, axis=1)
        # einsum, not BLAS matmul: see _sums.
        out[:, i:j] = np.sqrt(np.einsum("kf,bf->bk", spec.real ** 2 + spec.imag ** 2, obm))
    return out


def _segment_scores(xs: np.ndarray, ys: np.ndarray, extended: bool) -> float:
    """Sum over segments of the per-segment correlation; xs, ys: (segments, bands, N)."""
    eps = np.finfo(float).eps
    if extended:
        def normalize(a):
            a = a - a.mean(axis=2, keepdims=True)
            a = a / (np.linalg.norm(a, axis=2, keepdims=True) + eps)
            a = a - a.mean(axis=1, keepdims=True)
            return a / (np.linalg.norm(a, axis=1, keepdims=True) + eps)
        return float(np.sum(normalize(xs) * normalize(ys)) / xs.shape[2])
    ys = ys * (np.linalg.norm(xs, axis=2, keepdims=True)
               / (np.linalg.norm(ys, axis=2, keepdims=True) + eps))
    ys = np.minimum(ys, xs * (1 + 10 ** (15 / 20)))  # clip at the -15 dB SDR bound
    ys = ys - ys.mean(axis=2, keepdims=True)
    xs = xs - xs.mean(axis=2, keepdims=True)
    ys /= np.linalg.norm(ys, axis=2, keepdims=True) + eps
    xs /= np.linalg.norm(xs, axis=2, keepdims=True) + eps
    return float(np.sum(xs * ys) / xs.shape[1])


def stoi(reference: np.ndarray, estimate: np.ndarray, sr: int, extended: bool = False) -> Score:
    """STOI (or ESTOI with ``extended``) of the mono downmix, in [0, 1] (ESTOI may dip below 0).

    Inputs are float32 (channels, samples) at ``sr`` Hz; pass ``for_stoi`` outputs with
    ``sr=10000`` to skip the conversion. Undefined when a signal is silent or when fewer than
    30 frames (~0.4 s) of non-silent reference remain, which pystoi would score as 1e-5.
    """
    from pystoi.stoi import MINFREQ, N, N_FRAME, NFFT, NUMBAND
    from pystoi.utils import thirdoct

    _pair(reference, estimate)
    reason = _silence_reason(is_silent(reference), is_silent(estimate))
    if reason:
        return _undefined(reason)
    if sr != STOI_RATE or reference.shape[0] != 1:
        reference, estimate = for_stoi(reference, sr), for_stoi(estimate, sr)
    window = np.hanning(N_FRAME + 2)[1:-1]
    x, y = _speech_blocks(reference[0].astype(np.float64), estimate[0].astype(np.float64),
                          window)
    obm, _ = thirdoct(STOI_RATE, NFFT, NUMBAND, MINFREQ)
    x_tob = _third_octave_envelopes(x, window, obm)
    y_tob = _third_octave_envelopes(y, window, obm)
    frames = x_tob.shape[1]
    if frames < N:
        return _undefined(f"too little non-silent reference for STOI: frames={frames}, needs "
                          f"{N} (about {N * N_FRAME / 2 / STOI_RATE:.2f} s of sound)")
    xs_all = np.lib.stride_tricks.sliding_window_view(x_tob, N, axis=1).transpose(1, 0, 2)
    ys_all = np.lib.stride_tricks.sliding_window_view(y_tob, N, axis=1).transpose(1, 0, 2)
    total = 0.0
    for start in range(0, len(xs_all), 2048):  # chunks keep the temporaries in cache
        total += _segment_scores(xs_all[start:start + 2048], ys_all[start:start + 2048],
                                 extended)
    return Score(total / len(xs_all))


# ---- BSS Eval (SDR, SIR, SAR) ----------------------------------------------------------

def _block_spectra(signals, channel: int, starts: np.ndarray, lags: int,
                   middle_only: bool) -> np.ndarray:
    """rfft of blocks of each signal's ``channel`` starting at ``starts - lags`` (zeros outside).

    ``middle_only`` keeps only each block's middle ``_BLOCK - 2*lags`` samples.
    """
    from scipy import fft

    buf = np.zeros((len(signals), len(starts), _BLOCK))
    lo, hi = (lags, _BLOCK - lags) if middle_only else (0, _BLOCK)
    for i, x in enumerate(signals):
        n = x.shape[-1]
        for j, start in enumerate(starts):
            a, b = max(start - lags + lo, 0), min(start - lags + hi, n)
            if b > a:
                buf[i, j, a - start + lags:b - start + lags] = x[channel, a:b]
    return fft.rfft(buf, axis=-1, workers=-1)


def _correlations(refs, est_sets, lags: int):
    """Channel-pooled correlations for lags |k| < ``lags`` by block FFT.

    rr[c, d, k + lags - 1] = sum_n ref_c[n] ref_d[n + k]; re[s][c, j, ...] likewise between
    ref_c and est_j of estimate set s. Each block of a reference (its middle ``_BLOCK - 2*lags``
    samples) is correlated with the same stretch widened by ``lags`` on both sides, so no
    product wraps around; only the lags BSS Eval needs are computed.
    """
    from scipy import fft

    channels, n = refs[0].shape
    hop = _BLOCK - 2 * lags
    all_starts = np.arange(-(-n // hop)) * hop
    bins = _BLOCK // 2 + 1
    rr = np.zeros((len(refs), len(refs), bins), dtype=complex)
    re = [np.zeros((len(refs), len(e), bins), dtype=complex) for e in est_sets]
    for channel in range(channels):
        for i in range(0, len(all_starts), _BLOCKS_PER_STEP):  # bounded memory
            starts = all_starts[i:i + _BLOCKS_PER_STEP]
            mid = _block_spectra(refs, channel, starts, lags, True).conj()
            rr += np.einsum("ajf,bjf->abf", mid,
                            _block_spectra(refs, channel, starts, lags, False))
            for s, est in enumerate(est_sets):
                re[s] += np.einsum("ajf,bjf->abf", mid,
                                   _block_spectra(est, channel, starts, lags, False))

    def lagged(spectrum):
        corr = fft.irfft(spectrum, n=_BLOCK, axis=-1)
        return np.concatenate([corr[..., _BLOCK - lags + 1:], corr[..., :lags]], axis=-1)

    return lagged(rr), [lagged(x) for x in re]


def bss_eval(references, *estimate_sets) -> list[dict[str, list[Score]]]:
    """SDR, SIR and SAR in dB of each estimate against its matching reference.

    Args:
        references: sequence of float32 (channels, samples) arrays, the true sources, e.g.
            [vocals, accompaniment]; the other sources are the interference for SIR.
        estimate_sets: one or more sequences of float32 arrays of the same shapes; estimate j
            is matched to reference j (no permutation). Sets share the reference work.

    Returns:
        Per set, {"sdr": [Score per source], "sir": [...], "sar": [...]}. With one source SIR
        is undefined (no interference) and SAR equals SDR. A silent source makes its own
        scores undefined, and the SIR/SAR of the others (the interference space degenerates).
    """
    from scipy.linalg import cho_factor, cho_solve, solve_toeplitz

    references = list(references)
    n_src = len(references)
    if n_src < 1:
        raise InputError("bss_eval: no reference sources given; pass at least one array")
    for est in estimate_sets:
        if len(est) != n_src:
            raise InputError(f"bss_eval: estimates={len(est)} but references={n_src}; give "
                             "one estimate per reference source")
        for i in range(n_src):
            _pair(references[i], est[i])
            if references[i].shape != references[0].shape:
                raise InputError(f"bss_eval: reference {i} shape={references[i].shape} "
                                 f"differs from reference 0 shape={references[0].shape}")
    lags = FILTER_LENGTH
    ref_silent = [is_silent(r) for r in references]
    rr, re_sets = _correlations(references, [list(e) for e in estimate_sets], lags)
    ref_energy = np.array([rr[i, i, lags - 1] for i in range(n_src)])
    factor = None
    if not any(ref_silent) and n_src > 1:
        k = np.arange(lags)
        lag_index = (k[:, None] - k[None, :]) + lags - 1  # R[k, l] = r[k - l]
        rr_n = rr / np.sqrt(np.outer(ref_energy, ref_energy))[..., None]
        full = np.block([[rr_n[c, d][lag_index] for d in range(n_src)] for c in range(n_src)])
        factor = cho_factor(full)  # one factorisation serves every estimate
    results = []
    for est, re in zip(estimate_sets, re_sets):
        out = {"sdr": [], "sir": [], "sar": []}
        silent = [_silence_reason(ref_silent[j], is_silent(est[j])) for j in range(n_src)]
        for j in range(n_src):
            if silent[j]:
                for key in out:
                    out[key].append(_undefined(silent[j]))
                continue
            est_energy = _energy(est[j])
            x = re[:, j, lags - 1:] / np.sqrt(ref_energy * est_energy)[:, None]
            acf = rr[j, j, lags - 1:] / ref_energy[j]
            coh_sdr = float(x[j] @ solve_toeplitz(acf, x[j]))
            out["sdr"].append(_ratio_db(coh_sdr, 1.0 - coh_sdr, "SDR"))
            if n_src == 1:
                out["sir"].append(_undefined("SIR needs at least two reference sources"))
                out["sar"].append(out["sdr"][-1])
                continue
            if factor is None or any(silent):
                why = "another reference source or estimate is silent"
                out["sir"].append(_undefined(why))
                out["sar"].append(_undefined(why))
                continue
            coh_sar = float(x.ravel() @ cho_solve(factor, x.ravel()))
            out["sir"].append(_ratio_db(coh_sdr, coh_sar - coh_sdr, "SIR"))
            out["sar"].append(_ratio_db(coh_sar, 1.0 - coh_sar, "SAR"))
        results.append(out)
    return results
