"""ffmpeg decoding and gapless MP3 export, on signals synthesized in tmp_path."""

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import scipy.signal
import soundfile as sf

from audio_utils import audio_conversion as ac
from utils import ffmpeg as ffmpeg_lookup
from utils.errors import InputError, OutputError
from tests.conftest import leftovers

# Named tolerances (SNR of the decode against the source WAV, on the harmonic test signal).
MP3_320_MIN_SNR_DB = 40.0   # measured 58 dB: a shift of one sample would drop it below 10 dB
LOSSY_MIN_SNR_DB = 20.0     # ffmpeg's native AAC measured 27.7 dB, libopus 192k 40 dB
ADTS_AAC_PRIMING = 1024     # raw .aac cannot store ffmpeg's AAC encoder delay


def _ffmpegs():
    """Every ffmpeg on this machine: the bundled one, and the system one when on PATH (CI
    installs Debian's with apt, so both are exercised there)."""
    import imageio_ffmpeg
    found = {"bundled": imageio_ffmpeg.get_ffmpeg_exe()}
    system = shutil.which("ffmpeg")
    if system:
        found["system"] = system
    return found


FFMPEGS = _ffmpegs()


@pytest.fixture(params=sorted(FFMPEGS))
def decoder(request, monkeypatch):
    """Run the test with each available ffmpeg as the one utils.ffmpeg.ffmpeg_exe picks."""
    exe = FFMPEGS[request.param]
    monkeypatch.setattr(ffmpeg_lookup.shutil, "which",
                        lambda name: exe if request.param == "system" else None)
    assert ffmpeg_lookup.ffmpeg_exe() == exe
    return request.param


def harmonic(sr, seconds=1.0, channels=2):
    """Decaying harmonic notes, all content below 5 kHz, float32 (channels, samples)."""
    t = np.arange(int(sr * seconds) + 77) / sr
    env = np.exp(-8.0 * (t % 0.25))
    rows = []
    for c in range(channels):
        f0 = 220.0 * (1.5 ** c)
        rows.append(sum(0.25 / k * np.sin(2 * np.pi * k * f0 * t + c) for k in range(1, 6)) * env)
    return np.asarray(rows, dtype=np.float32)


def write_wav(path, x, sr, subtype="FLOAT"):
    sf.write(str(path), x.T, sr, subtype=subtype)
    return path


def read(path):
    y, sr = sf.read(str(path), dtype="float32", always_2d=True)
    return y.T, sr


def ffmpeg(*args, exe=None):
    subprocess.run([exe or ffmpeg_lookup.ffmpeg_exe(), "-v", "error", "-nostdin", "-y", *args],
                   check=True)


def lag(ref, y):
    """Samples by which ``y`` is late relative to ``ref`` (cross-correlation peak)."""
    n = min(ref.shape[1], y.shape[1])
    c = scipy.signal.correlate(y[0, :n], ref[0, :n], mode="full", method="fft")
    return int(np.argmax(c)) - (n - 1)


def snr_db(ref, y):
    n = min(ref.shape[1], y.shape[1])
    err = y[:, :n] - ref[:, :n]
    return 10 * np.log10(np.sum(ref[:, :n] ** 2) / np.sum(err ** 2))


@pytest.fixture
def ref44(tmp_path):
    x = harmonic(44100)
    return write_wav(tmp_path / "ref.wav", x, 44100), x


# ---- ffmpeg and the input policy ------------------------------------------------------

