"""utils/separation.py on tiny random-weight models (no download, no network, a few seconds)."""

import logging
import random
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml

import processors.demucs_stream as demucs_stream
import processors.separation as separation
from processors.separation import DemucsSeparator, resolve_device
from tests.conftest import leftovers
from utils.errors import InputError, SeparationError, UsageError

SR = 44100
SOURCES = ["drums", "bass", "other", "vocals"]
# Small enough to run in milliseconds, but every HTDemucs branch (STFT, transformer) is there.
TINY = dict(sources=SOURCES, channels=4, depth=4, t_layers=1, t_heads=1, nfft=1024,
            dconv_comp=2, segment=1, samplerate=SR)


def _write_mix(path, seconds=3.0, channels=2, sr=SR, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    x = 0.3 * np.sin(2 * np.pi * 220 * t) + 0.1 * rng.standard_normal((channels, t.size))
    x = x.astype(np.float32)
    sf.write(path, x.T, sr, subtype="FLOAT")
    return x


def _read(path):
    data, sr = sf.read(path, dtype="float32", always_2d=True)
    return data.T, sr


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    """A local demucs repo: one tiny HTDemucs ``tiny`` and a bag of four ``bag4`` (identity
    weights, like htdemucs_ft), in demucs' .th/.yaml layout."""
    from demucs.htdemucs import HTDemucs
    root = tmp_path_factory.mktemp("models")
    for i, sig in enumerate(["tiny", "m0", "m1", "m2", "m3"]):
        torch.manual_seed(i)
        model = HTDemucs(**TINY)
        torch.save({"klass": HTDemucs, "args": (), "kwargs": TINY, "state": model.state_dict()},
                   root / f"{sig}.th")
    bag = {"models": ["m0", "m1", "m2", "m3"], "weights": np.eye(4).tolist()}
    (root / "bag4.yaml").write_text(yaml.safe_dump(bag))
    return root


def _script_shifts(monkeypatch):
    """Make demucs' random shift offsets a fixed script, so two runs draw the same ones.

    (HTDemucs' forward also consumes the global ``random`` state, so seeding alone would only
    make runs that interleave forwards and draws identically comparable.)"""
    script = iter([4321, 0, 22050, 777, 15000, 3, 9999, 12345] * 2)
    monkeypatch.setattr(random, "randint", lambda a, b: a + next(script) % (b - a + 1))


def _reference(sep, mix, monkeypatch):
    """demucs' own in-memory separation of the whole mix with the same model and options."""
    from demucs.api import Separator
    ref = Separator(sep.model_name, repo=sep.model_repo, device="cpu", shifts=sep.shifts,
                    overlap=sep.overlap, segment=sep.segment)
    ref._model = sep.model  # same weights, and no second load
    _script_shifts(monkeypatch)
    return ref.separate_tensor(torch.from_numpy(mix))[1]


def test_demucs_unittest_stems_equal_unchunked_demucs(tmp_path, monkeypatch):
    # Tiny read blocks and 1 s segments: the 3 s mix crosses many reads and segment joins.
    monkeypatch.setattr(demucs_stream, "READ_BLOCK_S", 0.4)
    mix = _write_mix(tmp_path / "mix.wav")
    sep = DemucsSeparator("demucs_unittest", device="cpu", shifts=2, segment=1.0, overlap=0.3)
    _script_shifts(monkeypatch)
    result = sep.separate_file(tmp_path / "mix.wav", tmp_path / "out")
    vocals, sr = _read(result.vocals)
    no_vocals, _ = _read(result.no_vocals)
    assert (sr, result.samplerate, result.device) == (SR, SR, "cpu")
    assert sf.info(result.vocals).subtype == "FLOAT" and vocals.shape == mix.shape
    ref = _reference(sep, mix, monkeypatch)
    assert np.abs(vocals - ref["vocals"].numpy()).max() < 1e-5
    others = sum(ref[k] for k in ("drums", "bass", "other")).numpy()
    assert np.abs(no_vocals - others).max() < 1e-5
    assert stems_exist(tmp_path / "out") and leftovers(tmp_path / "out") == []


def test_mono_is_duplicated_and_other_rates_resampled(tmp_path):
    sep = DemucsSeparator("demucs_unittest", device="cpu", shifts=0)
    mono = _write_mix(tmp_path / "mono.wav", seconds=1.0, channels=1)
    sf.write(tmp_path / "stereo.wav", np.repeat(mono, 2, 0).T, SR, subtype="FLOAT")
    a = _read(sep.separate_file(tmp_path / "mono.wav", tmp_path / "a").vocals)[0]
    b = _read(sep.separate_file(tmp_path / "stereo.wav", tmp_path / "b").vocals)[0]
    assert a.shape == (2, SR) and np.array_equal(a, b)
    _write_mix(tmp_path / "low.wav", seconds=1.0, sr=22050)
    out, sr = _read(sep.separate_file(tmp_path / "low.wav", tmp_path / "c").vocals)
    assert sr == SR and abs(out.shape[1] - SR) <= 1
    assert [p.name for p in (tmp_path / "c").iterdir()] != [] and stems_exist(tmp_path / "c")
    assert leftovers(tmp_path / "c") == []  # the resampled temp mix is gone


def test_more_than_two_channels_are_downmixed_with_a_warning(tmp_path, caplog):
    x = _write_mix(tmp_path / "surround.wav", seconds=0.5, channels=4)
    sep = DemucsSeparator("demucs_unittest", device="cpu", shifts=0, other_method="minus")
    with caplog.at_level(logging.WARNING, logger="processors.separation"):
        res = sep.separate_file(tmp_path / "surround.wav", tmp_path / "out")
    assert "4 channels" in caplog.text
    vocals, no_vocals = _read(res.vocals)[0], _read(res.no_vocals)[0]
    from audio_utils.matching import match_channels

    down = match_channels(x, 2)  # the one downmix policy: quad L Ls | R Rs
    assert np.abs(vocals + no_vocals - down).max() < 1e-6


def test_model_repo_single_model_and_progress(tmp_path, repo):
    _write_mix(tmp_path / "mix.wav", seconds=2.5)
    calls = []
    sep = DemucsSeparator("tiny", model_repo=repo, device="cpu", shifts=1,
                          progress=lambda done, total: calls.append((done, total)))
    res = sep.separate_file(tmp_path / "mix.wav", tmp_path / "out")
    assert _read(res.vocals)[0].shape == (2, int(2.5 * SR))
    dones = [d for d, _ in calls]
    assert dones == sorted(dones) and calls[-1] == pytest.approx((2.5, 2.5))


def test_minus_on_a_bag_runs_only_the_vocals_model(tmp_path, repo, monkeypatch):
    mix = _write_mix(tmp_path / "mix.wav", seconds=2.0)
    runs = {}
    for method in ("add", "minus"):
        sep = DemucsSeparator("bag4", model_repo=repo, device="cpu", other_method=method)
        counts = [0] * 4
        for i, sub in enumerate(sep.model.models):
            sub.register_forward_hook(lambda *_, i=i: counts.__setitem__(i, counts[i] + 1))
        _script_shifts(monkeypatch)
        res = sep.separate_file(tmp_path / "mix.wav", tmp_path / method)
        runs[method] = counts, _read(res.vocals)[0], _read(res.no_vocals)[0]
    add_counts, minus_counts = runs["add"][0], runs["minus"][0]
    assert min(add_counts) > 0 and minus_counts == [0, 0, 0, add_counts[3]]
    assert np.array_equal(runs["add"][1], runs["minus"][1])  # same vocals, 1/4 of the work
    assert np.abs(runs["minus"][1] + runs["minus"][2] - mix).max() < 1e-6
    ref = _reference(sep, mix, monkeypatch)
    assert np.abs(runs["add"][1] - ref["vocals"].numpy()).max() < 1e-5


def test_all_sources_writes_demucs_layout_and_the_same_two_stems(tmp_path, repo, monkeypatch):
    mix = _write_mix(tmp_path / "mix.wav", seconds=1.0)
    runs = {}
    for all_sources in (False, True):
        sep = DemucsSeparator("bag4", model_repo=repo, device="cpu", other_method="minus",
                              all_sources=all_sources)
        counts = [0] * 4
        for i, sub in enumerate(sep.model.models):
            sub.register_forward_hook(lambda *_, i=i: counts.__setitem__(i, counts[i] + 1))
        _script_shifts(monkeypatch)
        out = tmp_path / str(all_sources)
        sep.separate_file(tmp_path / "mix.wav", out)
        runs[all_sources] = counts, {p.stem: _read(p)[0] for p in out.iterdir()}
    two, full = runs[False][1], runs[True][1]
    assert set(two) == {"vocals", "no_vocals"}  # a two-stem job: two files, as before
    assert set(full) == {"vocals", "no_vocals", *SOURCES}
    assert runs[False][0] == [0, 0, 0, runs[True][0][3]] and min(runs[True][0]) > 0
    assert np.array_equal(two["vocals"], full["vocals"])
    assert np.array_equal(two["no_vocals"], full["no_vocals"])  # minus: mix - vocals
    ref = _reference(sep, mix, monkeypatch)
    for k, name in enumerate(SOURCES):  # each source as demucs' own separation gives it
        assert np.abs(full[name] - ref[name].numpy()).max() < 1e-5


def test_unknown_names_and_repos_are_one_line_separation_errors(tmp_path, repo):
    cases = [("no_such_model", None, "unknown model=no_such_model"),
             ("nope", repo, "model=nope is not in model_repo="),
             ("tiny", tmp_path / "missing", "is not a folder")]
    for name, where, text in cases:
        with pytest.raises(SeparationError) as err:
            DemucsSeparator(name, model_repo=where).check_options()
        assert text in str(err.value) and "\n" not in str(err.value)


def test_download_failure_names_model_caches_and_fix(monkeypatch):
    import demucs.pretrained

    import processors.separation as separation

    def offline(name, repo=None):
        raise OSError("<urlopen error [Errno -2] Name or service not known>\nmore")
    monkeypatch.setattr(demucs.pretrained, "get_model", offline)
    monkeypatch.setattr(separation, "_network_reachable", lambda *a, **k: True)
    with pytest.raises(SeparationError) as err:
        DemucsSeparator("htdemucs_ft").check_options()
    text = str(err.value)
    assert "model=htdemucs_ft" in text and "--model-repo" in text and "\n" not in text
    assert "Hugging Face cache" in text and "Name or service not known" in text


def test_value_checks_alone_do_not_load_the_model():
    sep = DemucsSeparator("no_such_model", device="cpu")
    sep.check_options(load_model=False)
    assert not sep.loaded
    with pytest.raises(ValueError, match="overlap=2"):
        DemucsSeparator("no_such_model", overlap=2).check_options(load_model=False)


@pytest.mark.parametrize("options, error", [
    (dict(segment=1.5), UsageError),  # the tiny transformer was built for 1 s
    (dict(overlap=1.0), ValueError),  # ruled out by Config.validate: the caller's contract
    (dict(shifts=-1), ValueError),
    (dict(other_method="none"), ValueError),
    (dict(device="tpu"), ValueError),
])
def test_bad_options_fail_up_front(repo, options, error):
    with pytest.raises(error):
        DemucsSeparator("tiny", model_repo=repo, **options).check_options()


def stems_exist(folder):
    return all((Path(folder) / name).is_file() for name in ("vocals.wav", "no_vocals.wav"))


def test_shortest_inputs_the_model_takes_are_separated(tmp_path):
    """No invented minimum: a 50 ms clip separates; below what the model takes (3 samples
    with shifts=0: GroupNorm refuses it) the failure is one line saying it is too short."""
    x = np.random.default_rng(0).standard_normal((int(0.05 * SR), 2)).astype(np.float32)
    sf.write(tmp_path / "clip.wav", 0.1 * x, SR)
    for shifts in (0, 1):
        sep = DemucsSeparator("demucs_unittest", device="cpu", shifts=shifts)
        sep.separate_file(tmp_path / "clip.wav", tmp_path / f"out{shifts}")
        assert sf.info(str(tmp_path / f"out{shifts}" / "vocals.wav")).frames == len(x)
    sf.write(tmp_path / "blip.wav", 0.1 * x[:3], SR)
    with pytest.raises(SeparationError, match="blip.wav is too short") as err:
        DemucsSeparator("demucs_unittest", device="cpu", shifts=0).separate_file(
            tmp_path / "blip.wav", tmp_path / "out")
    assert "\n" not in str(err.value)
    assert not stems_exist(tmp_path / "out")


def test_device_faults_fall_back(tmp_path, monkeypatch):
    _write_mix(tmp_path / "mix.wav", seconds=0.5)
    sep = DemucsSeparator("demucs_unittest", device="cpu", shifts=0)
    sep.check_options()
    tried = []

    def fake_write(reader, stats, out_dir, device, segment):
        tried.append((device, segment))
        if device == "cuda":
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")
        if device == "mps":
            raise NotImplementedError("aten::foo is not implemented for MPS")
    monkeypatch.setattr(sep, "_write_stems", fake_write)
    for device, expected in [("cuda", [("cuda", None), ("cuda", 20.0), ("cpu", None)]),
                             ("mps", [("mps", None), ("cpu", None)])]:
        tried.clear()
        sep._device = device
        assert sep.separate_file(tmp_path / "mix.wav", tmp_path / "out").device == "cpu"
        assert tried == expected


def test_resolve_device():
    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else
                                      "mps" if torch.backends.mps.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(UsageError, match="device=cuda"):
            resolve_device("cuda")
