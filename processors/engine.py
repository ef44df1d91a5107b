"""The per-track engine every front door drives: the command line's batch, the web page and
cluster workers build an ``Engine`` from a Config and call it once per track.

    engine = Engine(cfg)
    engine.check(tracks)                      # usage errors before any track runs
    plan = engine.describe(track, out_root)   # stems present? outputs current?
    result = engine.process(track, out_root)  # a TrackResult, never raises for a bad track

The engine holds its separator, built from the Config's ``stems`` fields and loaded on first
use, so a process that handles many tracks loads the model once. It keeps no state between
tracks other than that, and nothing at module level.
"""

import contextlib
import logging
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from processors.track import (TrackResult, outputs_current, run_track, skipped_result,
                              stems_wanted)
from utils.atomic_files import (LOCK_NAME, WORK_PREFIX, no_space, output_lock,
                                remove_stale_temps)
from utils.errors import SeparationError, UnknownModelError, UsageError, VTraceError
from utils.inputs import default_output_dir
from utils.layout import OutputNames, find_stems, layout_stems, model_names, stems_folder

log = logging.getLogger(__name__)


def torch_threads(workers, cores=None):
    """Torch CPU threads for each of ``workers`` processes sharing the machine's cores."""
    if cores is None:  # the cores this process may run on (a container's or taskset's share)
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return max(1, (cores or os.cpu_count() or 1) // max(1, workers))


def output_root(cfg, first_input):
    """Where the track folders go: ``--output``, else vtrace_output/ beside the first input."""
    return Path(cfg.output) if cfg.output else default_output_dir(first_input)


@dataclass(frozen=True)
class TrackPlan:
    """What processing a track would do, found without processing it."""

    out_dir: Path
    stems_folder: Path
    stems: dict | None       # {name: path} of the job's stems when present, else None
    outputs_current: bool    # a rerun would skip it (same input, parameters, files present)

    @property
    def needs_separation(self):
        return self.stems is None and not self.outputs_current


class Engine:
    """Processes tracks with one Config. ``separation_progress(done_s, total_s)`` is told how
    far a running separation is, in audio-seconds."""

    def __init__(self, cfg, separation_progress=None, threads=None, model_error=None,
                 command=()):
        self.cfg = cfg
        self.command = list(command)  # recorded in manifests
        self.threads = threads if threads is not None else torch_threads(cfg.thread)
        self.separation_progress = separation_progress
        # Set by check() when the model cannot be loaded: tracks that need it then fail at
        # once with a short reason instead of each trying (and explaining) again.
        self.model_error = model_error
        self._separator = None

    @property
    def separator(self):
        """The separator, built on first use from the Config's ``stems`` fields."""
        if self._separator is None:
            from processors.separators import make_separator

            self._separator = make_separator(
                **self.cfg.settings("stems"), device=self.cfg.device, thread=self.threads,
                progress=self._report_separation, all_sources=self.cfg.multi_stem())
        return self._separator

    def _report_separation(self, done, total):
        if self.separation_progress is not None:
            self.separation_progress(done, total)

    def names(self, track, out_root):
        """Where the track's outputs go (``--filename`` under ``out_root``)."""
        cfg = self.cfg
        return OutputNames(out_root, cfg.filename, track.name, cfg.model,
                           cfg.settings("outputs"))

    def describe(self, track, out_root):
        """A TrackPlan: where the track's outputs and stems are, and whether they are current."""
        cfg = self.cfg
        names = self.names(track, out_root)
        stems = None if cfg.reseparate else find_stems(cfg.separated_dir, cfg.model,
                                                       track.stems_name, stems_wanted(cfg))
        folder = stems_folder(cfg.separated_dir, cfg.model, track.stems_name)
        current = not (cfg.force or cfg.reseparate) and _safe_current(
            track, cfg.params(), names, stems, folder)
        return TrackPlan(names.folder, folder, stems, current)

    def check(self, tracks, out_root, more=0):
        """Before any track runs: when some track needs separating, check the device and load
        the model (this process is one of the workers, so the load is not wasted) and check
        the options against it. A device that is not here, or an option the loaded model
        cannot take, raises UsageError. A model that cannot be loaded (an unknown name, which
        may be a folder of another tool's stems that lacks a track, or no network) is left to
        fail only the tracks that need it, each with that reason. ``more``: tracks still to
        come (links not downloaded yet), counted as needing separation."""
        if self.cfg.midi:
            from utils.extras import require

            require("midi", "--midi")
        missing = [t.name for t in tracks if self.describe(t, out_root).needs_separation]
        missing += [f"{more} link(s)"] * bool(more)
        if not missing:
            self._check_stem_names(tracks, None)
            return
        from processors.separation import resolve_device

        resolve_device(self.cfg.device)
        try:
            self.separator.check_options()
        except UnknownModelError as exc:
            self.model_error = exc  # each track says where its stems were looked for
            log.debug("not a model: %s", exc)
        except SeparationError as exc:
            self.model_error = exc
            log.error("error: %s; the %d track(s) without stems fail", exc, len(missing))
        except UsageError as exc:
            shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more"
                                              if len(missing) > 3 else "")
            raise UsageError(f"{exc} (needed because {len(missing)} track(s) have no stems in "
                             f"{self.cfg.separated_dir}/: {shown})") from None
        loaded = self.model_error is None and self.separator.loaded
        self._check_stem_names(tracks, self.separator.sources if loaded else None)

    def _check_stem_names(self, tracks, sources):
        """--target-stem / --stem-gain name stems of the model (``sources``, when loaded; a
        Demucs model known by name; else the stems in the tracks' layouts): UsageError
        listing them otherwise."""
        cfg = self.cfg
        if not cfg.multi_stem():
            return
        from processors.models import MODEL_SOURCES

        if sources is None and cfg.model_repo is None:
            sources = MODEL_SOURCES.get(cfg.model)
        where = f"model={cfg.model}"
        if sources is None:  # another tool's stems: what their layouts hold
            sources = list(dict.fromkeys(n for t in tracks for n in layout_stems(
                cfg.separated_dir, cfg.model, t.stems_name)))
            where = f"the stems in {Path(cfg.separated_dir) / cfg.model}/<track>/"
            if not sources:
                return  # no layout at all: each track fails saying where it looked
        unknown = [n for n in cfg.named_stems() if n not in sources]
        if unknown:
            flag = ("--target-stem" if unknown[0] == cfg.target_stem else "--stem-gain")
            raise UsageError(f"{flag} {unknown[0]}: {where} has no stem {unknown[0]} (its "
                             f"stems: {', '.join(sources)}); use one of those, or a model "
                             "with that stem (htdemucs_6s: + guitar, piano)")

    def process(self, track, out_root, progress=None):
        """Process one TrackInput into ``out_root/<track>/``; returns a TrackResult and never
        raises for a bad track (KeyboardInterrupt and SystemExit pass, with no temporary file
        left). ``progress(seconds)`` is called with audio-seconds rendered."""
        t0 = time.perf_counter()
        names = self.names(track, out_root)
        out_dir = names.folder
        result = TrackResult(track.name, str(track.path), "failed", output_dir=str(out_dir))
        # Folders this track creates: removed again if it ends with nothing in them.
        fresh = [(d, root) for d, root in ((out_dir, out_root),
                                           (self._stems_folder(track), self.cfg.separated_dir))
                 if not Path(d).exists()]
        try:
            remove_stale_temps(out_dir)
            plan = self.describe(track, out_root)
            if plan.outputs_current:
                done = skipped_result(names, self.cfg.eval)
                result.status = "skipped"
                result.reason = "same input, stems and settings; --force to redo"
            else:
                out_dir.mkdir(parents=True, exist_ok=True)
                with self._stems_lock(plan), \
                        tempfile.TemporaryDirectory(prefix=WORK_PREFIX, dir=out_dir) as work:
                    done = run_track(track, self.cfg, names, Path(work), self._separate,
                                     progress, self._run_info)
                result.status = "ok"
            result.audio_seconds = done.audio_seconds
            result.eval_seconds, result.eval_row = done.eval_seconds, done.eval_row
            result.warnings = list(done.warnings)
        except VTraceError as exc:
            result.reason = str(exc)
        except MemoryError:
            result.reason = "out of memory"
        except OSError as exc:
            full = no_space(Path(exc.filename).parent if exc.filename else out_dir, exc)
            result.reason = str(full) if full else f"{exc.strerror or exc}" + (
                f": {exc.filename}" if exc.filename else "")
        except Exception as exc:  # one bad file never stops the batch
            log.debug("unexpected error on %s", track.path, exc_info=True)
            result.reason = f"internal error: {type(exc).__name__}: {exc}"
        except BaseException:  # Ctrl-C, SIGTERM: no temporary file stays, no empty folder
            remove_stale_temps(out_dir)
            _remove_empty(fresh)
            raise
        finally:
            result.wall_seconds = time.perf_counter() - t0
        if result.status == "failed":  # a failed track leaves no folder of its own
            _remove_empty([(out_dir, out_root)] + fresh)
            result.reason = " ".join(result.reason.split()) or "failed"
        return result

    def discard(self, track, out_root):
        """What an interrupted ``process`` of ``track`` left (a worker killed while writing
        it): its temporary files, and its output and stems folders when that leaves them
        empty."""
        out_dir, stems = self.names(track, out_root).folder, self._stems_folder(track)
        remove_stale_temps(out_dir)  # the output folder is this run's (main holds its lock)
        if stems.parent.is_dir():  # stems another run is writing now are not leftovers
            try:
                with self._stems_lock(TrackPlan(out_dir, stems, None, False)):
                    remove_stale_temps(stems)
            except UsageError:
                pass
        _remove_empty([(out_dir, out_root), (stems, self.cfg.separated_dir)])

    def _stems_lock(self, plan):
        """A track about to be separated locks its stems folder: another run (with another
        output folder, the same separated/) writing it fails this track at once instead of
        having its live stems deleted as leftovers."""
        if plan.stems is not None:
            return contextlib.nullcontext()
        folder = plan.stems_folder  # not created here: --cleanup removes only what it creates
        folder.parent.mkdir(parents=True, exist_ok=True)
        return output_lock(folder, "stems folder", "give another --separated-dir",
                           folder.parent / f".{folder.name}{LOCK_NAME}")

    def _stems_folder(self, track):
        return stems_folder(self.cfg.separated_dir, self.cfg.model, track.stems_name)

    def _run_info(self, separated):
        """How this run went, for the manifest: command line, device and threads."""
        device = self._separator.device_used if separated and self._separator else None
        precision = self._separator.precision_ran if separated and self._separator else None
        return {"command": self.command, "device": device or "none (stems reused)",
                "precision": precision, "torch_threads": self.threads if separated else None,
                "models": model_names(self.cfg.model)}

    def _separate(self, mix_path, folder):
        if isinstance(self.model_error, UnknownModelError):
            raise self.model_error
        if self.model_error is not None:
            raise SeparationError(f"no stems, and model={self.cfg.model} cannot "
                                  "be loaded (the reason is printed above and in the log)")
        self.separator.separate_file(mix_path, folder)


def _remove_empty(folders):
    """For each ``(folder, root)``: remove ``folder`` and its parents below ``root`` while
    they are empty."""
    for folder, root in folders:
        folder, root = Path(folder), Path(root)
        while folder != root and folder.is_relative_to(root):
            try:
                folder.rmdir()
            except OSError:
                break
            folder = folder.parent


def _safe_current(track, params, names, stems, folder):
    try:
        return outputs_current(track, params, names, stems, folder)
    except VTraceError:
        return False  # an unreadable input is not current; processing says why
