"""Links as input: download the audio of video/audio URLs with yt-dlp's Python API.

Every link gets a :class:`LinkResult`; one bad link never stops the others. Files are named by
this module (``<extractor>-<id>[-<hash>].wav`` in ``download_dir``), never from a title, and an
index ``download_dir/.vtrace_links.json`` (written atomically) records what is already there by
video id, so a link is downloaded once. yt-dlp talks only to ``logging``; stdout stays clean.
"""

import hashlib
import json
import logging
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional
from urllib.parse import urlsplit

from utils.atomic_files import write_text_atomic
from utils.errors import OutputError, UsageError
from utils.ffmpeg import ffmpeg_exe
from utils.inputs import MAX_NAME_BYTES, sanitize_name

log = logging.getLogger(__name__)

AUDIO_EXTENSIONS = frozenset({"wav", "flac", "mp3", "m4a", "aac", "ogg", "opus", "aiff"})
AUDIO_CODEC = "wav"  # what yt-dlp's FFmpegExtractAudio converts to: readable by soundfile
INDEX_NAME = ".vtrace_links.json"
SOCKET_TIMEOUT = 20.0

ProgressFn = Callable[[str, int, Optional[int]], None]


@dataclass(frozen=True)
class LinkResult:
    """What happened to one link (or one playlist entry)."""

    url: str                   # the link as given (a playlist entry: the entry's own URL)
    ok: bool
    path: Optional[Path]       # the downloaded audio file, inside download_dir; None on error
    track_name: Optional[str]  # sanitize_name(title) + " [" + id + "]": unique per video
    title: Optional[str]       # raw metadata, for manifests/tags only, never for paths
    uploader: Optional[str]
    video_id: Optional[str]
    webpage_url: Optional[str]
    error: Optional[str]       # one line for the user; None when ok
    cached: bool = False       # True when an earlier download was reused


def download_links(urls: list[str], download_dir: Path, playlist: bool,
                   max_duration: Optional[float], progress: Optional[ProgressFn] = None,
                   socket_timeout: float = SOCKET_TIMEOUT) -> list[LinkResult]:
    """Download the best audio of each link into ``download_dir`` as WAV.

    Args:
        urls: http(s) links, processed in order.
        download_dir: folder this tool owns for downloads (created if missing).
        playlist: False: a playlist link gives only its video (yt-dlp ``noplaylist``) or, for a
            pure playlist, an error; True: one result per entry.
        max_duration: refuse items longer than this many seconds (before downloading when the
            site reports a duration, else right after); None: no limit.
        progress: called as ``progress(url, downloaded_bytes, total_bytes_or_None)``.
        socket_timeout: seconds to wait for an unresponsive host.

    Returns:
        One LinkResult per link, or per entry of a playlist link, in order.

    Raises:
        TypeError / ValueError: arguments outside the contract (Config.validate rules them
            out); UsageError: the download folder cannot be created. Never for a bad link.
    """
    if isinstance(urls, str) or not all(isinstance(u, str) for u in urls):
        raise TypeError(f"link={urls!r} must be a list of URL strings; give each with -l URL")
    if max_duration is not None and not (isinstance(max_duration, (int, float))
                                         and 0 < max_duration < float("inf")):
        raise ValueError(f"max_duration={max_duration!r} must be a positive number of seconds "
                          "or null; fix --max-duration / max_duration")
    folder = Path(download_dir)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"download_dir={str(folder)!r} cannot be created ({e.strerror}); "
                          "choose a writable folder with --download-dir") from e
    index = _Index(folder)
    results = []
    for url in urls:
        results.extend(_download_one(url, folder, playlist, max_duration, progress,
                                     socket_timeout, index))
    return results


