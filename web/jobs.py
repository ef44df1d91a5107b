"""The web page's work, with no Gradio in it (so it is tested like the rest of the engine).

One code path with the command line: a request's settings become a ``Config``
(``dataclasses.replace`` of the loaded one, then ``validate()``), and every song goes through
``Engine.process`` (the same separation, rendering and writing as ``vtrace``). What the page
adds is housekeeping around it:

- a ``Store`` of sessions: each browser (or API client) gets its own folder under one root,
  each request a ``run-NNN`` folder in it (``inputs/``, ``downloads/``, ``out/``, ``zips/``);
  stems go to the session's ``separated/``, so a song sent again is not separated again;
  a session idle for longer than its limit is deleted, and the whole root on shutdown;
- uploads copied in under sanitized names, refused over the size limit;
- links through ``utils.youtube.download_links`` with the Config's limits (as ``-l``);
- kept stems for re-blending: once a song is done its instrumental ``I`` and residual
  ``D = O - I`` (resampled, aligned and channel-matched exactly as the render read them) are
  saved as float32 ``.npy``, so a new vocal level is ``B = I + w*D`` plus one WAV write, with
  the clip gain the render would have chosen;
- zips of one song and of the whole run.
"""

import dataclasses
import logging
import math
import os
import re
import secrets
import shutil
import tempfile
import threading
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from config_loader import PRESETS
from processors.engine import Engine
from processors.track import TrackResult, read_manifest
from utils.layout import OutputNames
from utils.atomic_files import is_temp
from utils.errors import UsageError, VTraceError
from utils.inputs import AUDIO_EXTENSIONS, collect_inputs, content_hash, sanitize_name

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860
DEFAULT_UPLOAD_MB = 200.0
DEFAULT_SESSION_MINUTES = 60.0
SLIDER_MIN_DB = -60.0


def require_web():
    """UsageError when the web extra (Gradio) is not installed."""
    from utils.extras import require

    require("web", "--web")


# ---------------------------------------------------------------- settings -> Config

# The page's settings and the Config field each one sets (``vocal_db`` sets vocal_gain_db
# unless ``use_alpha``; a residual filter or gate of 0 / None is off).
FORM_KEYS = ("vocal_db", "use_alpha", "blend_alpha", "blend_mode", "gamma", "voice_alpha",
             "residual_hpf", "residual_lpf", "gate_threshold_db", "preset", "model",
             "device", "convert_to_mp3", "eval", "plot")


def form_defaults(cfg):
    """The page's initial settings, from the loaded Config (config.yaml's defaults)."""
    from processors.track import blend_weight

    w = blend_weight(cfg.blend_alpha, cfg.vocal_gain_db, cfg.blend_mode, cfg.gamma)
    db = cfg.vocal_gain_db if cfg.vocal_gain_db is not None else (
        20 * math.log10(w) if w > 0 else -math.inf)
    use_alpha = cfg.vocal_gain_db is None and (db < SLIDER_MIN_DB or db > 0
                                                or cfg.blend_mode == "gate")
    return {"vocal_db": round(min(0.0, max(SLIDER_MIN_DB, db)), 1), "use_alpha": use_alpha,
            "blend_alpha": cfg.blend_alpha, "blend_mode": cfg.blend_mode, "gamma": cfg.gamma,
            "voice_alpha": cfg.voice_alpha, "residual_hpf": cfg.residual_hpf or 0,
            "residual_lpf": cfg.residual_lpf or 0, "gate_threshold_db": cfg.gate_threshold_db or 0,
            "preset": cfg.preset or "none", "model": cfg.model,
            "device": cfg.device, "convert_to_mp3": cfg.convert_to_mp3, "eval": cfg.eval,
            "plot": True}


SONG_FILENAME = "{track}/{track}_{output}.{ext}"


def _manifest(song_dir, name):
    """The manifest of the song whose files are in ``song_dir`` (SONG_FILENAME's layout)."""
    return read_manifest(OutputNames(Path(song_dir).parent, SONG_FILENAME, name, "", {}))


