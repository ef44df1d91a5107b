"""Listing Demucs models and fetching one into a folder for --model-repo (served locally)."""

import hashlib
import http.server
import threading

import pytest
import torch
import yaml

from main import main
from processors import models
from tests.conftest import leftovers, tone_mix, write
from utils.errors import SeparationError

TINY = dict(sources=["drums", "bass", "other", "vocals"], channels=4, depth=4, t_layers=1,
            t_heads=1, nfft=1024, dconv_comp=2, segment=1, samplerate=44100)


@pytest.fixture
def served(tmp_path):
    """A tiny HTDemucs package named like demucs' remote files, served on 127.0.0.1."""
    from demucs.htdemucs import HTDemucs

    site = tmp_path / "site"
    site.mkdir()
    torch.manual_seed(0)
    pkg = site / "pkg.th"
    torch.save({"klass": HTDemucs, "args": (), "kwargs": TINY,
                "state": HTDemucs(**TINY).state_dict()}, pkg)
    checksum = hashlib.sha256(pkg.read_bytes()).hexdigest()[:8]
    name = f"abcd1234-{checksum}.th"
    pkg.rename(site / name)
    spec = tmp_path / "tiny.yaml"
    spec.write_text(yaml.safe_dump({"models": ["abcd1234"]}))

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **k):
            super().__init__(*a, directory=str(site), **k)

        def log_message(self, *a):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/{name}"
    info = models.ModelInfo("tiny", ("abcd1234",), (models.ModelFile(name, url),), spec,
                            "nobody/tiny", ("tiny.yaml", "abcd1234.safetensors"))
    yield {"models": {"tiny": info}, "site": site, "name": name}
    server.shutdown()


def test_fetch_writes_a_model_repo_that_runs_offline(served, tmp_path, capsys):
    repo = tmp_path / "repo"
    done = models.fetch_model("tiny", repo, served["models"])
    assert [n for n, _ in done] == [served["name"], "tiny.yaml"]
    assert all(size > 0 for _, size in done)
    again = models.fetch_model("tiny", repo, served["models"])  # kept: nothing downloaded
    assert again == done
    report = "\n".join(models.fetch_report("tiny", repo, done))
    assert "--model-repo" in report and served["name"] in report

    vocals, inst = tone_mix(seconds=1.0)
    write(tmp_path / "songs" / "s.wav", vocals + inst)
    assert main([str(tmp_path / "songs"), "--model", "tiny", "--model-repo", str(repo),
                 "--separated-dir", str(tmp_path / "sep"), "-o", str(tmp_path / "out"),
                 "--device", "cpu", "--quiet", "--log-dir", str(tmp_path / "logs")]) == 0


def test_a_damaged_download_leaves_nothing(served, tmp_path):
    (served["site"] / served["name"]).write_bytes(b"not the model")
    with pytest.raises(SeparationError, match="checksum mismatch"):
        models.fetch_model("tiny", tmp_path / "repo", served["models"])
    assert list((tmp_path / "repo").iterdir()) == [] and leftovers(tmp_path / "repo") == []


def test_list_models_names_files_and_places(capsys):
    assert main(["--list-models"]) == 0
    out = capsys.readouterr().out
    assert "htdemucs_ft: 4 sub-model(s); Hugging Face adefossez/HTDemucs-ft" in out
    assert "f7e0c4bc-ba3fe64a.th" in out and "demucs_unittest" in out


def test_fetch_needs_a_folder_and_a_known_name(tmp_path, capsys):
    assert main(["--fetch-model", "htdemucs"]) == 2
    assert "needs --model-repo" in capsys.readouterr().err
    assert main(["--fetch-model", "nope", "--model-repo", str(tmp_path / "r")]) == 2
    assert "fetch_model=nope: not a known Demucs model" in capsys.readouterr().err
