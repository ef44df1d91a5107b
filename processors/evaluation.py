"""Per-track evaluation (``--eval``): metrics against the model stems and, optionally, true stems.

All signals are float32 ``(channels, samples)`` at one sample rate, taken before any encoding.
Metric values are floats or None; every None has its reason under the report's "undefined"
map (key ``"<group>.<output>.<metric>"``), so nothing is guessed and nothing raises for a silent
or too-short signal.

Batch CSV columns (``CSV_COLUMNS``, one row per track, empty cell = undefined):
``track, eval_seconds, duration_s, sample_rate, vocal_gain, vocal_change_db,
vocal_change_expected_db``; ``model_<output>_<metric>`` for output in phase_cancel (vs model
instrumental), voice (vs model vocals), blended (vs original) and metric in mse, cosine, stoi,
estoi (only the one asked for is filled); ``ref_vocal_change_db``; ``ref_<output>_<metric>``
for output in phase_cancel, voice, blended, model_instrumental, model_vocals (vs the true
stems) with mse, cosine, stoi, estoi, sdr, si_sdr and, except blended, sir, sar, then
``sdr_museval`` (museval 0.4 v4: median over 1 s windows) and ``usdr`` (global SDR, no
filter); ``ref_<output>_<m>_gain`` for output phase_cancel (vs model_instrumental) and voice
(vs model_vocals), m in sdr, sdr_museval, usdr: the output's score minus the model stem's;
``undefined`` ("key: reason; ..." for every undefined value).
"""

import csv
import json
import logging
import math
import time
from pathlib import Path

import numpy as np

from audio_utils import metrics as em
from audio_utils.audio_checks import check_audio
from audio_utils.audio_io import read_audio
from utils.atomic_files import atomic_path
from utils.errors import InputError
from utils.inputs import SOUNDFILE_EXTENSIONS

logger = logging.getLogger(__name__)

SIGNAL_KEYS = ("original", "blended", "voice", "phase_cancel", "model_instrumental",
               "model_vocals")

# output -> (what it is compared with among the model stems)
MODEL_PAIRS = {"phase_cancel": "model_instrumental", "voice": "model_vocals",
               "blended": "original"}
# output -> what it is compared with among the true stems ("blend_target" = acc + w*vocals)
REFERENCE_PAIRS = {"phase_cancel": "accompaniment", "voice": "vocals",
                   "blended": "blend_target", "model_instrumental": "accompaniment",
                   "model_vocals": "vocals"}
_BASIC = ("mse", "cosine", "stoi", "estoi")
_BSS = ("sdr", "si_sdr", "sir", "sar")  # blended has one source: no SIR/SAR
_PUBLISHED = ("sdr_museval", "usdr")  # museval v4 (median of 1 s windows), global uSDR
# VTrace's output -> the model's own stem it repairs; gain = output's score - the stem's
GAIN_PAIRS = {"phase_cancel": "model_instrumental", "voice": "model_vocals"}
_GAINS = ("sdr", "sdr_museval", "usdr")

CSV_COLUMNS = (
    ["track", "eval_seconds", "duration_s", "sample_rate", "vocal_gain",
     "vocal_change_db", "vocal_change_expected_db"]
    + [f"model_{out}_{m}" for out in MODEL_PAIRS for m in _BASIC]
    + ["ref_vocal_change_db"]
    + [f"ref_{out}_{m}" for out in REFERENCE_PAIRS
       for m in _BASIC + (_BSS[:2] if out == "blended" else _BSS)]
    + [f"ref_{out}_{m}" for out in REFERENCE_PAIRS for m in _PUBLISHED]
    + [f"ref_{out}_{m}_gain" for out in GAIN_PAIRS for m in _GAINS]
    + ["undefined"]
)


