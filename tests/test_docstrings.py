"""The docstrings' examples run (doctests), and the public faces have numpydoc docstrings.

doctest's own finder skips the generated functions (their globals are not their
module's), so the objects are listed here from each module's __all__.
"""
import doctest
import importlib
import inspect

import numpy as np
import pytest

import fastoptim
from fastoptim.rules import VARIANTS

MODULES = ["fastoptim", "fastoptim.functional", "fastoptim.reference", "fastoptim.schedules",
           "fastoptim.typing", "fastoptim.torch", "fastoptim.train"]


def _public_objects():
    seen = set()
    for name in MODULES:
        module = importlib.import_module(name)
        yield name, module
        for attribute in getattr(module, "__all__", ()):
            obj = getattr(module, attribute)
            if not (inspect.isclass(obj) or inspect.isroutine(obj)) or id(obj) in seen:
                continue  # modules are visited themselves; type aliases document themselves
            seen.add(id(obj))
            yield f"{name}.{attribute}", obj


def _doctests():
    finder = doctest.DocTestFinder(exclude_empty=True)
    for name, obj in _public_objects():
        for test in finder.find(obj, name, globs={}):
            if test.examples:
                yield test


TESTS = {test.name: test for test in _doctests()}


@pytest.mark.parametrize("name", sorted(TESTS))
def test_docstring_examples(name):
    test = TESTS[name]
    report = []
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    with np.printoptions(legacy=False):
        result = runner.run(test, out=report.append)
    assert result.failed == 0, "".join(report)


def test_every_optimizer_face_has_an_example():
    names = set(TESTS)
    for _, variant in VARIANTS:
        for where in ("fastoptim", "fastoptim.torch"):
            assert f"{where}.{variant.name}" in names, (where, variant.name)
        for where in ("fastoptim.functional", "fastoptim.reference"):
            assert f"{where}.{variant.function}" in names, (where, variant.function)


@pytest.mark.parametrize("name", [f"{m}.{v.function}" for m in ("functional", "reference") for _, v in VARIANTS]
                         + [v.name for _, v in VARIANTS])
def test_generated_numpydoc_documents_every_parameter(name):
    from numpydoc.docscrape import ClassDoc, FunctionDoc
    obj = fastoptim
    for part in name.split("."):
        obj = getattr(obj, part)
    function = obj.__init__ if inspect.isclass(obj) else obj
    parsed = ClassDoc(obj) if inspect.isclass(obj) else FunctionDoc(obj)
    documented = [p.name for p in parsed["Parameters"]]
    assert parsed["Examples"] and (parsed["Raises"] or name.startswith("reference.")), name
    expected = [p for p in inspect.signature(function).parameters if p != "self"]
    assert documented == expected, name
