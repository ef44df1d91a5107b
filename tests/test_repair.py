"""The repair (processors/repair.py) and its place in rendering: --repair none is today's
arithmetic bit for bit, the repaired stems add up to the mix, blocks equal the whole track,
stems that sum to the mix are left as they are, and lost parts go back where they belong."""

import json
from dataclasses import replace

import numpy as np
import pytest

from config_loader import REPAIR_MODES, Config
from processors import repair as rp
from processors import vtrace_core as core
from processors.render import RenderSettings, compute, repair_summary, shaping
from tests.conftest import SR, read, tone_mix

N = int(1.5 * SR)


class ArrayReader:
    """A BlockReader stand-in over an array: zeros outside the track, like the real one."""

    def __init__(self, x):
        self.x, self.frames = x, x.shape[1]

    def read(self, a, b):
        out = np.zeros((self.x.shape[0], b - a), np.float32)
        lo, hi = max(a, 0), min(b, self.frames)
        out[:, lo - a:hi - a] = self.x[:, lo:hi]
        return out

    def close(self):
        pass


def sources(o, inst, voc):
    from processors.render import Sources

    return Sources(ArrayReader(o), ArrayReader(inst), ArrayReader(voc))


def damaged(seed=0, seconds=1.5):
    """A song whose model stems lost the instrumental's bass (half of it below ~150 Hz) and
    let 10 % of the accompaniment into the vocal: ``(o, inst, voc, true_v, true_a)``."""
    from scipy.signal import butter, sosfiltfilt

    v, a = tone_mix(seconds=seconds, seed=seed)
    o = (v + a).astype(np.float32)
    low = sosfiltfilt(butter(4, 150, fs=SR, output="sos"), a, axis=1).astype(np.float32)
    inst = (a - 0.5 * low).astype(np.float32)
    voc = (v + 0.1 * (a - low)).astype(np.float32)
    return o, inst, voc, v, a


def usdr(ref, est):
    return 10 * np.log10(np.sum(ref.astype(np.float64) ** 2)
                         / np.sum((ref.astype(np.float64) - est) ** 2))


def settings(**kw):
    return replace(RenderSettings.of(Config()), **kw)


def test_config_modes_are_the_repair_modes():
    assert REPAIR_MODES == rp.MODES
    assert "repair" in {f for f in RenderSettings.__dataclass_fields__}


def test_repair_none_is_todays_arithmetic_bit_for_bit():
    o, inst, voc, _, _ = damaged()
    s = sources(o, inst, voc)
    for va, w in ((1.0, 0.1), (0.6, 0.3)):
        plan = shaping(settings(repair="none", voice_alpha=va), SR)
        assert plan["repair"] is None and plan["context"] == 0
        _, outs = compute(s, 0, N, w, va, SR, plan)
        r = np.subtract(o, inst, dtype=np.float32)
        v = r if va == 1.0 else (np.float32(va) * r + np.float32(1 - va) * voc).astype(np.float32)
        assert np.array_equal(outs["vocal_residual"], v)
        assert np.array_equal(outs["phase_cancel"], np.subtract(o, v, dtype=np.float32))
        assert np.array_equal(outs["blended"], (np.float32(w) * o + np.float32(1 - w) * inst)
                              .astype(np.float32))
        assert np.array_equal(outs["blended"], core.blend(o, inst, w))


@pytest.mark.parametrize("mode", ["wiener", "project"])
def test_repaired_stems_add_up_to_the_mix(mode):
    o, inst, voc, _, _ = damaged()
    i2, v2 = rp.repair(o, inst, voc, mode)
    assert i2.dtype == v2.dtype == np.float32 and i2.shape == o.shape
    assert np.max(np.abs(i2 + v2 - o)) < 1e-6
    _, outs = compute(sources(o, inst, voc), 0, N, 0.1, 1.0, SR,
                      shaping(settings(repair=mode), SR))
    assert np.max(np.abs(outs["vocal_residual"] + outs["phase_cancel"] - o)) < 1e-6
    # the blend uses the repaired instrumental: B = I' + w*(O - I')
    assert np.allclose(outs["blended"], i2 + 0.1 * (o - i2), atol=1e-6)


