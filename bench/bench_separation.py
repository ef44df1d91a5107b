"""Separation benchmark: VTrace's DemucsSeparator against the demucs CLI, and memory vs length.

Prints ratios (VTrace / baseline) on one clip, in one run:
  (a) the whole ``main.py`` command (start-up, model load, read, separate, write the stems and
      the three outputs; ``--repair none``: the default repair's cost is bench_postprocess's)
      vs ``python -m demucs --two-stems vocals -n htdemucs --repo M``, on the testbed song
      looped to --seconds (default 180: a 3-minute song).  Goal <= 1.0x.
  (b) the same with ``--other-method minus`` on the htdemucs_ft-shaped bag vs the demucs CLI on
      the same bag.  Goal >= 3.8x faster.
  (d) four short tracks with -t 2 (two processes, 1 torch thread each, two tracks each) vs
      -t 1 (one process, 2 threads, four tracks), with demucs_unittest and the htdemucs-shaped
      model.  Goal: -t 2 never slower (ratio t2/t1 <= 1.0).
  (c) peak RSS per minute of audio for 1, 10 and 60 minute inputs with the htdemucs-shaped model.
      A full 60-minute CPU run takes hours, so by default each run stops after --rss-budget
      seconds of separation and reports how far it got (the whole-file pass that computes the
      normalisation has then read every sample; the stream's buffers do not grow after the first
      segments).  --rss-budget 0 runs to the end.
  (e) --precision bfloat16 vs float32, htdemucs, in one process (model loaded once): speed
      ratio float32/bfloat16 per interleaved pair (median and range) and SDR of the bfloat16
      stems against the float32 stems.  Goal >= 1.35x and >= 40 dB on a CPU with native bf16.
  (f) OpenMP's wait policy: OMP_WAIT_POLICY=PASSIVE (VTrace's default), OpenMP's default and
      a short spin (GOMP_SPINCOUNT), the separation alone, htdemucs with 2 torch threads, on a
      quiet machine and beside a busy neighbour (a process spinning on one core), in rotated
      rounds: each one's speed against PASSIVE (median and range; > 1: faster than PASSIVE).
Models come from bench/make_models.py (random weights: speed is real, the audio is noise).
Usage: python bench/bench_separation.py [--clip F] [--seconds 180] [--repeat 2] [--skip-60]
       [--only whole|bag|precision|omp]
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "bench" / "models"
TESTBED = ROOT.parent / "shared" / "testbed" / "mixes" / "song_one.flac"

WORKER = """
import sys; sys.path.insert(0, {root!r})
from processors.separation import DemucsSeparator
sep = DemucsSeparator({model!r}, model_repo={repo!r}, thread={thread})
for i, clip in enumerate({clips!r}):
    sep.separate_file(clip, {out!r} + str(i))
"""

RSS_CHILD = """
import resource, sys, time; sys.path.insert(0, {root!r})
from processors.separation import DemucsSeparator
class Stop(BaseException): pass
t0, state = time.perf_counter(), {{"done": 0.0}}
def progress(done, total):
    state["done"] = done
    if {budget} and time.perf_counter() - t0 > {budget}:
        raise Stop
try:
    DemucsSeparator("htdemucs", model_repo={repo!r}, progress=progress).separate_file(
        {mix!r}, {out!r})
except Stop:
    pass
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, state["done"],
      time.perf_counter() - t0)
"""


PRECISION_CHILD = """
import random, sys, time; sys.path.insert(0, {root!r})
import numpy as np, soundfile as sf
from processors.separation import DemucsSeparator
seps = {{p: DemucsSeparator("htdemucs", model_repo={repo!r}, precision=p, device="cpu")
        for p in ("float32", "bfloat16")}}
seps["bfloat16"]._model = seps["float32"].model
for sep in seps.values():
    sep.check_options()
    sep.separate_file({warm!r}, {out!r} + "_warm")
for i in range({pairs}):
    times = {{}}
    for p in (("float32", "bfloat16") if i % 2 == 0 else ("bfloat16", "float32")):
        random.seed(0)  # the same shift offsets in both precisions
        t0 = time.perf_counter()
        seps[p].separate_file({clip!r}, {out!r} + p)
        times[p] = time.perf_counter() - t0
    print("pair", times["float32"], times["bfloat16"], flush=True)
