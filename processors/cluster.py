"""Running a batch on a Ray cluster: a pool of Ray actors, each an Engine built once.

``run_cluster(engine, tracks, out_root, total_seconds)`` mirrors ``processors.batch.run_batch``:
every track ends in a TrackResult, returned in input order, and the files, manifests, resume,
summary table and exit code are those of a local run. Differences are only where the work runs:

- Each actor builds its Engine once from the driver's Config (the model is loaded once per
  actor) with torch's threads set explicitly to the CPUs it reserves (Ray sets
  OMP_NUM_THREADS to the actor's CPU count, 1 by default, which would otherwise decide it).
- Only paths travel through Ray: the inputs, stems and outputs are on storage every node sees.
- The driver hands each actor one track at a time, so it always knows which track an actor
  holds. An actor that dies (node lost, out of memory) takes only its track: it is replaced,
  the track is retried once on another actor, then fails with one line; the batch goes on.
- Log lines and rendering progress come back to the driver through a small channel actor and
  go through the driver's own logging and progress bar.
- Ctrl-C on the driver kills the actors, then removes the temporary files of every track that
  did not finish, so nothing that looks finished is left.

Ray is imported only here, inside the functions, so a run without ``--ray`` never imports it.
"""

import logging
import logging.handlers
import os
import re
import time
from collections import deque

from processors.engine import Engine
from processors.progress import Progress
from processors.track import TrackResult
from utils.errors import UsageError
from utils.extras import require

log = logging.getLogger(__name__)

_POLL_SECONDS = 0.2
_KILL_WAIT_SECONDS = 10.0
# Test hook: "name=count,...": the actor holding track ``name`` exits (as a lost node or an
# OOM kill would) in the middle of it on its first ``count`` attempts. Read by the driver and
# handed to the actors, so it works on any cluster.
EXIT_HOOK_ENV = "VTRACE_TEST_ACTOR_EXIT"


def check_cluster_options(cfg):
    """Usage errors of --ray, found before anything runs: the extra is installed, the
    address has a form Ray takes."""
    require("cluster", "--ray")
    address = cfg.ray
    if not (address in ("local", "auto") or address.startswith("ray://")
            or _host_port(address)):
        raise UsageError(f"ray={address!r}: use local, auto, ray://HOST:10001 or HOST:PORT "
                         "(the head node's GCS address)")


def _host_port(address):
    host, _, port = address.rpartition(":")
    return bool(host) and port.isdigit() and "/" not in host


def run_cluster(engine, tracks, out_root, total_seconds=0.0, on_done=None):
    """Process every TrackInput on Ray actors; returns their TrackResults in input order.
    ``on_done(track, result)`` is called here, in the driver, as each track ends."""
    import ray

    cfg = engine.cfg
    started_here = _connect(ray, cfg.ray)
    _route_raylet_messages(ray)
    progress = Progress(len(tracks), total_seconds, cfg.quiet)
    try:
        return _Cluster(ray, engine, tracks, out_root, progress, on_done).run()
    finally:
        progress.close()
        if started_here:
            ray.shutdown()


def _connect(ray, address):
    """Connect to (or, for ``local``, start) Ray; True when this call did it, so the run
    disconnects at the end. A Ray already initialised in this process is used as it is."""
    if ray.is_initialized():
        return False
    kwargs = dict(address=address, include_dashboard=False, log_to_driver=False,
                  logging_level=logging.WARNING)
    if address == "local":  # no metrics exporter to wait for (its retries end in an error line)
        kwargs["_system_config"] = {"enable_metrics_collection": False}
    import warnings

    # Ray's tip about CUDA_VISIBLE_DEVICES for num_gpus=0: its current behaviour (CPU actors
    # see no GPU) is the one wanted here.
    warnings.filterwarnings("ignore", message="Tip: In future versions of Ray",
                            category=FutureWarning)
    try:
        ray.init(**kwargs)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UsageError(f"ray={address}: cannot connect to a Ray cluster ({first}); start one "
                         "with `ray start --head`, or use --ray local") from None
    return True


def _route_raylet_messages(ray):
    """Ray prints the raylet's error messages (a worker that died...) on the driver's stdout,
    where the summary table goes: send them to the log file instead (the driver reports each
    death itself, in one line). Ray's private hook; left alone when it is not there."""
    worker = getattr(getattr(ray, "_private", None), "worker", None)
    original = getattr(worker, "print_to_stdstream", None)
    if original is None or getattr(original, "vtrace_routed", False):
        return

    def route(data, ignore_prefix):
        if data.get("pid") == "raylet":
            for line in data.get("lines", []):
                log.debug("ray: %s", line)
            return
        original(data, ignore_prefix)

    route.vtrace_routed = True
    worker.print_to_stdstream = route


