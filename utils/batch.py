"""Running a batch of tracks: in-process or in worker processes, with progress and a summary.

Every track ends in a TrackResult (ok, skipped or failed with a reason); one bad file never
stops the batch. With ``thread`` N > 1, this process and N-1 spawned worker processes take
tracks from one queue; each loads the separation model once and reuses it, with
``max(1, cores // N)`` torch threads.
"""

import logging
import logging.handlers
import multiprocessing as mp
import os
import signal
import sys
import threading
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from audio_utils.audio_io import remove_stale_temps
from utils.pipeline import TrackResult, process_track

log = logging.getLogger(__name__)

# Per-process state: the separator is built on first use and kept for every later track.
_state = {"cfg": None, "separator": None}


def torch_threads(workers):
    return max(1, (os.cpu_count() or 1) // max(1, workers))


def _get_separator():
    if _state["separator"] is None:
        from utils.separation import DemucsSeparator

        cfg = _state["cfg"]
        _state["separator"] = DemucsSeparator(
            demucs_model=cfg.demucs_model, model_repo=cfg.model_repo, device=cfg.device,
            shifts=cfg.shifts, overlap=cfg.overlap, segment=cfg.segment,
            other_method=cfg.other_method, thread=torch_threads(cfg.thread),
            progress=_state.get("progress"))
    return _state["separator"]


def _init_worker(cfg, log_queue, level):
    root = logging.getLogger()
    root.handlers[:] = [logging.handlers.QueueHandler(log_queue)]
    root.setLevel(level)
    _state["cfg"], _state["separator"] = cfg, None


def _work(track, out_root):
    return process_track(track, _state["cfg"], out_root, _get_separator)


class Progress:
    """Batch progress in audio-seconds on stderr: a tqdm bar on a terminal, plain log lines
    otherwise, nothing with --quiet."""

    def __init__(self, total_tracks, total_seconds, quiet):
        self.n_tracks, self.done = total_tracks, 0
        self.bar = self.sep_bar = None
        self.sep_quarter = 0
        self.quiet = quiet
        self._redirect = None
        if not quiet and sys.stderr.isatty():
            from tqdm import tqdm
            from tqdm.contrib.logging import logging_redirect_tqdm

            # Log lines go through tqdm.write so they print above the bars, not through them.
            self._redirect = logging_redirect_tqdm()
            self._redirect.__enter__()

            self.bar = tqdm(total=round(total_seconds, 1) or None, unit="s audio",
                            desc="VTrace", file=sys.stderr, dynamic_ncols=True,
                            bar_format="{l_bar}{bar}| {n:.0f}/{total_fmt} s audio "
                                       "[{elapsed}<{remaining}]")

    def separation(self, done, total):
        """Progress of the running separation, in audio-seconds (a second bar, or a log line
        at each quarter)."""
        if self.quiet:
            return
        if self.bar is not None:
            if self.sep_bar is None:
                from tqdm import tqdm

                self.sep_bar = tqdm(total=round(total, 1), unit="s audio", desc="separating",
                                    file=sys.stderr, position=1, leave=False,
                                    dynamic_ncols=True,
                                    bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} s audio "
                                               "[{elapsed}<{remaining}]")
            self.sep_bar.update(done - self.sep_bar.n)
            if done >= total:
                self.sep_bar.close()
                self.sep_bar = None
        else:
            quarter = int(4 * done / total) if total else 4
            if quarter > self.sep_quarter or done >= total:
                self.sep_quarter = 0 if done >= total else quarter
                log.info("separating: %.0f/%.0f s of audio", done, total)

    def audio(self, seconds):
        if self.bar is not None:
            self.bar.update(seconds)

    def track_done(self, result, counted_audio):
        self.done += 1
        if self.bar is not None:
            self.bar.update(max(0.0, result.audio_seconds - counted_audio))
            self.bar.set_postfix_str(f"{self.done}/{self.n_tracks} tracks")
        if result.status == "failed":
            log.error("[%d/%d] %s: failed: %s", self.done, self.n_tracks, result.name,
                      result.reason)
        else:  # the console shows it unless --quiet; the log file always keeps it
            log.info("[%d/%d] %s: %s (%.1f s audio in %.1f s)", self.done, self.n_tracks,
                     result.name, result.status, result.audio_seconds, result.wall_seconds)

    def close(self):
        for bar in (self.sep_bar, self.bar):
            if bar is not None:
                bar.close()
        if self._redirect is not None:
            self._redirect.__exit__(None, None, None)
            self._redirect = None


def check_separation(tracks, cfg):
    """Before any track runs: when some track needs separating, load the model in this
    process (it is one of the workers, so the load is not wasted) and check the options
    against it: an option the loaded model cannot take (--segment too long) ends the run up
    front. A model that cannot be loaded (unknown name, which may be a folder of another
    tool's stems that lacks a track, or no network) fails only the tracks that need it, each
    with that reason, so unreadable files and tracks with stems still go through."""
    from utils.errors import SeparationError, UsageError
    from utils.file_utils import stem_paths

    missing = [t.name for t in tracks if cfg.force
               or stem_paths(cfg.separated_dir, cfg.demucs_model, t.stems_name) is None]
    if not missing:
        return
    _state["cfg"] = cfg
    if _state.get("cfg_key") != _cfg_key(cfg):
        _state["separator"] = None
    _state["cfg_key"] = _cfg_key(cfg)
    separator = _get_separator()
    try:
        separator.check_options()
    except UsageError as exc:
        if separator._model is None:  # not loadable: each track that needs it says why
            log.debug("model not loaded up front: %s", exc)
            return
        shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3
                                          else "")
        raise UsageError(f"{exc} (needed because {len(missing)} track(s) have no stems in "
                         f"{cfg.separated_dir}/: {shown})") from None
    except SeparationError as exc:
        log.debug("model not loaded up front: %s", exc)


