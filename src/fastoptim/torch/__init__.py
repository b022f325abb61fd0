"""fastoptim's kernels as torch.optim optimizers: change one import.

    from fastoptim.torch import Adam          # instead of: from torch.optim import Adam

SGD, Adagrad, RMSprop, Adadelta, Adam and AdamW subclass torch.optim.Optimizer
with torch.optim's constructor signatures, param groups, state and
state_dict layout (state['step'] is torch's float tensor), so checkpoints move
both ways and torch's lr_scheduler classes drive them unchanged.  A step
updates CPU float32/float64 tensors (complex ones as their view_as_real, as
torch does) in place through zero-copy NumPy views, all params in one call
into the same multi-tensor kernels as fastoptim.Adam & co; any dense layout
(contiguous, channels_last, transposed) whose grad and state are laid out
alike is stepped in place.

What the kernels cannot step is stepped by torch.optim's own implementation
of the same optimizer, with the same results and one FallbackWarning naming
the params and the reason (`optimizer.fallbacks` lists them): groups with
differentiable=True or capturable=True, float16/bfloat16 params (for now),
strided views with gaps, params on other devices (meta included), params
that share memory (a duplicate in a group), and params whose grads are
sparse or laid out unlike the param.

`foreach` and `fused` are kept in the groups (checkpoints round-trip) and
steer only torch's path; the kernels are fused whatever they say.  As in
torch, fused=True makes the optimizer read torch.amp.GradScaler's
`grad_scale` and `found_inf` (the kernels divide the grads by the scale
without writing them; a nonzero found_inf skips the step).
lr may also be a schedule (fastoptim.schedules, or any callable taking the
step), as in fastoptim.optim: t = step_count, the number of step() calls
made (0 for the first); the group keeps the schedule under 'lr_schedule'
and 'lr' shows the value used (before the first step, the value the first
step will use).  Writing a number to 'lr' (as torch's lr_scheduler classes
do) replaces the group's schedule.  state_dict() adds 'step_count',
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
from .._eightbit import EIGHT_BIT_CLASSES, eight_bit_classes
from ..rules._codegen import class_parameters_doc, generate_classes, numpydoc
from .optimizer import FallbackWarning, Optimizer

__all__ = ["Optimizer", "FallbackWarning"] + [variant.name for _, variant in VARIANTS] + list(EIGHT_BIT_CLASSES)

_RULE_OF = {variant.name: rule for rule, variant in VARIANTS}
_PARAMS_DOC = ("params", "iterable of Tensor or of param group dicts",
               "CPU tensors, as torch.optim takes them: float32/float64 (and complex, as view_as_real) on "
               "fastoptim's kernels, the others on torch.optim's own implementation (a FallbackWarning "
               "says so).")


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
# 8-bit state (fastoptim.blockwise8): Adam8bit, AdamW8bit, SGD8bit, RMSprop8bit, Adagrad8bit, Lion8bit
globals().update(eight_bit_classes(globals(), __name__))

# Schedules are plain data (their arguments, and ReduceLROnPlateau's progress): let
# torch.load's default weights_only loader rebuild them from a checkpoint.
torch.serialization.add_safe_globals(list(_schedules.SCHEDULE_CLASSES))
