"""Residual cleanup and the vocal gate: zero-phase Butterworth filters, a noise gate, the
time-varying blend weight of ``--blend-mode gate``, and the block margin each one needs.

Pure functions: no I/O, inputs are never modified. Audio is float32 ``(channels, samples)``
in full scale (1.0 = 0 dBFS), ``sr`` in Hz, times in ms, levels in dB.

Blocks: every function here is stateless, so a long file can be processed block by block by
passing each block with ``required_context(...)`` extra samples on both sides and cropping that
margin off the result; the cropped result then equals whole-file processing within 1e-6 of full
scale.

Gate ballistics (``noise_gate`` and ``gate_weight`` share them):
  * level: RMS over a centred 20 ms window of the channel-mean power (stereo-linked), in dBFS
    (a full-scale sine reads -3.01 dBFS). The gate is *open* where level >= threshold_db.
  * hold: after the level drops below threshold, the gate stays open for ``hold_ms``.
  * attack: the gate looks ahead, so the opening ramp starts ``attack_ms`` before the level
    crosses the threshold and is complete when it does (onsets are not chopped). ``attack_ms``
    is the time of a full swing from closed to open.
  * release: after hold, the gate closes over ``release_ms`` (a full swing from open to closed;
    a re-opening during release starts from where the ramp got to).
  The ramp is linear in a state u in [0, 1] (0 closed, 1 open); ``noise_gate`` maps it linearly
  in dB (constant dB/ms, as most gates do), ``gate_weight`` through a smoothstep (no corners).
"""

import math

import numpy as np
from scipy import ndimage, signal

from audio_utils.audio_checks import check_audio
from audio_utils.matching import channel_sum

_DETECTOR_MS = 20.0   # one period of 50 Hz: the RMS of bass bleed does not ripple
_CONTEXT_TOL = 1e-6   # blockwise vs whole error allowed, in full scale
_GAIN_SNAP = 1e-9     # ramp states this close to 0 or 1 are exactly closed/open


# ----------------------------------------------------------------------------- filters

def _check_rate(sr):
    if not (isinstance(sr, (int, np.integer)) or float(sr).is_integer()) or sr <= 0:
        raise ValueError(f"sample rate sr={sr} is not valid; use a positive whole number of Hz")
    return int(sr)


def _butter_sos(sr, cutoff_hz, kind, order):
    """Second-order sections of one pass, designed so that two passes give -3 dB at cutoff."""
    sr = _check_rate(sr)
    if kind not in ("highpass", "lowpass"):
        raise ValueError(f"filter kind={kind!r} is unknown; use 'highpass' or 'lowpass'")
    if isinstance(order, bool) or not isinstance(order, (int, np.integer)) or order < 1:
        raise ValueError(f"filter_order={order!r} is not valid; use a whole number >= 1 "
                         "(each pass is a Butterworth of that order)")
    nyquist = sr / 2.0
    if not (isinstance(cutoff_hz, (int, float, np.number)) and 0.0 < cutoff_hz < nyquist):
        raise ValueError(f"{kind} cutoff_hz={cutoff_hz!r} is out of range; use a frequency "
                         f"between 0 and the Nyquist frequency {nyquist:g} Hz (sr={sr})")
    # Filtering forward and backward squares |H|. A digital Butterworth (bilinear, prewarped)
    # has |H|^2 = 1 / (1 + (t/tc)^(2N)) with t = tan(pi f / sr) for a lowpass (tc/t for a
    # highpass). Two passes reach -3 dB where |H|^4 = 1/2, i.e. (t/tc)^(2N) = sqrt(2) - 1,
    # so the design cutoff is moved by r = (sqrt(2) - 1)^(1 / 2N): outwards of the wanted
    # cutoff (above it for a lowpass, below it for a highpass).
    r = (math.sqrt(2.0) - 1.0) ** (1.0 / (2 * int(order)))
    t = math.tan(math.pi * cutoff_hz / sr)
    t_design = t / r if kind == "lowpass" else t * r
    design_hz = math.atan(t_design) * sr / math.pi
    return signal.butter(int(order), design_hz, btype=kind, fs=sr, output="sos")


