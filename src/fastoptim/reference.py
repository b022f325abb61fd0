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
from .rules._codegen import (ARRAYS_DOC, CLOSURE_DOC, array_example, closure_example, closure_parameters,
                              closure_parameters_doc, compile_function, field_arguments, fixed_namespace,
                              functional_parameters, functional_parameters_doc, maximize_argument, numpydoc)

__all__ = [variant.function for _, variant in VARIANTS]


def _generate(rule, variant):
    if rule.closure:
        return _generate_closure_form(rule, variant)
    parameters, namespace = functional_parameters(rule, variant)
    namespace.update(fixed_namespace(variant), _reference=rule.reference)
    state = ", ".join(f"{slot.name!r}: {slot.arg}" for slot in rule.state)
    fields = ", ".join(f"{name}={value}" for name, value in zip(rule.field_names, field_arguments(rule, variant)))
    body = [f"_reference(param, grad, {{{state}}}, step=step, grad_scale=grad_scale, lr=lr, "
            f"maximize={maximize_argument(rule)}, {fields})"]
    summary = f"{variant.summary[:1].upper()}{variant.summary[1:]}"
    doc = numpydoc(f"{summary}, in plain NumPy (fastoptim.functional.{variant.function}'s signature).",
                   rule, functional_parameters_doc(rule, variant), array_example(__name__, rule, variant), extra=ARRAYS_DOC,
                   checked=False)
    function = compile_function(variant.function, parameters, body, namespace, doc)
    function.__module__ = __name__
    return function


def _generate_closure_form(rule, variant):
    """reference(params, closure, state, *, lr, maximize, **fields) with functional's signature."""
    parameters, namespace = closure_parameters(rule, variant)
    namespace.update(fixed_namespace(variant), _reference=rule.reference)
    fields = ", ".join(f"{name}={value}" for name, value in zip(rule.field_names, field_arguments(rule, variant)))
    body = [f"return _reference(params, closure, state, lr=lr, maximize=False, {fields})"]
    summary = f"{variant.summary[:1].upper()}{variant.summary[1:]}"
    doc = numpydoc(f"{summary}, in plain NumPy (fastoptim.functional.{variant.function}'s signature); returns "
                   "the loss of the first evaluation.", rule, closure_parameters_doc(rule, variant),
                   closure_example(__name__, variant), extra=CLOSURE_DOC, checked=False)
    function = compile_function(variant.function, parameters, body, namespace, doc, returns="float")
    function.__module__ = __name__
    return function


for _rule, _variant in VARIANTS:
    globals()[_variant.function] = _generate(_rule, _variant)
del _rule, _variant
