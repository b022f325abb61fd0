"""The optimizers in plain NumPy, with fastoptim.functional's signatures.

The oracle of the tests and the baseline of the benchmarks: the textbook
update written with whole-array NumPy operations, in torch.optim's order of
operations, computing in the array's dtype.  The kernels evaluate the same
expressions element by element in the same order, so on the same inputs
they agree with this module bit for bit.  Unlike functional, this module
allocates temporaries and checks little.

Each rule's update is its `reference` in fastoptim.rules; the functions here
give it functional's signatures.
"""
from .rules import VARIANTS
from .rules._codegen import (compile_function, field_arguments, fixed_namespace, functional_parameters,
                              functional_parameters_doc, numpydoc)

__all__ = [variant.function for _, variant in VARIANTS]


_ARRAYS_DOC = (("param", "ndarray", "C-contiguous float32 or float64 array, updated in place."),
               ("grad", "ndarray", "Its gradient: same shape and dtype."))


def _example(rule, variant):
    """A doctest: one step from zero state moves the param down a positive gradient."""
    required = [slot.arg for slot in rule.state if slot.positional and slot.when is None]
    lines = [">>> import numpy as np", f">>> from fastoptim import {__name__.rsplit('.', 1)[-1]}",
             ">>> w, g = np.ones(4, np.float32), np.ones(4, np.float32)"]
    if required:
        lines.append(f">>> {', '.join(required)} = {', '.join('np.zeros_like(w)' for _ in required)}")
    lines += [f">>> {__name__.rsplit('.', 1)[-1]}.{variant.function}(w, g, {''.join(a + ', ' for a in required)}step=1)",
              ">>> bool((w < 1).all())", "True"]
    return lines


def _generate(rule, variant):
    parameters, namespace = functional_parameters(rule, variant)
    namespace.update(fixed_namespace(variant), _reference=rule.reference)
    state = ", ".join(f"{slot.name!r}: {slot.arg}" for slot in rule.state)
    fields = ", ".join(f"{name}={value}" for name, value in zip(rule.field_names, field_arguments(rule, variant)))
    body = [f"_reference(param, grad, {{{state}}}, step=step, grad_scale=grad_scale, lr=lr, maximize=maximize, "
            f"{fields})"]
    summary = f"{variant.summary[:1].upper()}{variant.summary[1:]}"
    doc = numpydoc(f"{summary}, in plain NumPy (fastoptim.functional.{variant.function}'s signature).",
                   rule, functional_parameters_doc(rule, variant), _example(rule, variant), extra=_ARRAYS_DOC,
                   checked=False)
    function = compile_function(variant.function, parameters, body, namespace, doc)
    function.__module__ = __name__
    return function


for _rule, _variant in VARIANTS:
    globals()[_variant.function] = _generate(_rule, _variant)
del _rule, _variant
