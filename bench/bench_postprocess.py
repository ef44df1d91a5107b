"""Post-processing speed and memory against sox, in one run (issue 8, goals P1 and P4).

Baseline: ``sox -m -v a orig.wav -v (1-a) inst.wav out.wav``, which writes ONE blended file.
VTrace: ``python main.py`` on the same original with existing stems, writing all THREE outputs
(blend, residual vocal, phase cancel) plus its manifest, alignment included for stems
another tool made.

Material: realistic songs, the testbed's (../shared/testbed: rendered instruments and voice,
a 24-bit FLAC mix, the oracle stems) looped to --minutes, with the stems as 16-bit and as
float32 WAVs (--stems); without the testbed, synthetic sines (which flatter VTrace: they
compress and decode differently from music).

Stems come two ways (--provenance): with VTrace's record binding them to the mix (a re-blend
of a song VTrace separated: used as they are) and as another tool's (VTrace first checks they
rebuild the mix and aligns them: three 10 s windows decoded and cross-correlated).

Both are timed as whole commands (process start included), after one untimed run each (page
cache and Python's bytecode cache warm, as for a user's second song), interleaved --repeat
times; the ratio VTrace/sox is taken per pair and its median and range printed.  Peak memory is the
child's max RSS. Goals: time ratio <= 1.0, peak RSS <= 300 MiB at 4 and 60 minutes, --help
under 0.5 s.

    python bench/bench_postprocess.py [--minutes 4 60] [--repeat 5] [--stems pcm16 float32]
                                      [--provenance recorded other] [--repair none project]
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
TESTBED = ROOT.parent / "shared" / "testbed"
SUBTYPES = {"pcm16": "PCM_16", "float32": "FLOAT"}


def looped(folder, minutes, song="song_one", stems_subtype="PCM_16"):
    """The testbed song (its FLAC mix and oracle stems) repeated to ``minutes``, block by block:
    mix as 24-bit FLAC like the testbed's, stems as ``stems_subtype`` WAVs."""
    orig = folder / "orig.flac"
    stems = folder / "separated" / "bench" / "orig"
    stems.mkdir(parents=True, exist_ok=True)
    sources = [TESTBED / "mixes" / f"{song}.flac",
               TESTBED / "separated" / "oracle" / song / "no_vocals.wav",
               TESTBED / "separated" / "oracle" / song / "vocals.wav"]
    targets = [(orig, "PCM_24"), (stems / "no_vocals.wav", stems_subtype),
               (stems / "vocals.wav", stems_subtype)]
    n = int(minutes * 60 * SR)
    for src, (dst, subtype) in zip(sources, targets):
        data, sr = sf.read(src, dtype="float32", always_2d=True)
        with sf.SoundFile(str(dst), "w", sr, data.shape[1], subtype) as f:
            for start in range(0, n, len(data)):
                f.write(data[:min(len(data), n - start)])
    return orig, folder / "separated"


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


def record(orig, folder, argv):
    """VTrace's stems record for ``folder``'s stems, as VTrace writes it after separating
    ``orig`` with the settings ``argv`` gives (made with VTrace's own functions, so a run finds
    the stems bound to this mix and uses them as they are)."""
    sys.path.insert(0, str(ROOT))
    from config_loader import load_config
    from processors.track import stems_identity
    from utils.inputs import content_hash
    from utils.layout import write_stems_record

    cfg = load_config(argv)[0]
    write_stems_record(folder, {
        "mix_sha256": content_hash(orig), "mix": str(Path(orig).resolve()), "model": cfg.model,
        "settings": cfg.settings("stems"),
        "stems": stems_identity({p.stem: p for p in sorted(folder.glob("*.wav"))})})


