"""Issue 12, items 1-5: outputs are bound to the input and stems they were made from, and
stems to the mix they were separated from. Each test makes the situation at a known point."""

import json

import numpy as np
import pytest

import processors.track as track_module
from main import main
from tests.conftest import read, tone_mix, write


def _args(tmp_path, songs, *extra, model="test", out="out"):
    return ["-i", str(songs), "--model", model, "--separated-dir",
            str(tmp_path / "separated"), "-o", str(tmp_path / out), "--quiet", "--log-dir",
            str(tmp_path / "logs"), "--device", "cpu", "--wav-format", "float32"] + list(extra)


def _manifest(tmp_path, name="mix", out="out"):
    (path,) = (tmp_path / out).glob(f"*/{name}/{name}_vtrace.json")  # <out>/<model>/<track>
    return json.loads(path.read_text())


def _statuses(capsys):
    rows = capsys.readouterr().out.splitlines()[2:-1]
    return {r.split()[0]: r.split()[1] for r in rows}


def test_vtrace_stems_of_another_song_with_the_same_name_are_separated_again(tmp_path):
    v1, i1 = tone_mix(seconds=1.0, seed=1)
    v2, i2 = tone_mix(seconds=1.0, seed=2)
    write(tmp_path / "album1" / "mix.wav", v1 + i1)
    write(tmp_path / "album2" / "mix.wav", 0.5 * (v2 + i2)[::-1])
    assert main(_args(tmp_path, tmp_path / "album1", model="demucs_unittest")) == 0
    assert main(_args(tmp_path, tmp_path / "album2", model="demucs_unittest", out="o2")) == 0
    stems = _manifest(tmp_path, out="o2")["stems"]
    assert stems["separated_by_this_run"] is True  # not album1's stems
    record = json.loads((tmp_path / "separated/demucs_unittest/mix/vtrace_stems.json")
                        .read_text())
    assert record["mix"].endswith("album2/mix.wav")


def test_a_song_edited_in_place_is_separated_again(tmp_path):
    v, i = tone_mix(seconds=1.0)
    song = write(tmp_path / "songs" / "mix.wav", v + i)
    assert main(_args(tmp_path, tmp_path / "songs", model="demucs_unittest")) == 0
    assert main(_args(tmp_path, tmp_path / "songs", model="demucs_unittest", out="o2")) == 0
    assert _manifest(tmp_path, out="o2")["stems"]["separated_by_this_run"] is False  # reused
    write(song, 0.8 * (v + i))  # re-exported with another gain
    assert main(_args(tmp_path, tmp_path / "songs", model="demucs_unittest", out="o3")) == 0
    assert _manifest(tmp_path, out="o3")["stems"]["separated_by_this_run"] is True


def test_stems_vtrace_separated_from_this_mix_are_reused_without_alignment(tmp_path,
                                                                          monkeypatch, capsys):
    v, i = tone_mix(seconds=1.0)
    write(tmp_path / "songs" / "mix.wav", v + i)
    assert main(_args(tmp_path, tmp_path / "songs", model="demucs_unittest")) == 0

    def never(*_):
        raise AssertionError("recorded stems were aligned or checked again")

    monkeypatch.setattr(track_module, "original_excerpts", never)
    assert main(_args(tmp_path, tmp_path / "songs", "-ba", "0.3", model="demucs_unittest",
                      out="o2")) == 0
    m = _manifest(tmp_path, out="o2")
    assert m["stems"]["bound_to_mix"] == "record" and not m["stems"]["separated_by_this_run"]
    assert m["offset"]["applied"] is False and m["offset"]["lag_samples"] == 0
    # the same stems without VTrace's record are another tool's: checked and aligned
    (tmp_path / "separated/demucs_unittest/mix/vtrace_stems.json").unlink()
    assert main(_args(tmp_path, tmp_path / "songs", "-ba", "0.4", model="demucs_unittest",
                      out="o3")) == 1
    assert "recorded stems were aligned or checked again" in capsys.readouterr().out


def test_other_tools_stems_of_another_song_fail_with_the_folder_named(tmp_path, capsys):
    v1, i1 = tone_mix(seconds=3.0, seed=1)
    rng = np.random.default_rng(7)  # another song: nothing periodic in common with tone_mix
    v2, i2 = (0.2 * rng.standard_normal(v1.shape).astype(np.float32) for _ in range(2))
    write(tmp_path / "songs" / "mix.wav", v1 + i1)
    write(tmp_path / "songs" / "good.wav", v2 + i2)
    write(tmp_path / "separated/test/mix/vocals.wav", np.roll(v2, 5000, axis=1) * 0.7)
    write(tmp_path / "separated/test/mix/no_vocals.wav", np.roll(i2, 5000, axis=1) * 0.7)
    write(tmp_path / "separated/test/good/vocals.wav", v2)
    write(tmp_path / "separated/test/good/no_vocals.wav", i2)
    assert main(_args(tmp_path, tmp_path / "songs")) == 1
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if x.startswith("mix "))
    assert "failed" in line and "separated/test/mix do not match this mix" in line
    check = _manifest(tmp_path, "good")["stems"]["check"]
    assert check["measure"] == "explained_db" and check["threshold"] == 3.0
    assert check["value"] > 60  # exact stems


