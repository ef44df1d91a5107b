"""Issue 16: the batch on Ray actors gives a local run's results; the dataset manifest.

Ray's start-up is slow on a small machine: the in-process tests share one local Ray instance
(module fixture; ``--ray local`` uses a Ray already initialised in the process), and only the
``--ray auto`` test starts a cluster of its own with ``ray start --head``.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from main import main
from processors.cluster import EXIT_HOOK_ENV
from tests.conftest import leftovers, tone_mix, write
from tests.test_batch import args, make_songs

ROOT = Path(__file__).resolve().parents[1]
KINDS = ("blended", "vocal_residual", "phase_cancel")


@pytest.fixture(scope="module")
def ray_local():
    ray = pytest.importorskip("ray")
    import warnings

    warnings.filterwarnings("ignore", message="Tip: In future versions of Ray",
                            category=FutureWarning)
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             logging_level="WARNING")
    yield ray
    ray.shutdown()


def same_outputs(a, b, names, model="test"):
    for name in names:
        for k in KINDS:
            assert (a / model / name / f"{name}_{k}.wav").read_bytes() == \
                (b / model / name / f"{name}_{k}.wav").read_bytes(), (name, k)


def rows(text):
    """``{track: status}`` from the summary table."""
    lines = text.splitlines()
    head = next(i for i, line in enumerate(lines) if line.startswith("track  status"))
    return {r.split()[0]: r.split()[1] for r in lines[head + 2:-1]}


def read_jsonl(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def test_a_run_without_ray_never_imports_it(tmp_path):
    songs, sep = make_songs(tmp_path, ["s.wav"])
    code = ("import sys; from main import main; rc = main(sys.argv[1:]); "
            "sys.exit(rc if 'ray' not in sys.modules else 99)")
    r = subprocess.run([sys.executable, "-c", code] + args(tmp_path, songs, sep, "--dataset-"
                       "manifest", str(tmp_path / "d.jsonl")), cwd=ROOT, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr


def test_dataset_manifest_one_line_per_finished_track_and_resume(tmp_path, capsys):
    songs, sep = make_songs(tmp_path, ["a.wav", "b.wav", "c.wav"])
    write(songs / "bad.wav", tone_mix(0.05)[0])  # too short: fails, gets no line
    ds = tmp_path / "ds" / "train.jsonl"
    assert main(args(tmp_path, songs, sep, "-t", "2", "--dataset-manifest", str(ds))) == 1
    first = read_jsonl(ds)
    assert sorted(r["track"] for r in first) == ["a", "b", "c"]
    line = first[0]
    assert Path(line["input"]).is_absolute() and line["sample_rate"] == 44100
    assert line["duration"] == 1.0 and line["polarity"] == 1 and line["offset_samples"] == 0
    assert set(line["outputs"]) == set(KINDS)
    assert all(Path(p).is_absolute() and Path(p).is_file() for p in line["outputs"].values())
    capsys.readouterr()
    # a rerun: skipped tracks keep exactly one line each, the same lines
    (tmp_path / "out" / "test" / "b" / "b_vtrace.json").unlink()  # b is computed again
    assert main(args(tmp_path, songs, sep, "--dataset-manifest", str(ds))) == 1
    assert rows(capsys.readouterr().out)["a"] == "skipped"
    second = read_jsonl(ds)
    assert [r["track"] for r in second] == ["a", "b", "c"]  # input order, once each
    assert second[0] == next(r for r in first if r["track"] == "a")
    assert main(args(tmp_path, songs, sep, "--dataset-manifest", str(ds), "--eval")) == 1
    assert all(isinstance(r["metrics"]["model_blended_cosine"], float) for r in read_jsonl(ds))
    pandas = pytest.importorskip("pandas")
    frame = pandas.read_json(ds, lines=True)
    assert list(frame["track"]) == ["a", "b", "c"]
    try:
        import datasets
    except ImportError:
        return
    assert datasets.load_dataset("json", data_files=str(ds), split="train").num_rows == 3


def test_ray_local_equals_a_local_run_byte_for_byte(ray_local, tmp_path, capsys):
    songs, sep = make_songs(tmp_path, ["s0.wav", "s1.wav", "s2.wav"])
    vocals, inst = tone_mix(seconds=1.0, seed=7)
    write(songs / "raw.wav", vocals + inst)  # no stems: fails with model "test"
    base = ["-i", str(songs), "--log-dir", str(tmp_path / "logs"), "--quiet"]
    stems = ["--model", "test", "--separated-dir", str(sep)]
    ray = ["--ray", "local", "--ray-workers", "2"]
    for name, extra in (("one", ["-t", "1"]), ("ray", ray)):
        assert main(base + stems + extra + ["-o", str(tmp_path / name)]) == 1
        assert rows(capsys.readouterr().out) == {"s0": "ok", "s1": "ok", "s2": "ok",
                                                 "raw": "failed"}
    same_outputs(tmp_path / "one", tmp_path / "ray", ["s0", "s1", "s2"])
    # demucs_unittest separates on the actors (its weights are random per process, so the
    # stems differ between any two processes): the outputs equal a local run on those stems
    demucs = base + ["--model", "demucs_unittest", "--shifts", "0", "--device", "cpu",
                     "--separated-dir", str(tmp_path / "sep_d")]
    assert main(demucs + ray + ["-o", str(tmp_path / "ray_d")]) == 0
    assert main(demucs + ["-t", "1", "-o", str(tmp_path / "one_d")]) == 0
    capsys.readouterr()
    same_outputs(tmp_path / "one_d", tmp_path / "ray_d", ["s0", "s1", "s2", "raw"],
                 "demucs_unittest")
    manifest = json.loads((tmp_path / "ray_d/demucs_unittest/raw/raw_vtrace.json").read_text())
    assert manifest["stems"]["separated_by_this_run"]
    assert manifest["run"]["torch_threads"] == 1  # the actor's CPUs, explicitly
    # resume on the cluster: the local run's outputs are current, every track is skipped
    assert main(base + stems + ["--ray", "local", "-o", str(tmp_path / "one")]) == 1
    assert rows(capsys.readouterr().out) == {"s0": "skipped", "s1": "skipped", "s2": "skipped",
                                             "raw": "failed"}


def test_an_actor_that_dies_takes_only_its_track(ray_local, tmp_path, capsys, monkeypatch):
    songs, sep = make_songs(tmp_path, [f"s{i}.wav" for i in range(4)])
    monkeypatch.setenv(EXIT_HOOK_ENV, "s1=1,s2=2")  # s1's actor dies once, s2's twice
    ds = tmp_path / "ds.jsonl"
    rc = main(args(tmp_path, songs, sep, "--ray", "local", "--ray-workers", "2",
                   "--block-seconds", "0.5", "--dataset-manifest", str(ds)))
    out = capsys.readouterr().out
    assert rc == 1
    assert rows(out) == {"s0": "ok", "s1": "ok", "s2": "failed", "s3": "ok"}
    assert "the Ray actor processing it died twice" in out
    assert leftovers(tmp_path / "out") == []
    assert not (tmp_path / "out" / "test" / "s2").exists()
    assert sorted(r["track"] for r in read_jsonl(ds)) == ["s0", "s1", "s3"]


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_joins_a_cluster_started_with_ray_start(tmp_path):
    pytest.importorskip("ray")
    songs, sep = make_songs(tmp_path, ["s0.wav", "s1.wav"])
    port = _free_port()
    ray_cli = Path(sys.executable).with_name("ray")
    env = {**os.environ, "RAY_ADDRESS": f"127.0.0.1:{port}", "RAY_USAGE_STATS_ENABLED": "0"}
    head_dir = tmp_path / "head"  # the head and its workers start elsewhere than the driver
    head_dir.mkdir()
    # --block: the head lives as long as this process, and stops with it (not `ray stop`,
    # which would stop every Ray on the machine)
    head = subprocess.Popen([str(ray_cli), "start", "--head", "--block", "--port", str(port),
                             "--node-ip-address", "127.0.0.1", "--num-cpus", "2",
                             "--include-dashboard", "false", "--disable-usage-stats"],
                            env=env, cwd=head_dir, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        # relative paths: the actors (started by the head, elsewhere) resolve them as here
        cmd = [sys.executable, str(ROOT / "main.py"), "songs", "--model", "test",
               "--separated-dir", "sep", "-o", "ray", "--log-dir", "logs", "--quiet", "--ray",
               "auto"]
        deadline = time.time() + 120
        while True:  # the head takes a while to come up
            r = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True,
                               timeout=300)
            if r.returncode != 2 or time.time() > deadline or head.poll() is not None:
                break
            time.sleep(2)
        assert r.returncode == 0, r.stderr
        assert rows(r.stdout) == {"s0": "ok", "s1": "ok"}
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        head.wait(timeout=60)
    assert main(args(tmp_path, songs, sep, "-t", "1", out="one")) == 0
    same_outputs(tmp_path / "one", tmp_path / "ray", ["s0", "s1"])


def test_ctrl_c_on_the_driver_stops_the_actors_and_leaves_nothing_half_written(tmp_path):
    pytest.importorskip("ray")
    songs, sep = make_songs(tmp_path, [f"s{i}.wav" for i in range(4)], seconds=30.0)
    cmd = [sys.executable, str(ROOT / "main.py")] + args(
        tmp_path, songs, sep, "--ray", "local", "--ray-workers", "2", "--block-seconds", "0.5")
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline and not leftovers(tmp_path / "out"):
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGINT)  # as a terminal's Ctrl-C: the whole process group
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert leftovers(tmp_path / "out") == []
    assert b"Traceback" not in err


def test_pool_size_fits_the_cluster_and_the_tracks():
    from config_loader import Config
    from processors.cluster import pool_size
    from utils.errors import UsageError

    cluster = {"CPU": 16.0, "GPU": 2.0}
    assert pool_size(Config(ray="auto"), cluster, 100) == 16
    assert pool_size(Config(ray="auto"), cluster, 3) == 3
    assert pool_size(Config(ray="auto", ray_cpus_per_worker=4), cluster, 100) == 4
    assert pool_size(Config(ray="auto", ray_gpus_per_worker=0.5), cluster, 100) == 4
    assert pool_size(Config(ray="auto", ray_workers=40), cluster, 100) == 16
    with pytest.raises(UsageError, match="no room"):
        pool_size(Config(ray="auto", ray_gpus_per_worker=1), {"CPU": 8.0}, 10)


def test_ray_usage_errors_come_before_anything_runs(tmp_path, capsys):
    songs, sep = make_songs(tmp_path, ["s.wav"])
    assert main(args(tmp_path, songs, sep, "--ray", "nowhere")) == 2
    err = capsys.readouterr().err
    assert err.startswith("vtrace: error:") and ("ray=" in err or "cluster extra" in err)
    assert not (tmp_path / "logs").exists()


def test_an_actor_that_cannot_start_is_named_by_its_error():
    from processors.cluster import _death

    text = ("The actor died because of an error raised in its creation task, ray::TrackWorker"
            "\nTraceback (most recent call last):\n  File x\n"
            "ModuleNotFoundError: No module named 'processors'")
    assert _death(RuntimeError(text)) == ("it could not start: ModuleNotFoundError: No module "
                                          "named 'processors'")
    assert _death(RuntimeError("worker exit")) == "its process exited unexpectedly"
