"""The web page (``python main.py --web``): its functions at the engine level (no Gradio
needed), then the served app through ``gradio_client`` and a real headless Chromium (skipped
where gradio, playwright or chromium are missing)."""

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from config_loader import Config, requested_action
from processors.engine import Engine
from tests.conftest import SR, read, tone_mix, write
from utils.errors import ConfigError, UsageError
from utils.inputs import collect_inputs, content_hash, file_identity
from utils.layout import write_stems_record
from web import jobs

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"


def _library(tmp, model="test", seconds=2.0, seed=0, name="mix", cfg=None):
    """A song and its stems in a separated/ library with VTrace's record, as a CLI run with
    ``--model model`` would leave them. Returns (mix path, library folder)."""
    vocals, inst = tone_mix(seconds, seed=seed)
    mix = write(tmp / "songs" / f"{name}.wav", vocals + inst, subtype="PCM_16")
    folder = tmp / "library" / model / name
    write(folder / "vocals.wav", vocals)
    write(folder / "no_vocals.wav", inst)
    cfg = cfg or Config(model=model)
    write_stems_record(folder, {
        "mix_sha256": content_hash(mix), "mix": str(mix), "model": model,
        "settings": cfg.settings("stems"),
        "stems": {"vocals": file_identity(folder / "vocals.wav"),
                  "no_vocals": file_identity(folder / "no_vocals.wav")}})
    return mix, tmp / "library"


def _bad(tmp):
    path = tmp / "songs" / "broken.wav"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"this is not audio " * 50)
    return path


# ---------------------------------------------------------------- settings and flags

def test_page_defaults_come_from_the_config():
    d = jobs.form_defaults(Config())
    assert d["vocal_db"] == -20.0 and d["use_alpha"] is False  # alpha 0.1 linear = -20 dB
    assert jobs.form_defaults(Config(vocal_gain_db=-12.0))["vocal_db"] == -12.0
    assert jobs.form_defaults(Config(blend_alpha=0.0))["use_alpha"] is True  # -inf dB
    d = jobs.form_defaults(Config(model="htdemucs", voice_alpha=0.5, eval=True))
    assert (d["model"], d["voice_alpha"], d["eval"]) == ("htdemucs", 0.5, True)


def test_page_settings_build_a_validated_config(tmp_path):
    base = Config(shifts=3, wav_format="float32")
    cfg = jobs.build_config(base, {"vocal_db": -6, "residual_hpf": 100, "gate_threshold_db": 0},
                            tmp_path / "run", tmp_path / "sep")
    assert cfg.vocal_gain_db == -6.0 and cfg.residual_hpf == 100.0
    assert cfg.gate_threshold_db is None and cfg.residual_lpf is None
    assert (cfg.shifts, cfg.wav_format) == (3, "float32")  # the rest is config.yaml's
    assert cfg.output == str(tmp_path / "run" / "out") and cfg.thread == 1
    cfg = jobs.build_config(base, {"use_alpha": True, "blend_alpha": 0.3, "blend_mode": "exp"},
                            tmp_path, tmp_path)
    assert (cfg.vocal_gain_db, cfg.blend_alpha, cfg.blend_mode) == (None, 0.3, "exp")
    cfg = jobs.build_config(base, {"preset": "acapella", "residual_hpf": 0}, tmp_path, tmp_path)
    assert cfg.residual_hpf == 80.0 and cfg.gate_threshold_db == -50.0  # the preset's
    with pytest.raises(ConfigError, match="residual_hpf=500"):
        jobs.build_config(base, {"residual_hpf": 500, "residual_lpf": 200}, tmp_path, tmp_path)


def test_web_flags_are_an_action_and_need_web():
    assert requested_action(["--web"]) == ("web", dict.fromkeys(
        ("host", "port", "share", "web_upload_mb", "web_session_minutes")))
    assert requested_action(["--web", "--port", "9000", "--share"])[1]["port"] == 9000
    from config_loader import load_config

    with pytest.raises(UsageError, match="--port applies to the web page only"):
        load_config(["song.wav", "--port", "9000"])


def test_web_without_gradio_says_how_to_install(monkeypatch, capsys):
    import importlib.util

    import main

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "gradio" else real(name, *a))
    assert main.main(["--web"]) == 2
    assert 'vtrace: error: --web needs the web extra: pip install "vtrace[web]"' \
        in capsys.readouterr().err


# ---------------------------------------------------------------- sessions, uploads

