"""The package: one list of dependencies (pyproject.toml), the conda file, the console script."""

import ast
import re
import shutil
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

import pytest
import yaml

from config_loader import __version__

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("utils", "audio_utils", "processors", "web")
TOP_MODULES = ("main", "config_loader", "logger")
# import name -> distribution name, where they differ
DIST_OF = {"yaml": "pyyaml", "imageio_ffmpeg": "imageio-ffmpeg", "yt_dlp": "yt-dlp",
           "sklearn": "scikit-learn", "PIL": "pillow", "cv2": "opencv-python",
           "audio_separator": "audio-separator", "fast_bss_eval": "fast-bss-eval"}


def _norm(name):
    return re.sub(r"[-_.]+", "-", name).lower()


def _dist(requirement):
    return _norm(re.match(r"[A-Za-z0-9._-]+", requirement).group(0))


def _project():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _sources():
    files = [ROOT / f"{m}.py" for m in TOP_MODULES]
    for package in PACKAGES:
        files += sorted((ROOT / package).rglob("*.py"))
    return files


def third_party_imports(files):
    """Top-level names of every import (lazy ones inside functions included), less stdlib and
    VTrace's own modules."""
    first_party = set(PACKAGES) | set(TOP_MODULES)
    names = set()
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return {n for n in names if n not in sys.stdlib_module_names and n not in first_party
            and n != "__future__"}


def test_dependencies_are_exactly_what_the_code_imports():
    """The base dependencies are what the code imports, less what an optional feature imports
    from its extra (gradio for --web, ray for --ray); every import is listed somewhere."""
    from utils.extras import EXTRAS

    imported = {_norm(DIST_OF.get(n, n)) for n in third_party_imports(_sources())}
    optional = {_norm(d) for name, dists in EXTRAS.items() if name != "test" for d in dists}
    listed = {_dist(r) for r in _project()["dependencies"]}
    assert listed == imported - optional, (
        f"listed but not imported: {sorted(listed - imported)}; "
        f"imported but not listed: {sorted(imported - optional - listed)}")


def test_the_import_check_can_fail(tmp_path):
    """The scan sees a lazy import inside a function, and ignores stdlib and VTrace's own."""
    src = tmp_path / "m.py"
    src.write_text("import os\nfrom utils.errors import UsageError\n"
                   "def f():\n    import librosa.feature\n    from yaml import safe_load\n")
    assert third_party_imports([src]) == {"librosa", "yaml"}


def test_dependencies_are_static_and_torch_pinned():
    project = _project()
    assert "dependencies" not in project.get("dynamic", [])
    assert "optional-dependencies" not in project.get("dynamic", [])
    assert "torch==2.13.0" in project["dependencies"]


def test_no_second_list_of_dependencies():
    for path in ROOT.glob("requirements*.txt"):
        lines = [ln.split("#")[0].strip() for ln in path.read_text().splitlines()]
        assert not [ln for ln in lines if ln and not ln.startswith("-e")], \
            f"{path.name} lists packages: pyproject.toml is the one list"


def test_conda_file_installs_this_package():
    env = yaml.safe_load((ROOT / "VTrace.yaml").read_text())
    deps = env["dependencies"]
    pips = [d["pip"] for d in deps if isinstance(d, dict) and "pip" in d]
    assert pips == [["-e ."]], "VTrace.yaml's pip section must be exactly `-e .`"
    plain = {d.split("=")[0] for d in deps if isinstance(d, str)}
    assert {"python", "pip", "ffmpeg"} <= plain
    python = next(d for d in deps if isinstance(d, str) and d.startswith("python="))
    low = re.search(r">=\s*(\d+\.\d+)", _project()["requires-python"]).group(1)
    assert tuple(map(int, python.split("=")[1].split("."))) >= tuple(map(int, low.split(".")))


def test_version_has_one_source():
    text = (ROOT / "pyproject.toml").read_text()
    assert tomllib.loads(text)["tool"]["setuptools"]["dynamic"]["version"] == {
        "attr": "utils.version.__version__"}
    assert "version" in _project()["dynamic"]
    from config_loader import __version__
    from utils.version import __version__ as written

    assert __version__ is written


def test_console_script_points_at_main():
    assert _project()["scripts"] == {"vtrace": "main:main"}


def test_package_lists_every_module_folder():
    """setuptools finds utils*, audio_utils*, processors*: every folder of code is one of them."""
    tool = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert set(tool["py-modules"]) == set(TOP_MODULES)
    assert tool["packages"]["find"]["include"] == [f"{p}*" for p in PACKAGES]
    for package in PACKAGES:
        assert (ROOT / package / "__init__.py").is_file()


def _console_script():
    exe = Path(sysconfig.get_path("scripts")) / "vtrace"
    return exe if exe.is_file() else shutil.which("vtrace")


def test_vtrace_version(tmp_path):
    exe = _console_script()
    if not exe:
        pytest.skip("the vtrace command is not installed here (pip install -e .)")
    r = subprocess.run([str(exe), "--version"], cwd=tmp_path, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"VTrace {__version__}"


def test_vtrace_help_from_another_folder(tmp_path):
    exe = _console_script()
    if not exe:
        pytest.skip("the vtrace command is not installed here (pip install -e .)")
    r = subprocess.run([str(exe), "--help"], cwd=tmp_path, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    assert "--model" in r.stdout


def test_main_py_help_from_another_folder(tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "main.py"), "--help"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "usage:" in r.stdout and "--model" in r.stdout
    assert not list(tmp_path.iterdir()), "--help wrote files in the current folder"
