"""utils/youtube.py against yt-dlp's generic extractor and a local HTTP server (no internet)."""

import http.server
import json
import os
import socket
import subprocess
import threading
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from utils.youtube import (INDEX_NAME, LinkResult, _refusal, describe_error, download_links,
                           sanitize_name)

SR = 8000
HOSTILE = "../../x; $(id)"
network = pytest.mark.network  # tests that need the real internet: VTRACE_NETWORK_TESTS=1


def _tone(seconds, freq):
    t = np.arange(int(SR * seconds)) / SR
    return np.stack([np.sin(2 * np.pi * freq * t), 0.5 * np.sin(2 * np.pi * 2 * freq * t)], 1)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """A local web site; yields (base_url, hits Counter by path)."""
    root = tmp_path_factory.mktemp("site")
    sf.write(root / "tone.wav", 0.3 * _tone(1.0, 440), SR, subtype="PCM_16")
    sf.write(root / "other.wav", 0.3 * _tone(0.5, 330), SR, subtype="PCM_16")
    (root / "page.html").write_text(
        f'<html><head><title>{HOSTILE}</title></head><body><audio src="tone.wav"></audio>'
        "</body></html>")
    (root / "two.html").write_text(
        '<html><head><title>Two</title></head><body><audio src="tone.wav"></audio>'
        '<audio src="other.wav"></audio></body></html>')
    (root / "nomedia.html").write_text("<html><head><title>Nothing</title></head>"
                                       "<body><p>no media here</p></body></html>")
    import imageio_ffmpeg

    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-f", "lavfi", "-i",
                    "testsrc=size=64x48:rate=10", "-t", "1", "-c:v", "mpeg4",
                    str(root / "silent.mp4")], check=True, capture_output=True, timeout=60)
    hits = Counter()

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **kw):
            super().__init__(*a, directory=str(root), **kw)

        def do_GET(self):
            hits[self.path] += 1
            if self.path == "/busy.wav":
                self.send_error(429, "Too Many Requests")
                return
            super().do_GET()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", hits
    server.shutdown()
    server.server_close()
    thread.join(5)


def _get(urls, folder, **kw):
    kw.setdefault("playlist", False)
    kw.setdefault("max_duration", None)
    return download_links(urls, folder, socket_timeout=3, **kw)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_direct_audio_url_gives_the_same_samples(site, tmp_path):
    base, _ = site
    calls = []
    out = tmp_path / "dl"
    [r] = _get([f"{base}/tone.wav"], out, progress=lambda *a: calls.append(a))
    assert r.ok and r.error is None and not r.cached
    assert r.path.parent == out.resolve() and r.path.suffix == ".wav"
    got, sr = sf.read(r.path, dtype="int16")
    want = np.round(0.3 * _tone(1.0, 440) * 32767).astype(np.int16)  # what the server had
    assert sr == SR and got.shape == want.shape
    assert np.abs(got.astype(int) - want.astype(int)).max() <= 1
    assert r.video_id == "tone" and r.track_name == "tone [tone]"
    assert calls and calls[-1][0] == f"{base}/tone.wav" and calls[-1][1] > 0


def test_hostile_title_stays_inside_download_dir(site, tmp_path):
    base, _ = site
    out = tmp_path / "dl"
    [r] = _get([f"{base}/page.html"], out)
    assert r.ok, r.error
    assert r.title.startswith(HOSTILE)  # raw title kept for tags/manifest only
    assert r.path.parent == out.resolve()
    name = r.track_name
    assert "/" not in name and "\\" not in name and not name.startswith(".")
    assert name.startswith("x; $(id)") and name.endswith(f"[{r.video_id}]")
    everything = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    assert everything == sorted([Path("dl"), Path("dl") / INDEX_NAME,
                                 Path("dl") / r.path.name])


def test_bad_links_fail_one_line_each_and_the_batch_goes_on(site, tmp_path):
    base, _ = site
    urls = [f"http://127.0.0.1:{_free_port()}/x.wav", f"{base}/missing.wav",
            f"{base}/nomedia.html", "htp:/not a url", f"{base}/busy.wav", f"{base}/silent.mp4",
            f"{base}/tone.wav"]
    out = tmp_path / "dl"
    res = _get(urls, out)
    assert [r.url for r in res] == urls
    assert [r.ok for r in res] == [False] * 6 + [True]
    errors = [r.error for r in res[:6]]
    assert errors[0].startswith("connection refused")
    assert errors[1].startswith("HTTP error 404")
    assert errors[2].startswith("unsupported site, or no audio/video found")
    assert errors[3].startswith("malformed link url='htp:/not a url'")
    assert errors[4].startswith("rate limited (HTTP 429)")
    assert errors[5].startswith("no audio")
    assert sorted(p.suffix for p in out.iterdir()) == [".json", ".wav"]  # no video left over
    assert all("\n" not in e and r.path is None for e, r in zip(errors, res))


