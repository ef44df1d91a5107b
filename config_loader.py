"""VTrace's one configuration: the ``Config`` dataclass, ``config.yaml`` and the command line.

Precedence: dataclass defaults < config.yaml < options the user typed. argparse defaults are
all None, so an option left out never overrides the file. ``Config.validate()`` does every
check in one place, with messages that say ``name=value``, what is allowed and how to fix it.
"""

import argparse
import difflib
import math
import re
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path

from utils.errors import ConfigError, UsageError
from utils.version import __version__

GROUPS = {
    "input": "input",
    "separation": "separation (Demucs)",
    "blend": "blend and residual",
    "stem": "target stem, rebalance and MIDI",
    "output": "output",
    "evaluation": "evaluation",
    "run": "run",
}

BLEND_MODES = ("linear", "exp", "log", "power", "smoothstep", "gate")
REPAIR_MODES = ("none", "wiener", "project")  # = processors.repair.MODES (tested)
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")

# Settings for common jobs (README: Presets). Applied over config.yaml; a typed option wins.
PRESETS = {
    # karaoke with a faint guide vocal: the instrumental, the vocal 24 dB down
    "guide-vocal": {"vocal_gain_db": -24.0, "blend_mode": "linear", "match_loudness": False},
    # the song with its vocal 6 dB down, as loud as the original
    "vocal-down": {"vocal_gain_db": -6.0, "blend_mode": "linear", "match_loudness": True},
    # clean acapella / dataset extraction: the residual vocal, its bass bleed (what the model
    # left out below 80 Hz) returned to the instrumental, gaps gated, float32 to stay exact
    "acapella": {"voice_alpha": 1.0, "residual_hpf": 80.0, "gate_threshold_db": -50.0,
                 "wav_format": "float32"},
}
DEVICES = ("auto", "cpu", "cuda", "mps")
_STEM_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
DERIVED_STEMS = ("no_vocals", "accompaniment")  # two-stem files, not stems of a model
MAX_STEM_GAIN_DB = 40.0  # beyond this a stem's bleed in the others becomes the mix


ROLES = ("stems", "outputs", "run")


# config.yaml keys of earlier releases -> today's names (read as the new key)
RENAMED_KEYS = {"demucs_model": "model"}


