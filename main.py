#!/usr/bin/env python3
"""VTrace command line: ``vtrace SONGS|FOLDERS|LINKS... [options]`` (or ``python main.py``);
``--help`` lists options.

Exit codes: 0 every track ok or skipped, 1 a track failed, 2 usage error, 130 interrupted
(Ctrl-C), 143 terminated (SIGTERM).
"""

import logging
import signal
import sys

log = logging.getLogger("vtrace")


def main(argv=None):
    """Run VTrace with ``argv`` (default ``sys.argv[1:]``); returns the exit code.

    Every usage error (exit 2) is found before any track runs and before the banner, printed
    as one ``vtrace: error: ...`` line, and leaves no log file.
    """
    from config_loader import build_parser, load_config, requested_action
    from utils.errors import Terminated, UsageError

    argv = sys.argv[1:] if argv is None else list(argv)
    previous = _on_sigterm()
    try:
        try:
            if not argv:
                print(build_parser().format_usage().rstrip(), file=sys.stderr)
                raise UsageError("nothing to process: give audio files, folders or links, e.g. "
                                 "vtrace song.mp3 album/ (vtrace --help lists the options)")
            cfg, typed, cfg_path = load_config(argv)
            action = requested_action(argv)
            rc = _action(cfg, *action) if action else _run(cfg, typed, cfg_path, argv)
        except SystemExit as exc:  # argparse: --help / --version
            return exc.code if isinstance(exc.code, int) else 2
    except UsageError as exc:
        print(f"vtrace: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        log.warning("interrupted (Ctrl-C): finished tracks are kept, temporary files removed; "
                    "exit code 130")
        print("\nvtrace: interrupted; finished tracks are kept, nothing half-written was left",
              file=sys.stderr)
        return 130
    except Terminated:
        log.warning("terminated (SIGTERM): finished tracks are kept, temporary files removed; "
                    "exit code 143")
        print("\nvtrace: terminated (SIGTERM); finished tracks are kept, nothing half-written "
              "was left", file=sys.stderr)
        return 128 + signal.SIGTERM
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    log.debug("exit code %d", rc)
    return rc


