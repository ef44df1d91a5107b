"""The layout's rules, checked: imports run one way, every Config field has a role, and what
is derived from the roles (resume key, separator arguments, render settings) stays derived."""

import ast
import inspect
from dataclasses import fields
from pathlib import Path

import pytest

from config_loader import ROLES, Config
from processors.render import RenderSettings
from processors.separation import DemucsSeparator
from processors.vtrace_core import BLEND_MODES
from tests.conftest import leftovers

ROOT = Path(__file__).resolve().parents[1]
ENTRY = {"main", "config_loader", "logger", "web"}
# A folder may import only the folders listed for it (and never the entry points).
ALLOWED = {"utils": {"utils"}, "audio_utils": {"utils", "audio_utils"},
           "processors": {"utils", "audio_utils", "processors"}}


def first_party_imports(path):
    """Top-level first-party names imported anywhere in ``path`` (lazy imports included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        for name in names:
            top = name.split(".")[0]
            if top in ALLOWED or top in ENTRY:
                found.add(top)
    return found


def violations(root):
    bad = []
    for folder, allowed in ALLOWED.items():
        for path in sorted((root / folder).rglob("*.py")):
            for top in first_party_imports(path) - allowed:
                bad.append(f"{path.relative_to(root)} imports {top}")
    return bad


def test_imports_run_one_way():
    assert violations(ROOT) == []


def test_the_direction_check_catches_a_wrong_import(tmp_path):
    for folder in ALLOWED:
        (tmp_path / folder).mkdir()
    (tmp_path / "utils" / "bad.py").write_text("def f():\n    from processors import engine\n")
    (tmp_path / "audio_utils" / "bad.py").write_text("import config_loader\n")
    assert violations(tmp_path) == ["utils/bad.py imports processors",
                                    "audio_utils/bad.py imports config_loader"]


def test_every_config_field_has_a_role():
    missing = [f.name for f in fields(Config) if f.metadata.get("role") not in ROLES]
    assert missing == []


def test_resume_params_are_the_stems_and_outputs_fields():
    cfg = Config()
    by_role = {r: {f.name for f in fields(Config) if f.metadata["role"] == r} for r in ROLES}
    assert set(cfg.params()) == by_role["stems"] | by_role["outputs"]
    assert {"thread", "quiet", "output", "device", "block_seconds"} <= by_role["run"]
    assert {"model", "shifts", "other_method"} <= by_role["stems"]


def test_separator_takes_exactly_the_stems_fields():
    params = set(inspect.signature(DemucsSeparator).parameters)
    stems = set(Config().settings("stems"))
    assert stems <= params
    # how it runs, not what it makes; all_sources: which stems a job reads (Config.multi_stem),
    # so more files, each one the same as a two-stem separation's
    assert params - stems == {"device", "thread", "progress", "all_sources"}


def test_render_settings_are_config_fields_that_change_outputs_or_nothing():
    cfg = Config()
    roles = {f.name: f.metadata["role"] for f in fields(Config)}
    for f in fields(RenderSettings):
        assert f.name in roles, f"RenderSettings.{f.name} is not a Config field"
        # block_seconds and thread only change how the work is split and run in parallel:
        # block results equal whole ones
        assert roles[f.name] == "outputs" or f.name in ("block_seconds", "thread")
    assert RenderSettings.of(cfg).voice_alpha == cfg.voice_alpha


def test_config_blend_modes_are_the_cores():
    choices = next(f for f in fields(Config) if f.name == "blend_mode").metadata["choices"]
    assert tuple(choices) == BLEND_MODES


@pytest.mark.parametrize("name", ["blended.wav", "x_vtrace.json", "vocals.wav"])
def test_plain_outputs_are_not_temporary(name):
    from utils.atomic_files import is_temp

    assert not is_temp(Path("/out") / name)


def test_every_temporary_scheme_is_recognised(tmp_path):
    import tempfile

    from audio_utils.audio_io import BlockWriter
    from utils.atomic_files import WORK_PREFIX, atomic_path, is_temp, new_temp

    seen = [new_temp(tmp_path / "a.wav", ".wav")]
    writer = BlockWriter(tmp_path / "b.wav", 44100, 2)
    seen.append(writer.tmp_path)
    with atomic_path(tmp_path / "c.json") as tmp:
        seen.append(tmp)
        with tempfile.TemporaryDirectory(prefix=WORK_PREFIX, dir=tmp_path) as work:
            seen.append(Path(work))
            assert all(is_temp(p) for p in seen)
            assert leftovers(tmp_path) == sorted(str(p.relative_to(tmp_path)) for p in seen)
        tmp.write_text("{}")
    writer.discard()
    seen[0].unlink()
    assert leftovers(tmp_path) == []
