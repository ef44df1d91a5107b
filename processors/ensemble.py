"""Several models' stems averaged (``--model A,B``): the UVR recipe, with audio-separator's
``avg_wave`` (the plain mean of the waveforms, equal weights).

Each member separates into its own folder of the separated layout
(``<separated>/<member>/<track>/``, kept: a later run with that model alone finds them and
checks them against the mix like other tools' stems), and the mean of each stem goes to the
ensemble's folder (``<separated>/<A>+<B>/<track>/``), read and written block by block.
"""

import logging
import time
from pathlib import Path

import numpy as np

from audio_utils.audio_io import BlockReader, BlockWriter, audio_info
from processors.separation import SeparationResult
from utils.atomic_files import is_temp, remove_stale_temps
from utils.errors import OutputError, SeparationError
from utils.layout import model_folder

log = logging.getLogger("processors.separation")

BLOCK_S = 30.0
STEMS = ("vocals.wav", "no_vocals.wav")


def average(blocks):
    """The mean of equal-shape float32 ``(channels, n)`` blocks, as audio-separator's
    ``Ensembler(algorithm="avg_wave")`` computes it (sum in order, divided by the count)."""
    out = np.zeros_like(blocks[0])
    for b in blocks:
        out += b
    return out / np.float32(len(blocks))


class EnsembleSeparator:
    """Runs each member separator, then averages their stems (see the module's docstring)."""

    def __init__(self, members):
        self.members = list(members)
        self.device_used = None
        self.precision_ran = None

    @property
    def names(self):
        return [m.model_name for m in self.members]

    @property
    def loaded(self):
        return all(m.loaded for m in self.members)

    @property
    def sources(self):
        """The sources every member has, in the first member's order."""
        common = set.intersection(*(set(m.sources) for m in self.members))
        return tuple(s for s in self.members[0].sources if s in common)

    def check_options(self):
        for m in self.members:
            m.check_options()

    def _files(self, folders):
        """``vocals.wav``, ``no_vocals.wav``, then the other stem files every member wrote."""
        common = set.intersection(*({p.name for p in f.glob("*.wav") if not is_temp(p)}
                                     for f in folders))
        return list(STEMS) + sorted(n for n in common if n not in STEMS)

    def separate_file(self, mix_path, out_dir) -> SeparationResult:
        t0 = time.perf_counter()
        out_dir = Path(out_dir)
        root, track = out_dir.parent.parent, out_dir.name
        folders, results = [], []
        for m in self.members:
            folder = root / model_folder(m.model_name) / track
            if folder.exists():
                remove_stale_temps(folder)  # what an interrupted run left half-written
            log.info("ensemble: separating with %s", m.model_name)
            results.append(m.separate_file(mix_path, folder))
            folders.append(folder)
        rates = {r.samplerate for r in results}
        if len(rates) > 1:
            raise SeparationError(f"the ensemble's models separate at different rates "
                                  f"({', '.join(map(str, sorted(rates)))} Hz); average models "
                                  "of one rate")
        sr = results[0].samplerate
        out_dir.mkdir(parents=True, exist_ok=True)
        for name in self._files(folders):
            _average_files([f / name for f in folders], out_dir / name, sr)
        self.device_used = ",".join(dict.fromkeys(r.device for r in results))
        self.precision_ran = ",".join(dict.fromkeys(r.precision for r in results))
        return SeparationResult(out_dir / STEMS[0], out_dir / STEMS[1],
                                time.perf_counter() - t0, self.device_used, sr,
                                results[0].audio_seconds, self.precision_ran)


def _average_files(paths, dst, sr):
    """Write the mean of the stem files ``paths`` (padded with silence to the longest, as
    audio-separator pads) to ``dst`` as float32."""
    frames = max(audio_info(p)[2] for p in paths)
    readers = [BlockReader(p, 2) for p in paths]
    writer = BlockWriter(dst, sr, 2, "float32", frames)
    block = int(BLOCK_S * sr)
    try:
        for start in range(0, frames, block):
            stop = min(start + block, frames)
            writer.write(average([r.read(start, stop) for r in readers]))
        writer.commit()
    except OSError as exc:
        raise OutputError(f"cannot write {dst}: {exc}; check free space and permissions") \
            from None
    finally:
        writer.discard()
        for r in readers:
            r.close()
