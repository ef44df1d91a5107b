"""utils.allocator: freed model-sized blocks are reused instead of page-faulted in again."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from utils import allocator

ROOT = Path(__file__).resolve().parent.parent
glibc_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc")

# Allocates, touches and frees a 64 MiB block with libc's malloc (as torch's CPU allocator
# does; numpy asks for huge pages) eight times, counting the minor page faults of the last seven
# rounds (the first one maps the pages in either way).
CHILD = """
import ctypes, json, resource, sys
sys.path.insert(0, {root!r})
from utils.allocator import keep_freed_memory
applied = keep_freed_memory() if {apply} else None
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
def touch():
    p = libc.malloc(64 << 20)
    ctypes.memset(p, 1, 64 << 20)
    libc.free(p)
touch()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(7):
    touch()
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
print(json.dumps({{"applied": applied, "faults": faults}}))
"""
PAGES = 7 * (64 << 20) // 4096  # what seven fresh mappings of 64 MiB fault in (4 KiB pages)


def run_child(apply, env_extra=None):
    env = {k: v for k, v in os.environ.items()
           if k not in allocator.USER_SETTINGS and k != "GLIBC_TUNABLES"}
    env.update(env_extra or {})
    out = subprocess.run([sys.executable, "-c", CHILD.format(root=str(ROOT), apply=apply)],
                         capture_output=True, text=True, env=env, check=True)
    return json.loads(out.stdout)


@glibc_only
def test_without_it_every_large_block_is_faulted_in_again():
    # The baseline the setting exists for: glibc unmaps a freed 64 MiB block.
    assert run_child(False)["faults"] > 0.9 * PAGES


@glibc_only
def test_with_it_freed_large_blocks_are_reused():
    got = run_child(True)
    assert got["applied"] is True
    assert got["faults"] < 0.05 * PAGES


@glibc_only
@pytest.mark.parametrize("env", [{"MALLOC_MMAP_MAX_": "65536"},
                                 {"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=131072"}])
def test_a_users_own_malloc_settings_win(env):
    got = run_child(True, env)
    assert got["applied"] is False
    assert got["faults"] > 0.9 * PAGES


def test_not_applied_off_linux(monkeypatch):
    monkeypatch.setattr(allocator.sys, "platform", "darwin")
    assert allocator.keep_freed_memory(environ={}) is False


def test_the_separator_applies_it_when_it_loads_its_model(monkeypatch, tmp_path):
    from processors import separation
    calls = []
    monkeypatch.setattr(separation, "keep_freed_memory", lambda: calls.append(1) or True)
    monkeypatch.setattr(separation, "_load_model", lambda *a, **k: object())
    sep = separation.DemucsSeparator("htdemucs", model_repo=tmp_path)
    assert calls == []
    sep.model
    assert calls == [1] and sep._keeps_memory is True


@pytest.mark.parametrize("release, calls", [(True, 4), (False, 0)])
def test_stem_writing_hands_free_memory_back_every_minute_of_audio(monkeypatch, tmp_path,
                                                                   release, calls):
    import numpy as np
    from processors import separation
    counted = []
    monkeypatch.setattr(separation, "release_free_memory", lambda: counted.append(1))
    sr = 100  # RELEASE_EVERY_S = 60 s is 6000 frames: after 6000, 12000, 18000, and the end
    blocks = ({"vocals": np.zeros((2, 1000), np.float32),
               "no_vocals": np.zeros((2, 1000), np.float32)} for _ in range(20))
    separation.write_stem_blocks(blocks, tmp_path, ["vocals", "no_vocals"], sr, 20000,
                                 release_memory=release)
    assert len(counted) == calls
    assert sorted(p.name for p in tmp_path.iterdir()) == ["no_vocals.wav", "vocals.wav"]
