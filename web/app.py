"""The Gradio page and its API (``process``, ``reblend``), served by ``python main.py --web``.

The page only collects settings and shows results; ``web.jobs`` builds the Config and runs
every song through the engine. Gradio is imported only here, only when the page is served.
"""

import atexit
import logging
import os
import sys
import tempfile
import threading
from pathlib import Path

from config_loader import BLEND_MODES, DEVICES, PRESETS
from utils.errors import UsageError, VTraceError
from web import jobs

log = logging.getLogger(__name__)

MODELS = ("htdemucs_ft", "htdemucs", "htdemucs_6s", "hdemucs_mmi", "mdx_extra", "mdx_extra_q",
          "demucs_unittest")
ROOT = Path(__file__).resolve().parents[1]

INTRO = """# VTrace
Upload songs or paste links, choose how loud the vocal should stay, and press **Separate and
blend**. Demucs separates each song once; VTrace blends the original back in so the
instrumental keeps the bass, reverb and space the model lost. Afterwards you can change the
vocal level and hear the new blend at once, without separating again. Files are kept for this
browser session only."""

PRESET_HELP = ("guide-vocal: karaoke with a faint guide vocal (-24 dB); vocal-down: vocal -6 dB, "
               "as loud as the original; acapella: clean residual vocal. A preset sets what it "
               "names over the other settings.")


def serve(cfg, host=None, port=None, share=False, upload_mb=None, session_minutes=None,
          block=True):
    """Serve the page; prints its URL. Returns the running Blocks when ``block`` is False
    (tests), else runs until Ctrl-C and returns 0. Session files are deleted on shutdown."""
    jobs.require_web()
    host = host or jobs.DEFAULT_HOST
    port = jobs.DEFAULT_PORT if port is None else int(port)
    upload_mb = jobs.DEFAULT_UPLOAD_MB if upload_mb is None else float(upload_mb)
    minutes = jobs.DEFAULT_SESSION_MINUTES if session_minutes is None else float(session_minutes)
    if not 0 < port < 65536:
        raise UsageError(f"--port {port}: use a port number from 1 to 65535")
    if not upload_mb > 0:
        raise UsageError(f"--web-upload-mb {upload_mb:g}: use a size in MB above 0")
    if not minutes > 0:
        raise UsageError(f"--web-session-minutes {minutes:g}: use a number of minutes above 0")
    root = Path(tempfile.mkdtemp(prefix="vtrace-web-"))
    # Gradio's cache (uploads, files shown on the page) is this root, so it goes with it;
    # the sessions live inside it, so the page shows their files where they are, without
    # Gradio hashing and copying each one (a 4-minute WAV: about a second of a re-blend).
    os.environ["GRADIO_TEMP_DIR"] = str(root / "cache")
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    store = jobs.Store(root / "cache" / "sessions", minutes * 60)
    atexit.register(store.close)
    atexit.register(lambda: __import__("shutil").rmtree(root, ignore_errors=True))
    runner = jobs.Runner(cfg, store, upload_mb)
    demo = build(cfg, store, runner, upload_mb)
    if host in ("0.0.0.0", "::"):
        print(f"vtrace: warning: --host {host} serves the page on every network interface: "
              "anyone who can reach this machine can use it and its files", file=sys.stderr)
    stop = threading.Event()
    _janitor(store, stop, min(60.0, minutes * 30))
    url_host = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    demo.queue(default_concurrency_limit=2)
    try:
        demo.launch(server_name=host, server_port=port, share=bool(share), inbrowser=False,
                    prevent_thread_lock=True, quiet=True, show_error=True,
                    max_file_size=int(upload_mb * 1e6), allowed_paths=[],
                    blocked_paths=_blocked(root), footer_links=["api"],
                    enable_monitoring=False, ssr_mode=False, mcp_server=False)
    except OSError as exc:
        stop.set()
        store.close()
        raise UsageError(f"--host {host} --port {port}: cannot listen there ("
                         f"{' '.join(str(exc).split())[:160]}); choose another --port") from None
    from logger import setup_logging

    log_path = setup_logging(cfg.log_level, cfg.quiet, cfg.log_dir, cfg.log_keep)
    log.info("web page on %s:%d, sessions in %s (deleted after %g minutes idle), uploads up "
             "to %g MB%s", host, port, root, minutes, upload_mb,
             f", log {log_path}" if log_path else "")
    demo.vtrace_store = store
    demo.vtrace_stop = stop
    print(f"VTrace web page: http://{url_host}:{port}/", flush=True)
    if share and getattr(demo, "share_url", None):
        print(f"public share link: {demo.share_url}", flush=True)
    if not block:
        return demo
    def _terminate(signum, frame):  # kill / systemd stop: the same clean shutdown as Ctrl-C
        raise KeyboardInterrupt

    import signal

    signal.signal(signal.SIGTERM, _terminate)
    try:
        demo.block_thread()
    except KeyboardInterrupt:
        pass
    finally:
        stop.set()
        demo.close()
        store.close()
        import shutil

        shutil.rmtree(root, ignore_errors=True)
    return 0


