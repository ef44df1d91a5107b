"""Issue 12, items 8-10, 13 and 17: the batch survives what real machines do.

Kills and signals are sent at a known point (once a temporary file shows the tracks are being
written); disk-full faults are raised by a monkeypatched low-level write.
"""

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from main import main
from tests.conftest import leftovers, read, tone_mix, write
from tests.test_batch import ROOT, args, make_songs

DEADLINE_S = 60
linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="finds worker processes in /proc")
posix_only = pytest.mark.skipif(os.name != "posix", reason="flock")


def _children(pid):
    """Pids of the worker processes (multiprocessing spawn) whose parent is ``pid``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == pid and b"spawn_main" in cmdline:
            found.append(int(entry.name))
    return found


def _alive(pid):
    """True while ``pid`` runs (a zombie nobody reaped yet counts as dead)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def _wait_for(condition, what, deadline_s=DEADLINE_S):
    deadline = time.time() + deadline_s
    while time.time() < deadline:
        if condition():
            return
        time.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


def _temp_folders(root):
    """The track folders under ``root`` (``<model>/<track>`` for outputs, ``<track>`` for
    stems) that hold a temporary file of VTrace's."""
    return {Path(p).parent for p in leftovers(root)}


def _start(tmp_path, songs, sep, *extra, **popen):
    cmd = [sys.executable, str(ROOT / "main.py")] + args(tmp_path, songs, sep, *extra)
    return subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True, **popen)


def _kill_all(pids):
    for pid in pids:  # leave no stray process behind, even when the test fails
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


def _empty_folders(root):
    """Folders under ``root`` with nothing in them: an interrupted run must not leave them
    (a track's outputs without their manifest are issue 12 item 3's, not checked here)."""
    return sorted(str(p.relative_to(root)) for p in Path(root).rglob("*")
                  if p.is_dir() and not any(p.iterdir())) if root.exists() else []


# ---------------------------------------------------------------- item 8: kills and SIGTERM

def _two_tracks_in_progress(tmp_path):
    """Start ``main.py -t 2`` on four 20 s songs and return ``(process, worker pids)`` once
    both processes are writing a track (the worker's and the parent's temporaries)."""
    songs, sep = make_songs(tmp_path, [f"s{i}.wav" for i in range(4)], seconds=20.0)
    proc = _start(tmp_path, songs, sep, "-t", "2", "--block-seconds", "0.5")
    try:
        _wait_for(lambda: len(_temp_folders(tmp_path / "out")) >= 2, "two tracks in progress")
    except BaseException:
        _kill_all([proc.pid])
        raise
    return proc, _children(proc.pid)


@linux_only
def test_sigkill_of_the_parent_ends_its_workers_and_their_temporaries(tmp_path):
    proc, workers = _two_tracks_in_progress(tmp_path)
    try:
        assert workers, "no worker process found"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        _wait_for(lambda: not any(_alive(p) for p in workers), "the workers to end", 15)
        # the killed parent's own temporaries stay (nothing can run on SIGKILL); the workers
        # removed theirs
        assert len(_temp_folders(tmp_path / "out")) <= 1, leftovers(tmp_path / "out")
    finally:
        _kill_all(workers + [proc.pid])
        proc.communicate()


@linux_only
def test_sigterm_ends_the_run_like_ctrl_c(tmp_path):
    proc, workers = _two_tracks_in_progress(tmp_path)
    try:
        proc.send_signal(signal.SIGTERM)  # the parent only, as timeout, docker stop, systemd
        _, err = proc.communicate(timeout=DEADLINE_S)
        assert proc.returncode == 143, err
        assert b"terminated" in err and b"Traceback" not in err, err
        assert b"worker process died" not in err
        assert leftovers(tmp_path / "out") == []
        assert _empty_folders(tmp_path / "out") == []
        assert not any(_alive(p) for p in workers)
    finally:
        _kill_all(workers + [proc.pid])


# ---------------------------------------------------------------- item 9: Ctrl-C with workers