def test_uploads_get_safe_unique_names_and_a_size_limit(tmp_path):
    src = tmp_path / "up"
    src.mkdir()
    a = src / "..evil name?.WAV"
    a.write_bytes(b"x" * 10)
    b = src / "sub"
    b.mkdir()
    (b / "..evil name?.WAV").write_bytes(b"y" * 10)
    big = src / "big.wav"
    big.write_bytes(b"z" * 3000)
    dst = tmp_path / "inputs"
    dst.mkdir()
    staged, failed = jobs.stage_uploads([a, b / "..evil name?.WAV", big], dst, 0.002)
    assert [p.name for p in staged] == ["evil name_.wav", "evil name_ (2).wav"]
    assert all(p.parent == dst for p in staged)
    assert failed[0].name == "big.wav" and "too large: 0.0 MB (the limit is 0.002 MB)" \
        in failed[0].reason


def test_sessions_are_apart_and_expire(tmp_path):
    store = jobs.Store(tmp_path / "root", max_age_s=60)
    a, b = store.get("a"), store.get("b")
    assert a.folder != b.folder and a.folder.parent == b.folder.parent == tmp_path / "root"
    assert store.get("a") is a
    a.songs["run-001/x"] = object()
    with pytest.raises(UsageError, match="no finished song 'run-001/x' in this session"):
        b.song("run-001/x")
    assert store.sweep(now=time.time() + 30) == 0
    b.last_used -= 120
    b.busy = 1  # a request still running
    assert store.sweep() == 0
    b.busy = 0
    assert store.sweep() == 1 and not b.folder.exists() and a.folder.exists()
    store.close()
    assert not (tmp_path / "root").exists()


# ---------------------------------------------------------------- runs and re-blends

def _runner(tmp_path, library, **cfg):
    store = jobs.Store(tmp_path / "root", 3600)
    base = Config(separated_dir=str(library), **cfg)
    return jobs.Runner(base, store, upload_mb=50), store


def test_a_run_uses_the_engine_and_a_bad_file_fails_alone(tmp_path):
    mix, library = _library(tmp_path)
    runner, store = _runner(tmp_path, library)
    session = store.get("s")
    seen = []
    out = runner.run(session, [str(mix), str(_bad(tmp_path))], "",
                     {"model": "test", "eval": True},
                     lambda f, text: seen.append((f, text)))
    ok, bad = out.results
    assert (ok.status, bad.status) == ("ok", "failed")
    assert bad.reason.startswith("cannot decode input='broken.wav'")  # no server folders
    assert str(session.folder) not in bad.reason
    song = out.songs[0]
    assert song.id == "run-001/mix" and session.song("run-001/mix") is song
    files = jobs.song_files(song)
    assert all(files[k] for k in ("blended", "vocal", "instrumental", "spectrogram"))
    manifest = json.loads((song.out_dir / "mix_vtrace.json").read_text())
    assert manifest["stems"]["folder"].startswith(str(session.folder))  # seeded copy
    assert manifest["stems"]["bound_to_mix"] == "record"
    assert out.run_zip.is_file() and (out.run_dir / "zips" / "mix.zip").is_file()
    assert jobs.eval_rows(out.eval_rows)[0][0] == "mix"
    assert seen[-1][0] == 1.0 and any("s of audio" in t for _, t in seen)
    import zipfile

    names = zipfile.ZipFile(out.run_zip).namelist()
    assert "mix/mix_blended.wav" in names and "vtrace_eval.csv" in names


def test_a_bad_link_fails_alone_with_the_cli_reason(tmp_path):
    mix, library = _library(tmp_path)
    runner, store = _runner(tmp_path, library)
    out = runner.run(store.get("s"), [str(mix)], "ftp://example.org/song\n",
                     {"model": "test", "plot": False})
    link, song = out.results
    assert link.status == "failed" and link.reason.startswith("malformed link url=")
    assert song.status == "ok" and out.message.startswith("1 of 2 song(s) done")
    assert jobs.parse_links(" a\nb  c ") == ["a", "b", "c"]


def test_stems_of_another_mix_are_not_reused(tmp_path):
    _, library = _library(tmp_path)
    vocals, inst = tone_mix(2.0, seed=5)
    other = write(tmp_path / "other" / "mix.wav", vocals + inst)  # same name, other song
    runner, store = _runner(tmp_path, library)
    out = runner.run(store.get("s"), [str(other)], "", {"model": "test"})
    assert out.results[0].status == "failed"
    assert "no stems found for mix" in out.results[0].reason


def test_nothing_to_do_and_bad_settings_are_one_line_errors(tmp_path):
    runner, store = _runner(tmp_path, tmp_path / "lib")
    with pytest.raises(UsageError, match="nothing to process"):
        runner.run(store.get("s"), [], "", {})
    with pytest.raises(ConfigError, match="voice_alpha=2.0"):
        runner.run(store.get("s"), [str(_bad(tmp_path))], "", {"voice_alpha": 2})