def build_config(base, form, run_dir, separated_dir):
    """The Config for one request: ``base`` (config.yaml) with the page's settings, writing
    into ``run_dir`` and keeping stems in ``separated_dir``; validated (ConfigError names the
    setting). A preset sets what it names over the other settings, as on the command line."""
    form = {**form_defaults(base), **{k: v for k, v in form.items() if v is not None}}
    preset = form.get("preset")
    preset = None if preset in (None, "", "none") else preset
    changes = dict(
        blend_alpha=float(form["blend_alpha"]), blend_mode=form["blend_mode"],
        gamma=float(form["gamma"]), voice_alpha=float(form["voice_alpha"]),
        vocal_gain_db=None if form["use_alpha"] else float(form["vocal_db"]),
        residual_hpf=_off_if_zero(form["residual_hpf"]),
        residual_lpf=_off_if_zero(form["residual_lpf"]),
        gate_threshold_db=(None if form["gate_threshold_db"] in (None, "")
                           or float(form["gate_threshold_db"]) == 0
                           else float(form["gate_threshold_db"])),
        preset=preset, model=str(form["model"]).strip(), device=form["device"],
        convert_to_mp3=bool(form["convert_to_mp3"]), eval=bool(form["eval"]),
        plot=bool(form["plot"]),
        # where and how: this request's folders, one track at a time, no console output
        input=[], link=[], output=str(Path(run_dir) / "out"),
        separated_dir=str(separated_dir), download_dir=str(Path(run_dir) / "downloads"),
        thread=1, quiet=True, force=False, cleanup=False,
        # one model per request folder: each song's files in out/<song>/ (players, zips)
        filename=SONG_FILENAME)
    if not changes["convert_to_mp3"]:
        changes["mp3_only"] = False
    if preset is not None:
        changes.update(PRESETS[preset])
    if changes["blend_mode"] == "gate" and changes["vocal_gain_db"] is not None:
        changes["blend_alpha"] = 10 ** (changes["vocal_gain_db"] / 20)  # gate: w = alpha
        changes["vocal_gain_db"] = None
    cfg = dataclasses.replace(base, **changes)
    return cfg.validate(source="the page's settings")


def _off_if_zero(value):
    return None if value in (None, "") or float(value) <= 0 else float(value)


# ---------------------------------------------------------------- sessions

@dataclass
class Song:
    """A finished song of a session: its outputs and what re-blending needs."""

    id: str                 # "run-NNN/<track>": what the page and the API name it by
    name: str
    out_dir: Path
    kept: Path | None       # folder of inst.npy / resid.npy (/ gate.npy), None if not kept
    sr: int = 0
    channels: int = 0
    frames: int = 0
    wav_format: str = "pcm24"
    normalize: str = "none"
    match_loudness: bool = False
    other_peaks: float = 0.0  # the peaks of the two outputs a re-blend does not change
    original_lufs: float | None = None
    vocal_db: float | None = None
    eval_row: dict = field(default_factory=dict)


@dataclass
class Session:
    folder: Path
    last_used: float
    songs: dict = field(default_factory=dict)
    runs: int = 0
    busy: int = 0  # requests running now: a busy session is never swept
    lock: threading.Lock = field(default_factory=threading.Lock)

    def new_run(self):
        with self.lock:
            self.runs += 1
            run = self.folder / f"run-{self.runs:03d}"
        for sub in ("inputs", "downloads", "out", "zips"):
            (run / sub).mkdir(parents=True, exist_ok=True)
        return run

    def song(self, song_id):
        """The session's song ``song_id``; UsageError for anything else (another session's
        song is unknown here)."""
        song = self.songs.get(str(song_id or ""))
        if song is None:
            raise UsageError(f"no finished song {song_id!r} in this session: process it first "
                             "(songs are kept for the session only)")
        return song


