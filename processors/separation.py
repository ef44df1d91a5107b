"""Vocal separation with Demucs 4.1: two stems (``vocals.wav`` + ``no_vocals.wav``), or with
``all_sources`` every source of the model too (``drums.wav``, ``bass.wav``... Demucs' layout).

The model is loaded once per process and reused.  Tracks are separated as a stream: the mix is
read from disk window by window and finished stem samples are written as soon as no later model
segment can change them, so memory does not grow with track length.  The stream walks exactly
the segment grid, shift padding and bag weights of ``demucs.apply.apply_model`` (demucs 4.1.0,
pinned), so for the same random shift offsets its output equals ``demucs.api.Separator`` on the
whole mix to float rounding (the normalising mean/std are summed in float64 here: measured max
abs difference < 1e-7 on unit-scale signals; tests/test_separation.py asserts < 1e-5).

Stems are float32 WAV at the model's rate (no clipping or per-stem rescale, so O = V + I holds).
"""

import contextlib
import logging
import math
import os
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional


from audio_utils.audio_io import BlockWriter
from processors.demucs_stream import MixReader, Stream, norm_stats
from utils.allocator import RELEASE_EVERY_S, keep_freed_memory, release_free_memory
from utils.errors import (InputError, OutputError, SeparationError, UnknownModelError,
                          UsageError, VTraceError)

logger = logging.getLogger(__name__)


def _passive_openmp_waits():
    """OMP_WAIT_POLICY=PASSIVE unless the user set it: idle OpenMP threads sleep instead of
    spinning, which costs nothing on a quiet machine and keeps a busy one (other workers, a
    neighbour) from slowing every parallel region (see README, Benchmarks). OpenMP reads it
    when torch loads, so this runs on import of this module, the only way VTrace's separation
    reaches torch (in the main process and in each spawned worker)."""
    if "torch" not in sys.modules:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


_passive_openmp_waits()

STEMS = ("vocals.wav", "no_vocals.wav")
DEVICES = ("auto", "cpu", "cuda", "mps")
OTHER_METHODS = ("add", "minus")
PRECISIONS = ("float32", "bfloat16", "auto")
# --precision auto on a CPU with native bf16: whether bf16 is chosen. Set from
# bench/bench_separation.py (e) on an AVX512-BF16/AMX CPU: bf16 0.99x-2.33x the speed of
# float32 over 7 pairs (median 1.48x, htdemucs), stems 46-51 dB SDR from float32 (random
# weights); see README, Benchmarks.
AUTO_BF16_ON_CPU = True
# No invented minimum length: what the model takes is separated (demucs_unittest takes a single
# sample with shifts >= 1, whose padding lengthens the input, and 5 samples with shifts=0).
# Shorter still, GroupNorm refuses the input; that failure is reported as "too short".
_TOO_SHORT = "Expected more than 1 value per channel"  # torch's GroupNorm/BatchNorm message


@dataclass(frozen=True)
class SeparationResult:
    """Where the stems went and how the separation ran."""
    vocals: Path
    no_vocals: Path
    seconds: float          # wall-clock seconds spent separating this track
    device: str             # device that actually produced the stems ("cpu" after a fallback)
    samplerate: int         # the model's rate, which the stems are written at
    audio_seconds: float    # duration of the mix
    precision: str = "float32"  # float32 or bfloat16: what the model actually ran in


def write_stem_blocks(blocks, out_dir, names, samplerate, frames, release_memory=False):
    """Write a separation's stream, ``{name: float32 (2, n) block}`` in order, to
    ``out_dir/<name>.wav`` for each of ``names`` (float32 WAV): temporary files renamed into
    place once the stream ends, removed if it fails. A write error is an OutputError.

    ``release_memory`` (the separator kept freed memory, ``utils.allocator``): free pages go
    back to the OS every ``RELEASE_EVERY_S`` of audio written and at the end."""
    writers = {name: BlockWriter(Path(out_dir) / f"{name}.wav", samplerate, 2, "float32",
                                 frames) for name in names}
    every = int(RELEASE_EVERY_S * samplerate)
    done, next_release = 0, every
    try:
        for block in blocks:
            for name, x in block.items():
                writers[name].write(x)
            done += next(iter(block.values())).shape[-1] if block else 0
            if release_memory and done >= next_release:
                release_free_memory()
                next_release = done + every
        for w in writers.values():
            w.commit()
    except OSError as exc:
        raise OutputError(f"cannot write stems in {out_dir}: {_one_line(exc)}; check free "
                          "space and permissions") from None
    finally:
        for w in writers.values():
            w.discard()
        if release_memory:
            release_free_memory()


