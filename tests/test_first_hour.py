"""Issue 13: the command line as demucs / audio-separator users type it, usage errors in one
format before anything runs, help that lists each option once, presets, logs and manifests
that are useful after the fact."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from config_loader import PRESETS, build_parser, load_config
from main import main
from tests.conftest import tone_mix, write

ROOT = Path(__file__).resolve().parents[1]


def _song(tmp_path, name="mix"):
    vocals, inst = tone_mix(seconds=1.0)
    write(tmp_path / "songs" / f"{name}.wav", vocals + inst)
    write(tmp_path / "sep" / "test" / name / "vocals.wav", vocals)
    write(tmp_path / "sep" / "test" / name / "no_vocals.wav", inst)


def _opts(tmp_path):
    return ["--model", "test", "--separated-dir", str(tmp_path / "sep"), "-o",
            str(tmp_path / "out"), "--log-dir", str(tmp_path / "logs")]


def test_positional_files_folders_and_links_mix():
    cfg, typed, _ = load_config(["song.mp3", "album/", "https://youtu.be/abc", "-i", "x.wav",
                                 "-l", "https://example.com/b"])
    assert cfg.input == ["x.wav", "song.mp3", "album/"]
    assert cfg.link == ["https://example.com/b", "https://youtu.be/abc"]
    assert {"input", "link"} <= typed


def test_positional_inputs_run_end_to_end(tmp_path, capsys):
    _song(tmp_path, "a")
    _song(tmp_path, "b")
    assert main([str(tmp_path / "songs" / "a.wav"), str(tmp_path / "songs")] + _opts(tmp_path)) == 0
    assert "2 ok" in capsys.readouterr().out


def test_a_typo_gets_a_suggestion(tmp_path, capsys):
    assert main(["song.wav", "--blend-alpa", "0.3", "--log-dir", str(tmp_path / "logs")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("vtrace: error: unknown option --blend-alpa: did you mean "
                          "--blend-alpha?")
    assert not (tmp_path / "logs").exists()


def test_no_arguments_print_usage_and_a_hint(capsys):
    assert main([]) == 2
    err = capsys.readouterr().err
    assert err.splitlines()[0].startswith("usage: vtrace ")
    assert err.splitlines()[1].startswith("vtrace: error: nothing to process") and "--help" in err


@pytest.mark.parametrize("argv, text", [
    (["--blend-alpha", "2", "x.wav"], "blend_alpha=2.0"),
    (["missing.wav"], "input=missing.wav: no such file"),
    (["--blend-mode", "cubic", "x.wav"], "invalid choice"),
])
def test_usage_errors_share_one_format_before_any_banner_and_leave_no_log(tmp_path, argv, text):
    r = subprocess.run([sys.executable, str(ROOT / "main.py"), *argv, "--log-dir",
                        str(tmp_path / "logs")], capture_output=True, text=True, cwd=tmp_path,
                       timeout=60)
    assert r.returncode == 2
    assert r.stderr.startswith("vtrace: error: ") and text in r.stderr
    assert "VTrace: model" not in r.stderr and r.stdout == ""
    assert not list((tmp_path / "logs").glob("*.log")) if (tmp_path / "logs").exists() else True


def test_help_lists_each_option_once():
    text = " ".join(build_parser().format_help().split())
    assert text.startswith("usage: vtrace [options] FILE|FOLDER|URL ...")
    for hidden in ("--blend_alpha", "--demucs_model", "--demucs-model", "-T", "-a,", "--convert_mp3",
                   "--no-recursive"):
        assert hidden not in text
    for shown in ("-ba, --blend-alpha A", "--[no-]align", "--[no-]recursive",
                  "-t, --thread N", "-n, --model MODEL", "worker processes", "(>= 0 and <= 1; default: 0.1)",
                  "{96,128,160,192,224,256,320}", "links (anything with ://) can be mixed"):
        assert shown in text, shown
    assert text.count("--blend-alpha A") == 1 and text.count("default: 0.1)") == 1


def test_presets_apply_over_the_file_and_under_typed_options(tmp_path):
    conf = tmp_path / "c.yaml"
    conf.write_text("blend_alpha: 0.3\nwav_format: pcm16\nresidual_hpf: 120\n")
    cfg, _, _ = load_config(["x", "--config", str(conf), "--preset", "acapella"])
    assert (cfg.residual_hpf, cfg.wav_format, cfg.gate_threshold_db) == (80.0, "float32", -50.0)
    cfg, _, _ = load_config(["x", "--config", str(conf), "--preset", "acapella",
                             "--residual-hpf", "150"])
    assert cfg.residual_hpf == 150.0
    cfg, _, _ = load_config(["x", "--preset", "guide-vocal"])
    assert cfg.vocal_gain_db == -24.0
    cfg, _, _ = load_config(["x", "--preset", "guide-vocal", "-ba", "0.5"])
    assert cfg.vocal_gain_db is None and cfg.blend_alpha == 0.5  # the typed alpha wins
    conf.write_text("preset: vocal-down\n")
    cfg, _, _ = load_config(["x", "--config", str(conf)])
    assert cfg.vocal_gain_db == -6.0 and cfg.match_loudness is True
    for settings in PRESETS.values():
        load_config(["x"])[0].__class__(**settings).validate()


def test_logs_keep_the_newest_runs_and_record_the_run(tmp_path):
    _song(tmp_path)
    logs = tmp_path / "logs"
    logs.mkdir()
    for i in range(5):
        (logs / f"vtrace_20000101_00000{i}_1.log").write_text("old")
    assert main(["-i", str(tmp_path / "songs")] + _opts(tmp_path) + ["--log-keep", "3"]) == 0
    kept = sorted(p.name for p in logs.glob("vtrace_*.log"))
    assert len(kept) == 3 and kept[:2] == ["vtrace_20000101_000003_1.log",
                                           "vtrace_20000101_000004_1.log"]
    text = max(logs.glob("vtrace_*.log"), key=lambda p: p.stat().st_mtime_ns).read_text()
    for needed in ("command line: vtrace -i", "mix: offset +0 samples, polarity +1, confidence",
                   "gain blended 1.000", "decoded by soundfile", "timings", "1 ok",
                   "exit code 0"):
        assert needed in text, needed


def test_manifest_records_versions_device_command_and_skip_says_why(tmp_path, capsys):
    _song(tmp_path)
    argv = ["-i", str(tmp_path / "songs")] + _opts(tmp_path) + ["--eval"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    manifest = json.loads((tmp_path / "out/test/mix/mix_vtrace.json").read_text())
    assert manifest["versions"]["torch"] and manifest["versions"]["demucs"]
    assert manifest["run"]["command"][:2] == ["vtrace", "-i"]
    assert manifest["run"]["device"] == "none (stems reused)"
    assert manifest["run"]["decoder"] == {"input": "soundfile"}
    assert Path(manifest["stems"]["vocals"]).is_absolute()
    row = next(x for x in out.splitlines() if x.startswith("mix ") and " ok " in x)
    assert f"{manifest['timings']['eval_s']:.1f}s" in row.split()  # the table's eval column
    assert main(argv) == 0
    row = next(x for x in capsys.readouterr().out.splitlines()
               if x.startswith("mix ") and "skipped" in x)
    assert "skipped" in row and "same input, stems and settings; --force to redo" in row
