"""Separation with python-audio-separator's models (BS-RoFormer, Mel-Band RoFormer), ``sota`` extra.

The model is found, downloaded and loaded by audio-separator itself (``Separator.load_model``:
its model lists, its YAML configs, its RoFormer loader); no model code lives here. What VTrace
does differently from audio-separator's ``separate`` is only the way the track goes through the
model, so that stems stay exact and memory stays flat:

- the mix is streamed from disk and each finished sample is written at once, instead of
  holding the track, an accumulator and a counter per stem in memory (a 60-minute track would
  need several GB);
- the chunk schedule, Hamming window and overlap-add are audio-separator 0.47.1's
  ``MDXCSeparator.demix`` for RoFormer models (pinned; re-check on an upgrade): chunk = the
  model's STFT hop x (dim_t - 1), dim_t from the YAML's ``inference.dim_t`` (256, its
  ``segment_size`` default, for tracks under 10 s, as audio-separator does), step = chunk //
  ``inference.num_overlap`` (8 when the YAML has none), one chunk per forward pass;
- the model sees the mix scaled exactly as audio-separator scales it (down to a peak of 0.9
  when louder), because its output depends on the input level; the stems are scaled back, so
  they are at the mix's scale, float32, never re-normalised per stem nor rounded to 16 bits;
- a single-target model's other stem is exactly ``mix - target``.

So the stems equal audio-separator's own output with its normalisation undone (tested,
tests/test_audio_separator_backend.py).
"""

import contextlib
import json
import logging
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from processors.demucs_stream import MixReader
from processors.separation import (SeparationResult, _network_reachable, _one_line,
                                   resolve_device, resolve_precision, write_stem_blocks)
from utils.allocator import keep_freed_memory
from utils.errors import InputError, SeparationError, UsageError, VTraceError
from utils.extras import require

log = logging.getLogger("processors.separation")

# What audio-separator (Separator.list_supported_model_files) reads from its model folder
# before it loads anything; offline it must be there. VTrace writes one listing nothing when
# it is missing and there is no network: the local files are added in memory (_LocalFiles).
DOWNLOAD_CHECKS = "download_checks.json"
_CHECK_LISTS = ("vr_download_list", "mdx_download_list", "mdx_download_vip_list",
                "mdx23c_download_list", "mdx23c_download_vip_list", "roformer_download_list",
                "demucs_download_list")
_VOCALS = ("vocals", "vocal")
_INSTRUMENTAL = ("instrumental", "inst", "other", "no_vocals", "accompaniment", "karaoke")
SHORT_TRACK_S = 10.0  # audio-separator: tracks under this use its segment_size (256)
_HOST = "github.com"  # where audio-separator downloads models and their lists from


