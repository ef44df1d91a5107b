"""VTrace's arithmetic: blend weight, blend, residual vocal, voice mix, phase cancel, clip gain.

All audio is float32 shaped ``(channels, samples)`` at one sample rate, already matched in rate,
channels, length and timing (see ``audio_utils``). Nothing here does I/O or modifies its inputs.

With ``O`` the original mix, ``I`` the model's instrumental and ``Vm`` the model's vocals:

- blend         ``B = w*O + (1-w)*I``  (``= I + w*(O-I)``: the vocal is scaled by ``w``)
- residual      ``R = O - I``          (the vocal with its natural space)
- voice         ``V = va*R + (1-va)*Vm``
- phase cancel  ``I_pc = O - V``       (``== I`` when ``va == 1``)
- rebalance     ``O + sum((10^(dB/20) - 1) * S)`` over stems ``S`` with a gain
"""

import math

import numpy as np

from audio_utils.audio_checks import check_audio
from utils.errors import InputError

# "gate" uses the linear weight while a vocal is present and 1.0 (the untouched original)
# elsewhere; the others are a fixed function of alpha.
BLEND_MODES = ("linear", "exp", "log", "power", "smoothstep", "gate")


def blend_weight(alpha, mode="linear", gamma=2.0):
    """The weight ``w`` of the original in the blend, from ``alpha`` in [0, 1].

    linear ``w=a``; exp ``w=e^-a``; log ``w=ln(1+a)``; power ``w=a^gamma``;
    smoothstep ``w=3a^2-2a^3``; gate: ``w=a`` while the vocal is present (see filters.gate_weight).
    The vocal's gain in the blend is ``w`` (``20*log10(w)`` dB).
    """
    a = float(alpha)
    if mode in ("linear", "gate"):
        return a
    if mode == "exp":
        return math.exp(-a)
    if mode == "log":
        return math.log1p(a)
    if mode == "power":
        return a ** float(gamma)
    if mode == "smoothstep":
        return 3.0 * a * a - 2.0 * a ** 3
    raise ValueError(f"blend_mode={mode!r} is not one of {', '.join(BLEND_MODES)}")


def alpha_for_vocal_gain_db(gain_db, mode="linear", gamma=2.0):
    """The ``alpha`` in [0, 1] whose blend changes the vocal by exactly ``gain_db`` dB.

    Inverts ``blend_weight`` for ``w = 10**(gain_db/20)``. Raises ValueError, naming the range
    of gains the mode can reach, when no alpha in [0, 1] gives that gain.
    """
    if mode == "gate":
        mode = "linear"
    w = 10.0 ** (float(gain_db) / 20.0) if math.isfinite(gain_db) else 0.0
    lo, hi = blend_weight(0.0, mode, gamma), blend_weight(1.0, mode, gamma)
    w_min, w_max = min(lo, hi), max(lo, hi)
    if not (w_min - 1e-12 <= w <= w_max + 1e-12):
        reach = " to ".join(_db_text(v) for v in (w_min, w_max))
        raise ValueError(f"vocal_gain_db={gain_db} cannot be reached with blend_mode={mode}: "
                          f"it spans {reach}; choose a gain in that range or another mode")
    w = min(max(w, w_min), w_max)
    if mode == "linear":
        a = w
    elif mode == "exp":
        a = -math.log(w) if w > 0 else math.inf
    elif mode == "log":
        a = math.expm1(w)
    elif mode == "power":
        a = w ** (1.0 / float(gamma))
    else:  # smoothstep: the root of 3a^2 - 2a^3 = w in [0, 1]
        a = 0.5 - math.sin(math.asin(1.0 - 2.0 * w) / 3.0)
    return min(max(a, 0.0), 1.0)


def _db_text(w):
    return "-inf dB" if w <= 0 else f"{20 * math.log10(w):+.2f} dB"


def blend(original, instrumental, w):
    """``B = w*O + (1-w)*I``.

    Args:
        original, instrumental: float32 ``(channels, samples)``, same shape.
        w: scalar weight, or float32 ``(1, samples)`` for a time-varying weight.
    Returns:
        float32 ``(channels, samples)``; where ``w == 1`` exactly it equals ``original``.
    """
    _check_pair(original, instrumental)
    w = np.float32(w) if np.isscalar(w) else np.asarray(w, dtype=np.float32)
    return (w * original + (np.float32(1.0) - w) * instrumental).astype(np.float32, copy=False)


def residual(original, instrumental):
    """The residual vocal ``R = O - I``, float32 ``(channels, samples)``."""
    _check_pair(original, instrumental)
    return np.subtract(original, instrumental, dtype=np.float32)


def voice(residual_vocal, model_vocals, voice_alpha):
    """``V = va*R + (1-va)*Vm``; with ``va == 1`` this is ``R`` itself (the same array, not a
    copy: nothing in VTrace modifies arrays in place)."""
    _check_pair(residual_vocal, model_vocals)
    va = float(voice_alpha)
    if va == 1.0:
        return residual_vocal
    return (np.float32(va) * residual_vocal
            + np.float32(1.0 - va) * model_vocals).astype(np.float32, copy=False)


def phase_cancel(original, voice_out):
    """The instrumental rebuilt from the original, ``I_pc = O - V``."""
    _check_pair(original, voice_out)
    return np.subtract(original, voice_out, dtype=np.float32)


def rebalance(original, stems):
    """The original with each stem's level changed: ``O + sum((g - 1) * S)``, ``g = 10^(dB/20)``.

    Args:
        original: float32 ``(channels, samples)``.
        stems: ``[(stem, gain_db), ...]``, each stem float32 shaped like ``original``;
            ``-inf`` dB removes the stem.
    Returns:
        float32 ``(channels, samples)``. Whatever no stem holds (what the model lost) stays
        at unity, so gains of 0 dB give the original bit for bit.
    """
    check_audio(original, "original", finite=False)
    out = original.astype(np.float32, copy=True)
    for stem, gain_db in stems:
        _check_pair(original, stem)
        g = 10.0 ** (float(gain_db) / 20.0)
        if g != 1.0:
            out += np.float32(g - 1.0) * stem
    return out


def clip_gain(peak_value, ceiling=1.0):
    """The one gain for all of a track's outputs: 1.0 unless a peak would exceed ``ceiling``.

    One common gain keeps the outputs adding up (``B``, ``V`` and ``I_pc`` stay consistent).
    """
    if not math.isfinite(peak_value) or peak_value <= ceiling:
        return 1.0
    return ceiling / peak_value


def _check_pair(a, b):
    check_audio(a, "first signal", finite=False)
    check_audio(b, "second signal", channels=a.shape[0], finite=False)
    if a.shape != b.shape:
        raise InputError(f"signals must have the same shape, got {a.shape} and {b.shape}")
