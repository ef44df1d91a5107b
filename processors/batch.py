"""Running a batch of tracks through one Engine: in this process, or with worker processes.

Every track ends in a TrackResult (ok, skipped or failed with a reason); one bad file never
stops the batch. With ``thread`` N > 1 this process works as one of the N workers and N-1
spawned worker processes take the other tracks: each builds its own Engine from the same
Config (model loaded once per process, ``max(1, cores // N)`` torch threads). A dispatcher
thread here hands each worker its next track when it reports the previous one, so this
process always knows which track each worker holds: a worker that dies fails only that track.

Workers die with this process: on Linux the kernel sends them SIGTERM when it ends (even by
SIGKILL), elsewhere a thread in each worker watches its parent. A worker turns SIGTERM into
``Terminated``, so the track it was writing removes its temporary files on the way out. When
the run is interrupted (Ctrl-C, SIGTERM), this process stops the workers first, then removes
what the unfinished tracks left, so nothing half-written stays.
"""

import logging
import logging.handlers
import multiprocessing as mp
import os
import queue as queue_module
import signal
import sys
import threading
import time
from collections import deque

from processors.engine import Engine
from processors.progress import Progress
from processors.track import TrackResult
from utils.errors import Terminated

log = logging.getLogger(__name__)

_POLL_SECONDS = 0.2  # how often the dispatcher looks for a worker that died
_PARENT_WATCH_SECONDS = 0.5  # how often a worker checks that its parent still runs
_STOP_GRACE_SECONDS = 10.0  # how long a stopped worker has to clean up before SIGKILL
_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def run_batch(engine, tracks, out_root, total_seconds=0.0, on_done=None):
    """Process every TrackInput with ``engine``; returns their TrackResults in input order.
    ``on_done(track, result)`` is called in this process as each track ends."""
    cfg = engine.cfg
    progress = Progress(len(tracks), total_seconds, cfg.quiet)
    engine.separation_progress = progress.separation
    try:
        return _Batch(engine, tracks, out_root, progress, on_done).run()
    finally:
        engine.separation_progress = None
        progress.close()


class _Batch:
    def __init__(self, engine, tracks, out_root, progress, on_done=None):
        self.engine, self.tracks, self.out_root = engine, tracks, out_root
        self.progress, self.on_done = progress, on_done
        self.pending = deque(enumerate(tracks))
        self.results = {}
        self.lock = threading.Condition()

    def take(self):
        with self.lock:
            return self.pending.popleft() if self.pending else None

    def record(self, i, result, counted=0.0):
        with self.lock:
            self.results[i] = result
            self.lock.notify_all()
        self.progress.track_done(result, counted)
        if self.on_done is not None:
            with self.lock:  # one writer at a time (the dispatcher thread records too)
                self.on_done(self.tracks[i], result)

    def run(self):
        helpers = min(self.engine.cfg.thread, len(self.tracks)) - 1
        workers = _Workers(self, helpers) if helpers > 0 else None
        try:
            if workers is not None:
                workers.start()
            while True:
                item = self.take()
                if item is None:
                    break
                i, track = item
                counted = [0.0]

                def on_audio(seconds, counted=counted):
                    counted[0] += seconds
                    self.progress.audio(seconds)

                self.record(i, self.engine.process(track, self.out_root, on_audio), counted[0])
            with self.lock:
                while len(self.results) < len(self.tracks):
                    self.lock.wait(_POLL_SECONDS)
        except BaseException:
            if workers is not None:
                workers.stop()  # they remove their own temporaries; this is the fallback
                for i, t in enumerate(self.tracks):  # what the stopped workers held
                    if i not in self.results:
                        self.engine.discard(t, self.out_root)
            raise
        if workers is not None:
            workers.stop()  # all results are in: idle workers end now, not when they notice
        return [self.results[i] for i in range(len(self.tracks))]