@pytest.mark.parametrize("mode,extra", [("linear", {}), ("gate", {}),
                                        ("linear", {"normalize": "peak"})])
def test_a_reblend_equals_what_the_engine_renders(tmp_path, mode, extra):
    mix, library = _library(tmp_path, seconds=3.0)
    runner, store = _runner(tmp_path, library, **extra)
    form = {"model": "test", "blend_mode": mode, "plot": False}
    out = runner.run(store.get("s"), [str(mix)], "", form)
    path, seconds = jobs.reblend(out.songs[0], -6.0)
    assert path.name == "mix_blended_vocal-6.0dB.wav" and seconds < 5
    # the same song through the CLI's engine with the vocal at -6 dB
    cfg = jobs.build_config(runner.base, {**form, "vocal_db": -6.0}, tmp_path / "cli",
                            out.songs[0].out_dir.parents[2] / "separated")
    track = collect_inputs([out.songs[0].out_dir.parents[1] / "inputs" / "mix.wav"])[0]
    assert Engine(cfg).process(track, tmp_path / "cli").status == "ok"
    expected, _ = read(tmp_path / "cli" / "mix" / "mix_blended.wav")
    got, sr = read(path)
    assert sr == SR and got.shape == expected.shape
    assert np.max(np.abs(got - expected)) < 2e-6  # pcm24: one quantization step at most


def test_reblend_needs_a_number_and_kept_stems(tmp_path):
    mix, library = _library(tmp_path)
    runner, store = _runner(tmp_path, library)
    song = runner.run(store.get("s"), [str(mix)], "", {"model": "test"}).songs[0]
    with pytest.raises(UsageError, match="use a number <= 0"):
        jobs.reblend(song, 3)
    song.kept = None
    with pytest.raises(UsageError, match="stems were not kept"):
        jobs.reblend(song, -6)


# ---------------------------------------------------------------- the served app

def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """``python main.py --web`` on a free port, with pre-made stems in its library."""
    pytest.importorskip("gradio")
    pytest.importorskip("gradio_client")
    tmp = tmp_path_factory.mktemp("web")
    mix, library = _library(tmp)
    config = tmp / "config.yaml"
    config.write_text(f"separated_dir: {library}\nmodel: test\ndevice: cpu\n"
                      f"log_dir: {tmp / 'logs'}\n")
    port = _free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TMPDIR": str(tmp)}
    log = open(tmp / "server.log", "w")
    proc = subprocess.Popen([sys.executable, "main.py", "--web", "--port", str(port),
                             "--config", str(config), "--web-upload-mb", "5"],
                            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + 90
    while "web page:" not in (tmp / "server.log").read_text():
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            pytest.fail("the web page did not start:\n" + (tmp / "server.log").read_text())
        time.sleep(0.2)
    yield {"url": url, "port": port, "mix": mix, "tmp": tmp, "bad": _bad(tmp), "proc": proc}
    proc.terminate()
    proc.wait(30)
    log.close()
    assert not list(tmp.glob("vtrace-web-*")), "session files were left after shutdown"


def _client(server):
    from gradio_client import Client

    return Client(server["url"], verbose=False, download_files=str(server["tmp"] / "got"))


def _process(client, files, **settings):
    from gradio_client import handle_file

    return client.predict([handle_file(str(f)) for f in files], "", api_name="/process",
                          **settings)


def test_server_prints_its_url_and_warns_for_nothing(server):
    text = (server["tmp"] / "server.log").read_text()
    assert f"VTrace web page: http://127.0.0.1:{server['port']}/" in text
    assert list((server["tmp"] / "logs").glob("vtrace_*.log"))  # the run log, as the CLI's
    assert "warning" not in text and "share" not in text.lower()


def test_client_runs_a_song_with_premade_stems_beside_a_bad_file(server):
    client = _client(server)
    out = _process(client, [server["mix"], server["bad"]], plot=True)
    message, summary, song, original, blend, vocal, inst, picture, song_zip, db, _, run_zip = out
    rows = {r[0]: r for r in summary["data"]}
    assert rows["mix"][1] == "ok" and rows["broken"][1] == "failed"
    assert rows["broken"][4].startswith("cannot decode input='broken.wav'")
    assert message == "1 of 2 song(s) done; 1 failed (reasons in the table)"
    assert rows["mix"][5] == "run-001/mix"
    for path in (original, blend, vocal, inst, picture, song_zip, run_zip):
        assert path and Path(path).is_file()
    b, _ = read(blend)
    o, _ = read(original)
    assert b.shape == o.shape and db == -20.0
    # re-blend in the same session: the vocal at -6 dB, from the kept stems
    new, text = client.predict("run-001/mix", -6.0, api_name="/reblend")
    assert "vocal at -6.0 dB, ready in" in text
    b6, _ = read(new)
    inst_, _ = read(inst)  # voice alpha 1: the phase-cancel output is the instrumental
    d20, d6 = b - inst_, b6 - inst_
    assert np.allclose(d6, d20 * 10 ** (14 / 20), atol=1e-4)  # -20 dB -> -6 dB


def test_client_separates_with_demucs_unittest(server):
    out = _process(_client(server), [server["mix"]], model="demucs_unittest",
                   plot=False, eval=True)
    assert out[1]["data"][0][1] == "ok", out[1]
    assert Path(out[4]).is_file()
    evaluation = out[10]["data"]
    assert evaluation[0][0] == "mix" and evaluation[0][1] is not None  # the table, asked for


def test_two_clients_never_see_each_others_songs(server):
    from gradio_client.exceptions import AppError

    first = _client(server)
    _process(first, [server["mix"]], plot=False)
    with pytest.raises(AppError, match="no finished song 'run-001/mix' in this session"):
        _client(server).predict("run-001/mix", -6.0, api_name="/reblend")


def test_uploads_over_the_limit_are_refused(server):
    big = server["tmp"] / "big.wav"
    write(big, np.zeros((2, SR * 15), np.float32))  # 10.6 MB, the limit is 5 MB
    with pytest.raises(ValueError, match="exceeds the maximum file size of 5000000 bytes"):
        _process(_client(server), [big])


def test_every_interface_only_when_asked_and_with_a_warning(tmp_path, monkeypatch, capsys):
    pytest.importorskip("gradio")
    from web.app import serve

    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))  # restored afterwards
    monkeypatch.setattr("tempfile.tempdir", None)
    demo = serve(Config(), host="0.0.0.0", port=_free_port(), block=False)
    try:
        err = capsys.readouterr().err
        assert "warning: --host 0.0.0.0 serves the page on every network interface" in err
        assert getattr(demo, "share_url", None) is None  # no public link without --share
    finally:
        demo.vtrace_stop.set()
        demo.close()
        demo.vtrace_store.close()
    with pytest.raises(UsageError, match="--port 70000"):
        serve(Config(), port=70000, block=False)


