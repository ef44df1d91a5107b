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

from audio_utils.audio_checks import check_audio
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
    # No NaN scan here (a full pass per metric): a non-finite input yields an undefined score
    # through _NONFINITE instead; evaluation.evaluate_track scans each signal once.
    check_audio(reference, "reference", finite=False)
    check_audio(estimate, "estimate", finite=False)
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


_NONFINITE = "an input contains NaN or infinite samples"


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
        acc["r_peak"] = max(acc["r_peak"], _peak(r))
        acc["e_peak"] = max(acc["e_peak"], _peak(e))
    acc["n"] = r_flat.size
    return acc


def _diff_energy(a: np.ndarray, b: np.ndarray) -> float:
    """sum((a - b)**2) in float64, chunked."""
    fa, fb = a.reshape(-1), b.reshape(-1)
    total = 0.0
    for i in range(0, fa.size, _CHUNK):
        d = fa[i:i + _CHUNK].astype(np.float64) - fb[i:i + _CHUNK]
        total += np.einsum("i,i->", d, d)
    return float(total)


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
    if not all(np.isfinite(v) for v in s.values()):
        return dict.fromkeys(("mse", "cosine", "si_sdr"), _undefined(_NONFINITE))
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
    vocal_in = _diff_energy(original, instrumental)
    vocal_out = _diff_energy(blended, instrumental)
    if not np.isfinite(vocal_in + vocal_out):
        return _undefined(_NONFINITE)
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

    check_audio(x, "signal", finite=False)  # NaN flows through to an undefined score
    mono = x[0] if x.shape[0] == 1 else np.add.reduce(x, axis=0) / np.float32(x.shape[0])
    if sr != STOI_RATE:
        mono = soxr.resample(mono, sr, STOI_RATE)
    return np.asarray(mono, dtype=np.float32)[None, :]


def _speech_frames(x: np.ndarray, window: np.ndarray) -> np.ndarray:
    """Indices of the frames pystoi's remove_silent_frames keeps, judged on the reference.

    Frames are 256 samples at hop 128, so frame i is half-frame blocks i and i+1; a frame is
    kept when its energy is within 40 dB of the loudest frame.
    """
    hop = len(window) // 2
    b = _half_blocks(x, hop)
    w1, w2 = window[:hop], window[hop:]
    energy = (np.einsum("ij,ij,j->i", b[:-1], b[:-1], w1 * w1)
              + np.einsum("ij,ij,j->i", b[1:], b[1:], w2 * w2))
    level = 20 * np.log10(np.sqrt(energy) + np.finfo(float).eps)
    return np.flatnonzero((level.max() - 40.0 - level) < 0)


