"""The one place that decides which ffmpeg binary VTrace runs.

Plumbing: imports nothing from audio_utils/ or processors/.
"""

import shutil
import subprocess

from utils.errors import InputError


def ffmpeg_exe() -> str:
    """Path of the ffmpeg to run: one on PATH, else the binary bundled by imageio-ffmpeg.

    Raises:
        InputError: when neither exists.
    """
    found = shutil.which("ffmpeg")
    if found:
        return found
    try:
        import imageio_ffmpeg
        return imageio_ffmpeg.get_ffmpeg_exe()
    except (ImportError, RuntimeError) as exc:
        raise InputError(f"no ffmpeg found (PATH has none, imageio-ffmpeg: {exc}); m4a/aac/"
                         "opus/webm inputs and MP3 export need it: install ffmpeg or "
                         "`pip install imageio-ffmpeg`") from exc


def ffmpeg_version(exe):
    """``"<path> (<version>)"`` of an ffmpeg binary, for manifests and logs."""
    try:
        out = subprocess.run([exe, "-hide_banner", "-version"], capture_output=True, text=True,
                             timeout=10, stdin=subprocess.DEVNULL).stdout
    except (OSError, subprocess.SubprocessError):
        return f"{exe} (version unknown)"
    words = out.split()
    return f"{exe} ({words[2] if len(words) > 2 else 'version unknown'})"
