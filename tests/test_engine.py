"""The Engine's small API, called directly as the web page and cluster workers will."""

from pathlib import Path

import numpy as np

from config_loader import Config
from processors.engine import Engine
from tests.conftest import read
from utils.inputs import collect_inputs


def _engine(song, **changes):
    settings = {"model": "test", "separated_dir": str(song["sep"]), **changes}
    cfg = Config(**settings).validate()
    return Engine(cfg)


def test_describe_then_process_then_skip(song):
    engine = _engine(song)
    out = song["tmp"] / "out"
    (track,) = collect_inputs([str(song["dir"])])
    plan = engine.describe(track, out)
    assert plan.stems is not None and not plan.outputs_current and not plan.needs_separation
    assert plan.out_dir == out / "test" / "mix"

    result = engine.process(track, out)
    assert result.status == "ok" and abs(result.audio_seconds - 3.0) < 1e-3
    blended, _ = read(out / "test" / "mix" / "mix_blended.wav")
    expected = 0.1 * song["mix"] + 0.9 * song["inst"]
    assert np.abs(blended - expected).max() < 2e-7 * 64  # pcm24 rounding

    assert engine.describe(track, out).outputs_current
    again = engine.process(track, out)
    assert again.status == "skipped" and again.audio_seconds == result.audio_seconds


def test_other_settings_make_outputs_stale(song):
    out = song["tmp"] / "out"
    (track,) = collect_inputs([str(song["dir"])])
    assert _engine(song).process(track, out).status == "ok"
    assert not _engine(song, blend_alpha=0.5).describe(track, out).outputs_current
    assert _engine(song, thread=2, quiet=True).describe(track, out).outputs_current  # run-only


def test_a_bad_track_is_a_result_not_an_exception(song, tmp_path):
    bad = tmp_path / "songs" / "bad.wav"
    bad.write_bytes(b"not audio at all")
    engine = _engine(song)
    result = engine.process(collect_inputs([str(bad)])[0], tmp_path / "out")
    assert result.status == "failed" and "bad.wav" in result.reason
    assert not (tmp_path / "out" / "bad").exists()


def test_missing_stems_mean_separation_is_needed(song, tmp_path):
    engine = _engine(song, model="elsewhere")
    (track,) = collect_inputs([str(song["dir"])])
    plan = engine.describe(track, tmp_path / "out")
    assert plan.needs_separation and plan.stems_folder == Path(song["sep"]) / "elsewhere" / "mix"