class Store:
    """Sessions by key (Gradio's session hash), each in its own random folder under
    ``root``; sessions idle for more than ``max_age_s`` are deleted by ``sweep``, and
    everything by ``close``."""

    def __init__(self, root, max_age_s):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.max_age_s = float(max_age_s)
        self._sessions = {}
        self._lock = threading.Lock()

    def get(self, key):
        key = str(key or "anonymous")
        with self._lock:
            session = self._sessions.get(key)
            if session is None or not session.folder.is_dir():
                folder = self.root / f"s-{secrets.token_hex(8)}"
                folder.mkdir(mode=0o700)
                session = self._sessions[key] = Session(folder, time.time())
            session.last_used = time.time()
            return session

    def sweep(self, now=None):
        """Delete the sessions idle for longer than ``max_age_s``; returns how many."""
        now = time.time() if now is None else now
        with self._lock:
            old = [k for k, s in self._sessions.items()
                   if now - s.last_used > self.max_age_s and not s.busy]
            gone = [self._sessions.pop(k) for k in old]
        for s in gone:
            shutil.rmtree(s.folder, ignore_errors=True)
        return len(gone)

    def close(self):
        with self._lock:
            self._sessions.clear()
        shutil.rmtree(self.root, ignore_errors=True)


# ---------------------------------------------------------------- inputs

def stage_uploads(paths, inputs_dir, limit_mb):
    """Copy uploaded files into ``inputs_dir`` under sanitized, unique names. Returns
    ``(paths, failures)``: a file over ``limit_mb`` or unreadable is a failed TrackResult."""
    staged, failed, used = [], [], set()
    for raw in paths or []:
        src = Path(raw)
        label = sanitize_name(src.name)
        try:
            size = src.stat().st_size
        except OSError:
            failed.append(TrackResult(label, label, "failed", "upload missing on the server"))
            continue
        if size > limit_mb * 1e6:
            failed.append(TrackResult(label, label, "failed",
                                      f"file too large: {size / 1e6:.1f} MB (the limit is "
                                      f"{limit_mb:g} MB)"))
            continue
        ext = src.suffix.lower()
        ext = ext if re.fullmatch(r"\.[a-z0-9]{1,5}", ext) else ""
        stem = sanitize_name(src.name[:-len(src.suffix)] if src.suffix else src.name, 150)
        name, n = stem, 1
        while name.lower() in used:
            n += 1
            name = f"{stem} ({n})"
        used.add(name.lower())
        dst = Path(inputs_dir) / f"{name}{ext}"
        shutil.copyfile(src, dst)
        staged.append(dst)
    return staged, failed


def stage_links(links, cfg):
    """Download ``links`` with the Config's limits (the same downloader as ``-l``). Returns
    ``(tracks, failures)``."""
    from processors.links import link_tracks

    return link_tracks(links, cfg)


def parse_links(text):
    """Links from a text box: one per line (or separated by spaces)."""
    return [t for t in str(text or "").split() if t.strip()]


def seed_stems(track, cfg, library):
    """Stems VTrace separated earlier in ``library`` (the configured separated/ folder) for
    this exact mix, model and settings are copied into the session's separated/ folder, so
    the page reuses them instead of separating again. Only stems whose record names this
    mix's SHA-256 qualify: nothing is copied for another song that happens to share a name.
    Returns True when stems were copied."""
    from utils.layout import read_stems_record, stem_paths, stems_folder, write_stems_record
    from utils.inputs import file_identity
    import json

    if not library or Path(library).resolve() == Path(cfg.separated_dir).resolve():
        return False
    found = stem_paths(library, cfg.model, track.stems_name)
    dst = stems_folder(cfg.separated_dir, cfg.model, track.stems_name)
    if found is None or stem_paths(cfg.separated_dir, cfg.model, track.stems_name):
        return False
    record = read_stems_record(found[0].parent)
    settings = json.loads(json.dumps(cfg.settings("stems")))
    if not record or record.get("model") != cfg.model \
            or record.get("settings") != settings \
            or record.get("mix_sha256") != content_hash(track.path):
        return False
    dst.mkdir(parents=True, exist_ok=True)
    copies = []
    for src, kind in zip(found, ("vocals", "no_vocals")):
        copy = dst / f"{kind}{src.suffix.lower()}"
        shutil.copyfile(src, copy)
        copies.append(copy)
    write_stems_record(dst, {**record, "mix": str(Path(track.path).resolve()),
                             "stems": {"vocals": file_identity(copies[0]),
                                       "no_vocals": file_identity(copies[1])}})
    return True


