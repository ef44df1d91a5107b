"""A stem's melody as notes, for ``--midi``: pYIN pitch tracking, then note segmentation.

``transcribe(audio, sr)`` takes float32 ``(channels, samples)`` (a residual or a model stem)
and returns a ``Melody``: notes (start and end in seconds, MIDI pitch, velocity) and the tempo
in BPM. Monophonic: one pitch at a time, the strongest. Steps:

1. mono, resampled to 22050 Hz; librosa's pYIN over the stem's pitch range (``range_for``),
   frames of 2048 samples every 256 (11.6 ms);
2. a frame sounds when pYIN calls it voiced and its RMS (over ``LEVEL_FRAME``) is within
   ``FLOOR_DB`` of the stem's loudest frame (bleed and reverb tails under that are not notes);
3. a note starts where sound starts, where the pitch leaves the note's running median by more
   than ``SPLIT_SEMITONES`` for ``SPLIT_FRAMES`` frames in a row (a legato step), or at an
   onset of the spectral flux while sounding where the level dips and rises again by
   ``REARTICULATION_DB`` (a repeated note; another sound starting over a held note, say a
   spoken word, does not dip it); the start is then moved onto a spectral-flux onset near
   it (``_snap``: pYIN's centred frames call a note voiced up to half a frame early);
4. notes shorter than ``MIN_NOTE_S`` are dropped; pitch is the median of the note's frames,
   rounded; velocity maps the note's peak RMS from -60..0 dBFS onto 1..127;
5. tempo: librosa's beat tracker on the same onset envelope (120 when it finds none).

Nothing here reads or writes files, nor changes its input. librosa is imported only when a
melody is asked for (the ``midi`` extra).
"""

from dataclasses import dataclass

import numpy as np

from audio_utils.audio_checks import check_audio

SR = 22050
HOP = 256
FRAME = 2048
LEVEL_FRAME = 1024  # 46 ms: short enough to see the dip between two sung notes
FLOOR_DB = 40.0          # frames this far below the stem's loudest are not notes
SILENT_DBFS = -70.0      # a stem whose loudest frame is below this has no notes at all
SPLIT_SEMITONES = 0.6    # a legato step: over half a semitone away from the note's median...
SPLIT_FRAMES = 4         # ...for this many frames (46 ms; vibrato swings back sooner)
# a repeated note: at an onset the level rises this much from its dip over the 116 ms before
# to its peak over the 58 ms after (measured on the Oohs patch's detached notes: 6-9 dB; a
# spoken word 10 dB under a held note: under 1 dB)
REARTICULATION_DB = 5.0
REARTICULATION_FRAMES = 5
ONSET_SNAP_FRAMES = 6    # a note start is moved onto an onset up to 70 ms away
MIN_NOTE_S = 0.07
DEFAULT_TEMPO = 120.0

# Pitch range searched per stem (note names); a narrower range is faster and makes fewer
# octave errors.
RANGES = {"vocals": ("C2", "C6"), "bass": ("B0", "G3"), "guitar": ("E2", "E6"),
          "piano": ("A0", "C7"), "other": ("C2", "C7")}
# General MIDI program (0-based) the MIDI file's part is given, per stem.
PROGRAMS = {"vocals": 53, "bass": 33, "guitar": 25, "piano": 0, "other": 0}


@dataclass(frozen=True)
class Note:
    start: float     # seconds
    end: float       # seconds
    pitch: int       # MIDI note number
    velocity: int    # 1..127


@dataclass(frozen=True)
class Melody:
    notes: tuple     # Note, in time order, never overlapping
    tempo: float     # beats per minute


def range_for(stem):
    """``(fmin, fmax)`` in Hz searched for ``stem``."""
    import librosa

    low, high = RANGES.get(stem, RANGES["other"])
    return float(librosa.note_to_hz(low)), float(librosa.note_to_hz(high))


def program_for(stem):
    return PROGRAMS.get(stem, 0)