def test_a_port_in_use_is_a_one_line_error(server, tmp_path, monkeypatch):
    from web.app import serve

    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))
    monkeypatch.setattr("tempfile.tempdir", None)
    with pytest.raises(UsageError, match=f"--port {server['port']}: cannot listen there"):
        serve(Config(), port=server["port"], block=False)
    assert not list(tmp_path.glob("vtrace-web-*/sessions"))


def _other_addresses():
    out = subprocess.run(["hostname", "-I"], capture_output=True, text=True).stdout.split()
    return [a for a in out if not a.startswith("127.") and ":" not in a]


def test_page_is_served_on_localhost_only(server):
    with socket.create_connection(("127.0.0.1", server["port"]), timeout=5):
        pass
    others = _other_addresses()
    if not others:
        pytest.skip("this machine has no address besides 127.0.0.1")
    for addr in others:
        with pytest.raises(OSError):
            socket.create_connection((addr, server["port"]), timeout=2).close()


def test_a_real_browser_uploads_runs_and_finds_players_and_downloads(server):
    pytest.importorskip("playwright")
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    shot = server["tmp"] / "web.png"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                    args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 1500})
        try:
            page.goto(server["url"], wait_until="networkidle")
            page.locator("#songs input[type=file]").set_input_files(str(server["mix"]))
            page.wait_for_timeout(1500)
            page.locator("#run").click()
            page.locator("#run_zip a[download]").first.wait_for(timeout=60000)
            page.get_by_text("1 of 1 song(s) done").first.wait_for(timeout=10000)
            sources = {}
            for player in ("original", "blend", "vocal", "instrumental"):
                audio = page.locator(f"#{player} audio").first
                audio.wait_for(state="attached", timeout=10000)
                sources[player] = page.locator(f"#{player} a[download]").first \
                    .get_attribute("href", timeout=5000) or ""
            assert sources["blend"].endswith("mix_blended.wav"), sources
            assert sources["original"].endswith("mix.wav"), sources
            with page.expect_download() as download:
                page.locator("#run_zip a[download]").first.click()
            assert download.value.suggested_filename.endswith(".zip")
            page.wait_for_timeout(500)
        finally:
            page.screenshot(path=str(shot), full_page=True)
            if os.environ.get("VTRACE_WEB_SCREENSHOT"):
                shutil.copyfile(shot, os.environ["VTRACE_WEB_SCREENSHOT"])
            browser.close()
    assert shot.stat().st_size > 10000