def pool_size(cfg, resources, n_tracks):
    """How many actors: --ray-workers, else as many as the cluster's CPUs (and GPUs) hold;
    never more than the cluster holds (an actor that cannot be placed would hold its track
    forever) nor than the tracks. ``resources``: the cluster's totals."""
    cpus, gpus = resources.get("CPU", 0.0), resources.get("GPU", 0.0)
    fit = int(cpus // cfg.ray_cpus_per_worker)
    if cfg.ray_gpus_per_worker > 0:
        fit = min(fit, int(gpus // cfg.ray_gpus_per_worker))
    size = f"{cfg.ray_cpus_per_worker} CPU(s)" + (f" and {cfg.ray_gpus_per_worker:g} GPU(s)"
                                                   if cfg.ray_gpus_per_worker else "")
    if fit < 1:
        raise UsageError(f"the Ray cluster ({cpus:g} CPU(s), {gpus:g} GPU(s)) has no room for "
                         f"one actor of {size}: lower --ray-cpus-per-worker or "
                         "--ray-gpus-per-worker, or add nodes")
    wanted = cfg.ray_workers if cfg.ray_workers is not None else fit
    if wanted > fit:
        log.warning("--ray-workers %d: the cluster holds %d actor(s) of %s; using %d", wanted,
                    fit, size, fit)
    return max(1, min(wanted, fit, n_tracks))


def _exit_hook():
    spec = os.environ.get(EXIT_HOOK_ENV, "")
    hook = {}
    for part in filter(None, spec.split(",")):
        name, _, count = part.partition("=")
        hook[name] = int(count or 1)
    return hook


class _Channel:
    """Ray actor: what the track actors report (log records, rendering progress), in order,
    until the driver takes it."""

    def __init__(self):
        self.items = []

    def put(self, item):
        self.items.append(item)

    def take(self):
        items, self.items = self.items, []
        return items


class _ChannelHandler(logging.handlers.QueueHandler):
    """Log records of an actor, sent to the driver (formatted, as QueueHandler prepares
    them, so they pickle)."""

    def __init__(self, channel):
        super().__init__(None)
        self.channel = channel

    def enqueue(self, record):
        self.channel.put.remote(("log", record))


class TrackWorker:
    """Ray actor: one Engine built once from the driver's Config; processes the tracks it is
    sent, one at a time."""

    def __init__(self, cfg, threads, model_error, channel, report_separation, exit_hook,
                 command, cwd):
        root = logging.getLogger()
        root.handlers[:] = [_ChannelHandler(channel)]
        root.setLevel(logging.DEBUG)
        try:  # relative paths (inputs, -o, --separated-dir) mean what they mean on the driver
            os.chdir(cwd)
        except OSError as exc:
            log.warning("the driver's folder %s is not on this node (%s): relative paths will "
                        "not be found; use absolute paths on the shared filesystem", cwd,
                        exc.strerror or exc)
        os.environ["OMP_NUM_THREADS"] = str(threads)  # for anything started after this
        self.channel = channel
        self.exit_hook = exit_hook
        self.engine = Engine(cfg, threads=threads, model_error=model_error, command=command)
        if report_separation:
            self.engine.separation_progress = self._separation

    def _separation(self, done, total):
        self.channel.put.remote(("separation", done, total))

    def process(self, i, track, out_root, attempt):
        dies = attempt < self.exit_hook.get(track.name, 0)

        def on_audio(seconds):
            if dies:  # the test hook: die in the middle of the track, temporary files open
                os._exit(3)
            self.channel.put.remote(("audio", i, seconds))

        result = self.engine.process(track, out_root, on_audio)
        import ray

        ray.get(self.channel.put.remote(("flush",)))  # its log lines reach the driver first
        return result


class _Cluster:
    def __init__(self, ray, engine, tracks, out_root, progress, on_done):
        self.ray, self.engine, self.tracks, self.out_root = ray, engine, tracks, out_root
        self.progress, self.on_done = progress, on_done
        self.results, self.counted, self.attempts = {}, {}, {}
        self.actors, self.started = [], 0
        cfg = engine.cfg
        self.threads = cfg.ray_cpus_per_worker
        self.options = dict(num_cpus=cfg.ray_cpus_per_worker, num_gpus=cfg.ray_gpus_per_worker,
                            max_restarts=0, max_task_retries=0)
        self.hook = _exit_hook()

    # ------------------------------------------------------------------ actors

    def _new_actor(self):
        ray = self.ray
        cls = ray.remote(TrackWorker).options(**self.options)
        actor = cls.remote(self.engine.cfg, self.threads, self.engine.model_error,
                           self.channel, self.started == 0, self.hook, self.engine.command,
                           os.getcwd())
        self.started += 1
        self.actors.append(actor)
        return actor

    def _drain(self):
        for item in self.ray.get(self.channel.take.remote()):
            kind = item[0]
            if kind == "log":
                record = item[1]
                for handler in logging.getLogger().handlers:
                    if record.levelno >= handler.level:
                        handler.handle(record)
            elif kind == "audio":
                self.counted[item[1]] = self.counted.get(item[1], 0.0) + item[2]
                self.progress.audio(item[2])
            elif kind == "separation":
                self.progress.separation(item[1], item[2])

    def _record(self, i, result):
        self.results[i] = result
        self.progress.track_done(result, self.counted.get(i, 0.0))
        if self.on_done is not None:
            self.on_done(self.tracks[i], result)

    def _clean(self, track):
        """Remove what an attempt that ended abruptly left: temporary files in the track's
        output and stems folders, and those folders when that leaves them empty."""
        self.engine.discard(track, self.out_root)

    # ------------------------------------------------------------------ the loop

    def run(self):
        ray = self.ray
        self.channel = ray.remote(_Channel).options(num_cpus=0).remote()
        n = pool_size(self.engine.cfg, ray.cluster_resources(), len(self.tracks))
        log.info("Ray: %d actor(s) of %d CPU(s)%s each, torch threads %d", n,
                 self.engine.cfg.ray_cpus_per_worker,
                 f" and {self.engine.cfg.ray_gpus_per_worker:g} GPU(s)"
                 if self.engine.cfg.ray_gpus_per_worker else "", self.threads)
        idle = [self._new_actor() for _ in range(n)]
        pending = deque(enumerate(self.tracks))
        running = {}  # ObjectRef -> (actor, i)
        try:
            while pending or running:
                while idle and pending:
                    actor = idle.pop(0)
                    i, track = pending.popleft()
                    ref = actor.process.remote(i, track, self.out_root, self.attempts.get(i, 0))
                    running[ref] = (actor, i)
                ready, _ = ray.wait(list(running), num_returns=1, timeout=_POLL_SECONDS)
                self._drain()
                for ref in ready:
                    actor, i = running.pop(ref)
                    track = self.tracks[i]
                    try:
                        result = ray.get(ref)
                    except ray.exceptions.RayActorError as exc:
                        self._clean(track)
                        self.actors.remove(actor)
                        idle.append(self._new_actor())
                        self.counted.pop(i, None)
                        reason = _death(exc)
                        if self.attempts.get(i, 0) == 0:
                            self.attempts[i] = 1
                            log.warning("%s: the Ray actor processing it died (%s); retrying "
                                        "on another actor", track.name, reason)
                            pending.appendleft((i, track))
                            continue
                        result = TrackResult(
                            track.name, str(track.path), "failed",
                            f"the Ray actor processing it died twice ({reason})")
                        self._clean(track)
                    except ray.exceptions.RayError as exc:  # Engine.process never raises; Ray may
                        self._clean(track)
                        result = TrackResult(track.name, str(track.path), "failed",
                                             " ".join(f"Ray error: {exc}".split())[:300])
                        idle.append(actor)
                    else:
                        idle.append(actor)
                    self._record(i, result)
        except BaseException:  # Ctrl-C: stop the remote work, leave nothing half-written
            self._stop(list(running))
            for i, track in enumerate(self.tracks):
                if i not in self.results:
                    self._clean(track)
            raise
        self._stop([])
        return [self.results[i] for i in range(len(self.tracks))]

    def _stop(self, in_flight):
        ray = self.ray
        for actor in self.actors:
            try:
                ray.kill(actor, no_restart=True)
            except Exception:  # already gone, or the cluster is going down
                pass
        if in_flight:  # wait until the killed actors are gone before their files are removed
            deadline = time.monotonic() + _KILL_WAIT_SECONDS
            left = list(in_flight)
            while left and time.monotonic() < deadline:
                try:
                    done, left = ray.wait(left, num_returns=len(left), timeout=0.5)
                except Exception:
                    break
        try:
            ray.kill(self.channel, no_restart=True)
        except Exception:
            pass
        self.actors = []


def _death(exc):
    """A short reason from a RayActorError, not Ray's whole explanation. An actor that could
    not start (vtrace not installed on that node, say) names the error it raised."""
    text = str(exc)
    if "creation task" in text:
        errors = re.findall(r"^\s*(\w+(?:Error|Exception): .+)$", text, re.MULTILINE)
        return "it could not start: " + (errors[-1].strip()[:200] if errors else "see the log")
    if "OutOfMemory" in type(exc).__name__ or "out of memory" in text.lower():
        return "out of memory"
    if "node" in text.lower() and "died" in text.lower():
        return "its node was lost"
    return "its process exited unexpectedly"
