"""``--dataset-manifest PATH.jsonl``: one JSON line per finished track, for training pipelines.

Each line describes one track whose outputs are on disk (input, outputs as absolute paths,
duration, sample rate, offset and polarity found, gain, metrics when evaluated), with the same
keys on every line, so Hugging Face ``datasets.load_dataset("json", data_files=PATH)`` and
``pandas.read_json(PATH, lines=True)`` read it directly. Only this process writes the file (the
main process of a local batch, the driver of a Ray run):

- as each track ends ok its line is appended (flush and fsync per line), so an interrupted run
  keeps the lines of every track that finished;
- at the end the file is rebuilt, atomically, from the manifests of the tracks that are ok or
  skipped, in input order: a rerun (resume) lists each finished track exactly once;
- on an interruption the lines appended so far are kept, one per input (the last one wins).
"""

import json
import logging
import os
from pathlib import Path

from processors.track import read_manifest
from utils.atomic_files import write_text_atomic
from utils.layout import output_label

log = logging.getLogger(__name__)

OUTPUTS = ("blended", "vocal_residual", "phase_cancel")


class DatasetManifest:
    def __init__(self, path, engine, out_root):
        self.path = Path(path)
        self.engine, self.out_root = engine, out_root
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def line(self, track, result):
        """The track's record, from its manifest on disk; None when it has none."""
        names = self.engine.names(track, self.out_root)
        manifest = read_manifest(names)
        if manifest is None:
            return None
        files = {str(f) for f in manifest.get("files", [])}
        outputs = {}
        target = self.engine.cfg.target_stem
        for name in OUTPUTS + ("rebalanced",):
            label = output_label(name, target)
            found = [names.path(label, ext) for ext in ("wav", "mp3")
                     if names.relative(names.path(label, ext)) in files]
            if found or name in OUTPUTS:
                outputs[name] = str(found[0].resolve()) if found else None
        offset = manifest.get("offset") or {}
        metrics = result.eval_row or None
        if metrics is not None:
            metrics = {k: v for k, v in metrics.items() if k != "track"}
        return {
            "track": track.name,
            "input": str(Path(track.path).resolve()),
            "outputs": outputs,
            "duration": manifest.get("seconds"),
            "sample_rate": manifest.get("samplerate"),
            "channels": manifest.get("channels"),
            "model": manifest.get("model"),
            "offset_samples": offset.get("lag_samples"),
            "polarity": offset.get("polarity"),
            "offset_applied": offset.get("applied"),
            "blend_weight": manifest.get("blend_weight"),
            "gain": manifest.get("gain"),
            "metrics": metrics,
            "manifest": str(names.manifest.resolve()),
        }

    def append(self, track, result):
        """Append the line of a track that ended ok (flushed and synced)."""
        if result.status != "ok":
            return
        record = self.line(track, result)
        if record is None:
            return
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record, sort_keys=True, default=_plain) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def rebuild(self, tracks, results):
        """Rewrite the file from the manifests of the tracks that are ok or skipped."""
        by_name = {r.name: r for r in results}
        lines = []
        for track in tracks:
            result = by_name.get(track.name)
            if result is None or result.status not in ("ok", "skipped"):
                continue
            record = self.line(track, result)
            if record is not None:
                lines.append(json.dumps(record, sort_keys=True, default=_plain))
        write_text_atomic(self.path, "".join(line + "\n" for line in lines))
        log.info("dataset manifest: %d track(s) in %s", len(lines), self.path)

    def deduplicate(self):
        """After an interruption: one line per input, the last one appended."""
        try:
            raw = self.path.read_text(encoding="utf-8").splitlines()
        except OSError:
            return
        kept = {}
        for text in raw:
            try:
                record = json.loads(text)
            except ValueError:
                continue  # a line cut by a kill
            kept.pop(record.get("input"), None)
            kept[record.get("input")] = text
        write_text_atomic(self.path, "".join(t + "\n" for t in kept.values()))


def _plain(value):
    """numpy scalars (and anything else JSON lacks) as plain numbers or text."""
    try:
        return value.item()
    except AttributeError:
        return str(value)