def run_batch(tracks, cfg, out_root, total_seconds=0.0):
    """Process every TrackInput; returns their TrackResults in input order.

    With ``thread`` N > 1 this process works as one of the N workers and N-1 spawned worker
    processes take the other tracks from the same queue: one process start less than N new
    workers, which matters when tracks are short.
    """
    progress = Progress(len(tracks), total_seconds, cfg.quiet)
    try:
        return _run(tracks, cfg, out_root, progress)
    finally:
        progress.close()


def _prepare_here(cfg, progress):
    _state["cfg"] = cfg
    if _state.get("separator") is not None and _state.get("cfg_key") != _cfg_key(cfg):
        _state["separator"] = None
    _state["cfg_key"] = _cfg_key(cfg)
    _state["progress"] = progress.separation
    if _state["separator"] is not None:
        _state["separator"].progress = progress.separation


def _run(tracks, cfg, out_root, progress):
    _prepare_here(cfg, progress)
    queue = deque(enumerate(tracks))
    lock = threading.Condition()
    results = {}
    helpers = min(cfg.thread, len(tracks)) - 1
    pool = listener = None

    def take():
        with lock:
            return queue.popleft() if queue else None

    def record(i, r, counted):
        with lock:
            results[i] = r
            lock.notify_all()
        progress.track_done(r, counted)

    def submit_next():
        item = take()
        if item is None:
            return
        try:
            future = pool.submit(_work, item[1], out_root)
        except Exception:  # the pool broke (a worker was killed): this process takes it
            with lock:
                queue.appendleft(item)
            return
        future.add_done_callback(lambda f, item=item: helper_done(item, f))

    def helper_done(item, future):
        if future.cancelled():
            return
        try:
            r = future.result()
        except Exception as exc:  # a worker died (killed, out of memory)
            i, t = item
            r = TrackResult(t.name, str(t.path), "failed",
                            f"worker process died: {type(exc).__name__}: {exc}")
        record(item[0], r, 0.0)
        submit_next()

    try:
        if helpers > 0:
            ctx = mp.get_context("spawn")
            log_queue = ctx.Queue()
            listener = logging.handlers.QueueListener(
                log_queue, *logging.getLogger().handlers, respect_handler_level=True)
            listener.start()
            pool = ProcessPoolExecutor(max_workers=helpers, mp_context=ctx,
                                       initializer=_init_worker,
                                       initargs=(cfg, log_queue, logging.DEBUG))
            # Workers start with Ctrl-C ignored (an ignored signal stays ignored across exec):
            # this process handles it, stops them and removes their temporary files.
            previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
            try:
                for _ in range(helpers):
                    submit_next()
            finally:
                signal.signal(signal.SIGINT, previous)
        while True:
            item = take()
            if item is not None:
                i, track = item
                counted = [0.0]

                def on_audio(seconds, counted=counted):
                    counted[0] += seconds
                    progress.audio(seconds)

                record(i, process_track(track, cfg, out_root, _get_separator, on_audio),
                       counted[0])
                continue
            with lock:
                if len(results) == len(tracks):
                    break
                lock.wait(0.2)
    except BaseException:
        if pool is not None:
            for p in list(getattr(pool, "_processes", {}).values()):
                p.terminate()  # Ctrl-C: stop workers now; their temp files are never renamed...
            pool.shutdown(wait=True, cancel_futures=True)
            for i, t in enumerate(tracks):  # ...and are removed here
                if i not in results:
                    remove_stale_temps(Path(out_root) / t.name)
        raise
    else:
        if pool is not None:
            # Every result is in and the helpers are idle: ending them now spares the second
            # or so a process with torch loaded takes to shut down by itself.
            for p in list(getattr(pool, "_processes", {}).values()):
                p.terminate()
            pool.shutdown(wait=True)
    finally:
        if listener is not None:
            listener.stop()
    return [results[i] for i in range(len(tracks))]


def _cfg_key(cfg):
    return (cfg.demucs_model, cfg.model_repo, cfg.device, cfg.shifts, cfg.overlap, cfg.segment,
            cfg.other_method, cfg.thread)


def summary_table(results):
    """The end-of-run table for stdout: track, status, audio length, time (and evaluation time
    when there was any), then the output folder or the reason it failed."""
    with_eval = any(r.eval_seconds for r in results)
    head = ("track", "status", "audio", "time") + (("eval",) if with_eval else ())
    rows = [head + ("output / reason",)]
    for r in results:
        cells = (r.name, r.status, f"{r.audio_seconds:.1f}s", f"{r.wall_seconds:.1f}s")
        if with_eval:
            cells += (f"{r.eval_seconds:.1f}s" if r.eval_seconds else "-",)
        rows.append(cells + (r.reason if r.status == "failed" else r.output_dir,))
    k = len(head)
    widths = [min(40, max(len(row[i]) for row in rows)) for i in range(k)]
    lines = ["  ".join([row[i][:widths[i]].ljust(widths[i]) for i in range(k)] + [row[k]])
             for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths) + "  " + "-" * 15)
    counts = {s: sum(r.status == s for r in results) for s in ("ok", "skipped", "failed")}
    lines.append(f"{len(results)} track(s): {counts['ok']} ok, {counts['skipped']} skipped, "
                 f"{counts['failed']} failed")
    return "\n".join(lines)


def output_root(cfg, first_input):
    from utils.file_utils import default_output_dir

    return Path(cfg.output) if cfg.output else default_output_dir(first_input)
