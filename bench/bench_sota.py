"""Benchmark of the audio-separator backend (RoFormer models; needs the ``sota`` extra).

(a) ``--time``: VTrace (``main.py SONG --model X.ckpt``: separation and its three outputs) against
    the ``audio-separator`` CLI (``-m X.ckpt --use_soundfile``: its stems only) on the same model
    file, song and device (CPU), in interleaved pairs (the order alternates within a pair),
    each a fresh process; prints each pair's ratio VTrace / CLI, the median and the range.
    Baseline: the audio-separator CLI of the same run. Songs: the testbed (20 s, 44.1 kHz).
(b) ``--memory``: peak RSS (the process's ru_maxrss) of a whole VTrace run on the testbed song
    looped to 4 and 60 minutes, with the RoFormer and with Demucs (``demucs_unittest``, the
    model that needs no download; its memory is the streaming's, not a big model's), and of the
    audio-separator CLI on the same files (``--cli-minutes``: which lengths; it holds the
    whole track and its stems in memory).

Models: random weights in the published configurations (bench/make_roformer_models.py);
``--size full`` uses them as published (Mel-Band RoFormer: 913 MB, several seconds of CPU per
second of audio), ``--size tiny`` the one-layer copies (same STFT and chunking). Random weights
run as fast as trained ones. GPU: not measured here (this machine has none).

Usage: python bench/bench_sota.py --time --size tiny --pairs 5
       python bench/bench_sota.py --memory --size tiny --minutes 4 60 --cli-minutes 4
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
TESTBED = Path(os.environ.get("VTRACE_TESTBED", ROOT.parent / "shared" / "testbed"))
MEL = "vocals_mel_band_roformer"
sys.path.insert(0, str(ROOT))


def models(folder, size):
    """The model folder (built once) and the Mel-Band RoFormer's file name in it."""
    from bench.make_roformer_models import file_name, write_download_checks, write_model

    shrunk = size == "tiny"
    ckpt = Path(folder) / f"{file_name(MEL, shrunk)}.ckpt"
    if not ckpt.exists():
        write_model(folder, MEL, shrunk=shrunk)
    write_download_checks(folder)  # the CLI finds local models only when listed
    return ckpt.name


def run(cmd, cwd, env=None):
    """Wall seconds and peak RSS (MiB) of one process."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    err = proc.stderr.read().decode(errors="replace")
    proc.stderr.close()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{cmd[1] if len(cmd) > 1 else cmd[0]} failed ({proc.returncode}):\n"
                         f"{err[-2000:]}")
    return wall, usage.ru_maxrss / 1024


def vtrace_cmd(song, model, repo, work):
    """VTrace separating again and writing its outputs (``repo`` None: a Demucs model)."""
    return [sys.executable, str(ROOT / "main.py"), str(song), "--model", model,
            *(["--model-repo", str(repo)] if repo else []), "--device", "cpu",
            "--separated-dir", str(work / "sep"), "-o", str(work / "out"), "--reseparate",
            "--force", "--quiet", "--log-dir", str(work / "logs")]


def cli_cmd(song, model, repo, work):
    exe = Path(sys.executable).with_name("audio-separator")
    return [str(exe), str(song), "-m", model, "--model_file_dir", str(repo), "--output_dir",
            str(work / "as"), "--use_soundfile", "--log_level", "warning"]


def cli_env(args):
    """The CLI's environment: with ``--cli-passive`` (the default) OpenMP's idle threads sleep
    as VTrace makes them (processors/separation.py), so the ratio is VTrace's own cost and not
    spinning threads on a shared machine; ``--no-cli-passive`` times the CLI as installed."""
    env = dict(os.environ)
    if args.cli_passive:
        env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return env


def bench_time(args, repo, model, work):
    songs = sorted((TESTBED / "mixes").glob("*.flac"))
    if not songs:
        raise SystemExit(f"no testbed songs in {TESTBED}/mixes")
    ratios = []
    for i in range(args.pairs):
        song = songs[i % len(songs)]
        order = ("vtrace", "cli") if i % 2 == 0 else ("cli", "vtrace")
        t = {}
        for who in order:
            cmd = (vtrace_cmd if who == "vtrace" else cli_cmd)(song, model, repo, work)
            t[who] = run(cmd, work, None if who == "vtrace" else cli_env(args))[0]
        ratios.append(t["vtrace"] / t["cli"])
        print(f"pair {i + 1} ({song.stem}, {order[0]} first): VTrace {t['vtrace']:.1f} s, "
              f"audio-separator CLI {t['cli']:.1f} s, ratio {ratios[-1]:.3f}x", flush=True)
    print(f"VTrace / audio-separator CLI ({args.size} {MEL}, CPU, CLI OMP_WAIT_POLICY="
          f"{'PASSIVE' if args.cli_passive else 'as set'}, {len(ratios)} pairs): median "
          f"{statistics.median(ratios):.3f}x, range {min(ratios):.3f}x-{max(ratios):.3f}x")


def looped(minutes, work):
    """The first testbed song looped to ``minutes`` (16-bit WAV, made once)."""
    path = work / f"loop_{minutes}min.wav"
    if not path.exists():
        song = sorted((TESTBED / "mixes").glob("*.flac"))[0]
        x, sr = sf.read(str(song), dtype="float32")
        n = int(minutes * 60 * sr)
        with sf.SoundFile(str(path), "w", sr, x.shape[1], subtype="PCM_16") as f:
            done = 0
            while done < n:
                block = x[:n - done]
                f.write(block)
                done += len(block)
    return path


def bench_memory(args, repo, model, work):
    for minutes in sorted(set(args.minutes) | set(args.cli_minutes)):
        song = looped(minutes, work)
        rows = []
        if minutes in args.minutes:
            rows += [("VTrace, RoFormer", vtrace_cmd(song, model, repo, work)),
                     ("VTrace, Demucs (demucs_unittest)",
                      vtrace_cmd(song, "demucs_unittest", None, work))]
        if minutes in args.cli_minutes:
            rows.append(("audio-separator CLI, RoFormer", cli_cmd(song, model, repo, work)))
        for label, cmd in rows:
            wall, rss = run(cmd, work, cli_env(args))
            print(f"{minutes:g} min: {label}: peak RSS {rss:.0f} MiB, {wall:.0f} s", flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--time", action="store_true")
    p.add_argument("--memory", action="store_true")
    p.add_argument("--size", choices=("tiny", "full"), default="tiny")
    p.add_argument("--pairs", type=int, default=5)
    p.add_argument("--minutes", type=float, nargs="+", default=[4, 60])
    p.add_argument("--cli-minutes", type=float, nargs="*", default=[4])
    p.add_argument("--cli-passive", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--models", type=Path, default=Path(__file__).parent / "models" / "roformer")
    args = p.parse_args()
    model = models(args.models, args.size)
    with tempfile.TemporaryDirectory(prefix="bench_sota_") as tmp:
        work = Path(tmp)
        if args.time:
            bench_time(args, args.models, model, work)
        if args.memory:
            bench_memory(args, args.models, model, work)


if __name__ == "__main__":
    main()