def _on_sigterm():
    """SIGTERM (timeout, docker stop, systemd) raises Terminated, so the run ends like Ctrl-C.
    Returns the handler it replaced (None when not in the main thread, where none can be set)."""
    from utils.errors import Terminated

    def terminated(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # one cleanup, not one per signal
        raise Terminated()

    try:
        return signal.signal(signal.SIGTERM, terminated)
    except ValueError:
        return None


def _action(cfg, name, value):
    """--list-models / --fetch-model: print what was asked and exit; --web: serve the page."""
    if name == "web":
        from web.app import serve

        return serve(cfg, value["host"], value["port"], value["share"], value["web_upload_mb"],
                     value["web_session_minutes"])
    from processors import models
    from utils.errors import SeparationError

    if name == "list_models":
        print("\n".join(models.describe_models()))
        return 0
    try:
        done = models.fetch_model(value, cfg.model_repo)
    except SeparationError as exc:
        print(f"vtrace: {exc}", file=sys.stderr)
        return 1
    print("\n".join(models.fetch_report(value, cfg.model_repo, done)))
    return 0


def _run(cfg, typed, cfg_path, argv):
    from logger import setup_logging
    from processors.engine import Engine, output_root
    from processors.progress import summary_table
    from pathlib import Path

    from utils.atomic_files import output_lock
    from utils.layout import model_folder
    from utils.errors import UsageError
    from utils.inputs import collect_inputs

    if not cfg.input and not cfg.link:
        raise UsageError("nothing to process: give audio files, folders or links, e.g. "
                         "vtrace song.mp3 album/ (vtrace --help lists the options)")
    first = cfg.input[0] if cfg.input else cfg.download_dir
    out_root = output_root(cfg, first)
    tracks = collect_inputs(cfg.input, cfg.recursive,
                            exclude=(out_root, cfg.separated_dir, cfg.download_dir, cfg.log_dir))
    if not tracks and not cfg.link:
        raise UsageError(f"input={' '.join(cfg.input)}: no audio files found (looked for "
                         "wav, flac, mp3, ogg, opus, m4a, aac, aiff, webm"
                         f"{'' if cfg.recursive else '; add --recursive for sub-folders'})")
    if cfg.ray:  # before any track and before the banner: the extra, the address's form
        from processors.cluster import check_cluster_options

        check_cluster_options(cfg)
    model_dir = Path(cfg.separated_dir) / model_folder(cfg.model)
    # Folders this run creates and may leave empty (every track failed or was interrupted).
    fresh = [d for d in (model_dir, model_dir.parent) if not d.exists()]
    if _make_output_folder(out_root):  # -o naming a file: a usage error, here
        fresh.append(out_root)
    fresh_outputs = []  # the tracks' output folders not there yet, deepest first
    try:
        with output_lock(out_root):  # a second run on the same folder stops here
            log_path = setup_logging(cfg.log_level, cfg.quiet, cfg.log_dir, cfg.log_keep)
            engine = Engine(cfg, command=["vtrace", *argv])
            engine.check(tracks, out_root, more=len(cfg.link))  # the last usage errors

            log.info("VTrace: model %s, blend %s alpha=%s%s, voice_alpha=%s, config %s%s",
                     cfg.model, cfg.blend_mode, cfg.blend_alpha,
                     f" (vocal {cfg.vocal_gain_db:+g} dB)" if cfg.vocal_gain_db is not None
                     else "", cfg.voice_alpha, cfg_path, f", log {log_path}" if log_path else "")
            log.debug("command line: %s", " ".join(["vtrace", *argv]))
            log.debug("effective configuration (%s, then typed options %s):", cfg_path,
                      ", ".join(sorted(typed)) or "none")
            for key, value in cfg.settings("stems", "outputs", "run").items():
                log.debug("  %s = %r", key, value)
            link_results = []
            if cfg.link:
                local = len(tracks)
                tracks, link_results = _add_links(cfg, tracks)
                engine.check(tracks[local:], out_root)
            total = _total_seconds(tracks)
            log.info("%d track(s), %.0f s of audio -> %s", len(tracks), total, out_root)
            fresh_outputs = _new_folders((engine.names(t, out_root).folder for t in tracks),
                                         out_root)
            results = link_results + _run_tracks(cfg, engine, tracks, out_root, total)
            _finish(cfg, out_root, results)
    finally:
        # Each track removes its own empty folders, but two workers interrupted at once can
        # each see the other's folder in their shared parent and leave it: swept here, after
        # every worker has ended.
        for folder in fresh_outputs + fresh:
            try:
                folder.rmdir()  # only when nothing was written into it
            except OSError:
                pass
    table = summary_table(results)
    _print(table)
    log.debug("summary:\n%s", table)
    return 1 if any(r.status == "failed" for r in results) else 0


def _new_folders(folders, root):
    """The folders from each of ``folders`` up to ``root`` (excluded) that do not exist yet,
    deepest first."""
    new = {f for folder in folders for f in (folder, *folder.parents)
           if f != root and f.is_relative_to(root) and not f.exists()}
    return sorted(new, key=lambda f: len(f.parts), reverse=True)


def _run_tracks(cfg, engine, tracks, out_root, total):
    """The tracks through local worker processes, or a pool of Ray actors with --ray (the
    same results); the dataset manifest written as they finish."""
    from processors.batch import run_batch

    runner = run_batch
    if cfg.ray:
        from processors.cluster import run_cluster as runner
    dataset = None
    if cfg.dataset_manifest:
        from processors.dataset import DatasetManifest

        dataset = DatasetManifest(cfg.dataset_manifest, engine, out_root)
    try:
        results = runner(engine, tracks, out_root, total,
                         on_done=dataset.append if dataset else None)
    except BaseException:
        if dataset is not None:
            dataset.deduplicate()
        raise
    if dataset is not None:
        dataset.rebuild(tracks, results)
    return results


def _print(text):
    """Print to stdout; a reader that went away (``| head``) changes nothing: the exit code
    stays what the tracks decided, and no traceback."""
    import os

    try:
        print(text, flush=True)
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # nor at exit, when Python flushes stdout
        os.close(devnull)


def _make_output_folder(out_root):
    """Create the output folder (True when this run created it); UsageError when it is a
    file or cannot be created, before any track runs."""
    from utils.errors import UsageError

    if out_root.exists() and not out_root.is_dir():
        raise UsageError(f"output={out_root} is a file, not a folder; give a folder with -o "
                         "(it is created when missing)")
    if out_root.is_dir():
        return False
    try:
        out_root.mkdir(parents=True)
    except OSError as exc:
        raise UsageError(f"output={out_root}: cannot create the folder ({exc.strerror}); give "
                         "a folder with -o that can be written") from None
    return True


def _add_links(cfg, tracks):
    from processors.links import link_tracks

    got, failed = link_tracks(cfg.link, cfg, taken=[t.name for t in tracks])
    return tracks + got, failed


def _total_seconds(tracks):
    from audio_utils.audio_io import audio_info
    from utils.errors import InputError

    total = 0.0
    for t in tracks:
        try:
            sr, _, frames = audio_info(t.path)
            total += frames / sr
        except (InputError, OSError):
            pass  # decoded later, or fails with its own reason
    return total


def _finish(cfg, out_root, results):
    """Batch-level reports once every track has ended (evaluation CSV and table)."""
    rows = [r.eval_row for r in results if r.eval_row]
    if cfg.eval and rows:
        from processors.evaluation import format_table, write_batch_csv

        write_batch_csv(out_root / "vtrace_eval.csv", rows)
        _print(format_table(rows))


if __name__ == "__main__":
    sys.exit(main())
