"""One function per optimizer: check everything, then update in place.

Each takes the param, its grad and its state arrays, the 1-based `step`
and the hyperparameters, with torch.optim's names, semantics and defaults
(betas as beta1 and beta2).  grad_scale (None: 1) divides the grad inside
the kernel, as torch's fused kernels do.  Arrays must be C-contiguous, of
one float dtype (float32 or float64) and shape; param and state must be
writeable.  Nothing is written unless every check passes, and nothing is
allocated.  fastoptim.reference has the same functions in plain NumPy.

The functions are generated from fastoptim.rules: one per face of a rule
(adam and adamw are one rule).
"""
from ._ext.step import run_single
from .rules import VARIANTS, kernel_id
from .rules._codegen import (compile_function, field_arguments, fixed_namespace, functional_parameters,
                              functional_parameters_doc, numpydoc)

__all__ = [variant.function for _, variant in VARIANTS]


def _require(array, name, reason):
    if array is None:
        raise ValueError(f"{name} is required when {reason}; pass an array shaped like param "
                         f"(zeros before the first step)")
    return array


def _state_operand(rule, slot):
    """Source of a state operand: the argument, or None when the options leave the slot unused."""
    if slot.when is None:
        return slot.arg
    index = 2 + rule.field_names.index(slot.when[0])
    used = f"hyper[{index}]" if slot.when[1] is bool else f"_used_{slot.arg}(hyper[{index}])"  # a flag: itself
    return f"(_require({slot.arg}, {slot.arg!r}, {slot.reason!r}) if {used} else None)"


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
    operands = ["param", "grad"] + [_state_operand(rule, slot) for slot in rule.state]
    namespace.update(fixed_namespace(variant), _check=rule.check, _run=run_single, _require=_require,
                     _rule=kernel_id(rule), _names=("param", "grad") + tuple(s.arg for s in rule.state),
                     **{f"_used_{s.arg}": s.when[1] for s in rule.state if s.when is not None})
    body = [f"hyper = _check(lr, maximize, {', '.join(field_arguments(rule, variant))}, '')",
            f"_run(_rule, ({', '.join(operands)},), _names, step, hyper, grad_scale)"]
    torch_name = f" (torch.optim.{variant.torch_name})" if variant.torch_name else ""
    summary = f"{variant.summary[:1].upper()}{variant.summary[1:]}{torch_name}"
    doc = numpydoc(f"{summary}: update param and its state in place, one tensor.", rule,
                   functional_parameters_doc(rule, variant), _example(rule, variant), extra=_ARRAYS_DOC)
    function = compile_function(variant.function, parameters, body, namespace, doc)
    function.__module__ = __name__
    return function


for _rule, _variant in VARIANTS:
    globals()[_variant.function] = _generate(_rule, _variant)
del _rule, _variant
