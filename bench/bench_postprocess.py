"""Post-processing speed and memory against sox, in one run (issue 8, goals P1 and P4).

Baseline: ``sox -m -v a orig.wav -v (1-a) inst.wav out.wav``, which writes ONE blended file.
VTrace: ``python main.py`` on the same original with existing stems, writing all THREE outputs
(blend, residual vocal, phase cancel) plus its manifest, alignment included.

Both are timed as whole commands (process start included), best of --repeat runs, and peak
memory is the child's max RSS. Prints ratios; goals: time ratio <= 1.0, peak RSS <= 300 MiB at
4 and 60 minutes, --help under 0.5 s.

    python bench/bench_postprocess.py [--minutes 4 60] [--repeat 3]
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
SR = 44100
ALPHA = 0.1


def synth(folder, minutes):
    """A song of ``minutes`` written in blocks (16-bit WAVs, as most tools write stems)."""
    orig = folder / "orig.wav"
    stems = folder / "separated" / "bench" / "orig"
    stems.mkdir(parents=True, exist_ok=True)
    n = int(minutes * 60 * SR)
    rng = np.random.default_rng(0)
    block = 60 * SR
    files = [sf.SoundFile(str(p), "w", SR, 2, "PCM_16") for p in
             (orig, stems / "no_vocals.wav", stems / "vocals.wav")]
    for start in range(0, n, block):
        t = (np.arange(start, min(n, start + block)) / SR)[None]
        inst = 0.3 * np.sin(2 * np.pi * 55 * t) + 0.05 * rng.standard_normal((2, t.shape[1]))
        voc = 0.3 * np.sin(2 * np.pi * (330 * t + 2 * np.sin(2 * np.pi * 5 * t)))
        voc = np.repeat(voc, 2, axis=0) * (np.sin(2 * np.pi * 0.2 * t) > 0)
        for f, x in zip(files, (inst + voc, inst, voc)):
            f.write(x.T.astype(np.float32))
    for f in files:
        f.close()
    return orig, folder / "separated"


def timed(cmd, repeat):
    """Best wall time of ``cmd`` over ``repeat`` runs, and its peak RSS in MiB."""
    probe = ("import resource, subprocess, sys, time; t = time.perf_counter(); "
             "r = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL); "
             "dt = time.perf_counter() - t; "
             "print(dt, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, r.returncode)")
    best, rss = float("inf"), 0
    for _ in range(repeat):
        out = subprocess.run([sys.executable, "-c", probe] + cmd, capture_output=True,
                             text=True, check=True).stdout.split()
        if out[2] != "0":
            raise SystemExit(f"command failed: {' '.join(cmd)}")
        best, rss = min(best, float(out[0])), max(rss, int(out[1]))
    return best, rss / 1024


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, nargs="+", default=[4.0, 60.0])
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()
    sox = shutil.which("sox")
    if not sox:
        raise SystemExit("sox not found: install it (Debian/Ubuntu: apt-get install sox)")
    print(f"machine: {os.cpu_count()} CPU(s); python {sys.version.split()[0]}")

    t_help, _ = timed([sys.executable, str(ROOT / "main.py"), "--help"], args.repeat)
    print(f"P4  main.py --help: {t_help:.3f} s (goal < 0.5 s)")

    for minutes in args.minutes:
        with tempfile.TemporaryDirectory(prefix="vtrace-bench-") as tmp:
            tmp = Path(tmp)
            orig, sep = synth(tmp, minutes)
            inst = sep / "bench" / "orig" / "no_vocals.wav"
            repeat = args.repeat if minutes <= 10 else 1
            t_sox, m_sox = timed([sox, "-m", "-v", str(ALPHA), str(orig), "-v", str(1 - ALPHA),
                                  str(inst), str(tmp / "sox_out.wav")], repeat)
            out = tmp / "out"
            vt = [sys.executable, str(ROOT / "main.py"), "-i", str(orig), "--demucs-model",
                  "bench", "--separated-dir", str(sep), "-o", str(out), "--quiet",
                  "--log-dir", str(tmp / "logs"), "-ba", str(ALPHA), "--wav-format", "pcm16"]
            times, mem = [], 0.0
            for _ in range(repeat):
                shutil.rmtree(out, ignore_errors=True)
                t, m = timed(vt, 1)
                times.append(t)
                mem = max(mem, m)
            t_vt = min(times)
            manifest = json.loads((out / "orig" / "orig_vtrace.json").read_text())
            print(f"P1  {minutes:g} min stereo 44.1 kHz: sox (1 output) {t_sox:.2f} s, "
                  f"{m_sox:.0f} MiB | VTrace (3 outputs) {t_vt:.2f} s, {mem:.0f} MiB | "
                  f"time ratio VTrace/sox {t_vt / t_sox:.2f} (goal <= 1.00), "
                  f"peak memory {mem:.0f} MiB (goal <= 300) | stages "
                  f"{manifest['timings']}")


if __name__ == "__main__":
    main()
