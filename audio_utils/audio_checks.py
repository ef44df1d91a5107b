"""The one audio layout VTrace uses everywhere, checked at module boundaries.

Every array passed between modules is float32 shaped ``(channels, samples)``; like
``librosa.util.valid_audio`` this module checks and never guesses (a ``(samples, channels)``
array is an error, not something to transpose silently).
"""

import numpy as np

from utils.errors import InputError


def check_audio(x, name="audio", channels=None, finite=True):
    """Check that ``x`` is float32 audio shaped ``(channels, samples)``.

    Args:
        x: the array to check.
        name: what to call it in the error message.
        channels: required channel count, or None for any count >= 1.
        finite: also require every sample to be finite (no NaN/inf).

    Returns:
        ``x`` itself (never a copy), so calls can be chained.

    Raises:
        InputError: with a message naming ``name`` and what was wrong.
    """
    if not isinstance(x, np.ndarray):
        raise InputError(f"{name}: expected a numpy array, got {type(x).__name__}")
    if x.dtype != np.float32:
        raise InputError(f"{name}: expected float32 samples, got {x.dtype}")
    if x.ndim != 2:
        raise InputError(f"{name}: expected shape (channels, samples), got {x.shape}")
    if x.shape[0] < 1 or (x.shape[0] > 64 and x.shape[1] <= 64):
        raise InputError(f"{name}: shape {x.shape} looks like (samples, channels); "
                         "VTrace uses (channels, samples)")
    if channels is not None and x.shape[0] != channels:
        raise InputError(f"{name}: expected {channels} channel(s), got {x.shape[0]}")
    if finite and x.size and not np.isfinite(x).all():
        raise InputError(f"{name}: contains NaN or infinite samples")
    return x
