"""Decoding inputs soundfile cannot read, and MP3 export, through an ffmpeg subprocess.

ffmpeg is run with an argument list (never a shell) and every path is passed absolute with a
``file:`` prefix, so names with spaces, quotes, ``$(...)`` or a leading ``-`` are never parsed
as options or protocols. Outputs go to a temporary name in the destination folder
(see ``utils.atomic_files.atomic_path``) and are ``os.replace()``d into place once complete.

Gapless MP3 (measured with this module's encoder, ffmpeg 9 / libmp3lame, on 44.1 kHz stereo):
ffmpeg's libmp3lame writes a LAME/Xing "Info" header holding the encoder delay and padding.
Decoders that honour it return exactly the WAV's samples (cross-correlation lag 0, same
length): ffmpeg, pydub (it decodes through ffmpeg; it also needs ffprobe unless given
``codec=``, and returns 16-bit integers) and soundfile with libsndfile 1.2.2 (mpg123).
An MP3 with no such header (lameenc writes none) decodes 1105 samples late in all three
(576 encoder delay + 529 decoder delay) and longer by the padding; that offset is constant, so
the alignment step removes it, but VTrace's own MP3s never carry it.
Other codecs through ffmpeg: m4a (AAC in MP4: edit list), opus and webm (Opus pre-skip)
decode at lag 0 and the source's length; raw ADTS ``.aac`` has nowhere to store the priming and decodes 1024 samples
late with ffmpeg's encoder (Apple documents 2112 for its own), a constant offset. Opus decodes at
48 kHz, whatever rate the encoder was fed.

MP4/m4a is trimmed by VTrace, not by ffmpeg: ffmpeg versions disagree on the edit list (Debian
12's ffmpeg 5.1 drops the priming but keeps the padding of the last AAC frame, 879 samples
longer than imageio-ffmpeg's 9.x for a 44177-sample source; 5.1's muxer also rounds the edit
to the movie's 1/1000 s, 33 samples short when read by 9.x). So the edit list is switched off
(``-ignore_editlist 1``: every version then returns every decoded sample from the stream's
first) and :func:`mp4_trim` reads priming and length from the container itself: the
``iTunSMPB`` tag when present, else the edit list (``elst`` media_time = priming, its duration
= length, unless it is only the movie-timescale rounding of the media's own duration), else
the media duration (``mdhd``). Same length and lag 0 with any ffmpeg.
"""

import logging
import os
import re
import struct
import subprocess
from pathlib import Path

import soundfile as sf

from utils.atomic_files import atomic_path, new_temp
from utils.errors import InputError, OutputError
from utils.ffmpeg import ffmpeg_exe
from utils.inputs import SOUNDFILE_EXTENSIONS

log = logging.getLogger(__name__)

# MPEG-1 Layer III CBR bitrates (the only ones at 32/44.1/48 kHz).
MP3_BITRATES_KBPS = (32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320)
# Lower rates are MPEG-2/2.5, where LAME caps the bitrate at 160/64 kbps by itself.
MP3_SAMPLE_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)

# A decode shorter than the container's declared duration by more than this is truncated.
_TRUNCATION_SLACK_S = 0.1
_TRUNCATION_SLACK_FRACTION = 0.01

_LEVEL_RE = re.compile(r"\[(error|fatal|panic|warning)\] ?(.*)")
_CONTEXT_RE = re.compile(r"\[[^\]]*@ 0x[0-9a-f]+\] ?")
_DURATION_RE = re.compile(r"Duration: (\d+):(\d\d):(\d\d(?:\.\d+)?)")


def needs_ffmpeg(path: Path) -> bool:
    """True when ``path`` should be decoded with :func:`decode_to_wav` rather than soundfile.

    Decided by extension (case-insensitive): anything outside SOUNDFILE_EXTENSIONS, and MP3
    when the installed libsndfile is older than 1.1 (no MP3 support).
    """
    suffix = Path(path).suffix.lower()
    if suffix == ".mp3":
        version = tuple(int(p) for p in re.findall(r"\d+", sf.__libsndfile_version__)[:2])
        return version < (1, 1)
    return suffix not in SOUNDFILE_EXTENSIONS