def butter_zero_phase(x, sr, cutoff_hz, kind, order=4):
    """Zero-phase Butterworth high-pass or low-pass (``scipy.signal.sosfiltfilt``).

    The combined forward-backward response is -3.01 dB at ``cutoff_hz`` (the design cutoff is
    shifted to make it so, see ``_butter_sos``), has no delay and no phase shift, and falls off
    at 12*order dB/octave (each of the two passes is a Butterworth of ``order``).

    Args:
        x: float32 (channels, samples).
        sr: sample rate in Hz.
        cutoff_hz: -3 dB frequency in Hz, 0 < cutoff_hz < sr/2.
        kind: "highpass" or "lowpass".
        order: Butterworth order of each pass, >= 1.

    Returns:
        float32 (channels, samples), a new array.

    Raises:
        ValueError: bad cutoff, kind, order or sample rate.
    """
    check_audio(x, "filter input")
    sos = _butter_sos(sr, cutoff_hz, kind, order)
    if x.shape[1] == 0:
        return x.copy()
    # sosfiltfilt's default edge padding (3 * taps) is longer than a very short input allows.
    taps = 2 * len(sos) + 1 - min(int((sos[:, 2] == 0).sum()), int((sos[:, 5] == 0).sum()))
    padlen = min(3 * taps, x.shape[1] - 1)
    y = signal.sosfiltfilt(sos, x.astype(np.float64), axis=-1, padlen=padlen)
    return y.astype(np.float32)


def _filter_context(sr, cutoff_hz, kind, order):
    """Samples of margin after which a block's edge error has decayed below the tolerance."""
    sos = _butter_sos(sr, cutoff_hz, kind, order)
    _, poles, _ = signal.sos2zpk(sos)
    rho = float(np.max(np.abs(poles)))
    # Long enough for the slowest pole to decay by 1e-14, then measure the real tail.
    n = int(math.ceil(math.log(1e-14) / math.log(rho))) + 64 if rho > 0 else 64
    impulse = np.zeros(n)
    impulse[0] = 1.0
    h = np.abs(signal.sosfilt(sos, impulse))
    gain = h.sum()
    tail = np.cumsum(h[::-1])[::-1]   # tail[d] = sum |h[k]| for k >= d
    # The edge error of the forward pass decays like the tail of h and then goes through the
    # backward pass (L1 gain <= sum|h|); a factor 100 covers the size of the state mismatch
    # (with 10, full-scale noise first exceeded 1e-6 at about 0.7 of the margin).
    ok = np.nonzero(tail * gain * 100.0 <= _CONTEXT_TOL)[0]
    return int(ok[0]) if ok.size else n


# ----------------------------------------------------------------------------- gate

def _ms_to_samples(ms, sr, name):
    if not (isinstance(ms, (int, float, np.number)) and math.isfinite(ms) and ms >= 0):
        raise ValueError(f"{name}={ms!r} is not valid; use a time in ms >= 0")
    return int(round(ms * sr / 1000.0))


def _check_db(value, name, upper=None):
    if not (isinstance(value, (int, float, np.number)) and math.isfinite(value)):
        raise ValueError(f"{name}={value!r} is not valid; use a finite level in dB")
    if upper is not None and value > upper:
        raise ValueError(f"{name}={value!r} is out of range; use a level <= {upper:g} dB")


