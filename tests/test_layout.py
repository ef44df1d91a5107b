"""Stems found where other tools put them, and a plain message when they are nowhere."""

import pytest

from main import main
from tests.conftest import tone_mix, write
from utils.layout import stem_paths


def _args(tmp_path, model):
    return ["-i", str(tmp_path / "songs"), "--model", model, "--separated-dir",
            str(tmp_path / "sep"), "-o", str(tmp_path / "out"), "--quiet", "--log-dir",
            str(tmp_path / "logs")]


@pytest.mark.parametrize("vocals_name, inst_name", [
    ("My Song_(Vocals).wav", "My Song_(Instrumental).wav"),  # UVR
    ("My Song_(Vocals)_model_bs_roformer_ep_317_sdr_12.9755.WAV",  # audio-separator
     "My Song_(Instrumental)_model_bs_roformer_ep_317_sdr_12.9755.flac"),
    ("1_My Song_(Vocals).wav", "1_My Song_(Instrumental).wav"),  # UVR's counter
    ("My Song/My Song_(vocals).wav", "My Song/My Song_(No Vocals).wav"),  # in a track folder
    ("My Song/vocals.flac", "My Song/accompaniment.flac"),  # Spleeter
])
def test_other_tools_stem_names_are_found(tmp_path, vocals_name, inst_name):
    vocals, inst = tone_mix(seconds=1.0)
    write(tmp_path / "songs" / "My Song.wav", vocals + inst)
    for name, x in ((vocals_name, vocals), (inst_name, inst)):
        subtype = "PCM_24" if name.endswith(".flac") else "FLOAT"
        write(tmp_path / "sep" / "tool" / name, x, subtype=subtype)
    found = stem_paths(tmp_path / "sep", "tool", "My Song")
    assert found is not None and [p.name for p in found] == [vocals_name.split("/")[-1],
                                                             inst_name.split("/")[-1]]
    assert main(_args(tmp_path, "tool")) == 0


def test_another_tracks_tagged_stems_are_not_taken(tmp_path):
    vocals, inst = tone_mix(seconds=1.0)
    write(tmp_path / "sep" / "tool" / "My Song (Live)_(Vocals).wav", vocals)
    write(tmp_path / "sep" / "tool" / "My Song (Live)_(Instrumental).wav", inst)
    assert stem_paths(tmp_path / "sep", "tool", "My Song") is None


def test_no_stems_lists_the_places_looked_at(tmp_path, capsys):
    vocals, inst = tone_mix(seconds=1.0)
    write(tmp_path / "songs" / "s.wav", vocals + inst)
    assert main(_args(tmp_path, "uvr")) == 1
    row = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("s "))
    assert f"{tmp_path / 'sep' / 'uvr' / 's'}/vocals.*" in row
    assert "s_(Vocals)" in row and "htdemucs_ft" in row
    assert "a1d90b5c" not in row  # no list of Demucs signatures