def _download_one(url, folder, playlist, max_duration, progress, socket_timeout, index):
    problem = _malformed(url)
    if problem:
        return [_failed(url, problem)]
    hit = index.by_url(url)
    if hit:
        return [hit]
    refusals = {}
    try:
        with _youtube_dl(folder, playlist, max_duration, progress, socket_timeout, url,
                         refusals) as ydl:
            info = ydl.extract_info(url, download=False)
            if info is None:
                return [_failed(url, "yt-dlp returned nothing for this link")]
            if info.get("_type") in ("playlist", "multi_video"):
                entries = [e for e in (info.get("entries") or []) if e]
                if not playlist:
                    n = len(entries) + len(refusals)
                    return [_failed(url, f"the link is a playlist ({n} entries) and "
                                         "playlist=false; pass --playlist to process every "
                                         "entry, or give a single video's link")]
                done = [_entry(ydl, e, url, folder, max_duration, refusals, index)
                        for e in entries]
                return done + [_refused(info, why) for info, why in refusals.values()]
            return [_video(ydl, info, url, folder, max_duration, refusals, index, alias=True)]
    except Exception as e:  # one bad link must never stop the batch
        return [_failed(url, describe_error(e))]


def _entry(ydl, entry, playlist_url, folder, max_duration, refusals, index):
    # Entries of a plain page's playlist have no URL of their own: no URL shortcut for them.
    own_url = entry.get("url") if entry.get("_type") in ("url", "url_transparent") else None
    url = own_url or entry.get("webpage_url") or playlist_url
    try:
        hit = index.by_url(own_url) if own_url else None
        if hit:
            return hit
        if own_url:
            entry = ydl.extract_info(own_url, download=False, ie_key=entry.get("ie_key"))
        return _video(ydl, entry, url, folder, max_duration, refusals, index,
                      alias=bool(own_url))
    except Exception as e:
        return _failed(url, describe_error(e), entry)


def _video(ydl, info, url, folder, max_duration, refusals, index, alias):
    """Download one fully extracted video ``info`` unless refused or already there; with
    ``alias``, ``url`` is recorded as a shortcut to it (it names this video alone)."""
    if info.get("id") in refusals:
        return _refused(*refusals.pop(info.get("id")), url=url)
    stem = _file_stem(info)
    hit = index.by_stem(stem, url, alias)
    if hit:
        return hit
    ydl.params["outtmpl"]["default"] = stem + ".%(ext)s"  # stem is [a-z0-9_-] only: no % codes
    try:
        done = ydl.process_ie_result(info, download=True)
    except Exception as e:
        _remove_leftovers(folder, stem)
        if info.get("id") in refusals:  # stopped by the progress hook: past max_duration
            return _refused(*refusals.pop(info.get("id")), url=url)
        return _failed(url, describe_error(e), info)
    if info.get("id") in refusals:
        return _refused(*refusals.pop(info.get("id")), url=url)
    path = _downloaded_path(done, folder)
    why = _too_long_on_disk(path, max_duration) if path else (
        "no audio: the download produced no audio file (allowed: "
        f"{', '.join(sorted(AUDIO_EXTENSIONS))}); try another link")
    if why:
        _remove_leftovers(folder, stem)
        return _failed(url, why, info)
    result = _result(url, info, path)
    index.add(stem, url, result, alias)
    return result


def _youtube_dl(folder, playlist, max_duration, progress, socket_timeout, url, refusals):
    import yt_dlp

    def match_filter(info, *, incomplete=False):
        if info.get("_type") in ("playlist", "multi_video"):
            return None
        why = _refusal(info, max_duration)
        if why:
            refusals[info.get("id")] = (info, why)
        return why

    def hook(d):
        if d.get("status") == "downloading":
            why = _over_limit_while_downloading(d, max_duration)
            if why:
                info = d.get("info_dict") or {}
                refusals[info.get("id")] = (info, why)
                raise _TooLong(why)
        if progress is None or d.get("status") not in ("downloading", "finished"):
            return
        try:
            progress(url, int(d.get("downloaded_bytes") or 0),
                     d.get("total_bytes") or d.get("total_bytes_estimate"))
        except Exception:  # a broken progress bar must not fail the download
            log.debug("progress callback failed", exc_info=True)

    params = {
        "logger": _YtdlpLogger(), "quiet": True, "no_warnings": False, "noprogress": True,
        "color": "never", "logtostderr": True, "consoletitle": False,
        "progress_hooks": [hook], "match_filter": match_filter,
        "noplaylist": not playlist, "extract_flat": "in_playlist",
        "format": "bestaudio/best", "ffmpeg_location": ffmpeg_exe(),
        "postprocessors": [{"key": "FFmpegExtractAudio", "preferredcodec": AUDIO_CODEC}],
        "paths": {"home": str(folder), "temp": str(folder)},
        "outtmpl": {"default": "%(id)s.%(ext)s"}, "restrictfilenames": True,
        "windowsfilenames": True, "overwrites": True, "socket_timeout": socket_timeout,
        "retries": 3, "fragment_retries": 3, "extractor_retries": 2,
        "ignoreerrors": False, "enable_file_urls": False,
    }
    return yt_dlp.YoutubeDL(params)