def decode_to_wav(src: Path, dst: Path) -> None:
    """Decode the first audio stream of ``src`` to a float32 WAV at ``dst``.

    Keeps the stream's sample rate and channel count (the caller downmixes/resamples);
    float output is never clipped. ``dst`` appears only when complete (RF64 past 4 GiB).

    Raises:
        InputError: one line naming the file and why: missing, a folder, unreadable, empty,
            not decodable (ffmpeg's reason), no audio stream, truncated, or no samples.
    """
    src = Path(src).absolute()
    _check_readable(src)
    trim = mp4_trim(src)
    args = ["-i", _url(src), "-map", "0:a:0", "-c:a", "pcm_f32le", "-rf64", "auto", "-f", "wav"]
    if trim:
        args = ["-ignore_editlist", "1", *args]  # mov demuxer option: only for MP4 inputs
    with atomic_path(Path(dst).absolute()) as tmp:
        if trim:
            scratch = new_temp(tmp, ".wav")
            try:
                stderr, rc = _run_ffmpeg(args, scratch)
                if rc == 0:
                    _copy_trimmed(scratch, tmp, *trim)
            finally:
                scratch.unlink(missing_ok=True)
        else:
            stderr, rc = _run_ffmpeg(args, tmp)
        if rc != 0:
            raise InputError(f"cannot decode input={str(src)!r}: {_failure_reason(stderr)}; "
                             "expected an audio file ffmpeg reads (m4a, aac, opus, webm, ...): "
                             "check the file is complete and really audio")
        info = sf.info(str(tmp))
        if info.frames == 0:
            raise InputError(f"input={str(src)!r}: no audio samples left after decoding; "
                             "the file holds an empty audio stream")
        _check_complete(src, stderr, info.frames / info.samplerate)


def encode_mp3(wav_path: Path, mp3_path: Path, bitrate_kbps: int = 320,
               tags: dict | None = None) -> None:
    """Encode ``wav_path`` to a CBR MP3 at ``mp3_path`` that decodes sample-aligned with it.

    libmp3lame writes the LAME/Xing header (encoder delay and padding), so gapless decoders
    return the WAV's samples at lag 0. Rates MP3 cannot store (e.g. 96 kHz) are resampled to
    the nearest higher MP3 rate, or 48 kHz, with a warning.

    Args:
        bitrate_kbps: one of MP3_BITRATES_KBPS (config key mp3_bitrate).
        tags: ID3v2.3 text tags, e.g. {"title": ..., "artist": ...}; None or {} for none;
            entries whose value is None or blank are left out.

    Raises:
        ValueError: bitrate or tag name not allowed (the caller's contract).
        OutputError: the WAV cannot be read or the MP3 cannot be written.
    """
    if bitrate_kbps not in MP3_BITRATES_KBPS:
        raise ValueError(f"mp3_bitrate={bitrate_kbps!r} is not an MP3 CBR bitrate; "
                          f"use one of {', '.join(map(str, MP3_BITRATES_KBPS))}")
    wav_path = Path(wav_path).absolute()
    try:
        rate = sf.info(str(wav_path)).samplerate
    except (sf.LibsndfileError, OSError) as exc:
        raise OutputError(f"cannot read wav={str(wav_path)!r} to encode MP3: "
                          f"{_one_line(str(exc))}; check the WAV was written") from exc
    args = ["-i", _url(wav_path), "-map", "0:a:0", "-map_metadata", "-1",
            "-c:a", "libmp3lame", "-b:a", f"{bitrate_kbps}k", "-write_xing", "1",
            "-id3v2_version", "3"]
    if rate not in MP3_SAMPLE_RATES:
        new_rate = min((r for r in MP3_SAMPLE_RATES if r > rate), default=48000)
        log.warning("%s: MP3 cannot store %d Hz, resampling its MP3 to %d Hz",
                    wav_path.name, rate, new_rate)
        args += ["-ar", str(new_rate)]
    for key, value in (tags or {}).items():
        if value is None or str(value).strip() == "":
            continue  # an unknown artist is no tag, not the text "None"
        if not re.fullmatch(r"[a-z_]+", str(key)):
            raise ValueError(f"MP3 tag name {key!r} is not allowed; use lowercase names "
                              "such as title, artist, album")
        args += ["-metadata", f"{key}={_one_line(str(value))}"]
    args += ["-f", "mp3"]
    try:
        with atomic_path(Path(mp3_path).absolute()) as tmp:
            stderr, rc = _run_ffmpeg(args, tmp)
            if rc != 0:
                raise OutputError(f"cannot encode mp3={str(mp3_path)!r}: "
                                  f"{_failure_reason(stderr)}; check disk space and that this "
                                  "ffmpeg has libmp3lame (imageio-ffmpeg's has)")
    except InputError as exc:  # ffmpeg missing: for an output that is an output failure
        raise OutputError(str(exc)) from exc


