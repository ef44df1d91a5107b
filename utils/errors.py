"""VTrace's exception tree.

Library code raises these instead of calling ``sys.exit``; ``main`` maps them to exit codes:
``UsageError`` (and its child ``ConfigError``) exit 2, anything else that ends a track marks
that track failed and the run exits 1.
"""


class VTraceError(Exception):
    """Base of every error VTrace raises on purpose; the message is meant for the user."""


class UsageError(VTraceError):
    """The command line or configuration asks for something impossible (exit code 2)."""


class ConfigError(UsageError):
    """A config.yaml key or command-line value is unknown, of the wrong type or out of range."""


class InputError(VTraceError):
    """An input file or stem cannot be used: unreadable, empty, corrupt, too short, NaN/inf."""


class SeparationError(VTraceError):
    """The separation model could not be loaded or run for a track."""


class UnknownModelError(SeparationError):
    """The model name is neither a known Demucs model nor in --model-repo (it may name a
    folder of another tool's stems that lacks this track)."""


class OutputError(VTraceError):
    """An output could not be computed or written (non-finite samples, disk full...)."""


class Terminated(BaseException):
    """SIGTERM (``timeout``, ``docker stop``, systemd): the run ends like Ctrl-C, exit 143.

    A BaseException, like KeyboardInterrupt, so every ``except Exception`` lets it pass and
    the cleanup of the track being written runs on the way out."""