def resolve_device(requested: str) -> str:
    """Map ``auto|cpu|cuda|mps`` to an available torch device name (auto: cuda, mps, cpu)."""
    if requested not in DEVICES:
        raise ValueError(f"unknown device={requested!r}; use one of {', '.join(DEVICES)}")
    import torch
    cuda = torch.cuda.is_available()
    mps = hasattr(torch.backends, "mps") and torch.backends.mps.is_available()
    if requested == "auto":
        return "cuda" if cuda else "mps" if mps else "cpu"
    if (requested == "cuda" and not cuda) or (requested == "mps" and not mps):
        raise UsageError(f"device={requested} is not available on this machine; "
                         "use --device auto or --device cpu")
    return requested


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (x86 AVX512-BF16 or AMX-BF16, Arm BF16);
    without it torch emulates bf16 and is slower than float32."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})
    except OSError:
        pass
    return False


def resolve_precision(requested: str, device: str) -> str:
    """Map ``float32|bfloat16|auto`` on a resolved device to ``float32`` or ``bfloat16``.

    bfloat16 runs under torch.autocast: on CPU only where the CPU has native bf16 (emulated bf16
    is slower than float32: UsageError), on CUDA only where the GPU supports it. ``auto`` picks
    bfloat16 only where it was measured faster: CUDA with bf16, and a native-bf16 CPU when
    AUTO_BF16_ON_CPU."""
    if requested not in PRECISIONS:
        raise ValueError(f"unknown precision={requested!r}; use one of {', '.join(PRECISIONS)}")
    if requested == "float32":
        return "float32"
    if device == "cuda":
        import torch
        ok = torch.cuda.is_bf16_supported()
        why = "this GPU has no bfloat16 support"
    elif device == "cpu":
        ok = cpu_has_native_bf16()
        why = ("this CPU has no native bfloat16 (AVX512-BF16/AMX), so torch would emulate it, "
               "slower than float32")
    else:
        ok, why = False, f"bfloat16 is not supported on device={device}"
    if requested == "auto":
        return "bfloat16" if ok and (device != "cpu" or AUTO_BF16_ON_CPU) else "float32"
    if not ok:
        raise UsageError(f"precision=bfloat16: {why}; use --precision float32 or auto")
    return "bfloat16"


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]


def _load_model(name: str, repo: Optional[Path], vocals_only: bool = False):
    """demucs' get_model with its failures (sys.exit, tracebacks) turned into one-line errors."""
    online = repo is not None or _network_reachable()
    if not online:
        # Before huggingface_hub is imported: use its cache only, instead of ~25 s of retries.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_VERBOSITY", "error")  # its retry chatter is not for users
    from demucs.pretrained import REMOTE_ROOT, _parse_remote_files, get_model
    fix = f"or pass --model-repo DIR holding {name}.yaml and/or its .th files"
    if repo is not None:
        from demucs.api import list_models
        if not repo.is_dir():
            raise SeparationError(f"model_repo={repo} is not a folder; point --model-repo at "
                                  "the folder holding the model's .yaml/.th files")
        found = {k for kind in list_models(repo).values() for k in kind}
        if name not in found:
            raise UnknownModelError(f"model={name} is not in model_repo={repo} (it holds: "
                                  f"{', '.join(sorted(found)) or 'no .yaml/.th files'}); "
                                  "use one of those names or another --model-repo")
    elif name != "demucs_unittest" and "/" not in name:  # "/" or hf://: a Hugging Face name
        known = {p.stem for p in REMOTE_ROOT.glob("*.yaml")}
        known |= set(_parse_remote_files(REMOTE_ROOT / "files.txt"))
        if name not in known:
            raise UnknownModelError(
                f"unknown model={name}; use one of "
                f"{', '.join(sorted(k for k in known if not k[0].isdigit()))}, {fix}")
    try:
        # stdout is the summary's: download chatter (prints, progress bars) goes to stderr
        with contextlib.redirect_stdout(sys.stderr):
            bag = _load_bag_for_vocals(name, repo) if vocals_only else None
            return bag if bag is not None else get_model(name, repo)
    except (Exception, SystemExit) as exc:
        if repo is not None:
            raise SeparationError(f"cannot load model={name} from model_repo={repo}: "
                                  f"{_one_line(exc)}; check or rebuild its files") from None
        import torch
        try:
            from huggingface_hub.constants import HF_HUB_CACHE
        except ImportError:
            HF_HUB_CACHE = "~/.cache/huggingface/hub"
        why = ("there is no network to download it" if not online
               else f"downloading failed ({_one_line(exc)})")
        raise SeparationError(
            f"cannot load model={name}: not in the Hugging Face cache "
            f"({HF_HUB_CACHE}) nor the torch hub cache ({torch.hub.get_dir()}) and {why}; "
            f"run once with network access, {fix}") from None


