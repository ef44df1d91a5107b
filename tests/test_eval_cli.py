"""--eval, --reference and --plot through main()."""

import csv
import json

import numpy as np

from main import main
from tests.conftest import write
from processors.evaluation import CSV_COLUMNS


def test_eval_reports_json_csv_and_plot(song, capsys):
    ref = song["tmp"] / "truth" / "mix"
    noise = 1e-3 * np.random.default_rng(0).standard_normal(song["inst"].shape)
    write(ref / "vocals.wav", song["vocals"] - noise.astype(np.float32))
    write(ref / "accompaniment.wav", song["inst"] + noise.astype(np.float32))
    base = ["-i", str(song["dir"]), "--model", "test", "--separated-dir", str(song["sep"]),
            "-o", str(song["tmp"] / "out"), "--quiet", "--log-dir", str(song["tmp"] / "logs"),
            "--eval", "--reference", str(song["tmp"] / "truth"), "-ba", "0.25"]
    assert main(base + ["--plot"]) == 0
    out = capsys.readouterr().out
    assert "eval" in out.splitlines()[0] or "eval" in out
    folder = song["tmp"] / "out" / "test" / "mix"
    report = json.loads((folder / "mix_eval.json").read_text())
    # the stems are exact, so against the model: phase cancel == model instrumental
    assert report["model"]["phase_cancel"]["mse"] < 1e-10
    assert abs(report["model"]["phase_cancel"]["cosine"] - 1) < 1e-6
    assert abs(report["vocal_change_db"] - 20 * np.log10(0.25)) < 0.01
    assert 30 < report["reference"]["phase_cancel"]["sdr"] < 60
    assert (folder / "mix_eval.png").stat().st_size > 10000
    with open(song["tmp"] / "out" / "vtrace_eval.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == tuple(CSV_COLUMNS) and rows[0]["track"] == "mix"
    # a rerun skips the track but the CSV still lists it
    assert main(base + ["--plot"]) == 0
    assert "skipped" in capsys.readouterr().out
    with open(song["tmp"] / "out" / "vtrace_eval.csv", newline="") as f:
        assert [r["track"] for r in csv.DictReader(f)] == ["mix"]


def test_vocal_change_is_measured_on_the_repaired_stems(song):
    """When the repair changes the stems (the model lost 40 % of the instrumental), the blend
    still turns the vocal down by the gain asked for, measured against what it blended."""
    write(song["sep"] / "test" / "mix" / "no_vocals.wav", 0.6 * song["inst"])
    assert main(["-i", str(song["dir"]), "--model", "test", "--separated-dir",
                 str(song["sep"]), "-o", str(song["tmp"] / "out"), "--quiet", "--log-dir",
                 str(song["tmp"] / "logs"), "--eval", "--vocal-gain-db", "-20"]) == 0
    report = json.loads((song["tmp"] / "out/test/mix/mix_eval.json").read_text())
    assert abs(report["vocal_change_db"] - (-20.0)) < 0.05