# ---------------------------------------------------------------- running a request

@dataclass
class RunOutcome:
    run_dir: Path
    results: list
    songs: list          # Song of each track that ended ok, in order
    run_zip: Path | None
    eval_rows: list
    message: str = ""


class Runner:
    """Runs requests. Holds one Engine per separation settings (a model stays loaded between
    requests); the page serializes ``run`` calls (Gradio queue, concurrency 1), and a lock
    makes that true for any caller."""

    def __init__(self, base_cfg, store, upload_mb=DEFAULT_UPLOAD_MB):
        self.base = base_cfg
        self.store = store
        self.upload_mb = float(upload_mb)
        self.library = base_cfg.separated_dir
        self._engines = {}
        self._lock = threading.Lock()

    def engine(self, cfg):
        key = (repr(sorted(cfg.settings("stems").items())), cfg.device)
        engine = self._engines.get(key)
        if engine is None:
            if len(self._engines) >= 2:  # at most two models in memory
                self._engines.pop(next(iter(self._engines)))
            engine = self._engines[key] = Engine(cfg, command=["vtrace", "--web"])
        engine.cfg = cfg  # same separation settings: only where and how the outputs go differ
        engine.model_error = None
        return engine

    def run(self, session, files, links, form, report=None):
        """Process uploaded ``files`` and ``links`` with the page's settings ``form``.
        ``report(fraction, text)`` is told the progress in seconds of audio. Raises
        UsageError (ConfigError) for settings that cannot be used; a bad song only fails."""
        session.busy += 1
        try:
            with self._lock:
                return self._run(session, files, links, form, report or (lambda f, t: None))
        finally:
            session.busy -= 1
            session.last_used = time.time()

    def _run(self, session, files, links, form, report):
        links = parse_links(links) if isinstance(links, str) else list(links or [])
        if not files and not links:
            raise UsageError("nothing to process: add audio files or paste a link")
        run_dir = session.new_run()
        cfg = build_config(self.base, form, run_dir, session.folder / "separated")
        staged, failed = stage_uploads(files, run_dir / "inputs", self.upload_mb)
        tracks = collect_inputs(staged) if staged else []
        out_root = Path(cfg.output)
        engine = self.engine(cfg)
        if links:
            report(0.0, f"downloading {len(links)} link(s)")
            got, link_failed = stage_links(links, cfg)
            tracks += [t for t in got if t.name.lower() not in {x.name.lower() for x in tracks}]
            failed += link_failed
        for t in tracks:
            try:
                seed_stems(t, cfg, self.library)
            except (OSError, VTraceError) as exc:
                log.debug("no stems seeded for %s: %s", t.name, exc)
        engine.check(tracks, out_root)
        seconds = [_seconds(t.path) for t in tracks]
        total = sum(seconds) or 1.0
        results, songs, before = list(failed), [], 0.0
        for i, (track, length) in enumerate(zip(tracks, seconds)):
            plan = engine.describe(track, out_root)
            sep_share = 0.8 if plan.needs_separation else 0.0
            state = {"sep": 0.0, "done": 0.0}

            def tell(stage, i=i, track=track, length=length, state=state, sep=sep_share):
                frac = sep * min(1.0, state["sep"]) + (1 - sep) * min(1.0, state["done"]
                                                                        / max(length, 1e-9))
                now = before + frac * length
                report(min(1.0, now / total),
                       f"song {i + 1}/{len(tracks)} {track.name}: {stage} "
                       f"{frac * length:.0f}/{length:.0f} s of audio; all songs "
                       f"{now:.0f}/{total:.0f} s")

            def on_sep(done, whole, state=state, tell=tell):
                state["sep"] = done / whole if whole else 1.0
                tell("separating")

            def on_audio(sec, state=state, tell=tell):
                state["done"] += sec
                tell("rendering")

            engine.separation_progress = on_sep
            tell("starting")
            result = engine.process(track, out_root, on_audio)
            engine.separation_progress = None
            result.reason = _private(result.reason, run_dir, session.folder)
            result.warnings = [_private(w, run_dir, session.folder) for w in result.warnings]
            results.append(result)
            before += length
            if result.status != "failed":
                song = self._finish_song(session, run_dir, track, cfg, result)
                songs.append(song)
        report(1.0, "writing the zips")
        eval_rows = [r.eval_row for r in results if r.eval_row]
        if cfg.eval and eval_rows:
            from processors.evaluation import write_batch_csv

            write_batch_csv(out_root / "vtrace_eval.csv", eval_rows)
        run_zip = None
        if songs:
            run_zip = zip_run(out_root, run_dir / "zips" / f"vtrace_{run_dir.name}.zip")
        ok = sum(r.status != "failed" for r in results)
        message = f"{ok} of {len(results)} song(s) done" + (
            f"; {len(results) - ok} failed (reasons in the table)" if ok < len(results) else "")
        return RunOutcome(run_dir, results, songs, run_zip, eval_rows, message)

    def _finish_song(self, session, run_dir, track, cfg, result):
        song = Song(f"{run_dir.name}/{track.name}", track.name, Path(result.output_dir), None,
                    eval_row=result.eval_row, vocal_db=cfg.vocal_gain_db)
        try:
            keep_stems(song, track, cfg, run_dir / "kept" / track.name)
        except (OSError, VTraceError, ValueError, KeyError, TypeError) as exc:
            log.warning("%s: stems not kept for re-blending (%s)", track.name, exc)
            song.kept = None
        zip_song(song)
        session.songs[song.id] = song
        return song