def _load_bag_for_vocals(name, repo):
    """For --other-method minus: the bag ``name`` with only the sub-models whose weight for
    "vocals" is non-zero loaded (1 of 4 for htdemucs_ft: a second less of loading). The
    others are stood in for by a loaded sub-model; with a zero weight they are never run.
    Returns None (load the usual way) for a single model or a bag without per-source weights.
    """
    import yaml
    from demucs.apply import BagOfModels

    if repo is not None:
        from demucs.repo import LocalRepo

        spec_path = Path(repo) / f"{name}.yaml"
        load = LocalRepo(Path(repo)).get_model
    else:
        from demucs.hf import DEFAULT_NAMESPACE, hf_repo_name, load_safetensors_model
        from huggingface_hub import hf_hub_download

        namespace, short = name.split("/", 1) if "/" in name else (DEFAULT_NAMESPACE, name)
        repo_id = f"{namespace}/{hf_repo_name(short)}"
        try:
            spec_path = hf_hub_download(repo_id, f"{short}.yaml")
        except Exception:
            return None  # not an HF bag: demucs' own loader decides (and words the error)

        def load(sig):
            return load_safetensors_model(hf_hub_download(repo_id, f"{sig}.safetensors"))
    if not Path(spec_path).is_file():
        return None
    with open(spec_path) as f:
        spec = yaml.safe_load(f)
    sigs, weights = spec.get("models", []), spec.get("weights")
    if len(sigs) < 2 or weights is None:
        return None
    loaded = {sigs[0]: load(sigs[0])}  # one load tells where "vocals" sits in the weights
    vi = loaded[sigs[0]].sources.index("vocals")
    models = []
    for sig, w in zip(sigs, weights):
        if w[vi] and sig not in loaded:
            loaded[sig] = load(sig)
        models.append(loaded.get(sig) if w[vi] else loaded[sigs[0]])
    bag = BagOfModels(models, weights, spec.get("segment"))
    bag.eval()
    return bag


def _network_reachable(host="huggingface.co", port=443, timeout=3.0):
    """Whether the model host answers at all (a failed name lookup answers at once)."""
    import socket

    try:
        socket.create_connection((host, port), timeout=timeout).close()
        return True
    except OSError:
        return False


def _max_segment(model) -> float:
    """Longest segment (s) the model accepts: transformer models only saw their training length."""
    from demucs.apply import BagOfModels
    from demucs.htdemucs import HTDemucs
    if isinstance(model, BagOfModels):
        return model.max_allowed_segment
    return float(model.segment) if isinstance(model, HTDemucs) else math.inf


