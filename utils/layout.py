"""The separated/ layout: where a track's stems live.

The layout is Demucs' own: ``<separated_dir>/<model>/<track>/{vocals,no_vocals}.<ext>``.
VTrace writes it, reuses it when present, and accepts stems other tools placed there.

Plumbing: imports nothing from audio_utils/ or processors/.
"""

import json
import re
from pathlib import Path

from utils.atomic_files import is_temp, write_text_atomic
from utils.inputs import SOUNDFILE_EXTENSIONS

# Beside the stems VTrace writes: what they were separated from (the mix's content hash, the
# model and its settings) and the identity of each stem file as written.
STEMS_RECORD = "vtrace_stems.json"


# A --model value with one of these extensions is a python-audio-separator model file
# (RoFormer/MDX23C .ckpt, MDX-Net .onnx, VR .pth, Demucs .yaml); a bare name is a Demucs model.
AUDIO_SEPARATOR_EXTENSIONS = (".ckpt", ".onnx", ".pth", ".yaml")


def model_names(model):
    """The models of a ``--model`` value: ``"A,B"`` (an ensemble) is ``["A", "B"]``."""
    return [m.strip() for m in str(model).split(",")]


def is_audio_separator_model(name):
    return Path(name).suffix.lower() in AUDIO_SEPARATOR_EXTENSIONS


def model_folder(model):
    """The folder Demucs names after a model (``hf://org/name`` becomes ``org_name``); an
    audio-separator model file is named without its extension, and an ensemble ``A,B`` by its
    members' folders joined with ``+``."""
    names = model_names(model)
    if len(names) > 1:
        return "+".join(model_folder(n) for n in names)
    model = names[0]
    if is_audio_separator_model(model):
        model = Path(model).stem
    return model.replace("hf://", "").replace("/", "_")


# Stem names other tools write. Demucs: vocals / no_vocals (two-stem); Spleeter:
# accompaniment; UVR and python-audio-separator: "<track>_(Vocals)_<model>.wav" and
# "(Instrumental)", flat in their output folder or in the track's folder, UVR sometimes with a
# "1_" counter in front.
_VOCALS = ("vocals",)
_NO_VOCALS = ("no_vocals", "accompaniment")
_TAGGED_VOCALS = ("vocals",)
_TAGGED_NO_VOCALS = ("instrumental", "no vocals", "no_vocals", "accompaniment")
_TAGGED = re.compile(r"^(?P<head>.*)_\((?P<tag>[^()]*)\)(?:_.*)?$")  # greedy: the last "_("


def stem_paths(separated_dir, model, track):
    """``(vocals, no_vocals)`` paths of a track's stems if both are found, else None.

    Looked for, in this order: Demucs' ``<folder>/vocals.<ext>`` and ``no_vocals.<ext>``
    (Spleeter's ``accompaniment`` too), then UVR / audio-separator names
    ``<track>_(Vocals)[_model].<ext>`` and ``(Instrumental)`` in the track's folder or flat in
    the model's folder (any case, any soundfile extension, WAV first). ``looked_at`` lists
    the same places for messages.
    """
    folder = stems_folder(separated_dir, model, track)
    plain = [_first([folder / f"{n}{ext}" for n in names for ext in SOUNDFILE_EXTENSIONS])
             for names in (_VOCALS, _NO_VOCALS)]
    if all(plain):
        return tuple(plain)
    for where in (folder, folder.parent):
        tagged = [_tagged(where, track, tags) for tags in (_TAGGED_VOCALS, _TAGGED_NO_VOCALS)]
        if all(tagged):
            return tuple(tagged)
    return None


def layout_stems(separated_dir, model, track):
    """``{name: path}`` of the stems in Demucs' full layout, ``<folder>/<name>.<ext>`` (drums,
    bass, other, vocals[, guitar, piano], or any other tool's names), without the two-stem
    ``no_vocals`` / ``accompaniment``; WAV first when a stem has several files."""
    folder = stems_folder(separated_dir, model, track)
    found = {}
    if folder.is_dir():
        for p in sorted(folder.iterdir(), key=_layout_order):
            if p.stem in found or p.stem in _NO_VOCALS or p.stem.startswith(".") \
                    or _ext_rank(p) is None or is_temp(p) or not p.is_file():
                continue
            found[p.stem] = p
    return found


def find_stems(separated_dir, model, track, wanted=None):
    """The stems a job reads, ``{name: path}``, or None when the layout lacks one of them.

    ``wanted`` None: a two-stem job, ``{"vocals", "no_vocals"}`` from ``stem_paths``, else
    a full layout with vocals (Demucs' own four stems: no_vocals is then the others' sum).
    Else the names the job needs: every stem of the full layout is returned (the target's
    rest is the sum of the others) when all of ``wanted`` are there; a job that names vocals
    only takes the two stems when there is no full layout."""
    if wanted is None:
        found = stem_paths(separated_dir, model, track)
        if found is not None:
            return dict(zip(("vocals", "no_vocals"), found))
        wanted = ("vocals",)
        if len(layout_stems(separated_dir, model, track)) < 2:
            return None
    found = layout_stems(separated_dir, model, track)
    if len(found) > 1 and all(n in found for n in wanted):
        return found
    if set(wanted) <= {"vocals"}:  # a vocal job with gains: the two stems will do
        pair = stem_paths(separated_dir, model, track)
        return None if pair is None else dict(zip(("vocals", "no_vocals"), pair))
    return None