for name in ("vocals", "no_vocals"):
    a = sf.read({out!r} + "float32/" + name + ".wav", dtype="float64")[0]
    b = sf.read({out!r} + "bfloat16/" + name + ".wav", dtype="float64")[0]
    print("sdr", name, 10 * np.log10((a ** 2).sum() / ((a - b) ** 2).sum()), flush=True)
"""

SPIN = "10000"  # GOMP_SPINCOUNT tried in (f): a short spin, then sleep

OMP_CHILD = """
import sys, time; sys.path.insert(0, {root!r})
{first}
from processors.separation import DemucsSeparator
sep = DemucsSeparator("htdemucs", model_repo={repo!r}, device="cpu", thread=2)
sep.check_options()
t0 = time.perf_counter()
sep.separate_file({clip!r}, {out!r})
print(time.perf_counter() - t0)
"""


def loop_song(src: Path, dst: Path, seconds: float) -> Path:
    """``src`` repeated to ``seconds`` (a song-length input from a short testbed song)."""
    data, sr = sf.read(src, dtype="float32", always_2d=True)
    n = int(seconds * sr)
    sf.write(dst, np.resize(data.T, (data.shape[1], n)).T, sr, subtype="PCM_16")
    return dst


def spread(ratios) -> str:
    r = sorted(ratios)
    return f"median {np.median(r):.2f}x (range {r[0]:.2f}-{r[-1]:.2f}, {len(r)} pairs)"


def precision_case(clip: Path, warm: Path, tmp: Path, pairs: int):
    code = PRECISION_CHILD.format(root=str(ROOT), repo=str(MODELS), clip=str(clip),
                                  warm=str(warm), out=str(tmp / "prec_"), pairs=pairs)
    lines = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                           text=True).stdout.splitlines()
    pair = [tuple(map(float, line.split()[1:])) for line in lines if line.startswith("pair")]
    sdr = {line.split()[1]: float(line.split()[2]) for line in lines if line.startswith("sdr")}
    f32, b16 = zip(*pair)
    print(f"(e) precision, htdemucs, {sf.info(clip).duration:.0f} s: float32 "
          f"{np.median(f32):.1f} s, bfloat16 {np.median(b16):.1f} s, speed float32/bfloat16 "
          f"{spread([a / b for a, b in pair])}; SDR of bfloat16 stems vs float32 stems: vocals "
          f"{sdr['vocals']:.1f} dB, no_vocals {sdr['no_vocals']:.1f} dB (random weights)",
          flush=True)


def omp_case(clip: Path, tmp: Path, pairs: int):
    """(f): the separation alone under each OpenMP wait setting, quiet and beside a process
    spinning on one core; speed of each against VTrace's default (PASSIVE), per round."""
    variants = {  # name: (environment added, what the child imports before VTrace's module)
        "OpenMP default": ({}, "import torch"),  # torch first: VTrace's module sets nothing
        "PASSIVE": ({}, ""),  # VTrace's default
        f"GOMP_SPINCOUNT={SPIN}": ({"GOMP_SPINCOUNT": SPIN}, "import torch"),
    }

    def one(name):
        extra, first = variants[name]
        env = {k: v for k, v in os.environ.items()
               if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
        code = OMP_CHILD.format(root=str(ROOT), repo=str(MODELS), clip=str(clip),
                                out=str(tmp / "omp"), first=first)
        return float(subprocess.run([sys.executable, "-c", code], check=True,
                                    env={**env, **extra}, capture_output=True,
                                    text=True).stdout.split()[-1])
    for neighbour in (False, True):
        busy = (subprocess.Popen([sys.executable, "-c", "while True: pass"])
                if neighbour else None)
        try:
            times = {name: [] for name in variants}
            for i in range(pairs):
                names = list(variants)
                for name in names[i % len(names):] + names[:i % len(names)]:  # rotate order
                    times[name].append(one(name))
        finally:
            if busy is not None:
                busy.kill()
                busy.wait()
        where = "busy neighbour" if neighbour else "quiet"
        for name in variants:
            print(f"(f) {where}, 2 threads: {name} {np.median(times[name]):.1f} s, speed "
                  f"against PASSIVE (PASSIVE time / its time) "
                  f"{spread([p / t for p, t in zip(times['PASSIVE'], times[name])])}",
                  flush=True)


def timed(cmd) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def compare(name, mine_cmd, theirs_cmd, repeat):
    """Alternate the two commands ``repeat`` times, swapping which goes first; prints the
    ratio of each interleaved pair (median and range) and the best time of each."""
    mine, theirs = [], []
    for i in range(repeat):
        for cmd, times in [(theirs_cmd, theirs), (mine_cmd, mine)][::1 if i % 2 else -1]:
            times.append(timed(cmd))
    print(f"{name}: vtrace best {min(mine):.1f} s, demucs CLI best {min(theirs):.1f} s, "
          f"vtrace/demucs {spread([m / t for m, t in zip(mine, theirs)])} "
          f"(demucs/vtrace {spread([t / m for m, t in zip(mine, theirs)])})", flush=True)


def workers(model, clips, out, jobs, cores):
    """Separate ``clips`` with ``jobs`` processes of ``cores // jobs`` threads; wall seconds."""
    repo = None if model == "demucs_unittest" else str(MODELS)  # shipped with demucs
    t0 = time.perf_counter()
    procs = [subprocess.Popen(
        [sys.executable, "-c", WORKER.format(root=str(ROOT), model=model, repo=repo,
                                             thread=max(1, cores // jobs), clips=clips[j::jobs],
                                             out=f"{out}/{j}_")],
        stdout=subprocess.DEVNULL) for j in range(jobs)]
    if any(p.wait() for p in procs):
        raise RuntimeError("a worker failed")
    return time.perf_counter() - t0


def cli_peak_rss(mix: Path, out: Path, budget: float) -> float:
    """Peak RSS (MiB) of the demucs CLI on ``mix`` after ``budget`` s (or at its end)."""
    proc = subprocess.Popen([sys.executable, "-m", "demucs", "--two-stems", "vocals", "-n",
                             "htdemucs", "--repo", str(MODELS), "-o", str(out), str(mix)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t0, peak = time.perf_counter(), 0.0
    while proc.poll() is None and (not budget or time.perf_counter() - t0 < budget):
        try:
            status = Path(f"/proc/{proc.pid}/status").read_text()
            peak = max(peak, float(status.split("VmHWM:")[1].split()[0]) / 1024)
        except (OSError, IndexError):
            pass
        time.sleep(0.5)
    proc.kill()
    proc.wait()
    return peak


def make_clip(args, work: Path) -> Path:
    clip = work / "clip.wav"
    if args.clip.exists():
        data, sr = sf.read(args.clip, dtype="float32", frames=int(args.seconds * 44100))
    else:
        print(f"{args.clip} missing: using a synthesized clip")
        sr, rng = 44100, np.random.default_rng(0)
        t = np.arange(int(args.seconds * sr)) / sr
        data = (0.3 * np.sin(2 * np.pi * 220 * t)[:, None]
                + 0.05 * rng.standard_normal((t.size, 2))).astype(np.float32)
    sf.write(clip, data, sr, subtype="PCM_24")
    return clip


def long_mix(path: Path, minutes: int):
    """A stereo 16-bit mix of ``minutes`` minutes, written block by block."""
    sr, rng = 44100, np.random.default_rng(1)
    with sf.SoundFile(path, "w", sr, 2, "PCM_16") as f:
        for start in range(0, minutes * 60 * sr, 60 * sr):
            t = (start + np.arange(60 * sr)) / sr
            f.write(0.3 * np.sin(2 * np.pi * 220 * t)[:, None]
                    + 0.05 * rng.standard_normal((t.size, 2)))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clip", type=Path, default=TESTBED)
    parser.add_argument("--seconds", type=float, default=180.0,
                        help="song length for (a) and (b)")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--skip-rss", action="store_true")
    parser.add_argument("--skip-jobs", action="store_true")
    parser.add_argument("--skip-bag", action="store_true", help="skip (b), the slowest part")
    parser.add_argument("--skip-60", action="store_true")
    parser.add_argument("--skip-precision", action="store_true")
    parser.add_argument("--skip-omp", action="store_true")
    parser.add_argument("--only", choices=("whole", "bag", "precision", "omp"),
                        help="run only (a), (b), (e) or (f)")
    parser.add_argument("--precision-seconds", type=float, default=30.0,
                        help="length of the song for (e) (the testbed song looped)")
    parser.add_argument("--pairs", type=int, default=3, help="interleaved pairs for (e), (f)")
    parser.add_argument("--rss-budget", type=float, default=120.0,
                        help="seconds of separation per memory run (0: run to the end)")
    args = parser.parse_args()
    if not (MODELS / "htdemucs_ft.yaml").exists():
        subprocess.run([sys.executable, str(ROOT / "bench" / "make_models.py")], check=True)
    work = ROOT / "bench" / "out"
    work.mkdir(parents=True, exist_ok=True)
    print(f"machine: {subprocess.run(['nproc'], capture_output=True, text=True).stdout.strip()}"
          f" CPU cores, torch CPU; models: random weights from {MODELS}", flush=True)
    if args.only:
        args.skip_jobs = args.skip_rss = True
        args.skip_speed = args.only not in ("whole", "bag")
        args.skip_precision, args.skip_omp = args.only != "precision", args.only != "omp"
    with tempfile.TemporaryDirectory(dir=work) as tmp:
        tmp = Path(tmp)
        if not args.skip_precision:
            song = loop_song(args.clip, tmp / "song.wav", args.precision_seconds)
            warm = loop_song(args.clip, tmp / "warm.wav", 2.0)
            precision_case(song, warm, tmp, args.pairs)
        if not args.skip_omp:
            omp_case(loop_song(args.clip, tmp / "omp.wav", 10.0), tmp, args.pairs)
        if not args.skip_speed:
            clip = (loop_song(args.clip, tmp / "clip.wav", args.seconds) if args.clip.exists()
                    else make_clip(args, tmp))
            source = f"{args.clip.name} looped" if args.clip.exists() else "noise"
            print(f"clip: {args.seconds:g} s of {source}")
            cases = [("(a) htdemucs, add", "htdemucs", "add"),
                     ("(b) htdemucs_ft bag, minus vs CLI", "htdemucs_ft", "minus")]
            cases = (cases[:1] if args.skip_bag or args.only == "whole"
                     else cases[1:] if args.only == "bag" else cases)
            for label, model, method in cases:
                mine = [sys.executable, str(ROOT / "main.py"), str(clip), "--model", model,
                        "--model-repo", str(MODELS), "--other-method", method, "--device",
                        "cpu", "--repair", "none", "--separated-dir", str(tmp / "v"),
                        "--reseparate", "-o", str(tmp / "vo"), "--quiet", "--log-dir",
                        str(tmp / "logs")]
                theirs = [sys.executable, "-m", "demucs", "--two-stems", "vocals", "-n", model,
                          "--repo", str(MODELS), "-o", str(tmp / "d"), str(clip)]
                compare(label, mine, theirs, args.repeat)
        if not args.skip_jobs:
            cores = len(os.sched_getaffinity(0))
            clips = []
            for i in range(4):
                clips.append(str(tmp / f"short{i}.wav"))
                sr, rng = 44100, np.random.default_rng(i)
                sf.write(clips[-1], 0.1 * rng.standard_normal((5 * sr, 2)), sr)
            for model in ("demucs_unittest", "htdemucs"):
                t1, t2 = (min(workers(model, clips, str(tmp / "j"), jobs, cores)
                              for _ in range(args.repeat)) for jobs in (1, 2))
                print(f"(d) 4 x 5 s tracks, {model}: -t 1 {t1:.1f} s, -t 2 {t2:.1f} s, "
                      f"ratio t2/t1 {t2 / t1:.3f}x", flush=True)
        if not args.skip_rss:
            for minutes in [1, 10] + ([] if args.skip_60 else [60]):
                mix = tmp / f"long_{minutes}.wav"
                long_mix(mix, minutes)
                code = RSS_CHILD.format(root=str(ROOT), repo=str(MODELS), mix=str(mix),
                                        out=str(tmp / f"rss{minutes}"), budget=args.rss_budget)
                out = subprocess.run([sys.executable, "-c", code], check=True,
                                     capture_output=True, text=True).stdout.split()
                rss, done, wall = float(out[0]), float(out[1]), float(out[2])
                theirs = cli_peak_rss(mix, tmp / "cli", args.rss_budget)
                mix.unlink()
                print(f"(c) {minutes:>2} min input: peak RSS {rss:.0f} MiB = "
                      f"{rss / minutes:.1f} MiB per minute of audio; separated {done:.0f} of "
                      f"{minutes * 60} s in {wall:.0f} s"
                      + ("" if done >= minutes * 60 - 1 else " (stopped early: --rss-budget)")
                      + f"; demucs CLI peak RSS {theirs:.0f} MiB", flush=True)


if __name__ == "__main__":
    main()