def evaluate_track(signals: dict, sr: int, reference: dict | None = None,
                   estoi: bool = False, vocal_gain: float | None = None) -> dict:
    """Evaluate one track's outputs; returns a JSON-ready report dict.

    Args:
        signals: float32 (channels, samples) arrays, all the same shape, under the keys
            ``SIGNAL_KEYS``: original, blended (w*O + (1-w)*I), voice (vocal output),
            phase_cancel (O - V), model_instrumental (I), model_vocals.
        sr: sample rate of ``signals`` in Hz.
        reference: ``find_reference``'s result (true stems) or None.
        estoi: report extended STOI (key "estoi") instead of STOI (key "stoi").
        vocal_gain: the blend weight w; gives the expected vocal change 20*log10(w) and the
            true blend target accompaniment + w*vocals. None leaves those undefined.

    Returns:
        {"sample_rate", "duration_s", "vocal_gain", "stoi_kind", "vocal_change_db",
        "vocal_change_expected_db", "model": {output: {"against", metrics...}},
        "reference": None or {"layout", "files", "vocal_change_db", output: {...}},
        "undefined": {"group.output.metric": reason}, "eval_seconds"}.
    """
    started = time.perf_counter()
    missing = [k for k in SIGNAL_KEYS if k not in signals]
    if missing:
        raise InputError(f"evaluate_track: missing signals={missing}; give all of "
                         f"{list(SIGNAL_KEYS)}")
    shape = check_audio(signals["original"], "original").shape
    if shape[1] == 0:
        raise InputError("evaluate_track: original has samples=0; nothing to evaluate (an "
                         "empty input should have been rejected before separation)")
    for key in SIGNAL_KEYS:
        if check_audio(signals[key], key).shape != shape:
            raise InputError(f"evaluate_track: {key} shape={signals[key].shape} differs from "
                             f"original shape={shape}; all outputs must be the same length")
    ev = _Evaluator(sr, estoi)
    report = {"sample_rate": sr, "duration_s": round(shape[1] / sr, 3),
              "vocal_gain": vocal_gain, "stoi_kind": ev.kind}
    # against the instrumental the blend was made from (repaired, if it was), else the model's
    blend_base = signals.get("blend_instrumental", signals["model_instrumental"])
    report["vocal_change_db"] = ev.value(em.vocal_level_change_db(
        signals["blended"], signals["original"], blend_base), "model.vocal_change_db")
    report["vocal_change_expected_db"] = ev.expected_change(vocal_gain)
    report["model"] = ev.compare("model", list(MODEL_PAIRS.items()), signals, None)
    report["reference"] = None
    if reference is not None:
        try:
            report["reference"] = _against_reference(ev, signals, sr, reference, vocal_gain)
        except InputError as exc:  # unusable true stems should not fail the track's outputs
            logger.warning("reference metrics skipped: %s", exc)
            ev.undefined["reference"] = str(exc)
    report["undefined"] = ev.undefined
    report["eval_seconds"] = round(time.perf_counter() - started, 3)
    return report


class _Evaluator:
    """Collects undefined-metric reasons and shares 10 kHz STOI signals across comparisons."""

    def __init__(self, sr: int, estoi: bool):
        self.sr, self.estoi = sr, estoi
        self.kind = "estoi" if estoi else "stoi"
        self.undefined: dict[str, str] = {}
        self._stoi_signals: dict[str, np.ndarray] = {}

    def value(self, score: em.Score, key: str) -> float | None:
        if not score.defined:
            self.undefined[key] = score.reason
        return score.value

    def expected_change(self, vocal_gain: float | None) -> float | None:
        if vocal_gain is None:
            self.undefined["vocal_change_expected_db"] = "vocal_gain not given"
            return None
        if vocal_gain <= 0:
            self.undefined["vocal_change_expected_db"] = (f"vocal_gain={vocal_gain}: no "
                                                          "vocal left, -inf dB")
            return None
        return 20.0 * math.log10(vocal_gain)

    def _for_stoi(self, name: str, pool: dict) -> np.ndarray:
        if name not in self._stoi_signals:
            self._stoi_signals[name] = em.for_stoi(pool[name], self.sr)
        return self._stoi_signals[name]

    def compare(self, group: str, pairs: list, pool: dict, bss: dict | None) -> dict:
        """Metrics of each (output, against) pair of ``pool`` signals; STOI grouped by target."""
        stoi = {}
        for against in dict.fromkeys(a for _, a in pairs):
            outs = [o for o, a in pairs if a == against]
            scores = em.stoi_many(self._for_stoi(against, pool),
                                  [self._for_stoi(o, pool) for o in outs], em.STOI_RATE,
                                  extended=self.estoi)
            stoi.update(zip(outs, scores))
        result = {}
        for out, against in pairs:
            base = em.basic_metrics(pool[against], pool[out])
            key = f"{group}.{out}"
            row = {"against": against, "mse": self.value(base["mse"], f"{key}.mse"),
                   "cosine": self.value(base["cosine"], f"{key}.cosine"),
                   self.kind: self.value(stoi[out], f"{key}.{self.kind}")}
            if bss is not None:
                row["si_sdr"] = self.value(base["si_sdr"], f"{key}.si_sdr")
                for metric, score in bss[out].items():
                    row[metric] = self.value(score, f"{key}.{metric}")
            result[out] = row
        return result