def _blocked(root):
    """The project folder and the working directory, unless the session root is inside one
    (a service started in /): Gradio serves nothing from a blocked path."""
    blocked = []
    for folder in (ROOT, Path.cwd()):
        try:
            root.resolve().relative_to(folder.resolve())
        except ValueError:
            blocked.append(str(folder))
    return blocked


def _janitor(store, stop, every):
    def loop():
        while not stop.wait(every):
            removed = store.sweep()
            if removed:
                log.info("deleted %d idle session(s)", removed)

    threading.Thread(target=loop, name="vtrace-web-janitor", daemon=True).start()


def build(cfg, store, runner, upload_mb):
    """The page: inputs and settings on the left, results on the right."""
    import gradio as gr

    d = jobs.form_defaults(cfg)
    models = list(dict.fromkeys([cfg.model, *MODELS]))
    accepted = [f"{e}" for e in jobs.ACCEPTED]
    age = int(store.max_age_s)
    with gr.Blocks(title="VTrace", delete_cache=(max(60, min(age, 3600)), age)) as demo:
        gr.Markdown(INTRO)
        with gr.Row():
            with gr.Column(scale=1):
                files = gr.File(label=f"Songs (audio files, up to {upload_mb:g} MB each)",
                                file_count="multiple", file_types=accepted, type="filepath",
                                elem_id="songs")
                links = gr.Textbox(label="Links (one per line)", lines=2,
                                   placeholder="https://www.youtube.com/watch?v=...",
                                   info="Downloaded with yt-dlp, with the same limits as -l")
                vocal_db = gr.Slider(jobs.SLIDER_MIN_DB, 0, value=d["vocal_db"], step=0.5,
                                     label="Vocal level (dB)",
                                     info="How loud the vocal stays in the blend: 0 = as in the "
                                          "original, -20 = faint, -60 = almost gone")
                voice_alpha = gr.Slider(0, 1, value=d["voice_alpha"], step=0.05,
                                        label="Voice alpha",
                                        info="Vocal output: 1 = the residual (original minus "
                                             "the model's instrumental, with its space), 0 = "
                                             "the model's dry vocal")
                preset = gr.Dropdown(["none", *PRESETS], value=d["preset"], label="Preset",
                                     info=PRESET_HELP)
                with gr.Row():
                    model = gr.Dropdown(models, value=d["model"], label="Model",
                                        allow_custom_value=True,
                                        info="Demucs model (htdemucs_ft: best, slowest)")
                    device = gr.Dropdown(list(DEVICES), value=d["device"], label="Device",
                                         info="auto: GPU when there is one")
                with gr.Row():
                    mp3 = gr.Checkbox(value=d["convert_to_mp3"], label="MP3 copies",
                                      info="also write 320 kbps MP3s")
                    evaluate = gr.Checkbox(value=d["eval"], label="Evaluation",
                                           info="MSE, cosine, STOI table")
                    plot = gr.Checkbox(value=d["plot"], label="Spectrogram picture",
                                       info="one picture per song")
                with gr.Accordion("Residual cleanup", open=False):
                    hpf = gr.Number(value=d["residual_hpf"], label="High-pass (Hz, 0 = off)",
                                    info="80-150 Hz sends bass bleed back to the instrumental")
                    lpf = gr.Number(value=d["residual_lpf"], label="Low-pass (Hz, 0 = off)")
                    gate = gr.Number(value=d["gate_threshold_db"],
                                     label="Noise gate threshold (dBFS, 0 = off)",
                                     info="gates bleed between vocal phrases, e.g. -50")
                with gr.Accordion("Advanced: blend alpha and mode", open=False):
                    use_alpha = gr.Checkbox(value=d["use_alpha"],
                                            label="Set the blend by alpha instead of dB")
                    alpha = gr.Slider(0, 1, value=d["blend_alpha"], step=0.01,
                                      label="Blend alpha", info="how much of the original to "
                                                               "blend back (through the mode)")
                    mode = gr.Dropdown(list(BLEND_MODES), value=d["blend_mode"],
                                       label="Blend mode", info="alpha to weight curve; gate "
                                       "keeps vocal-free passages exactly the original")
                    gamma = gr.Number(value=d["gamma"], label="Gamma (power mode)")
                run = gr.Button("Separate and blend", variant="primary", elem_id="run")
            with gr.Column(scale=1):
                message = gr.Markdown(label="message", elem_id="message")
                summary = gr.Dataframe(headers=jobs.SUMMARY_HEADERS, label="Songs",
                                       interactive=False, wrap=True, elem_id="summary")
                song = gr.Dropdown([], label="Song", info="choose a finished song to hear it",
                                   allow_custom_value=True, elem_id="song")
                with gr.Row():
                    original = gr.Audio(type="filepath", label="Original", interactive=False,
                                        elem_id="original")
                    blend = gr.Audio(type="filepath", label="Blend", interactive=False,
                                     elem_id="blend")
                with gr.Row():
                    vocal = gr.Audio(type="filepath", label="Vocal", interactive=False,
                                     elem_id="vocal")
                    instrumental = gr.Audio(type="filepath", label="Instrumental",
                                            interactive=False, elem_id="instrumental")
                with gr.Row():
                    new_db = gr.Slider(jobs.SLIDER_MIN_DB, 0, value=d["vocal_db"], step=0.5,
                                       label="New vocal level (dB)", scale=3,
                                       info="re-blend from the kept stems: no new separation")
                    again = gr.Button("Re-blend", scale=1, elem_id="reblend")
                spectrogram = gr.Image(type="filepath", label="Spectrograms", interactive=False,
                                       elem_id="spectrogram")
                evals = gr.Dataframe(headers=jobs.EVAL_HEADERS, label="Evaluation",
                                     interactive=False, elem_id="evaluation",
                                     visible=bool(cfg.eval))
                with gr.Row():
                    song_zip = gr.File(label="This song (zip)", interactive=False,
                                       elem_id="song_zip")
                    run_zip = gr.File(label="The whole run (zip)", interactive=False,
                                      elem_id="run_zip")

        settings = [vocal_db, use_alpha, alpha, mode, gamma, voice_alpha, hpf, lpf, gate,
                    preset, model, device, mp3, evaluate, plot]
        assert len(settings) == len(jobs.FORM_KEYS)
        shown = [original, blend, vocal, instrumental, spectrogram, song_zip, new_db]

        def process(files, links, vocal_db, use_alpha, blend_alpha, blend_mode, gamma,
                    voice_alpha, residual_hpf, residual_lpf, gate_threshold_db, preset,
                    model, device, convert_to_mp3, eval, plot,
                    request: gr.Request, progress=gr.Progress()):
            """Separate and blend uploaded songs and links with these settings."""
            session = store.get(request.session_hash if request else None)
            values = locals()
            form = {k: values[k] for k in jobs.FORM_KEYS}
            try:
                outcome = runner.run(session, files, links, form,
                                     lambda f, text: progress(f, desc=text))
            except VTraceError as exc:  # settings that cannot be used: said in one line
                raise gr.Error(str(exc), print_exception=False) from None
            ids = [s.id for s in outcome.songs]
            first = outcome.songs[0] if outcome.songs else None
            return (outcome.message, jobs.summary_rows(outcome),
                    gr.update(choices=ids, value=first.id if first else None),
                    *_song_view(first),
                    jobs.eval_rows(outcome.eval_rows),
                    str(outcome.run_zip) if outcome.run_zip else None)

        def show(song_id, request: gr.Request):
            session = store.get(request.session_hash if request else None)
            song = session.songs.get(song_id) if song_id else None
            return _song_view(song)

        def do_reblend(song_id, vocal_db, request: gr.Request):
            """A new blend of a finished song (its id from process) at another vocal level."""
            db = vocal_db
            session = store.get(request.session_hash if request else None)
            try:
                song = session.song(song_id)
                path, seconds = jobs.reblend(song, db)
            except VTraceError as exc:
                raise gr.Error(str(exc), print_exception=False) from None
            return str(path), (f"{song.name}: new blend with the vocal at {float(db):+.1f} dB, "
                               f"ready in {seconds:.2f} s")

        def rezip(song_id, request: gr.Request):
            session = store.get(request.session_hash if request else None)
            song = session.songs.get(song_id) if song_id else None
            return str(jobs.zip_song(song)) if song else None

        def apply_preset(name):
            changes = PRESETS.get(name, {})
            out = [gr.update() for _ in range(5)]
            if "vocal_gain_db" in changes:
                out[0] = gr.update(value=changes["vocal_gain_db"])
                out[1] = gr.update(value=False)
            if "blend_mode" in changes:
                out[2] = gr.update(value=changes["blend_mode"])
            if "voice_alpha" in changes:
                out[3] = gr.update(value=changes["voice_alpha"])
            if "residual_hpf" in changes:
                out[4] = gr.update(value=changes["residual_hpf"])
            return out

        run.click(process, [files, links, *settings],
                  [message, summary, song, *shown, evals, run_zip], api_name="process",
                  concurrency_limit=1, concurrency_id="separation")
        song.input(show, [song], shown, api_visibility="private")
        again.click(do_reblend, [song, new_db], [blend, message], api_name="reblend",
                    concurrency_limit=2).then(rezip, [song], [song_zip],
                                               api_visibility="private")
        evaluate.change(lambda on: gr.update(visible=bool(on)), [evaluate], [evals],
                        api_visibility="private")
        preset.input(apply_preset, [preset], [vocal_db, use_alpha, mode, voice_alpha, hpf],
                     api_visibility="private")
    return demo


def _song_view(song):
    """Players, picture, zip and slider value for one song (all empty for None)."""
    if song is None:
        return (None,) * 6 + (-20.0,)
    files = jobs.song_files(song)
    zipped = song.out_dir.parent.parent / "zips" / f"{song.name}.zip"
    return (jobs.original_of(song), files["blended"], files["vocal"], files["instrumental"],
            files["spectrogram"], str(zipped) if zipped.is_file() else None,
            song.vocal_db if song.vocal_db is not None else -20.0)
