"""The docstring examples of every module of the installed package.

Each module is imported by its installed name (`pwiser_tf.models.layers`, never a
top-level `models.layers` from the repository's folders) and its examples run with
the standard library's `doctest`, one test per module. A module that needs an
optional dependency which is not installed is skipped, with the dependency named.
"""
import doctest
import importlib
import io
import pkgutil

import pytest
import tensorflow as tf

# `models/` and `pipelines/` are installed inside the `pwiser_tf` namespace from
# folders of their own (setup.py), so an editable install does not list them under
# `pwiser_tf.__path__`: each namespace is walked from its own package.
NAMESPACES = ("pwiser_tf", "pwiser_tf.models", "pwiser_tf.pipelines")
# Optional dependencies (the extras of setup.py) whose absence skips a module.
OPTIONAL = {"apache_beam": "beam", "tfx": "tfx", "tfx_bsl": "tfx", "keras_rs": "bench"}
# pytest's default doctest flag, kept so that the examples read as before.
FLAGS = doctest.ELLIPSIS


def installed_modules():
    """The installed names of the package's modules, sorted, without duplicates.

    A package whose import fails is listed too (walk_packages would drop it in
    silence), so that its test reports the error."""
    names = set()
    for namespace in NAMESPACES:
        package = importlib.import_module(namespace)
        names.add(namespace)
        names.update(info.name for info in pkgutil.walk_packages(
            package.__path__, namespace + ".", onerror=names.add))
    return sorted(names)


def _missing_optional(error: ImportError):
    root = (error.name or "").split(".")[0]
    return root if root in OPTIONAL else None


def _module_param(name: str):
    """One test per module that has examples; a module that cannot be imported
    without an optional dependency is a skip that names it."""
    try:
        module = importlib.import_module(name)
    except ImportError as error:
        missing = _missing_optional(error)
        if missing is None:
            return pytest.param(name, id=name)  # the test imports it again and fails
        return pytest.param(name, id=name, marks=pytest.mark.skip(
            reason=f"{name} needs {missing} (pip install 'pwiser-tf[{OPTIONAL[missing]}]')"))
    if not any(test.examples for test in doctest.DocTestFinder().find(module, name)):
        return None
    return pytest.param(name, id=name)


MODULES = [p for p in map(_module_param, installed_modules()) if p is not None]


def test_the_walk_finds_every_namespace():
    found = installed_modules()
    assert all(n in found for n in NAMESPACES)
    assert "pwiser_tf.models.layers" in found and "pwiser_tf.pipelines.readers.idmap" in found


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    # The same random start for each module, so that no example depends on the order.
    tf.keras.utils.set_random_seed(0)
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    report = io.StringIO()
    for test in doctest.DocTestFinder().find(module, name):
        runner.run(test, out=report.write)
    assert runner.failures == 0, f"{name}: {runner.failures} failing examples\n{report.getvalue()}"
    if runner.tries == 0:
        pytest.skip(f"{name}: every example is marked +SKIP")
