"""VTrace's one configuration: the ``Config`` dataclass, ``config.yaml`` and the command line.

Precedence: dataclass defaults < config.yaml < options the user typed. argparse defaults are
all None, so an option left out never overrides the file. ``Config.validate()`` does every
check in one place, with messages that say ``name=value``, what is allowed and how to fix it.
"""

import argparse
import math
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path

from utils.errors import ConfigError
from utils.version import __version__

GROUPS = {
    "input": "input",
    "separation": "separation (Demucs)",
    "blend": "blend and residual",
    "output": "output",
    "evaluation": "evaluation",
    "run": "run",
}

BLEND_MODES = ("linear", "exp", "log", "power", "smoothstep", "gate")
DEVICES = ("auto", "cpu", "cuda", "mps")


ROLES = ("stems", "outputs", "run")


def opt(role, default, group, help, flags=(), choices=None, lo=None, hi=None, typ=None,
        nullable=False, cli=True, lo_open=False):
    """Field metadata: what the field decides, help text, CLI flags, allowed values.

    ``role`` says what a change of the value means: ``stems`` (the separation: other stems),
    ``outputs`` (what is written from the stems: other output files) or ``run`` (only how the
    run goes: where, how fast, how verbose). The resume key, the manifest's ``params`` and the
    separator's arguments are derived from it (``Config.settings``).
    """
    if role not in ROLES:
        raise ValueError(f"role={role!r}; use one of {', '.join(ROLES)}")
    meta = dict(role=role, group=group, help=help, flags=tuple(flags), choices=choices, lo=lo,
                hi=hi, typ=typ, nullable=nullable, cli=cli, lo_open=lo_open)
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class Config:
    # input
    input: list = opt("run", [], "input", "audio files or folders (wav, flac, mp3, ogg, opus, m4a, aac, "
                      "aiff, webm)", flags=("-i",))
    recursive: bool = opt("run", False, "input", "descend into sub-folders of input folders")
    link: list = opt("run", [], "input", "video/audio URL to download with yt-dlp (repeatable)",
                     flags=("-l",))
    playlist: bool = opt("run", False, "input", "with a playlist link, process every entry, "
                         "not only the video")
    download_dir: str = opt("run", "downloads", "input", "folder for downloaded audio")
    max_duration: float = opt("run", None, "input", "refuse links longer than this many seconds",
                              lo=0, lo_open=True, typ=float, nullable=True)
    # separation
    demucs_model: str = opt("stems", "htdemucs_ft", "separation", "Demucs model name (or name of a "
                            "folder holding other tools' stems in the separated layout)")
    model_repo: str = opt("stems", None, "separation", "local folder of Demucs .th/.yaml models "
                          "(like demucs --repo); no download", typ=str, nullable=True)
    device: str = opt("run", "auto", "separation", "where Demucs runs (auto: cuda, then mps, then cpu)",
                      choices=DEVICES)
    shifts: int = opt("stems", 1, "separation", "Demucs random shifts (more = better, slower; 0 = none)",
                      lo=0)
    overlap: float = opt("stems", 0.25, "separation", "Demucs overlap between segments", lo=0, hi=0.99)
    segment: float = opt("stems", None, "separation", "Demucs segment length in seconds; none: the "
                         "model's own", lo=0, lo_open=True, typ=float, nullable=True)
    other_method: str = opt("stems", "add", "separation", "no_vocals = sum of other sources (add) or "
                            "mix - vocals (minus: runs only vocal sub-models, ~4x faster on "
                            "htdemucs_ft)", choices=("add", "minus"))
    separated_dir: str = opt("run", "separated", "separation", "where stems live: "
                             "<separated_dir>/<model>/<track>/{vocals,no_vocals}.wav")
    force: bool = opt("run", False, "separation", "separate and process again even if results exist")
    cleanup: bool = opt("run", False, "separation", "delete the separations this run created once the "
                        "track's outputs are written")
    # blend
    blend_alpha: float = opt("outputs", 0.1, "blend", "how much of the original to blend back, in [0, 1]",
                             flags=("-ba", "-a"), lo=0, hi=1)
    vocal_gain_db: float = opt("outputs", None, "blend", "set the blend so the vocal changes by exactly this "
                               "many dB (e.g. -20); excludes --blend-alpha", hi=0, typ=float,
                               nullable=True)
    voice_alpha: float = opt("outputs", 1.0, "blend", "vocal output: residual (1.0) vs the model's vocals "
                             "(0.0)", flags=("-va",), lo=0, hi=1)
    blend_mode: str = opt("outputs", "linear", "blend", "alpha to weight curve", choices=BLEND_MODES)
    gamma: float = opt("outputs", 2.0, "blend", "exponent of the power curve", lo=0, lo_open=True)
    vocal_gate_threshold_db: float = opt("outputs", -40.0, "blend", "gate mode: vocal level that opens "
                                         "the gate (dBFS)", hi=0)
    vocal_gate_attack_ms: float = opt("outputs", 10.0, "blend", "gate mode: attack time (ms)", lo=0)
    vocal_gate_release_ms: float = opt("outputs", 200.0, "blend", "gate mode: release time (ms)", lo=0)
    vocal_gate_hold_ms: float = opt("outputs", 100.0, "blend", "gate mode: hold time (ms)", lo=0)
    residual_hpf: float = opt("outputs", None, "blend", "high-pass the residual vocal at this frequency "
                              "(Hz); the bass below returns to the phase-cancel instrumental",
                              lo=0, lo_open=True, typ=float, nullable=True)
    residual_lpf: float = opt("outputs", None, "blend", "low-pass the residual vocal at this frequency (Hz)",
                              lo=0, lo_open=True, typ=float, nullable=True)
    filter_order: int = opt("outputs", 2, "blend", "Butterworth order per pass of the residual filters "
                            "(zero-phase: 12 dB/octave per order)", lo=1, hi=16)
    gate_threshold_db: float = opt("outputs", None, "blend", "noise gate on the residual vocal: threshold "
                                   "(dBFS; off when unset)", hi=0, typ=float, nullable=True)
    gate_attack_ms: float = opt("outputs", 5.0, "blend", "residual gate attack (ms)", lo=0)
    gate_release_ms: float = opt("outputs", 100.0, "blend", "residual gate release (ms)", lo=0)
    gate_hold_ms: float = opt("outputs", 50.0, "blend", "residual gate hold (ms)", lo=0)
    gate_range_db: float = opt("outputs", -40.0, "blend", "residual gate attenuation when closed (dB, <= 0)",
                               hi=0)
    align: bool = opt("outputs", True, "blend", "estimate and remove the stems' offset and polarity against "
                      "the original (--no-align skips it)")
    # output
    output: str = opt("run", None, "output", "output folder (default: vtrace_output/ under the first "
                      "input's folder)", flags=("-o",), typ=str, nullable=True)
    wav_format: str = opt("outputs", "pcm24", "output", "WAV sample format",
                          choices=("pcm16", "pcm24", "float32"))
    normalize: str = opt("outputs", "none", "output", "none: one common gain only if a peak would clip; "
                         "peak: each file peak-normalised to -1 dBFS", choices=("none", "peak"))
    match_loudness: bool = opt("outputs", False, "output", "give the blended output the original's "
                               "integrated loudness (BS.1770) under -1 dBTP")
    convert_to_mp3: bool = opt("outputs", False, "output", "also write MP3 copies", flags=("--convert_mp3",
                                                                              "--convert-mp3"))
    mp3_only: bool = opt("outputs", False, "output", "with MP3 export, keep no WAVs")
    mp3_bitrate: int = opt("outputs", 320, "output", "MP3 bitrate in kbps (CBR)",
                           choices=(96, 128, 160, 192, 224, 256, 320))
    # evaluation
    eval: bool = opt("outputs", False, "evaluation", "write an evaluation report (MSE, cosine, STOI)")
    estoi: bool = opt("outputs", False, "evaluation", "use extended STOI")
    reference: str = opt("outputs", None, "evaluation", "folder of true stems per track "
                         "(<dir>/<track>/vocals.*, accompaniment.*): adds SDR/SI-SDR",
                         typ=str, nullable=True)
    plot: bool = opt("outputs", False, "evaluation", "one spectrogram PNG per track")
    # run
    thread: int = opt("run", 1, "run", "worker processes", flags=("-t", "-T"), lo=1, hi=64)
    log_level: str = opt("run", "INFO", "run", "console log level",
                         choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    log_dir: str = opt("run", "logs", "run", "folder for the per-run DEBUG log files")
    quiet: bool = opt("run", False, "run", "only warnings and errors on the console, no progress bars")
    block_seconds: float = opt("run", 2.0, "run", "post-processing block length (memory vs speed)",
                               lo=0.5, hi=600)

    def validate(self, source="command line"):
        """Check every value; raise ConfigError naming the key, the value and what is allowed."""
        for f in fields(self):
            _check_field(f, getattr(self, f.name), source)
        if self.mp3_only and not self.convert_to_mp3:
            raise ConfigError("mp3_only=true needs convert_to_mp3=true: add --convert_to_mp3 or "
                              "drop --mp3-only")
        if self.residual_hpf and self.residual_lpf and self.residual_hpf >= self.residual_lpf:
            raise ConfigError(f"residual_hpf={self.residual_hpf} must be below residual_lpf="
                              f"{self.residual_lpf}, or the residual would be silent")
        if self.model_repo is not None and not Path(self.model_repo).is_dir():
            raise ConfigError(f"model_repo={self.model_repo} is not a folder; point --model-repo "
                              "at the folder holding the model's .yaml/.th files, or drop it")
        if self.vocal_gain_db is not None:
            from processors.vtrace_core import alpha_for_vocal_gain_db

            try:
                alpha_for_vocal_gain_db(self.vocal_gain_db, self.blend_mode, self.gamma)
            except ValueError as exc:
                raise ConfigError(str(exc)) from None
        return self

    def settings(self, *roles):
        """``{name: value}`` of the fields whose role is one of ``roles`` (in field order)."""
        return {f.name: getattr(self, f.name) for f in fields(self)
                if f.metadata["role"] in roles}

    def params(self):
        """What the outputs are made from besides the input and the stems: every ``stems``
        and ``outputs`` field. A rerun with other params recomputes the track."""
        return self.settings("stems", "outputs")


def _check_field(f, value, source):
    m = f.metadata
    name, typ = f.name, _field_type(f)
    where = f" in {source}" if source else ""
    if value is None:
        if m["nullable"]:
            return
        raise ConfigError(f"{name}=null{where}: a value is required ({_allowed(f)})")
    if f.type is list:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{name}={value!r}{where}: expected a list of strings")
        return
    if typ is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{name}={value!r}{where}: expected true or false")
        return
    if typ is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{name}={value!r}{where}: expected a whole number ({_allowed(f)})")
    elif typ is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not math.isfinite(value):
            raise ConfigError(f"{name}={value!r}{where}: expected a number ({_allowed(f)})")
    elif typ is str:
        if not isinstance(value, str) or (not value and not m["nullable"]):
            raise ConfigError(f"{name}={value!r}{where}: expected a text value ({_allowed(f)})")
    if m["choices"] is not None and value not in m["choices"]:
        raise ConfigError(f"{name}={value!r}{where}: allowed values are "
                          f"{', '.join(map(str, m['choices']))}")
    lo, hi = m["lo"], m["hi"]
    if (lo is not None and (value < lo or (m["lo_open"] and value == lo))) \
            or (hi is not None and value > hi):
        raise ConfigError(f"{name}={value!r}{where}: out of range ({_allowed(f)})")


def _allowed(f):
    m = f.metadata
    if m["choices"]:
        return "one of " + ", ".join(map(str, m["choices"]))
    lo, hi = m["lo"], m["hi"]
    parts = []
    if lo is not None:
        parts.append(f"{'>' if m['lo_open'] else '>='} {lo}")
    if hi is not None:
        parts.append(f"<= {hi}")
    text = " and ".join(parts) if parts else "any value"
    return text + (", or null" if m["nullable"] else "")


def _field_type(f):
    return f.metadata["typ"] or f.type


# ---------------------------------------------------------------- config.yaml

def default_config_path():
    """``./config.yaml`` if present, else the one shipped next to this file."""
    local = Path("config.yaml")
    return local if local.is_file() else Path(__file__).with_name("config.yaml")


MAX_CONFIG_BYTES = 1 << 20  # a config is a few KiB; refuse anything near this unread


def load_yaml(path):
    """Read ``path`` into a dict of known keys; ConfigError (one line) for unknown keys, bad
    YAML, a file over MAX_CONFIG_BYTES, binary or undecodable bytes, or any YAML alias.

    Text may be UTF-8 (with or without BOM) or UTF-16 with BOM (what Windows editors save).
    Aliases (``*name``) are refused before anything is constructed: a config never needs them
    and nested ones ("billion laughs") would take minutes and gigabytes to expand.
    """
    import yaml

    path = Path(path)
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError(f"config={path}: file not found; pass an existing file with "
                          "--config or create config.yaml") from None
    except OSError as exc:
        raise ConfigError(f"config={path}: cannot be read ({exc.strerror or exc})") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"config={path}: too large (over {MAX_CONFIG_BYTES} bytes); a "
                          "config.yaml is a few KiB of key: value lines")
    text = _decode_config(path, raw)
    try:
        loader = _no_alias_loader()(text)
        try:
            data = loader.get_single_data()
        finally:
            loader.dispose()
    except _AliasRefused as exc:
        raise ConfigError(f"config={path}: YAML aliases are not allowed ({exc}); write each "
                          "value out") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config={path}: cannot be read as YAML ({_first_line(exc)})") \
            from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config={path}: expected a mapping of key: value at the top level")
    known = {f.name for f in fields(Config)}
    for key in data:
        if key not in known:
            close = [k for k in known if k.replace("_", "") == str(key).replace("-", "")
                     .replace("_", "")]
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise ConfigError(f"{path}: unknown key {key!r}{hint}; allowed keys are listed in "
                              "the README and the shipped config.yaml")
    return data


