"""The README's code snippets run as written."""
import os
import re
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow  # the snippets train, one in a subprocess

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def snippet(name):
    text = open(os.path.join(REPO, "README.md"), encoding="utf-8").read()
    match = re.search(rf"<!-- snippet: {name} -->\n```python\n(.*?)```", text, re.S)
    assert match, f"README.md has no snippet {name!r}"
    return match.group(1)


def test_tfrs_snippet_runs_on_tf_keras():
    exec(compile(snippet("tfrs"), "README.md:tfrs", "exec"), {})


def test_keras_snippet_runs_on_tf_keras():
    exec(compile(snippet("keras"), "README.md:keras", "exec"), {})


def test_keras_snippet_runs_on_keras_3():
    env = dict(os.environ, TF_USE_LEGACY_KERAS="0", TF_CPP_MIN_LOG_LEVEL="3")
    code = "import keras; assert keras.__version__.startswith('3.')\n" + snippet("keras")
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
