"""Rendering a track's three outputs block by block.

Reads the original and the stems through ``BlockReader``s (offset applied), computes blend,
voice and phase cancel with ``processors.vtrace_core`` (plus the residual cleanup and gate
blend of ``audio_utils.filters`` when asked), and writes them with ``BlockWriter``s, so memory
stays flat however long the track is.
"""

import logging
import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields

import numpy as np

from audio_utils.audio_io import BlockWriter
from processors import vtrace_core as core

log = logging.getLogger(__name__)

OUTPUTS = ("blended", "vocal_residual", "phase_cancel")
PEAK_TARGET = 10 ** (-1.0 / 20)  # --normalize peak: -1 dBFS
# The original's decoded blocks held ready ahead of the computations (float32): enough for the
# idle core to decode what it can while the stems are checked and aligned (about 90 s of
# 44.1 kHz stereo).
AHEAD_BYTES = 32 * 2 ** 20


@dataclass
class Sources:
    """The signals a track is rendered from, as readers (offset applied): the original, the
    target stem's rest (``instrumental``: no_vocals, or a ``SumReader`` of the other stems)
    and the target stem (``vocals``).

    ``stems``: every stem file's reader by name, which alignment shifts (None: the two above
    are the files); ``gains``: ``(reader, dB)`` per stem with a --stem-gain, for the
    rebalanced output; ``extra``: further readers to close."""

    original: object
    instrumental: object
    vocals: object
    stems: dict | None = None
    gains: tuple = ()
    extra: tuple = ()

    def files(self):
        """The readers of the stem files."""
        return list(self.stems.values()) if self.stems else [self.instrumental, self.vocals]

    def close(self):
        for reader in [self.original, *self.files(), *self.extra]:
            reader.close()


@dataclass(frozen=True)
class RenderSettings:
    """The settings rendering uses; each field is the Config field of the same name."""

    voice_alpha: float
    blend_mode: str
    vocal_gate_threshold_db: float
    vocal_gate_attack_ms: float
    vocal_gate_release_ms: float
    vocal_gate_hold_ms: float
    residual_hpf: float | None
    residual_lpf: float | None
    filter_order: int
    gate_threshold_db: float | None
    gate_attack_ms: float
    gate_release_ms: float
    gate_hold_ms: float
    gate_range_db: float
    repair: str
    wav_format: str
    normalize: str
    match_loudness: bool
    block_seconds: float
    thread: int

    @classmethod
    def of(cls, settings):
        """Take this class's fields from ``settings`` (a Config, or anything with them)."""
        return cls(**{f.name: getattr(settings, f.name) for f in fields(cls)})