class AudioSeparatorBackend:
    """One audio-separator model (a RoFormer ``.ckpt`` + its ``.yaml``), loaded on first use.

    Args (names match the config keys; Demucs-only keys are accepted and not used, except
    ``segment``, which is refused):
        model: the model's file name as audio-separator names it
            (``model_bs_roformer_ep_317_sdr_12.9755.ckpt``).
        model_repo: folder holding the model files, or None for audio-separator's own cache
            (``AUDIO_SEPARATOR_MODEL_DIR``, else /tmp/audio-separator-models/), downloading
            into it when the files are missing.
        device: ``auto|cpu|cuda|mps``; precision: ``float32``, ``bfloat16`` (torch.autocast,
            what audio-separator's ``use_autocast`` runs on CPU) or ``auto``.
        thread: torch CPU threads; progress: ``progress(done_seconds, total_seconds)``.
        all_sources: also write every source of the model as ``<source>.wav`` (Demucs'
            multi-stem layout; a single-target model's other source is ``mix - target``).
    """

    def __init__(self, model, model_repo=None, device="auto", precision="float32",
                 segment=None, thread=None, progress=None, all_sources=False, **_demucs_only):
        self.model_name = model
        self.model_repo = None if model_repo is None else Path(model_repo)
        self.device, self.precision, self.segment = device, precision, segment
        self.thread, self.progress = thread, progress
        self.all_sources = bool(all_sources)
        self.device_used = None
        self.precision_ran = None
        self._separator = None  # audio_separator.separator.Separator with the model loaded
        self._load_error = None
        self._checked = False
        self._keeps_memory = False  # whether loading the model set utils.allocator's malloc

    # ------------------------------------------------------------------ checks and loading

    def check_options(self):
        """UsageError for what cannot run here: the sota extra missing, a device that is not
        here, a precision the device lacks, ``--segment`` (Demucs only), a model that is not
        on disk while there is no network, or a model audio-separator does not know.
        SeparationError when the model files are there but do not load."""
        if self._checked:
            return
        require("sota", f"model={self.model_name}")
        if self.segment is not None:
            raise UsageError(f"segment={self.segment} applies to Demucs models only; "
                             f"model={self.model_name} uses its YAML's chunk size: drop "
                             "--segment")
        self._device = resolve_device(self.device)
        self.precision_used = resolve_precision(self.precision, self._device)
        self._load()
        self._checked = True

    @property
    def loaded(self):
        """Whether the model is in memory (a failed load leaves it False)."""
        return self._separator is not None

    @property
    def sources(self):
        """The model's sources, named as Demucs names them (checks the options and loads the
        model)."""
        self.check_options()
        return tuple(_stem_plan(self._separator.model_instance.model_data_cfgdict.training,
                                self.model_name).names)

    @property
    def folder(self):
        """Where the model files are looked for (and downloaded to)."""
        if self.model_repo is not None:
            return self.model_repo
        return Path(os.environ.get("AUDIO_SEPARATOR_MODEL_DIR") or "/tmp/audio-separator-models")

    def _load(self):
        if self._separator is not None:
            return
        if self._load_error is not None:
            raise self._load_error
        try:
            self._separator = self._load_separator()
        except VTraceError as exc:
            self._load_error = exc
            raise

    def _load_separator(self):
        import torch

        self._keeps_memory = keep_freed_memory()
        if self.thread:
            torch.set_num_threads(self.thread)
        folder = self.folder
        online = None
        if not _local_files(folder, self.model_name):
            online = _network_reachable(_HOST)
            if not online:
                raise UsageError(_offline_message(self.model_name, folder,
                                                  self.model_repo is not None))
        if not (folder / DOWNLOAD_CHECKS).is_file():
            if online is None:
                online = _network_reachable(_HOST)
            if not online:  # audio-separator would try to download it and fail
                try:
                    _write_empty_checks(folder / DOWNLOAD_CHECKS)
                except OSError as exc:
                    raise UsageError(f"cannot write {folder / DOWNLOAD_CHECKS} (offline, "
                                     f"audio-separator needs it there): {exc.strerror or exc}; "
                                     "make the folder writable or copy the model files to "
                                     "one that is") from None
        separator = _make_separator(folder, self._device, self.precision_used)
        try:
            with contextlib.redirect_stdout(sys.stderr):  # stdout is the summary's
                separator.load_model(self.model_name)
        except ValueError as exc:
            if "not found in supported model files" in str(exc):
                raise UsageError(
                    f"model={self.model_name} is not a model audio-separator knows, nor in "
                    f"{folder} as a checkpoint with its YAML ({Path(self.model_name).stem}"
                    f".yaml); check the name (audio-separator --list_models) or put both "
                    "files there") from None
            raise SeparationError(f"cannot load model={self.model_name} from {folder}: "
                                  f"{_one_line(exc)}") from None
        except (Exception, SystemExit) as exc:  # its loader exits on a corrupt file
            raise SeparationError(f"cannot load model={self.model_name} from {folder}: "
                                  f"{_one_line(exc)}; check or replace its files") from None
        instance = separator.model_instance
        if not getattr(instance, "is_roformer", False):
            raise UsageError(f"model={self.model_name} is a "
                             f"{type(instance).__name__.replace('Separator', '')} model; VTrace "
                             "runs audio-separator's RoFormer models (BS-RoFormer, Mel-Band "
                             "RoFormer .ckpt): pick one, or a Demucs model")
        _stem_plan(instance.model_data_cfgdict.training, self.model_name)  # has vocals?
        return separator

    # ------------------------------------------------------------------ separation

    def separate_file(self, mix_path, out_dir) -> SeparationResult:
        """Separate ``mix_path`` into ``out_dir/vocals.wav`` + ``no_vocals.wav`` (and, for a
        multi-stem model, one file per other stem, lower-case as Demucs names them), float32
        at the mix's scale. Raises InputError (unreadable or silent-length mix),
        SeparationError (the model failed), OutputError (stems not writable)."""
        self.check_options()
        mix_path, out_dir = Path(mix_path), Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        instance = self._separator.model_instance
        sr, t0 = int(instance.sample_rate), time.perf_counter()
        reader = MixReader(mix_path, sr, out_dir)
        try:
            if reader.length == 0:
                raise InputError(f"mix={mix_path}: no audio samples in file")
            self._write_stems(reader, instance, out_dir, mix_path)
        finally:
            reader.close()
        self.device_used, self.precision_ran = self._device, self.precision_used
        return SeparationResult(out_dir / "vocals.wav", out_dir / "no_vocals.wav",
                                time.perf_counter() - t0, self._device, sr,
                                reader.length / sr, self.precision_used)

    def _write_stems(self, reader, instance, out_dir, mix_path):
        training = instance.model_data_cfgdict.training
        plan = _stem_plan(training, self.model_name, self.all_sources)
        write_stem_blocks(self._stream(reader, instance, plan, mix_path), out_dir, plan.files,
                          instance.sample_rate, reader.length, self._keeps_memory)

    def _stream(self, reader, instance, plan, mix_path):
        """Yield ``{stem file name: float32 (2, n) block}`` covering the mix in order."""
        import torch
        from scipy import signal

        cfg = instance.model_data_cfgdict
        L, sr = reader.length, instance.sample_rate
        gain = _input_gain(_peak(reader), instance.normalization_threshold,
                           instance.amplification_threshold)
        override = instance._use_model_segment_override(L / sr)
        dim_t = instance.segment_size if override else cfg.inference.dim_t
        hop = getattr(cfg.model, "stft_hop_length", None) or cfg.audio.hop_length
        chunk = int(hop) * (int(dim_t) - 1)
        step = chunk // instance.overlap
        if step <= 0:
            raise SeparationError(f"model={self.model_name}: overlap {instance.overlap} "
                                  f"leaves no step between chunks of {chunk} samples")
        starts = instance._roformer_chunk_starts(L, chunk, step)
        device = next(instance.model_run.parameters()).device
        window = torch.tensor(signal.windows.hamming(chunk), dtype=torch.float32)
        # a single-target model's one output; audio-separator broadcasts it into a buffer per
        # instrument and keeps the first
        n_out = 1 if plan.target is not None else len(plan.names)
        acc = torch.zeros(n_out, 2, chunk)
        count = torch.zeros(chunk)
        autocast = (torch.autocast(device_type=device.type, dtype=torch.bfloat16)
                    if self.precision_used == "bfloat16" else contextlib.nullcontext())
        g = np.float32(gain)
        written = 0
        for i, start in enumerate(starts):
            # every chunk starts where the finished samples end (the schedule's steps and
            # its tail chunk both start after the previous chunk's start) in 0.47.1
            if start != written:
                raise SeparationError(f"audio-separator's chunk schedule is not the one VTrace "
                                      f"streams (chunk at {start}, expected {written}); use "
                                      "audio-separator 0.47.1 (the sota extra's pin)")
            part = reader.read(start, min(start + chunk, L))
            if gain != 1:
                part = part * g
            n = part.shape[1]
            try:
                with torch.no_grad(), autocast:
                    x = _run_model(instance, torch.from_numpy(part).to(device))
            except Exception as exc:
                raise SeparationError(f"audio-separator model={self.model_name} failed on "
                                      f"mix={mix_path} (device={device.type}): "
                                      f"{_one_line(exc)}") from None
            x = x.float().cpu()
            if x.dim() == 2:  # a single-target model returns (channels, n)
                x = x[None]
            safe = min(n, x.shape[-1], chunk)
            acc[..., :safe] += x[..., :safe] * window[:safe]
            count[:safe] += window[:safe]
            done = (starts[i + 1] if i + 1 < len(starts) else L) - written
            est = (acc[..., :done] / count[:done].clamp(min=1e-10)).numpy()
            acc = torch.cat([acc[..., done:], torch.zeros(n_out, 2, done)], -1)
            count = torch.cat([count[done:], torch.zeros(done)])
            mix = reader.read(written, written + done)
            written += done
            if self.progress is not None:
                self.progress(written / sr, L / sr)
            if gain != 1:
                est = est / g
            yield plan.blocks(est, mix)