def _against_reference(ev: _Evaluator, signals, sr, reference, vocal_gain):
    truth = _match_reference(reference, sr, signals["original"].shape)
    out = {"layout": reference.get("layout"), "files": reference.get("files"),
           "length_mismatch_samples": truth.pop("length_mismatch")}
    pool = dict(signals, **truth)
    pairs = [(o, a) for o, a in REFERENCE_PAIRS.items() if a != "blend_target"]
    refs = [truth["vocals"], truth["accompaniment"]]
    sets = [[signals["voice"], signals["phase_cancel"]],
            [signals["model_vocals"], signals["model_instrumental"]]]
    mixtures = []
    if vocal_gain is not None:
        pool["blend_target"] = (truth["accompaniment"] + np.float32(vocal_gain)
                                * truth["vocals"]).astype(np.float32)
        pairs.append(("blended", "blend_target"))
        mixtures = [((float(vocal_gain), 1.0), signals["blended"])]  # acc + w*vocals
    else:
        ev.undefined["reference.blended"] = "vocal_gain not given: the true blend is unknown"
    results = em.bss_eval(refs, *sets, mixtures=mixtures)
    bss = {"voice": {m: s[0] for m, s in results[0].items()},
           "phase_cancel": {m: s[1] for m, s in results[0].items()},
           "model_vocals": {m: s[0] for m, s in results[1].items()},
           "model_instrumental": {m: s[1] for m, s in results[1].items()}}
    if mixtures:
        bss["blended"] = {"sdr": results[2]["sdr"][0]}
    # scores as published: museval v4 (the two sources together, as MUSDB evaluates them:
    # a window where any is silent is left out) and uSDR
    window = int(sr)  # museval's 1 s (44100 samples at 44.1 kHz)
    for outs in (("voice", "phase_cancel"), ("model_vocals", "model_instrumental")):
        scores = em.sdr_museval(refs, [signals[o] for o in outs], window, window)
        for o, score in zip(outs, scores):
            bss[o]["sdr_museval"] = score
    if mixtures:
        bss["blended"]["sdr_museval"] = em.sdr_museval(
            [pool["blend_target"]], [signals["blended"]], window, window)[0]
    for o, against in pairs:
        bss[o]["usdr"] = em.usdr(pool[against], signals[o])
    out.update(ev.compare("reference", pairs, pool, bss))
    for o, model in GAIN_PAIRS.items():  # the change against the model's own stem
        for m in _GAINS:
            a, b = out[o].get(m), out[model].get(m)
            key = f"reference.{o}.{m}_gain"
            if a is None or b is None:
                ev.undefined[key] = f"{m} of {o} or of {model} is undefined"
                out[o][f"{m}_gain"] = None
            else:
                out[o][f"{m}_gain"] = a - b
    out["vocal_change_db"] = ev.value(em.vocal_level_change_db(
        signals["blended"], signals["original"], truth["accompaniment"]),
        "reference.vocal_change_db")
    return out


