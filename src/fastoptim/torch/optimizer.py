"""The torch adapter of the step engine: torch.optim.Optimizer's groups, state
and state_dict over torch tensors, stepped through zero-copy NumPy views.

The step itself is fastoptim._engine's; this module says what the tensors
are, reads grads through DLPack and words torch-specific errors.  The
optimizer classes are generated in fastoptim.torch.

Routes.  Each param is stepped either by fastoptim's kernels or by torch.optim's
own implementation of the same optimizer (fastoptim.torch._fallback), decided
once per param when the pointer tables are built (so again whenever params,
state or the routing options change) and cached with them:

  kernels  CPU float32/float64 params, complex64/complex128 ones as their
           view_as_real (as torch steps them; Muon refuses them, as torch's),
           and float16/bfloat16 ones of the rules that take 16-bit params
           (bfloat16 needs ml_dtypes),
           laid out as one dense block of memory (contiguous, channels_last,
           a transpose, ...) with grad and state laid out alike (a 16-bit
           param's state in its dtype, or float32 with state_dtype="float32");
  torch    differentiable=True or capturable=True groups; float16/bfloat16
           params of the rules whose kernels refuse them (NAdam, ASGD, and the
           Python-level Muon and LBFGS; a rule torch.optim lacks, LAMB, raises
           instead); strided views with gaps; params on another device
           (meta included) or with another layout; params sharing memory with
           another (a duplicate in a group: torch steps each occurrence);
           state the kernels cannot use; and, from the first time it happens,
           a param whose grad is sparse or laid out unlike the param.  A 16-bit
           param on this path whose group asks for master_weights,
           stochastic_rounding or state_dtype="float32" is an error: torch's
           implementation has none of them.

A one-time FallbackWarning names the params that take torch's path and why;
`optimizer.fallbacks` lists them.  Both paths share one state layout (torch's),
so a param can change route between steps.
"""
import copy
import os
import sys
import warnings
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import FrameType
from typing import Any, ClassVar, NoReturn, TypeAlias, TypeGuard

import numpy as np
import torch
from torch.optim.optimizer import ParamsT

from .. import _validation
from .._engine import (SCHEDULES_KEY, Array, Group, Hyper, Key, PlanKey, State, StepEngine, precision,
                       saved_groups_with_schedules, split_schedules)
from .._ext.step import StepPlan
from ..rules import PRECISION_DEFAULTS, Pair, Rule, Slot, Variant, half_refusal
from ..typing import Closure
from ._fallback import TorchTwin

_KERNEL_DTYPES = (torch.float32, torch.float64, torch.complex64, torch.complex128)
_HALF_DTYPES = (torch.float16, torch.bfloat16)
_COUNTER_DTYPES = (torch.int64, torch.float32, torch.float64)
_to_dlpack = torch._C._to_dlpack


class FallbackWarning(UserWarning):
    """Some params are stepped by torch.optim's own implementation, not fastoptim's kernels
    (same results; the message says which params and why)."""


def _user_stacklevel() -> int:
    """The stacklevel, for a warning raised by our caller, of the first frame outside
    fastoptim and torch (the user's step() or construction)."""
    inside = (os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep,
              os.path.dirname(os.path.abspath(torch.__file__)) + os.sep)
    frame: FrameType | None = sys._getframe(2)
    level = 2  # stacklevel 2: our caller's caller
    while frame is not None and frame.f_code.co_filename.startswith(inside):
        frame, level = frame.f_back, level + 1
    return level


class _StateMap(defaultdict[torch.Tensor, Any]):
    """torch's `state` (param -> state dict, and any other key -> any value, as torch's
    defaultdict(dict) allows); every change invalidates the owner's pointer tables."""

    def __init__(self, owner: "Optimizer", items: Mapping[Any, Any] | Iterable[tuple[Any, Any]] = ()) -> None:
        super().__init__(lambda: State(owner))
        self._owner = owner
        for key, value in dict(items).items():
            self[key] = value

    def __setitem__(self, key: torch.Tensor, value: Any) -> None:
        if isinstance(value, dict) and not (isinstance(value, State) and value._owner is self._owner):
            value = State(self._owner, value)
        super().__setitem__(key, value)
        self._owner._invalidate()

    def __delitem__(self, key: torch.Tensor) -> None:
        super().__delitem__(key)
        self._owner._invalidate()

    def pop(self, *args: Any) -> Any:
        self._owner._invalidate()
        return super().pop(*args)

    def clear(self) -> None:
        super().clear()
        self._owner._invalidate()

    def update(self, *args: Any, **kwargs: Any) -> None:
        for key, value in dict(*args, **kwargs).items():
            self[key] = value

    def _plain(self) -> dict[Any, Any]:
        return {k: dict(v) if isinstance(v, dict) else v for k, v in self.items()}

    def __reduce__(self) -> tuple[type[dict[Any, Any]], tuple[dict[Any, Any]]]:
        return (dict, (self._plain(),))

    def __deepcopy__(self, memo: dict[int, Any]) -> dict[Any, Any]:
        return copy.deepcopy(self._plain(), memo)


def _scalar_dtype() -> torch.dtype:
    # torch.optim's dtype for state['step'] (torch.optim.optimizer._get_scalar_dtype)
    return torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32


def _step_dtype(group: Mapping[str, Any]) -> torch.dtype:
    """The dtype torch gives a new state['step'] of this group: float32 when fused."""
    return torch.float32 if group.get("fused") else _scalar_dtype()


