"""One track from input file to finished outputs.

Decodes the original if soundfile cannot read it, finds or makes its stems, resamples them to
the original's rate, estimates their offset and polarity, has ``utils.render`` write the three
outputs (temporary names, renamed when complete), then MP3 copies and evaluation when asked,
and the manifest last. Every track ends in a TrackResult; an error fails only its track.
"""

import json
import logging
import math
import platform
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from audio_utils import alignment
from audio_utils.audio_io import (WORK_PREFIX, BlockReader, audio_info,
                                  remove_stale_temps, resample_file, write_text_atomic)
from audio_utils.matching import target_channels
from processors import vtrace_core as core
from utils.errors import InputError, SeparationError, VTraceError
from utils.file_utils import file_identity, stem_paths, stems_folder
from utils.render import OUTPUTS, compute, render, shaping

log = logging.getLogger(__name__)

MAX_LAG_SECONDS = 1.5  # the issue asks for at least +-1 s; 1 s exactly must be inside the range

# Config keys whose values change the outputs: a manifest with other values is recomputed.
PARAM_KEYS = ("demucs_model", "model_repo", "shifts", "overlap", "segment", "other_method",
              "blend_alpha", "vocal_gain_db", "voice_alpha", "blend_mode", "gamma",
              "vocal_gate_threshold_db", "vocal_gate_attack_ms", "vocal_gate_release_ms",
              "vocal_gate_hold_ms", "residual_hpf", "residual_lpf", "filter_order",
              "gate_threshold_db", "gate_attack_ms", "gate_release_ms", "gate_hold_ms",
              "gate_range_db", "align", "wav_format", "normalize", "match_loudness",
              "convert_to_mp3", "mp3_only", "mp3_bitrate", "eval", "estoi", "reference", "plot")


@dataclass
class TrackResult:
    """How one track ended: status is "ok", "skipped" or "failed" (with a one-line reason)."""

    name: str
    input: str
    status: str
    reason: str = ""
    audio_seconds: float = 0.0
    wall_seconds: float = 0.0
    output_dir: str = ""
    eval_seconds: float = 0.0
    eval_row: dict = field(default_factory=dict)


def manifest_path(out_dir, name):
    return Path(out_dir) / f"{name}_vtrace.json"


def output_paths(out_dir, name, ext=".wav"):
    return {k: Path(out_dir) / f"{name}_{k}{ext}" for k in OUTPUTS}


def params_of(cfg):
    return {k: getattr(cfg, k) for k in PARAM_KEYS}


def is_done(track, cfg, out_dir):
    """True when a manifest for the same input identity and parameters exists with all its
    outputs present: the track can be skipped on a rerun."""
    mp = manifest_path(out_dir, track.name)
    try:
        manifest = json.loads(mp.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if manifest.get("params") != json.loads(json.dumps(params_of(cfg))):
        return False
    if manifest.get("input") != file_identity(track.path):
        return False
    return all((Path(out_dir) / f).is_file() for f in manifest.get("files", []))


def process_track(track, cfg, out_root, get_separator=None, progress=None):
    """Process one TrackInput; never raises for a bad track, returns a TrackResult.

    ``get_separator()`` returns the process's (lazily loaded) separator, used only when the
    track has no stems yet. ``progress(seconds)`` is called with audio-seconds done.
    """
    t0 = time.perf_counter()
    out_dir = Path(out_root) / track.name
    result = TrackResult(track.name, str(track.path), "failed", output_dir=str(out_dir))
    try:
        remove_stale_temps(out_dir)
        if not cfg.force and is_done(track, cfg, out_dir):
            result.status, result.reason = "skipped", "already done (same input and parameters)"
            try:
                m = json.loads(manifest_path(out_dir, track.name).read_text(encoding="utf-8"))
                result.audio_seconds = float(m.get("seconds", 0.0))
                if cfg.eval:  # the batch CSV still lists the track
                    from utils.evaluation import report_row

                    report = json.loads((out_dir / f"{track.name}_eval.json")
                                        .read_text(encoding="utf-8"))
                    result.eval_row = report_row(track.name, report)
            except (OSError, ValueError, KeyError):
                pass
            return result
        out_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=WORK_PREFIX, dir=out_dir) as work:
            _run(track, cfg, out_dir, Path(work), get_separator, progress, result)
        result.status = "ok"
    except VTraceError as exc:
        result.reason = str(exc)
    except MemoryError:
        result.reason = "out of memory"
    except OSError as exc:
        result.reason = f"{exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else "")
    except Exception as exc:  # one bad file never stops the batch
        log.debug("unexpected error on %s", track.path, exc_info=True)
        result.reason = f"internal error: {type(exc).__name__}: {exc}"
    except BaseException:  # Ctrl-C: whatever was interrupted, no temporary file stays
        remove_stale_temps(out_dir)
        raise
    finally:
        result.wall_seconds = time.perf_counter() - t0
    if result.status == "failed":
        try:
            out_dir.rmdir()  # only if empty: a failed track leaves no folder of its own
        except OSError:
            pass
        result.reason = " ".join(result.reason.split()) or "failed"
    return result