def mp4_trim(path: Path):
    """``(start, length, timescale)`` of the first audio track of an MP4/m4a/mov file, read
    from its own metadata (see the module docstring), or None for other files or when the
    metadata is missing or unusable (then ffmpeg decodes as it does by itself).

    ``start`` (the encoder priming) and ``length`` are in units of ``timescale`` (the media
    timescale, normally the sample rate).
    """
    try:
        with open(path, "rb") as f:
            head = f.read(12)
            if len(head) < 12 or head[4:8] not in (b"ftyp", b"moov", b"wide", b"free",
                                                   b"mdat"):
                return None
            moov = _find_top_atom(f, b"moov")
    except OSError:
        return None
    if moov is None:
        return None
    try:
        return _trim_from_moov(moov)
    except (struct.error, ValueError, IndexError):
        return None


_MAX_MOOV_BYTES = 256 << 20


def _find_top_atom(f, want):
    f.seek(0, os.SEEK_END)
    end = f.tell()
    off = 0
    while off + 8 <= end:
        f.seek(off)
        size, typ = struct.unpack(">I4s", f.read(8))
        hdr = 8
        if size == 1:
            size, hdr = struct.unpack(">Q", f.read(8))[0], 16
        elif size == 0:
            size = end - off
        if size < hdr:
            return None
        if typ == want:
            if size - hdr > _MAX_MOOV_BYTES or off + size > end:
                return None
            return f.read(size - hdr)
        off += size
    return None


def _atoms(buf, start=0, end=None):
    """``(type, body)`` of each atom in ``buf[start:end]``."""
    end = len(buf) if end is None else end
    off = start
    while off + 8 <= end:
        size, typ = struct.unpack_from(">I4s", buf, off)
        hdr = 8
        if size == 1:
            size, hdr = struct.unpack_from(">Q", buf, off + 8)[0], 16
        elif size == 0:
            size = end - off
        if size < hdr or off + size > end:
            return
        yield typ, buf[off + hdr:off + size]
        off += size


def _child(buf, *path):
    for name in path:
        buf = next((body for typ, body in _atoms(buf) if typ == name), None)
        if buf is None:
            return None
    return buf


def _trim_from_moov(moov):
    mvhd = _child(moov, b"mvhd")
    movie_ts = struct.unpack_from(">I", mvhd, 20 if mvhd[0] == 1 else 12)[0] if mvhd else 0
    for typ, trak in _atoms(moov):
        if typ != b"trak":
            continue
        hdlr = _child(trak, b"mdia", b"hdlr")
        if not hdlr or hdlr[8:12] != b"soun":
            continue
        mdhd = _child(trak, b"mdia", b"mdhd")
        if mdhd[0] == 1:
            ts, media_dur = struct.unpack_from(">IQ", mdhd, 20)
        else:
            ts, media_dur = struct.unpack_from(">II", mdhd, 12)
        stts = _child(trak, b"mdia", b"minf", b"stbl", b"stts")
        if stts:
            n = struct.unpack_from(">I", stts, 4)[0]
            total = sum(c * d for c, d in (struct.unpack_from(">II", stts, 8 + 8 * i)
                                            for i in range(n)))
            media_dur = total or media_dur
        if not ts or not media_dur:
            return None
        smpb = _itunsmpb(moov)
        if smpb:
            priming, _padding, count = smpb
            if count and priming + count <= media_dur:
                return priming, count, ts
        start, length = 0, media_dur
        elst = _child(trak, b"edts", b"elst")
        if elst:
            edits = []
            n = struct.unpack_from(">I", elst, 4)[0]
            for i in range(n):
                if elst[0] == 1:
                    dur, media_time = struct.unpack_from(">Qq", elst, 8 + 20 * i)
                else:
                    dur, media_time = struct.unpack_from(">Ii", elst, 8 + 12 * i)
                edits.append((dur, media_time))
            edits = [e for e in edits if e[1] != -1 or e[0] != 0]
            if len(edits) != 1 or edits[0][1] < 0:
                return None  # empty or several edits: leave them to ffmpeg
            dur, start = edits[0]
            if start >= media_dur:
                return None
            length = media_dur - start
            if dur and movie_ts:
                edit_len = dur * ts / movie_ts
                if abs(edit_len - length) > ts / movie_ts + 1:  # not just rounding: a real cut
                    length = min(length, round(edit_len))
        return start, length, ts
    return None


