"""Optional parts: each extra's missing-module message, and the extras table against pyproject."""

import importlib.util
import re
import sys
import tomllib
from pathlib import Path

import pytest

from main import main
from utils import extras
from utils.errors import UsageError

ROOT = Path(__file__).resolve().parent.parent

FEATURES = {"web": "--web", "cluster": "--cluster", "midi": "--midi", "sota": "--model bs_roformer",
            "test": "the test suite"}


def _dist(requirement):
    """``'audio-separator[cpu]==0.47.1'`` -> ``'audio-separator'`` (PEP 503 normalised)."""
    name = re.match(r"[A-Za-z0-9._-]+", requirement).group(0)
    return re.sub(r"[-_.]+", "-", name).lower()


def _hide(monkeypatch, module):
    """Make ``module`` unimportable, whether or not it is installed here."""
    real = importlib.util.find_spec

    def find_spec(name, *args, **kwargs):
        if name == module or name.startswith(module + "."):
            return None
        return real(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)


def _present(monkeypatch):
    """Pretend every extra's modules are installed."""
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a, **k: object())


@pytest.mark.parametrize("extra", sorted(extras.EXTRAS))
def test_missing_extra_names_it_and_the_install_command(monkeypatch, extra):
    _present(monkeypatch)
    extras.require(extra, FEATURES[extra])  # installed: no error
    for module in extras.EXTRAS[extra].values():
        _present(monkeypatch)
        _hide(monkeypatch, module)
        with pytest.raises(UsageError) as err:
            extras.require(extra, FEATURES[extra])
        assert str(err.value) == (f'{FEATURES[extra]} needs the {extra} extra: '
                                  f'pip install "vtrace[{extra}]" '
                                  f'(in a clone: pip install -e ".[{extra}]")')
        assert "\n" not in str(err.value)
        assert extras.missing_modules(extra) == [module]


@pytest.mark.parametrize("extra", sorted(extras.EXTRAS))
def test_module_set_to_none_counts_as_missing(monkeypatch, extra):
    module = next(iter(extras.EXTRAS[extra].values()))
    monkeypatch.setitem(sys.modules, module, None)  # importing it raises ImportError
    assert module in extras.missing_modules(extra)
    assert not extras.installed(extra)


def test_usage_error_exits_2_through_main(monkeypatch, capsys):
    """A feature that calls require() before any track ends the run with exit code 2."""
    import config_loader

    def load_config(argv):
        extras.require("web", "--web")

    monkeypatch.setitem(sys.modules, "gradio", None)
    monkeypatch.setattr(config_loader, "load_config", load_config)
    assert main(["--web"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == ('vtrace: error: --web needs the web extra: pip install "vtrace[web]" '
                           '(in a clone: pip install -e ".[web]")')


def test_unknown_extra_is_a_programming_error():
    with pytest.raises(KeyError):
        extras.require("gpu", "--gpu")


def test_table_matches_pyproject():
    optional = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    assert set(optional) == set(extras.EXTRAS) == {"web", "cluster", "midi", "sota", "test"}
    for extra, requirements in optional.items():
        table = {_dist(d) for d in extras.EXTRAS[extra]}
        assert {_dist(r) for r in requirements} == table, extra


def test_base_install_stays_lean():
    deps = {_dist(r) for r in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "dependencies"]}
    assert not deps & {"gradio", "ray", "audio-separator", "librosa", "pretty-midi", "pytest"}


def test_sota_keeps_the_torch_pin():
    """audio-separator is pinned; installing it never resolves another torch (base pins it)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert "torch==2.13.0" in project["dependencies"]
    assert all("==" in r for r in project["optional-dependencies"]["sota"])


def test_help_and_stems_only_runs_import_no_extra(song, tmp_path):
    """The base stays lean at run time too: --help and a run on existing stems import none of
    the extras' modules (nor torch)."""
    import subprocess

    heavy = sorted({"torch"} | {m for e in ("web", "cluster", "midi", "sota")
                                for m in extras.EXTRAS[e].values()})
    code = ("import sys, main\n"
            "for argv in (['--help'], sys.argv[1:]):\n"
            "    try:\n"
            "        main.main(argv)\n"
            "    except SystemExit:\n"
            "        pass\n"
            f"print([m for m in {heavy!r} if m in sys.modules])\n")
    args = ["-i", str(song["dir"]), "--separated-dir", str(song["sep"]), "--model",
            "test", "-o", str(tmp_path / "out"), "--log-dir", str(tmp_path / "logs"), "--quiet"]
    r = subprocess.run([sys.executable, "-c", code] + args, cwd=ROOT, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "[]"
    assert (tmp_path / "out" / "test" / "mix" / "mix_blended.wav").is_file()
