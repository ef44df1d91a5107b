"""Time the web page's re-blend of a 4-minute song against its first run (goal: under 1 s).

Run from the repository root: ``python bench/bench_web_reblend.py [--seconds 240]
[--repeat 5] [--model demucs_unittest]``. A synthesized 44.1 kHz stereo song (16-bit WAV) and
its stems (float32, with VTrace's record, as a CLI run leaves them) go through the page's
``Runner`` exactly as a request from the page would (default page settings: the spectrogram
picture on, evaluation off). Prints the first run's time (stems already separated: alignment,
the three outputs, the picture, the manifest, the kept stems and the zips; with ``--model``,
separating first with that model instead), then the best and worst of ``--repeat`` re-blends
at other vocal levels (``B = I + w*(O - I)`` from the kept stems, gain, one WAV written), and
the ratio re-blend / first run. ``--page`` repeats it through the served page.
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from config_loader import Config  # noqa: E402
from utils.inputs import content_hash, file_identity  # noqa: E402
from utils.layout import write_stems_record  # noqa: E402
from web import jobs  # noqa: E402

GOAL_S = 1.0
SR = 44100


def synth(folder, seconds, model):
    rng = np.random.default_rng(0)
    n = int(seconds * SR)
    t = np.arange(n) / SR
    gate = (np.sin(2 * np.pi * 0.7 * t) > -0.2).astype(np.float32)
    voice = sum(np.sin(k * 2 * np.pi * 220 * t) / k for k in range(1, 5)) * gate
    vocals = (0.2 * np.stack([voice, 0.9 * voice])).astype(np.float32)
    inst = (0.1 * rng.standard_normal((2, n))).astype(np.float32)
    inst += (0.3 * np.sin(2 * np.pi * 55 * t)).astype(np.float32)
    mix = folder / "songs" / "song.wav"
    mix.parent.mkdir(parents=True)
    sf.write(mix, (vocals + inst).T, SR, subtype="PCM_16")
    stems = folder / "library" / model / "song"
    stems.mkdir(parents=True)
    sf.write(stems / "vocals.wav", vocals.T, SR, subtype="FLOAT")
    sf.write(stems / "no_vocals.wav", inst.T, SR, subtype="FLOAT")
    write_stems_record(stems, {
        "mix_sha256": content_hash(mix), "mix": str(mix), "model": model,
        "settings": Config(model=model).settings("stems"),
        "stems": {"vocals": file_identity(stems / "vocals.wav"),
                  "no_vocals": file_identity(stems / "no_vocals.wav")}})
    return mix, folder / "library"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=240.0)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--page", action="store_true",
                        help="also through the served page: gradio_client against the app on "
                             "a local port (upload, process, then re-blends: each includes "
                             "Gradio's copy into its cache and the client's download)")
    parser.add_argument("--model", default=None,
                        help="separate with this Demucs model in the first run (default: "
                             "reuse pre-made stems)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        mix, library = synth(tmp, args.seconds, "premade")
        model = args.model or "premade"
        store = jobs.Store(tmp / "sessions", 3600)
        runner = jobs.Runner(Config(separated_dir=str(library), device="cpu"), store)
        session = store.get("bench")
        t = time.perf_counter()
        out = runner.run(session, [str(mix)], "", {"model": model})
        first = time.perf_counter() - t
        result = out.results[0]
        assert result.status == "ok", result.reason
        song = out.songs[0]
        times = []
        for i in range(args.repeat):
            db = -6.0 - 3 * i
            t = time.perf_counter()
            jobs.reblend(song, db)
            times.append(time.perf_counter() - t)
        best, worst = min(times), max(times)
        print(f"song: {args.seconds:.0f} s, 44.1 kHz stereo; first run "
              f"({'separated with ' + model if args.model else 'pre-made stems'}): "
              f"{first:.2f} s")
        print(f"re-blend: best {best:.3f} s, worst {worst:.3f} s of {args.repeat} "
              f"(goal {GOAL_S:.1f} s: {'met' if worst < GOAL_S else 'NOT met'})")
        print(f"ratio re-blend / first run: {best / first:.3f} (best), {worst / first:.3f} "
              "(worst)")
        store.close()
        if args.page:
            page(mix, library, model, args.repeat)


def page(mix, library, model, repeat):
    import socket

    from gradio_client import Client, handle_file

    from web.app import serve

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    demo = serve(Config(separated_dir=str(library), device="cpu"), port=port, block=False)
    try:
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        t = time.perf_counter()
        out = client.predict([handle_file(str(mix))], "", model=model,
                             api_name="/process")
        first = time.perf_counter() - t
        song_id = out[1]["data"][0][5]
        times = []
        for i in range(repeat):
            t = time.perf_counter()
            client.predict(song_id, -6.0 - 3 * i, api_name="/reblend")
            times.append(time.perf_counter() - t)
        print(f"through the page (gradio_client, upload included in the first run): first run "
              f"{first:.2f} s; re-blend best {min(times):.3f} s, worst {max(times):.3f} s; "
              f"ratio {min(times) / first:.3f} (best), {max(times) / first:.3f} (worst)")
    finally:
        demo.vtrace_stop.set()
        demo.close()
        demo.vtrace_store.close()


if __name__ == "__main__":
    main()