def opt(role, default, group, help, flags=(), choices=None, lo=None, hi=None, typ=None,
        nullable=False, cli=True, lo_open=False, shown=None, joined=False):
    """Field metadata: what the field decides, help text, CLI flags, allowed values.

    ``joined``: the option may be repeated on the command line, its values joined with commas
    (``--model A --model B`` is ``A,B``); the field stays one text value.

    ``role`` says what a change of the value means: ``stems`` (the separation: other stems),
    ``outputs`` (what is written from the stems: other output files) or ``run`` (only how the
    run goes: where, how fast, how verbose). The resume key, the manifest's ``params`` and the
    separator's arguments are derived from it (``Config.settings``).
    """
    if role not in ROLES:
        raise ValueError(f"role={role!r}; use one of {', '.join(ROLES)}")
    meta = dict(role=role, group=group, help=help, flags=tuple(flags), choices=choices, lo=lo,
                hi=hi, typ=typ, nullable=nullable, cli=cli, lo_open=lo_open, shown=shown,
                joined=joined)
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
    model: str = opt("stems", "htdemucs_ft", "separation", "Demucs model name, or an "
                     "audio-separator model file (RoFormer .ckpt, e.g. "
                     "model_bs_roformer_ep_317_sdr_12.9755.ckpt; sota extra), or several "
                     "joined with commas (or --model repeated): their stems averaged; or the "
                     "name of a folder holding other tools' stems in the separated layout",
                     flags=("-n", "--demucs-model", "--demucs_model"), joined=True)
    model_repo: str = opt("stems", None, "separation", "local folder of the model files (Demucs "
                          ".th/.yaml like demucs --repo; audio-separator .ckpt + .yaml); no "
                          "download", typ=str, nullable=True)
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
    precision: str = opt("stems", "float32", "separation", "Demucs arithmetic: float32 (equal to "
                         "demucs), bfloat16 (autocast; CPU needs native bf16, AVX512-BF16/AMX, "
                         "else refused) or auto (bfloat16 only where measured faster)",
                         choices=("float32", "bfloat16", "auto"))
    separated_dir: str = opt("run", "separated", "separation", "where stems live: "
                             "<separated_dir>/<model>/<track>/{vocals,no_vocals}.wav")
    force: bool = opt("run", False, "separation", "recompute the outputs even if they are current "
                      "(existing stems are reused; --reseparate separates again)")
    reseparate: bool = opt("run", False, "separation", "separate again even if stems exist (then "
                           "recompute the outputs)")
    cleanup: bool = opt("run", False, "separation", "delete the separations this run created once the "
                        "track's outputs are written")
    # blend
    preset: str = opt("run", None, "blend", "settings for a common job, applied over config.yaml "
                      "(typed options win): guide-vocal (karaoke, vocal -24 dB), vocal-down "
                      "(vocal -6 dB, same loudness), acapella (clean residual vocal)",
                      choices=tuple(PRESETS), typ=str, nullable=True)
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
    repair: str = opt("outputs", "project", "blend", "give the part of the mix that neither stem "
                      "holds (O - Vm - I) to the stem it belongs to before the arithmetic: none "
                      "(the stems as they are), wiener (split by the stems' power), project "
                      "(first what looks like either stem, then wiener); see README Repair",
                      choices=REPAIR_MODES)
    align: bool = opt("outputs", True, "blend", "estimate and remove the stems' offset and polarity against "
                      "the original (--no-align skips it)")
    # target stem, rebalance, MIDI (README: Any stem, rebalance and MIDI)
    target_stem: str = opt("outputs", "vocals", "stem", "the stem the three outputs are about: "
                           "its blend (turned down by the blend weight), its residual (O - "
                           "rest) and the phase-cancel rest; another stem than vocals reads the "
                           "model's full layout (drums, bass, other, vocals; guitar, piano with "
                           "htdemucs_6s)", typ=str)
    stem_gain: list = opt("outputs", [], "stem", "NAME=DB ...: also write <track>_rebalanced.wav, "
                          "the original with each named stem changed by DB (e.g. vocals=-20 "
                          "bass=+3 drums=-inf); reads the model's full layout")
    midi: bool = opt("outputs", False, "stem", "also write <track>_<stem>.mid, the target "
                     "stem's melody from its residual (pYIN; needs the midi extra)")
    # output
    filename: str = opt("outputs", "{model}/{track}/{track}_{output}.{ext}", "output",
                        "where each output goes under the output folder; fields {track}, "
                        "{model}, {output}, {ext}, {blend_alpha}, {vocal_gain_db}, "
                        "{voice_alpha}, {blend_mode} (e.g. {track}/{output}_a{blend_alpha}.{ext} "
                        "keeps A/B runs side by side)")
    output: str = opt("run", None, "output", "output folder", flags=("-o",), typ=str,
                      nullable=True, shown="vtrace_output/ beside the first input")
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
    thread: int = opt("run", 1, "run", "tracks at once: this process plus N-1 worker processes it "
                      "starts, each loading the model", flags=("-t", "-T"), lo=1, hi=64)
    log_level: str = opt("run", "INFO", "run", "console log level",
                         choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    log_dir: str = opt("run", "logs", "run", "folder for the per-run DEBUG log files")
    log_keep: int = opt("run", 20, "run", "how many run logs to keep in log_dir (older ones are "
                        "deleted)", lo=1, hi=100000)
    quiet: bool = opt("run", False, "run", "only warnings and errors on the console, no progress bars")
    block_seconds: float = opt("run", 2.0, "run", "post-processing block length (memory vs speed)",
                               lo=0.5, hi=600)
    # cluster (README: On a Ray cluster)
    ray: str = opt("run", None, "run", "run the batch on a Ray cluster: local (a Ray instance "
                   "started by this run), auto (the cluster started with `ray start` here, or "
                   "RAY_ADDRESS) or ray://HOST:10001; inputs, outputs and stems on storage every "
                   "node sees", typ=str, nullable=True, shown="off: no Ray")
    ray_workers: int = opt("run", None, "run", "with --ray: Ray actors, each loading the model "
                           "once; none: as many as the cluster's CPUs/GPUs hold", lo=1,
                           hi=100000, typ=int, nullable=True)
    ray_cpus_per_worker: int = opt("run", 1, "run", "with --ray: CPUs each actor reserves; torch "
                                   "gets this many threads", lo=1, hi=1024)
    ray_gpus_per_worker: float = opt("run", 0.0, "run", "with --ray: GPUs each actor reserves "
                                     "(0: CPU actors; 0.5: two actors share a GPU)", lo=0, hi=64)
    dataset_manifest: str = opt("run", None, "run", "also write one JSON line per finished track "
                                "(input, outputs, duration, sample rate, offset, polarity, gain, "
                                "metrics) to this .jsonl file, for training pipelines", typ=str,
                                nullable=True)

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
        self.stem_gains()  # NAME=DB syntax
        if not _STEM_NAME.match(self.target_stem) or self.target_stem in DERIVED_STEMS:
            raise ConfigError(f"target_stem={self.target_stem!r}: expected the name of one of "
                              "the model's stems (vocals, drums, bass, other, guitar, piano, "
                              "...), lowercase as in its stem files")
        from utils.layout import check_filename

        try:
            check_filename(self.filename, **self.settings("outputs"))
        except (ValueError, KeyError, IndexError) as exc:
            raise ConfigError(str(exc)) from None
        from utils.layout import model_names

        if not all(model_names(self.model)):
            raise ConfigError(f"model={self.model!r}: an empty model name; give one name, or "
                              "several joined with commas (A,B)")
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

    def stem_gains(self):
        """``--stem-gain`` as ``{stem: dB}`` (``-inf`` mutes); ConfigError for an entry that
        is not ``NAME=DB`` or a stem named twice."""
        gains = {}
        for entry in self.stem_gain:
            name, sep, value = str(entry).partition("=")
            name = name.strip()
            try:
                db = float(value)
            except ValueError:
                db = math.nan
            if not sep or not _STEM_NAME.match(name) or name in DERIVED_STEMS \
                    or math.isnan(db) or db > MAX_STEM_GAIN_DB:
                raise ConfigError(f"stem_gain={entry!r}: expected NAME=DB with a stem name and a "
                                  f"gain in dB up to +{MAX_STEM_GAIN_DB:g} (-inf mutes), e.g. "
                                  "--stem-gain vocals=-20 bass=+3")
            if name in gains:
                raise ConfigError(f"stem_gain names {name} twice; give each stem one gain")
            gains[name] = db
        return gains

    def multi_stem(self):
        """Whether the job reads the model's full layout (a target other than vocals, or
        stem gains) instead of the two-stem vocals + no_vocals."""
        return self.target_stem != "vocals" or bool(self.stem_gain)

    def named_stems(self):
        """The stems the job names: the target, then those with a gain."""
        return list(dict.fromkeys([self.target_stem, *self.stem_gains()]))

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
    for old, new in RENAMED_KEYS.items():  # configs written for an earlier VTrace still load
        if old in data:
            if new in data:
                raise ConfigError(f"{path}: both {old!r} and {new!r} are set; keep {new!r} "
                                  f"({old!r} is its earlier name)")
            data[new] = data.pop(old)
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

class _Formatter(argparse.HelpFormatter):
    """Help with one spelling per option (the others are accepted, not listed)."""

    def __init__(self, prog):
        super().__init__(prog, max_help_position=32, width=100)

    def _format_action_invocation(self, action):
        shown = getattr(action, "shown", None)
        if not shown:
            return super()._format_action_invocation(action)
        if action.nargs == 0:
            return ", ".join(shown)
        value = self._format_args(action, self._get_default_metavar_for_optional(action))
        return ", ".join(shown) + " " + value


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        """argparse's errors become UsageError (one format, exit 2), with a suggestion for an
        option that looks like a typo."""
        if message.startswith("unrecognized arguments:"):
            known = [s for a in self._actions for s in a.option_strings]
            for token in message.split(":", 1)[1].split():
                close = difflib.get_close_matches(token.split("=")[0], known, n=1, cutoff=0.6)
                if token.startswith("-") and close:
                    message = f"unknown option {token}: did you mean {_preferred(close[0])}?"
                    break
        raise UsageError(f"{message} (vtrace --help lists the options)")


class _Joined(argparse.Action):
    """A repeated option's values joined with commas (see ``opt(joined=True)``)."""

    def __call__(self, parser, namespace, values, option_string=None):
        before = getattr(namespace, self.dest, None)
        setattr(namespace, self.dest, values if before is None else f"{before},{values}")


def _preferred(flag):
    return flag.replace("_", "-") if flag.startswith("--") else flag


def build_parser():
    """The argparse parser: every option has default None so only typed options override."""
    p = _Parser(
        prog="vtrace", allow_abbrev=False, argument_default=None, formatter_class=_Formatter,
        usage="%(prog)s [options] FILE|FOLDER|URL ...",
        description="VTrace: vocal separation that keeps the mix's space. Runs Demucs two-stem "
                    "separation (or reuses stems in separated/<model>/<track>/) and writes "
                    "<track>_blended.wav, <track>_vocal_residual.wav and "
                    "<track>_phase_cancel.wav per track. Audio files, folders and links "
                    "(anything with ://) can be mixed: vtrace song.mp3 album/ "
                    "https://youtu.be/ID",
        epilog="Defaults come from config.yaml (see --config); options typed here override it. "
               "Exit codes: 0 ok, 1 a track failed, 2 usage error, 130 interrupted, 143 terminated.")
    p.add_argument("items", nargs="*", metavar="FILE|FOLDER|URL",
                   help="audio files, folders of them, and links, in any mix")
    groups = {k: p.add_argument_group(v) for k, v in GROUPS.items()}
    groups["run"].add_argument("--config", metavar="PATH",
                               help="YAML file of defaults (default: ./config.yaml, else the "
                                    "shipped one)")
    groups["run"].add_argument("--version", action="version", version=f"VTrace {__version__}")
    groups["separation"].add_argument(
        "--list-models", action="store_true", default=None,
        help="list the Demucs models, their files and where they go, and exit")
    groups["separation"].add_argument(
        "--fetch-model", metavar="NAME",
        help="download model NAME's files into --model-repo DIR for offline runs, and exit")
    web = p.add_argument_group("web page (needs the web extra)")
    web.add_argument("--web", action="store_true", default=None,
                     help="serve the web page (config.yaml gives its initial settings); prints "
                          "its URL and runs until Ctrl-C")
    web.add_argument("--host", metavar="ADDRESS",
                     help="address the page listens on (default: 127.0.0.1, this machine only; "
                          "0.0.0.0 serves every interface, with a warning)")
    web.add_argument("--port", type=int, metavar="N", help="port of the page (default: 7860)")
    web.add_argument("--share", action="store_true", default=None,
                     help="also ask Gradio for a public share link (default: off)")
    web.add_argument("--web-upload-mb", type=float, metavar="MB",
                     help="largest upload accepted by the page, in MB (default: 200)")
    web.add_argument("--web-session-minutes", type=float, metavar="MINUTES",
                     help="a session's files are deleted after this long idle, and all of them "
                          "on shutdown (default: 60)")
    for f in fields(Config):
        m = f.metadata
        if not m["cli"]:
            continue
        g = groups[m["group"]]
        dashed = f"--{f.name.replace('_', '-')}"
        long_names = [dashed] + ([f"--{f.name}"] if "_" in f.name else [])
        shorts = [s for s in m["flags"] if not s.startswith("--")]
        names = shorts + long_names + [s for s in m["flags"] if s.startswith("--")]
        default = f.default_factory() if f.default is MISSING else f.default
        shown = m["shown"] or ("none" if default in (None, []) else default)
        if isinstance(shown, bool):
            shown = "on" if shown else "off"
        allowed = _allowed(f) if m["lo"] is not None or m["hi"] is not None else ""
        help_text = f"{m['help']} ({allowed + '; ' if allowed else ''}default: {shown})"
        typ = _field_type(f)
        if typ is bool:
            action = g.add_argument(*names, dest=f.name, action=argparse.BooleanOptionalAction,
                                    default=None, help=help_text)
            action.shown = [f"--[no-]{dashed[2:]}"]
            continue
        if typ is list:
            action = g.add_argument(*names, dest=f.name, nargs="+", action="extend",
                                    metavar={"input": "PATH", "stem_gain": "NAME=DB"}.get(
                                        f.name, "URL"),
                                    help=help_text)
        else:
            kind = typ if typ in (int, float) else str
            action = g.add_argument(*names, dest=f.name, type=kind, choices=m["choices"],
                                    metavar=None if m["choices"] else _metavar(f.name),
                                    help=help_text, **({"action": _Joined} if m["joined"] else {}))
        action.shown = shorts[:1] + [dashed]
    return p


def _metavar(name):
    special = {"blend_alpha": "A", "voice_alpha": "A", "thread": "N", "shifts": "N",
               "filter_order": "N", "gamma": "G", "overlap": "FRACTION", "output": "DIR",
               "reference": "DIR", "max_duration": "SECONDS", "segment": "SECONDS",
               "residual_hpf": "HZ", "residual_lpf": "HZ", "mp3_bitrate": "KBPS",
               "ray": "ADDRESS", "ray_workers": "N", "ray_cpus_per_worker": "C",
               "ray_gpus_per_worker": "G", "dataset_manifest": "PATH.jsonl",
               "target_stem": "NAME"}
    return special.get(name, name.split("_")[-1].upper())


ACTIONS = ("list_models", "fetch_model", "web")  # options that do one thing and exit
WEB_OPTIONS = ("host", "port", "share", "web_upload_mb", "web_session_minutes")  # --web only


def requested_action(argv):
    """``("list_models", True)``, ``("fetch_model", NAME)``, ``("web", {option: value})``
    (None for an option not typed) or None."""
    args = build_parser().parse_args(argv)
    found = next(((k, getattr(args, k)) for k in ACTIONS if getattr(args, k)), None)
    if found and found[0] == "web":
        return "web", {k: getattr(args, k) for k in WEB_OPTIONS}
    return found


def load_config(argv=None):
    """Parse ``argv``, merge config.yaml, validate. Returns ``(Config, typed_keys, config_path)``.

    Raises ConfigError for bad values; argparse itself exits 2 on malformed options (handled by
    ``main``).
    """
    args = build_parser().parse_args(argv)
    typed = {k: v for k, v in vars(args).items()
             if v is not None and k not in ("config", "items") + ACTIONS + WEB_OPTIONS}
    stray = [k for k in WEB_OPTIONS if getattr(args, k) is not None]
    if stray and not args.web:
        raise UsageError(f"--{stray[0].replace('_', '-')} applies to the web page only: add --web")
    if args.fetch_model is not None:
        if not args.model_repo:
            raise UsageError(f"--fetch-model {args.fetch_model} needs --model-repo DIR: the "
                             "folder to put the model's files in")
        Path(args.model_repo).mkdir(parents=True, exist_ok=True)
    for item in args.items or []:  # positional: links by their scheme, the rest are paths
        key = "link" if _URL.match(item) else "input"
        typed[key] = typed.get(key, []) + [item]
    path = Path(args.config) if args.config else default_config_path()
    from_file = load_yaml(path) if (args.config or path.is_file()) else {}
    cfg = Config()
    for k, v in from_file.items():
        setattr(cfg, k, v)
    cfg.validate(source=str(path))
    preset = typed.get("preset", cfg.preset)
    if preset is not None:  # over config.yaml, under what was typed
        for k, v in PRESETS[preset].items():
            setattr(cfg, k, v)
    if "vocal_gain_db" in typed and "blend_alpha" in typed:
        raise ConfigError("--vocal-gain-db and --blend-alpha were both given: they set the same "
                          "thing; keep one")
    if "blend_alpha" in typed:
        cfg.vocal_gain_db = None  # a typed alpha wins over a vocal gain from the file
    for k, v in typed.items():
        setattr(cfg, k, v)
    cfg.validate(source="command line")
    return cfg, set(typed), path