def _private(text, run_dir, session_dir):
    """A reason as the CLI words it, without the server's folders: the uploaded file by its
    name, the session's folders relative to the session."""
    for folder in (Path(run_dir) / "inputs", Path(session_dir)):
        text = text.replace(f"{folder}{os.sep}", "")
    return text


def _seconds(path):
    from audio_utils.audio_io import audio_info

    try:
        sr, _, frames = audio_info(path)
        return frames / sr
    except (VTraceError, OSError):
        return 1.0  # decoded later, or fails with its own reason


# ---------------------------------------------------------------- re-blend

def keep_stems(song, track, cfg, kept):
    """Save what a re-blend needs: the instrumental ``I`` and the residual ``D = O - I`` read
    as the render read them (original decoded if needed, stems at its rate, its channels,
    the offset and polarity the manifest records), float32 ``.npy``; in gate mode also the
    gate curve ``g0`` (the weight at w = 0), since ``weight(w) = 1 - (1 - w)(1 - g0)``."""
    from audio_utils.audio_io import BlockReader
    from processors.track import at_rate, readable_original

    m = _manifest(song.out_dir, track.name)
    if m is None:
        raise OSError("no manifest")
    sr, channels, frames = int(m["samplerate"]), int(m["channels"]), int(m["frames"])
    off = m["offset"]
    lag, polarity = (off["lag_samples"], off["polarity"]) if off.get("applied") else (0, 1)
    kept.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".vtrace-work-", dir=kept) as work:
        readers = [BlockReader(readable_original(track.path, work), channels),
                   BlockReader(at_rate(Path(m["stems"]["no_vocals"]), sr, work), channels,
                               lag, polarity)]
        try:
            o, inst = (r.read(0, frames) for r in readers)
        finally:
            for r in readers:
                r.close()
        np.subtract(o, inst, out=o)
        # frames x channels, the layout a WAV is written in: a re-blend needs no transpose
        np.save(kept / "inst.npy", np.ascontiguousarray(inst.T))
        np.save(kept / "resid.npy", np.ascontiguousarray(o.T))
        del o, inst
        if cfg.blend_mode == "gate":
            from audio_utils.filters import gate_weight

            reader = BlockReader(at_rate(Path(m["stems"]["vocals"]), sr, work), channels,
                                 lag, polarity)
            try:
                vocals = reader.read(0, frames)
            finally:
                reader.close()
            np.save(kept / "gate.npy", np.ascontiguousarray(gate_weight(
                vocals, sr, cfg.vocal_gate_threshold_db, cfg.vocal_gate_attack_ms,
                cfg.vocal_gate_release_ms, cfg.vocal_gate_hold_ms, w_active=0.0).T))
    peaks = m.get("peaks_before_gain") or {}
    loud = (m.get("loudness") or {}).get("original") or {}
    song.kept, song.sr, song.channels, song.frames = kept, sr, channels, frames
    song.wav_format, song.normalize = cfg.wav_format, cfg.normalize
    song.match_loudness = cfg.match_loudness
    song.other_peaks = max(float(peaks.get("vocal_residual", 0.0)),
                           float(peaks.get("phase_cancel", 0.0)))
    song.original_lufs = loud.get("integrated_lufs")
    if m.get("vocal_gain_db") is not None:
        song.vocal_db = float(m["vocal_gain_db"])


