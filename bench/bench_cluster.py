"""Ray actors on one machine (issue 16): 2 actors vs 1 on eight short tracks, and Ray's
overhead per track against the local path.

One Python process, one local Ray instance started once (its start-up is timed apart: a
``--ray local`` run pays it once). Every run is ``main()`` in this process over the same eight
tracks from empty separated/ and output folders, so the actors are created (and the model
loaded) in every run, as in a real one. Runs are interleaved (the order rotates in each round)
so a slow moment of a shared machine falls on every configuration alike. Prints each round's
times and the ratios of the medians.

    python bench/bench_cluster.py [--seconds 5] [--rounds 3]
"""

import argparse
import contextlib
import io
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SR = 44100
N_TRACKS = 8


def make_tracks(root, seconds):
    rng = np.random.default_rng(0)
    songs, stems = root / "songs", root / "stems" / "given"
    for i in range(N_TRACKS):
        vocals = 0.1 * rng.standard_normal((int(seconds * SR), 2)).astype(np.float32)
        inst = 0.1 * rng.standard_normal((int(seconds * SR), 2)).astype(np.float32)
        (stems / f"s{i}").mkdir(parents=True, exist_ok=True)
        songs.mkdir(exist_ok=True)
        sf.write(str(songs / f"s{i}.wav"), vocals + inst, SR, subtype="FLOAT")
        sf.write(str(stems / f"s{i}" / "vocals.wav"), vocals, SR, subtype="FLOAT")
        sf.write(str(stems / f"s{i}" / "no_vocals.wav"), inst, SR, subtype="FLOAT")
    return songs


def run(root, songs, model, extra):
    from main import main

    sep = root / "stems" if model == "given" else root / "sep"
    shutil.rmtree(root / "sep", ignore_errors=True)
    shutil.rmtree(root / "out", ignore_errors=True)
    argv = ["-i", str(songs), "--model", model, "--separated-dir", str(sep),
            "-o", str(root / "out"), "--quiet", "--device", "cpu", "--shifts", "0",
            "--log-dir", str(root / "logs")] + extra
    t = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        rc = main(argv)
    assert rc == 0, (argv, rc)
    return time.perf_counter() - t


def measure(root, songs, model, configs, rounds):
    """Median time per configuration; each round's times are printed. One unmeasured warm-up
    run of each first (imports, caches)."""
    for _, extra in configs:
        run(root, songs, model, extra)
    times = {name: [] for name, _ in configs}
    for r in range(rounds):
        order = configs[r % len(configs):] + configs[:r % len(configs)]
        for name, extra in order:
            times[name].append(run(root, songs, model, extra))
        print(f"  round {r + 1}: " + ", ".join(f"{n} {times[n][-1]:.2f} s" for n, _ in configs),
              flush=True)
    return {n: statistics.median(v) for n, v in times.items()}, times


def per_round(times, a, b):
    return ", ".join(f"{x / y:.2f}" for x, y in zip(times[a], times[b]))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    import ray

    print(f"machine: {os.cpu_count()} CPU(s); {N_TRACKS} tracks of {args.seconds:g} s; "
          f"medians of {args.rounds} interleaved rounds")
    t = time.perf_counter()
    ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False,
             log_to_driver=False, logging_level="WARNING")
    print(f"Ray local start-up (ray.init): {time.perf_counter() - t:.2f} s (once per run)")
    with tempfile.TemporaryDirectory(prefix="vtrace-cluster-") as tmp:
        root = Path(tmp)
        songs = make_tracks(root, args.seconds)
        ray1 = ["--ray", "local", "--ray-workers", "1"]
        print("stems given (no model): Ray's overhead against the local path")
        m, t = measure(root, songs, "given",
                       [("local -t 1", ["-t", "1"]), ("ray 1 actor", ray1)], args.rounds)
        per_track = (m["ray 1 actor"] - m["local -t 1"]) / N_TRACKS
        print(f"  ray 1 actor / local -t 1 = {m['ray 1 actor'] / m['local -t 1']:.2f}; "
              f"overhead {per_track * 1000:+.0f} ms per track (actor start included); "
              f"per round {per_round(t, 'ray 1 actor', 'local -t 1')}")
        print("demucs_unittest separation: 2 actors vs 1")
        cpus = str(max(1, (os.cpu_count() or 1)))
        m, t = measure(root, songs, "demucs_unittest", [
            ("local -t 1", ["-t", "1"]),
            ("ray 1 actor x 1 CPU", ray1),
            ("ray 1 actor x all CPUs", ray1 + ["--ray-cpus-per-worker", cpus]),
            ("ray 2 actors x 1 CPU", ["--ray", "local", "--ray-workers", "2"]),
        ], args.rounds)
        print(f"  2 actors / 1 actor (1 CPU each) = "
              f"{m['ray 2 actors x 1 CPU'] / m['ray 1 actor x 1 CPU']:.2f}; per round "
              f"{per_round(t, 'ray 2 actors x 1 CPU', 'ray 1 actor x 1 CPU')}")
        print(f"  2 actors x 1 CPU / 1 actor x all CPUs = "
              f"{m['ray 2 actors x 1 CPU'] / m['ray 1 actor x all CPUs']:.2f}")
        print(f"  ray 1 actor x all CPUs / local -t 1 = "
              f"{m['ray 1 actor x all CPUs'] / m['local -t 1']:.2f}; overhead "
              f"{(m['ray 1 actor x all CPUs'] - m['local -t 1']) / N_TRACKS * 1000:+.0f} ms "
              "per track")
    ray.shutdown()


if __name__ == "__main__":
    main()
