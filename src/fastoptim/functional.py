"""One function per optimizer: check everything, then update in place.

Each takes the param, its grad and its state arrays, the 1-based `step`
and the hyperparameters, with torch.optim's names, semantics and defaults
(betas as beta1 and beta2).  grad_scale (None: 1) divides the grad inside
the kernel, as torch's fused kernels do.  Arrays must be C-contiguous, of
one float dtype (float32 or float64) and shape; param and state must be
writeable.  Nothing is written unless every check passes, and nothing is
allocated.  fastoptim.reference has the same functions in plain NumPy.

A closure-driven rule (lbfgs) has the form
``name(params, closure, state, *, hyperparameters)``: one step of its optimizer class, with torch's state dict
passed in and updated in place; the closure returns (loss, grads).

The functions are generated from fastoptim.rules: one per face of a rule
(adam and adamw are one rule).
"""
from numpy import ndim as _ndim
from numpy import shape as _shape

from ._ext.checks import SCALAR
from ._ext.step import run_single
from .rules import VARIANTS, kernel_id
from .rules._codegen import (ARRAYS_DOC, CLOSURE_DOC, array_example, closure_example, closure_parameters,
                              closure_parameters_doc, compile_function, field_arguments, fixed_namespace,
                              functional_parameters, functional_parameters_doc, maximize_argument, numpydoc)

__all__ = [variant.function for _, variant in VARIANTS]


def _require(array, name, reason, shape="shaped like param"):
    if array is None:
        raise ValueError(f"{name} is required when {reason}; pass an array {shape} "
                         f"(zeros before the first step)")
    return array


def _state_operand(rule, slot):
    """Source of a state operand: the argument, or None when the options (or the param's
    ndim) leave the slot unused."""
    conditions = []
    if slot.when is not None:
        index = 2 + rule.field_names.index(slot.when[0])
        conditions.append(f"hyper[{index}]" if slot.when[1] is bool else f"_used_{slot.arg}(hyper[{index}])")
    if slot.ndims is not None:
        conditions.append(f"_slots[{rule.state.index(slot)}].serves(_ndim(param))")
    if not conditions:
        return slot.arg
    reason = " and ".join(([slot.reason] if slot.when is not None else [])
                          + ([slot.ndim_reason] if slot.ndims is not None else []))
    shape = "of the slot's shape" if slot.reduced is not None else "shaped like param"
    return f"(_require({slot.arg}, {slot.arg!r}, {reason!r}, {shape!r}) if {' and '.join(conditions)} else None)"


def _expected(rule):
    """run_single's `expected` for the rule's operands: None when every state array is like the
    param; a function of the param when some slot's shape depends on it."""
    if not rule.special_operands:
        return None
    kinds = tuple(SCALAR if slot.scalar else None for slot in rule.state)
    if not any(slot.reduced is not None for slot in rule.state):
        return (None, None) + kinds
    def expected(param):
        shape = _shape(param)
        return (None, None) + tuple(slot.shape(shape) if slot.reduced is not None and slot.serves(len(shape))
                                    else kind for slot, kind in zip(rule.state, kinds))
    return expected


def _generate(rule, variant):
    if rule.closure:
        return _generate_closure_form(rule, variant)
    parameters, namespace = functional_parameters(rule, variant)
    operands = ["param", "grad"] + [_state_operand(rule, slot) for slot in rule.state]
    # A rule at the Python level runs its own per-tensor step, given the Rule for the kernel number.
    if rule.python is None:
        run, rule_arg, expected = run_single, kernel_id(rule), ", _expected"
        if callable(_expected(rule)):
            expected = ", _expected(param)"
    else:
        run, rule_arg, expected = rule.python.run_single, rule, ""
    namespace.update(fixed_namespace(variant), _check=rule.check, _run=run, _require=_require,
                     _rule=rule_arg, _names=("param", "grad") + tuple(s.arg for s in rule.state),
                     _expected=_expected(rule), _slots=rule.state, _ndim=_ndim,
                     **{f"_used_{s.arg}": s.when[1] for s in rule.state if s.when is not None})
    body = [f"hyper = _check(lr, {maximize_argument(rule)}, {', '.join(field_arguments(rule, variant))}, '')",
            f"_run(_rule, ({', '.join(operands)},), _names, step, hyper, grad_scale{expected})"]
    torch_name = f" (torch.optim.{variant.torch_name})" if variant.torch_name else ""
    summary = f"{variant.summary[:1].upper()}{variant.summary[1:]}{torch_name}"
    doc = numpydoc(f"{summary}: update param and its state in place, one tensor.", rule,
                   functional_parameters_doc(rule, variant), array_example(__name__, rule, variant), extra=ARRAYS_DOC)
    function = compile_function(variant.function, parameters, body, namespace, doc)
    function.__module__ = __name__
    return function


def _generate_closure_form(rule, variant):
    parameters, namespace = closure_parameters(rule, variant)
    namespace.update(fixed_namespace(variant), _check=rule.check, _run=rule.python.run_closure)
    names = ("lr",) + rule.field_names
    body = [f"hyper = _check(lr, False, {', '.join(field_arguments(rule, variant))}, '')",
            "return _run(params, closure, state, "
            + ", ".join(f"{name}=hyper[{0 if name == 'lr' else i + 1}]" for i, name in enumerate(names)) + ")"]
    torch_name = f" (torch.optim.{variant.torch_name})" if variant.torch_name else ""
    summary = f"{variant.summary[:1].upper()}{variant.summary[1:]}{torch_name}"
    doc = numpydoc(f"{summary}: one step over params (a list of arrays, updated in place); returns the loss "
                   "of the first evaluation.", rule, closure_parameters_doc(rule, variant),
                   closure_example(__name__, variant), extra=CLOSURE_DOC)
    function = compile_function(variant.function, parameters, body, namespace, doc, returns="float")
    function.__module__ = __name__
    return function


for _rule, _variant in VARIANTS:
    globals()[_variant.function] = _generate(_rule, _variant)
del _rule, _variant
