"""Making stems match the original: channels, length and sample rate.

Pure functions on float32 ``(channels, samples)`` arrays; inputs are never modified.
"""

import numpy as np

from audio_utils.audio_checks import check_audio

_C = np.float32(1.0 / np.sqrt(2.0))  # -3 dB, the ITU-R BS.775 downmix coefficient

# (left, right) coefficient rows for common WAV/FFmpeg channel orders; LFE is left out, as in
# ITU-R BS.775, and the centre goes to both sides at -3 dB so a centred vocal stays centred.
_DOWNMIX = {
    3: ([1, 0, _C], [0, 1, _C]),                                  # L R C
    4: ([1, 0, _C, 0], [0, 1, 0, _C]),                            # L R Ls Rs
    5: ([1, 0, _C, _C, 0], [0, 1, _C, 0, _C]),                    # L R C Ls Rs
    6: ([1, 0, _C, 0, _C, 0], [0, 1, _C, 0, 0, _C]),              # L R C LFE Ls Rs
    8: ([1, 0, _C, 0, _C, 0, _C, 0], [0, 1, _C, 0, 0, _C, 0, _C]),  # 7.1
}


def target_channels(n):
    """Channels VTrace works in for an original of ``n`` channels: mono stays mono, else 2."""
    return 1 if n == 1 else 2


def match_channels(x, channels):
    """Return ``x`` with ``channels`` (1 or 2) channels.

    Mono to stereo duplicates; stereo to mono averages; more than two channels are downmixed to
    stereo with the centre kept (ITU-R BS.775 coefficients for 3, 4, 5, 5.1 and 7.1 layouts;
    other counts alternate channels left/right), then averaged if mono was asked for.
    Returns ``x`` itself when it already has ``channels`` channels.
    """
    check_audio(x, "audio", finite=False)
    n = x.shape[0]
    if n == channels:
        return x
    if n == 1:
        return np.repeat(x, channels, axis=0)
    if n > 2:
        rows = _DOWNMIX.get(n)
        if rows is None:
            left = np.array([1.0 if i % 2 == 0 else 0.0 for i in range(n)], np.float32)
            rows = (left, 1.0 - left)
        m = np.asarray(rows, dtype=np.float32)
        m /= m.sum(axis=1, keepdims=True)  # unity gain for a signal common to all channels
        x = (m @ x).astype(np.float32, copy=False)
        if channels == 2:
            return x
    return (channel_sum(x) / np.float32(x.shape[0]))[None]


def channel_sum(x, dtype=np.float32):
    """The sum over channels of ``(channels, n)`` audio, ``(n,)`` in ``dtype``, added row by
    row. ``x.sum(axis=0)`` on BlockReader's arrays (transposed views of interleaved frames)
    runs numpy's inner loop over the few channels of each frame: measured 40x slower."""
    out = x[0].astype(dtype)  # a copy, also when already ``dtype``
    for row in x[1:]:
        np.add(out, row, out=out, casting="same_kind")
    return out


def fit_length(x, length):
    """Trim or zero-pad ``x`` at the end to ``length`` samples."""
    check_audio(x, "audio", finite=False)
    n = x.shape[1]
    if n == length:
        return x
    if n > length:
        return x[:, :length]
    out = np.zeros((x.shape[0], length), dtype=np.float32)
    out[:, :n] = x
    return out


def resample(x, sr_in, sr_out, quality="VHQ"):
    """High-quality resampling (libsoxr) of float32 ``(channels, samples)`` audio.

    The result has ``round(samples * sr_out / sr_in)`` samples, so duration is kept to within
    one sample.
    """
    check_audio(x, "audio", finite=False)
    if sr_in == sr_out:
        return x
    import soxr

    y = soxr.resample(np.ascontiguousarray(x.T), sr_in, sr_out, quality=quality)
    return fit_length(np.ascontiguousarray(y.T, dtype=np.float32),
                      int(round(x.shape[1] * sr_out / sr_in)))
