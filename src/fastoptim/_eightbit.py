"""The 8-bit optimizer classes (Adam8bit & co) of both faces: a base class plus 8-bit state.

Blockwise8bit is mixed in before a generated class (fastoptim.Adam, fastoptim.torch.Adam)
and overrides the step engine's state hooks: a param with at least min_8bit_size elements
gets bitsandbytes' 8-bit state (fastoptim.blockwise8), the others the base optimizer's.
Adapter-neutral: arrays reach the state through the adapter's _to_state / _from_state.
"""
from __future__ import annotations

import inspect
from typing import Any

import numpy as np

from . import blockwise8 as q8
from ._ext.step import Q8_MAX_BLOCK

# The 8-bit classes, as bitsandbytes names them, and the class each one extends.
EIGHT_BIT_CLASSES = {"Adam8bit": "Adam", "AdamW8bit": "AdamW", "SGD8bit": "SGD", "RMSprop8bit": "RMSprop",
                     "Adagrad8bit": "Adagrad", "Lion8bit": "Lion"}
# bitsandbytes' state_dict() wraps each param's quantization entries under this key
BNB_WRAPPED_KEY = "__bnb_optimizer_quant_state__"


def _numel(p: Any) -> int:
    return int(np.prod(tuple(p.shape)))


def _sized_for_8bit(p: Any, min_8bit_size: int) -> bool:
    """Whether param p has the elements for 8-bit state (an empty one never has)."""
    return _numel(p) >= max(min_8bit_size, 1)


def _is_float32(p: Any) -> bool:
    return str(p.dtype) in ("float32", "torch.float32")