def test_ffmpeg_exe_runs():
    out = subprocess.run([ffmpeg_lookup.ffmpeg_exe(), "-version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("ffmpeg version")


def test_ffmpeg_exe_falls_back_to_imageio(monkeypatch):
    import imageio_ffmpeg
    monkeypatch.setattr(ffmpeg_lookup.shutil, "which", lambda name: None)
    assert ffmpeg_lookup.ffmpeg_exe() == imageio_ffmpeg.get_ffmpeg_exe()


def test_ffmpeg_exe_missing_everywhere(monkeypatch):
    import imageio_ffmpeg

    def missing():
        raise RuntimeError("No ffmpeg exe could be found")
    monkeypatch.setattr(ffmpeg_lookup.shutil, "which", lambda name: None)
    monkeypatch.setattr(imageio_ffmpeg, "get_ffmpeg_exe", missing)
    with pytest.raises(InputError, match="no ffmpeg found"):
        ffmpeg_lookup.ffmpeg_exe()


@pytest.mark.parametrize("name, expected", [
    ("a.wav", False), ("a.FLAC", False), ("a.ogg", False), ("a.aiff", False), ("a.AIF", False),
    ("a.m4a", True), ("a.aac", True), ("a.opus", True), ("a.webm", True), ("a.mka", True)])
def test_needs_ffmpeg(name, expected):
    assert ac.needs_ffmpeg(Path(name)) is expected


def test_needs_ffmpeg_mp3_follows_libsndfile(monkeypatch):
    monkeypatch.setattr(sf, "__libsndfile_version__", "1.0.31")
    assert ac.needs_ffmpeg(Path("a.mp3")) is True
    monkeypatch.setattr(sf, "__libsndfile_version__", "1.2.2")
    assert ac.needs_ffmpeg(Path("a.MP3")) is False


# ---- decoding -------------------------------------------------------------------------

@pytest.mark.parametrize("encoder", sorted(FFMPEGS))
@pytest.mark.parametrize("ext, codec, sr, delay", [
    ("m4a", ["-c:a", "aac", "-b:a", "256k"], 44100, 0),          # MP4 edit list
    ("aac", ["-c:a", "aac", "-b:a", "256k"], 44100, ADTS_AAC_PRIMING),
    ("opus", ["-c:a", "libopus", "-b:a", "192k"], 48000, 0),     # Ogg pre-skip
    ("webm", ["-c:a", "libopus", "-b:a", "192k"], 48000, 0),     # Matroska CodecDelay
])
def test_decode_lossy_lines_up(tmp_path, ext, codec, sr, delay, encoder, decoder):
    """Whichever ffmpeg made the file and whichever decodes it: same length, lag 0."""
    x = harmonic(sr)
    src = tmp_path / f"in.{ext}"
    ffmpeg("-i", str(write_wav(tmp_path / "ref.wav", x, sr)), *codec, str(src),
           exe=FFMPEGS[encoder])
    ac.decode_to_wav(src, tmp_path / "out.wav")
    y, sr_out = read(tmp_path / "out.wav")
    assert sr_out == sr and y.shape[0] == 2
    assert lag(x, y) == delay
    y = y[:, delay:]
    if delay == 0:
        assert y.shape == x.shape
    assert snr_db(x, y) > LOSSY_MIN_SNR_DB


@pytest.mark.parametrize("channels, sr", [(1, 22050), (3, 96000)])
def test_decode_keeps_rate_and_channels_exactly(tmp_path, channels, sr, decoder):
    x = harmonic(sr, seconds=0.3, channels=channels)
    q = np.round(x * 32767) / 32767  # FLAC 16-bit keeps these values within rounding
    src = tmp_path / "lossless.mka"
    ffmpeg("-i", str(write_wav(tmp_path / "ref.wav", q.astype(np.float32), sr)),
           "-c:a", "flac", "-sample_fmt", "s16", str(src))
    ac.decode_to_wav(src, tmp_path / "out.wav")
    y, sr_out = read(tmp_path / "out.wav")
    assert (sr_out, y.shape) == (sr, x.shape)
    assert np.max(np.abs(y - q)) < 1.0 / 32767


def test_decode_never_clips(tmp_path, decoder):
    x = harmonic(44100, seconds=0.2) * 6.0  # peaks above 1.0
    src = write_wav(tmp_path / "loud.wav", x.astype(np.float32), 44100)
    ac.decode_to_wav(src, tmp_path / "out.wav")
    y, _ = read(tmp_path / "out.wav")
    assert np.abs(y).max() > 1.0
    np.testing.assert_array_equal(y, x.astype(np.float32))


def _good_m4a(tmp_path, name="good.m4a", faststart=False):
    src = tmp_path / name
    flags = ["-movflags", "+faststart"] if faststart else []
    ffmpeg("-i", str(write_wav(tmp_path / "ref.wav", harmonic(44100, 2.0), 44100)),
           "-c:a", "aac", *flags, str(src))
    return src


def _bad_input(kind, tmp_path):
    if kind == "empty":
        p = tmp_path / "empty.m4a"
        p.write_bytes(b"")
    elif kind == "random bytes":
        p = tmp_path / "noise.opus"
        p.write_bytes(np.random.default_rng(0).bytes(20000))
    elif kind == "text m4a":
        p = tmp_path / "notes.m4a"
        p.write_text("not audio at all\n" * 300)
    elif kind == "text webm":
        p = tmp_path / "notes.webm"
        p.write_text("not audio at all\n" * 300)
    elif kind in ("truncated m4a", "truncated m4a faststart"):
        good = _good_m4a(tmp_path, faststart=kind.endswith("faststart"))
        p = tmp_path / "cut.m4a"
        p.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    elif kind == "truncated webm":
        good = tmp_path / "good.webm"
        ffmpeg("-i", str(write_wav(tmp_path / "ref.wav", harmonic(48000, 2.0), 48000)),
               "-c:a", "libopus", str(good))
        p = tmp_path / "cut.webm"
        p.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    elif kind == "no audio stream":
        p = tmp_path / "picture.m4a"
        ffmpeg("-f", "lavfi", "-i", "color=c=red:s=16x16:d=0.2", "-frames:v", "1",
               "-f", "image2", "-c:v", "png", str(p))
    elif kind == "no samples":
        p = write_wav(tmp_path / "nothing.wav", np.zeros((2, 0), np.float32), 44100)
    elif kind == "dangling link":
        p = tmp_path / "gone.m4a"
        p.symlink_to(tmp_path / "nowhere.m4a")
    elif kind == "folder":
        p = tmp_path / "folder.m4a"
        p.mkdir()
    return p


@pytest.mark.parametrize("kind, reason", [
    ("empty", "empty"), ("random bytes", "cannot decode"), ("text m4a", "cannot decode"),
    ("text webm", "cannot decode"), ("truncated m4a", "moov atom not found"),
    ("truncated m4a faststart", "truncated"), ("truncated webm", "truncated"),
    ("no audio stream", "no audio stream"), ("no samples", "no audio samples"),
    ("dangling link", "dangling link"),
    ("folder", "not a regular file")])
def test_bad_input_fails_with_one_line(tmp_path, kind, reason, decoder):
    src = _bad_input(kind, tmp_path)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    dst = out_dir / "song.wav"
    dst.write_bytes(b"previous result")
    with pytest.raises(InputError) as err:
        ac.decode_to_wav(src, dst)
    msg = str(err.value)
    assert reason in msg and str(src) in msg and "\n" not in msg
    assert dst.read_bytes() == b"previous result"  # never half-overwritten
    assert leftovers(out_dir) == []


@pytest.mark.parametrize("name", [
    "with space.m4a", "ünïcödé 歌.m4a", "it's \"quoted\".m4a", "$(touch pwned).m4a",
    "-leading dash.m4a", "-i.m4a", "100%d;rm x.m4a"])
def test_odd_names(tmp_path, monkeypatch, name, decoder):
    monkeypatch.chdir(tmp_path)  # a relative path is what would start with '-'
    good = _good_m4a(tmp_path)
    odd = tmp_path / name
    odd.write_bytes(good.read_bytes())
    ac.decode_to_wav(Path(name), Path("-" + name + ".wav"))
    y, sr = read(tmp_path / ("-" + name + ".wav"))
    assert sr == 44100 and y.shape[0] == 2 and y.shape[1] == harmonic(44100, 2.0).shape[1]
    assert not (tmp_path / "pwned").exists()
    ac.encode_mp3(Path("-" + name + ".wav"), Path(name + ".mp3"), tags={"title": name})
    assert (tmp_path / (name + ".mp3")).stat().st_size > 0


# ---- MP3 export -----------------------------------------------------------------------

@pytest.mark.parametrize("reader", ["soundfile", "ffmpeg"])
def test_mp3_round_trip_is_sample_aligned(tmp_path, ref44, reader, decoder):
    wav, x = ref44
    mp3 = tmp_path / "out.mp3"
    ac.encode_mp3(wav, mp3, 320)
    if reader == "ffmpeg":
        ac.decode_to_wav(mp3, tmp_path / "decoded.wav")
        y, sr = read(tmp_path / "decoded.wav")
    else:
        y, sr = read(mp3)  # how VTrace reads MP3 inputs: libsndfile honours the LAME header
    assert sr == 44100 and y.shape == x.shape
    assert lag(x, y) == 0
    assert snr_db(x, y) > MP3_320_MIN_SNR_DB


@pytest.mark.parametrize("kbps", [320, 128])
def test_mp3_cbr_bitrate_and_tags(tmp_path, ref44, kbps):
    from mutagen.id3 import ID3
    from mutagen.mp3 import MP3, BitrateMode
    wav, _ = ref44
    mp3 = tmp_path / "tagged.mp3"
    title, artist = "Ünïcode \"title\" $(x)", "Ärtist's name"
    ac.encode_mp3(wav, mp3, kbps, tags={"title": title, "artist": artist})
    info = MP3(str(mp3)).info
    # mutagen derives the bitrate from the Info header's byte count, so allow rounding.
    assert info.bitrate_mode == BitrateMode.CBR and round(info.bitrate / 1000) == kbps
    id3 = ID3(str(mp3))
    assert id3.version[:2] == (2, 3)
    assert str(id3["TIT2"]) == title and str(id3["TPE1"]) == artist
    assert leftovers(tmp_path) == []


def test_mp3_without_tags_has_no_title(tmp_path, ref44):
    from mutagen.id3 import ID3
    wav, _ = ref44
    ac.encode_mp3(wav, tmp_path / "plain.mp3")
    assert "TIT2" not in ID3(str(tmp_path / "plain.mp3"))
    ac.encode_mp3(wav, tmp_path / "blank.mp3", tags={"title": "T", "artist": "", "album": None})
    id3 = ID3(str(tmp_path / "blank.mp3"))
    assert str(id3["TIT2"]) == "T" and "TPE1" not in id3 and "TALB" not in id3


def test_mp3_high_rate_is_resampled(tmp_path):
    x = harmonic(96000, seconds=0.5)
    wav = write_wav(tmp_path / "hi.wav", x, 96000)
    ac.encode_mp3(wav, tmp_path / "hi.mp3")
    y, sr = read(tmp_path / "hi.mp3")
    assert sr == 48000 and abs(y.shape[1] - x.shape[1] // 2) <= 2


@pytest.mark.parametrize("kwargs, match", [
    ({"bitrate_kbps": 300}, "mp3_bitrate=300"),
    ({"tags": {"Title; rm": "x"}}, "tag name")])
def test_mp3_bad_settings(tmp_path, ref44, kwargs, match):
    wav, _ = ref44
    with pytest.raises(ValueError, match=match):
        ac.encode_mp3(wav, tmp_path / "x.mp3", **kwargs)
    assert not (tmp_path / "x.mp3").exists() and leftovers(tmp_path) == []


def test_mp3_from_missing_wav(tmp_path):
    with pytest.raises(OutputError, match="wav="):
        ac.encode_mp3(tmp_path / "missing.wav", tmp_path / "x.mp3")
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("encoder", sorted(FFMPEGS))
def test_mp4_trim_reads_priming_and_length_from_the_container(tmp_path, encoder):
    x = harmonic(44100)
    src = tmp_path / "in.m4a"
    ffmpeg("-i", str(write_wav(tmp_path / "ref.wav", x, 44100)), "-c:a", "aac", str(src),
           exe=FFMPEGS[encoder])
    assert ac.mp4_trim(src) == (1024, x.shape[1], 44100)  # elst media_time = AAC priming
    assert ac.mp4_trim(tmp_path / "ref.wav") is None


def test_mp4_trim_prefers_itunsmpb(tmp_path):
    """An iTunes gapless tag (priming 2112, padding, sample count) wins over the edit list."""
    import struct

    def atom(typ, body):
        return struct.pack(">I4s", 8 + len(body), typ) + body
    x = harmonic(44100)
    src = tmp_path / "in.m4a"
    ffmpeg("-i", str(write_wav(tmp_path / "ref.wav", x, 44100)), "-c:a", "aac", str(src))
    data = src.read_bytes()
    smpb = b" 00000000 00000840 00000100 0000000000001000 00000000"
    item = atom(b"----", atom(b"mean", b"\0\0\0\0com.apple.iTunes")
                + atom(b"name", b"\0\0\0\0iTunSMPB") + atom(b"data", b"\0\0\0\1\0\0\0\0" + smpb))
    udta = atom(b"udta", atom(b"meta", b"\0\0\0\0" + atom(b"ilst", item)))
    i = data.index(b"moov") - 4
    size = struct.unpack(">I", data[i:i + 4])[0]
    moov = data[i + 8:i + size]
    j = moov.find(b"udta") - 4  # drop ffmpeg's own udta, append ours
    if j >= 0:
        moov = moov[:j] + moov[j + struct.unpack(">I", moov[j:j + 4])[0]:]
    patched = data[:i] + atom(b"moov", moov + udta) + data[i + size:]
    src.write_bytes(patched)
    assert ac.mp4_trim(src) == (0x840, 0x1000, 44100)
