#!/usr/bin/env python3
"""Demo material for ./setup.sh: a few seconds of music made in numpy, and a guide to the outputs.

``python scripts/demo.py make DIR`` writes ``DIR/demo_song.wav`` (7 s, 44.1 kHz stereo: bass,
chords, drum-like noise bursts and a voice-like vibrato melody) unless it already exists, so a
second run reuses it and VTrace skips the finished track. ``python scripts/demo.py show OUT SEP``
prints where each output of that track is and what it is; it exits 1 if one is missing.
"""

import sys
from pathlib import Path

SR = 44100
SECONDS = 7.0
TRACK = "demo_song"


def make_song(seconds=SECONDS, sr=SR):
    import numpy as np

    rng = np.random.default_rng(2026)
    t = np.arange(int(seconds * sr)) / sr
    beat = 0.5  # 120 bpm
    pos = t % beat
    # bass: one root per bar (A, F, C, G), plucked envelope on each beat
    roots = np.array([55.0, 43.65, 65.41, 49.0])
    bar = (t // (4 * beat)).astype(int) % 4
    bass = 0.28 * np.sin(2 * np.pi * roots[bar] * t) * np.exp(-3.0 * pos)
    # chords: a triad an octave up per bar, soft attack
    chord = sum(np.sin(2 * np.pi * roots[bar] * 4 * r * t) for r in (1.0, 1.26, 1.5))
    chord = 0.05 * chord * (1 - np.exp(-20 * pos))
    # drums: kick on beats, noise snare on off-beats, hats every eighth
    kick = 0.5 * np.sin(2 * np.pi * 50 * t * np.exp(-8 * pos)) * np.exp(-12 * pos)
    off = (t - beat / 2) % beat
    noise = rng.standard_normal(t.size)
    snare = 0.18 * noise * np.exp(-25 * off) * ((t // beat) % 2 == 1)
    hats = 0.05 * noise * np.exp(-60 * (t % (beat / 2)))
    # voice: a vibrato melody in phrases, with two formant-like harmonics
    notes = np.array([440.0, 493.9, 523.3, 587.3, 523.3, 493.9, 440.0, 392.0])
    f0 = notes[(t // beat).astype(int) % notes.size] * (1 + 0.012 * np.sin(2 * np.pi * 5.5 * t))
    phase = 2 * np.pi * np.cumsum(f0) / sr
    phrase = np.clip(np.sin(2 * np.pi * t / 3.5) * 3 + 0.5, 0, 1)
    voice = 0.22 * phrase * (np.sin(phase) + 0.4 * np.sin(2 * phase) + 0.2 * np.sin(3 * phase))
    left = bass + chord + kick + snare + hats * 1.0 + voice
    right = bass + 0.8 * chord + kick + 0.8 * snare + hats * 0.6 + 0.9 * voice
    mix = np.stack([left, right]).astype(np.float32)
    return mix / max(1.0, float(np.abs(mix).max()) / 0.9)


def make(folder):
    import soundfile as sf

    path = Path(folder) / f"{TRACK}.wav"
    if path.is_file():
        print(f"demo: {path} exists, reused")
        return 0
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), make_song().T, SR, subtype="PCM_16")
    print(f"demo: wrote {path} ({SECONDS:g} s, {SR} Hz stereo, synthesized)")
    return 0


def show(out_dir, sep_dir, model="demucs_unittest"):
    song = Path(out_dir) / model / TRACK  # outputs sit per model, as the stems do
    stems = Path(sep_dir) / model / TRACK
    files = [
        (stems / "vocals.wav", "the model's vocals stem (demucs_unittest is a tiny random model: "
                               "its stems are noise, not a separation)"),
        (stems / "no_vocals.wav", "the model's instrumental stem (sum of its other sources)"),
        (stems / "vtrace_stems.json", "the record binding these stems to the mix, model and "
                                      "settings they came from"),
        (song / f"{TRACK}_blended.wav", "the blend: instrumental with the vocal turned down "
                                        "(vocal scaled by w, here -20 dB)"),
        (song / f"{TRACK}_vocal_residual.wav", "the voice: original minus the model's "
                                               "instrumental (the vocal with its natural space)"),
        (song / f"{TRACK}_phase_cancel.wav", "the instrumental rebuilt from the original: "
                                             "original minus the voice"),
        (song / f"{TRACK}_vtrace.json", "the manifest: what the outputs were made from (input, "
                                        "stems, settings), model, versions, offset, gain, "
                                        "timings"),
    ]
    print("\nVTrace demo outputs:")
    missing = 0
    for path, what in files:
        ok = path.is_file()
        missing += not ok
        print(f"  {path}{'' if ok else '  (MISSING)'}: {what}")
    print("With a real model (htdemucs_ft, downloaded once, about 336 MB) the same command "
          "separates for real:\n  .venv/bin/vtrace YOUR_SONGS_FOLDER -ba 0.1")
    return 1 if missing else 0


if __name__ == "__main__":
    args = sys.argv[1:]
    if len(args) == 2 and args[0] == "make":
        sys.exit(make(args[1]))
    if len(args) == 3 and args[0] == "show":
        sys.exit(show(args[1], args[2]))
    print(__doc__.strip(), file=sys.stderr)
    sys.exit(2)
