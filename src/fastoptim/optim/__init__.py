"""Stateful optimizers with torch.optim's names, arguments, param groups and state_dicts.

One class per face of each rule in fastoptim.rules (Adam and AdamW are one
rule), generated with the rule's signature and defaults; a face that fixes
options (AdamW) subclasses the rule's first face (Adam).
"""
from ..rules import RULES, VARIANTS
from ..rules._codegen import generate_classes
from .optimizer import Optimizer

__all__ = ["Optimizer"] + [variant.name for _, variant in VARIANTS]


def _describe(variant):
    torch_name = f", as torch.optim.{variant.torch_name}" if variant.torch_name else ""
    return f"{variant.summary[:1].upper()}{variant.summary[1:]}{torch_name}."


globals().update(generate_classes(RULES, Optimizer, False, __name__, _describe))
