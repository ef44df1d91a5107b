"""config.yaml, the command line and Config.validate()."""

from dataclasses import fields
from pathlib import Path

import pytest
import yaml

from config_loader import Config, build_parser, load_config
from utils.errors import ConfigError, UsageError

ROOT = Path(__file__).resolve().parents[1]


def _cfg_file(tmp_path, text):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return str(p)


def test_shipped_config_has_every_option_at_its_default():
    data = yaml.safe_load((ROOT / "config.yaml").read_text())
    assert set(data) == {f.name for f in fields(Config)}
    assert Config(**data) == Config()
    Config(**data).validate()


def test_every_option_is_on_the_command_line_in_both_spellings():
    parser = build_parser()
    flags = {s for a in parser._actions for s in a.option_strings}
    for f in fields(Config):
        if f.metadata["typ"] is None and f.type is bool:  # a --no- form for every switch
            assert f"--no-{f.name.replace('_', '-')}" in flags
        assert f"--{f.name}" in flags
        assert f"--{f.name.replace('_', '-')}" in flags
    for short in ("-i", "-o", "-ba", "-a", "-va", "-t", "-T", "-l"):
        assert short in flags
    assert "--convert_mp3" in flags and "--demucs-model" in flags


def test_file_values_apply_and_typed_options_override_only_themselves(tmp_path):
    path = _cfg_file(tmp_path, "blend_alpha: 0.4\nvoice_alpha: 0.5\nblend_mode: exp\n")
    cfg, typed, _ = load_config(["--config", path, "-i", "x", "--voice-alpha", "0.9"])
    assert cfg.blend_alpha == 0.4 and cfg.blend_mode == "exp"
    assert cfg.voice_alpha == 0.9
    assert typed == {"input", "voice_alpha"}
    cfg, _, _ = load_config(["--config", path, "-a", "0.2", "--blend_mode", "power"])
    assert (cfg.blend_alpha, cfg.blend_mode) == (0.2, "power")


def test_boolean_flags_can_switch_off_a_file_default(tmp_path):
    path = _cfg_file(tmp_path, "eval: true\nalign: true\n")
    cfg, _, _ = load_config(["--config", path, "--no-eval", "--no-align"])
    assert cfg.eval is False and cfg.align is False


@pytest.mark.parametrize("text,message", [
    ("blend_alpha: 1.5\n", r"blend_alpha=1.5 in .*c.yaml: out of range \(>= 0 and <= 1\)"),
    ("blend_alpha: high\n", r"blend_alpha='high'.*expected a number"),
    ("blend_mode: cubic\n", r"blend_mode='cubic'.*allowed values are linear, exp"),
    ("thread: 2.5\n", r"thread=2.5.*whole number"),
    ("thread: 0\n", r"thread=0.*>= 1"),
    ("eval: yes please\n", r"eval='yes please'.*true or false"),
    ("blend_alpah: 0.3\n", r"unknown key 'blend_alpah'"),
    ("blend-alpha: 0.3\n", r"unknown key 'blend-alpha' \(did you mean blend_alpha\?\)"),
    ("input: song.wav\n", r"input='song.wav'.*list of strings"),
    ("- a\n- b\n", r"mapping"),
    ("gamma: 0\n", r"gamma=0.*> 0"),
    ("mp3_only: true\n", r"mp3_only=true needs convert_to_mp3=true"),
    ("residual_hpf: 500\nresidual_lpf: 200\n", r"residual_hpf=500"),
    ("wav_format: mp3\n", r"wav_format='mp3'.*pcm16, pcm24, float32"),
])
def test_each_validation_error_names_key_value_and_allowed(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message):
        load_config(["--config", _cfg_file(tmp_path, text)])


def test_command_line_values_are_validated_too():
    with pytest.raises(ConfigError, match=r"voice_alpha=2.0 in command line"):
        load_config(["-va", "2"])


def test_missing_config_file_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="file not found"):
        load_config(["--config", str(tmp_path / "nope.yaml")])


def test_vocal_gain_and_alpha_are_exclusive():
    with pytest.raises(ConfigError, match="both given"):
        load_config(["--vocal-gain-db", "-20", "-ba", "0.3"])


def test_typed_alpha_wins_over_a_vocal_gain_from_the_file(tmp_path):
    path = _cfg_file(tmp_path, "vocal_gain_db: -12\n")
    cfg, _, _ = load_config(["--config", path])
    assert cfg.vocal_gain_db == -12
    cfg, _, _ = load_config(["--config", path, "-ba", "0.3"])
    assert cfg.vocal_gain_db is None and cfg.blend_alpha == 0.3


def test_argparse_errors_are_usage_errors():
    with pytest.raises(UsageError, match="invalid choice: 'cubic'"):
        load_config(["--blend-mode", "cubic"])