def _decode_config(path, raw):
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        encoding = "utf-16"  # the BOM says which byte order
    elif b"\x00" in raw:
        raise ConfigError(f"config={path}: binary file (NUL bytes), not YAML text; pass "
                          "a config.yaml saved as UTF-8 text")
    else:
        encoding = "utf-8-sig"
    try:
        text = raw.decode(encoding)
    except UnicodeDecodeError as exc:
        kind = "binary file" if sum(b < 9 or 13 < b < 32 for b in raw[:4096]) > 8 else \
            f"not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start})"
        raise ConfigError(f"config={path}: {kind}; save the config as UTF-8 text") from None
    if any(c in text for c in "\x00\x01\x02\x03\x04\x05\x06\x07\x08\x0e\x0f\x7f"):
        raise ConfigError(f"config={path}: binary file (control bytes), not YAML text; pass "
                          "a config.yaml saved as UTF-8 text")
    return text


def _first_line(exc):
    lines = str(exc).strip().splitlines()
    return " ".join(lines[0].split()) if lines else type(exc).__name__


class _AliasRefused(Exception):
    pass


def _no_alias_loader():
    import yaml

    class NoAliasLoader(yaml.SafeLoader):
        """SafeLoader that refuses alias events while composing, before any expansion."""

        def compose_node(self, parent, index):
            if self.check_event(yaml.events.AliasEvent):
                event = self.peek_event()
                raise _AliasRefused(f"*{event.anchor} on line {event.start_mark.line + 1}")
            return super().compose_node(parent, index)

    return NoAliasLoader