def _run(track, cfg, out_dir, work, get_separator, progress, result):
    timings = {}
    t = time.perf_counter()
    original = _readable_original(track.path, work)
    sr, file_channels, frames = audio_info(original)
    channels = target_channels(file_channels)
    if file_channels > 2:
        log.warning("%s: %d channels downmixed to stereo (centre kept)", track.name, file_channels)
    result.audio_seconds = frames / sr

    folder = stems_folder(cfg.separated_dir, cfg.demucs_model, track.stems_name)
    stems = None if cfg.force else stem_paths(cfg.separated_dir, cfg.demucs_model,
                                              track.stems_name)
    created = separated = False  # created: the folder is ours to --cleanup
    if stems is None:
        if get_separator is None:
            raise SeparationError(f"no stems in {folder} and separation is not available")
        created, separated = not folder.exists(), True
        remove_stale_temps(folder)  # stems an interrupted run left half-written
        get_separator().separate_file(Path(original), folder)
        stems = stem_paths(cfg.separated_dir, cfg.demucs_model, track.stems_name)
        if stems is None:
            raise SeparationError(f"separation wrote no stems into {folder}")
    timings["separation_s"] = time.perf_counter() - t
    vocals_path, inst_path = [_at_rate(p, sr, work) for p in stems]

    readers = [BlockReader(original, channels), BlockReader(inst_path, channels),
               BlockReader(vocals_path, channels)]
    try:
        t = time.perf_counter()
        offset = alignment.Offset(0, 1, 0.0)
        if cfg.align and not separated:  # stems separated here are sample-aligned already
            offset = _estimate(readers, frames, sr)
            if offset.confidence < alignment.MIN_CONFIDENCE:
                log.warning("%s: stems do not correlate with the original (confidence %.2f); "
                            "left unshifted", track.name, offset.confidence)
            elif offset.lag or offset.polarity < 0:
                log.info("%s: stems offset %+d samples (%+.1f ms)%s, corrected", track.name,
                         offset.lag, 1000 * offset.lag / sr,
                         ", inverted polarity" if offset.polarity < 0 else "")
            for r in readers[1:]:
                r.lag, r.polarity = offset.lag, offset.polarity
        timings["alignment_s"] = time.perf_counter() - t

        alpha = cfg.blend_alpha
        if cfg.vocal_gain_db is not None:
            alpha = core.alpha_for_vocal_gain_db(cfg.vocal_gain_db, cfg.blend_mode, cfg.gamma)
        w = core.blend_weight(alpha, cfg.blend_mode, cfg.gamma)

        t = time.perf_counter()
        wav_dir = work if (cfg.convert_to_mp3 and cfg.mp3_only) else out_dir
        wav_paths = output_paths(wav_dir, track.name)
        gains, peaks, loudness = render(readers, frames, sr, channels, w, cfg, wav_paths,
                                         progress)
        timings["render_s"] = time.perf_counter() - t
        if cfg.eval or cfg.plot:
            t = time.perf_counter()
            _evaluate(track, cfg, readers, frames, sr, w, gains, out_dir, result)
            timings["eval_s"] = time.perf_counter() - t
    finally:
        for r in readers:
            r.close()

    files = [p.name for p in wav_paths.values()] if wav_dir == out_dir else []
    files += [f"{track.name}_eval.json"] * cfg.eval + [f"{track.name}_eval.png"] * cfg.plot
    if cfg.convert_to_mp3:
        from audio_utils.audio_conversion import encode_mp3

        t = time.perf_counter()
        tags = dict(track.meta)
        for key, wav in wav_paths.items():
            mp3 = out_dir / f"{track.name}_{key}.mp3"
            encode_mp3(wav, mp3, cfg.mp3_bitrate,
                       {"title": f"{tags.get('title', track.name)} ({key.replace('_', ' ')})",
                        "artist": tags.get("uploader", "")})
            files.append(mp3.name)
        timings["mp3_s"] = time.perf_counter() - t

    manifest = {
        "vtrace_version": _version(),
        "track": track.name,
        "input": file_identity(track.path),
        "params": params_of(cfg),
        "model": cfg.demucs_model,
        "stems": {"vocals": str(stems[0]), "no_vocals": str(stems[1]),
                  "separated_by_this_run": separated},
        "samplerate": sr, "channels": channels, "frames": frames, "seconds": frames / sr,
        "blend_weight": w, "vocal_gain_db": _db(w),
        "offset": {"lag_samples": offset.lag, "polarity": offset.polarity,
                   "confidence": round(offset.confidence, 4),
                   "applied": bool(cfg.align and not separated)},
        "gain": gains, "peaks_before_gain": peaks, "loudness": loudness,
        "files": files,
        "meta": dict(track.meta),
        "timings": {k: round(v, 4) for k, v in timings.items()},
        "versions": _versions(),
    }
    write_text_atomic(manifest_path(out_dir, track.name), json.dumps(manifest, indent=2))
    if cfg.cleanup and created:
        shutil.rmtree(folder, ignore_errors=True)
        log.debug("removed separation %s", folder)


