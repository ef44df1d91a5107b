"""--midi benchmark: melodies rendered from known MIDI, transcribed back, scored note by note.

Songs: ``--songs`` short songs, each with its own melody (a seeded random walk on a scale),
tempo and key. Each is rendered with fluidsynth and a General MIDI soundfont (the testbed's
method): a lead on the "Voice Oohs" patch (the sung-like stem) with synthetic speech over it
(voiced syllables on a gliding pitch, 10 dB under the lead: the "vocal" stem is lead +
speech), and an accompaniment of piano chords, bass and drums. mix = vocals + accompaniment.

Separation: there are no real model weights here, so the model's stems are a stand-in made
like the testbed's oracle: soft ratio masks from the true stems' STFTs, smeared over +-3 frames
(bleed both ways), with the accompaniment's lows below 150 Hz 6 dB down. NOT a real model.
VTrace then runs as a user would (``main([... "--midi"])`` on the stand-in stems, default
repair), and its ``<track>_vocals.mid`` is scored.

Scoring: ``mir_eval.transcription.precision_recall_f1_overlap``, onset within 50 ms, pitch
within 50 cents, offsets ignored, against the lead's MIDI notes. Rows per song:

- true stem: ``processors.melody.transcribe`` on the true vocal stem (lead + speech);
- residual: VTrace's MIDI from its residual vocal of the stand-in stems;
- baseline (pYIN frames): plain pYIN, each run of voiced frames with one rounded pitch a
  note, on the same two signals.

Needs: ``apt-get install fluidsynth fluid-soundfont-gm`` (bench only, not CI), the midi extra,
mir_eval. Usage: ``python bench/bench_midi.py [--songs 4] [--seconds 20] [--out DIR]``.
"""

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SR = 44100
SOUNDFONTS = ("/usr/share/sounds/sf2/FluidR3_GM.sf2", "/usr/share/sounds/sf2/default-GM.sf2")
VOICE_OOHS, PIANO, FINGERED_BASS = 53, 0, 33  # General MIDI programs, 0-based
MAJOR, MINOR = (0, 2, 4, 5, 7, 9, 11), (0, 2, 3, 5, 7, 8, 10)
# (tempo BPM, key root as MIDI note, scale) per song: different tempi, keys and modes
STYLES = [(96, 60, MAJOR), (128, 67, MAJOR), (76, 62, MINOR), (140, 58, MINOR),
          (110, 64, MAJOR), (88, 57, MINOR)]