def _run_model(instance, part):
    """One chunk through the model as audio-separator runs it (its torch.compile fallback
    included)."""
    run = getattr(instance, "_run_roformer_model", None)
    return run(part) if run is not None else instance.model_run(part[None])[0]


class _StemPlan:
    """Which model output becomes which stem file: ``vocals`` and ``no_vocals`` always; each
    other source under its own name (``drums``, ``bass``, ``other``...) for a model of more
    than two sources, or for any model with ``all_sources``."""

    def __init__(self, instruments, target, all_sources=False):
        names = [_demucs_name(i) for i in instruments]
        self.target = None if not target else _demucs_name(target)
        self.names = names
        extra = all_sources or (self.target is None and len(names) > 2)
        self.files = ("vocals", "no_vocals") + (tuple(
            n for n in names if n not in ("vocals", "no_vocals")) if extra else ())

    def blocks(self, est, mix):
        """``est``: (outputs, 2, n) at the mix's scale; ``mix``: (2, n)."""
        if self.target is not None:
            rest = mix - est[0]  # exactly mix - target
            if self.target == "vocals":
                out = {"vocals": est[0], "no_vocals": rest}
            else:
                out = {"no_vocals": est[0], "vocals": rest}
            by_name = {self.target: est[0]}
            by_name.update({n: rest for n in self.names if n != self.target})
        else:
            by_name = dict(zip(self.names, est))
            others = [n for n in self.names if n != "vocals"]
            out = {"vocals": by_name["vocals"],
                   "no_vocals": (by_name[others[0]] if len(others) == 1
                                 else np.sum([by_name[n] for n in others], axis=0))}
        out.update({n: by_name[n] for n in self.files if n not in out})
        return out