def reblend(song, vocal_db):
    """A new blend of a finished song with the vocal at ``vocal_db`` dB, from its kept stems
    (no separation, no alignment): ``B = I + w*D``, ``w = 10^(dB/20)`` (in gate mode the
    gated weight), with the gain the render would choose (one clip gain shared with the
    other outputs, or peak normalisation, or the loudness match), in the song's WAV format.
    Written next to the song's outputs as ``<track>_blended_vocal<dB>dB.wav`` (under a
    temporary name, renamed when complete); returns ``(path, seconds)``."""
    import soundfile as sf

    from processors import vtrace_core as core
    from processors.render import PEAK_TARGET
    from utils.atomic_files import new_temp
    from utils.errors import OutputError

    t0 = time.perf_counter()
    if song.kept is None:
        raise UsageError(f"{song.name}: its stems were not kept, so it cannot be re-blended; "
                         "process it again")
    db = float(vocal_db)
    if not (math.isfinite(db) and db <= 0):
        raise UsageError(f"vocal level {vocal_db!r} dB: use a number <= 0")
    w = np.float32(10 ** (db / 20))
    inst = np.load(song.kept / "inst.npy", mmap_mode="r")   # (frames, channels)
    resid = np.load(song.kept / "resid.npy", mmap_mode="r")
    gate = song.kept / "gate.npy"
    if gate.exists():
        g0 = np.load(gate)                                    # (frames, 1)
        blend = np.multiply(resid, 1 - (1 - w) * (1 - g0), dtype=np.float32)
    else:
        blend = np.multiply(resid, w, dtype=np.float32)
    blend += inst
    peak = float(max(blend.max(initial=0.0), -blend.min(initial=0.0)))
    if not math.isfinite(peak):
        raise OutputError(f"{song.name}: the re-blend is not finite (NaN or inf); nothing "
                          "was written")
    if song.normalize == "peak":
        gain = PEAK_TARGET / peak if peak > 0 else 1.0
    else:
        gain = core.clip_gain(max(peak, song.other_peaks))
    if song.match_loudness and song.original_lufs is not None:
        from audio_utils.loudness import LoudnessMeter, match_gain

        meter = LoudnessMeter(song.sr, song.channels)
        meter.feed(np.ascontiguousarray(blend.T))
        gain = match_gain(song.original_lufs, meter.integrated_lufs(),
                          meter.true_peak_dbtp()).gain
    path = song.out_dir / f"{song.name}_blended_vocal{db:+.1f}dB.wav"
    data, subtype = _wav_frames(blend, np.float32(gain), song.wav_format)
    big = data.nbytes * (3 / 4 if subtype == "PCM_24" else 1) >= 2**32 - 2**20
    tmp = new_temp(path, ".wav")
    try:
        sf.write(str(tmp), data, song.sr, subtype=subtype, format="RF64" if big else "WAV")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    song.vocal_db = db
    return path, time.perf_counter() - t0