class _YtdlpLogger:
    """yt-dlp's logger protocol, forwarded to logging as single lines."""

    def debug(self, msg):
        log.debug("yt-dlp: %s", _one_line(msg))

    def info(self, msg):
        log.debug("yt-dlp: %s", _one_line(msg))

    def warning(self, msg):
        # Said for every direct link or plain page: expected here, not worth a warning.
        level = logging.DEBUG if "Falling back on generic" in msg else logging.WARNING
        log.log(level, "yt-dlp: %s", _one_line(msg))

    def error(self, msg):
        # Errors come back as exceptions and become the link's one-line error.
        log.debug("yt-dlp: %s", _one_line(msg))


def _refusal(info, max_duration):
    """Why ``info`` must not be downloaded (live, or longer than max_duration), or None."""
    if info.get("is_live") or info.get("live_status") in ("is_live", "is_upcoming"):
        return ("live streams and upcoming premieres are refused (live_status="
                f"{info.get('live_status') or 'is_live'}); use the link after the stream ends")
    duration = info.get("duration")
    if max_duration is not None and isinstance(duration, (int, float)) \
            and duration > max_duration:
        return (f"too long: duration={duration:.0f}s exceeds max_duration={max_duration:g}s; "
                "raise --max-duration to allow it")
    return None


# With no duration and no bitrate known (a live stream, an endless direct link), a download
# stops past this many bytes per allowed second: float32 stereo at 48 kHz, more than any
# compressed or CD-quality audio of that length takes.
CAP_BYTES_PER_SECOND = 48000 * 2 * 4
CAP_SLACK_BYTES = 1 << 20


class _TooLong(Exception):
    """Raised from the progress hook to stop a download that passed max_duration."""


def _over_limit_while_downloading(d, max_duration):
    """Why a download in progress must stop (it passed max_duration), or None.

    Media seconds come from the bytes at the format's bitrate (abr/tbr) when known, else a
    byte cap (CAP_BYTES_PER_SECOND per allowed second); a known duration was checked before
    the download started.
    """
    if max_duration is None:
        return None
    info = d.get("info_dict") or {}
    got = int(d.get("downloaded_bytes") or 0)
    kbps = info.get("abr") or info.get("tbr")
    if isinstance(kbps, (int, float)) and kbps > 0:
        seconds = got * 8 / (kbps * 1000)
        if seconds > max_duration:
            return (f"too long: the stream passed max_duration={max_duration:g}s while "
                    f"downloading (about {seconds:.0f}s at {kbps:g} kbps); raise "
                    "--max-duration, or give a link to something that ends")
        return None
    cap = max_duration * CAP_BYTES_PER_SECOND + CAP_SLACK_BYTES
    if got > cap:
        return (f"too long: the stream passed max_duration={max_duration:g}s while "
                f"downloading (no duration or bitrate known; stopped at {got} bytes, "
                f"the cap for {max_duration:g}s of audio); raise --max-duration, or give a "
                "link to something that ends")
    return None


def _too_long_on_disk(path, max_duration):
    # Direct links and plain pages report no duration before the download.
    if max_duration is None:
        return None
    import soundfile

    try:
        seconds = soundfile.info(str(path)).duration
    except Exception:
        return None
    return _refusal({"duration": seconds}, max_duration)


def _malformed(url):
    parts = None
    if isinstance(url, str) and url.strip() == url and url and \
            not any(unicodedata.category(c)[0] in "CZ" for c in url):
        try:
            parts = urlsplit(url)
            parts.port  # raises ValueError for a non-numeric or out-of-range port
        except ValueError:
            parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        return (f"malformed link url={_clip(repr(url), 120)}; expected an http:// or "
                "https:// address without spaces, e.g. https://www.youtube.com/watch?v=ID")
    return None