def _gate_state(x, sr, threshold_db, attack_ms, release_ms, hold_ms):
    """Gate ramp state u, float64 (samples,) in [0, 1]: 0 closed, 1 open (see module doc)."""
    sr = _check_rate(sr)
    _check_db(threshold_db, "threshold_db", upper=0.0)
    attack = max(1, _ms_to_samples(attack_ms, sr, "attack_ms"))
    release = max(1, _ms_to_samples(release_ms, sr, "release_ms"))
    hold = _ms_to_samples(hold_ms, sr, "hold_ms")
    n = x.shape[1]
    if n == 0:
        return np.zeros(0)

    power = channel_sum(np.square(x, dtype=np.float64), np.float64) / x.shape[0]
    window = max(1, _ms_to_samples(_DETECTOR_MS, sr, "detector"))
    mean_square = ndimage.uniform_filter1d(power, window, mode="constant")
    is_open = mean_square >= 10.0 ** (threshold_db / 10.0)

    # Look-ahead by `attack`, hold by `hold`: target[i] = any(is_open[i - hold : i + attack]).
    counts = np.concatenate(([0], np.cumsum(is_open)))
    idx = np.arange(n)
    target = counts[np.minimum(idx + attack, n - 1) + 1] - counts[np.maximum(idx - hold, 0)] > 0

    # Every open run of `target` lasts more than `attack` samples (look-ahead + the run
    # itself), so the ramp always reaches 1 before a run ends: each closed run starts from 1
    # (or from 0 at the very start) and each open run from where the closed run left off.
    # That makes the rate limiter closed-form, with no per-sample loop.
    edges = np.flatnonzero(np.diff(target)) + 1
    starts = np.concatenate(([0], edges))
    lengths = np.diff(np.concatenate((starts, [n])))
    run_open = target[starts]
    end_of_closed = np.where(run_open, 1.0, np.maximum(0.0, 1.0 - lengths / release))
    if not run_open[0]:
        end_of_closed[0] = 0.0   # a file that starts closed has been closed forever
    start_value = np.ones(len(starts))
    start_value[1:] = np.where(run_open[1:], end_of_closed[:-1], 1.0)
    if not run_open[0]:
        start_value[0] = 0.0
    step = np.where(run_open, 1.0 / attack, -1.0 / release)
    offset = idx - np.repeat(starts, lengths) + 1
    u = np.clip(np.repeat(start_value, lengths) + np.repeat(step, lengths) * offset, 0.0, 1.0)
    u[u >= 1.0 - _GAIN_SNAP] = 1.0
    u[u <= _GAIN_SNAP] = 0.0
    return u


def _gate_context(sr, attack_ms, release_ms, hold_ms):
    """Exact dependency span of the gate state, doubled for safety (see _gate_state)."""
    sr = _check_rate(sr)
    span = (_ms_to_samples(_DETECTOR_MS, sr, "detector")
            + max(1, _ms_to_samples(attack_ms, sr, "attack_ms")) * 2
            + max(1, _ms_to_samples(release_ms, sr, "release_ms"))
            + _ms_to_samples(hold_ms, sr, "hold_ms") + 2)
    return 2 * span


def noise_gate(x, sr, threshold_db, attack_ms, release_ms, hold_ms, range_db):
    """Stereo-linked noise gate for the residual vocal: removes low-level bleed between phrases.

    Where the level is below ``threshold_db`` (after hold and release) the signal is
    attenuated by ``range_db``; where the gate is open it passes bit-identical. Ballistics in
    the module docstring; the gain ramps linearly in dB.

    Args:
        x: float32 (channels, samples).
        sr: sample rate in Hz.
        threshold_db: opening level, dBFS RMS (20 ms window), <= 0.
        attack_ms, release_ms, hold_ms: ballistics in ms, >= 0.
        range_db: attenuation when closed, dB, -120 <= range_db <= 0 (e.g. -40).

    Returns:
        float32 (channels, samples), a new array.
    """
    check_audio(x, "noise gate input")
    _check_db(range_db, "range_db", upper=0.0)
    if range_db < -120.0:
        raise ValueError(f"range_db={range_db!r} is out of range; use -120 <= range_db <= 0")
    u = _gate_state(x, sr, threshold_db, attack_ms, release_ms, hold_ms)
    gain = np.power(10.0, range_db * (1.0 - u) / 20.0)
    return (x * gain).astype(np.float32)