def _itunsmpb(moov):
    """(priming, padding, sample count) from an iTunes ``iTunSMPB`` tag, or None."""
    meta = _child(moov, b"udta", b"meta")
    if meta is None:
        return None
    ilst = _child(meta[4:], b"ilst") or _child(meta, b"ilst")  # MP4 full box or QuickTime
    for typ, item in _atoms(ilst or b""):
        if typ != b"----":
            continue
        parts = dict(_atoms(item))
        if parts.get(b"name", b"")[4:] != b"iTunSMPB" or b"data" not in parts:
            continue
        fields_ = parts[b"data"][8:].decode("ascii", "replace").split()
        try:
            return int(fields_[1], 16), int(fields_[2], 16), int(fields_[3], 16)
        except (IndexError, ValueError):
            return None
    return None


def _copy_trimmed(src: Path, dst: Path, start: int, length: int, timescale: int) -> None:
    """Copy ``[start, start+length)`` (in ``timescale`` units) of the WAV ``src`` to ``dst``."""
    with sf.SoundFile(str(src)) as f:
        ratio = f.samplerate / timescale  # HE-AAC decodes at twice its media timescale
        first = min(round(start * ratio), f.frames)
        stop = min(first + round(length * ratio), f.frames)
        fmt = "RF64" if (stop - first) * f.channels * 4 > 0xFFFF0000 else "WAV"
        f.seek(first)
        with sf.SoundFile(str(dst), "w", f.samplerate, f.channels, "FLOAT", format=fmt) as out:
            left = stop - first
            while left > 0:
                block = f.read(min(left, 1 << 18), dtype="float32", always_2d=True)
                if not len(block):
                    break
                out.write(block)
                left -= len(block)


def _check_readable(src: Path) -> None:
    if not src.exists():
        kind = "a dangling link" if src.is_symlink() else "missing"
        raise InputError(f"input={str(src)!r} is {kind}; point VTrace at an existing file")
    if not src.is_file():
        raise InputError(f"input={str(src)!r} is not a regular file; give an audio file")
    if not os.access(src, os.R_OK):
        raise InputError(f"input={str(src)!r} is not readable; check its permissions")
    if src.stat().st_size == 0:
        raise InputError(f"input={str(src)!r} is empty (0 bytes); replace it with the "
                         "complete file")


def _check_complete(src: Path, stderr: str, decoded_s: float) -> None:
    """Fail a decode that reported errors and came out short; otherwise only warn."""
    errors = [m for lvl, m in _levels(stderr) if lvl != "warning"]
    if not errors:
        return  # without an error a shorter stream is legitimate (e.g. video longer than audio)
    match = _DURATION_RE.search(stderr)
    estimated = "Estimating duration from bitrate" in stderr
    if match and not estimated:
        h, m, s = match.groups()
        declared = int(h) * 3600 + int(m) * 60 + float(s)
        slack = _TRUNCATION_SLACK_S + _TRUNCATION_SLACK_FRACTION * declared
        if decoded_s >= declared - slack:
            log.warning("%s: ffmpeg reported decoding errors, audio kept: %s", src.name,
                        errors[0])
            return
        raise InputError(f"input={str(src)!r} is truncated: decoded {decoded_s:.2f} s of the "
                         f"{declared:.2f} s it declares (ffmpeg: {errors[0]}); "
                         "replace it with the complete file")
    raise InputError(f"input={str(src)!r} is damaged or truncated (ffmpeg: {errors[0]}); "
                     "replace it with the complete file")


def _run_ffmpeg(args: list[str], out: Path) -> tuple[str, int]:
    # level+info prefixes each line with its level, so errors can be told from chatter.
    cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-nostats", "-loglevel", "level+info",
           "-y", *args, _url(out)]
    proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, check=False)
    return proc.stderr.decode("utf-8", "replace"), proc.returncode


def _levels(stderr: str) -> list[tuple[str, str]]:
    found = []
    for line in stderr.splitlines():
        m = _LEVEL_RE.search(_CONTEXT_RE.sub("", line))
        if m:
            found.append((m.group(1), m.group(2).strip()))
    return found


def _failure_reason(stderr: str) -> str:
    errors = [m for lvl, m in _levels(stderr) if lvl != "warning" and m]
    if any("matches no streams" in m for m in errors):
        return "no audio stream in the file (video or image only?)"
    # ffmpeg's first error is the specific one ("moov atom not found"), its last the summary.
    specific = [m.removeprefix("Error opening input: ") for m in errors
                if not m.startswith(("Error opening input file", "Error opening output file"))]
    if not specific:
        return "ffmpeg failed without a reason"
    reason = specific[0] if len(specific) == 1 else f"{specific[0]} ({specific[-1]})"
    return _one_line(reason)[:300]


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _url(path: Path) -> str:
    # "file:" + absolute path: never an option (leading '-'), never another protocol.
    return "file:" + str(Path(path).absolute())
