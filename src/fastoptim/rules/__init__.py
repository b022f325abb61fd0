"""Every update rule, described once (see _rule.py for what a Rule holds).

RULES lists them; fastoptim.functional, fastoptim.reference,
fastoptim.optim, fastoptim.torch, the test and benchmark registry and the
demos are generated from this list.  Adding a rule: see docs/adding_a_rule.md.
"""
from .._ext.runtime import rule_fields
from .._ext.step import staged_refusal
from ._rule import (PRECISION_DEFAULTS, TORCH_ONLY_DEFAULTS, Choice, Demo, Flag, Integer, Pair, PythonStep, Real, Reals,
                    Rule, Slot, Variant)
from .adadelta import ADADELTA
from .adafactor import ADAFACTOR
from .adagrad import ADAGRAD
from .adam import ADAM
from .adamax import ADAMAX
from .asgd import ASGD
from .lamb import LAMB
from .lbfgs import LBFGS
from .lion import LION
from .muon import MUON
from .nadam import NADAM
from .radam import RADAM
from .rmsprop import RMSPROP
from .rprop import RPROP
from .sgd import SGD

RULES = (SGD, ADAGRAD, RMSPROP, ADADELTA, ADAM, ADAMAX, RADAM, LION, NADAM, ASGD, RPROP, LAMB, ADAFACTOR, MUON,
         LBFGS)

# (rule, variant) for every public face, in RULES order.
VARIANTS = tuple((rule, variant) for rule in RULES for variant in rule.variants)

__all__ = ["RULES", "VARIANTS", "Rule", "Real", "Flag", "Pair", "Integer", "Choice", "Reals", "Slot", "Variant",
           "Demo", "PythonStep", "PRECISION_DEFAULTS", "TORCH_ONLY_DEFAULTS", "kernel_id", "half_refusal"]


def _kernel_ids():
    """Each rule's number in the C rule list, after checking that both sides name the same fields."""
    compiled = rule_fields()
    ids = {}
    for rule in RULES:
        if rule.python is not None:
            continue  # a rule at the Python level has no C kernel
        if rule.kernel not in compiled:
            raise ImportError(f"fastoptim: rule {rule.kernel!r} has no C kernel; add it to csrc/fastoptim/rules.h "
                              f"(compiled: {sorted(compiled)})")
        number, fields = compiled[rule.kernel]
        if fields != rule.field_names:
            raise ImportError(f"fastoptim: rule {rule.kernel!r} lists the kernel fields {rule.field_names} but "
                              f"csrc/fastoptim/rules/{rule.kernel}.inc has {fields}")
        ids[rule.kernel] = number
    return ids


_IDS = _kernel_ids()


def kernel_id(rule: Rule) -> int:
    """The rule's number in the C kernel tables (-1 for a rule at the Python level)."""
    return -1 if rule.python is not None else _IDS[rule.kernel]


def half_refusal(rule: Rule) -> str | None:
    """Why the rule does not take 16-bit (bfloat16, float16) params yet, or None if it does.

    16-bit params run through the staged drivers, which widen chunks of one tensor and
    run the rule's float32 loop on them; a rule at the Python level, with per-tensor
    scalar state or with several passes over each tensor is not staged yet."""
    if rule.python is not None:
        return "it steps at the Python level, in float32 or float64 only"
    return staged_refusal(kernel_id(rule))