def _has_ml_dtypes() -> bool:
    """Whether ml_dtypes (NumPy's bfloat16, which the kernels' views of bfloat16 tensors need) imports."""
    try:
        import ml_dtypes  # noqa: F401
    except ImportError:
        return False
    return True


def _numpy_view(t: torch.Tensor) -> Array:
    """A zero-copy NumPy view of a checked tensor (bfloat16 as ml_dtypes.bfloat16)."""
    if t.dtype == torch.bfloat16:
        import ml_dtypes  # the bf16 extra; torch has no NumPy bfloat16 of its own
        return t.detach().view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    return t.detach().numpy()


def _real_view(t: torch.Tensor) -> Array:
    """A zero-copy NumPy view of a checked tensor, a complex one as its view_as_real."""
    t = t.detach()
    return _numpy_view(torch.view_as_real(t) if t.is_complex() else t)


def _cloned(value: Any) -> Any:
    """A copy of a state value: tensors cloned (contiguous), lists item by item."""
    if isinstance(value, (list, tuple)):
        return type(value)(_cloned(v) for v in value)
    if isinstance(value, torch.Tensor):
        return value.detach().clone(memory_format=torch.contiguous_format)
    return copy.deepcopy(value)


def _state_step(value: Any, where: str) -> int:
    """A step count from an int, a float or a 0-d tensor (torch keeps float32 steps)."""
    try:
        f = float(value)
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(f"{where} must be a number or a one-element tensor, got {value!r}") from None
    if not f.is_integer() or f < 0:
        raise ValueError(f"{where} must be a whole number >= 0, got {value!r}")
    return int(f)


def _is_dense(t: torch.Tensor) -> bool:
    """Whether t's elements fill one block of memory, each once (any order of dims)."""
    expected = 1
    for stride, size in sorted((st, n) for n, st in zip(t.shape, t.stride()) if n != 1):
        if stride != expected:
            return False
        expected *= size
    return True


