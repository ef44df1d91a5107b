"""Links to tracks: downloads through ``utils.youtube`` become TrackInputs (or failed
TrackResults, each with its one-line reason). The command line and the web page both use it."""

from pathlib import Path

from processors.track import TrackResult
from utils.inputs import TrackInput
from utils.youtube import download_links


def link_tracks(links, cfg, taken=()):
    """Download ``links`` with the Config's folder and limits; returns ``(tracks, failed)``.
    A link whose track name is already ``taken`` (case-insensitive) or seen is left out."""
    tracks, failed = [], []
    names = {n.lower() for n in taken}
    for r in download_links(list(links), Path(cfg.download_dir), cfg.playlist,
                            cfg.max_duration):
        if not r.ok:
            failed.append(TrackResult(r.track_name or r.url, r.url, "failed", r.error))
            continue
        if r.track_name.lower() in names:
            continue
        names.add(r.track_name.lower())
        meta = tuple((k, v) for k, v in (("title", r.title), ("uploader", r.uploader),
                                         ("url", r.webpage_url or r.url),
                                         ("video_id", r.video_id)) if v)
        tracks.append(TrackInput(Path(r.path), r.track_name, meta))
    return tracks, failed