def render(sources, frames, sr, channels, w, settings, wav_paths, progress,
           repair_report=None, original_blocks=None):
    """Compute and write the outputs (the three, and ``rebalanced`` with stem gains), to
    ``wav_paths`` ``{output: path}``; returns ``(gains, peaks, loudness)`` per output.

    ``repair_report``, a dict, receives ``repair_summary``'s record (for the manifest).
    ``original_blocks``: an ``OriginalBlocks`` for these ``settings``, made earlier so the
    original was decoding meanwhile (None: one is made here); render closes it.

    ``settings`` is a RenderSettings. Pass 1 writes at unity gain while measuring peaks (and
    loudness with --match-loudness).
    Only if a gain is needed (a peak over full scale, --normalize peak, a loudness match) is a
    second pass made with the gains, so the usual case reads and computes every block once.
    """
    plan = shaping(settings, sr)
    peaks = dict.fromkeys(wav_paths, 0.0)
    meters = {}
    if settings.match_loudness:
        from audio_utils.loudness import LoudnessMeter

        meters = {k: LoudnessMeter(sr, channels) for k in ("original", *wav_paths)}

    spans = block_spans(frames, sr, settings)

    def pass_(gains, measure, blocks):
        """One pass over the track as a pipeline: ``blocks`` decodes the original ahead,
        ``depth`` threads compute the next blocks while one thread converts and writes block
        k's outputs. Reading, numpy and libsndfile release the GIL, so the stages run in
        parallel."""
        writers = {k: BlockWriter(p, sr, channels, settings.wav_format, frames)
                   for k, p in wav_paths.items()}

        def write(k, y):
            g = gains[k]
            p = writers[k].write(y if g == 1.0 else y * np.float32(g))
            if measure:
                peaks[k] = max(peaks[k], p)

        written = []
        depth = blocks.threads  # one decision for decoding and computing
        try:
            with ThreadPoolExecutor(depth) as compute_pool, \
                    ThreadPoolExecutor(1) as write_pool:
                stats = [{} for _ in spans] if measure else [None] * len(spans)
                # Three stages, each block through all three in order: decoding the original
                # (a FLAC or other compressed input costs more than everything else one block
                # needs without a repair), reading the stems and computing (the repair's STFTs
                # are most of the work with one), writing. ``depth`` blocks are computed at
                # once; ``blocks`` keeps the original decoded ahead of them.

                def submit(j):
                    original = blocks.future(j)
                    return compute_pool.submit(
                        lambda: compute(sources, *spans[j], w, settings.voice_alpha, sr, plan,
                                        stats[j], original=original.result()))

                ahead = [submit(j) for j in range(min(depth, len(spans)))]
                for i, (start, stop) in enumerate(spans):
                    o, outs = ahead.pop(0).result()
                    if i + depth < len(spans):
                        ahead.append(submit(i + depth))
                    if measure and plan.get("repair"):
                        for key in ("leftover", "original"):
                            energy[key] += stats[i].get(key, 0.0)
                        energy["peak"] = max(energy["peak"], stats[i].get("peak", 0.0))
                    if measure and meters:
                        for k, y in outs.items():
                            meters[k].feed(y)
                        meters["original"].feed(o)
                    for f in written:  # each file's blocks stay in order
                        f.result()
                    written = [write_pool.submit(write, k, y) for k, y in outs.items()]
                    if progress and measure:
                        progress((stop - start) / sr)
                for f in written:
                    f.result()
        except BaseException:
            for wr in writers.values():
                wr.discard()
            raise
        return writers

    energy = {"leftover": 0.0, "original": 0.0, "peak": 0.0}
    with original_blocks or OriginalBlocks(sources.original.clone, frames, sr, channels,
                                           settings) as blocks:
        writers = pass_(dict.fromkeys(wav_paths, 1.0), measure=True, blocks=blocks)
    if repair_report is not None:
        repair_report.update(repair_summary(settings, energy))
    gains, loudness = _gains(peaks, meters, settings)
    if any(g != 1.0 for g in gains.values()):
        for wr in writers.values():
            wr.discard()
        with OriginalBlocks(sources.original.clone, frames, sr, channels, settings) as blocks:
            writers = pass_(gains, measure=False, blocks=blocks)
        log.info("gain applied: %s", ", ".join(f"{k} {_db(g):+.2f} dB" for k, g in gains.items()))
    for wr in writers.values():
        wr.commit()
    return gains, peaks, loudness