def transcribe(audio, sr, fmin_fmax=None):
    """The melody of ``audio``, float32 ``(channels, samples)`` at ``sr`` Hz; ``fmin_fmax``:
    the pitch range in Hz (default: the vocal range). Silence gives no notes."""
    import librosa

    check_audio(audio, "audio")
    y = audio.mean(axis=0, dtype=np.float32)
    if sr != SR:
        y = librosa.resample(y, orig_sr=sr, target_sr=SR)
    fmin, fmax = fmin_fmax or range_for("vocals")
    rms = librosa.feature.rms(y=y, frame_length=LEVEL_FRAME, hop_length=HOP)[0]
    db = 20 * np.log10(np.maximum(rms, 1e-10) * np.sqrt(2))  # a full-scale sine: 0 dBFS
    if y.size < FRAME or db.max() < SILENT_DBFS:
        return Melody((), DEFAULT_TEMPO)
    f0, voiced, _ = librosa.pyin(y, fmin=fmin, fmax=fmax, sr=SR, frame_length=FRAME,
                                 hop_length=HOP)
    n = min(len(f0), len(db))
    sounding = voiced[:n] & np.isfinite(f0[:n]) & (db[:n] > db.max() - FLOOR_DB)
    pitch = np.where(sounding, librosa.hz_to_midi(np.where(sounding, f0[:n], 1.0)), np.nan)
    flux = librosa.onset.onset_strength(y=y, sr=SR, hop_length=HOP)
    onsets = set(librosa.onset.onset_detect(onset_envelope=flux, sr=SR, hop_length=HOP,
                                            units="frames").tolist())
    spans = _segment(pitch, onsets, db)
    notes = []
    for a, b in spans:
        start = _snap(a, onsets)
        if (b - start) * HOP / SR < MIN_NOTE_S:
            continue
        p = int(np.round(np.median(pitch[a:b])))
        velocity = int(np.clip(np.round(127 * (db[a:b].max() + 60) / 60), 1, 127))
        notes.append(Note(start * HOP / SR, b * HOP / SR, p, velocity))
    tempo = DEFAULT_TEMPO
    if notes:
        found = np.atleast_1d(librosa.beat.beat_track(onset_envelope=flux, sr=SR,
                                                      hop_length=HOP)[0])
        if found.size and np.isfinite(found[0]) and found[0] > 0:
            tempo = float(found[0])
    return Melody(tuple(_no_overlap(notes)), tempo)


def _segment(pitch, onsets, db):
    """``[(first, stop), ...]`` frame spans of notes in a frame-wise MIDI pitch track (NaN
    where nothing sounds); ``db``: each frame's level (dBFS)."""
    spans, start, away = [], None, 0
    for i, p in enumerate(pitch):
        if np.isnan(p):
            if start is not None:
                spans.append((start, i))
            start, away = None, 0
            continue
        if start is None:
            start, away = i, 0
            continue
        centre = np.median(pitch[start:i])
        if abs(p - centre) > SPLIT_SEMITONES:
            away += 1
            if away >= SPLIT_FRAMES:  # the step began SPLIT_FRAMES - 1 frames ago
                cut = i - SPLIT_FRAMES + 1
                spans.append((start, cut))
                start, away = cut, 0
            continue
        away = 0
        if i in onsets and (i - start) * HOP / SR >= MIN_NOTE_S \
                and db[i:i + REARTICULATION_FRAMES].max() \
                - db[max(start, i - 2 * REARTICULATION_FRAMES):i + 1].min() \
                >= REARTICULATION_DB:  # the same note sung again
            spans.append((start, i))
            start = i
    if start is not None:
        spans.append((start, len(pitch)))
    return spans


def _snap(first, onsets):
    """The note's start frame: pYIN's frames are centred, so a frame half over the note
    already counts as voiced and the voiced start comes up to half a frame (46 ms) early;
    the first onset within ONSET_SNAP_FRAMES after it is taken, else the latest within
    ONSET_SNAP_FRAMES before it, else the voiced start itself."""
    for k in range(first, first + ONSET_SNAP_FRAMES + 1):
        if k in onsets:
            return k
    for k in range(first - 1, first - ONSET_SNAP_FRAMES - 1, -1):
        if k in onsets:
            return max(k, 0)
    return first


def _no_overlap(notes):
    """A start moved onto an onset may reach into the previous note, or past its own end:
    cut or drop them."""
    out = []
    for note in notes:
        if out and out[-1].end > note.start:
            prev = out[-1]
            out[-1] = Note(prev.start, note.start, prev.pitch, prev.velocity)
            if out[-1].end - out[-1].start < MIN_NOTE_S / 2:
                out.pop()
        out.append(note)
    return out
