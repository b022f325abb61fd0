"""Argument checks: every check of a number, a flag or a count in fastoptim.

Each check returns the value converted (float, bool or int) or raises a
TypeError (wrong kind) or ValueError (out of range) that names the argument,
its value and where it came from.  Two wordings exist, because users and
tests know both:

  - with a `label`, torch.optim's text first, then ours: "Invalid learning rate: -1
    (param_groups[0]); lr must be finite and >= 0" (optimizer hyperparameters: users and
    torch's own tests match the leading "Invalid learning rate: -1"); with name_first,
    for arguments torch has no text for (schedules): "Invalid argument: lr=-1
    (constant); must be finite and >= 0";
  - without one, the plain form: "max_norm must be >= 0.0, got -1"
    (training helpers, estimators).

NaN is never accepted, nor infinities unless `allow_inf`.
"""
import math
import numbers
import operator
from typing import Any, TypeGuard

import numpy as np

_REAL_TYPES = (float, int, np.floating, np.integer)
_BOOL_TYPES = (bool, np.bool_)


def is_real(value: object) -> bool:
    # Concrete types first: an ABC check is slower and grows abc's caches.
    if type(value) is float:
        return True
    if isinstance(value, _BOOL_TYPES):
        return False
    return isinstance(value, _REAL_TYPES) or isinstance(value, numbers.Real)


def is_integer(value: object) -> TypeGuard[int | np.integer[Any]]:
    return isinstance(value, (int, np.integer)) and not isinstance(value, _BOOL_TYPES)


def _scalar(value: Any) -> Any:
    """A 0-d NumPy array's value as a NumPy scalar (np.array(0.1) is a number), else value."""
    if isinstance(value, np.ndarray) and value.ndim == 0:
        return value[()]
    return value


def _labelled(label: str, name: str, value: Any, where: str, problem: str, name_first: bool,
              shown: str | None = None, head: str | None = None) -> str:
    """The "Invalid {label}: ..." wording (see the module docstring); `shown`: the value as
    torch prints it (str) where that differs from repr; `head`: torch's own text where it
    is not "Invalid {label}: {value}" (Muon's "Learning rate should be >= 0 but is: -1")."""
    if name_first:
        return f"Invalid {label}: {name}={value!r}{where}; {problem}"
    if head is None:
        head = f"Invalid {label}: {repr(value) if shown is None else shown}"
    return f"{head}{where}; {name} {problem}"


def real(value: Any, name: str, *, low: float = -math.inf, high: float = math.inf, low_open: bool = False,
         high_open: bool = False, allow_inf: bool = False, label: str | None = None, where: str = "",
         name_first: bool = False, head: str | None = None) -> float:
    """A real number in the bounds (closed unless *_open), as a float.

    A 0-d array of a real dtype is a number too.
    label/where: torch.optim's wording, "Invalid {label}: {value}{where}; {name} must be ..."
    (the value printed as torch prints it; where appended as given, e.g. " (param_groups[1])");
    head: torch's text in place of "Invalid {label}: {value}" for a bad value;
    name_first: "Invalid {label}: {name}={value!r}{where}; must be ...".
    """
    value = _scalar(value)
    if not is_real(value):
        if label is not None:
            raise TypeError(_labelled(label, name, value, where,
                                      "expected a real number" if name_first else "must be a real number", name_first))
        raise TypeError(f"{name} must be a real number, got {value!r}")
    x = float(value)
    finite = math.isfinite(x) or (allow_inf and not math.isnan(x))
    above = x > low if low_open else x >= low
    below = x < high if high_open else x <= high
    if finite and above and below:
        return x
    if label is not None:
        lo, hi = ("(" if low_open else "[") + f"{low:g}", f"{high:g}" + (")" if high_open else "]")
        bound = f">= {low:g}" if math.isinf(high) else f"in {lo}, {hi}"
        problem = "must be finite" if math.isinf(low) and math.isinf(high) else f"must be finite and {bound}"
        raise ValueError(_labelled(label, name, value, where, problem, name_first,
                                   shown=str(value), head=head))
    if not finite:
        raise ValueError(f"{name} must be finite, got {value!r}")
    if not above:
        raise ValueError(f"{name} must be {'>' if low_open else '>='} {low}, got {value!r}")
    raise ValueError(f"{name} must be {'<' if high_open else '<='} {high}, got {value!r}")


def flag(value: Any, name: str, where: str = "") -> bool:
    """True or False (also NumPy bools, 0-d bool arrays, and the integers 0 and 1), as a bool."""
    value = _scalar(value)
    if isinstance(value, _BOOL_TYPES) or (isinstance(value, (int, np.integer)) and value in (0, 1)):
        return bool(value)
    raise TypeError(f"Invalid {name}={value!r}{where}; expected True or False")


def integer(value: Any, name: str, *, minimum: int | None = None, label: str | None = None, where: str = "",
            kind: str = "an integer", name_first: bool = False) -> int:
    """An integer (not a bool) >= minimum, as an int.

    label/where/name_first: the wordings of real(); `kind` says what was expected
    ("an integer number of steps").
    """
    if not is_integer(value):
        if label is not None:
            raise TypeError(_labelled(label, name, value, where,
                                      f"expected {kind}" if name_first else f"must be {kind}", name_first))
        raise TypeError(f"{name} must be {kind}, got {value!r}")
    if minimum is not None and value < minimum:
        if label is not None:
            raise ValueError(_labelled(label, name, value, where, f"must be >= {minimum}", name_first,
                                       shown=str(value)))
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return int(value)


def _index(value: Any, name: str, what: str) -> int:
    """value as an int (anything with __index__), or a TypeError saying what was expected."""
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be {what}, got {value!r}") from None


def positive_int(value: Any, name: str, allow_none: bool = False) -> int | None:
    """An integer >= 1 (anything with __index__), as an int; None passes if allow_none."""
    if value is None and allow_none:
        return None
    what = f"a positive integer{' or None' if allow_none else ''}"
    n = _index(value, name, what)
    if n < 1:
        raise ValueError(f"{name} must be {what}, got {n}")
    return n


def step_count(value: Any, name: str) -> int:
    """A number of steps taken: an integer >= 0, as an int."""
    if not is_integer(value) or value < 0:
        raise ValueError(f"{name} must be an integer >= 0 (the number of steps taken), got {value!r}")
    return int(value)


def seed(value: Any, name: str = "seed") -> int:
    """A 64-bit integer seed: `value` itself (>= 0), or fresh entropy when it is None."""
    if value is None:
        return int(np.random.SeedSequence().generate_state(1, np.uint64)[0])
    s = _index(value, name, "an integer or None")
    if s < 0:
        raise ValueError(f"{name} must be >= 0, got {s}")
    return s & 0xFFFFFFFFFFFFFFFF
