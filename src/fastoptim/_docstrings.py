"""Docstring sections that several public objects share, written once.

A line holding only ``{{name}}`` in a docstring is replaced by the block
``name``, indented like the placeholder (scipy's ``doccer`` does the same with
``%(name)s``).  The filled docstring is what help(), doctest, numpydoc and
Sphinx read.

>>> from fastoptim._docstrings import fill
>>> @fill(seed="seed : int\\n    The seed.")
... def f(seed: int) -> None:
...     '''Do it.
...
...     Parameters
...     ----------
...     {{seed}}
...     '''
>>> print(f.__doc__.splitlines()[-2])
        The seed.
"""
import re
import textwrap
from typing import Callable, TypeVar

_T = TypeVar("_T")

_PLACEHOLDER = re.compile(r"^([ ]*)\{\{(\w+)\}\}$", re.MULTILINE)


def fill(**blocks: str) -> Callable[[_T], _T]:
    """Replace each ``{{name}}`` line of the decorated object's docstring by ``blocks[name]``."""
    def decorate(obj: _T) -> _T:
        doc = obj.__doc__
        if doc is None:
            raise ValueError(f"{obj!r} has no docstring to fill")

        def block(match: "re.Match[str]") -> str:
            name = match.group(2)
            if name not in blocks:
                raise KeyError(f"no docstring block {name!r} for {obj!r}")
            return textwrap.indent(textwrap.dedent(blocks[name]).strip("\n"), match.group(1))
        obj.__doc__ = _PLACEHOLDER.sub(block, doc)
        return obj
    return decorate
