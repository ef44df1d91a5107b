"""OpenBLAS's idle workers sleep instead of spinning on the cores the render needs."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from utils.native_threads import quiet_idle_blas_threads

ROOT = Path(__file__).resolve().parents[1]
# CPU seconds the process spends while its main thread sleeps after a BLAS call: OpenBLAS's
# workers spinning (about a tenth of a second each), or nothing
CHILD = """
import sys, time
sys.path.insert(0, {root!r})
{first}
import numpy
a = numpy.ones(1 << 18)
a @ a
t = time.process_time()
time.sleep(0.4)
print(time.process_time() - t)
"""
BLAS_ENV = ("OPENBLAS_THREAD_TIMEOUT", "OPENBLAS_NUM_THREADS", "GOTO_THREAD_TIMEOUT",
            "OMP_NUM_THREADS")


def _idle_cpu(first):
    env = {k: v for k, v in os.environ.items() if k not in BLAS_ENV}
    out = subprocess.run([sys.executable, "-c", CHILD.format(root=str(ROOT), first=first)],
                         capture_output=True, text=True, env=env, check=True)
    return float(out.stdout)


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="OpenBLAS starts no workers on 1 core")
@pytest.mark.parametrize("package", ["processors", "audio_utils", "web"])
def test_importing_vtrace_first_stops_the_spinning(package):
    spinning = _idle_cpu("")
    if spinning < 0.03:
        pytest.skip(f"this numpy's BLAS does not spin its idle workers ({spinning:.3f} s)")
    assert _idle_cpu(f"import {package}") < 0.01 < spinning


def test_a_users_own_setting_wins():
    assert quiet_idle_blas_threads({"OPENBLAS_THREAD_TIMEOUT": "20"}) == "20"
    env = {}
    assert quiet_idle_blas_threads(env) == "4" and env == {"OPENBLAS_THREAD_TIMEOUT": "4"}
