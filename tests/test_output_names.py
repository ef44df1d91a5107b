"""Issue 12 item 6: models kept apart, demucs' --filename convention, replaced outputs."""

import json

import pytest

from config_loader import load_config
from main import main
from tests.conftest import tone_mix, write
from utils.errors import ConfigError


def _song(tmp_path):
    vocals, inst = tone_mix(seconds=1.0)
    write(tmp_path / "songs" / "mix.wav", vocals + inst)
    for model in ("m1", "m2"):
        write(tmp_path / "sep" / model / "mix" / "vocals.wav", vocals)
        write(tmp_path / "sep" / model / "mix" / "no_vocals.wav", inst)


def _run(tmp_path, *extra):
    return main([str(tmp_path / "songs"), "--separated-dir", str(tmp_path / "sep"), "-o",
                 str(tmp_path / "out"), "--quiet", "--log-dir", str(tmp_path / "logs"),
                 *extra])


def test_models_are_kept_apart_by_default(tmp_path):
    _song(tmp_path)
    assert _run(tmp_path, "--model", "m1") == 0
    assert _run(tmp_path, "--model", "m2") == 0
    for model in ("m1", "m2"):
        assert (tmp_path / "out" / model / "mix" / "mix_blended.wav").is_file()
        assert (tmp_path / "out" / model / "mix" / "mix_vtrace.json").is_file()


def test_a_template_with_blend_settings_keeps_ab_runs_side_by_side(tmp_path, capsys):
    _song(tmp_path)
    template = "{track}/{model}-a{blend_alpha}/{output}.{ext}"
    for alpha in ("0.1", "0.5"):
        assert _run(tmp_path, "--model", "m1", "--filename", template, "-ba", alpha) == 0
    for alpha in ("0.1", "0.5"):
        folder = tmp_path / "out" / "mix" / f"m1-a{alpha}"
        assert {p.name for p in folder.iterdir()} == {
            "blended.wav", "vocal_residual.wav", "phase_cancel.wav", "vtrace.json"}
    capsys.readouterr()
    assert _run(tmp_path, "--model", "m1", "--filename", template, "-ba", "0.1") == 0
    assert "1 skipped" in capsys.readouterr().out  # each variant resumes on its own


@pytest.mark.parametrize("template, text", [
    ("{output}.{ext}", "needs {track}"),
    ("{track}.{ext}", "needs {output}"),
    ("{track}_{output}.wav", "needs {ext}"),
    ("{track}_{output}.{ext}.bak", "must end with .{ext}"),
    ("{track}_{output}_{bitrate}.{ext}", "unknown field(s) bitrate"),
    ("../{track}_{output}.{ext}", "inside the output folder"),
    ("/abs/{track}_{output}.{ext}", "inside the output folder"),
    ("{track_{output}.{ext}", "filename="),
])
def test_bad_templates_are_usage_errors(template, text):
    with pytest.raises(ConfigError) as err:
        load_config(["x", "--filename", template])
    assert text in str(err.value)


def test_switching_to_mp3_only_removes_the_stale_wavs(tmp_path, caplog):
    _song(tmp_path)
    folder = tmp_path / "out" / "m1" / "mix"
    assert _run(tmp_path, "--model", "m1") == 0
    assert (folder / "mix_blended.wav").is_file()
    caplog.set_level("INFO")
    assert _run(tmp_path, "--model", "m1", "--convert-mp3", "--mp3-only") == 0
    assert sorted(p.name for p in folder.iterdir()) == [
        "mix_blended.mp3", "mix_phase_cancel.mp3", "mix_vocal_residual.mp3", "mix_vtrace.json"]
    manifest = json.loads((folder / "mix_vtrace.json").read_text())
    assert all(f.endswith(".mp3") for f in manifest["files"])
    assert "replacing outputs made with other settings (convert_to_mp3 False -> True, " \
           "mp3_only False -> True)" in caplog.text