def _demucs_name(stem):
    name = str(stem).strip().lower().replace(" ", "_")
    if name in _VOCALS:
        return "vocals"
    return name


def _stem_plan(training, model, all_sources=False):
    """The model's stems as VTrace writes them; UsageError when it has no vocals."""
    instruments = list(training.instruments)
    target = training.get("target_instrument") if hasattr(training, "get") else None
    plan = _StemPlan(instruments, target, all_sources)
    if plan.target is not None:
        if plan.target == "vocals" or plan.target in _INSTRUMENTAL:
            return plan
    elif "vocals" in plan.names:
        return plan
    raise UsageError(f"model={model} separates {target or ', '.join(instruments)}, not vocals; "
                     "pick a vocals (or instrumental) model")


def _peak(reader):
    return max((np.abs(b).max() for b in reader.blocks() if b.size), default=np.float32(0))


def _input_gain(peak, max_peak, min_peak):
    """The factor audio-separator's spec_utils.normalize applies to the mix, computed as it
    does (float32: the model is sensitive enough to show a last-bit difference)."""
    peak = np.float32(peak)
    if peak > max_peak:
        return np.float32(max_peak) / peak
    if min_peak is not None and 0 < peak < min_peak:
        return np.float32(min_peak) / peak
    return np.float32(1)


# ---------------------------------------------------------------------- model files

def _local_files(folder, model):
    """The checkpoint and its YAML when both are in ``folder``, else None."""
    ckpt = Path(folder) / model
    if not ckpt.is_file():
        return None
    if ckpt.suffix.lower() == ".yaml":
        return (ckpt,)
    yaml_name = _known_yaml(model) or f"{ckpt.stem}.yaml"
    for name in (yaml_name, f"{ckpt.stem}.yaml"):
        if (Path(folder) / name).is_file():
            return ckpt, Path(folder) / name
    if ckpt.suffix.lower() in (".onnx", ".pth"):  # their parameters come from UVR's lists
        return (ckpt,)
    return None


def _known_yaml(model):
    """The YAML audio-separator's packaged model list pairs with ``model``, or None."""
    from importlib import resources

    try:
        with resources.files("audio_separator").joinpath("models.json").open() as f:
            lists = json.load(f)
    except (OSError, ValueError, ModuleNotFoundError):
        return None
    for group in lists.values():
        for files in group.values():
            if isinstance(files, dict) and model in files:
                return files[model]
    return None


def _offline_message(model, folder, given):
    yaml_name = _known_yaml(model) or f"{Path(model).stem}.yaml"
    where = f"model_repo={folder}" if given else f"audio-separator's cache {folder}"
    return (f"model={model} is not in {where} and there is no network to download it: put "
            f"{model} and its config {yaml_name} in {folder}"
            f"{'' if given else ' (or in a folder given with --model-repo)'}, or run once "
            "with network access")


def _write_empty_checks(path):
    from utils.atomic_files import write_text_atomic

    write_text_atomic(path, json.dumps({k: {} for k in _CHECK_LISTS}))


def _make_separator(folder, device, precision):
    """audio-separator's Separator on ``folder``, on VTrace's device, quiet, listing the
    checkpoints with their YAML found in ``folder`` besides its own model lists."""
    import torch
    from audio_separator.separator import Separator

    class LocalSeparator(Separator):
        def check_ffmpeg_installed(self):
            pass  # VTrace reads and writes the audio; audio-separator wants ffmpeg for pydub

        def list_supported_model_files(self):
            found = super().list_supported_model_files()
            local = {}
            for ckpt in sorted(Path(self.model_file_dir).glob("*.ckpt")):
                files = _local_files(self.model_file_dir, ckpt.name)
                if files and len(files) == 2:
                    local[f"local: {ckpt.name}"] = {
                        "filename": ckpt.name, "scores": {}, "stems": [], "target_stem": None,
                        "download_files": [ckpt.name, files[1].name]}
            found["MDXC"] = {**local, **found.get("MDXC", {})}
            return found

    with warnings.catch_warnings():  # its constructor silences every warning process-wide
        separator = LocalSeparator(log_level=logging.ERROR, model_file_dir=str(folder),
                                   output_dir=str(folder), use_soundfile=True,
                                   use_autocast=precision == "bfloat16")
    separator.torch_device = torch.device(device)  # VTrace's choice, not its own
    if device == "cpu":
        separator.onnx_execution_provider = ["CPUExecutionProvider"]
    return separator