KEY_NAMES = ("C", "Db", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")


def melody_notes(seed, tempo, root, scale, seconds):
    """The lead: ``[(start s, end s, pitch)]``, a random walk on ``scale`` from ``root``,
    note lengths of 1/2 to 2 beats, rests now and then, slightly detached."""
    rng = np.random.default_rng(seed)
    beat = 60.0 / tempo
    degree, t, notes = 0, 1.0, []
    while True:
        length = beat * rng.choice([0.5, 1, 1, 1.5, 2])
        if t + length > seconds - 1.0:
            return notes
        if rng.random() < 0.15:
            t += beat * rng.choice([0.5, 1])
            continue
        degree = int(np.clip(degree + rng.choice([-2, -1, -1, 0, 1, 1, 2, 3]), -3, 9))
        octave, step = divmod(degree, len(scale))
        notes.append((t, t + length * 0.9, root + 12 * octave + scale[step]))
        t += length


def accompaniment(tempo, root, scale, seconds):
    """Piano chords and bass on each bar's I-IV-V-vi (or minor i-iv-v-VI), drums on the beat:
    ``{program or "drums": [(start, end, pitch, velocity)]}``."""
    beat = 60.0 / tempo
    bar = 4 * beat
    parts = {PIANO: [], FINGERED_BASS: [], "drums": []}
    degrees = [0, 3, 4, 5]
    for i, start in enumerate(np.arange(0.0, seconds - bar / 2, bar)):
        d = degrees[i % 4]
        chord = [root - 12 + scale[(d + k) % 7] + 12 * ((d + k) // 7) for k in (0, 2, 4)]
        for b in range(4):
            t = start + b * beat
            for p in chord:
                parts[PIANO].append((t, t + beat * 0.8, p, 60))
            parts[FINGERED_BASS].append((t, t + beat * 0.9, chord[0] - 12, 90))
            parts["drums"].append((t, t + 0.1, 36 if b % 2 == 0 else 38, 90))
            for h in (0, 0.5):
                parts["drums"].append((t + h * beat, t + h * beat + 0.05, 42, 60))
    return parts


def render(parts, path, soundfont, seconds):
    """``parts`` ``{program or "drums": [(start, end, pitch, velocity)]}`` through fluidsynth
    into float32 ``(2, seconds * SR)``."""
    import pretty_midi

    song = pretty_midi.PrettyMIDI(initial_tempo=120)
    for program, notes in parts.items():
        inst = pretty_midi.Instrument(program=0 if program == "drums" else program,
                                      is_drum=program == "drums")
        inst.notes = [pretty_midi.Note(velocity=v, pitch=p, start=a, end=b)
                      for a, b, p, v in notes]
        song.instruments.append(inst)
    mid = path.with_suffix(".mid")
    song.write(str(mid))
    subprocess.run(["fluidsynth", "-ni", "-q", "-g", "0.6", "-r", str(SR), "-F", str(path),
                    soundfont, str(mid)], check=True, capture_output=True)
    x, sr = sf.read(str(path), dtype="float32", always_2d=True)
    assert sr == SR
    n = int(seconds * SR)
    x = x.T[:, :n]
    return np.pad(x, ((0, 0), (0, n - x.shape[1])))


def speech(seed, seconds, level):
    """Speech-like: syllables of 120-250 ms, a glottal pulse train on a gliding 110-220 Hz
    pitch through three moving formants, with pauses; float32 ``(2, n)`` at peak ``level``."""
    from scipy.signal import lfilter

    rng = np.random.default_rng(seed + 1000)
    n = int(seconds * SR)
    out = np.zeros(n)
    t = 0.3
    while t < seconds - 0.5:
        length = rng.uniform(0.12, 0.25)
        a, b = int(t * SR), int((t + length) * SR)
        f0 = rng.uniform(110, 220) * np.linspace(1, rng.uniform(0.8, 1.25), b - a)
        phase = np.cumsum(f0 / SR)
        src = (np.diff(np.floor(phase), prepend=0) > 0).astype(float)  # one pulse per period
        src += 0.05 * rng.standard_normal(src.size)  # breath
        y = np.zeros_like(src)
        for formant, bw in ((rng.uniform(300, 800), 80), (rng.uniform(900, 2200), 120),
                            (rng.uniform(2300, 3000), 160)):
            r = np.exp(-np.pi * bw / SR)
            th = 2 * np.pi * formant / SR
            y += lfilter([1 - r], [1, -2 * r * np.cos(th), r * r], src)
        y *= np.hanning(y.size)
        out[a:b] += y
        t += length + (rng.uniform(0.3, 0.8) if rng.random() < 0.3 else rng.uniform(0.02, 0.08))
    out *= level / max(np.max(np.abs(out)), 1e-9)
    return np.stack([out, 0.9 * out]).astype(np.float32)


def standin_stems(vocals, accomp):
    """A model's two stems, made like the testbed's oracle: soft ratio masks of the true
    stems smeared over +-3 frames, the accompaniment's lows (< 150 Hz) 6 dB down."""
    from scipy.ndimage import uniform_filter1d
    from scipy.signal import istft, stft

    n = vocals.shape[1]
    kw = dict(nperseg=2048, noverlap=1536)
    V, A = stft(vocals, **kw)[2], stft(accomp, **kw)[2]
    pv = uniform_filter1d(np.abs(V) ** 2, 7, axis=-1)
    pa = uniform_filter1d(np.abs(A) ** 2, 7, axis=-1)
    mask = pv / (pv + pa + 1e-12)
    X = V + A
    freqs = np.fft.rfftfreq(2048, 1 / SR)
    low = np.where(freqs < 150, 10 ** (-6 / 20), 1.0)[:, None]
    voc = istft(mask * X, **kw)[1][..., :n]
    inst = istft((1 - mask) * X * low, **kw)[1][..., :n]
    return voc.astype(np.float32), inst.astype(np.float32)


def pyin_frames_to_notes(audio, sr):
    """The baseline: plain pYIN (same range and frames as VTrace's), each run of voiced frames
    with one rounded MIDI pitch one note; no onsets, no minimum length, no loudness floor."""
    import librosa

    from processors import melody

    y = librosa.resample(audio.mean(axis=0), orig_sr=sr, target_sr=melody.SR)
    f0, voiced, _ = librosa.pyin(y, fmin=melody.range_for("vocals")[0],
                                 fmax=melody.range_for("vocals")[1], sr=melody.SR,
                                 frame_length=melody.FRAME, hop_length=melody.HOP)
    pitch = np.where(voiced, np.round(librosa.hz_to_midi(np.where(voiced, f0, 1.0))), -1)
    notes, start = [], None
    for i in range(len(pitch) + 1):
        p = pitch[i] if i < len(pitch) else -1
        if start is not None and p != pitch[start]:
            notes.append((start * melody.HOP / melody.SR, i * melody.HOP / melody.SR,
                          int(pitch[start])))
            start = None
        if start is None and p >= 0:
            start = i
    return notes


def score(ref, est):
    """(precision, recall, F1) with onsets within 50 ms and pitch within 50 cents."""
    import mir_eval

    def arrays(notes):
        if not notes:
            return np.zeros((0, 2)), np.zeros(0)
        return (np.array([[a, b] for a, b, _ in notes]),
                440.0 * 2 ** ((np.array([p for _, _, p in notes]) - 69) / 12))

    (ri, rp), (ei, ep) = arrays(ref), arrays(est)
    if not len(ei):
        return 0.0, 0.0, 0.0
    p, r, f, _ = mir_eval.transcription.precision_recall_f1_overlap(
        ri, rp, ei, ep, onset_tolerance=0.05, pitch_tolerance=50.0, offset_ratio=None)
    return p, r, f


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--songs", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--out", type=Path, default=None, help="keep the songs here")
    args = parser.parse_args()
    if shutil.which("fluidsynth") is None:
        sys.exit("needs fluidsynth: apt-get install fluidsynth fluid-soundfont-gm")
    soundfont = next((s for s in SOUNDFONTS if Path(s).is_file()), None)
    if soundfont is None:
        sys.exit("needs a General MIDI soundfont: apt-get install fluid-soundfont-gm")
    import pretty_midi

    from main import main as vtrace
    from processors import melody

    work = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="bench_midi_"))
    rows = []
    print(f"{'song':<8} {'tempo':>5} {'key':>4} {'notes':>5}  "
          f"{'signal':<10} {'method':<14} {'P':>5} {'R':>5} {'F1':>5}")
    for i in range(args.songs):
        tempo, root, scale = STYLES[i % len(STYLES)]
        name = f"song{i + 1}"
        lead_notes = melody_notes(i, tempo, root, scale, args.seconds)
        folder = work / name
        folder.mkdir(parents=True, exist_ok=True)
        lead = render({VOICE_OOHS: [(a, b, p, 100) for a, b, p in lead_notes]},
                      folder / "lead.wav", soundfont, args.seconds)
        accomp = render(accompaniment(tempo, root, scale, args.seconds),
                        folder / "accompaniment.wav", soundfont, args.seconds)
        lead_peak = float(np.max(np.abs(lead)))
        vocals = lead + speech(i, args.seconds, lead_peak * 10 ** (-10 / 20))
        mix = vocals + accomp
        scale_to = 0.9 / max(float(np.max(np.abs(mix))), 1e-9)
        vocals, accomp, mix = vocals * scale_to, accomp * scale_to, mix * scale_to
        songs, sep = work / "songs", work / "separated" / "standin" / name
        songs.mkdir(exist_ok=True)
        sep.mkdir(parents=True, exist_ok=True)
        sf.write(str(songs / f"{name}.wav"), mix.T, SR, subtype="FLOAT")
        voc_m, inst_m = standin_stems(vocals, accomp)
        sf.write(str(sep / "vocals.wav"), voc_m.T, SR, subtype="FLOAT")
        sf.write(str(sep / "no_vocals.wav"), inst_m.T, SR, subtype="FLOAT")
        t0 = time.perf_counter()
        rc = vtrace([str(songs / f"{name}.wav"), "--model", "standin", "--separated-dir",
                     str(work / "separated"), "-o", str(work / "out"), "--midi", "--quiet",
                     "--force", "--wav-format", "float32", "--log-dir", str(work / "logs")])
        wall = time.perf_counter() - t0
        assert rc == 0, f"vtrace failed on {name}"
        out = work / "out" / "standin" / name
        got = pretty_midi.PrettyMIDI(str(out / f"{name}_vocals.mid")).instruments[0].notes
        residual = sf.read(str(out / f"{name}_vocal_residual.wav"), dtype="float32",
                           always_2d=True)[0].T
        found = {
            ("true stem", "VTrace"): [(n.start, n.end, n.pitch) for n in
                                      melody.transcribe(vocals, SR).notes],
            ("true stem", "pYIN frames"): pyin_frames_to_notes(vocals, SR),
            ("residual", "VTrace"): [(n.start, n.end, n.pitch) for n in got],
            ("residual", "pYIN frames"): pyin_frames_to_notes(residual, SR),
        }
        key = KEY_NAMES[root % 12] + ("" if scale == MAJOR else "m")
        for (signal, method), est in found.items():
            p, r, f = score(lead_notes, est)
            rows.append((name, signal, method, p, r, f))
            print(f"{name:<8} {tempo:>5} {key:>4} {len(lead_notes):>5}  {signal:<10} "
                  f"{method:<14} {p:5.2f} {r:5.2f} {f:5.2f}")
        print(f"{'':<8} (vtrace --midi run: {wall:.1f} s for {args.seconds:g} s of audio)")
    print("\nmedian F1 over songs (min-max):")
    for signal in ("true stem", "residual"):
        for method in ("VTrace", "pYIN frames"):
            fs = [f for _, s, m, _, _, f in rows if s == signal and m == method]
            print(f"  {signal:<10} {method:<14} {np.median(fs):.2f} ({min(fs):.2f}-{max(fs):.2f})")
    if not args.out:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