def describe_error(exc: BaseException) -> str:
    """One line for the user saying why a link failed, classified from a yt-dlp exception."""
    from yt_dlp.networking.exceptions import HTTPError, TransportError
    from yt_dlp.utils import GeoRestrictedError, UnsupportedError

    chain = _exception_chain(exc)
    text = " | ".join(str(e) for e in chain).lower()
    raw = _clip(_one_line(re.sub(r"^ERROR:\s*", "", str(exc))), 240)
    http = next((e for e in chain if isinstance(e, HTTPError)), None)
    status = getattr(http, "status", None)
    if status is None:
        m = re.search(r"http error (\d{3})", text)
        status = int(m.group(1)) if m else None
    if any(isinstance(e, GeoRestrictedError) for e in chain) or \
            "not available in your country" in text or "geo restrict" in text or \
            "geo-restrict" in text:
        return f"geo-blocked: the video is not available from this country ({raw})"
    if "confirm your age" in text or "age-restricted" in text or "age restricted" in text \
            or "inappropriate for some users" in text:
        return f"age-restricted: the site requires a signed-in adult account ({raw})"
    if "private video" in text or "this video is private" in text:
        return f"private: the video is private and cannot be downloaded ({raw})"
    if status == 429 or "too many requests" in text or "not a bot" in text:
        return ("rate limited (HTTP 429): the site is refusing requests from this machine; "
                f"wait and retry later ({raw})")
    if "requested format is not available" in text or "no video formats" in text or \
            "audio codec" in text:
        return f"no audio: the link has no downloadable audio stream ({raw})"
    if re.search(r"removed|no longer available|account .*terminated|video unavailable|"
                 r"video is unavailable|video does not exist|has been deleted", text):
        return f"removed or unavailable: the video no longer exists on the site ({raw})"
    if status is not None:
        return (f"HTTP error {status}: the server refused the request; check the link, retry "
                f"later or update yt-dlp ({raw})")
    if re.search(r"failed to resolve|name or service not known|temporary failure in name "
                 r"resolution|nodename nor servname|getaddrinfo failed|network is unreachable"
                 r"|no route to host", text):
        return ("no network: cannot reach the internet from this machine (host name lookup or "
                f"route failed); connect to a network and retry ({raw})")
    if "connection refused" in text:
        return f"connection refused: nothing answers at that address; check the link ({raw})"
    if "timed out" in text:
        return f"timed out: the site did not answer in time; retry later ({raw})"
    if any(isinstance(e, UnsupportedError) for e in chain) or "unsupported url" in text:
        return ("unsupported site, or no audio/video found on the page: give a link to a "
                f"video page or an audio file ({raw})")
    if "unsupported url scheme" in text:
        return f"malformed link: only http:// and https:// links are accepted ({raw})"
    if any(isinstance(e, TransportError) for e in chain):
        return f"network error while downloading; retry later ({raw})"
    return f"download failed ({raw})"


def _exception_chain(exc):
    chain, todo = [], [exc]
    while todo and len(chain) < 10:
        e = todo.pop(0)
        if e is None or not isinstance(e, BaseException) or any(e is c for c in chain):
            continue
        chain.append(e)
        exc_info = getattr(e, "exc_info", None)
        todo += [exc_info[1] if exc_info else None, getattr(e, "cause", None),
                 e.__cause__, e.__context__]
    return chain


def _file_stem(info):
    """The tool's own file name for a video: extractor + id, ASCII only.

    Generic pages get ids from URL basenames ("audio", "index"), which collide across sites,
    so those (and ids changed by sanitizing) also carry a hash of the page URL.
    """
    extractor = str(info.get("extractor_key") or info.get("extractor") or "site")
    video_id = str(info.get("id") or "")
    safe_id = re.sub(r"[^A-Za-z0-9_-]", "_", video_id)[:64] or "video"
    stem = re.sub(r"[^a-z0-9]", "", extractor.lower())[:24] + "-" + safe_id
    if extractor in ("Generic", "HTML5MediaEmbed") or safe_id != video_id:
        key = f"{info.get('webpage_url') or ''}\n{video_id}".encode("utf-8", "replace")
        stem += "-" + hashlib.sha1(key).hexdigest()[:10]
    return stem


