"""Runs the Keras 3 tests (`tests/keras3/`) in their own process.

The Keras flavour is fixed at import, and this session runs tf-keras, so the
Keras 3 half of the suite needs a fresh interpreter.
"""
import os
import re
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def test_keras3_suite_passes():
    env = dict(os.environ, PWISER_TEST_KERAS3="1", TF_USE_LEGACY_KERAS="0")
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         os.path.join(HERE, "keras3")],
        env=env, capture_output=True, text=True, cwd=os.path.dirname(HERE))
    assert proc.returncode == 0, proc.stdout[-8000:] + proc.stderr[-4000:]
    summary = proc.stdout.strip().splitlines()[-1]
    assert re.search(r"\b\d+ passed\b", summary) and "failed" not in summary \
        and "error" not in summary, proc.stdout[-4000:]