def _match_reference(reference: dict, sr: int, shape: tuple) -> dict:
    """True stems resampled to ``sr`` and trimmed/padded to ``shape``; never guesses layout."""
    import soxr

    out = {}
    for key in ("vocals", "accompaniment"):
        x = check_audio(reference[key], f"reference {key}")
        if x.shape[0] != shape[0]:
            raise InputError(f"reference {key} has channels={x.shape[0]} but the outputs have "
                             f"{shape[0]}; give true stems with the same channel count")
        if reference["sr"] != sr:
            logger.info("resampling reference %s from %d to %d Hz", key, reference["sr"], sr)
            x = soxr.resample(x.T, reference["sr"], sr).T.astype(np.float32)
        out[key] = x
    n = out["vocals"].shape[1]
    if out["accompaniment"].shape[1] != n:
        raise InputError(f"reference stems differ in length: vocals={n}, accompaniment="
                         f"{out['accompaniment'].shape[1]} samples; they must be one song")
    out["length_mismatch"] = n - shape[1]
    if n != shape[1]:
        logger.warning("reference length differs from the outputs by %d samples; trimming "
                       "or zero-padding the reference to match", n - shape[1])
        for key in ("vocals", "accompaniment"):
            x = out[key][:, :shape[1]]
            out[key] = np.pad(x, ((0, 0), (0, shape[1] - x.shape[1])))
    return out


def find_reference(reference_dir: Path, track: str, target: str = "vocals") -> dict | None:
    """Load true stems of ``track`` from ``<reference_dir>/<track>/``, or None if absent.

    Layouts, first match wins: vocals.* + accompaniment.*; vocals.* + no_vocals.*; vocals.* +
    drums.* + bass.* + other.* (MUSDB; summed into the accompaniment). Any extension in
    ``SOUNDFILE_EXTENSIONS``. With another ``target`` stem (``--target-stem``), ``<target>.*``
    takes the vocals' place and the accompaniment is every other stem of the folder summed
    (``accompaniment``, ``no_vocals`` and a ``mixture`` left out).

    Returns:
        {"vocals", "accompaniment": float32 (channels, samples), "sr": int, "layout": str,
        "files": [names]} or None when the folder or a needed stem is missing.
    """
    folder = Path(reference_dir) / track
    if not folder.is_dir():
        logger.info("no reference folder for %s at %s", track, folder)
        return None
    stems = {p.stem.lower(): p for p in sorted(folder.iterdir())
             if p.suffix.lower() in SOUNDFILE_EXTENSIONS and p.is_file()}
    layouts = [("accompaniment", ["accompaniment"]), ("no_vocals", ["no_vocals"]),
               ("drums+bass+other", ["drums", "bass", "other"])]
    if target != "vocals":
        rest = [k for k in stems if k not in (target, "accompaniment", "no_vocals", "mixture")]
        layouts = [(f"{target}+" + "+".join(rest), rest)] if rest else []
    if target not in stems:
        logger.warning("reference %s has no %s.* stem; skipping reference metrics", folder,
                       target)
        return None
    for layout, parts in layouts:
        if all(p in stems for p in parts):
            vocals, sr = _load(stems[target])
            loaded = [_load(stems[p]) for p in parts]
            if any(s != sr for _, s in loaded) or any(a.shape != vocals.shape
                                                      for a, _ in loaded):
                raise InputError(f"reference stems in {folder} differ in sample rate or "
                                 "shape; they must come from one song at one rate")
            accompaniment = np.sum([a for a, _ in loaded], axis=0, dtype=np.float32)
            return {"vocals": vocals, "accompaniment": accompaniment, "sr": sr,
                    "layout": layout, "files": [stems[p].name for p in [target] + parts]}
    logger.warning("reference %s has no accompaniment.*, no_vocals.* or drums+bass+other; "
                   "skipping reference metrics", folder)
    return None


def _load(path: Path) -> tuple[np.ndarray, int]:
    return read_audio(path)


# ---- reports ---------------------------------------------------------------------------

def _atomic_write(path: Path, write) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        write(f)


