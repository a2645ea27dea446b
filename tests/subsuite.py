"""Runs a folder of tests in its own pytest process, for settings that are fixed
when TensorFlow or Keras loads (the Keras flavour, the logical devices)."""
import os
import re
import subprocess
import sys

TESTS = os.path.dirname(os.path.abspath(__file__))


def assert_suite_passes(folder: str, **env: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         os.path.join(TESTS, folder)],
        env=dict(os.environ, **env), capture_output=True, text=True,
        cwd=os.path.dirname(TESTS))
    assert proc.returncode == 0, proc.stdout[-8000:] + proc.stderr[-4000:]
    summary = proc.stdout.strip().splitlines()[-1]
    assert re.search(r"\b\d+ passed\b", summary) and not re.search(
        r"\b\d+ (failed|errors?|xpassed)\b", summary), proc.stdout[-4000:]