def gate_weight(vocals, sr, threshold_db, attack_ms, release_ms, hold_ms, w_active):
    """Time-varying blend weight for ``--blend-mode gate``, from the model vocal stem.

    ``w`` is exactly 1.0 where the gate is closed (no vocal: B = w*O + (1-w)*I is then exactly
    the original O) and exactly ``w_active`` where it is open, with smoothstep transitions
    over attack/release (ballistics in the module docstring).

    Args:
        vocals: float32 (channels, samples), the model's vocal stem.
        sr: sample rate in Hz.
        threshold_db: vocal presence level, dBFS RMS (20 ms window), <= 0.
        attack_ms, release_ms, hold_ms: ballistics in ms, >= 0.
        w_active: the blend weight where vocals are present (finite).

    Returns:
        float32 (1, samples): one weight for all channels.
    """
    check_audio(vocals, "vocal stem")
    if not (isinstance(w_active, (int, float, np.number)) and math.isfinite(w_active)):
        raise ValueError(f"w_active={w_active!r} is not valid; use a finite blend weight")
    u = _gate_state(vocals, sr, threshold_db, attack_ms, release_ms, hold_ms)
    s = u * u * (3.0 - 2.0 * u)
    w = 1.0 - (1.0 - float(w_active)) * s
    # Exact endpoints: float rounding must not leave 0.99999994 in vocal-free regions.
    w = np.where(u == 0.0, 1.0, np.where(u == 1.0, float(w_active), w))
    return w.astype(np.float32)[np.newaxis, :]


# ----------------------------------------------------------------------------- chain

def shape_residual(residual, sr, residual_hpf=None, residual_lpf=None, filter_order=4,
                   gate_threshold_db=None, gate_attack_ms=5.0, gate_release_ms=100.0,
                   gate_hold_ms=50.0, gate_range_db=-40.0):
    """The residual cleanup chain in its fixed order: high-pass, low-pass, noise gate.

    Each step is skipped when its key is None. Arguments are the config keys of the same name.

    Args:
        residual: float32 (channels, samples), R = O - I.

    Returns:
        float32 (channels, samples): a new array (a copy when every step is off).
    """
    check_audio(residual, "residual")
    y = residual
    if residual_hpf is not None:
        y = butter_zero_phase(y, sr, residual_hpf, "highpass", filter_order)
    if residual_lpf is not None:
        y = butter_zero_phase(y, sr, residual_lpf, "lowpass", filter_order)
    if gate_threshold_db is not None:
        y = noise_gate(y, sr, gate_threshold_db, gate_attack_ms, gate_release_ms,
                       gate_hold_ms, gate_range_db)
    return y.copy() if y is residual else y


def required_context(sr, residual_hpf=None, residual_lpf=None, filter_order=4,
                     gate_threshold_db=None, gate_attack_ms=5.0, gate_release_ms=100.0,
                     gate_hold_ms=50.0, vocal_gate_threshold_db=None,
                     vocal_gate_attack_ms=10.0, vocal_gate_release_ms=200.0,
                     vocal_gate_hold_ms=100.0, **_ignored):
    """Samples of margin needed on each side of a block for ``shape_residual`` (the chain of
    enabled steps: their margins add up) and for ``gate_weight`` (pass
    vocal_gate_threshold_db=None when blend mode is not gate); the larger of the two.

    Arguments are the config keys of the same name; other keys are accepted and ignored so
    that the whole config can be passed. With this margin, blockwise results equal whole-array
    results within 1e-6 of full scale.
    """
    residual = 0
    if residual_hpf is not None:
        residual += _filter_context(sr, residual_hpf, "highpass", filter_order)
    if residual_lpf is not None:
        residual += _filter_context(sr, residual_lpf, "lowpass", filter_order)
    if gate_threshold_db is not None:
        residual += _gate_context(sr, gate_attack_ms, gate_release_ms, gate_hold_ms)
    vocal = 0
    if vocal_gate_threshold_db is not None:
        vocal = _gate_context(sr, vocal_gate_attack_ms, vocal_gate_release_ms,
                              vocal_gate_hold_ms)
    return max(residual, vocal)
