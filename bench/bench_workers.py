"""Worker processes end to end (issue 8, goal P5): ``main.py -t 2`` vs ``-t 1`` on four short
tracks, separation included, for ``demucs_unittest`` and the htdemucs-shaped random model.

Each run starts from an empty separated/ folder, so every track is separated. Prints the
ratio t2/t1 per model; goal <= 1.0 (-t 2 never slower).

    python bench/make_models.py            # once: bench/models/ (random weights)
    python bench/bench_workers.py [--seconds 5] [--repeat 2]
"""

import argparse
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


def run(songs, tmp, model, repo, workers):
    sep, out = tmp / "sep", tmp / "out"
    shutil.rmtree(sep, ignore_errors=True)
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, str(ROOT / "main.py"), "-i", str(songs), "--model", model,
           "--separated-dir", str(sep), "-o", str(out), "--quiet", "--device", "cpu",
           "--log-dir", str(tmp / "logs"), "-t", str(workers)]
    if repo:
        cmd += ["--model-repo", str(repo)]
    t = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--skip-htdemucs", action="store_true")
    args = p.parse_args()
    print(f"machine: {os.cpu_count()} CPU(s)")
    models = [("demucs_unittest", None)]
    repo = ROOT / "bench" / "models"
    if args.skip_htdemucs:
        pass
    elif (repo / "htdemucs.yaml").exists() or (repo / "htdemucs.th").exists():
        models.append(("htdemucs", repo))
    else:
        print("bench/models missing: run python bench/make_models.py for the htdemucs case")
    with tempfile.TemporaryDirectory(prefix="vtrace-workers-") as tmp:
        tmp = Path(tmp)
        rng = np.random.default_rng(0)
        (tmp / "songs").mkdir()
        for i in range(4):
            x = 0.1 * rng.standard_normal((int(args.seconds * SR), 2)).astype(np.float32)
            sf.write(str(tmp / "songs" / f"s{i}.wav"), x, SR)
        for model, model_repo in models:
            best = {}
            for _ in range(args.repeat):
                for workers in (1, 2):
                    t = run(tmp / "songs", tmp, model, model_repo, workers)
                    best[workers] = min(best.get(workers, t), t)
            print(f"P5  4 x {args.seconds:g} s tracks, {model}: -t 1 {best[1]:.2f} s, "
                  f"-t 2 {best[2]:.2f} s, ratio t2/t1 {best[2] / best[1]:.2f} (goal <= 1.00)")


if __name__ == "__main__":
    main()