def _half_blocks(x: np.ndarray, hop: int) -> np.ndarray:
    count = -(-(len(x) - 2 * hop) // hop) if len(x) > 2 * hop else 0  # pystoi's frame count
    return x[:(count + 1) * hop].reshape(count + 1, hop)


def _kept_signal(x: np.ndarray, kept: np.ndarray, window: np.ndarray) -> np.ndarray:
    """The overlap-added kept frames of x, as half-frame blocks (blocks, 128)."""
    hop = len(window) // 2
    b = _half_blocks(x, hop)
    out = np.zeros((len(kept) + 1, hop))
    out[:-1] += b[kept] * window[:hop]
    out[1:] += b[kept + 1] * window[hop:]
    return out


def _third_octave_envelopes(blocks: np.ndarray, window: np.ndarray, obm: np.ndarray) -> np.ndarray:
    """1/3-octave band magnitudes (bands, frames) of frames [block k, block k+1] * window."""
    from scipy import fft

    rows = [np.flatnonzero(r) for r in obm]
    if any(len(r) == 0 or len(r) != r[-1] + 1 - r[0] for r in rows):
        raise InputError("pystoi's 1/3-octave matrix has non-contiguous bands; this pystoi "
                         "version is not supported, install pystoi 0.4")
    edges = np.ravel([(r[0], r[-1] + 1) for r in rows])
    hop = len(window) // 2
    n_frames = len(blocks) - 2  # pystoi: range(0, len - 256, 128)
    out = np.empty((obm.shape[0], max(n_frames, 0)))
    for i in range(0, n_frames, _STOI_FRAMES_PER_STEP):
        j = min(i + _STOI_FRAMES_PER_STEP, n_frames)
        frames = np.concatenate([blocks[i:j] * window[:hop], blocks[i + 1:j + 1] * window[hop:]],
                                axis=1)
        spec = fft.rfft(frames, n=512, axis=1)
        # Band sums by reduceat: exact like obm @ power (bands are contiguous bin ranges) and
        # much cheaper than a matmul without BLAS threads.
        power = spec.real ** 2 + spec.imag ** 2
        out[:, i:j] = np.sqrt(np.add.reduceat(power, edges, axis=1)[:, ::2].T)
    return out


def _segment_scores(xs: np.ndarray, ys: np.ndarray, extended: bool) -> float:
    """Sum over segments of pystoi's per-segment correlation; xs, ys: (segments, bands, N).

    Same arithmetic as pystoi (including its eps guards), with einsum reductions in place of
    normalised temporaries.
    """
    eps = np.finfo(float).eps
    if extended:
        def normalize(a):
            a = a - a.mean(axis=2, keepdims=True)
            a = a / (np.sqrt(np.einsum("sbn,sbn->sb", a, a))[..., None] + eps)
            a = a - a.mean(axis=1, keepdims=True)
            return a / (np.sqrt(np.einsum("sbn,sbn->sn", a, a))[:, None, :] + eps)
        return float(np.einsum("sbn,sbn->", normalize(xs), normalize(ys)) / xs.shape[2])
    x_norm = np.sqrt(np.einsum("sbn,sbn->sb", xs, xs))
    y_norm = np.sqrt(np.einsum("sbn,sbn->sb", ys, ys))
    ys = ys * (x_norm / (y_norm + eps))[..., None]
    np.minimum(ys, xs * (1 + 10 ** (15 / 20)), out=ys)  # clip at the -15 dB SDR bound
    ys -= ys.mean(axis=2, keepdims=True)
    xs = xs - xs.mean(axis=2, keepdims=True)
    dot = np.einsum("sbn,sbn->sb", xs, ys)
    x_len = np.sqrt(np.einsum("sbn,sbn->sb", xs, xs)) + eps
    y_len = np.sqrt(np.einsum("sbn,sbn->sb", ys, ys)) + eps
    return float(np.sum(dot / (x_len * y_len)) / xs.shape[1])


def stoi(reference: np.ndarray, estimate: np.ndarray, sr: int, extended: bool = False) -> Score:
    """STOI (or ESTOI with ``extended``) of the mono downmix, in [0, 1] (ESTOI may dip below 0).

    Inputs are float32 (channels, samples) at ``sr`` Hz; pass ``for_stoi`` outputs with
    ``sr=10000`` to skip the conversion. Undefined when a signal is silent or when fewer than
    30 frames (~0.4 s) of non-silent reference remain, which pystoi would score as 1e-5.
    """
    return stoi_many(reference, [estimate], sr, extended)[0]


def stoi_many(reference: np.ndarray, estimates: list, sr: int,
              extended: bool = False) -> list[Score]:
    """``stoi`` of several estimates against one reference, sharing the reference's work."""
    from pystoi.stoi import MINFREQ, N, N_FRAME, NFFT, NUMBAND
    from pystoi.utils import thirdoct

    for est in estimates:
        _pair(reference, est)
    if not np.isfinite(_peak(reference)):
        return [_undefined(_NONFINITE) for _ in estimates]
    if is_silent(reference):
        return [_undefined(_silence_reason(True, False)) for _ in estimates]
    convert = sr != STOI_RATE or reference.shape[0] != 1
    x = (for_stoi(reference, sr) if convert else reference)[0].astype(np.float64)
    window = np.hanning(N_FRAME + 2)[1:-1]
    kept = _speech_frames(x, window)
    obm, _ = thirdoct(STOI_RATE, NFFT, NUMBAND, MINFREQ)
    x_tob = _third_octave_envelopes(_kept_signal(x, kept, window), window, obm)
    frames = x_tob.shape[1]
    if frames < N:
        reason = (f"too little non-silent reference for STOI: frames={frames}, needs {N} "
                  f"(about {N * N_FRAME / 2 / STOI_RATE:.2f} s of sound)")
        return [_undefined(reason) for _ in estimates]
    xs_all = np.lib.stride_tricks.sliding_window_view(x_tob, N, axis=1).transpose(1, 0, 2)
    scores = []
    for est in estimates:
        if is_silent(est):
            scores.append(_undefined(_silence_reason(False, True)))
            continue
        y = (for_stoi(est, sr) if convert else est)[0].astype(np.float64)
        y_tob = _third_octave_envelopes(_kept_signal(y, kept, window), window, obm)
        ys_all = np.lib.stride_tricks.sliding_window_view(y_tob, N, axis=1).transpose(1, 0, 2)
        total = 0.0
        for start in range(0, len(xs_all), 2048):  # chunks keep the temporaries in cache
            total += _segment_scores(xs_all[start:start + 2048], ys_all[start:start + 2048],
                                     extended)
        scores.append(Score(total / len(xs_all)) if np.isfinite(total)
                      else _undefined(_NONFINITE))
    return scores


# ---- BSS Eval (SDR, SIR, SAR) ----------------------------------------------------------

def _one_blas_thread():
    """OpenBLAS threads stall badly when the cores are shared (a 1024 Cholesky took 1.3 s
    instead of 20 ms on a busy 2-core machine); one thread is fast enough at this size."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="blas")


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


def bss_eval(references, *estimate_sets, mixtures=()) -> list[dict[str, list[Score]]]:
    """SDR, SIR and SAR in dB of each estimate against its matching reference.

    Args:
        references: sequence of float32 (channels, samples) arrays, the true sources, e.g.
            [vocals, accompaniment]; the other sources are the interference for SIR.
        estimate_sets: one or more sequences of float32 arrays of the same shapes; estimate j
            is matched to reference j (no permutation). Sets share the reference work.
        mixtures: (weights, estimate) pairs: the SDR of ``estimate`` against the single source
            sum(weights[i] * references[i]) (e.g. a blend target), from the same correlations.

    Returns:
        Per set, {"sdr": [Score per source], "sir": [...], "sar": [...]}, then per mixture
        {"sdr": [Score]}. With one source SIR is undefined (no interference) and SAR equals
        SDR. A silent source makes its own scores undefined, and the SIR/SAR of the others
        (the interference space degenerates).
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
    for weights, est in mixtures:
        if len(weights) != n_src:
            raise InputError(f"bss_eval: mixture weights={len(weights)} but references="
                             f"{n_src}; give one weight per reference source")
        _pair(references[0], est)
    lags = FILTER_LENGTH
    ref_silent = [is_silent(r) for r in references]
    sets = [list(e) for e in estimate_sets] + [[est] for _, est in mixtures]
    rr, re_sets = _correlations(references, sets, lags)
    if not (np.isfinite(rr).all() and all(np.isfinite(r).all() for r in re_sets)):
        bad = _undefined(_NONFINITE)
        return ([{k: [bad] * n_src for k in ("sdr", "sir", "sar")} for _ in estimate_sets]
                + [{"sdr": [bad]} for _ in mixtures])
    mixture_re = re_sets[len(estimate_sets):]
    re_sets = re_sets[:len(estimate_sets)]
    ref_energy = np.array([rr[i, i, lags - 1] for i in range(n_src)])
    factor = None
    if not any(ref_silent) and n_src > 1:
        k = np.arange(lags)
        lag_index = (k[:, None] - k[None, :]) + lags - 1  # R[k, l] = r[k - l]
        rr_n = rr / np.sqrt(np.outer(ref_energy, ref_energy))[..., None]
        full = np.block([[rr_n[c, d][lag_index] for d in range(n_src)] for c in range(n_src)])
        with _one_blas_thread():
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
            with _one_blas_thread():
                coh_sar = float(x.ravel() @ cho_solve(factor, x.ravel()))
            out["sir"].append(_ratio_db(coh_sdr, coh_sar - coh_sdr, "SIR"))
            out["sar"].append(_ratio_db(coh_sar, 1.0 - coh_sar, "SAR"))
        results.append(out)
    for (weights, est), re in zip(mixtures, mixture_re):
        a = np.asarray(weights, dtype=np.float64)
        acf = np.einsum("i,j,ijk->k", a, a, rr)[lags - 1:]  # correlations are bilinear
        xcorr = np.einsum("i,ik->k", a, re[:, 0])[lags - 1:]
        est_energy = _energy(est)
        if acf[0] <= SILENCE_PEAK ** 2 * est.size or is_silent(est):
            reason = _silence_reason(acf[0] <= SILENCE_PEAK ** 2 * est.size, True)
            results.append({"sdr": [_undefined(reason)]})
            continue
        x = xcorr / np.sqrt(acf[0] * est_energy)
        coh = float(x @ solve_toeplitz(acf / acf[0], x))
        results.append({"sdr": [_ratio_db(coh, 1.0 - coh, "SDR")]})
    return results


# ---- published scores: uSDR and museval's BSS Eval v4 SDR ------------------------------

def usdr(reference: np.ndarray, estimate: np.ndarray) -> Score:
    """uSDR in dB (MDX challenges, MVSep): one global ratio, channels pooled, no filter,
    ``10 log10(sum s^2 / sum (s - s')^2)`` over float32 (channels, samples) arrays."""
    _pair(reference, estimate)
    s = _sums(reference, estimate)
    if not (np.isfinite(s["rr"]) and np.isfinite(s["dd"])):
        return _undefined(_NONFINITE)
    if is_silent(reference):
        return _undefined(_silence_reason(True, False))
    return _ratio_db(s["rr"], s["dd"], "uSDR")


def sdr_museval(references, estimates, window: int = 44100,
                hop: int = 44100) -> list[Score]:
    """museval 0.4's SDR in its default ``v4`` mode (``museval.evaluate``: ``bss_eval`` with
    ``framewise_filters=False``, ``bsseval_sources_version=False``), reduced to what it is.

    museval splits each source's estimate into ``s_true + e_spat + e_interf + e_artif``, with
    ``e_artif`` defined as the rest (``estimate - s_true - e_spat - e_interf``), and its SDR
    is ``sum s_true^2 / sum (e_spat + e_interf + e_artif)^2`` per window: the distortion
    filters (512 taps, computed once on the whole track in v4) cancel out of the SDR, which is
    ``10 log10(sum_win s^2 / sum_win (s' - s)^2)`` with channels pooled (they matter for ISR,
    SIR and SAR only). Windows: ``floor((n - window + hop) / hop)`` windows of ``window``
    samples every ``hop`` (the whole signal when it is not longer than one window); a window
    where any of the given references or estimates is silent (museval's test: the sum over
    channels is exactly 0 at every sample) is NaN; the score is the median over the other
    windows (``np.nanmedian``, as museval's aggregation). A window where the estimate equals
    its reference scores +inf, as in museval.

    Args:
        references, estimates: sequences of float32 (channels, samples) arrays, all one shape,
            estimate j against reference j (pass all the sources museval would see together:
            their silence decides which windows count).
        window, hop: in samples (museval's defaults are 44100 and 44100: 1 s at 44.1 kHz).
    Returns:
        one Score per source (undefined when every window is NaN, or a whole source is silent:
        museval refuses those).
    """
    references, estimates = list(references), list(estimates)
    if len(references) != len(estimates) or not references:
        raise InputError(f"sdr_museval: references={len(references)}, estimates="
                         f"{len(estimates)}; give one estimate per reference")
    for r, e in zip(references, estimates):
        _pair(r, e)
        if r.shape != references[0].shape:
            raise InputError("sdr_museval: all sources must have one shape")
    n = references[0].shape[1]
    spans = ([(t * hop, min(t * hop + window, n)) for t in range(int((n - window + hop) // hop))]
             if window < n else [(0, n)])
    for x in references + estimates:
        if not (np.isfinite(x).all()):
            return [_undefined(_NONFINITE)] * len(references)
    whole_silent = any(not np.add.reduce(x, axis=0).any() for x in references + estimates)
    if whole_silent:
        return [_undefined("a source is all zeros: museval refuses to evaluate")] * len(
            references)
    sdr = np.full((len(references), len(spans)), np.nan)
    for t, (a, b) in enumerate(spans):  # one window at a time: float64 copies stay small
        if any(not np.add.reduce(x[:, a:b], axis=0).any() for x in references + estimates):
            continue  # museval: a silent source in the window makes it NaN
        for j, (r, e) in enumerate(zip(references, estimates)):
            r64 = r[:, a:b].astype(np.float64)
            d = e[:, a:b] - r64
            num, den = np.einsum("ct,ct->", r64, r64), np.einsum("ct,ct->", d, d)
            sdr[j, t] = np.inf if den == 0 else 10 * np.log10(num / den) if num > 0 else -np.inf
    scores = []
    for row in sdr:
        if np.isnan(row).all():
            scores.append(_undefined("every window has a silent source (museval: NaN)"))
            continue
        value = float(np.nanmedian(row))
        scores.append(Score(value) if np.isfinite(value) else
                      _undefined("median window SDR is infinite: the estimate matches the "
                                 "reference exactly"))
    return scores