@linux_only
def test_ctrl_c_during_separation_with_workers_leaves_nothing(tmp_path):
    """Ctrl-C while two processes separate (demucs_unittest): no temporary stems, no work
    folders, no empty stems or output folders, no track reported as a dead worker."""
    for i in range(3):
        vocals, inst = tone_mix(seconds=20.0, seed=i)
        write(tmp_path / "songs" / f"s{i}.wav", vocals + inst)
    cmd = [sys.executable, str(ROOT / "main.py"), "-i", str(tmp_path / "songs"),
           "--model", "demucs_unittest", "--device", "cpu", "--separated-dir",
           str(tmp_path / "sep"), "-o", str(tmp_path / "out"), "--log-dir",
           str(tmp_path / "logs"), "-t", "2", "--block-seconds", "0.5"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    workers = []
    try:
        stems = tmp_path / "sep" / "demucs_unittest"
        _wait_for(lambda: len(_temp_folders(stems)) >= 2, "two separations in progress")
        workers = _children(proc.pid)
        os.killpg(proc.pid, signal.SIGINT)  # as a terminal's Ctrl-C: the whole process group
        out, err = proc.communicate(timeout=DEADLINE_S)
        assert proc.returncode == 130, err
        assert b"Traceback" not in err and b"worker process died" not in err, err
        log_text = "".join(p.read_text() for p in (tmp_path / "logs").glob("*.log"))
        assert "worker process died" not in log_text
        assert leftovers(tmp_path / "out") == [] and leftovers(tmp_path / "sep") == []
        assert _empty_folders(tmp_path / "out") == [] and _empty_folders(tmp_path / "sep") == []
        for folder in (stems.iterdir() if stems.exists() else []):  # complete or absent
            assert sorted(p.name for p in folder.iterdir()) == ["no_vocals.wav",
                                                                "vocals.wav"], folder
    finally:
        _kill_all(workers + [proc.pid])


# ---------------------------------------------------------------- item 10: concurrent runs

@posix_only
def test_second_run_on_the_same_output_folder_stops_at_once(tmp_path, capsys):
    import fcntl

    from utils.atomic_files import is_temp

    songs, sep = make_songs(tmp_path, ["a.wav"])
    out = tmp_path / "out"
    out.mkdir()
    lock = out / ".vtrace.lock"
    with open(lock, "w") as held:  # another run holds the folder (its pid in the file)
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        held.write("4242\n")
        held.flush()
        stale = out / "a" / f".a_blended{'.vtrace-tmp'}.wav"  # the other run's live temporary
        stale.parent.mkdir()
        stale.write_bytes(b"live")
        assert main(args(tmp_path, songs, sep)) == 2
        errors = capsys.readouterr().err.splitlines()
        assert len(errors) == 1 and errors[0].startswith("vtrace: error: ")
        assert str(out) in errors[0] and "pid 4242" in errors[0], errors
        assert stale.read_bytes() == b"live"  # untouched
    stale.unlink()
    assert main(args(tmp_path, songs, sep)) == 0  # released: the folder is free again
    assert not lock.exists() and not is_temp(lock)
    assert sorted(p.name for p in out.iterdir()) == ["a", "test"]


# ---------------------------------------------------------------- item 17: smaller ones

def test_output_path_that_is_a_file_is_a_usage_error_up_front(tmp_path, capsys):
    songs, sep = make_songs(tmp_path, ["a.wav", "b.wav"])
    (tmp_path / "out").write_text("not a folder")
    assert main(args(tmp_path, songs, sep)) == 2
    errors = capsys.readouterr().err.splitlines()
    assert len(errors) == 1 and errors[0].startswith("vtrace: error: ")
    assert "is a file" in errors[0] and str(tmp_path / "out") in errors[0]


def test_summary_into_a_closed_pipe_keeps_the_exit_code(tmp_path):
    """``main.py ... | head -1``: the reader is gone before the summary is printed (its end
    of the pipe is closed at once here, so the write always meets EPIPE)."""
    songs, sep = make_songs(tmp_path, ["a.wav"])
    (songs / "bad.wav").write_bytes(b"not audio")
    for expected, inputs in ((1, songs), (0, songs / "a.wav")):  # a failed track, all ok
        cmd = [sys.executable, str(ROOT / "main.py")] + args(tmp_path, inputs, sep)
        proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        proc.stdout.close()
        err = proc.stderr.read()
        proc.wait(timeout=DEADLINE_S)
        assert proc.returncode == expected, err
        assert b"Traceback" not in err and b"BrokenPipe" not in err, err


# ---------------------------------------------------------------- item 13: a full disk

class _Full:
    """``os.statvfs`` of a file system with no free block left."""

    def __init__(self, real):
        self.real = real

    def __call__(self, path):
        st = self.real(path)
        return os.statvfs_result((st.f_bsize, st.f_frsize, st.f_blocks, 0, 0, st.f_files,
                                  st.f_ffree, st.f_favail, st.f_flag, st.f_namemax))


def _disk_full(monkeypatch):
    """Every audio write fails as libsndfile fails on a full disk ("System error")."""
    def write(self, data):
        raise sf.LibsndfileError(2)  # SF_ERR_SYSTEM: what write(2) = ENOSPC becomes

    monkeypatch.setattr(sf.SoundFile, "write", write)
    monkeypatch.setattr(os, "statvfs", _Full(os.statvfs))


def _summary_rows(out):
    return {line.split()[0]: line for line in out.splitlines()[2:-1]}


def test_full_disk_while_writing_outputs_says_no_space(tmp_path, monkeypatch, capsys):
    songs, sep = make_songs(tmp_path, ["a.wav"])
    _disk_full(monkeypatch)
    assert main(args(tmp_path, songs, sep)) == 1
    row = _summary_rows(capsys.readouterr().out)["a"]
    assert f"no space left on {tmp_path / 'out' / 'test' / 'a'}" in row, row
    assert "internal error" not in row and "System error" not in row
    assert leftovers(tmp_path / "out") == []


def test_full_disk_while_writing_the_manifest_says_no_space(tmp_path, monkeypatch, capsys):
    songs, sep = make_songs(tmp_path, ["a.wav"])
    real = Path.write_text

    def write_text(self, *a, **k):
        if "_vtrace" in self.name and self.suffix == ".json":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(self, *a, **k)

    monkeypatch.setattr(Path, "write_text", write_text)
    assert main(args(tmp_path, songs, sep)) == 1
    row = _summary_rows(capsys.readouterr().out)["a"]
    assert f"no space left on {tmp_path / 'out' / 'test' / 'a'}" in row, row
    assert leftovers(tmp_path / "out") == []


def test_full_disk_while_writing_stems_is_not_a_demucs_failure(tmp_path, monkeypatch, capsys):
    vocals, inst = tone_mix(seconds=1.0)
    write(tmp_path / "songs" / "s.wav", vocals + inst)
    _disk_full(monkeypatch)
    assert main(["-i", str(tmp_path / "songs"), "--model", "demucs_unittest",
                 "--device", "cpu", "--separated-dir", str(tmp_path / "sep"), "-o",
                 str(tmp_path / "out"), "--quiet", "--log-dir", str(tmp_path / "logs")]) == 1
    row = _summary_rows(capsys.readouterr().out)["s"]
    assert f"no space left on {tmp_path / 'sep' / 'demucs_unittest' / 's'}" in row, row
    assert "Demucs failed" not in row
    assert leftovers(tmp_path / "sep") == []
    assert not (tmp_path / "sep" / "demucs_unittest" / "s").exists()  # no empty stems folder


def test_full_log_disk_is_said_once_without_tracebacks(tmp_path, capsys):
    import logging

    from logger import setup_logging

    log_path = setup_logging("INFO", quiet=True, log_dir=tmp_path / "logs")
    root = logging.getLogger()
    handler = next(h for h in root.handlers if getattr(h, "baseFilename", None) == str(log_path))

    def full(text):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    try:
        if handler.stream is None:  # the file opens at its first line
            handler.stream = handler._open()
        handler.stream.write = full
        for i in range(30):
            logging.getLogger("vtrace.test").info("line %d", i)
        logging.getLogger("vtrace.test").warning("still on the console")
    finally:
        setup_logging("INFO", quiet=True, log_dir=tmp_path / "logs2")  # fresh handlers
    err = capsys.readouterr().err
    assert err.count("no space left on") == 1, err
    assert str(tmp_path / "logs") in err
    assert "Traceback" not in err and "Logging error" not in err, err
    assert "still on the console" in err


def test_force_recomputes_outputs_from_other_tools_stems(tmp_path, capsys, monkeypatch):
    """--force on stems another tool made (model name "test") recomputes the outputs from
    them; it never tries to load a model of that name."""
    import processors.separation as separation

    songs, sep = make_songs(tmp_path, ["a.wav"])
    assert main(args(tmp_path, songs, sep)) == 0
    blended = tmp_path / "out" / "test" / "a" / "a_blended.wav"
    blended.write_bytes(b"stale")  # a rerun without --force skips on the manifest

    def boom(*a, **k):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(separation, "_load_model", boom)
    capsys.readouterr()
    assert main(args(tmp_path, songs, sep, "--force")) == 0
    assert "1 ok" in capsys.readouterr().out
    assert read(blended)[0].shape[1] > 0


_SHAPES = [[1, 2], "text", {"files": 5}, {"params": "x"}, {"files": [5, None]},
           {"files": {"a": 1}}, {"files": [["a"]]}, {"seconds": "x"}, {"seconds": [1]},
           {"input": 5}, {"input": [1]}, {"params": [1]}]


@pytest.mark.parametrize("change", _SHAPES + ["{broken"], ids=str)
def test_manifest_of_another_shape_means_recompute(tmp_path, capsys, change):
    """A manifest that is not VTrace's shape (another tool's, hand-edited, damaged) is no
    manifest: the track is recomputed, never an internal error."""
    songs, sep = make_songs(tmp_path, ["a.wav"])
    assert main(args(tmp_path, songs, sep, "--eval")) == 0
    path = tmp_path / "out" / "test" / "a" / "a_vtrace.json"
    good = json.loads(path.read_text())
    if isinstance(change, dict):  # VTrace's manifest with one field of another shape
        path.write_text(json.dumps({**good, **change}))
    else:
        path.write_text(change if isinstance(change, str) and change.startswith("{")
                        else json.dumps(change))
    capsys.readouterr()
    assert main(args(tmp_path, songs, sep, "--eval")) == 0
    out = capsys.readouterr().out
    rows = _summary_rows(out)
    assert " ok " in rows["a"] or " skipped " in rows["a"], out
    assert json.loads(path.read_text())["params"] == good["params"]


@pytest.mark.parametrize("change", [{"model": 5}, {"undefined": "x"}, {"reference": [1]},
                                    [1], "text"], ids=str)
def test_eval_report_of_another_shape_is_no_internal_error(tmp_path, capsys, change):
    songs, sep = make_songs(tmp_path, ["a.wav"])
    assert main(args(tmp_path, songs, sep, "--eval")) == 0
    path = tmp_path / "out" / "test" / "a" / "a_eval.json"
    report = json.loads(path.read_text())
    path.write_text(json.dumps({**report, **change} if isinstance(change, dict) else change))
    capsys.readouterr()
    assert main(args(tmp_path, songs, sep, "--eval")) == 0
    out = capsys.readouterr().out
    assert "internal error" not in out, out


@posix_only
def test_run_separating_into_a_stems_folder_another_run_writes_keeps_off(tmp_path, capsys):
    """Two runs with different outputs share separated/: the second never deletes the
    stems the first is writing; that track fails at once with one line."""
    import fcntl

    vocals, inst = tone_mix(seconds=1.0)
    write(tmp_path / "songs" / "s.wav", vocals + inst)
    stems = tmp_path / "sep" / "demucs_unittest" / "s"
    stems.mkdir(parents=True)
    live = stems / ".vocals.vtrace-tmp.wav"  # the other run's stem being written
    live.write_bytes(b"live")
    with open(stems.parent / ".s.vtrace.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        held.write("4242\n")
        held.flush()
        assert main(["-i", str(tmp_path / "songs"), "--model", "demucs_unittest",
                     "--device", "cpu", "--separated-dir", str(tmp_path / "sep"), "-o",
                     str(tmp_path / "out"), "--quiet", "--log-dir",
                     str(tmp_path / "logs")]) == 1
        assert live.read_bytes() == b"live"
    row = _summary_rows(capsys.readouterr().out)["s"]
    assert str(stems) in row and "pid 4242" in row, row