class Blockwise8bit:
    """8-bit blockwise state for the params of at least min_8bit_size elements."""

    skipped: int
    param_groups: list[dict[str, Any]]
    rule: Any

    def _init_8bit(self, block_size: int, min_8bit_size: int) -> None:
        self._q8_defaults = dict(zip(("block_size", "min_8bit_size"),
                                     q8.checked_options({"block_size": block_size,
                                                         "min_8bit_size": min_8bit_size}, "")))
        self.skipped = 0

    def _init_engine(self, defaults: dict[str, Any]) -> None:
        defaults.update(self._q8_defaults)  # before the groups are made from them: options of every group
        super()._init_engine(defaults)  # type: ignore[misc]

    # ---- checks ------------------------------------------------------------------
    def _checked_hyper(self, group: dict[str, Any], where: str, lr: Any = None) -> Any:
        hyper = super()._checked_hyper(group, where, lr)  # type: ignore[misc]
        _, low = q8.checked_options(group, where)
        if group.get("centered"):
            raise ValueError(f"{type(self).__name__} does not take centered=True ({where}): the centered "
                             f"variance, the 8-bit square_avg less grad_avg squared, can fall below zero "
                             f"(bitsandbytes refuses it too); use RMSprop for centered RMSprop")
        if "params" in group:
            params = group["params"]
            for j, p in enumerate(params.values() if isinstance(params, dict) else params):
                if not hasattr(p, "shape") or not _sized_for_8bit(p, low):
                    continue
                if not _is_float32(p):
                    raise TypeError(f"{type(self).__name__} keeps 8-bit state for float32 params; "
                                    f"{where}['params'][{j}] is {p.dtype} with {_numel(p)} elements "
                                    f"(min_8bit_size={low}): use float32 params, or the base optimizer")
                contiguous = p.is_contiguous() if hasattr(p, "is_contiguous") else p.flags.c_contiguous
                if not contiguous:
                    raise ValueError(f"{type(self).__name__} keeps 8-bit state in blocks of the param's C order; "
                                     f"{where}['params'][{j}] (shape {tuple(p.shape)}) is not C-contiguous: "
                                     f"pass a contiguous param")
        return hyper

    def _eight_bit(self, p: Any, group: dict[str, Any]) -> bool:
        """Whether param p's new state is 8-bit."""
        _, low = q8.checked_options(group, "")
        return _sized_for_8bit(p, low) and _is_float32(p)

    # ---- state ---------------------------------------------------------------------
    def _fill_state(self, state: Any, group: dict[str, Any], p: Any) -> None:
        if not self._eight_bit(p, group):
            super()._fill_state(state, group, p)  # type: ignore[misc]
            return
        block, _ = q8.checked_options(group, "")
        if self.rule.step_in_state:
            dict.__setitem__(state, "step", self._zero_step(group))  # type: ignore[attr-defined]
        slots = self.rule.slots(group)
        kept = q8.quantized_slots(self.rule, slots)
        for j, (_, name, signed) in enumerate(kept, start=1):
            fill = float(self.rule.start_value(self.rule.slot(name), group))
            for key, value in zip(("state", "absmax", "qmap"), q8.new_state(p, fill, block, signed)):
                dict.__setitem__(state, f"{key}{j}", self._to_state(value))  # type: ignore[attr-defined]
        quantized = {name for _, name, _ in kept}
        for name in slots:
            if name is not None and name not in quantized:  # a third state stays float32
                dict.__setitem__(state, name, self._new_slot_array(group, p, name))  # type: ignore[attr-defined]

    def _quantized_state(self, p: Any, i: int, array: Any, state: Any, group: dict[str, Any],
                         slots: tuple[str | None, ...], key: Any) -> Any:
        if "state1" not in state:
            return None
        where = f"state[params[{key!r}]]"
        block, _ = q8.checked_options(group, where)
        kept = q8.quantized_slots(self.rule, slots)
        n = array.size
        operands: list[Any] = [None] * len(slots)
        absmax, tables = [], []
        for j, (k, name, _) in enumerate(kept, start=1):
            entries = []
            for what in ("state", "absmax", "qmap"):
                if f"{what}{j}" not in state:
                    raise ValueError(f"{where} has 8-bit state but no {what}{j!s} (for {name}); "
                                     f"it holds {sorted(state)}")
                entries.append(self._from_state(state[f"{what}{j}"], f"{what}{j}"))  # type: ignore[attr-defined]
            codes, scale, qmap = entries
            if not isinstance(codes, np.ndarray) or codes.dtype != np.uint8 or codes.shape != array.shape:
                raise ValueError(f"{where}['state{j}'] must be uint8 codes shaped like the param "
                                 f"{array.shape}, got {q8._describe(codes)}")
            blocks = -(-n // block)
            if not isinstance(scale, np.ndarray) or scale.dtype != np.float32 or scale.shape != (blocks,):
                raise ValueError(f"{where}['absmax{j}'] must be float32 of shape ({blocks},): one per block of "
                                 f"{block} elements (block_size), got {q8._describe(scale)}")
            for value, what in ((codes, f"state{j}"), (scale, f"absmax{j}")):
                if not value.flags.c_contiguous or not value.flags.writeable:
                    raise ValueError(f"{where}[{what!r}] must be a C-contiguous writeable array")
            operands[k] = codes
            absmax.append(scale)
            tables.append(q8.quant_table(q8.checked_qmap(qmap, f"{where}['qmap{j}']")))
        quantized = {k for k, _, _ in kept}
        for k, slot_name in enumerate(slots):
            if slot_name is not None and k not in quantized:  # a third state, float32
                if state.get(slot_name) is None:
                    dict.__setitem__(state, slot_name,
                                     self._new_slot_array(group, p, slot_name))  # type: ignore[attr-defined]
                operands[k] = self._state_array(state[slot_name], p, i, key, slot_name)  # type: ignore[attr-defined]
        return tuple(operands), q8.Quantized8(tuple(sorted(quantized)), absmax, tables, block)

    # ---- the step --------------------------------------------------------------------
    def _locked_step(self, grads: Any, grad_scale: Any) -> None:
        super()._locked_step(grads, grad_scale)  # type: ignore[misc]
        plan = self._plan  # type: ignore[attr-defined]
        if plan is not None:
            self.skipped += plan.take_skipped()

    def _slots_by_group(self) -> Any:
        """The plan's key: the base class's, and each group's block_size (the plan checks the state's
        block count against it)."""
        return (super()._slots_by_group(),  # type: ignore[misc]
                tuple([g.get("block_size") for g in self.param_groups]))

    def _group_options(self) -> set[str]:
        """fastoptim.torch: the options its loader restores in groups that lack them (bitsandbytes')."""
        return super()._group_options() | set(self._q8_defaults)  # type: ignore[misc, no-any-return]

    def load_state_dict(self, state_dict: Any) -> None:
        """Load a state_dict of this class, of its base class (its float32 state is kept), or of
        bitsandbytes' 8-bit class: its quantization entries nested under
        '__bnb_optimizer_quant_state__' are unwrapped, and a small param's float32
        state1/state2 take the base class's names.  Checked before it is kept: on any error the
        optimizer is left as it was."""
        saved_groups = state_dict.get("param_groups", [])
        group_of = {index: g for g in saved_groups if isinstance(g, dict) for index in g.get("params", ())}
        entries = {}
        for index, entry in state_dict.get("state", {}).items():
            if isinstance(entry, dict) and BNB_WRAPPED_KEY in entry:  # bitsandbytes' state_dict()
                entry = {k: v for k, v in entry.items() if k != BNB_WRAPPED_KEY} | dict(entry[BNB_WRAPPED_KEY])
            if isinstance(entry, dict):
                entry = self._loaded_entry(index, entry, group_of.get(index, {}))
            entries[index] = entry
        previous = self.state_dict()  # type: ignore[attr-defined]
        super().load_state_dict(dict(state_dict, state=entries))  # type: ignore[misc]
        try:  # the 8-bit entries against their params (shapes, block counts, maps), as a step reads them
            self._invalidate()  # type: ignore[attr-defined]
            self._build_plan()  # type: ignore[attr-defined]
        except Exception:
            super().load_state_dict(previous)  # type: ignore[misc]
            raise
        finally:
            self._invalidate()  # type: ignore[attr-defined]

    def _loaded_entry(self, index: Any, entry: dict[str, Any], saved_group: dict[str, Any]) -> dict[str, Any]:
        """A loaded param's state entry, checked (maps, code dtype) and in our names: bitsandbytes
        keeps a small param's float32 state as state1/state2 without maps, we under the base
        class's names."""
        if "state1" in entry and "qmap1" not in entry:  # float32 state of a param below min_8bit_size
            options = {**self.defaults, **saved_group}  # type: ignore[attr-defined]
            kept = q8.quantized_slots(self.rule, self.rule.slots(options))
            renamed = {f"state{j}": name for j, (_, name, _) in enumerate(kept, start=1)}
            return {renamed.get(k, k): v for k, v in entry.items()}
        for j in (1, 2):
            if f"qmap{j}" in entry:
                value = self._from_state(entry[f"qmap{j}"], f"qmap{j}")  # type: ignore[attr-defined]
                q8.checked_qmap(value, f"loaded state[{index!r}]['qmap{j}']")
            codes = entry.get(f"state{j}")
            if codes is not None and str(codes.dtype) not in ("uint8", "torch.uint8"):
                raise ValueError(f"loaded state[{index!r}]['state{j}'] must be uint8 codes, "
                                 f"got {q8._describe(codes)}")
        return entry


def eight_bit_classes(classes: dict[str, type], module: str) -> dict[str, type]:
    """{name: class} of the 8-bit classes over a face's generated classes."""
    return {name: _eight_bit_class(name, base_name, classes[base_name], module)
            for name, base_name in EIGHT_BIT_CLASSES.items()}


def _eight_bit_class(name: str, base_name: str, base: type, module: str) -> type:
    def __init__(self: Any, params: Any, *args: Any, block_size: int = q8.BLOCK_SIZE,
                 min_8bit_size: int = q8.MIN_8BIT_SIZE, **kwargs: Any) -> None:
        Blockwise8bit._init_8bit(self, block_size, min_8bit_size)
        base.__init__(self, params, *args, **kwargs)  # type: ignore[misc]

    torch_face = module.startswith("fastoptim.torch")
    options = "momentum=0.9, " if base_name == "SGD" else ""  # SGD without momentum keeps no state
    if torch_face:
        example = [">>> import torch", f">>> from fastoptim.torch import {name}",
                   ">>> w = torch.nn.Parameter(torch.ones(64, 64))", f">>> opt = {name}([w], {options}min_8bit_size=0)",
                   ">>> w.sum().backward()", ">>> opt.step()",
                   ">>> opt.state[w]['state1'].dtype, tuple(opt.state[w]['absmax1'].shape)",
                   "(torch.uint8, (16,))"]
    else:
        example = [">>> import numpy as np", ">>> import fastoptim", ">>> w = np.ones((64, 64), np.float32)",
                   f">>> opt = fastoptim.{name}([w], {options}min_8bit_size=0)", ">>> opt.step([np.ones_like(w)])",
                   ">>> opt.state[0]['state1'].dtype, opt.state[0]['absmax1'].shape", "(dtype('uint8'), (16,))"]
    doc = "\n".join([
        f"{base_name} with 8-bit blockwise state, as bitsandbytes' {name}.",
        "",
        f"The update is {base_name}'s (torch.optim's semantics); each param of at least min_8bit_size",
        "elements keeps its first two states as uint8 codes with one float32 absmax per block",
        "(state1/absmax1/qmap1, state2/absmax2/qmap2: fastoptim.blockwise8), about 1 byte per",
        "element and state; smaller params keep the base class's float32 state. A block whose",
        "grad holds a NaN or inf is left untouched and counted in `skipped`.",
        "",
        "Parameters",
        "----------",
        "params",
        f"    As {base_name}'s: float32 params (8-bit state is for float32 params).",
        "*args, **kwargs",
        f"    {base_name}'s arguments, with its defaults.",
        "block_size : int, default 256",
        f"    Elements per block of 8-bit state (1 to {Q8_MAX_BLOCK}; bitsandbytes uses 256).",
        "min_8bit_size : int, default 4096",
        "    Params with fewer elements keep float32 state.",
        "",
        "Raises",
        "------",
        "TypeError",
        "    A param of min_8bit_size elements or more that is not float32.",
        "ValueError",
        "    A bad block_size or min_8bit_size" + (", or centered=True" if base_name == "RMSprop" else "") + ".",
        "",
        "Examples",
        "--------",
        *example,
    ])
    parameters = list(inspect.signature(base.__init__).parameters.values())  # type: ignore[misc]
    parameters += [inspect.Parameter("block_size", inspect.Parameter.KEYWORD_ONLY, default=q8.BLOCK_SIZE,
                                     annotation="int"),
                   inspect.Parameter("min_8bit_size", inspect.Parameter.KEYWORD_ONLY, default=q8.MIN_8BIT_SIZE,
                                     annotation="int")]
    __init__.__signature__ = inspect.Signature(parameters, return_annotation=None)  # type: ignore[attr-defined]
    return type(name, (Blockwise8bit, base), {"__init__": __init__, "__doc__": doc, "__module__": module})
