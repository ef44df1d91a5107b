"""--precision (bfloat16 autocast, refused where emulated) and the batched segment walk."""

import json
import random

import numpy as np
import pytest
import soundfile as sf
import torch

import processors.separation as separation
from main import main
from processors.separation import DemucsSeparator, resolve_precision
from tests.conftest import tone_mix, write
from utils.errors import UsageError

SR = 44100
TINY = dict(sources=["drums", "bass", "other", "vocals"], channels=4, depth=4, t_layers=1,
            t_heads=1, nfft=1024, dconv_comp=2, segment=1, samplerate=SR)


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    """One tiny random-weight HTDemucs (every branch: STFT, transformer) named ``tiny``."""
    from demucs.htdemucs import HTDemucs
    root = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    model = HTDemucs(**TINY)
    torch.save({"klass": HTDemucs, "args": (), "kwargs": TINY, "state": model.state_dict()},
               root / "tiny.th")
    return root


def _mix(path, seconds=3.0):
    vocals, inst = tone_mix(seconds=seconds)
    write(path, vocals + inst)
    return path


def _stems(sep, mix, out, monkeypatch):
    """Separate with a fixed script of random shift offsets (same draws in every run)."""
    script = iter([4321, 0, 22050, 777, 15000, 3] * 4)
    monkeypatch.setattr(random, "randint", lambda a, b: a + next(script) % (b - a + 1))
    result = sep.separate_file(mix, out)
    return result, [sf.read(p, dtype="float32")[0] for p in (result.vocals, result.no_vocals)]


def _sdr(ref, est):
    return 10 * np.log10(np.sum(ref.astype(np.float64) ** 2)
                         / np.sum((ref.astype(np.float64) - est) ** 2))


@pytest.mark.parametrize("model", ["demucs_unittest", "tiny"])
def test_bfloat16_stems_are_close_to_float32(tmp_path, repo, monkeypatch, model):
    # Runs on any CPU: the native-bf16 check is what refuses, autocast itself works anywhere.
    monkeypatch.setattr(separation, "cpu_has_native_bf16", lambda: True)
    mix = _mix(tmp_path / "mix.wav")
    repo_arg = None if model == "demucs_unittest" else repo
    runs, loaded = {}, None
    for precision in ("float32", "bfloat16"):
        sep = DemucsSeparator(model, model_repo=repo_arg, device="cpu", shifts=1,
                              precision=precision)
        loaded = sep._model = loaded or sep.model  # demucs_unittest draws weights per load
        runs[precision] = _stems(sep, mix, tmp_path / precision, monkeypatch)
    (r32, s32), (r16, s16) = runs["float32"], runs["bfloat16"]
    assert (r32.precision, r16.precision) == ("float32", "bfloat16")
    for a, b in zip(s32, s16):
        assert a.shape == b.shape and not np.array_equal(a, b)  # bf16 really ran
        # Bound: >= 30 dB SDR against the float32 stems (random tiny weights measured ~38-45 dB;
        # the htdemucs-sized benchmark model ~48 dB)
        assert _sdr(a, b) >= 30


def test_bfloat16_is_refused_up_front_where_it_would_be_emulated(monkeypatch):
    monkeypatch.setattr(separation, "cpu_has_native_bf16", lambda: False)
    sep = DemucsSeparator("demucs_unittest", device="cpu", precision="bfloat16")
    with pytest.raises(UsageError, match="precision=bfloat16: this CPU has no native bfloat16"):
        sep.check_options(load_model=False)
    assert resolve_precision("auto", "cpu") == "float32"
    assert resolve_precision("float32", "cpu") == "float32"
    monkeypatch.setattr(separation, "cpu_has_native_bf16", lambda: True)
    assert resolve_precision("bfloat16", "cpu") == "bfloat16"
    monkeypatch.setattr(separation, "AUTO_BF16_ON_CPU", True)
    assert resolve_precision("auto", "cpu") == "bfloat16"
    monkeypatch.setattr(separation, "AUTO_BF16_ON_CPU", False)
    assert resolve_precision("auto", "cpu") == "float32"
    with pytest.raises(UsageError, match="device=mps"):
        resolve_precision("bfloat16", "mps")


def _args(tmp_path, *extra):
    return ["-i", str(tmp_path / "songs"), "--model", "demucs_unittest",
            "--separated-dir", str(tmp_path / "sep"), "-o", str(tmp_path / "out"), "--quiet",
            "--log-dir", str(tmp_path / "logs"), "--device", "cpu"] + list(extra)


def test_cli_refuses_emulated_bfloat16_with_one_line_and_exit_2(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(separation, "cpu_has_native_bf16", lambda: False)
    _mix(tmp_path / "songs" / "s.wav", seconds=1.0)
    assert main(_args(tmp_path, "--precision", "bfloat16")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "precision=bfloat16" in err[0] and "--precision float32" in err[0]
    assert not (tmp_path / "out").exists() and not (tmp_path / "sep").exists()


def test_manifest_records_the_precision(tmp_path, monkeypatch):
    monkeypatch.setattr(separation, "cpu_has_native_bf16", lambda: True)
    _mix(tmp_path / "songs" / "s.wav", seconds=1.0)
    assert main(_args(tmp_path, "--precision", "bfloat16")) == 0
    manifest = json.loads((tmp_path / "out" / "demucs_unittest" / "s" / "s_vtrace.json").read_text())
    assert manifest["params"]["precision"] == "bfloat16"
    assert manifest["run"]["precision"] == "bfloat16"


@pytest.mark.parametrize("model,shifts,segment", [("tiny", 2, None), ("tiny", 0, 0.7),
                                                  ("demucs_unittest", 1, 1.0)])
def test_batched_walk_equals_the_unbatched_one(tmp_path, repo, monkeypatch, model, shifts,
                                               segment):
    mix = _mix(tmp_path / "mix.wav", seconds=4.0)
    repo_arg = None if model == "demucs_unittest" else repo
    stems, loaded = {}, None
    for batch in (1, 3):
        sep = DemucsSeparator(model, model_repo=repo_arg, device="cpu", shifts=shifts,
                              segment=segment)
        loaded = sep._model = loaded or sep.model  # demucs_unittest draws weights per load
        sep.batch_segments = batch
        stems[batch] = _stems(sep, mix, tmp_path / str(batch), monkeypatch)[1]
        assert sep._batch_ran == batch
    for a, b in zip(stems[1], stems[3]):
        assert np.abs(a - b).max() < 1e-6


def test_batch_is_one_on_cpu():
    sep = DemucsSeparator("demucs_unittest", device="cpu")
    assert sep._batch("cpu", None) == 1


def _omp_policy(env):
    import os
    import subprocess
    import sys
    from pathlib import Path
    code = ("import os, processors.separation, torch; torch.ones(4).sum(); "
            "print(os.environ.get('OMP_WAIT_POLICY'))")
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"} | env
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[1], check=True).stdout.strip()


def test_openmp_threads_wait_passively_unless_the_user_chose():
    assert _omp_policy({}) == "PASSIVE"
    assert _omp_policy({"OMP_WAIT_POLICY": "ACTIVE"}) == "ACTIVE"


def test_torch_threads_share_the_cores_between_workers():
    from processors.engine import torch_threads
    assert [torch_threads(w, cores=8) for w in (1, 2, 3, 8, 16)] == [8, 4, 2, 1, 1]