def _wav_frames(frames, gain, wav_format):
    """``(frames, channels)`` float32 scaled by ``gain`` -> what soundfile writes, converted
    in place as ``audio_utils.audio_io`` does (round to nearest, clip; 24-bit in the top
    bits of int32)."""
    if wav_format == "float32":
        if gain != 1:
            frames *= gain
        return frames, "FLOAT"
    bits, dtype, shift, subtype = {"pcm16": (16, np.int16, 0, "PCM_16"),
                                   "pcm24": (24, np.int32, 8, "PCM_24")}[wav_format]
    scale = np.float32(2 ** (bits - 1))
    if gain != 1:
        frames *= gain
    frames *= scale
    np.rint(frames, out=frames)
    np.clip(frames, -scale, scale - 1, out=frames)
    out = frames.astype(dtype)
    if shift:
        np.left_shift(out, shift, out=out)
    return out, subtype


# ---------------------------------------------------------------- results

def song_files(song):
    """The song's players and picture: original, blend, vocal, instrumental, spectrogram
    (None where the file is not there, e.g. --mp3-only keeps MP3s)."""
    d, n = song.out_dir, song.name

    def first(*names):
        return next((str(d / x) for x in names if (d / x).is_file()), None)

    return {"blended": first(f"{n}_blended.wav", f"{n}_blended.mp3"),
            "vocal": first(f"{n}_vocal_residual.wav", f"{n}_vocal_residual.mp3"),
            "instrumental": first(f"{n}_phase_cancel.wav", f"{n}_phase_cancel.mp3"),
            "spectrogram": first(f"{n}_eval.png")}


def original_of(song):
    m = _manifest(song.out_dir, song.name) or {}
    path = (m.get("input") or {}).get("path")
    return path if path and Path(path).is_file() else None


def zip_song(song):
    """``zips/<track>.zip`` of the run: the song's output folder (re-blends included)."""
    dest = song.out_dir.parent.parent / "zips" / f"{song.name}.zip"
    return _zip([(p, f"{song.name}/{p.name}") for p in sorted(song.out_dir.iterdir())
                 if p.is_file() and not is_temp(p)], dest)


def zip_run(out_root, dest):
    """The whole run's outputs as one zip (every song's folder and the evaluation CSV)."""
    out_root = Path(out_root)
    items = [(p, str(p.relative_to(out_root))) for p in sorted(out_root.rglob("*"))
             if p.is_file() and not any(is_temp(q) for q in [p, *p.parents])]
    return _zip(items, dest)


def _zip(items, dest):
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.part")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as z:  # audio does not compress
        for path, arc in items:
            z.write(path, arc)
    os.replace(tmp, dest)
    return dest


SUMMARY_HEADERS = ["song", "status", "audio s", "time s", "reason or warnings", "song id"]
EVAL_HEADERS = ["song", "vocal change dB", "expected dB", "phase-cancel cosine",
                "voice STOI", "voice SDR (true stems)", "eval s"]


def summary_rows(outcome):
    rows = []
    ids = {s.name: s.id for s in outcome.songs}
    for r in outcome.results:
        rows.append([r.name, r.status, round(r.audio_seconds, 1), round(r.wall_seconds, 1),
                     r.reason or "; ".join(r.warnings), ids.get(r.name, "")])
    return rows


def eval_rows(rows):
    def v(row, key, digits):
        x = row.get(key)
        return None if x is None else round(float(x), digits)

    return [[r["track"], v(r, "vocal_change_db", 1), v(r, "vocal_change_expected_db", 1),
             v(r, "model_phase_cancel_cosine", 3),
             v(r, "model_voice_stoi", 3) if r.get("model_voice_stoi") is not None
             else v(r, "model_voice_estoi", 3), v(r, "ref_voice_sdr", 1),
             v(r, "eval_seconds", 1)] for r in rows]


ACCEPTED = sorted(AUDIO_EXTENSIONS)