# Demucs' order of sources (htdemucs_6s); other tools' names follow alphabetically
_DEMUCS_ORDER = ("drums", "bass", "other", "vocals", "guitar", "piano")


def _layout_order(p):
    rank = _DEMUCS_ORDER.index(p.stem) if p.stem in _DEMUCS_ORDER else len(_DEMUCS_ORDER)
    return rank, p.stem, _ext_rank(p) if _ext_rank(p) is not None else 99


def _ext_rank(p):
    ext = p.suffix.lower()
    return SOUNDFILE_EXTENSIONS.index(ext) if ext in SOUNDFILE_EXTENSIONS else None


def looked_at(separated_dir, model, track, wanted=None):
    """The places ``find_stems`` searches, as patterns a user can read."""
    folder = stems_folder(separated_dir, model, track)
    if wanted is not None:
        return [f"{folder}/{name}.*" for name in wanted]
    return [f"{folder}/vocals.* + no_vocals.* (or accompaniment.*)",
            f"{folder}/*_(Vocals)*.* + *_(Instrumental)*.*",
            f"{folder.parent}/{track}_(Vocals)*.* + {track}_(Instrumental)*.*"]


def _first(paths):
    return next((p for p in paths if p.is_file()), None)


def _tagged(where, track, tags):
    """The file in ``where`` named ``[N_]<track>_(<tag>)[_...].<ext>`` (in the track's own
    folder the track prefix may be anything), WAV first."""
    if not where.is_dir():
        return None
    own = where.name == track
    found = []
    for p in where.iterdir():
        m = _TAGGED.match(p.stem)
        ext = p.suffix.lower()
        if m is None or ext not in SOUNDFILE_EXTENSIONS or m["tag"].lower() not in tags:
            continue
        head = m["head"]
        if not (own or head == track or _strip_counter(head) == track) or not p.is_file():
            continue
        found.append((SOUNDFILE_EXTENSIONS.index(ext), p.name, p))
    return min(found)[2] if found else None


def _strip_counter(head):
    number, sep, rest = head.partition("_")
    return rest if sep and number.isdigit() else None


def stems_folder(separated_dir, model, track):
    return Path(separated_dir) / model_folder(model) / track


def read_stems_record(folder):
    """The record VTrace wrote beside a folder's stems, or None (stems of another tool, or a
    record that cannot be read)."""
    try:
        record = json.loads((Path(folder) / STEMS_RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def write_stems_record(folder, record):
    write_text_atomic(Path(folder) / STEMS_RECORD, json.dumps(record, indent=2))


def remove_stems_record(folder):
    (Path(folder) / STEMS_RECORD).unlink(missing_ok=True)


# ---------------------------------------------------------------- outputs

# Where a track's outputs go, under the output folder: demucs' --filename convention. Models
# are kept apart by default, and blend settings in the template keep A/B runs side by side.
DEFAULT_FILENAME = "{model}/{track}/{track}_{output}.{ext}"
FILENAME_FIELDS = ("track", "model", "output", "ext", "blend_alpha", "vocal_gain_db",
                   "voice_alpha", "blend_mode")


def check_filename(template, **values):
    """ValueError saying what is wrong with an output file name template, formatted with
    ``values`` (the blend settings) and sample names."""
    import string

    try:
        names = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
    except ValueError as exc:
        raise ValueError(f"filename={template!r}: {exc}") from None
    unknown = sorted(n for n in names if n not in FILENAME_FIELDS)
    if unknown:
        raise ValueError(f"filename={template!r}: unknown field(s) {', '.join(unknown)}; "
                         f"allowed: {', '.join('{' + f + '}' for f in FILENAME_FIELDS)}")
    missing = [f for f in ("track", "output", "ext") if f not in names]
    if missing:
        raise ValueError(f"filename={template!r} needs {', '.join('{' + f + '}' for f in missing)}"
                         " so tracks and outputs never share a file")
    if not template.endswith(".{ext}"):
        raise ValueError(f"filename={template!r} must end with .{{ext}}")
    sample = OutputNames(Path("out"), template, "t", "m", values).path("blended", "wav")
    parts = sample.relative_to("out").parts if sample.is_relative_to("out") else ("..",)
    if Path(template).is_absolute() or ".." in parts:
        raise ValueError(f"filename={template!r} must stay inside the output folder")


def output_label(key, stem="vocals"):
    """The ``{output}`` name of render output ``key`` when the target is ``stem``: the vocal
    names as they always were, another stem's named after it (``guitar_blended``,
    ``guitar_residual``, ``guitar_phase_cancel``)."""
    if stem == "vocals":
        return key
    return {"blended": f"{stem}_blended", "vocal_residual": f"{stem}_residual",
            "phase_cancel": f"{stem}_phase_cancel"}.get(key, key)


class OutputNames:
    """The paths of one track's outputs: ``root / template.format(...)``."""

    def __init__(self, root, template, track, model, settings):
        self.root = Path(root)
        self.template = template
        self.values = {"track": track, "model": model_folder(model),
                       **{k: ("none" if v is None else v) for k, v in settings.items()
                          if k in FILENAME_FIELDS}}

    def path(self, output, ext):
        return self.root / self.template.format(**self.values, output=output, ext=ext)

    @property
    def manifest(self):
        return self.path("vtrace", "json")

    @property
    def folder(self):
        return self.manifest.parent

    def relative(self, path):
        return Path(path).relative_to(self.root).as_posix()
