"""The original decoded ahead of the render (``OriginalBlocks``): the same samples, bounded
memory, started before the stems are aligned, paused for a separation."""

import threading

import numpy as np
import pytest

import processors.track as track_module
from audio_utils.audio_io import BlockReader
from main import main
from processors import render
from processors.render import OriginalBlocks, RenderSettings, block_spans
from tests.conftest import SR, read, write


def _settings(**changes):
    from config_loader import Config

    cfg = Config()
    for k, v in changes.items():
        setattr(cfg, k, v)
    return RenderSettings.of(cfg)


class CountingReader:
    """A BlockReader that records the spans it decoded (shared list across clones)."""

    def __init__(self, path, seen, gate=None):
        self.reader, self.seen, self.gate = BlockReader(path, 2), seen, gate

    def read(self, a, b):
        self.seen.append((a, b))
        if self.gate is not None:
            self.gate.set()
        return self.reader.read(a, b)

    def close(self):
        self.reader.close()


@pytest.mark.parametrize("repair", ["none", "project"])
def test_blocks_are_the_original_with_the_render_margin(tmp_path, repair):
    """Each block is the original over the block widened by the margin the computations need
    (none without filters or repair, the repair's STFT context with one), cut at the ends."""
    x = np.random.default_rng(0).standard_normal((2, 5 * SR)).astype(np.float32) * 0.1
    path = write(tmp_path / "o.wav", x)
    settings = _settings(block_seconds=0.5, repair=repair)
    context = render.shaping(settings, SR)["context"]
    assert (context > 0) == (repair != "none")
    spans = block_spans(x.shape[1], SR, settings)
    with OriginalBlocks(lambda: BlockReader(path, 2), x.shape[1], SR, 2, settings) as blocks:
        for j, (a, b) in enumerate(spans):
            got = blocks.future(j).result()
            lo, hi = max(a - context, 0), min(b + context, x.shape[1])
            assert np.array_equal(got, x[:, lo:hi]), j


def test_blocks_decoded_ahead_are_bounded(tmp_path, monkeypatch):
    """Nothing taken: at most the bound's worth of blocks is ever decoded, the first ones."""
    x = np.zeros((2, 20 * SR), np.float32)
    path = write(tmp_path / "o.wav", x)
    settings = _settings(block_seconds=0.5, repair="none")
    block_bytes = 4 * 2 * int(0.5 * SR)
    monkeypatch.setattr(render, "AHEAD_BYTES", 5 * block_bytes)
    seen = []
    blocks = OriginalBlocks(lambda: CountingReader(path, seen), x.shape[1], SR, 2, settings)
    blocks.close()  # waits for every decoding started
    assert len(block_spans(x.shape[1], SR, settings)) == 40
    starts = sorted(a for a, _ in seen)
    assert 1 <= len(starts) <= 6
    assert starts == [j * int(0.5 * SR) for j in range(len(starts))]


def test_paused_blocks_start_again_where_asked(tmp_path):
    x = np.random.default_rng(1).standard_normal((2, 4 * SR)).astype(np.float32)
    path = write(tmp_path / "o.wav", x)
    settings = _settings(block_seconds=1.0, repair="none")
    with OriginalBlocks(lambda: BlockReader(path, 2), x.shape[1], SR, 2, settings) as blocks:
        blocks.pause()
        assert np.array_equal(blocks.future(2).result(), x[:, 2 * SR:3 * SR])
        assert np.array_equal(blocks.future(3).result(), x[:, 3 * SR:])


def test_the_original_decodes_while_the_stems_are_aligned(song, monkeypatch):
    """The render's first blocks are decoding before the alignment finishes: the alignment
    here waits until a decoding thread has read the original (it would wait forever, then
    fail, if decoding started only with the render)."""
    write(song["sep"] / "test/mix/no_vocals.wav", song["inst"])  # another tool's: aligned
    decoding = threading.Event()
    opened = []
    real_blocks, real_align = track_module.OriginalBlocks, track_module.align_stems

    def counting_blocks(open_reader, *a, **k):
        def open_counting():
            r = open_reader()
            opened.append(r)
            gate = decoding
            real_read = r.read

            def read(*span):
                gate.set()
                return real_read(*span)

            r.read = read
            return r
        return real_blocks(open_counting, *a, **k)

    def align_after_decoding(*a, **k):
        assert decoding.wait(timeout=30), "the original did not decode during alignment"
        return real_align(*a, **k)

    monkeypatch.setattr(track_module, "OriginalBlocks", counting_blocks)
    monkeypatch.setattr(track_module, "align_stems", align_after_decoding)
    out = song["tmp"] / "out"
    assert main(["-i", str(song["dir"]), "--model", "test", "--separated-dir", str(song["sep"]),
                 "--quiet", "--log-dir", str(song["tmp"] / "logs"), "--wav-format", "float32",
                 "--repair", "none", "-o", str(out)]) == 0
    assert opened
    o = read(out / "test/mix/mix_phase_cancel.wav")[0]
    assert np.allclose(o, song["inst"], atol=1e-6)


def test_a_separation_pauses_the_decoding_ahead(tmp_path, monkeypatch):
    """The decoding ahead is dropped before the separation runs (it wants the cores and the
    memory), and the render still gets every block."""
    from processors.engine import Engine
    from tests.conftest import tone_mix

    vocals, inst = tone_mix(seconds=1.0)
    write(tmp_path / "songs" / "mix.wav", vocals + inst)
    events = []
    real_pause, real_separate = OriginalBlocks.pause, Engine._separate

    def pause(self):
        events.append("pause")
        return real_pause(self)

    def separate(self, *a):
        events.append("separate")
        return real_separate(self, *a)

    monkeypatch.setattr(OriginalBlocks, "pause", pause)
    monkeypatch.setattr(Engine, "_separate", separate)
    out = tmp_path / "out"
    assert main(["-i", str(tmp_path / "songs"), "--model", "demucs_unittest",
                 "--separated-dir", str(tmp_path / "separated"), "--quiet", "--log-dir",
                 str(tmp_path / "logs"), "--device", "cpu", "--wav-format", "float32",
                 "--repair", "none", "-o", str(out)]) == 0
    assert events[:2] == ["pause", "separate"]
    stems = tmp_path / "separated/demucs_unittest/mix"
    # every block rendered: the residual is the whole mix less the whole instrumental
    mix, inst_sep = read(tmp_path / "songs/mix.wav")[0], read(stems / "no_vocals.wav")[0]
    residual = read(out / "demucs_unittest/mix/mix_vocal_residual.wav")[0]
    assert residual.shape == mix.shape
    assert np.allclose(residual, mix - inst_sep, atol=1e-6)
