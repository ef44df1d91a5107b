"""The README documents what the code has: every option with its config key, every preset."""

from dataclasses import fields
from pathlib import Path

from config_loader import PRESETS, Config

README = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")


def test_every_option_has_a_row_in_the_readme():
    missing = [f.name for f in fields(Config) if f"| `{f.name}` |" not in README]
    assert missing == []


def test_every_preset_is_documented_with_what_it_sets():
    for name, settings in PRESETS.items():
        row = next(line for line in README.splitlines() if line.startswith(f"| `{name}` |"))
        for key in settings:
            assert f"`{key}:" in row, (name, key)