def test_second_call_reuses_the_download_without_network(site, tmp_path):
    base, hits = site
    out = tmp_path / "dl"
    before = sum(hits.values())
    [first] = _get([f"{base}/page.html"], out)
    assert first.ok and sum(hits.values()) > before
    before = sum(hits.values())
    [again] = _get([f"{base}/page.html"], out)
    assert sum(hits.values()) == before
    assert again.ok and again.cached and again.path == first.path
    assert again.track_name == first.track_name and again.title == first.title


def test_tampered_index_is_not_trusted(site, tmp_path):
    base, _ = site
    out = tmp_path / "dl"
    [first] = _get([f"{base}/tone.wav"], out)
    index = json.loads((out / INDEX_NAME).read_text())
    for rec in index["videos"].values():
        rec["file"] = "../outside.wav"
    (tmp_path / "outside.wav").write_bytes(first.path.read_bytes())
    (out / INDEX_NAME).write_text(json.dumps(index))
    [again] = _get([f"{base}/tone.wav"], out)
    assert again.ok and not again.cached and again.path == first.path


def test_playlist_page_needs_the_playlist_flag(site, tmp_path):
    base, _ = site
    [single] = _get([f"{base}/two.html"], tmp_path / "a")
    assert not single.ok and "playlist (2 entries)" in single.error
    both = _get([f"{base}/two.html"], tmp_path / "b", playlist=True)
    assert [r.ok for r in both] == [True, True]
    assert both[0].path != both[1].path and both[0].track_name != both[1].track_name
    assert sf.info(both[0].path).frames == SR and sf.info(both[1].path).frames == SR // 2


def test_too_long_is_refused_and_nothing_is_kept(site, tmp_path):
    base, _ = site
    out = tmp_path / "dl"
    [r] = _get([f"{base}/tone.wav"], out, max_duration=0.5)
    assert not r.ok and r.error.startswith("too long: duration=1s exceeds max_duration=0.5s")
    assert not list(out.glob("*.wav"))


def test_refusal_before_download():
    assert _refusal({"duration": 700}, 600).startswith("too long: duration=700s")
    assert _refusal({"duration": 500}, 600) is None
    assert _refusal({"duration": None}, 600) is None
    assert _refusal({"duration": 9999}, None) is None
    assert _refusal({"live_status": "is_live"}, None).startswith("live streams")
    assert _refusal({"is_live": True, "duration": 1}, 600).startswith("live streams")
    assert _refusal({"live_status": "is_upcoming"}, None).startswith("live streams")
    assert _refusal({"live_status": "was_live", "duration": 10}, 600) is None


def test_yt_dlp_errors_are_classified():
    from yt_dlp.networking import Response
    from yt_dlp.networking.exceptions import HTTPError, TransportError
    from yt_dlp.utils import DownloadError, ExtractorError, GeoRestrictedError

    def wrapped(e):  # what YoutubeDL.extract_info raises with ignoreerrors=False
        return DownloadError(f"ERROR: {e}", (type(e), e, None))

    resp = lambda status: Response(None, "https://example.com", {}, status=status)
    cases = {
        "geo-blocked": GeoRestrictedError("This video is not available in your country"),
        "age-restricted": ExtractorError("Sign in to confirm your age. This video may be "
                                         "inappropriate for some users.", expected=True),
        "private": ExtractorError("Private video. Sign in if you've been granted access",
                                  expected=True),
        "removed": ExtractorError("Video unavailable. This video has been removed by the "
                                  "uploader", expected=True),
        "rate limited (HTTP 429)": HTTPError(resp(429)),
        "HTTP error 503": HTTPError(resp(503)),
        "no network": TransportError("HTTPSConnection(host='www.youtube.com', port=443): "
                                     "Failed to resolve 'www.youtube.com' ([Errno -2] Name "
                                     "or service not known)"),
        "timed out": TransportError("Read timed out."),
    }
    for prefix, exc in cases.items():
        message = describe_error(wrapped(exc))
        assert message.startswith(prefix), (prefix, message)
        assert "\n" not in message


def test_no_option_that_runs_commands(tmp_path):
    from utils.youtube import _youtube_dl

    params = _youtube_dl(tmp_path, False, None, None, 3, "https://example.com", {}).params
    risky = {"exec", "exec_cmd", "netrc_cmd", "external_downloader", "cookiesfrombrowser",
             "writelink", "writeurllink", "writedesktoplink", "writewebloclink",
             "postprocessor_args", "remote_components", "enable_file_urls"}
    assert not {k for k in risky if params.get(k)}
    assert [pp["key"] for pp in params["postprocessors"]] == ["FFmpegExtractAudio"]
    assert params["outtmpl"]["default"] == "%(id)s.%(ext)s" and params["quiet"]


def test_nothing_reaches_stdout(site, tmp_path, capfd):
    base, _ = site
    _get([f"{base}/page.html", f"{base}/missing.wav"], tmp_path / "dl")
    out, _ = capfd.readouterr()
    assert out == ""