# ---------------------------------------------------------------- command line

def build_parser():
    """The argparse parser: every option has default None so only typed options override."""
    p = argparse.ArgumentParser(
        prog="main.py", allow_abbrev=False, argument_default=None,
        usage="%(prog)s (-i PATH [PATH ...] | -l URL [URL ...]) [options]",
        description="VTrace: vocal separation that keeps the mix's space. Runs Demucs two-stem "
                    "separation (or reuses stems in separated/<model>/<track>/) and writes "
                    "<track>_blended.wav, <track>_vocal_residual.wav and "
                    "<track>_phase_cancel.wav per track.",
        epilog="Defaults come from config.yaml (see --config); options typed here override it. "
               "Exit codes: 0 ok, 1 a track failed, 2 usage error, 130 interrupted.")
    groups = {k: p.add_argument_group(v) for k, v in GROUPS.items()}
    groups["run"].add_argument("--config", metavar="PATH",
                               help="YAML file of defaults (default: ./config.yaml, else the "
                                    "shipped one)")
    groups["run"].add_argument("--version", action="version", version=f"VTrace {__version__}")
    for f in fields(Config):
        m = f.metadata
        if not m["cli"]:
            continue
        g = groups[m["group"]]
        long_names = [f"--{f.name}"]
        if "_" in f.name:
            long_names.append(f"--{f.name.replace('_', '-')}")
        names = list(m["flags"]) + long_names
        default = f.default_factory() if f.default is MISSING else f.default
        shown = "none" if default is None else default
        help_text = f"{m['help']} (default: {shown})"
        typ = _field_type(f)
        if typ is bool:
            if f.name == "align":
                g.add_argument("--no-align", "--no_align", dest="align", action="store_false",
                               default=None, help="skip the timing correction "
                                                  "(default: align)")
                continue
            g.add_argument(*names, dest=f.name, action=argparse.BooleanOptionalAction,
                           default=None, help=help_text)
        elif typ is list:
            g.add_argument(*names, dest=f.name, nargs="+", action="extend", metavar="PATH"
                           if f.name == "input" else "URL", help=help_text)
        else:
            kind = typ if typ in (int, float) else str
            g.add_argument(*names, dest=f.name, type=kind,
                           choices=m["choices"] if kind is str else None,
                           metavar=None if m["choices"] and kind is str else f.name.upper(),
                           help=help_text)
    return p


def load_config(argv=None):
    """Parse ``argv``, merge config.yaml, validate. Returns ``(Config, typed_keys, config_path)``.

    Raises ConfigError for bad values; argparse itself exits 2 on malformed options (handled by
    ``main``).
    """
    args = build_parser().parse_args(argv)
    typed = {k: v for k, v in vars(args).items() if v is not None and k != "config"}
    path = Path(args.config) if args.config else default_config_path()
    from_file = load_yaml(path) if (args.config or path.is_file()) else {}
    cfg = Config()
    for k, v in from_file.items():
        setattr(cfg, k, v)
    cfg.validate(source=str(path))
    if "vocal_gain_db" in typed and "blend_alpha" in typed:
        raise ConfigError("--vocal-gain-db and --blend-alpha were both given: they set the same "
                          "thing; keep one")
    if "blend_alpha" in typed:
        cfg.vocal_gain_db = None  # a typed alpha wins over a vocal gain from the file
    for k, v in typed.items():
        setattr(cfg, k, v)
    cfg.validate(source="command line")
    return cfg, set(typed), path