@pytest.mark.parametrize("mode", ["wiener", "project"])
@pytest.mark.parametrize("extra", [{}, {"residual_hpf": 100.0, "blend_mode": "gate"}])
def test_blockwise_equals_whole_track(mode, extra):
    o, inst, voc, _, _ = damaged(seconds=2.5)
    n = o.shape[1]
    s = sources(o, inst, voc)
    plan = shaping(settings(repair=mode, **extra), SR)
    assert plan["context"] >= rp.context(SR)
    _, whole = compute(s, 0, n, 0.2, 1.0, SR, plan)
    block = 9001  # not a multiple of the hop
    parts = [compute(s, a, min(n, a + block), 0.2, 1.0, SR, plan)[1]
             for a in range(0, n, block)]
    for k in whole:
        joined = np.concatenate([p[k] for p in parts], axis=1)
        assert np.max(np.abs(joined - whole[k])) < 1e-6, k


def test_stems_that_sum_to_the_mix_are_left_as_they_are():
    o, _, voc, _, _ = damaged()
    inst = np.subtract(o, voc, dtype=np.float32)  # --other-method minus
    for mode in ("wiener", "project"):
        i2, v2 = rp.repair(o, inst, voc, mode)
        assert i2 is inst and v2 is voc
    stats = {}
    compute(sources(o, inst, voc), 0, N, 0.1, 1.0, SR, shaping(settings(repair="project"), SR),
            stats)
    summary = repair_summary(settings(repair="project"), stats)
    assert summary["applied"] is False and "sum to the mix" in summary["note"]


def test_lost_bass_and_bleed_go_back_where_they_belong():
    o, inst, voc, v, a = damaged()
    i2, v2 = rp.repair(o, inst, voc, "project")
    # the bass the instrumental lost returns to it; the accompaniment bled into the vocal
    # leaves it (it was counted twice: e holds minus it)
    assert usdr(a, i2) > usdr(a, inst) + 3.0
    assert usdr(v, v2) > usdr(v, voc) + 3.0
    # today's arithmetic put the lost bass into the vocal
    assert usdr(v, v2) > usdr(v, o - inst) + 3.0
    iw, vw = rp.repair(o, inst, voc, "wiener")
    assert usdr(a, iw) > usdr(a, inst) + 3.0


def test_band_limited_stems_get_their_highs_back():
    from scipy.signal import butter, sosfiltfilt

    v, a = tone_mix(seconds=1.5, seed=3)
    o = (v + a).astype(np.float32)
    sos = butter(8, 11000, fs=SR, output="sos")
    inst = sosfiltfilt(sos, a, axis=1).astype(np.float32)
    voc = sosfiltfilt(sos, v, axis=1).astype(np.float32)
    i2, v2 = rp.repair(o, inst, voc, "project")
    assert usdr(a, i2) > usdr(a, inst) + 1.0
    assert usdr(v, v2) > usdr(v, voc) - 0.2


def test_unknown_mode_is_a_value_error():
    o, inst, voc, _, _ = damaged(seconds=0.2)
    with pytest.raises(ValueError, match="repair mode"):
        rp.repair(o, inst, voc, "magic")


def test_cli_writes_repaired_outputs_and_says_so_in_the_manifest(song):
    from main import main

    common = ["-i", str(song["dir"]), "--model", "test", "--separated-dir",
              str(song["sep"]), "--quiet", "--log-dir", str(song["tmp"] / "logs"),
              "--wav-format", "float32"]
    # the fixture's stems sum to the mix: nothing to split, the manifest says so
    assert main(common + ["-o", str(song["tmp"] / "out")]) == 0
    manifest = json.loads((song["tmp"] / "out/test/mix/mix_vtrace.json").read_text())
    assert manifest["params"]["repair"] == "project"
    assert manifest["repair"]["applied"] is False
    assert "sum to the mix" in manifest["repair"]["note"]
    # stems that lost half of the instrumental: the repair gives it back
    from tests.conftest import write

    write(song["sep"] / "test/mix/no_vocals.wav", 0.5 * song["inst"])
    assert main(common + ["-o", str(song["tmp"] / "out2")]) == 0
    manifest = json.loads((song["tmp"] / "out2/test/mix/mix_vtrace.json").read_text())
    assert manifest["repair"]["applied"] is True
    pc, _ = read(song["tmp"] / "out2/test/mix/mix_phase_cancel.wav")
    voice, _ = read(song["tmp"] / "out2/test/mix/mix_vocal_residual.wav")
    assert np.max(np.abs(pc + voice - song["mix"])) < 1e-5
    assert usdr(song["inst"], pc) > usdr(song["inst"], 0.5 * song["inst"]) + 3.0


def test_stems_through_16_bit_files_that_sum_are_left_as_they_are():
    o, _, voc, _, _ = damaged()
    inst = o - voc

    def pcm16(x):
        return (np.round(x * 32767) / 32767).astype(np.float32)

    o16, inst16, voc16 = pcm16(o), pcm16(inst), pcm16(voc)
    assert np.max(np.abs(o16 - inst16 - voc16)) > 0  # rounding leaves something
    i2, v2 = rp.repair(o16, inst16, voc16, "project")
    assert i2 is inst16 and v2 is voc16