def write_track_report(path: Path, report: dict) -> None:
    """Write ``report`` as indented JSON to ``path`` (``<track>_eval.json``), atomically."""
    _atomic_write(path, lambda f: json.dump(report, f, indent=2, allow_nan=False))


def report_row(track: str, report: dict) -> dict:
    """Flatten one ``evaluate_track`` report into a CSV row keyed by ``CSV_COLUMNS``."""
    row = {c: None for c in CSV_COLUMNS}
    row.update(track=track, eval_seconds=report["eval_seconds"],
               duration_s=report["duration_s"], sample_rate=report["sample_rate"],
               vocal_gain=report["vocal_gain"], vocal_change_db=report["vocal_change_db"],
               vocal_change_expected_db=report["vocal_change_expected_db"])
    for group, prefix in (("model", "model"), ("reference", "ref")):
        for output, metrics in (report[group] or {}).items():
            if isinstance(metrics, dict):
                for metric, v in metrics.items():
                    if f"{prefix}_{output}_{metric}" in row:
                        row[f"{prefix}_{output}_{metric}"] = v
    if report["reference"]:
        row["ref_vocal_change_db"] = report["reference"]["vocal_change_db"]
    row["undefined"] = "; ".join(f"{k}: {v}" for k, v in report["undefined"].items())
    return row


def write_batch_csv(path: Path, rows: list[dict]) -> None:
    """Write ``report_row`` rows to ``path`` (``vtrace_eval.csv``) with ``CSV_COLUMNS``, atomically.

    Undefined values are empty cells (the reason is in the "undefined" column).
    """
    def write(f):
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS, extrasaction="raise")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
    _atomic_write(path, write)


def format_table(rows: list[dict]) -> str:
    """A short fixed-width table of ``report_row`` rows for the end of the run. With true stems
    it puts the model's own stems beside VTrace's outputs (SDR against the true stems) and
    ends each row with a one-line verdict of what VTrace changed."""
    kind = "estoi" if any(r.get("model_voice_estoi") is not None for r in rows) else "stoi"
    with_ref = any(r.get("ref_voice_sdr") is not None for r in rows)
    if with_ref:
        cols = [("track", "track", None), ("eval s", "eval_seconds", 1),
                ("vocal dB", "vocal_change_db", 1),
                ("inst SDR model", "ref_model_instrumental_sdr", 1),
                ("inst SDR vtrace", "ref_phase_cancel_sdr", 1),
                ("vocal SDR model", "ref_model_vocals_sdr", 1),
                ("vocal SDR vtrace", "ref_voice_sdr", 1), ("verdict", None, None)]
    else:
        cols = [("track", "track", None), ("eval s", "eval_seconds", 1),
                ("vocal dB", "vocal_change_db", 1), ("PC cos", "model_phase_cancel_cosine", 3),
                (f"voice {kind.upper()}", f"model_voice_{kind}", 3)]

    def cell(r, key, digits):
        v = verdict(r) if key is None else r.get(key)
        if v is None:
            return "-"
        return f"{v:.{digits}f}" if digits is not None else str(v)

    table = [[c[0] for c in cols]] + [[cell(r, k, d) for _, k, d in cols] for r in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(cols))]
    return "\n".join("  ".join(v.ljust(w) if i in (0, len(cols) - 1) and with_ref or i == 0
                               else v.rjust(w) for i, (v, w) in enumerate(zip(line, widths)))
                     .rstrip() for line in table)


def verdict(row: dict, tie_db: float = 0.1) -> str:
    """What VTrace changed against the model's own stems, in SDR (BSS Eval v3) to the true
    stems: e.g. "instrumental +1.2 dB, vocal -0.4 dB vs the model's stems"."""
    parts = []
    for label, ours, model in (("instrumental", "ref_phase_cancel_sdr",
                                "ref_model_instrumental_sdr"),
                               ("vocal", "ref_voice_sdr", "ref_model_vocals_sdr")):
        a, b = row.get(ours), row.get(model)
        if a is None or b is None:
            parts.append(f"{label} not measured")
        elif abs(a - b) < tie_db:
            parts.append(f"{label} as the model's")
        else:
            parts.append(f"{label} {a - b:+.1f} dB")
    text = ", ".join(parts) + " vs the model's stems"
    gains = [(label, row.get(f"ref_{out}_usdr_gain")) for label, out in
             (("instrumental", "phase_cancel"), ("vocal", "voice"))]
    if all(g is not None for _, g in gains):  # uSDR: the published (MDX) score, no filter
        text += " (uSDR " + ", ".join(f"{label} {g:+.1f} dB" for label, g in gains) + ")"
    return text


