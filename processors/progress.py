"""Batch progress in audio-seconds on stderr, and the per-track lines of the log."""

import logging
import sys

log = logging.getLogger(__name__)


class Progress:
    """Batch progress in audio-seconds on stderr: a tqdm bar on a terminal, plain log lines
    otherwise, nothing with --quiet."""

    def __init__(self, total_tracks, total_seconds, quiet):
        self.n_tracks, self.done = total_tracks, 0
        self.bar = self.sep_bar = None
        self.sep_quarter = 0
        self.quiet = quiet
        self._redirect = None
        if not quiet and sys.stderr.isatty():
            from tqdm import tqdm
            from tqdm.contrib.logging import logging_redirect_tqdm

            # Log lines go through tqdm.write so they print above the bars, not through them.
            self._redirect = logging_redirect_tqdm()
            self._redirect.__enter__()

            self.bar = tqdm(total=round(total_seconds, 1) or None, unit="s audio",
                            desc="VTrace", file=sys.stderr, dynamic_ncols=True,
                            bar_format="{l_bar}{bar}| {n:.0f}/{total_fmt} s audio "
                                       "[{elapsed}<{remaining}]")

    def separation(self, done, total):
        """Progress of the running separation, in audio-seconds (a second bar, or a log line
        at each quarter)."""
        if self.quiet:
            return
        if self.bar is not None:
            if self.sep_bar is None:
                from tqdm import tqdm

                self.sep_bar = tqdm(total=round(total, 1), unit="s audio", desc="separating",
                                    file=sys.stderr, position=1, leave=False,
                                    dynamic_ncols=True,
                                    bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} s audio "
                                               "[{elapsed}<{remaining}]")
            self.sep_bar.update(done - self.sep_bar.n)
            if done >= total:
                self.sep_bar.close()
                self.sep_bar = None
        else:
            quarter = int(4 * done / total) if total else 4
            if quarter > self.sep_quarter or done >= total:
                self.sep_quarter = 0 if done >= total else quarter
                log.info("separating: %.0f/%.0f s of audio", done, total)

    def audio(self, seconds):
        if self.bar is not None:
            self.bar.update(seconds)

    def track_done(self, result, counted_audio):
        self.done += 1
        if self.bar is not None:
            self.bar.update(max(0.0, result.audio_seconds - counted_audio))
            self.bar.set_postfix_str(f"{self.done}/{self.n_tracks} tracks")
        if result.status == "failed":
            log.error("[%d/%d] %s: failed: %s", self.done, self.n_tracks, result.name,
                      result.reason)
        else:  # the console shows it unless --quiet; the log file always keeps it
            log.info("[%d/%d] %s: %s (%.1f s audio in %.1f s)", self.done, self.n_tracks,
                     result.name, result.status, result.audio_seconds, result.wall_seconds)

    def close(self):
        for bar in (self.sep_bar, self.bar):
            if bar is not None:
                bar.close()
        if self._redirect is not None:
            self._redirect.__exit__(None, None, None)
            self._redirect = None


def summary_table(results):
    """The end-of-run table for stdout: track, status, audio length, time (and evaluation time
    when there was any), then the output folder or the reason it failed."""
    with_eval = any(r.eval_seconds for r in results)
    head = ("track", "status", "audio", "time") + (("eval",) if with_eval else ())
    rows = [head + ("output / reason",)]
    for r in results:
        cells = (r.name, r.status, f"{r.audio_seconds:.1f}s", f"{r.wall_seconds:.1f}s")
        if with_eval:
            cells += (f"{r.eval_seconds:.1f}s" if r.eval_seconds else "-",)
        last = r.reason if r.status == "failed" else r.output_dir
        if r.status == "skipped" and r.reason:
            last += f" ({r.reason})"
        if r.warnings:
            last += "".join(f" (warning: {w})" for w in r.warnings)
        rows.append(cells + (last,))
    k = len(head)
    widths = [min(40, max(len(row[i]) for row in rows)) for i in range(k)]
    lines = ["  ".join([row[i][:widths[i]].ljust(widths[i]) for i in range(k)] + [row[k]])
             for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths) + "  " + "-" * 15)
    counts = {s: sum(r.status == s for r in results) for s in ("ok", "skipped", "failed")}
    lines.append(f"{len(results)} track(s): {counts['ok']} ok, {counts['skipped']} skipped, "
                 f"{counts['failed']} failed")
    return "\n".join(lines)
