"""Optional parts of VTrace, one mechanism: an extra of the package and the modules it provides.

``pyproject.toml``'s ``[project.optional-dependencies]`` lists what each extra installs; ``EXTRAS``
below names the same distributions with the module each one is imported as (a test checks that
the two agree). A feature calls ``require(extra, feature)`` before any track is processed: when
a module of the extra cannot be found it stops with one line naming the extra and the command
that installs it (``UsageError``, exit 2). Nothing here imports the heavy modules themselves.
"""

import importlib.util
from pathlib import Path

from utils.errors import UsageError

# extra -> {distribution as written in pyproject.toml: top-level module it provides}
EXTRAS = {
    "web": {"gradio": "gradio"},
    "cluster": {"ray": "ray"},
    "midi": {"librosa": "librosa", "pretty_midi": "pretty_midi"},
    "sota": {"audio-separator": "audio_separator"},
    "test": {"pytest": "pytest", "mir_eval": "mir_eval", "fast-bss-eval": "fast_bss_eval",
             "mutagen": "mutagen", "gradio": "gradio", "gradio_client": "gradio_client",
             "playwright": "playwright", "ray": "ray", "pandas": "pandas",
             "librosa": "librosa", "pretty_midi": "pretty_midi",
             "audio-separator": "audio_separator"},
}

_ROOT = Path(__file__).resolve().parent.parent


def missing_modules(extra):
    """The modules of ``extra`` that cannot be imported here (empty when it is installed)."""
    if extra not in EXTRAS:
        raise KeyError(f"unknown extra {extra!r} (known: {', '.join(EXTRAS)})")
    missing = []
    for module in EXTRAS[extra].values():
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):  # ValueError: sys.modules[module] is None
            found = False
        if not found:
            missing.append(module)
    return missing


def installed(extra):
    """True when every module of ``extra`` can be imported."""
    return not missing_modules(extra)


def install_hint(extra):
    """The command(s) that install ``extra``: from the package index, and from a clone."""
    hint = f'pip install "vtrace[{extra}]"'
    if (_ROOT / "pyproject.toml").is_file():  # running from a clone (or an editable install)
        hint += f' (in a clone: pip install -e ".[{extra}]")'
    return hint


def require(extra, feature):
    """Stop with a ``UsageError`` naming ``extra`` if any of its modules is missing.

    ``feature`` is what the user asked for, as they typed it (e.g. ``"--web"``).
    """
    if missing_modules(extra):
        raise UsageError(f"{feature} needs the {extra} extra: {install_hint(extra)}")