@pytest.mark.parametrize("raw, want", [
    (HOSTILE, "x; $(id)"),
    ("a/b\\c:d*e?f\"g<h>i|j", "a_b_c_d_e_f_g_h_i_j"),
    ("evil\u202egnp.exe\x00\x1b[31m", "evil gnp.exe [31m"),
    ("  ...--name.  ", "name"),
    ("CON", "_CON"),
    ("", "untitled"),
    ("../..", "untitled"),
])
def test_sanitize_name(raw, want):
    assert sanitize_name(raw) == want


def test_sanitize_name_limits_utf8_bytes_without_splitting():
    name = sanitize_name("é" * 300, max_bytes=201)
    assert name == "é" * 100 and len(name.encode("utf-8")) == 200


def test_bad_arguments_break_the_contract(tmp_path):
    with pytest.raises(ValueError, match="max_duration=-1"):
        download_links([], tmp_path, False, -1)
    with pytest.raises(TypeError, match="link="):
        download_links("https://example.com/a", tmp_path, False, None)
    assert download_links([], tmp_path / "new", False, None) == []


@network
@pytest.mark.skipif(os.environ.get("VTRACE_NETWORK_TESTS") != "1",
                    reason="needs the internet; set VTRACE_NETWORK_TESTS=1")
def test_real_youtube_video(tmp_path):
    # "Me at the zoo", 19 s: the first YouTube video, unlikely to disappear.
    [r] = download_links(["https://www.youtube.com/watch?v=jNQXAC9IVRw"], tmp_path, False, 60)
    assert isinstance(r, LinkResult) and r.ok, r.error
    assert r.video_id == "jNQXAC9IVRw" and r.track_name.endswith("[jNQXAC9IVRw]")
    assert 15 < sf.info(r.path).duration < 25


def test_links_through_the_cli_mix_with_files_and_fail_alone(site, tmp_path, capsys):
    """-l next to -i: the page's audio becomes a track with a safe name and its title in the
    manifest; a 404 link fails on its own line; exit code 1."""
    from main import main

    base, _ = site
    songs = tmp_path / "songs"
    songs.mkdir()
    sf.write(songs / "local.wav", 0.3 * _tone(1.0, 220), SR)
    rc = main(["-i", str(songs), "-l", f"{base}/page.html", f"{base}/missing.wav",
               "--download-dir", str(tmp_path / "dl"), "--model", "demucs_unittest",
               "--separated-dir", str(tmp_path / "sep"), "-o", str(tmp_path / "out"),
               "--log-dir", str(tmp_path / "logs"), "--quiet", "--device", "cpu"])
    assert rc == 1
    out = capsys.readouterr().out
    assert "2 ok" in out and "1 failed" in out and "404" in out
    manifests = list((tmp_path / "out").glob("*/*/*_vtrace.json"))
    titled = [json.loads(m.read_text()) for m in manifests]
    page = [m for m in titled if m["meta"].get("title", "").startswith(HOSTILE)]
    assert len(page) == 1 and page[0]["meta"]["url"].endswith("page.html")
    for p in (tmp_path / "out").rglob("*"):
        assert p.resolve().is_relative_to((tmp_path / "out").resolve())
        assert ".." not in p.name and "/" not in p.name


@pytest.fixture
def endless_site():
    """A server whose /live.wav never ends (WAV header, then silence with no length); it
    gives up by itself after 64 MiB or 30 s so a broken limit fails the test, not hangs it."""
    sent = Counter()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_HEAD(self):
            self.send_response(200)
            self.send_header("Content-Type", "audio/wav")
            self.end_headers()

        def do_GET(self):
            import time
            self.send_response(200)
            self.send_header("Content-Type", "audio/wav")
            self.end_headers()
            header = (b"RIFF\xff\xff\xff\xffWAVEfmt \x10\x00\x00\x00\x01\x00\x02\x00"
                      + (SR).to_bytes(4, "little") + (SR * 4).to_bytes(4, "little")
                      + b"\x04\x00\x10\x00data\xff\xff\xff\xff")
            t0 = time.monotonic()
            try:
                self.wfile.write(header)
                chunk = bytes(64 * 1024)
                while sent["bytes"] < (64 << 20) and time.monotonic() - t0 < 30:
                    self.wfile.write(chunk)
                    sent["bytes"] += len(chunk)
            except OSError:
                pass  # the client hung up: what the limit should do

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", sent
    server.shutdown()
    server.server_close()
    thread.join(5)


def test_endless_stream_stops_at_max_duration(endless_site, tmp_path):
    import time
    base, sent = endless_site
    out = tmp_path / "dl"
    t0 = time.monotonic()
    [r] = _get([f"{base}/live.wav"], out, max_duration=1.0)
    assert time.monotonic() - t0 < 10
    assert not r.ok and r.error.startswith("too long: the stream passed max_duration=1s"), \
        r.error
    assert "\n" not in r.error and sent["bytes"] < (16 << 20)
    assert not [p for p in out.iterdir() if p.name != INDEX_NAME]  # no partial download kept
