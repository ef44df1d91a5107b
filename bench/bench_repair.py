"""Repair benchmark: stand-in separations damaged the ways real models damage stems.

Baseline: the model's own stems (what a user gets from the separator alone). For each damage
kind, made from true stems (the testbed's two songs when ``../shared/testbed`` is there, plus
synthesized songs), it prints uSDR (global SDR, channels pooled, no filter; dB) against the
true stems of the model's stems, of ``--repair none`` (VTrace's arithmetic as before: voice
``O - I``, instrumental ``I``) and of each repair mode, for the vocal and the instrumental,
then the means over kinds and the gain of each mode over the model's stems.

    python bench/bench_repair.py [--songs testbed|synth|all] [--seconds 20]

Each damage is applied to true stems ``V`` (vocals) and ``A`` (accompaniment), mix ``O = V + A``:
a soft ratio mask (as mask-based models give, never exact) and then the damage itself.
No constant of the repair is chosen here: the bench only measures.
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from processors import repair as rp  # noqa: E402

TESTBED = Path(__file__).resolve().parents[2] / "shared" / "testbed"
N, H = 2048, 512


def usdr(ref, est):
    """Global SDR in dB, channels pooled: 10 log10(sum s^2 / sum (s - s')^2)."""
    num = float(np.sum(ref.astype(np.float64) ** 2))
    den = float(np.sum((ref.astype(np.float64) - est) ** 2))
    return 10 * np.log10(max(num, 1e-20) / max(den, 1e-20))


# ---- STFT helpers for making damage (independent of the repair's own) ----------------

def stft(x):
    from scipy.signal import stft as _s
    return _s(x, nperseg=N, noverlap=N - H, boundary="even", padded=True)[2]


def istft(X, n):
    from scipy.signal import istft as _i
    return _i(X, nperseg=N, noverlap=N - H, boundary=True)[1][..., :n].astype(np.float32)


def soft_masks(V, A, power=2.0, blur=0):
    """Ratio masks from the true stems' STFTs (optionally blurred over time: smeared)."""
    pv, pa = np.abs(V) ** power, np.abs(A) ** power
    if blur:
        from scipy.ndimage import uniform_filter1d
        pv = uniform_filter1d(pv, 2 * blur + 1, axis=-1)
        pa = uniform_filter1d(pa, 2 * blur + 1, axis=-1)
    return pv / (pv + pa + 1e-12), pa / (pv + pa + 1e-12)


def noisy(V, A, rng, db=3.0):
    """``V``, ``A`` with independent log-normal errors on their magnitudes (a model's view)."""
    from scipy.ndimage import uniform_filter

    def err(shape):
        g = uniform_filter(rng.standard_normal(shape), size=(1, 3, 3)) * 3.0
        return 10 ** (db * g / 20)
    return V * err(V.shape), A * err(A.shape)


def freqs(sr):
    return np.fft.rfftfreq(N, 1 / sr)[:, None]


def damage(kind, v, a, sr, rng):
    """Model stems ``(Vm, I)`` for one damage kind, from true stems ``v``, ``a``."""
    n = v.shape[1]
    V, A = stft(v), stft(a)
    O = V + A
    f = freqs(sr)
    mv, ma = soft_masks(V, A)
    # an add-model's stems: each estimated on its own from its own (imperfect) estimate of
    # the sources' powers (+-3 dB of independent error per bin, smoothed over 3x3 bins), so
    # neither stem is favoured and they don't quite sum to the mix
    mv_add, _ = soft_masks(*noisy(V, A, rng))
    _, ma_add = soft_masks(*noisy(V, A, rng))
    parts = kind.split("+")
    Mv, Mi = (mv_add, ma_add) if "sum" not in parts else (mv, 1 - mv)
    Mv, Mi = Mv.copy(), Mi.copy()
    for p in parts:
        if p == "lowcut":  # instrumental loses its low end below 150 Hz (-9 dB)
            Mi *= np.where(f < 150, 10 ** (-9 / 20), 1.0)
        elif p in ("band11k", "band16k"):
            cut = 11000 if p == "band11k" else 16000
            Mv *= f < cut
            Mi *= f < cut
        elif p == "tails":  # quiet parts and reverb tails dropped from the vocal
            lv = np.abs(V) ** 2
            from scipy.ndimage import maximum_filter
            peak = maximum_filter(lv, size=(1, 1, 25))
            Mv *= lv > peak * 10 ** (-15 / 10)
        elif p == "smear":  # transients smeared between stems (masks blurred in time)
            bv, ba = soft_masks(V, A, blur=6)
            Mv, Mi = (Mv + bv) / 2, (Mi + ba) / 2
        elif p == "bleedv":  # accompaniment bleeds into the vocal (not taken from the inst)
            Mv = Mv + 0.12 * ma * (f > 200)
        elif p == "bleedi":  # vocal bleeds into the instrumental
            Mi = Mi + 0.12 * mv
        elif p == "sum":
            pass
        else:
            raise ValueError(p)
    if "sum" in parts:  # minus: the instrumental is mix - vocals
        Mi = 1 - Mv
    vm = istft(Mv * O, n)
    im = istft(Mi * O, n)
    return vm, im


KINDS = ["lowcut", "band11k", "band16k", "tails", "smear", "bleedv", "bleedi",
         "sum", "sum+tails", "lowcut+band16k", "tails+bleedv", "lowcut+tails+smear+band11k"]


def synth_song(seed, sr, seconds):
    """A synthesized song: bass, chords, noise drums (accompaniment); a vibrato voice with
    formants, breaths and a reverb tail (vocals). Stereo, mix = vocals + accompaniment."""
    rng = np.random.default_rng(seed)
    n = int(sr * seconds)
    t = np.arange(n) / sr
    beat = 60 / rng.uniform(80, 130)
    acc = np.zeros((2, n))
    # bass
    notes = rng.choice([41.2, 43.65, 49.0, 55.0], size=int(seconds / beat / 2) + 2)
    f0 = notes[(t / (2 * beat)).astype(int)]
    env = np.exp(-((t % (2 * beat)) / 0.6))
    bass = 0.35 * env * np.sin(2 * np.pi * np.cumsum(f0) / sr)
    acc += bass * np.array([[1.0], [0.95]])
    # chords (panned)
    for k, pan in zip(range(3), (0.3, 0.7, 0.5)):
        fk = 220 * 2 ** (rng.integers(0, 12) / 12) * (1 + 0.005 * k)
        tone = sum(np.sin(2 * np.pi * fk * h * t) / h ** 1.5 for h in range(1, 8))
        env = 0.5 + 0.5 * np.sin(2 * np.pi * t / (4 * beat) + k)
        acc += 0.05 * tone * env * np.array([[1 - pan], [pan]])
    # drums: noise bursts (hats bright, snare mid), kick
    noise = rng.standard_normal((2, n))
    hat = np.exp(-((t % (beat / 2)) / 0.03))
    acc += 0.04 * hat * noise
    kick = np.exp(-((t % beat) / 0.08)) * np.sin(2 * np.pi * 55 * (t % beat) * (1 + 2 * np.exp(-(t % beat) / 0.02)))
    acc += 0.4 * kick
    # voice: vibrato sawtooth through formants, phrases with gaps, breath noise, reverb
    f0 = 220 * 2 ** (rng.choice([0, 2, 4, 5, 7, 9], size=n // int(sr * beat) + 2) / 12)
    fv = f0[(t / beat).astype(int)] * (1 + 0.01 * np.sin(2 * np.pi * 5.5 * t))
    saw = ((np.cumsum(fv) / sr) % 1.0) * 2 - 1
    from scipy.signal import lfilter, butter
    voice = np.zeros(n)
    for fc, bw in ((700, 120), (1200, 150), (2600, 250)):
        b, a_ = butter(2, [(fc - bw) / (sr / 2), (fc + bw) / (sr / 2)], btype="band")
        voice += lfilter(b, a_, saw)
    phrase = ((t % (8 * beat)) < 6 * beat).astype(float)
    from scipy.ndimage import uniform_filter1d
    phrase = uniform_filter1d(phrase, int(0.05 * sr))
    b, a_ = butter(2, [4000 / (sr / 2), 12000 / (sr / 2)], btype="band")
    breath = lfilter(b, a_, rng.standard_normal(n)) * 0.3 * (1 - phrase)
    voice = voice * phrase * 0.6 + 0.02 * breath
    ir = rng.standard_normal(int(0.8 * sr)) * np.exp(-np.arange(int(0.8 * sr)) / (0.25 * sr))
    from scipy.signal import fftconvolve
    wet = fftconvolve(voice, ir / np.sqrt(np.sum(ir ** 2)) * 0.3)[:n]
    ir2 = rng.standard_normal(int(0.8 * sr)) * np.exp(-np.arange(int(0.8 * sr)) / (0.25 * sr))
    wet2 = fftconvolve(voice, ir2 / np.sqrt(np.sum(ir2 ** 2)) * 0.3)[:n]
    voc = np.stack([voice + wet, voice + wet2])
    scale = 0.5 / max(np.abs(voc + acc).max(), 1e-9)
    return (voc * scale).astype(np.float32), (acc * scale).astype(np.float32)


def load_songs(which, seconds):
    songs = []
    if which in ("testbed", "all") and TESTBED.is_dir():
        import soundfile as sf
        for d in sorted((TESTBED / "stems").iterdir()):
            v, sr = sf.read(d / "vocals.flac", dtype="float32", always_2d=True)
            a, _ = sf.read(d / "accompaniment.flac", dtype="float32", always_2d=True)
            n = int(seconds * sr)
            songs.append((d.name, sr, v.T[:, :n].copy(), a.T[:, :n].copy()))
    if which in ("synth", "all"):
        for seed in (1, 2):
            v, a = synth_song(seed, 44100, seconds)
            songs.append((f"synth_{seed}", 44100, v, a))
    return songs


def evaluate(songs, kinds, modes):
    """``{song: {kind: {column: (voice uSDR, inst uSDR)}}}``."""
    out = {}
    for name, sr, v, a in songs:
        rng = np.random.default_rng(0)
        per = out.setdefault(name, {})
        for kind in kinds:
            o = (v + a).astype(np.float32)
            vm, im = damage(kind, v, a, sr, rng)
            rows = {"model": (vm, im), "none": (o - im, im)}
            for m in modes:
                i2, v2 = rp.repair(o, im, vm, m, 0, o.shape[1])
                rows[m] = (v2, i2)
            per[kind] = {c: (usdr(v, ve), usdr(a, ie)) for c, (ve, ie) in rows.items()}
    return out


def report(title, results, names, kinds, modes):
    """Print the table of ``results`` averaged over ``names``; returns the mean gains."""
    cols = ["model", "none"] + modes
    print(f"\n## {title}: {', '.join(names)}")
    print("uSDR dB, vocal / instrumental, mean over the songs; gain = mode - model")
    print(f"{'kind':27s}" + "".join(f"{c:>16s}" for c in cols)
          + "".join(f"{'gain ' + m:>16s}" for m in modes))
    gains = {m: [] for m in modes}
    for kind in kinds:
        row = {c: np.mean([results[n][kind][c] for n in names], axis=0) for c in cols}
        line = f"{kind:27s}" + "".join(f"{row[c][0]:7.2f} /{row[c][1]:6.2f} " for c in cols)
        for m in modes:
            g = row[m] - row["model"]
            gains[m].append(g)
            line += f"{g[0]:+7.2f} /{g[1]:+6.2f} "
        print(line)
    summary = {}
    for m in modes:
        g = np.array(gains[m])
        summary[m] = g
        print(f"{m}: mean gain vocal {g[:, 0].mean():+.2f} dB, instrumental "
              f"{g[:, 1].mean():+.2f} dB; worst kind vocal {g[:, 0].min():+.2f}, "
              f"instrumental {g[:, 1].min():+.2f}")
    return summary


def oracle(seconds, modes):
    """The testbed's own stand-in separation (separated/oracle: soft masks that lose ~6 dB of
    the accompaniment below 150 Hz and part of its quiet diffuse content)."""
    folder = TESTBED / "separated" / "oracle"
    if not folder.is_dir():
        return
    import soundfile as sf

    print(f"\n## testbed separated/oracle ({seconds:g} s each): uSDR vocal / instrumental")
    for d in sorted(folder.iterdir()):
        n = int(seconds * 44100)
        load = lambda p: sf.read(p, dtype="float32", always_2d=True)[0].T[:, :n].copy()
        v, a = load(TESTBED / "stems" / d.name / "vocals.flac"), load(
            TESTBED / "stems" / d.name / "accompaniment.flac")
        vm, im = load(d / "vocals.wav"), load(d / "no_vocals.wav")
        o = (v + a).astype(np.float32)
        rows = {"model": (vm, im), "none": (o - im, im)}
        for m in modes:
            i2, v2 = rp.repair(o, im, vm, m, 0, o.shape[1])
            rows[m] = (v2, i2)
        print(f"{d.name:12s}" + "".join(f"  {c} {usdr(v, x):6.2f} /{usdr(a, y):6.2f}"
                                         for c, (x, y) in rows.items()))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--songs", default="all", choices=["testbed", "synth", "all"])
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--kinds", default=",".join(KINDS))
    args = ap.parse_args(argv)
    modes = [m for m in rp.MODES if m != "none"]
    kinds = args.kinds.split(",")
    started = time.perf_counter()
    songs = load_songs(args.songs, args.seconds)
    results = evaluate(songs, kinds, modes)
    names = [s[0] for s in songs]
    report(f"all songs ({args.seconds:g} s each)", results, names, kinds, modes)
    groups = {"testbed": [n for n in names if not n.startswith("synth")],
              "synthesized": [n for n in names if n.startswith("synth")]}
    if all(groups.values()):
        for title, group in groups.items():
            report(f"{title} only", results, group, kinds, modes)
    oracle(args.seconds, modes)
    print(f"\n{time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