def _same_layout(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether a and b (same shape) put each element at the same offset."""
    return a.shape == b.shape and all(n == 1 or sa == sb for n, sa, sb in zip(a.shape, a.stride(), b.stride()))


def _memory_span(t: torch.Tensor) -> tuple[int, int] | None:
    """[first byte, last byte + 1) of a CPU strided tensor's elements, or None."""
    if t.layout != torch.strided or t.device.type != "cpu" or t.numel() == 0:
        return None
    start = t.data_ptr()
    last = sum((n - 1) * st for n, st in zip(t.shape, t.stride()))
    return start, start + (last + 1) * t.element_size()


def _group_reason(group: Mapping[str, Any]) -> str | None:
    """Why a whole group takes torch's implementation, or None."""
    if group.get("differentiable"):
        return "differentiable=True (autograd through the update)"
    if group.get("capturable"):
        return "capturable=True (CUDA graphs)"
    return None


def _param_reason(rule: Rule, p: torch.Tensor) -> str | None:
    """Why the kernels cannot step param p of `rule`, or None."""
    if p.layout != torch.strided:
        return f"a {p.layout} param"
    if p.device.type != "cpu":
        return f"on {p.device}"
    if p.dtype in _HALF_DTYPES:
        refusal = half_refusal(rule)
        if refusal is not None:
            return f"a {p.dtype} param, which this optimizer's kernels do not take: {refusal}"
        if p.dtype == torch.bfloat16 and not _has_ml_dtypes():
            return f"{p.dtype} needs ml_dtypes (the bf16 extra: pip install fastoptim[bf16])"
    elif p.dtype not in _KERNEL_DTYPES:
        return f"dtype {p.dtype}"
    if p.is_conj() or p.is_neg():
        return "a lazily conjugated or negated view"
    if not _is_dense(p):
        return f"a strided view with gaps (strides {p.stride()} for shape {tuple(p.shape)})"
    return None


def _grad_reason(p: torch.Tensor, g: torch.Tensor) -> str | None:
    """Why the kernels cannot read grad g of param p where torch's implementation can, or
    None (a grad of another dtype or shape, or sharing memory, stays an error)."""
    if g.layout != torch.strided:
        return f"its grad is {g.layout}"
    if g.device != p.device:
        return f"its grad is on {g.device}"
    if g.dtype != p.dtype or g.shape != p.shape:
        return None
    if g.is_conj() or g.is_neg():
        return "its grad is a lazily conjugated or negated view"
    if not _same_layout(g, p):
        return f"its grad has strides {g.stride()}, the param {p.stride()}"
    return None


def _reduced_state_fits(value: object, p: torch.Tensor, shape: tuple[int, ...]) -> TypeGuard[torch.Tensor]:
    """Whether the kernels can use `value` as state of a slot with a reduced shape (Adafactor's
    row_var) for param p: a strided contiguous tensor of p's dtype and device, of `shape`, not
    requiring grad, beside a contiguous p (such a slot pairs elements in C order).  Routing
    (_state_reason) and the plan's check (Optimizer._state_array) both ask this."""
    return (isinstance(value, torch.Tensor) and value.layout == torch.strided and value.device == p.device
            and value.dtype == p.dtype and not value.requires_grad and tuple(value.shape) == shape
            and value.is_contiguous() and p.is_contiguous())


def _state_reason(rule: Rule, group: Mapping[str, Any], p: torch.Tensor, state: Mapping[str, Any] | None
                  ) -> str | None:
    """Why the kernels cannot use param p's existing state (or, for factored state, p itself), or None."""
    slots = rule.param_slots(rule.slots(group), p.dim())
    if not p.is_contiguous() and any(name is not None and rule.slots_by_name[name].reduced is not None
                                     for name in slots):
        return f"a non-contiguous param (strides {p.stride()}): its factored state pairs elements in C order"
    if not state:
        return None
    # a 16-bit param's state is in its dtype, or in float32 (state_dtype="float32")
    dtype = torch.float32 if p.dtype in _HALF_DTYPES and precision(group, "")[0] == "float32" else p.dtype
    for name in slots:
        value = None if name is None else state.get(name)
        if name is None or value is None:
            continue
        if not isinstance(value, torch.Tensor):
            return f"state[{name!r}] is a {type(value).__name__}"
        slot = rule.slots_by_name[name]
        if slot.scalar:  # a per-tensor scalar (NAdam's mu_product): 0-d, float32 or float64
            if (value.dim() != 0 or value.device.type != "cpu" or value.dtype not in (torch.float32, torch.float64)
                    or value.requires_grad):
                return f"state[{name!r}] ({value.dtype}, shape {tuple(value.shape)} on {value.device}) is not a 0-d float"
            continue
        if slot.reduced is not None:  # Adafactor's row_var: its own shape, paired in C order
            if not _reduced_state_fits(value, p, slot.shape(p.shape)):
                return (f"state[{name!r}] ({value.dtype}, shape {tuple(value.shape)} on {value.device}) is not a "
                        f"contiguous {p.dtype} tensor of shape {slot.shape(p.shape)} beside a "
                        f"contiguous param")
            continue
        if (value.layout != torch.strided or value.device != p.device or value.dtype != dtype
                or value.is_conj() or value.is_neg() or value.requires_grad or not _same_layout(value, p)):
            return (f"state[{name!r}] ({value.dtype}, strides {value.stride()} on {value.device}) is not laid "
                    f"out like the param ({dtype}, strides {p.stride()})")
    return None


# A param of the groups as _decide_routes sees it: [group index, param, where, key, why torch's
# implementation steps it or None].
_Entry: TypeAlias = list[Any]


def _refuse_lost_options(groups: Sequence[Mapping[str, Any]], entries: Iterable[_Entry], reasons: Mapping[str, str],
                         torch_name: str | None) -> None:
    """torch.optim's implementation has no master weights, float32 state or stochastic rounding
    for 16-bit params: a 16-bit param on its path whose group asks for one is an error (before
    anything is written), not an option silently dropped."""
    for gi, p, where, _, _ in entries:
        if where not in reasons or p.dtype not in _HALF_DTYPES:
            continue
        state_dtype, master, stochastic, _ = precision(groups[gi], f"param_groups[{gi}]")
        asked = [option for option, on in (("state_dtype='float32'", state_dtype == "float32"),
                                           ("master_weights=True", master),
                                           ("stochastic_rounding=True", stochastic)) if on]
        if asked:
            raise TypeError(f"{where} takes torch.optim.{torch_name}'s own implementation ({reasons[where]}), "
                            f"which has no {' or '.join(asked)}: step it with the default 16-bit options, "
                            f"or as a float32 param")


class _Routes:
    """Which params the kernels step: the plan's lists (params, groups, keys), and for the
    rest, per group, the params torch's implementation steps and why."""

    __slots__ = ("params", "groups", "keys", "every", "in_plan", "torch_groups", "reasons", "recheck")

    def __init__(self) -> None:
        self.params: list[torch.Tensor] = []
        self.groups: list[int] = []
        self.keys: list[Key] = []
        self.every: list[torch.Tensor] = []  # every param of the groups, in order,
        self.in_plan = bytearray()            # and whether each is in the plan (1) or not (0)
        self.torch_groups: list[tuple[int, list[torch.Tensor]]] = []  # [(group index, [params])], in group order
        self.reasons: dict[str, str] = {}     # where -> why, for the params on torch's path
        self.recheck: list[torch.Tensor] = []  # params on torch's path for what they are (device, dtype,
        #                          layout): what may change under the same object (model.to_empty(), p.data = ...)


def _tensors_as_numbers(options: Mapping[str, Any]) -> dict[str, Any] | None:
    """A copy of options with each one-element tensor (alone, or in a tuple) as a Python
    number, or None if there is none.  Tensor hyperparameters are torch's; the kernels
    take them as numbers."""
    def number(value: Any) -> Any:
        return value.item() if isinstance(value, torch.Tensor) and value.numel() == 1 else value

    out: dict[str, Any] = {}
    changed = False
    for key, value in options.items():
        if key == "params":
            new = value
        elif isinstance(value, (tuple, list)):
            new = type(value)(number(v) for v in value)
            changed |= any(a is not b for a, b in zip(new, value))
        else:
            new = number(value)
            changed |= new is not value
        out[key] = new
    return out if changed else None


class Optimizer(StepEngine[torch.Tensor], torch.optim.Optimizer):
    """Base of fastoptim's torch.optim drop-ins; the generated subclasses set `rule` and `variant`."""

    # StepEngine.rule: the fastoptim.rules.Rule, set by the generated classes
    variant: ClassVar[Variant]  # the class's Variant (Adam or AdamW), set likewise

    def __init__(self, params: ParamsT, defaults: dict[str, Any]) -> None:
        self._init_engine(defaults)
        self._init_routes()
        # torch checks the hyperparameters before it looks at the params (params=None with a bad
        # lr is torch's ValueError), tensor options first.
        self._check_tensor_options(defaults, "")
        self._checked_hyper(defaults, "defaults", 0.0 if callable(defaults.get("lr")) else None)
        super().__init__(params, defaults)
        if defaults.get("fused"):
            if defaults.get("differentiable"):
                raise RuntimeError("`fused` does not support `differentiable`")
            if defaults.get("foreach"):
                raise RuntimeError("`fused` and `foreach` cannot be `True` together.")
        self._set_amp_support()

    def _init_routes(self) -> None:
        self._routes = _Routes()   # the routes of the current plan (none before the first plan)
        self._grad_routes: dict[torch.Tensor, str] = {}  # param -> why its grads take torch's path (kept once seen)
        self._warned: set[tuple[str, str]] = set()  # (where, why) already in a FallbackWarning
        self._twin: TorchTwin | None = None  # torch's implementation, made at its first use
        self._amp: tuple[Any, Any] | None = None  # (grad_scale, found_inf) during a step that has them
        self._skip_kernels = False

    def _set_amp_support(self) -> None:
        # As torch: a fused optimizer reads GradScaler's grad_scale and found_inf itself
        # (the kernels divide by the scale; a found_inf skips the step).
        if self.defaults.get("fused"):
            self._step_supports_amp_scaling = True

    # ---- state containers ------------------------------------------------------
    @property
    def state(self) -> _StateMap:
        return self._state_map

    @state.setter
    def state(self, value: Mapping[Any, Any]) -> None:
        # torch assigns a plain defaultdict (in __init__ and load_state_dict);
        # ours counts changes, so the cached plan never points at replaced tensors.
        self._state_map = _StateMap(self, value)

    def __setstate__(self, state: dict[str, Any]) -> None:
        if "_state_version" not in self.__dict__:  # unpickling, deepcopy: __init__ did not run
            self._init_engine(state["defaults"])
            self._init_routes()
        state = dict(state)
        state_map = state.pop("state", None)
        super().__setstate__(state)
        if state_map is not None:
            self.state = state_map
        self._fix_variant_options()
        self._set_amp_support()
        self._invalidate()

    def _group_options(self) -> set[str]:
        """The option names this class keeps in its param groups (its constructor's)."""
        return ({name for name, _ in self.rule.layout(True)} | set(PRECISION_DEFAULTS)
                | set(self.variant.fixed))

    def _fix_variant_options(self) -> None:
        """The class decides the rule: AdamW stays AdamW whatever a loaded group says."""
        for group in self.param_groups:
            group.update(self.variant.fixed)

    @property
    def fallbacks(self) -> dict[str, str]:
        """{param (where): why} for the params torch.optim's own implementation steps
        (as of the last step; see the module docstring)."""
        return dict(self._routes.reasons)

    # ---- groups ------------------------------------------------------------
    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        gi = len(self.param_groups) - 1
        try:
            where = f"param_groups[{gi}]"
            self._check_group_count(gi, where)
            self._check_tensor_options(group, f" ({where})")
            self._install_schedule(group, where)  # 'lr' shows the value the next step uses
            if "lr_schedule" in group:
                self._lr_written[gi] = (group["lr_schedule"], group["lr"])
            self._checked_hyper(group, where)
            self._check_ndim(group, where)
        except Exception:
            self.param_groups.pop()
            self._lr_written.pop(gi, None)
            raise
        if self.rule.eager_state:  # torch's Adagrad creates its state here
            for p in group["params"]:
                if not self.state.get(p):
                    self._fill_state(self.state[p], group, p)
        self._invalidate()

    def _check_ndim(self, group: Mapping[str, Any], where: str) -> None:
        """A rule for params of one number of dimensions (Muon: matrices) checks them as torch
        does, at construction (a complex param counts as it is, not as its view_as_real)."""
        ndim = self.rule.ndim
        if ndim is None:
            return
        for j, p in enumerate(group["params"]):
            if p.ndim != ndim:
                raise ValueError(f"{type(self).__name__} only supports {ndim}D parameters whereas we found a "
                                 f"parameter with size: {p.size()} ({where}['params'][{j}])")

    def _check_tensor_options(self, options: Mapping[str, Any], where: str) -> None:
        """torch's checks of tensor-valued options (before their values are checked)."""
        checked = self.rule.torch_tensor_checks
        refused = bool(options.get("foreach")) and not options.get("capturable")
        lr = options.get("lr")
        if isinstance(lr, torch.Tensor):
            if "lr" in checked and refused:
                raise ValueError(f"lr as a Tensor is not supported for capturable=False and foreach=True{where}")
            if lr.numel() != 1:
                raise ValueError(f"Tensor lr must be 1-element{where}; got shape {tuple(lr.shape)}")
        for option in self.rule.options:
            if not (isinstance(option, Pair) and option.name in checked):
                continue
            value = options.get(option.name)
            if not isinstance(value, (tuple, list)) or len(value) != 2:
                continue  # the option's own check words it
            tensors = [isinstance(v, torch.Tensor) for v in value]
            if any(tensors) and not all(tensors):
                raise ValueError(f"{option.name} must be either both floats or both Tensors{where}")
            for index, part in enumerate(value):
                if isinstance(part, torch.Tensor):
                    if refused:
                        raise ValueError(f"{option.name}[{index}] as a Tensor is not supported for "
                                         f"capturable=False and foreach=True{where}")
                    if part.numel() != 1:
                        raise ValueError(f"Tensor {option.name}[{index}] must be 1-element{where}")

    def _checked_hyper(self, group: Mapping[str, Any], where: str, lr: float | None = None) -> Hyper:
        try:
            return super()._checked_hyper(group, where, lr)
        except TypeError:  # tensor hyperparameters (torch allows one-element tensors): as numbers
            numbers = _tensors_as_numbers(group)
            if numbers is None:
                raise
            return super()._checked_hyper(numbers, where, lr)

    # ---- the step -----------------------------------------------------------
    @torch.no_grad()
    def step(self, closure: Closure | None = None) -> Any:
        """Update every param that has a grad, in place, in one call into the kernels
        (and torch's own implementation for the params listed in `fallbacks`)."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        attributes = self.__dict__
        if "grad_scale" not in attributes and "found_inf" not in attributes:
            self._run_step(None)
            return loss
        # Set by torch.amp.GradScaler (fused optimizers) or by hand: the grads are divided by
        # grad_scale inside the kernels, never written; a nonzero found_inf skips the step.
        grad_scale, found_inf = attributes.get("grad_scale"), attributes.get("found_inf")
        skip = found_inf is not None and float(found_inf) != 0
        self._amp, self._skip_kernels = (grad_scale, found_inf), skip
        try:
            self._run_step(None, None if grad_scale is None or skip else float(grad_scale))
        finally:
            self._amp, self._skip_kernels = None, False
        return loss

    def _before_kernels(self) -> bool:
        routes = self._routes
        if routes.torch_groups:
            if self._twin is None:
                self._twin = TorchTwin(self._torch_name())
            grad_scale, found_inf = self._amp or (None, None)
            self._twin.step(self, [(self.param_groups[gi], params) for gi, params in routes.torch_groups],
                            grad_scale, found_inf)
        return not self._skip_kernels

    # ---- routes --------------------------------------------------------------
    def _slots_by_group(self) -> PlanKey:
        # The plan's key: each group's state slots, and the options that route its params.
        return tuple([(self.rule.slots(g), precision(g, ""), bool(g.get("differentiable")),
                       bool(g.get("capturable"))) for g in self.param_groups])

    def _build_plan(self, extra: Sequence[torch.Tensor] = (), extra_keys: Sequence[Key] = (),
                    extra_group: Group | None = None) -> tuple[StepPlan, list[torch.Tensor]]:
        self._routes = self._decide_routes()
        return super()._build_plan()

    def _decide_routes(self) -> _Routes:
        routes = _Routes()
        entries: list[_Entry] = []   # per param of the groups: [group index, param, where, key, why or None]
        spans: list[tuple[int, int, int]] = []  # (start, end, position) of each param's memory
        for gi, g in enumerate(self.param_groups):
            names = g.get("param_names")
            group_reason = _group_reason(g)
            for j, p in enumerate(g["params"]):
                k = len(entries)
                where = f"param_groups[{gi}]['params'][{j}]" + (f" ({names[j]!r})" if names else "")
                reason = group_reason or _param_reason(self.rule, p)
                if reason is not None and group_reason is None:
                    routes.recheck.append(p)
                reason = reason or self._grad_routes.get(p)
                entries.append([gi, p, where, names[j] if names else k, reason])
                span = _memory_span(p)
                if span is not None:
                    spans.append((span[0], span[1], k))
        # Params sharing memory (a param twice in a group, overlapping views): torch steps
        # each one in turn, and so do we, on its path.
        spans.sort()
        reach, owner = -1, -1
        for start, end, k in spans:
            if start < reach:
                for shared in (k, owner):
                    entries[shared][4] = entries[shared][4] or "shares memory with another param"
            if end > reach:
                reach, owner = end, k
        every = [entry[1] for entry in entries]
        self._grad_routes = {p: why for p, why in self._grad_routes.items() if any(p is q for q in every)}
        torch_params: dict[int, list[torch.Tensor]] = {}
        for gi, p, where, key, reason in entries:
            if reason is None:
                reason = _state_reason(self.rule, self.param_groups[gi], p, self.state.get(p))
            routes.every.append(p)
            routes.in_plan.append(reason is None)
            if reason is None:
                routes.params.append(p)
                routes.groups.append(gi)
                routes.keys.append(key)
            else:
                torch_params.setdefault(gi, []).append(p)
                routes.reasons[where] = reason
        routes.torch_groups = sorted(torch_params.items())
        if routes.reasons:
            self._announce(routes.reasons)
            _refuse_lost_options(self.param_groups, entries, routes.reasons, self.variant.torch_name)
        return routes

    def _torch_name(self) -> str:
        """The torch.optim class of a step with params on torch's path (_announce has refused
        such params for a rule torch.optim lacks)."""
        name = self.variant.torch_name
        assert name is not None
        return name

    def _announce(self, reasons: Mapping[str, str]) -> None:
        name = type(self).__name__
        if self.variant.torch_name is None:
            listed = "; ".join(f"{where}: {why}" for where, why in reasons.items())
            raise TypeError(f"fastoptim.torch.{name} cannot step {listed}; and torch.optim has no {name} "
                            f"to step them instead")
        new = [(where, why) for where, why in reasons.items() if (where, why) not in self._warned]
        if not new:
            return
        self._warned.update(new)
        listed = "; ".join(f"{where}: {why}" for where, why in new)
        warnings.warn(f"fastoptim.torch.{name}: {len(new)} param(s) take torch.optim.{self.variant.torch_name}'s "
                      f"own implementation (same results, not fastoptim's fused kernels): {listed}. "
                      f"Said once per param and reason; optimizer.fallbacks lists them.",
                      FallbackWarning, stacklevel=_user_stacklevel())

    def _route_bad_grads(self) -> bool:
        """Send params whose grads the kernels cannot read to torch's path for good; whether any."""
        found = False
        for p in self._routes.params:
            g = p.grad
            if g is None or p in self._grad_routes:
                continue
            reason = _grad_reason(p, g)
            if reason is not None:
                self._grad_routes[p] = reason
                found = True
        return found

    # Annotations quoted: the generated classes take this as a closure-driven rule's step, and
    # the stub writer (rules._stubs) copies them as they are written here.
    @torch.no_grad()
    def closure_step(self, closure: "Closure") -> "Any":
        """One step of a closure-driven optimizer (LBFGS), as torch.optim's: closure() clears the
        grads, computes the loss, calls backward() and returns the loss; the step calls it (with
        grad enabled) as often as it needs.  Returns the first evaluation's loss."""
        self._current_plan(self._slots_by_group())  # decides the routes
        if not self._routes.torch_groups:
            return self._run_closure_step(closure)
        return self._closure_step_by_torch(closure)

    def _closure_step_by_torch(self, closure: Closure) -> Any:
        """Some params take torch's path: the rule's update spans every param (one flat
        direction), so torch's implementation steps them all, over the same state (torch keeps
        it in the first param's, as the rule does here)."""
        t = self._step_count
        _, lr_changes = self._checked_groups(t)
        if lr_changes is not None:
            self._write_lrs(lr_changes)
        if self._twin is None:
            self._twin = TorchTwin(self._torch_name())
        loss = self._twin.closure_step(self, closure)
        self._step_count = t + 1
        return loss

    # ---- engine hooks: torch tensors, state by tensor ----------------------------
    def _flat(self) -> tuple[list[torch.Tensor], list[int], list[Key]]:
        routes = self._routes
        return list(routes.params), list(routes.groups), list(routes.keys)

    def _plain_lr(self, lr: Any, where: str) -> Any:
        if isinstance(lr, torch.Tensor):  # torch allows a one-element tensor lr
            if lr.numel() != 1:
                raise ValueError(f"Tensor lr must be 1-element ({where}); got shape {tuple(lr.shape)}")
            return lr.item()
        return lr

    def _param_array(self, p: torch.Tensor, key: Key) -> Array:
        if p.is_complex() and not self.rule.takes_complex:  # torch's error, at the step as torch's
            raise RuntimeError(f"{type(self).__name__} does not support complex parameters (params[{key!r}])")
        return _real_view(p)

    def _state_of(self, i: int, p: torch.Tensor) -> dict[str, Any] | None:
        return self.state.get(p)

    def _new_state_for(self, i: int, p: torch.Tensor) -> dict[str, Any]:
        state: dict[str, Any] = self.state[p]  # a State, made on first access (defaultdict)
        return state

    def _state_array(self, t: Any, p: torch.Tensor, i: int, key: Key, name: str, float32: bool = False) -> Array:
        where = f"state[params[{key!r}]][{name!r}]"
        slot = self.rule.slot(name)  # None: the master copy of a 16-bit param
        if slot is not None and slot.scalar:  # a per-tensor scalar (NAdam's mu_product): a 0-d float tensor
            if (not isinstance(t, torch.Tensor) or t.dim() != 0 or t.device.type != "cpu"
                    or t.dtype not in (torch.float32, torch.float64)):
                raise ValueError(f"{where} must be a 0-d float32 or float64 CPU tensor (a per-tensor scalar), "
                                 f"got {t!r}")
            return t.detach().numpy()
        dtype = torch.float32 if float32 else p.dtype  # float32: a 16-bit param's float32 state or master copy
        if slot is not None and slot.reduced is not None:  # Adafactor's row_var: a contiguous tensor of its own shape
            shape = slot.shape(p.shape)
            if not _reduced_state_fits(t, p, shape):
                raise ValueError(f"{where} must be a contiguous {p.dtype} tensor of shape {shape} for its param "
                                 f"of shape {tuple(p.shape)}")
            return t.detach().numpy()
        if not isinstance(t, torch.Tensor) or t.dtype != dtype or t.device != p.device or not _same_layout(t, p):
            raise ValueError(f"{where} must be a tensor laid out like its param "
                             f"({dtype}, shape {tuple(p.shape)}, strides {p.stride()})")
        return _real_view(t)

    def _new_array(self, p: torch.Tensor, fill: Any, slot: Slot, float32: bool = False) -> torch.Tensor:
        if slot.scalar:  # torch.optim's 0-d tensors of _get_scalar_dtype()
            return torch.tensor(float(fill), dtype=_scalar_dtype())
        if slot.reduced is not None:  # Adafactor's row_var: torch's p.grad.new_zeros(shape), contiguous
            return torch.full(slot.shape(p.shape), float(fill), dtype=p.dtype, device=p.device)
        # preserve_format: a channels_last or transposed param gets state laid out like it (torch's too)
        dtype = torch.float32 if float32 else p.dtype
        if fill:
            return torch.full_like(p, complex(fill, fill) if slot.fill_imag and p.is_complex() else fill,
                                   dtype=dtype, memory_format=torch.preserve_format)
        return torch.zeros_like(p, dtype=dtype, memory_format=torch.preserve_format)

    def _master_copy(self, p: torch.Tensor) -> torch.Tensor:
        return p.detach().to(torch.float32, memory_format=torch.preserve_format, copy=True)

    def _is_half(self, p: torch.Tensor) -> bool:
        return p.dtype in _HALF_DTYPES

    def _scalar_f64(self) -> bool:
        return _scalar_dtype() == torch.float64

    def _zero_step(self, group: Mapping[str, Any]) -> torch.Tensor:
        return torch.zeros((), dtype=_step_dtype(group))

    def _step_counter(self, state: dict[str, Any], group: Mapping[str, Any], i: int, key: Key) -> Array:
        value = state.get("step")
        if not (type(value) is torch.Tensor and value.dtype in _COUNTER_DTYPES and value.dim() == 0
                and value.device.type == "cpu" and not value.requires_grad and not value.is_neg()):
            count = _state_step(0 if value is None else value, f"state[params[{key!r}]]['step']")
            value = torch.tensor(float(count), dtype=_step_dtype(group))
            dict.__setitem__(state, "step", value)
        counter: Array = value.numpy()  # a 0-d view: the kernels advance the tensor itself
        return counter

    def _attach(self, plan: StepPlan, params: list[torch.Tensor]) -> None:
        routes = self._routes
        if len(routes.every) == len(routes.params):
            plan.attach_tensors(params)
        else:
            plan.attach_tensors(params, routes.every, bytes(routes.in_plan))

    def _grad_arrays(self, grads: None) -> list[Array | None]:
        return [None if p.grad is None else _real_view(p.grad) for p in self._plan_params]

    def _evaluate(self, closure: Callable[[], Any]) -> tuple[Any, None]:
        with torch.enable_grad():
            return closure(), None

    def _to_state(self, value: Any) -> Any:
        """NumPy arrays as tensors sharing their memory, NumPy scalars as 0-d tensors (torch's layout)."""
        if isinstance(value, list):
            return [self._to_state(v) for v in value]
        if isinstance(value, np.ndarray):
            return torch.from_numpy(value)
        if isinstance(value, np.floating):
            return torch.tensor(value)
        return value

    def _from_state(self, value: Any, name: str) -> Any:
        if isinstance(value, list):
            return [self._from_state(v, f"{name}[{i}]") for i, v in enumerate(value)]
        if isinstance(value, torch.Tensor):
            array = value.detach().numpy()  # torch's own error for a tensor NumPy cannot view
            return array[()] if array.ndim == 0 else array
        return value

    def _gather(self, plan: StepPlan, grads: None) -> int:
        for _ in range(3):
            missing = plan.gather_torch(self.param_groups, _to_dlpack)
            if missing == -1 or (self._routes.recheck and self._rerouted()):
                # params were added, replaced or moved: new tables, checked again
                self._invalidate()
            elif missing == -2 and self._route_bad_grads():  # those params take torch's path now
                self._invalidate()
            else:
                break
            assert self._plan_key is not None  # set with the plan
            plan = self._current_plan(self._plan_key[1])
        else:
            raise RuntimeError("fastoptim.torch: the params changed while building the step")
        if missing == -2:
            self._raise_bad_grad(plan)
        return missing

    def _rerouted(self) -> bool:
        """Whether a param on torch's path for what it was (on meta, say) is now one the kernels
        can step: torch's deferred init builds the optimizer on meta params, then to_empty()s them."""
        return any(_param_reason(self.rule, p) is None for p in self._routes.recheck)

    def _raise_bad_grad(self, plan: StepPlan) -> NoReturn:
        """The error for the grad plan.gather_torch refused (one torch's path does not take either)."""
        params, _, keys = self._flat()
        i, hit = plan.bad_tensor, plan.bad_overlap
        p, g = params[i], params[i].grad
        assert g is not None  # the grad gather_torch refused
        name, param_name = f"params[{keys[i]!r}].grad", f"params[{keys[i]!r}]"
        if hit >= 0:
            raise ValueError(f"{name} shares memory with params[{keys[hit]!r}] or its state; "
                             f"a gradient must be its own tensor")
        if g.dtype != p.dtype:
            raise TypeError(f"{name} has dtype {g.dtype} but {param_name} has dtype {p.dtype}")
        if g.shape != p.shape:
            raise ValueError(f"{name} has shape {tuple(g.shape)} but {param_name} has shape {tuple(p.shape)}")
        raise ValueError(f"{name} (strides {g.stride()}, {g.dtype}) cannot be read in place for "
                         f"{param_name} (strides {p.stride()}, {p.dtype})")

    # ---- checkpoints --------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """torch.optim's state_dict layout, keys and dtypes ('step' a float tensor).

        Unlike torch's, a snapshot: state tensors are copies, so the dict stays
        consistent as training goes on and an optimizer loading it never shares
        memory with this one.
        """
        sd = super().state_dict()

        def snapshot(value: Any) -> Any:
            return value.clone() if isinstance(value, torch.Tensor) else copy.deepcopy(value)

        sd["state"] = {key: ({name: snapshot(value) for name, value in entry.items()}
                             if isinstance(entry, dict) else snapshot(entry))
                       for key, entry in sd["state"].items()}
        sd["step_count"] = self._step_count
        return split_schedules(sd)  # so that torch.optim loads it without an 'lr_schedule' key

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a state_dict of this optimizer or of its torch.optim counterpart.

        Checked first, so a bad dict changes nothing; state tensors are copied
        (in the param's dtype and layout), never shared with the dict.  The
        class's fixed options win over the loaded ones (AdamW stays AdamW).
        """
        groups = self.param_groups
        saved_groups = saved_groups_with_schedules(state_dict)
        state_dict = {k: v for k, v in state_dict.items() if k != SCHEDULES_KEY} | {"param_groups": saved_groups}
        step_count = _validation.step_count(state_dict.get("step_count", 0), "loaded step_count")
        if len(saved_groups) != len(groups):
            raise ValueError(f"loaded state dict has {len(saved_groups)} param groups, "
                             f"this optimizer has {len(groups)}")
        id_map: dict[Any, torch.Tensor] = {}    # saved param id -> this optimizer's param
        group_of: dict[Any, dict[str, Any]] = {}  # saved param id -> its group, as loaded
        for gi, (group, saved) in enumerate(zip(groups, saved_groups)):
            if len(saved["params"]) != len(group["params"]):
                raise ValueError(f"loaded param_groups[{gi}] has {len(saved['params'])} params, "
                                 f"this optimizer's has {len(group['params'])}")
            merged = dict(group)
            merged.update({k: v for k, v in saved.items() if k not in ("params", "param_names")})
            merged.update(self.variant.fixed)
            where = f"loaded param_groups[{gi}]"
            schedule = merged.get("lr_schedule")
            if schedule is not None and not callable(schedule):
                raise TypeError(f"{where}['lr_schedule']={schedule!r} is not a schedule (a callable taking the step)")
            self._check_tensor_options(merged, f" ({where})")
            self._checked_hyper(merged, where)
            id_map.update(zip(saved["params"], group["params"]))
            group_of.update((key, merged) for key in saved["params"])
        state: dict[Any, Any] = {}
        # torch's loader casts every state tensor of a float param to the param's dtype; these keep theirs
        kept_dtype: list[tuple[torch.Tensor, str, torch.Tensor]] = []
        slots = {slot.name for slot in self.rule.state}
        for key, entry in state_dict["state"].items():
            p = id_map.get(key)
            if p is None or not isinstance(entry, dict):
                state[key] = entry
                continue
            own: dict[str, Any] = {}
            for name, value in entry.items():
                where = f"loaded state[{key!r}][{name!r}]"
                if isinstance(value, np.ndarray) and name != "step":
                    value = torch.from_numpy(value)  # a fastoptim (NumPy) checkpoint; copied below
                if name == "step":
                    own[name] = self._loaded_step(value, group_of[key], where)
                elif name not in slots and name != "master_param":  # a rule's own state (LBFGS's), or a user's
                    own[name] = _cloned(value)                         # copied as it is
                elif isinstance(value, torch.Tensor) and name in slots and self.rule.slots_by_name[name].scalar:
                    if value.dim() != 0:
                        raise ValueError(f"{where} has shape {tuple(value.shape)}; expected a 0-d tensor "
                                         f"(a per-tensor scalar)")
                    own[name] = value.detach().to(device="cpu", copy=True)
                elif (isinstance(value, torch.Tensor) and name in slots
                      and self.rule.slots_by_name[name].reduced is not None):
                    shape = self.rule.slots_by_name[name].shape(p.shape)
                    if tuple(value.shape) != shape:
                        raise ValueError(f"{where} has shape {tuple(value.shape)} but its param of shape "
                                         f"{tuple(p.shape)} needs {shape}")
                    own[name] = torch.empty(shape, dtype=p.dtype, device=p.device).copy_(value.detach())
                elif isinstance(value, torch.Tensor):
                    if tuple(value.shape) != tuple(p.shape):
                        raise ValueError(f"{where} has shape {tuple(value.shape)} but its param has "
                                         f"shape {tuple(p.shape)}")
                    # our own copy, in the param's layout and dtype (torch casts to the dtype too), or
                    # in float32 for a 16-bit param's master copy and float32 state
                    dtype = torch.float32 if self._loaded_as_float32(name, group_of[key], p) else p.dtype
                    own[name] = torch.empty_like(p, dtype=dtype, memory_format=torch.preserve_format).copy_(
                        value.detach())
                    if dtype != p.dtype:
                        kept_dtype.append((p, name, own[name]))
                else:
                    own[name] = value
                if (name not in slots and isinstance(own[name], torch.Tensor)
                        and not own[name].is_floating_point()):
                    # integer or bool state (8-bit codes state1/state2, a user's counter) keeps its
                    # dtype, which torch.optim's loader would cast to the param's
                    kept_dtype.append((p, name, own[name]))
            state[key] = own
        super().load_state_dict({k: v for k, v in state_dict.items() if k != "step_count"} | {"state": state})
        for p, name, value in kept_dtype:
            dict.__setitem__(self.state[p], name, value)
        self._step_count = step_count
        self._lr_written = {gi: (g["lr_schedule"], g["lr"]) for gi, g in enumerate(self.param_groups)
                            if g.get("lr_schedule") is not None}
        # e.g. a fastoptim.optim checkpoint has no torch-only keys; but only the class's own
        # options: torch's loader adds 'differentiable' to the defaults of every optimizer,
        # and torch.optim.LBFGS's or Muon's groups have none
        options = self._group_options()
        for group in self.param_groups:
            for name, default in self.defaults.items():
                if name in options:
                    group.setdefault(name, default)
        self._fix_variant_options()
        self._invalidate()

    @staticmethod
    def _loaded_step(value: Any, group: Mapping[str, Any], where: str) -> torch.Tensor:
        """A loaded 'step' as torch keeps it: a fused group's as float32, a tensor otherwise
        as it is (copied), a number as a tensor of torch's dtype for it."""
        count = _state_step(value, where)
        if group.get("fused"):
            return torch.tensor(float(count), dtype=torch.float32)
        if isinstance(value, torch.Tensor):
            return value.detach().to(device="cpu", copy=True)
        return torch.tensor(float(count), dtype=_scalar_dtype())