class _Workers:
    """N-1 worker processes fed one track at a time by a dispatcher thread."""

    def __init__(self, batch, count):
        self.batch, self.count = batch, count
        self.ctx = mp.get_context("spawn")
        self.replies = self.ctx.Queue()
        self.log_queue = self.ctx.Queue()
        self.inboxes, self.procs, self.holding = [], [], {}
        self.listener = logging.handlers.QueueListener(
            self.log_queue, *logging.getLogger().handlers, respect_handler_level=True)
        self.dispatcher = threading.Thread(target=self._dispatch, name="vtrace-dispatch",
                                           daemon=True)
        self.stopping = threading.Event()

    def start(self):
        self.listener.start()
        cfg = self.batch.engine.cfg
        # Workers start with Ctrl-C ignored (an ignored signal stays ignored in the child):
        # this process handles it, stops them and removes their temporary files.
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            for w in range(self.count):
                inbox = self.ctx.Queue()
                proc = self.ctx.Process(
                    target=worker_main, name=f"vtrace-worker-{w + 1}", daemon=True,
                    args=(w, cfg, self.batch.out_root, inbox, self.replies, self.log_queue,
                          self.batch.engine.threads, self.batch.engine.model_error,
                          os.getpid()))
                proc.start()
                self.inboxes.append(inbox)
                self.procs.append(proc)
                self._send(w)
        finally:
            signal.signal(signal.SIGINT, previous)
        self.dispatcher.start()

    def _send(self, w):
        item = self.batch.take()
        self.holding[w] = item
        self.inboxes[w].put(item)  # None: no more work, the worker ends

    def _dispatch(self):
        while not self.stopping.is_set():
            try:
                w, i, result = self.replies.get(timeout=_POLL_SECONDS)
            except queue_module.Empty:
                self._check_alive()
                continue
            except (EOFError, OSError):
                return
            self.batch.record(i, result)
            self._send(w)

    def _check_alive(self):
        for w, proc in enumerate(self.procs):
            item = self.holding.get(w)
            if item is None or proc.is_alive() or self.stopping.is_set():
                continue
            self.holding[w] = None
            i, track = item
            self.batch.engine.discard(track, self.batch.out_root)
            self.batch.record(i, TrackResult(
                track.name, str(track.path), "failed",
                f"worker process died (exit code {proc.exitcode}) while processing it"))

    def stop(self):
        """End the workers: SIGTERM (each removes the temporary files of the track it holds),
        SIGKILL for one that does not end within the grace time. The dispatcher ends first,
        so a worker stopped here is never reported as a worker that died."""
        self.stopping.set()
        if self.dispatcher.is_alive():
            self.dispatcher.join()
        for proc in self.procs:
            if proc.is_alive():
                proc.terminate()
        deadline = time.monotonic() + _STOP_GRACE_SECONDS
        for proc in self.procs:
            proc.join(max(0.0, deadline - time.monotonic()))
            if proc.is_alive():
                proc.kill()
                proc.join()
        self.listener.stop()
        for q in self.inboxes + [self.replies, self.log_queue]:
            q.close()
            q.cancel_join_thread()


def worker_main(worker_id, cfg, out_root, inbox, replies, log_queue, threads, model_error=None,
                parent_pid=None):
    """A worker process: builds its Engine once, then processes the tracks it is sent until
    it is sent None. SIGTERM, or the end of ``parent_pid``, ends it with exit code 143 once
    the track it holds has removed its temporary files."""
    signal.signal(signal.SIGTERM, _raise_terminated)
    if parent_pid is not None:
        _die_with_parent(parent_pid)
    root = logging.getLogger()
    root.handlers[:] = [logging.handlers.QueueHandler(log_queue)]
    root.setLevel(logging.DEBUG)
    try:
        engine = Engine(cfg, threads=threads, model_error=model_error)
        while True:
            item = inbox.get()
            if item is None:
                return
            i, track = item
            replies.put((worker_id, i, engine.process(track, out_root)))
    except Terminated:
        # Nobody may read the queues any more: do not wait for them on the way out.
        for q in (replies, log_queue):
            q.cancel_join_thread()
        sys.exit(143)


def _raise_terminated(signum, frame):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # one cleanup, not one per signal
    raise Terminated()


def _die_with_parent(parent_pid):
    """Have this process receive SIGTERM when ``parent_pid`` ends, however it ends: the
    kernel's parent-death signal on Linux, and a watching thread everywhere (it also covers a
    parent that ended before the signal was armed)."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        except (OSError, AttributeError):
            pass  # the watching thread still covers it

    def watch():
        while os.getppid() == parent_pid:
            time.sleep(_PARENT_WATCH_SECONDS)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="vtrace-parent-watch", daemon=True).start()
