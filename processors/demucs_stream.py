"""Demucs' ``apply_model`` as a stream, for ``processors.separation``.

``MixReader`` gives random access to a mix at the model's rate; ``norm_stats`` its mean and
std over the whole track (as demucs normalises); ``Stream`` walks one sub-model under one
random shift over ``apply_model``'s split grid and hands out samples as soon as no later
segment can change them. Written against demucs 4.1.0 (pinned); re-check on an upgrade.
"""

import contextlib
import logging
import math
import os
from pathlib import Path

import numpy as np
import soundfile as sf

from audio_utils.audio_io import resample_file
from audio_utils.matching import match_channels
from utils.atomic_files import TMP_MARK
from utils.errors import InputError

logger = logging.getLogger("processors.separation")  # its warnings belong to the separation step

# Seconds of mix kept in memory around the segments being separated (about 21 MB at 44.1 kHz).
READ_BLOCK_S = 60.0


class MixReader:
    """Random access to a mix file as stereo float32 at the model's rate, zero outside it."""

    def __init__(self, path: Path, samplerate: int, tmp_dir: Path):
        self._tmp = None
        try:
            info = sf.info(str(path))
        except Exception as exc:
            raise InputError(f"cannot read mix={path}: {exc}; give a WAV/FLAC/OGG file") from None
        if info.channels > 2:
            logger.warning("%s has %d channels; downmixing to stereo for Demucs",
                           path, info.channels)
        if info.samplerate != samplerate:
            self._tmp = tmp_dir / f".mix_{os.getpid()}{TMP_MARK}.wav"  # stale ones are cleaned
            try:
                resample_file(path, self._tmp, samplerate)
            except BaseException:
                self._tmp.unlink(missing_ok=True)
                raise
            path = self._tmp
        self._file = sf.SoundFile(str(path))
        self.length = self._file.frames
        self._cache_start, self._cache = 0, np.zeros((2, 0), np.float32)
        self._block = int(READ_BLOCK_S * samplerate)

    def close(self):
        self._file.close()
        if self._tmp is not None:
            self._tmp.unlink(missing_ok=True)

    def blocks(self):
        """Yield the whole mix as consecutive (2, n) float32 blocks."""
        for start in range(0, self.length, self._block):
            yield self.read(start, min(start + self._block, self.length))

    def read(self, start: int, stop: int) -> np.ndarray:
        """Samples [start, stop) as (2, stop - start) float32; zeros outside the file."""
        out = np.zeros((2, stop - start), np.float32)
        lo, hi = max(start, 0), min(stop, self.length)
        if lo >= hi:
            return out
        end = self._cache_start + self._cache.shape[1]
        if lo < self._cache_start or hi > end:
            # Streams lag each other by up to one segment, so keep some history too.
            first = max(0, lo - self._block // 4)
            self._file.seek(first)
            data = self._file.read(max(hi, first + self._block) - first, dtype="float32",
                                   always_2d=True)
            self._cache_start, self._cache = first, match_channels(np.ascontiguousarray(data.T), 2)
        a = lo - self._cache_start
        out[:, lo - start:hi - start] = self._cache[:, a:a + hi - lo]
        return out


def norm_stats(reader: MixReader):
    """Mean and unbiased std of the channel-averaged mix, as demucs.api.Separator computes
    them, but accumulated block by block in float64 (Chan et al.) instead of in one array."""
    n, mean, m2 = 0, 0.0, 0.0
    for block in reader.blocks():
        ref = block.mean(axis=0, dtype=np.float32).astype(np.float64)
        bn, bmean = ref.size, ref.mean()
        bm2 = ((ref - bmean) ** 2).sum()
        delta = bmean - mean
        mean += delta * bn / (n + bn)
        m2 += bm2 + delta * delta * n * bn / (n + bn)
        n += bn
    std = np.float32(math.sqrt(m2 / max(n - 1, 1))) + np.float32(1e-8)
    return np.float32(mean), np.float32(std)


class Stream:
    """One sub-model under one random shift, walking ``apply_model``'s split grid in order.

    Stream sample p is mix sample ``p + origin``.  After each segment, every sample before the
    next segment's start is final (no later segment overlaps it) and is handed out.

    ``batch`` segments of equal length go through the model in one forward pass (on a GPU;
    on a CPU batching is slower, so 1 there). On CUDA the mix stays on the host: each batch is
    copied from pinned memory without blocking, and the next batch is launched before the
    current one's outputs are waited for, so copies and reads overlap the GPU's compute.
    ``precision`` ``bfloat16`` runs the model under torch.autocast.
    """

    def __init__(self, model, read_norm, origin, length, skip, segment, overlap, device,
                 precision="float32", batch=1):
        import torch
        self.model, self.read_norm, self.device = model, read_norm, device
        self.precision, self.batch = precision, max(1, int(batch))
        self.origin, self.length, self.skip, self.segment = origin, length, skip, segment
        self.seg_len = int(model.samplerate * (segment if segment is not None else model.segment))
        self.stride = int((1 - overlap) * self.seg_len)
        self.offsets = range(0, length, self.stride)
        half = self.seg_len // 2
        w = torch.cat([torch.arange(1, half + 1), torch.arange(self.seg_len - half, 0, -1)])
        self.weight = w / w.max()
        n_src, ch = len(model.sources), model.audio_channels
        self.acc = torch.zeros(n_src, ch, self.seg_len)
        self.sum_w = torch.zeros(self.seg_len)
        self.index, self.produced, self.fifo = 0, 0, []
        self._ready = []         # model outputs (on the host) of the next segments, in order
        self._launched = None    # (host outputs, cuda event or None, count) of the next batch

    @property
    def finished(self) -> bool:
        return self.index >= len(self.offsets)

    def _window(self, i):
        """(stream offset, samples kept, samples fed to the model) of segment ``i``."""
        from demucs.htdemucs import HTDemucs
        off = self.offsets[i]
        length = min(self.length - off, self.seg_len)
        if isinstance(self.model, HTDemucs) and self.segment is not None:
            valid = int(self.segment * self.model.samplerate)
        elif hasattr(self.model, "valid_length"):
            valid = self.model.valid_length(length)
        else:
            valid = length
        return off, length, valid

    def _launch(self, first):
        """Start the model on segments ``first``... (up to ``batch`` of the same shape);
        returns (outputs on the host, event to wait for or None, count). Inputs are padded
        like TensorChunk and outputs center-trimmed, as in apply_model."""
        import torch
        from demucs.utils import center_trim
        shape = self._window(first)
        count = 1
        while (count < self.batch and first + count < len(self.offsets)
               and self._window(first + count)[1:] == shape[1:]):
            count += 1
        _, length, valid = shape
        xs = []
        for i in range(first, first + count):
            start = self.origin + self.offsets[i] - (valid - length) // 2
            xs.append(self.read_norm(start, start + valid))
        x = xs[0][None] if count == 1 else torch.stack(xs)
        cuda = self.device == "cuda"
        if cuda:
            x = x.pin_memory().to(self.device, non_blocking=True)
        else:
            x = x.to(self.device)
        autocast = (torch.autocast(device_type=self.device, dtype=torch.bfloat16)
                    if self.precision == "bfloat16" else contextlib.nullcontext())
        with torch.no_grad(), autocast:
            out = self.model(x)
        out = center_trim(out, length).float()
        if not cuda:
            return out.cpu(), None, count
        host = torch.empty(out.shape, dtype=out.dtype, pin_memory=True)
        host.copy_(out, non_blocking=True)
        event = torch.cuda.Event()
        event.record()
        return host, event, count

    def _segment_out(self):
        """Model output of the segment at ``self.index``, shaped (sources, channels, n)."""
        if not self._ready:
            if self._launched is None:
                self._launched = self._launch(self.index)
            host, event, count = self._launched
            following = self.index + count
            # On CUDA, queue the next batch before waiting for this one.
            self._launched = (self._launch(following) if event is not None
                              and following < len(self.offsets) else None)
            if event is not None:
                event.synchronize()
            self._ready = list(host.unbind(0))
        return self._ready.pop(0)

    def step(self):
        import torch
        off = self.offsets[self.index]
        n = min(self.length - off, self.seg_len)
        w = self.weight[:n]
        self.acc[..., :n] += w * self._segment_out()
        self.sum_w[:n] += w
        self.index += 1
        done = self.stride if not self.finished else self.length - off
        final = self.acc[..., :done] / self.sum_w[:done]
        self.acc = torch.cat([self.acc[..., done:], torch.zeros_like(self.acc[..., :done])], -1)
        self.sum_w = torch.cat([self.sum_w[done:], torch.zeros(done)])
        drop = max(0, self.skip - off)  # the shift's left padding is not part of the output
        if drop < done:
            self.fifo.append(final[..., drop:])
            self.produced += done - drop

    def take(self, n):
        """Pop the next ``n`` output samples, shaped (sources, channels, n)."""
        import torch
        data = torch.cat(self.fifo, -1) if len(self.fifo) > 1 else self.fifo[0]
        self.fifo = [data[..., n:]] if data.shape[-1] > n else []
        return data[..., :n]
