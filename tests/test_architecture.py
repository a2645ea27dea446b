"""Dependencies flow one way (docs/architecture.md): checked on the import statements."""
import ast
import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def imports(path):
    tree = ast.parse(open(path, encoding="utf-8").read(), path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield node.module


def python_files(folder):
    for root, _, files in os.walk(os.path.join(REPO, folder)):
        yield from (os.path.join(root, f) for f in files if f.endswith(".py"))


CLI_LAYER = ("pwiser_tf.commands", "pwiser_tf.training", "pwiser_tf.evaluation",
             "pwiser_tf.experiment", "pwiser_tf.sweep", "pwiser_tf.report",
             "pwiser_tf.tfx_trainer", "pwiser_tf.cli")


@pytest.mark.parametrize("path, forbidden", [
    *[(os.path.join(REPO, "pwiser_tf", f), ("pwiser_tf.models", "pwiser_tf.pipelines"))
      for f in ("kernel.py", "losses.py", "metrics.py", "errors.py")],
    *[(p, ("pwiser_tf.models", "tensorflow_recommenders", "keras", "tf_keras") + CLI_LAYER)
      for p in python_files("pipelines")],
    *[(p, CLI_LAYER) for p in python_files("models")],
])
def test_dependencies_flow_one_way(path, forbidden):
    for name in imports(path):
        assert not any(name == f or name.startswith(f + ".") for f in forbidden), \
            f"{os.path.relpath(path, REPO)} imports {name}"