def test_summary_of_stems_over_a_silent_mix():
    s = settings(repair="project")
    summary = repair_summary(s, {"leftover": 1.0, "original": 0.0, "peak": 0.5})
    assert summary["applied"] is True and "the mix is silent" in summary["note"]
    assert repair_summary(settings(repair="none"), {})["applied"] is False


def test_render_in_blocks_equals_one_block(song):
    """The real path (files, BlockReaders, the pipeline): 0.5 s blocks equal one block."""
    from main import main
    from tests.conftest import write

    write(song["sep"] / "test/mix/no_vocals.wav", 0.6 * song["inst"])  # lost 40 %
    outs = {}
    for block in ("0.5", "600"):
        out = song["tmp"] / f"out{block}"
        assert main(["-i", str(song["dir"]), "--model", "test", "--separated-dir",
                     str(song["sep"]), "--quiet", "--log-dir", str(song["tmp"] / "logs"),
                     "--wav-format", "float32", "--block-seconds", block, "-o", str(out),
                     "--residual-hpf", "90"]) == 0
        outs[block] = {k: read(out / f"test/mix/mix_{k}.wav")[0]
                       for k in ("blended", "vocal_residual", "phase_cancel")}
    for k in outs["600"]:
        assert np.max(np.abs(outs["0.5"][k] - outs["600"][k])) < 1e-6, k


@pytest.mark.parametrize("threads", [1, 3])
def test_blocks_computed_at_once_equal_one_at_a_time(song, monkeypatch, threads):
    """Several blocks computed at once (threads, each original read through its own handle)
    write exactly what one-at-a-time does: the 0.25 s blocks here overlap in flight."""
    from main import main
    from processors import render
    from tests.conftest import write

    write(song["sep"] / "test/mix/no_vocals.wav", 0.6 * song["inst"])
    outs = {}
    for depth in (1, threads):
        monkeypatch.setattr(render, "compute_threads", lambda workers, d=depth, **_: d)
        out = song["tmp"] / f"out{depth}"
        assert main(["-i", str(song["dir"]), "--model", "test", "--separated-dir",
                     str(song["sep"]), "--quiet", "--log-dir", str(song["tmp"] / "logs"),
                     "--wav-format", "float32", "--block-seconds", "0.5", "-o", str(out)]) == 0
        outs[depth] = {k: read(out / f"test/mix/mix_{k}.wav")[0]
                       for k in ("blended", "vocal_residual", "phase_cancel")}
    for k in outs[1]:
        assert np.array_equal(outs[1][k], outs[threads][k]), k


def test_compute_threads_share_the_cores_between_workers():
    from processors.render import compute_threads

    assert compute_threads(1, cores=2) == 2
    assert compute_threads(2, cores=2) == 1
    assert compute_threads(4, cores=2) == 1
    assert compute_threads(1, cores=64) == 4
    assert compute_threads(3, cores=12) == 4 and compute_threads(6, cores=12) == 2
    # the plain arithmetic: half as many, at least one
    assert compute_threads(1, cores=2, light=True) == 1
    assert compute_threads(1, cores=64, light=True) == 2
    assert compute_threads(2, cores=2, light=True) == 1


def test_only_the_plain_arithmetic_is_light():
    from config_loader import Config
    from processors.render import RenderSettings, plain, shaping

    def plan(**changes):
        cfg = Config()
        for k, v in changes.items():
            setattr(cfg, k, v)
        return shaping(RenderSettings.of(cfg), SR)

    assert plain(plan(repair="none"))
    assert not plain(plan(repair="project"))
    assert not plain(plan(repair="none", residual_hpf=80.0))
    assert not plain(plan(repair="none", blend_mode="gate"))


@pytest.mark.parametrize("transposed", [False, True])
def test_scaled_is_the_complex_product(transposed):
    rng = np.random.default_rng(3)
    shape = (2, 7, 5)
    X = (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)
    if transposed:  # _stft's layout: (channels, frames, bins) memory seen as (c, bins, frames)
        X = np.ascontiguousarray(X.transpose(0, 2, 1)).transpose(0, 2, 1)
    g = rng.standard_normal(shape[1:])
    got = rp._scaled(g, X)
    assert got.shape == X.shape and got.dtype == np.complex64
    assert np.allclose(got, g.astype(np.float32)[None] * X, rtol=1e-6, atol=1e-7)
