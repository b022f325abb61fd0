"""fastoptim's kernels as torch.optim optimizers: change one import.

    from fastoptim.torch import Adam          # instead of: from torch.optim import Adam

SGD, Adagrad, RMSprop, Adadelta, Adam and AdamW subclass torch.optim.Optimizer
with torch.optim's constructor signatures, param groups, state and
state_dict layout, so checkpoints move both ways and torch's lr_scheduler
classes drive them unchanged.  A step updates CPU float32/float64 tensors in
place through zero-copy NumPy views, all params in one call into the same
multi-tensor kernels as fastoptim.Adam & co.  Anything that would need a copy
(params on another device, sparse or non-contiguous grads or params) is an
error, checked before anything is written.

Differences from torch.optim: `foreach` and `fused` are accepted and kept in
the groups (checkpoints round-trip) but change nothing, since every step is
one fused multi-tensor kernel; `capturable=True` and `differentiable=True`
are errors (CUDA graphs, autograd through the step).  `state[p]['step']` is
an int64 tensor, live during training; state_dict() writes torch's float
`step`.  lr may also be a schedule (fastoptim.schedules, or any callable
taking the step), as in fastoptim.optim: t = step_count, the number of step()
calls made (0 for the first); the group keeps the schedule under
'lr_schedule' and 'lr' shows the value used (before the first step, the value
the first step will use).  Writing a number to 'lr' (as torch's lr_scheduler
classes do) replaces the group's schedule.  state_dict() adds 'step_count',
and 'lr_schedules' (the groups' schedules, kept out of the groups), which
torch.optim ignores.  Importing fastoptim.torch allows fastoptim.schedules'
classes in torch.load's default weights_only loader, so a checkpoint holding
them loads as it is; any other schedule (a lambda cannot even be saved) needs
torch.load(..., weights_only=False).

The classes are generated from fastoptim.rules with torch.optim's signatures.
"""
try:
    import torch  # noqa: F401
except ImportError:  # pragma: no cover - exercised only without torch
    raise ImportError("fastoptim.torch needs PyTorch: pip install 'fastoptim[torch]' "
                      "(tested with torch==2.13.0)") from None

from .. import schedules as _schedules
from ..rules import RULES, VARIANTS
from ..rules._codegen import class_parameters_doc, generate_classes, numpydoc
from .optimizer import Optimizer

__all__ = ["Optimizer"] + [variant.name for _, variant in VARIANTS]

_RULE_OF = {variant.name: rule for rule, variant in VARIANTS}
_PARAMS_DOC = ("params", "iterable of Tensor or of param group dicts",
               "CPU float32 or float64 tensors, as torch.optim takes them.")


def _describe(variant):
    rule = _RULE_OF[variant.name]
    like = f"torch.optim.{variant.torch_name}" if variant.torch_name else variant.name
    # 2x2: Muon's params are matrices; LBFGS's step evaluates the closure itself
    if rule.closure:
        step = [">>> def closure():", "...     opt.zero_grad()", "...     loss = (w ** 2).sum()",
                "...     loss.backward()", "...     return loss", ">>> loss = opt.step(closure)"]
    else:
        step = [">>> w.sum().backward()", ">>> opt.step()"]
    example = [">>> import torch", f">>> from fastoptim.torch import {variant.name}",
               ">>> w = torch.nn.Parameter(torch.ones(2, 2))", f">>> opt = {variant.name}([w])", *step,
               ">>> bool((w < 1).all())  # one step down the gradient, in place", "True"]
    return numpydoc(f"{like} on fastoptim's kernels: {variant.summary}.", rule,
                    class_parameters_doc(rule, variant, True), example, extra=[_PARAMS_DOC])


globals().update(generate_classes(RULES, Optimizer, True, __name__, _describe))

# Schedules are plain data (their arguments, and ReduceLROnPlateau's progress): let
# torch.load's default weights_only loader rebuild them from a checkpoint.
torch.serialization.add_safe_globals(list(_schedules.SCHEDULE_CLASSES))
