"""The docstrings' examples run (doctests), and the public faces have numpydoc docstrings.

doctest's own finder skips the generated functions (their globals are not their
module's), so the objects are listed here from each module's __all__.
"""
import dataclasses
import doctest
import importlib
import inspect

import numpy as np
import pytest
from mpi_harness import no_mpi_init

import fastoptim
from fastoptim.rules import VARIANTS

no_mpi_init()  # fastoptim.distributed's examples run without MPI_Init (their collective lines are skipped)

MODULES = ["fastoptim", "fastoptim.functional", "fastoptim.reference", "fastoptim.schedules",
           "fastoptim.typing", "fastoptim.torch", "fastoptim.train", "fastoptim.distributed",
           "fastoptim.demos.problems", "fastoptim.hogwild", "fastoptim.blockwise8"]
# Hand-written modules whose every public class, function and method has a full numpydoc docstring.
NUMPYDOC_MODULES = ["fastoptim.train", "fastoptim.distributed", "fastoptim.demos.problems", "fastoptim.hogwild",
                    "fastoptim.blockwise8"]


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


def _hand_written_objects():
    for module in NUMPYDOC_MODULES:
        for name, obj in _public_objects():
            if name.startswith(module + ".") and name.count(".") == module.count(".") + 1:
                yield name, obj


def _documented_names(section):
    # numpydoc keeps "a, b : list" as one entry: one name each
    return [n.strip() for p in section for n in p.name.split(",")]


def _signature_names(function, skip_first):
    parameters = list(inspect.signature(function).parameters.values())[1 if skip_first else 0:]
    return [("**" if p.kind is p.VAR_KEYWORD else "*" if p.kind is p.VAR_POSITIONAL else "") + p.name
            for p in parameters]


def _returns_something(function):
    annotation = inspect.signature(function).return_annotation
    return annotation not in (None, "None", inspect.Signature.empty)


def _public_methods(cls):
    for klass in cls.__mro__:
        if klass is object or klass.__module__.split(".")[0] != "fastoptim":
            continue
        for attribute, member in vars(klass).items():
            if (attribute.startswith("_") and attribute != "__call__") or not (
                    isinstance(member, (property, staticmethod, classmethod)) or inspect.isfunction(member)):
                continue  # private, or a field (a dataclass's defaults)
            yield attribute, getattr(cls, attribute) if not isinstance(member, property) else member


HAND_WRITTEN = dict(_hand_written_objects())


@pytest.mark.parametrize("name", sorted(HAND_WRITTEN))
def test_hand_written_numpydoc(name):
    """Every public class and function: Parameters (exactly the signature's), Returns when it
    returns something, Raises and Examples; every public method: its Parameters and Returns."""
    from numpydoc.docscrape import ClassDoc, FunctionDoc, NumpyDocString
    obj = HAND_WRITTEN[name]
    assert name in TESTS, f"{name} has no example that runs"
    if inspect.isclass(obj) and issubclass(obj, BaseException):
        return  # an exception documents when it is raised; its example is checked above
    if inspect.isclass(obj):
        parsed = ClassDoc(obj, config={"show_class_members": False})
        assert _documented_names(parsed["Parameters"]) == _signature_names(obj.__init__, True), name
        assert parsed["Examples"], name
        assert parsed["Raises"] or dataclasses.is_dataclass(obj), name  # a plain record raises nothing of its own
        for attribute, member in _public_methods(obj):
            where = f"{name}.{attribute}"
            if isinstance(member, property):
                assert member.__doc__, where
                continue
            doc = NumpyDocString(inspect.getdoc(member) or "")
            assert doc["Summary"], where
            skip_first = not isinstance(inspect.getattr_static(obj, attribute), staticmethod)
            assert _documented_names(doc["Parameters"]) == _signature_names(member, skip_first), where
            assert bool(doc["Returns"]) == _returns_something(member), where
    else:
        parsed = FunctionDoc(obj)
        assert _documented_names(parsed["Parameters"]) == _signature_names(obj, False), name
        assert bool(parsed["Returns"]) == _returns_something(obj), name
        assert parsed["Raises"] and parsed["Examples"], name