def compute_threads(workers, cores=None, light=False):
    """Blocks computed at once by each of ``workers`` processes: the cores left to each
    (numpy's FFTs and ufuncs release the GIL), at least 1, at most 4 (beyond that the reads
    and writes of one track are the limit).

    ``light``: the plain arithmetic (``plain(plan)``), a few ufuncs per block, so decoding the
    original and writing the outputs are the work: half as many, one thread per stage keeping
    the cores busy without contending for them (measured on 2 cores, a 4-minute FLAC song:
    0.85x sox's time with one block at once, 0.95x with two)."""
    if cores is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    n = max(1, min(4, (cores or os.cpu_count() or 1) // max(1, workers)))
    return max(1, n // 2) if light else n


def plain(plan):
    """True when ``shaping``'s plan computes only the arithmetic: no repair, no residual
    cleanup, no gate blend."""
    return not plan.get("repair") and plan["residual"] is None and plan["gate"] is None


def shaping(settings, sr):
    """What the repair, the residual cleanup and the gate blend need: their parameters and the
    block margin that makes blockwise results equal whole-track ones."""
    repair = getattr(settings, "repair", "none")
    plan = _shaping(settings, sr)
    if repair == "none":
        return dict(plan, repair=None)
    from processors import repair as rp

    # the repair runs first on the wider read, then the filters see repaired stems: margins add
    return dict(plan, repair=repair, context=plan["context"] + rp.context(sr))


def _shaping(settings, sr):
    residual = {k: getattr(settings, k) for k in (
        "residual_hpf", "residual_lpf", "filter_order", "gate_threshold_db", "gate_attack_ms",
        "gate_release_ms", "gate_hold_ms", "gate_range_db")}
    active = any(residual[k] is not None for k in ("residual_hpf", "residual_lpf",
                                                   "gate_threshold_db"))
    gate = None
    if settings.blend_mode == "gate":
        gate = {k.replace("vocal_gate_", ""): getattr(settings, k) for k in (
            "vocal_gate_threshold_db", "vocal_gate_attack_ms", "vocal_gate_release_ms",
            "vocal_gate_hold_ms")}
    if not active and gate is None:
        return {"residual": None, "gate": None, "context": 0}
    from audio_utils import filters  # scipy.signal: a second of import, only when needed

    context = filters.required_context(
        sr, **residual, vocal_gate_threshold_db=settings.vocal_gate_threshold_db if gate else None,
        vocal_gate_attack_ms=settings.vocal_gate_attack_ms,
        vocal_gate_release_ms=settings.vocal_gate_release_ms, vocal_gate_hold_ms=settings.vocal_gate_hold_ms)
    return {"residual": residual if active else None, "gate": gate, "context": context}


def _span(frames, start, stop, context):
    """The samples block ``[start, stop)`` is computed from: with ``context`` samples of
    margin, stopping at the track's ends (``frames``), so the filters treat the ends as they
    would on the whole track (their own edge padding), not as zeros."""
    return max(start - context, 0), min(stop + context, frames)


def block_spans(frames, sr, settings):
    """The blocks ``[(start, stop)]`` a track of ``frames`` samples is rendered in."""
    block = max(1, int(settings.block_seconds * sr))
    return [(a, min(frames, a + block)) for a in range(0, frames, block)]


class OriginalBlocks:
    """The original's samples for each block of a render pass (``block_spans``, with the
    margin ``compute`` needs), decoded ahead of the computations.

    ``open_reader()`` gives a new reader of the original (``BlockReader``); each decoding
    thread reads through its own, so two threads decode a FLAC at once instead of taking
    turns. Made as soon as the original is known, it decodes while the stems are found,
    checked and aligned, on the cores that work leaves idle (all but one of the render's
    threads), then on all of them once the render asks for its first block. At most
    ``AHEAD_BYTES`` of blocks wait to be taken, which bounds the memory it holds.
    """

    def __init__(self, open_reader, frames, sr, channels, settings):
        plan = shaping(settings, sr)
        self._spans = [_span(frames, a, b, plan["context"])
                       for a, b in block_spans(frames, sr, settings)]
        self._open = open_reader
        longest = max((b - a for a, b in self._spans), default=1)
        # blocks decoded (and computed, see render) at once
        self.threads = compute_threads(settings.thread, light=plain(plan))
        self._ahead = max(self.threads + 1, AHEAD_BYTES // (4 * channels * longest))
        self._pools = [ThreadPoolExecutor(max(1, self.threads - 1))]
        self._rendering = False
        self._local = threading.local()
        self._readers, self._futures, self._next = [], {}, 0
        self._fill(0)

    def _read(self, j):
        if not hasattr(self._local, "reader"):
            self._local.reader = self._open()
            self._readers.append(self._local.reader)  # list.append is atomic
        return self._local.reader.read(*self._spans[j])

    def _fill(self, j):
        """Start decoding the blocks from ``j`` on, up to the bound."""
        self._next = max(self._next, j)
        while self._next < min(len(self._spans), j + self._ahead + 1):
            self._futures[self._next] = self._pools[-1].submit(self._read, self._next)
            self._next += 1

    def future(self, j):
        """The future of block ``j``'s samples, handed over once (blocks are taken in
        order); the decoding of the blocks after it is started up to the bound."""
        if not self._rendering:
            self._rendering = True
            if self.threads > 1:  # every thread now: blocks still queued move over
                self._pools.append(ThreadPoolExecutor(self.threads))
                for k, f in self._futures.items():
                    if f.cancel():
                        self._futures[k] = self._pools[-1].submit(self._read, k)
        self._fill(j)
        return self._futures.pop(j)

    def pause(self):
        """Drop the blocks decoded ahead and stop decoding (before a separation, which wants
        every core and the memory); ``future`` starts again where asked."""
        for f in self._futures.values():
            f.cancel()
        self._futures, self._next = {}, 0

    def close(self):
        self.pause()
        for pool in self._pools:
            pool.shutdown(wait=True)
        for reader in self._readers:
            reader.close()
        self._readers = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def compute(sources, start, stop, w, voice_alpha, sr, plan, stats=None, original=None):
    """The outputs for samples ``[start, stop)``: ``(original block, {name: block})``.

    With a repair (``plan["repair"]``, see ``processors.repair``) the stems are repaired
    first (``V' + I' = O``), and the arithmetic below runs on the repaired stems. ``stats``,
    a dict, receives the block's energies of the left-out part and of the original.

    With residual cleanup or the gate blend, the block is computed with ``context`` samples of
    margin on each side, then cropped, so filters and gates see the same signal as they would
    on the whole track. ``original``: the original's samples over that margin (an
    ``OriginalBlocks`` block), when they were decoded already (by another thread).
    """
    a, b = _span(sources.original.frames, start, stop, plan["context"])
    o = sources.original.read(a, b) if original is None else original
    inst, voc = sources.instrumental.read(a, b), sources.vocals.read(a, b)
    if plan.get("repair"):
        from processors.repair import leftover, repair

        if stats is not None:
            e = leftover(o[:, start - a:stop - a], inst[:, start - a:stop - a],
                         voc[:, start - a:stop - a])
            stats["leftover"] = float(np.sum(np.square(e, dtype=np.float64)))
            stats["original"] = float(np.sum(np.square(o[:, start - a:stop - a],
                                                       dtype=np.float64)))
            stats["peak"] = float(np.max(np.abs(e))) if e.size else 0.0
        inst, voc = repair(o, inst, voc, plan["repair"], a, sources.original.frames)
    r = core.residual(o, inst)
    if plan["residual"] is not None:
        from audio_utils.filters import shape_residual

        r = shape_residual(r, sr, **plan["residual"])
    v = core.voice(r, voc, voice_alpha)
    weight = w
    if plan["gate"] is not None:
        from audio_utils.filters import gate_weight

        weight = gate_weight(voc, sr, w_active=w, **plan["gate"])
    outs = {"blended": core.blend(o, inst, weight), "vocal_residual": v,
            "phase_cancel": core.phase_cancel(o, v)}
    if sources.gains:  # the model's stems as they are: what no stem claimed stays at unity
        outs["rebalanced"] = core.rebalance(o, [(r.read(a, b), db) for r, db in sources.gains])
    if (a, b) != (start, stop):
        lo, hi = start - a, stop - a
        o = o[:, lo:hi]
        outs = {k: y[:, lo:hi] for k, y in outs.items()}
    return o, outs


def repair_summary(settings, energy):
    """What the repair did, for the log and the manifest: ``{"mode", "leftover_db",
    "leftover_peak", "applied", "note"}``. ``leftover_db`` is the left-out part ``O - Vm - I``
    relative to the original (dB; None when either is silent), ``leftover_peak`` its peak. Stems that sum to the mix (``--other-method minus``)
    have nothing to split: the repair leaves them as they are and says so."""
    mode = getattr(settings, "repair", "none")
    if mode == "none":
        return {"mode": "none", "leftover_db": None, "applied": False,
                "note": "repair off: the stems as the model gave them"}
    lo, orig = energy["leftover"], energy["original"]
    db = None if lo <= 0 or orig <= 0 else round(10 * math.log10(lo / orig), 2)
    from processors.repair import EMPTY_LIMIT

    if energy.get("peak", 0.0) < EMPTY_LIMIT:  # every block below the limit: stems untouched
        note = ("the stems sum to the mix (what is left out never exceeds two 16-bit steps): "
                "nothing to split, the stems are kept as they are")
        applied = False
    else:
        level = "the mix is silent" if db is None else f"{db:+.1f} dB relative to the mix"
        note = f"split the left-out part O - Vm - I ({level}) between the stems"
        applied = True
    log.info("repair %s: %s", mode, note)
    return {"mode": mode, "leftover_db": db, "leftover_peak": energy.get("peak", 0.0),
            "applied": applied, "note": note}


def _gains(peaks, meters, settings):
    """Gains per output, and the loudness measured (LUFS / dBTP, after the gains)."""
    if settings.normalize == "peak":
        gains = {k: (PEAK_TARGET / p if p > 0 else 1.0) for k, p in peaks.items()}
    else:
        gains = dict.fromkeys(peaks, core.clip_gain(max(peaks.values())))
    loudness = {}
    if meters:
        from audio_utils.loudness import match_gain

        measured = {k: (m.integrated_lufs(), m.true_peak_dbtp()) for k, m in meters.items()}
        match = match_gain(measured["original"][0], *measured["blended"])
        gains["blended"] = match.gain
        if match.reason:
            log.info("loudness match: %s", match.reason)
        for k, (lufs, tp) in measured.items():
            g_db = 20 * math.log10(gains[k]) if k in gains else 0.0
            loudness[k] = {"integrated_lufs": _round(lufs + g_db), "true_peak_dbtp": _round(tp + g_db)}
    return gains, loudness


def _round(x):
    return round(x, 2) if math.isfinite(x) else None


def _db(g):
    return round(20 * math.log10(g), 3) if g > 0 else None
