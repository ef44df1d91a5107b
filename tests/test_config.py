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
    assert "--convert_mp3" in flags and "--model" in flags


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


# ---- hostile config files (issue 12 item 14): exit 2, one line, at once ----------------

def _run_main_with_config(tmp_path, capsys, data):
    from main import main
    p = tmp_path / "hostile.yaml"
    p.write_bytes(data)
    rc = main(["--config", str(p), "-i", str(tmp_path / "none")])
    err = capsys.readouterr().err
    return rc, err


def test_utf16_config_with_bom_is_read(tmp_path):
    from config_loader import load_yaml
    for enc, bom in (("utf-16-le", b"\xff\xfe"), ("utf-16-be", b"\xfe\xff"),
                     ("utf-8", b"\xef\xbb\xbf"), ("utf-8", b"")):
        p = tmp_path / "c.yaml"
        p.write_bytes(bom + "blend_alpha: 0.5\nvoice_alpha: 0.25\n".encode(enc))
        assert load_yaml(p) == {"blend_alpha": 0.5, "voice_alpha": 0.25}, enc


@pytest.mark.parametrize("data, reason", [
    (bytes(range(256)) * 4, "binary"),
    (b"\x7fELF\x02\x01\x01\x00" + b"\x00" * 100, "binary"),
    (b"blend_alpha: \xe9t\xe9\n", "not UTF-8"),
    (b"a: &a [x]\nb: *a\n", "aliases"),
])
def test_unreadable_config_exits_2_with_one_line(tmp_path, capsys, data, reason):
    rc, err = _run_main_with_config(tmp_path, capsys, data)
    assert rc == 2 and reason in err, err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_billion_laughs_fails_at_once(tmp_path, capsys):
    import time
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, 10):
        refs = ",".join([f"*a{i-1}"] * 9)
        lines.append(f"a{i}: &a{i} [{refs}]")
    data = ("\n".join(lines) + "\n").encode()
    t0 = time.monotonic()
    rc, err = _run_main_with_config(tmp_path, capsys, data)
    assert time.monotonic() - t0 < 1.0
    assert rc == 2 and "aliases" in err and err.count("\n") == 1


def test_huge_config_is_refused_unread(tmp_path, capsys):
    rc, err = _run_main_with_config(tmp_path, capsys, b"# x\n" * (300 * 1024))
    assert rc == 2 and "too large" in err and err.count("\n") == 1


def test_earlier_key_demucs_model_loads_as_model(tmp_path):
    from config_loader import load_config
    path = tmp_path / "c.yaml"
    path.write_text("demucs_model: htdemucs\n")
    cfg = load_config(["--config", str(path), "x.wav"])[0]
    assert cfg.model == "htdemucs"
    path.write_text("demucs_model: htdemucs\nmodel: htdemucs_ft\n")
    with pytest.raises(Exception, match="both 'demucs_model' and 'model'"):
        load_config(["--config", str(path), "x.wav"])


@pytest.mark.parametrize("flag", ["--model", "-n", "--demucs-model"])
def test_model_flags(flag):
    from config_loader import load_config
    assert load_config([flag, "htdemucs_6s", "x.wav"])[0].model == "htdemucs_6s"