def _downloaded_path(info, folder):
    downloads = (info or {}).get("requested_downloads") or []
    for d in downloads:
        path = Path(d.get("filepath") or "")
        if path.suffix[1:].lower() in AUDIO_EXTENSIONS and _inside(path, folder) \
                and path.is_file() and path.stat().st_size > 0:
            return path
    return None


def _remove_leftovers(folder, stem):
    # Video-only or refused downloads must not linger where a later run could pick them up.
    for leftover in folder.glob(stem + ".*"):
        if leftover.is_file() and _inside(leftover, folder):
            leftover.unlink(missing_ok=True)


def _inside(path, folder):
    try:
        return Path(path).resolve().parent == Path(folder).resolve()
    except OSError:
        return False


def _track_name(title, video_id):
    tail = " [" + sanitize_name(video_id or "video", 60) + "]"
    return sanitize_name(title or "untitled", MAX_NAME_BYTES - len(tail.encode())) + tail


def _text(value):
    return None if value is None else _clip(_one_line(str(value)), 1000)


def _result(url, info, path, cached=False):
    return LinkResult(url=url, ok=True, path=path,
                      track_name=_track_name(info.get("title"), str(info.get("id") or "")),
                      title=_text(info.get("title")),
                      uploader=_text(info.get("uploader") or info.get("channel")),
                      video_id=_text(info.get("id")),
                      webpage_url=_text(info.get("webpage_url") or url), error=None,
                      cached=cached)


def _failed(url, error, info=None):
    info = info or {}
    return LinkResult(url=url, ok=False, path=None, track_name=None,
                      title=_text(info.get("title")),
                      uploader=_text(info.get("uploader") or info.get("channel")),
                      video_id=_text(info.get("id")), webpage_url=_text(info.get("webpage_url")),
                      error=_one_line(error))


def _refused(info, why, url=None):
    return _failed(url or info.get("webpage_url") or info.get("url") or "", why, info)


def _one_line(text):
    text = re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", str(text))
    text = "".join(" " if unicodedata.category(c)[0] == "C" else c for c in text)
    return re.sub(r"\s+", " ", text).strip()


def _clip(text, n):
    return text if len(text) <= n else text[:n - 3] + "..."


class _Index:
    """``download_dir/.vtrace_links.json``: file stem -> metadata, and URL -> file stem.

    Nothing read from it is trusted: a recorded file must be a plain audio file directly
    inside download_dir, or the entry is ignored and the link downloaded again.
    """

    def __init__(self, folder):
        self.folder = folder
        self.path = folder / INDEX_NAME
        self.data = {"videos": {}, "urls": {}}
        try:
            loaded = json.loads(self.path.read_text(encoding="utf-8"))
            if isinstance(loaded.get("videos"), dict) and isinstance(loaded.get("urls"), dict):
                self.data = loaded
        except FileNotFoundError:
            pass
        except (OSError, ValueError, AttributeError) as e:
            log.warning("ignoring unreadable download index %s (%s); links will be "
                        "downloaded again", self.path, e)

    def by_url(self, url):
        stem = self.data["urls"].get(url)
        return self.by_stem(stem, url, alias=False) if isinstance(stem, str) else None

    def by_stem(self, stem, url, alias):
        rec = self.data["videos"].get(stem)
        if not isinstance(rec, dict) or not isinstance(rec.get("file"), str):
            return None
        name = rec["file"]
        path = self.folder / name
        if name != Path(name).name or Path(name).suffix[1:].lower() not in AUDIO_EXTENSIONS \
                or not _inside(path, self.folder) or not path.is_file():
            return None
        log.info("already downloaded, reusing %s for %s", path, url)
        if alias:
            self._remember(url, stem)
        return _result(url, rec, path, cached=True)

    def add(self, stem, url, result, alias):
        self.data["videos"][stem] = {
            "file": result.path.name, "id": result.video_id, "title": result.title,
            "uploader": result.uploader, "webpage_url": result.webpage_url}
        if alias:
            self.data["urls"][url] = stem
        self._save()

    def _remember(self, url, stem):
        if self.data["urls"].get(url) != stem:
            self.data["urls"][url] = stem
            self._save()

    def _save(self):
        try:
            write_text_atomic(self.path, json.dumps(self.data, ensure_ascii=False, indent=1))
        except (OSError, OutputError) as e:
            log.warning("could not update download index %s (%s)", self.path, e)