def _evaluate(track, cfg, readers, frames, sr, w, gains, out_dir, result):
    """``--eval`` / ``--plot``: metrics on the float outputs (before any PCM or MP3 encoding),
    recomputed for the whole track with the same gains, next to the outputs."""
    from utils import evaluation

    o, outs = compute(readers, 0, frames, w, cfg, sr, shaping(cfg, sr))
    signals = {"original": o,
               "blended": outs["blended"] * np.float32(gains["blended"]),
               "voice": outs["vocal_residual"] * np.float32(gains["vocal_residual"]),
               "phase_cancel": outs["phase_cancel"] * np.float32(gains["phase_cancel"]),
               "model_instrumental": readers[1].read(0, frames),
               "model_vocals": readers[2].read(0, frames)}
    if cfg.plot:
        evaluation.plot_track(out_dir / f"{track.name}_eval.png", signals, sr)
    if not cfg.eval:
        return
    reference = None
    if cfg.reference:
        reference = evaluation.find_reference(Path(cfg.reference), track.stems_name)
        if reference is None and track.stems_name != track.name:
            reference = evaluation.find_reference(Path(cfg.reference), track.name)
        if reference is None:
            log.warning("%s: no true stems under %s/%s; reference metrics skipped", track.name,
                        cfg.reference, track.stems_name)
    report = evaluation.evaluate_track(signals, sr, reference, cfg.estoi,
                                       vocal_gain=w if cfg.blend_mode != "gate" else None)
    evaluation.write_track_report(out_dir / f"{track.name}_eval.json", report)
    result.eval_seconds = report["eval_seconds"]
    result.eval_row = evaluation.report_row(track.name, report)


def _readable_original(path, work):
    """The original as a file soundfile can seek in: itself, or decoded to a WAV in ``work``."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: file not found (dangling link?)")
    if not path.is_file():
        raise InputError(f"{path}: not a regular file")
    if path.stat().st_size == 0:
        raise InputError(f"{path.name}: empty file")
    from audio_utils.audio_conversion import decode_to_wav, needs_ffmpeg

    if not needs_ffmpeg(path):
        try:
            audio_info(path)
            return path
        except InputError:
            pass  # a misnamed file (an .mp3 that is really AAC...): let ffmpeg try
    decoded = work / "original.wav"
    decode_to_wav(path, decoded)
    return decoded


def _at_rate(path, sr, work):
    """``path`` itself when it is at ``sr``, else a resampled float32 copy in ``work``."""
    stem_sr = audio_info(path)[0]
    if stem_sr == sr:
        return path
    log.info("%s: resampling %d Hz -> %d Hz", path.name, stem_sr, sr)
    dst = work / f"{path.stem}_{sr}.wav"
    resample_file(path, dst, sr)
    return dst


def _estimate(readers, frames, sr):
    o, inst, voc = readers
    max_lag = int(MAX_LAG_SECONDS * sr)
    excerpts = [(o.read(a, b), a, b) for a, b in alignment.analysis_windows(frames, sr)]
    ref, start, stop = max(excerpts, key=lambda e: float(np.dot(e[0].ravel(), e[0].ravel())))
    sig = inst.read(start - max_lag, stop + max_lag)
    sig += voc.read(start - max_lag, stop + max_lag)
    return alignment.estimate_offset(ref, sig, max_lag)


def _db(g):
    return round(20 * math.log10(g), 3) if g > 0 else None


def _version():
    from config_loader import __version__

    return __version__


def _versions():
    import soundfile

    return {"python": platform.python_version(), "numpy": np.__version__,
            "soundfile": soundfile.__version__, "libsndfile": soundfile.__libsndfile_version__}