def timed(cmd, repeat, env=None):
    """Best wall time of ``cmd`` over ``repeat`` runs, and its peak RSS in MiB (max)."""
    probe = ("import resource, subprocess, sys, time; t = time.perf_counter(); "
             "r = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL); "
             "dt = time.perf_counter() - t; "
             "print(dt, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, r.returncode)")
    best, rss = float("inf"), 0
    for _ in range(repeat):
        out = subprocess.run([sys.executable, "-c", probe] + cmd, capture_output=True,
                             text=True, check=True, env=env).stdout.split()
        if out[2] != "0":
            raise SystemExit(f"command failed: {' '.join(cmd)}")
        best, rss = min(best, float(out[0])), max(rss, int(out[1]))
    return best, rss / 1024


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, nargs="+", default=[4.0, 60.0])
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--stems", nargs="+", choices=tuple(SUBTYPES), default=["pcm16", "float32"])
    p.add_argument("--provenance", nargs="+", choices=("recorded", "other"),
                   default=["recorded", "other"],
                   help="recorded: stems with VTrace's record binding them to the mix (a "
                        "re-blend of a song VTrace separated: used as they are); other: "
                        "another tool's stems (VTrace checks they rebuild the mix and aligns "
                        "them first)")
    p.add_argument("--repair", nargs="+", choices=("none", "wiener", "project"),
                   default=["none", "project"],
                   help="VTrace's --repair for each measurement: none is the work sox's line "
                        "does (the goal's comparison); project is the default, an STFT repair "
                        "sox has no counterpart for (its cost is printed against the same sox)")
    args = p.parse_args()
    sox = shutil.which("sox")
    if not sox:
        raise SystemExit("sox not found: install it (Debian/Ubuntu: apt-get install sox)")
    print(f"machine: {os.cpu_count()} CPU(s); python {sys.version.split()[0]}")

    t_help, _ = timed([sys.executable, str(ROOT / "main.py"), "--help"], args.repeat)
    print(f"P4  main.py --help: {t_help:.3f} s (goal < 0.5 s)")

    realistic = (TESTBED / "mixes" / "song_one.flac").is_file()
    print("material: " + ("testbed song_one looped (24-bit FLAC mix, oracle stems)" if realistic
                          else "synthetic sines (no ../shared/testbed)"))
    for minutes, stems_format, provenance, repair in [
            (m, f, pv, r) for m in args.minutes for f in (args.stems if realistic else ["pcm16"])
            for pv in args.provenance for r in args.repair]:
        with tempfile.TemporaryDirectory(prefix="vtrace-bench-") as tmp:
            tmp = Path(tmp)
            orig, sep = (looped(tmp, minutes, stems_subtype=SUBTYPES[stems_format])
                         if realistic else synth(tmp, minutes))
            inst = sep / "bench" / "orig" / "no_vocals.wav"
            repeat = args.repeat if minutes <= 10 else 1
            sox_cmd = [sox, "-m", "-v", str(ALPHA), str(orig), "-v", str(1 - ALPHA),
                       str(inst), str(tmp / "sox_out.wav")]
            out = tmp / "out"
            vt = [sys.executable, str(ROOT / "main.py"), "-i", str(orig), "--model",
                  "bench", "--separated-dir", str(sep), "-o", str(out), "--quiet",
                  "--log-dir", str(tmp / "logs"), "-ba", str(ALPHA), "--wav-format",
                  "pcm16", "--repair", repair]
            if provenance == "recorded":
                record(orig, sep / "bench" / "orig", vt[2:])
            # untimed: the page cache and Python's bytecode cache warm, as on a user's second
            # song (this machine sets PYTHONDONTWRITEBYTECODE; a user's Python writes them)
            env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
            subprocess.run(vt, stdout=subprocess.DEVNULL, env=env, check=True)
            subprocess.run(sox_cmd, check=True)
            ratios, t_sox, t_vt, m_sox, mem = [], [], [], 0.0, 0.0
            for i in range(repeat):
                pair = {}
                for name in (("sox", "vt") if i % 2 == 0 else ("vt", "sox")):
                    shutil.rmtree(out, ignore_errors=True)
                    pair[name] = timed(sox_cmd if name == "sox" else vt, 1, env)
                t_sox.append(pair["sox"][0])
                t_vt.append(pair["vt"][0])
                m_sox, mem = max(m_sox, pair["sox"][1]), max(mem, pair["vt"][1])
                ratios.append(t_vt[-1] / t_sox[-1])
            manifest = json.loads(next(out.rglob("orig_vtrace.json")).read_text())
            bound = manifest["stems"]["bound_to_mix"]
            if bound != {"recorded": "record", "other": "check"}[provenance]:
                raise SystemExit(f"stems bound to the mix by {bound!r}, not as {provenance}")
            r = sorted(ratios)
            goal = "goal <= 1.00" if repair == "none" else "no goal: the repair's cost"
            print(f"P1  {minutes:g} min, stems {stems_format} ({provenance}), --repair "
                  f"{repair}: sox (1 "
                  f"output) {np.median(t_sox):.2f} s, {m_sox:.0f} MiB | VTrace (3 outputs) "
                  f"{np.median(t_vt):.2f} s, {mem:.0f} MiB | time ratio VTrace/sox median "
                  f"{np.median(r):.2f} (range {r[0]:.2f}-{r[-1]:.2f}, {len(r)} pairs; {goal}), "
                  f"peak memory {mem:.0f} MiB (goal <= 300) | stages {manifest['timings']}",
                  flush=True)


if __name__ == "__main__":
    main()