def test_replaced_stems_or_another_stems_folder_are_not_skipped(song, capsys):
    tmp = song["tmp"]
    assert main(_args(tmp, song["dir"])) == 0
    write(song["sep"] / "test/mix/vocals.wav", 0.9 * song["vocals"])
    write(song["sep"] / "test/mix/no_vocals.wav", song["inst"] + 0.1 * song["vocals"])
    capsys.readouterr()
    assert main(_args(tmp, song["dir"])) == 0
    assert _statuses(capsys)["mix"] == "ok"  # recomputed from the new stems
    blended, _ = read(tmp / "out/test/mix/mix_blended.wav")
    new_inst = song["inst"] + 0.1 * song["vocals"]
    assert np.abs(blended - (0.1 * song["mix"] + 0.9 * new_inst)).max() < 1e-6

    other = tmp / "other_sep"
    write(other / "test/mix/vocals.wav", song["vocals"])
    write(other / "test/mix/no_vocals.wav", song["inst"])
    args = _args(tmp, song["dir"])
    args[args.index(str(tmp / "separated"))] = str(other)
    assert main(args) == 0
    assert _statuses(capsys)["mix"] == "ok"
    assert main(args) == 0
    assert _statuses(capsys)["mix"] == "skipped"


def test_interrupted_rerender_with_new_settings_is_not_skipped_later(song, capsys, monkeypatch):
    tmp = song["tmp"]
    assert main(_args(tmp, song["dir"], "-ba", "0.1")) == 0
    first = read(tmp / "out/test/mix/mix_blended.wav")[0]

    def broken(*a, **k):  # the MP3 step fails after the new WAVs replaced the old ones
        from utils.errors import OutputError
        raise OutputError("disk gone")

    import audio_utils.audio_conversion as conversion
    monkeypatch.setattr(conversion, "encode_mp3", broken)
    assert main(_args(tmp, song["dir"], "-ba", "0.5", "--convert-mp3")) == 1
    capsys.readouterr()
    assert main(_args(tmp, song["dir"], "-ba", "0.1")) == 0
    assert _statuses(capsys)["mix"] == "ok"  # not "skipped" over the 0.5 WAVs
    assert np.array_equal(read(tmp / "out/test/mix/mix_blended.wav")[0], first)


def test_input_replaced_while_its_track_runs_fails_it(song, capsys, monkeypatch):
    real_render = track_module.render

    def render_then_replace(*a, **k):
        out = real_render(*a, **k)
        write(song["mix_path"], 0.5 * song["mix"])  # another version lands mid-track
        return out

    monkeypatch.setattr(track_module, "render", render_then_replace)
    assert main(_args(song["tmp"], song["dir"])) == 1
    out = capsys.readouterr().out
    assert "changed while it was processed" in out
    assert not (song["tmp"] / "out/test/mix/mix_vtrace.json").exists()


@pytest.mark.parametrize("cut, warned", [(0.5, True), (0.01, False)])
def test_short_stems_are_reported(song, capsys, cut, warned):
    n = song["mix"].shape[1] - int(cut * 44100)
    write(song["sep"] / "test/mix/vocals.wav", song["vocals"][:, :n])
    write(song["sep"] / "test/mix/no_vocals.wav", song["inst"][:, :n])
    assert main(_args(song["tmp"], song["dir"])) == 0
    out = capsys.readouterr().out
    warnings = _manifest(song["tmp"])["warnings"]
    if warned:
        assert "warning: stems end 0.50 s before the mix" in out and len(warnings) == 1
    else:
        assert "warning" not in out and warnings == []


def test_stems_removed_by_cleanup_do_not_force_a_new_separation(tmp_path, capsys):
    v, i = tone_mix(seconds=1.0)
    write(tmp_path / "songs" / "mix.wav", v + i)
    args = _args(tmp_path, tmp_path / "songs", "--cleanup", model="demucs_unittest")
    assert main(args) == 0
    assert not (tmp_path / "separated/demucs_unittest/mix").exists()
    capsys.readouterr()
    assert main(args) == 0
    assert _statuses(capsys)["mix"] == "skipped"