def plot_track(path: Path, signals: dict, sr: int) -> None:
    """Save a PNG of the spectrograms of original, blended, residual (O - I) and phase-cancel.

    Mono downmix, log frequency from 30 Hz, dB on one colour scale shared by all four panels.
    """
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    panels = [("Original", signals["original"]), ("Blended", signals["blended"]),
              ("Residual vocal (original - model instrumental)",
               signals["original"] - signals["model_instrumental"]),
              ("Phase-cancel instrumental", signals["phase_cancel"])]
    specs = [_spectrogram_db(x, sr) for _, x in panels]
    top = max(float(s[2].max()) for s in specs)
    fig = Figure(figsize=(12, 9), layout="constrained")
    axes = fig.subplots(len(panels), 1, sharex=True, sharey=True)
    for ax, (title, _), (times, freqs, db) in zip(axes, panels, specs):
        mesh = ax.pcolormesh(times, freqs, db, vmin=top - 80, vmax=top, shading="flat",
                             cmap="magma", rasterized=True)
        ax.set_yscale("log")
        ax.set_ylim(30, sr / 2)
        ax.set_title(title)
        ax.set_ylabel("Frequency (Hz)")
    axes[-1].set_xlabel("Time (s)")
    fig.suptitle(f"{Path(path).stem}: one colour scale for all panels")
    fig.colorbar(mesh, ax=axes, label="Level (dB, 0 = full scale sine)")
    _atomic_write_png(Path(path), fig)


def _spectrogram_db(x: np.ndarray, sr: int, n_fft: int = 4096, max_columns: int = 1000,
                    bands: int = 240):
    """Level in dB (0 = full-scale sine) on log-spaced bands from 30 Hz, averaged over time
    groups so a long track still shows all of its energy in ~``max_columns`` columns.

    Returns (time edges in s, band edges in Hz, dB array (bands, columns)).
    """
    mono = np.add.reduce(x, axis=0) / np.float32(x.shape[0])
    mono = np.pad(mono, (0, max(0, n_fft - len(mono))))
    hop = n_fft // 2
    n_frames = 1 + (len(mono) - n_fft) // hop
    group = -(-n_frames // max_columns)
    freqs = np.fft.rfftfreq(n_fft, 1 / sr)
    edges = np.geomspace(30.0, sr / 2, bands + 1)
    first = np.minimum(np.searchsorted(freqs, edges[:-1]), len(freqs) - 1)
    # a band narrower than one bin shows the bin at its lower edge (reduceat's rule)
    width = np.maximum(np.diff(np.append(first, len(freqs))), 1)
    window = np.hanning(n_fft).astype(np.float32)
    frames = np.lib.stride_tricks.sliding_window_view(mono, n_fft)[::hop][:n_frames]
    columns = []
    for start in range(0, n_frames, group * 32):  # bounded memory on long tracks
        power = np.abs(np.fft.rfft(frames[start:start + group * 32] * window, axis=1)) ** 2
        power = np.add.reduceat(power, first, axis=1) / width
        starts = np.arange(0, len(power), group)
        columns.append(np.add.reduceat(power, starts, axis=0)
                       / np.diff(np.append(starts, len(power)))[:, None])
    power = np.concatenate(columns).T * (2 / window.sum()) ** 2
    times = np.arange(power.shape[1] + 1) * group * hop / sr
    return times, edges, 10 * np.log10(np.maximum(power, 1e-14))


def _atomic_write_png(path: Path, fig) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
