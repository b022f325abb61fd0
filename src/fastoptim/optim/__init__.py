"""Stateful optimizers with torch.optim's names, arguments, param groups and state_dicts.

One class per face of each rule in fastoptim.rules (Adam and AdamW are one
rule), generated with the rule's signature and defaults; a face that fixes
options (AdamW) subclasses the rule's first face (Adam).
"""
from ..rules import RULES, VARIANTS
from .._eightbit import EIGHT_BIT_CLASSES, eight_bit_classes
from ..rules._codegen import class_parameters_doc, generate_classes, numpydoc
from .optimizer import Optimizer

__all__ = ["Optimizer"] + [variant.name for _, variant in VARIANTS] + list(EIGHT_BIT_CLASSES)

_RULE_OF = {variant.name: rule for rule, variant in VARIANTS}
_PARAMS_DOC = ("params", "list, dict or list of param groups",
               "C-contiguous float32 or float64 arrays, updated in place: a list, a dict name -> array, "
               "or param group dicts ({'params': ..., 'lr': ...}).")


def _describe(variant):
    rule = _RULE_OF[variant.name]
    torch_name = f", as torch.optim.{variant.torch_name}" if variant.torch_name else ""
    # 2x2: Muon's params are matrices; LBFGS's step evaluates the closure (loss, grads) itself
    step = (">>> loss = opt.step(lambda: (float((w ** 2).sum()), [2 * w]))" if rule.closure
            else ">>> opt.step([np.ones((2, 2), np.float32)])")
    example = [">>> import numpy as np", ">>> import fastoptim", ">>> w = np.ones((2, 2), np.float32)",
               f">>> opt = fastoptim.{variant.name}([w])", step,
               ">>> bool((w < 1).all())  # one step down the gradient, in place", "True"]
    return numpydoc(f"{variant.summary[:1].upper()}{variant.summary[1:]}{torch_name}.", rule,
                    class_parameters_doc(rule, variant, False), example, extra=[_PARAMS_DOC])


globals().update(generate_classes(RULES, Optimizer, False, __name__, _describe))
# 8-bit state (fastoptim.blockwise8): Adam8bit, AdamW8bit, SGD8bit, RMSprop8bit, Adagrad8bit, Lion8bit
globals().update(eight_bit_classes(globals(), __name__))