class DemucsSeparator:
    """Demucs two-stem separation; the model is loaded on first use and kept for every track.

    Args (names match the config keys):
        model: model name (``htdemucs_ft``, ``demucs_unittest``...) or a name in
            ``model_repo``.
        model_repo: a local folder of demucs ``.yaml``/``.th`` files (demucs ``--repo``), or None
            for the Hugging Face / demucs download caches.
        device: ``auto|cpu|cuda|mps``.
        shifts: random-shift passes averaged (demucs ``--shifts``), >= 0.
        overlap: overlap of consecutive model segments, 0 <= overlap < 1.
        segment: model segment in seconds, or None for the model's own.
        other_method: ``add`` (no_vocals = sum of the other sources) or ``minus``
            (no_vocals = mix - vocals; bag sub-models with no vocals weight are skipped, unless
            ``all_sources``).
        precision: ``float32`` (equal to demucs), ``bfloat16`` (torch.autocast; needs native
            bf16 on CPU) or ``auto`` (bfloat16 where measured faster); see resolve_precision.
        thread: torch CPU threads for this process, or None to keep torch's default.
        progress: called as ``progress(done_seconds, total_seconds)`` in audio seconds.
        all_sources: also write each of the model's sources as ``<source>.wav`` (for a target
            stem other than vocals, or stem gains); every sub-model then runs.
    """

    def __init__(self, model: str = "htdemucs_ft", model_repo=None, device: str = "auto",
                 shifts: int = 1, overlap: float = 0.25, segment: Optional[float] = None,
                 other_method: str = "add", precision: str = "float32",
                 thread: Optional[int] = None,
                 progress: Optional[Callable[[float, float], None]] = None,
                 all_sources: bool = False):
        self.model_name = model
        self.model_repo = None if model_repo is None else Path(model_repo)
        self.device, self.shifts, self.overlap = device, shifts, overlap
        self.segment, self.other_method, self.thread = segment, other_method, thread
        self.precision = precision
        self.all_sources = bool(all_sources)
        self.precision_used = None  # float32 or bfloat16, once the options are checked
        # Segments per forward pass: None chooses (1 on CPU, from free memory on CUDA).
        self.batch_segments = None
        self.progress = progress
        self._model = None
        self.device_used = None  # where the last separation ran (after any fallback)
        self.precision_ran = None  # and in which precision (float32 or bfloat16)
        self._load_error = None
        self._checked = False
        self._keeps_memory = False  # whether loading the model set utils.allocator's malloc

    @property
    def model(self):
        """The loaded demucs model or bag (loads it on first access)."""
        if self._model is None:
            if self._load_error is not None:  # fail every later track at once, not after
                raise self._load_error        # another round of download retries
            self._keeps_memory = keep_freed_memory()
            if self.thread:
                import torch
                torch.set_num_threads(self.thread)
            try:
                self._model = _load_model(self.model_name, self.model_repo,
                                          vocals_only=self.other_method == "minus"
                                          and not self.all_sources)
            except VTraceError as exc:
                self._load_error = exc
                raise
        return self._model

    @property
    def loaded(self) -> bool:
        """Whether the model is in memory (a failed load leaves it False)."""
        return self._model is not None

    @property
    def samplerate(self) -> int:
        return int(self.model.samplerate)

    @property
    def audio_channels(self) -> int:
        return int(self.model.audio_channels)

    def check_options(self, load_model: bool = True) -> None:
        """Check the options up front.  Values outside their ranges are the caller's contract
        (ValueError: Config.validate has ruled them out).  The device must exist here and, with
        ``load_model`` (the default), the loaded model must take the options (vocals source,
        segment limit): UsageError otherwise.  A model that cannot be loaded raises
        SeparationError (each track that needs it fails with that reason)."""
        if self._checked:
            return
        if not isinstance(self.shifts, int) or self.shifts < 0:
            raise ValueError(f"shifts={self.shifts!r} must be an integer >= 0 (1 is usual)")
        if not 0 <= self.overlap < 1:
            raise ValueError(f"overlap={self.overlap!r} must be in [0, 1) (0.25 is usual)")
        if self.other_method not in OTHER_METHODS:
            raise ValueError(f"other_method={self.other_method!r}; use add or minus")
        if self.segment is not None and not self.segment > 0:
            raise ValueError(f"segment={self.segment!r} must be > 0 seconds, or unset")
        if self.thread is not None and (not isinstance(self.thread, int) or self.thread < 1):
            raise ValueError(f"thread={self.thread!r} must be an integer >= 1, or unset")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision={self.precision!r}; use one of {', '.join(PRECISIONS)}")
        self._device = resolve_device(self.device)
        self.precision_used = resolve_precision(self.precision, self._device)
        if not load_model:
            return
        model = self.model
        if "vocals" not in model.sources:
            raise UsageError(f"model={self.model_name} has no vocals source "
                             f"({', '.join(model.sources)}); pick a vocals model")
        top = _max_segment(model)
        if self.segment is not None and self.segment > top:
            raise UsageError(f"segment={self.segment} is longer than model="
                             f"{self.model_name} allows (max {top:.2f} s); use --segment "
                             f"{math.floor(top * 10) / 10} or less, or leave it unset")
        first = model.models[0] if hasattr(model, "models") else model
        seg = self.segment if self.segment is not None else min(top, float(first.segment))
        if int((1 - self.overlap) * int(seg * model.samplerate)) < 1:
            raise UsageError(f"overlap={self.overlap} leaves no hop between segments of "
                              f"{seg} s; lower --overlap")
        self._checked = True

    def separate_file(self, mix_path, out_dir) -> SeparationResult:
        """Separate ``mix_path`` into ``out_dir/vocals.wav`` and ``out_dir/no_vocals.wav``.

        The mix may be any file soundfile reads, at any rate (resampled to the model's rate) and
        channel count (mono duplicated, more than two downmixed with a warning).  Stems are
        float32 WAV, shaped like the mix after that conversion, each written to a temporary name
        and then renamed.  Raises InputError (unreadable/too short mix), SeparationError (model
        failure), OutputError (stems not writable).
        """
        self.check_options()
        mix_path, out_dir = Path(mix_path), Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        sr, t0 = self.samplerate, time.perf_counter()
        reader = MixReader(mix_path, sr, out_dir)
        try:
            if reader.length == 0:
                raise InputError(f"mix={mix_path}: no audio samples in file")
            stats = norm_stats(reader)
            device = self._run_with_fallbacks(reader, stats, out_dir, mix_path)
        finally:
            reader.close()
        self.device_used = device
        return SeparationResult(out_dir / STEMS[0], out_dir / STEMS[1],
                                time.perf_counter() - t0, device, sr, reader.length / sr,
                                self.precision_ran)

    def _run_with_fallbacks(self, reader, stats, out_dir, mix_path) -> str:
        """Run on the chosen device; CUDA OOM -> shorter segment -> CPU, MPS gap -> CPU."""
        import torch
        device, segment, shortened = self._device, self.segment, False
        self._oom_batch = None
        while True:
            self._batch_ran = None
            try:
                self._write_stems(reader, stats, out_dir, device, segment)
                return device
            except torch.cuda.OutOfMemoryError:
                torch.cuda.empty_cache()
                if device == "cuda" and (self._batch_ran or 1) > 1:
                    self._oom_batch = self._batch_ran // 2
                    logger.warning("CUDA out of memory on %s; retrying with %d segment(s) per "
                                   "pass", mix_path, self._oom_batch)
                elif not shortened:
                    shortened = True
                    segment = (segment or _max_segment(self.model)) / 2
                    if math.isinf(segment):
                        segment = float(getattr(self.model, "segment", 10)) / 2
                    logger.warning("CUDA out of memory on %s; retrying with segment=%.2f s",
                                   mix_path, segment)
                else:
                    logger.warning("CUDA out of memory again on %s; retrying on CPU", mix_path)
                    device, segment = "cpu", self.segment
            except VTraceError:
                raise
            except Exception as exc:
                if device == "mps" and ("not implemented" in str(exc).lower()
                                        or isinstance(exc, NotImplementedError)):
                    logger.warning("MPS lacks an operation Demucs needs (%s); separating %s on "
                                   "CPU", _one_line(exc), mix_path)
                    device = "cpu"
                    continue
                if _TOO_SHORT in str(exc):
                    raise SeparationError(
                        f"mix={mix_path} is too short for model={self.model_name} "
                        f"({reader.length} samples at {self.samplerate} Hz"
                        f"{'' if self.shifts else '; --shifts 1 pads it'})") from None
                raise SeparationError(f"Demucs failed on mix={mix_path} (device={device}): "
                                      f"{_one_line(exc)}") from None

    def _batch(self, device, segment) -> int:
        """Segments per forward pass: ``batch_segments`` if set, else 1 on CPU/MPS (batching
        measured slower on CPU) and on CUDA as many as half the free memory holds, at most 8."""
        if self.batch_segments:
            return int(self.batch_segments)
        if device != "cuda":
            return 1
        import torch
        free, _ = torch.cuda.mem_get_info()
        seconds = segment or min(_max_segment(self.model), 7.8)
        if math.isinf(seconds):
            seconds = 10.0
        # about 3 GiB for one 7.8 s htdemucs segment (demucs' own guidance), scaled by length
        per_segment = 3 * 2 ** 30 * seconds / 7.8
        return max(1, min(8, int(free / 2 // per_segment)))

    def _precision_on(self, device) -> str:
        """The precision used on ``device`` (after a fallback to CPU, bfloat16 only where it
        is native there)."""
        if device == self._device or self.precision_used == "float32":
            return self.precision_used
        try:
            return resolve_precision("bfloat16", device)
        except UsageError:
            logger.warning("device=%s has no native bfloat16: separating in float32", device)
            return "float32"

    @property
    def sources(self) -> tuple:
        """The model's sources (loads the model)."""
        return tuple(self.model.sources)

    def stem_files(self) -> tuple:
        """The files a separation writes: ``STEMS``, then with ``all_sources`` one per source."""
        extra = tuple(f"{s}.wav" for s in self.sources if f"{s}.wav" not in STEMS) \
            if self.all_sources else ()
        return STEMS + extra

    def _write_stems(self, reader, stats, out_dir, device, segment):
        write_stem_blocks(self._stream(reader, stats, device, segment), out_dir,
                          [Path(name).stem for name in self.stem_files()], self.samplerate,
                          reader.length, self._keeps_memory)

    def _stream(self, reader, stats, device, segment):
        """Yield ``{stem: float32 (2, n) block}`` (vocals, no_vocals, and each source with
        ``all_sources``) covering the whole mix in order."""
        import torch
        from demucs.apply import BagOfModels
        model, L, minus = self.model, reader.length, self.other_method == "minus"
        precision = self._precision_on(device)
        batch = (self._oom_batch if device == "cuda" and getattr(self, "_oom_batch", None)
                 else self._batch(device, segment))
        self._batch_ran = batch
        self.precision_ran = precision
        mean, std = torch.tensor(stats[0]), torch.tensor(stats[1])

        def read_norm(start, stop):
            x = (torch.from_numpy(reader.read(start, stop)) - mean) / std
            x[:, :max(0, min(-start, stop - start))] = 0  # demucs pads after normalising
            x[:, max(0, L - start):] = 0
            return x

        subs, weights = ((list(model.models), model.weights) if isinstance(model, BagOfModels)
                         else ([model], [[1.0] * len(model.sources)]))
        vi = model.sources.index("vocals")
        needed = [vi] if minus and not self.all_sources else list(range(len(model.sources)))
        max_shift = int(0.5 * model.samplerate)
        groups = []
        for sub, w in zip(subs, weights):
            # Drawn for every sub-model in apply_model's order (sub-model, then shift), so the
            # same offsets reach the same streams, and minus and add give identical vocals.
            shifts = [random.randint(0, max_shift) for _ in range(self.shifts)]
            if not any(w[k] for k in needed):
                continue
            sub.to(device).eval()
            if not shifts:
                streams = [Stream(sub, read_norm, 0, L, 0, segment, self.overlap, device,
                                  precision, batch)]
            else:
                streams = [Stream(sub, read_norm, o - max_shift, L + max_shift - o,
                                  max_shift - o, segment, self.overlap, device, precision, batch)
                           for o in shifts]
            groups.append((w, streams))
        totals = [sum(w[k] for w, _ in zip(weights, subs)) for k in range(len(model.sources))]
        everything = [s for _, streams in groups for s in streams]
        steps_total, steps, written = sum(len(s.offsets) for s in everything), 0, 0
        while written < L:
            stream = min((s for s in everything if not s.finished), key=lambda s: s.produced)
            stream.step()
            steps += 1
            if self.progress is not None:
                self.progress(steps / steps_total * L / model.samplerate, L / model.samplerate)
            ready = min(s.produced for s in everything)
            if ready <= written:
                continue
            n, est = ready - written, 0.0
            for w, streams in groups:
                out = streams[0].take(n)
                for s in streams[1:]:
                    out += s.take(n)
                if self.shifts:
                    out /= self.shifts
                for k in needed:
                    out[k] *= w[k]
                est = est + out
            src = {k: est[k] / totals[k] * std + mean for k in needed}
            if minus:
                no_vocals = torch.from_numpy(reader.read(written, ready)) - src[vi]
            else:
                no_vocals = torch.zeros_like(src[vi])
                for k in needed:
                    if k != vi:
                        no_vocals += src[k]
            written = ready
            blocks = {"vocals": src[vi].numpy(), "no_vocals": no_vocals.numpy()}
            if self.all_sources:
                blocks.update((model.sources[k], src[k].numpy()) for k in needed)
            yield blocks
