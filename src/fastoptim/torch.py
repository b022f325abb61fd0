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
which torch.optim ignores; a checkpoint holding a schedule needs a picklable one
(not a lambda) and torch.load(..., weights_only=False).
"""
import copy
import math
from collections import defaultdict

import numpy as np

try:
    import torch
except ImportError:  # pragma: no cover - exercised only without torch
    raise ImportError("fastoptim.torch needs PyTorch: pip install 'fastoptim[torch]' "
                      "(tested with torch==2.13.0)") from None

from . import _kernels
from . import optim as _optim
from .optim.optimizer import _STAND_IN_LR, ScheduledLR, _checked_step_count, _scheduled_lr, _State, state_operands

_TORCH_DTYPES = (torch.float32, torch.float64)
_to_dlpack = torch._C._to_dlpack


class _Version:
    """A counter the state containers bump when they change, so the plan is rebuilt."""

    __slots__ = ("value",)

    def __init__(self):
        self.value = 0


class _ParamState(_State):
    """One param's state; assigning to it invalidates the optimizer's pointer tables."""

    __slots__ = ()

    def _changed(self):
        self._owner.value += 1  # the owner here is the optimizer's _Version


class _StateMap(defaultdict):
    """torch's `state` (param -> state dict), with every change counted."""

    def __init__(self, version, items=()):
        super().__init__(lambda: _ParamState(version))
        self._version = version
        for key, value in dict(items).items():
            self[key] = value

    def __setitem__(self, key, value):
        if not isinstance(value, _ParamState):
            value = _ParamState(self._version, value)
        super().__setitem__(key, value)
        self._version.value += 1

    def __delitem__(self, key):
        super().__delitem__(key)
        self._version.value += 1

    def pop(self, *args):
        self._version.value += 1
        return super().pop(*args)

    def clear(self):
        super().clear()
        self._version.value += 1

    def update(self, *args, **kwargs):
        for key, value in dict(*args, **kwargs).items():
            self[key] = value

    def __reduce__(self):
        return (dict, ({k: dict(v) for k, v in self.items()},))

    def __deepcopy__(self, memo):
        return copy.deepcopy({k: dict(v) for k, v in self.items()}, memo)


def _scalar_dtype():
    # torch.optim's dtype for state['step'] (torch.optim.optimizer._get_scalar_dtype)
    return torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32


def _check_tensor(t, where, what="param"):
    """A CPU, dense, contiguous float32/float64 tensor a kernel can update in place."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{where} must be a torch.Tensor, got {type(t).__module__}.{type(t).__qualname__}")
    if t.is_sparse or t.layout != torch.strided:
        raise TypeError(f"{where} is a {t.layout} tensor; fastoptim.torch takes dense (strided) {what}s only")
    if t.device.type != "cpu":
        raise ValueError(f"{where} is on {t.device}; fastoptim.torch steps CPU tensors and never copies "
                         f"them behind your back: step a CPU copy of the {what}s")
    if t.dtype not in _TORCH_DTYPES:
        raise TypeError(f"{where} has dtype {t.dtype}; expected torch.float32 or torch.float64")
    if not t.is_contiguous():
        raise ValueError(f"{where} is not contiguous (strides {t.stride()} for shape {tuple(t.shape)}); "
                         f"fastoptim.torch updates {what}s in place and never through a hidden copy")
    if t.is_neg() or t.is_conj():
        raise ValueError(f"{where} is a lazily negated or conjugated view; materialize it first")


def _state_step(value, where):
    """A step count from an int, a float or a 0-d tensor (torch keeps float32 steps)."""
    try:
        f = float(value)
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(f"{where} must be a number or a one-element tensor, got {value!r}") from None
    if not f.is_integer() or f < 0:
        raise ValueError(f"{where} must be a whole number >= 0, got {value!r}")
    return int(f)


class Optimizer(ScheduledLR, torch.optim.Optimizer):
    """Base of fastoptim's torch.optim drop-ins.  A subclass names its fastoptim.optim
    twin (`_twin`), which owns the rule, the hyperparameter checks and the state layout."""

    _twin = None  # the fastoptim.optim class with the same rule

    def __init__(self, params, defaults):
        self._version = _Version()
        self._plan = None
        self._plan_key = None
        self._fresh = set()  # flat indices of params whose state began this step (SGD)
        self._step_count = 0  # step() calls made: the t schedules are evaluated at
        self._lr_written = {}  # group index -> (schedule, lr) this optimizer last wrote there
        super().__init__(params, defaults)

    # ---- state containers ------------------------------------------------------
    @property
    def state(self):
        return self._state_map

    @state.setter
    def state(self, value):
        # torch assigns a plain defaultdict (in __init__ and load_state_dict);
        # ours counts changes, so the cached plan never points at replaced tensors.
        self._state_map = _StateMap(self._version, value)

    def __setstate__(self, state):
        if "_version" not in self.__dict__:  # unpickling: __init__ did not run
            self._version, self._plan, self._plan_key, self._fresh = _Version(), None, None, set()
            self._step_count, self._lr_written = 0, {}
        state = dict(state)
        state_map = state.pop("state", None)
        super().__setstate__(state)
        if state_map is not None:
            self.state = state_map
        self._version.value += 1

    # ---- groups ------------------------------------------------------------
    def add_param_group(self, param_group):
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        gi = len(self.param_groups) - 1
        try:
            where = f"param_groups[{gi}]"
            self._check_torch_flags(group, where)
            self._install_schedule(group, where)  # 'lr' shows the value the next step uses
            if "lr_schedule" in group:
                self._lr_written[gi] = (group["lr_schedule"], group["lr"])
            self._kernel_hyper(group, where)
            names = group.get("param_names")
            for j, p in enumerate(group["params"]):
                _check_tensor(p, f"param_groups[{gi}]['params'][{j}]" + (f" ({names[j]!r})" if names else ""))
            self._build_plan()  # checks that no two params share memory
        except Exception:
            self.param_groups.pop()
            self._lr_written.pop(gi, None)
            raise
        if self._twin._eager_state:  # torch's Adagrad creates its state here
            for p in group["params"]:
                self._fill_state(self.state[p], group, p)
        self._version.value += 1

    def _check_torch_flags(self, group, where):
        for flag, reason in (("differentiable", "autograd cannot see through the in-place C kernels"),
                             ("capturable", "it is for CUDA graphs; fastoptim.torch steps CPU tensors")):
            if group.get(flag, False):
                raise ValueError(f"{flag}=True is not supported by fastoptim.torch ({where}): {reason}")

    def _check_hyper(self, group, lr, where):
        """The twin's checked kernel hyperparameters of `group`, with `lr` as its learning rate."""
        return self._twin._check_hyper(self, group, lr, where)

    def _kernel_hyper(self, group, where, lr=None):
        """The group's checked kernel hyperparameters, at `lr` if given (a schedule's value)."""
        if lr is None:
            lr = group["lr"]
            if isinstance(lr, torch.Tensor):  # torch allows a one-element tensor lr
                if lr.numel() != 1:
                    raise ValueError(f"Invalid learning rate: lr is a tensor of shape {tuple(lr.shape)} "
                                     f"({where}); expected a number or a one-element tensor")
                lr = lr.item()
        if type(lr) is float and 0.0 <= lr < math.inf:
            # The memoized check sees a fixed stand-in, so it hits although schedules and
            # lr_schedulers change lr every step; lr is valid and first in every rule's fields.
            return (lr,) + self._check_hyper(group, _STAND_IN_LR, where)[1:]
        return self._check_hyper(group, lr, where)

    # ---- state ------------------------------------------------------------
    def _new_state(self, group, p, name):
        if name == "sum":  # Adagrad's accumulator
            return torch.full_like(p, group["initial_accumulator_value"], memory_format=torch.contiguous_format)
        return torch.zeros_like(p, memory_format=torch.contiguous_format)

    def _fill_state(self, state, group, p):
        if self._twin._has_step:
            dict.__setitem__(state, "step", torch.zeros((), dtype=torch.int64))
        for name in self._twin._state_slots(self, group):
            if name is not None:
                dict.__setitem__(state, name, self._new_state(group, p, name))

    # ---- pointer tables -----------------------------------------------------
    def _slots_by_group(self):
        return tuple([self._twin._state_slots(self, g) for g in self.param_groups])

    def _current_plan(self, slots):
        if self._plan is None or self._plan_key != (self._version.value, slots):
            self._plan = self._build_plan()
            self._plan_key = (self._version.value, slots)
        return self._plan

    def _build_plan(self):
        """Pointer tables over the NumPy views of every param and its state."""
        params, groups, keys = [], [], []
        for gi, g in enumerate(self.param_groups):
            names = g.get("param_names")
            for j, p in enumerate(g["params"]):
                params.append(p)
                groups.append(gi)
                keys.append(names[j] if names else len(keys))
        slots = self._slots_by_group()
        steps = np.zeros(len(params), dtype=np.int64)
        views, state_arrays = [], []
        for i, p in enumerate(params):
            _check_tensor(p, f"params[{keys[i]!r}]")
            views.append(p.detach().numpy())
            state = self.state.get(p)
            operands = state_operands(
                state, slots[groups[i]],
                lambda name: self._new_state(self.param_groups[groups[i]], p, name),
                lambda tensor, name: self._state_view(tensor, p, keys[i], name))
            state_arrays.append(operands)
            if operands is None or all(a is None for a in operands):
                continue
            if self._twin._has_step:
                steps[i] = _state_step(state.get("step", 0), f"state[params[{keys[i]!r}]]['step']")
                # The live 'step' is a 0-d view of the count the kernels advance.
                dict.__setitem__(state, "step", torch.from_numpy(steps[i:i + 1].reshape(())))
            else:
                steps[i] = 0 if i in self._fresh else 1
        plan = _kernels.StepPlan(self._twin._rule, views, state_arrays, groups, len(self.param_groups),
                                 keys, steps)
        plan.attach_tensors(params)
        return plan

    def _state_view(self, t, p, key, name):
        where = f"state[params[{key!r}]][{name!r}]"
        _check_tensor(t, where, "state tensor")
        if t.dtype != p.dtype or t.shape != p.shape:
            raise ValueError(f"{where} has dtype {t.dtype} and shape {tuple(t.shape)}; expected "
                             f"{p.dtype} and {tuple(p.shape)} like its param")
        return t.detach().numpy()

    # ---- the step -----------------------------------------------------------
    @torch.no_grad()
    def step(self, closure=None):
        """Update every param that has a grad, in place, in one call into the kernels."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        t = self._step_count
        hyper = []
        lr_changes = None  # (group index, group, schedule or None, lr), written once all checks pass
        for gi, g in enumerate(self.param_groups):
            where = f"param_groups[{gi}]"
            # A plain float lr and no schedule, the usual case, skips the schedule logic.
            schedule = None if type(g["lr"]) is float and "lr_schedule" not in g else self._group_schedule(gi, g)
            if schedule is None:
                hyper.append(self._kernel_hyper(g, where))
                if "lr_schedule" in g:  # replaced by a number written to 'lr'
                    lr_changes = (lr_changes or []) + [(gi, g, None, g["lr"])]
                continue
            lr = _scheduled_lr(schedule, t, where)
            hyper.append(self._kernel_hyper(g, where, lr))
            lr_changes = (lr_changes or []) + [(gi, g, schedule, lr)]
        slots = self._slots_by_group()
        plan = self._current_plan(slots)
        missing = plan.gather_torch(self.param_groups, _to_dlpack)
        if missing < 0:  # params were added, replaced or moved: new tables, checked again
            self._version.value += 1
            plan = self._current_plan(slots)
            missing = plan.gather_torch(self.param_groups, _to_dlpack)
            if missing < 0:
                raise RuntimeError("fastoptim.torch: the params changed while building the step")
        if missing:
            # First grad of some params: create their state, now that every check passed.
            params = plan.tensors
            group_of = [gi for gi, g in enumerate(self.param_groups) for _ in g["params"]]
            for i in plan.missing_state():
                group = self.param_groups[group_of[i]]
                self._fill_state(self.state[params[i]], group, params[i])
                self._fresh.add(i)
            self._version.value += 1
            plan = self._current_plan(slots)
            plan.gather_torch(self.param_groups, _to_dlpack)
        if lr_changes is not None:
            self._write_lrs(lr_changes)
        plan.run(hyper)
        self._fresh.clear()
        self._step_count = t + 1
        return loss

    # ---- checkpoints --------------------------------------------------------
    def state_dict(self):
        """torch.optim's state_dict layout, keys and dtypes ('step' a float tensor).

        Unlike torch's, a snapshot: state tensors are copies, so the dict stays
        consistent as training goes on and an optimizer loading it never shares
        memory with this one.
        """
        sd = super().state_dict()
        scalar = _scalar_dtype()
        sd["state"] = {key: {name: (torch.tensor(float(value), dtype=scalar) if name == "step"
                                    else value.clone() if isinstance(value, torch.Tensor)
                                    else copy.deepcopy(value))
                             for name, value in entry.items()}
                       for key, entry in sd["state"].items()}
        sd["step_count"] = self._step_count
        return sd

    def load_state_dict(self, state_dict):
        """Load a state_dict of this optimizer or of its torch.optim counterpart.

        Checked first, so a bad dict changes nothing; state tensors are copied
        (contiguous, in the param's dtype), never shared with the dict.
        """
        groups = self.param_groups
        saved_groups = state_dict["param_groups"]
        step_count = _checked_step_count(state_dict.get("step_count", 0), "loaded step_count")
        if len(saved_groups) != len(groups):
            raise ValueError(f"loaded state dict has {len(saved_groups)} param groups, "
                             f"this optimizer has {len(groups)}")
        id_map = {}
        for gi, (group, saved) in enumerate(zip(groups, saved_groups)):
            if len(saved["params"]) != len(group["params"]):
                raise ValueError(f"loaded param_groups[{gi}] has {len(saved['params'])} params, "
                                 f"this optimizer's has {len(group['params'])}")
            merged = dict(group)
            merged.update({k: v for k, v in saved.items() if k not in ("params", "param_names")})
            where = f"loaded param_groups[{gi}]"
            self._check_torch_flags(merged, where)
            schedule = merged.get("lr_schedule")
            if schedule is not None and not callable(schedule):
                raise TypeError(f"{where}['lr_schedule']={schedule!r} is not a schedule (a callable taking the step)")
            self._kernel_hyper(merged, where)
            id_map.update(zip(saved["params"], group["params"]))
        state = {}
        for key, entry in state_dict["state"].items():
            p = id_map.get(key)
            if p is None:
                state[key] = entry
                continue
            own = {}
            for name, value in entry.items():
                where = f"loaded state[{key!r}][{name!r}]"
                if name == "step":
                    own[name] = torch.tensor(_state_step(value, where), dtype=torch.int64)
                elif isinstance(value, torch.Tensor):
                    if tuple(value.shape) != tuple(p.shape):
                        raise ValueError(f"{where} has shape {tuple(value.shape)} but its param has "
                                         f"shape {tuple(p.shape)}")
                    own[name] = value.detach().to(device=p.device, dtype=p.dtype, copy=True,
                                                  memory_format=torch.contiguous_format)
                else:
                    own[name] = value
            state[key] = own
        super().load_state_dict({k: v for k, v in state_dict.items() if k != "step_count"} | {"state": state})
        self._step_count = step_count
        self._lr_written = {gi: (g["lr_schedule"], g["lr"]) for gi, g in enumerate(self.param_groups)
                            if g.get("lr_schedule") is not None}
        for group in self.param_groups:  # e.g. a fastoptim.optim checkpoint has no torch-only keys
            for name, default in self.defaults.items():
                group.setdefault(name, default)
        # torch casts a fused group's step to float32; keep ours as int64
        for s in self.state.values():
            if "step" in s and s["step"].dtype != torch.int64:
                dict.__setitem__(s, "step", torch.tensor(_state_step(s["step"], "step"), dtype=torch.int64))
        self._version.value += 1


class SGD(Optimizer):
    """torch.optim.SGD on fastoptim's kernels (momentum, dampening, Nesterov, weight decay)."""

    _twin = _optim.SGD

    def __init__(self, params, lr=1e-3, momentum=0, dampening=0, weight_decay=0, nesterov=False, *,
                 maximize=False, foreach=None, differentiable=False, fused=None):
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening,
                                      weight_decay=weight_decay, nesterov=nesterov, maximize=maximize,
                                      foreach=foreach, differentiable=differentiable, fused=fused))


class Adagrad(Optimizer):
    """torch.optim.Adagrad on fastoptim's kernels (state created at construction, like torch)."""

    _twin = _optim.Adagrad

    def __init__(self, params, lr=1e-2, lr_decay=0, weight_decay=0, initial_accumulator_value=0, eps=1e-10,
                 foreach=None, *, maximize=False, differentiable=False, fused=None):
        super().__init__(params, dict(lr=lr, lr_decay=lr_decay, eps=eps, weight_decay=weight_decay,
                                      initial_accumulator_value=initial_accumulator_value, foreach=foreach,
                                      maximize=maximize, differentiable=differentiable, fused=fused))


class RMSprop(Optimizer):
    """torch.optim.RMSprop on fastoptim's kernels (momentum, centered)."""

    _twin = _optim.RMSprop

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0, momentum=0, centered=False,
                 capturable=False, foreach=None, maximize=False, differentiable=False):
        super().__init__(params, dict(lr=lr, momentum=momentum, alpha=alpha, eps=eps, centered=centered,
                                      weight_decay=weight_decay, capturable=capturable, foreach=foreach,
                                      maximize=maximize, differentiable=differentiable))


class Adadelta(Optimizer):
    """torch.optim.Adadelta on fastoptim's kernels."""

    _twin = _optim.Adadelta

    def __init__(self, params, lr=1.0, rho=0.9, eps=1e-6, weight_decay=0, foreach=None, *,
                 capturable=False, maximize=False, differentiable=False):
        super().__init__(params, dict(lr=lr, rho=rho, eps=eps, weight_decay=weight_decay,
                                      maximize=maximize, capturable=capturable, foreach=foreach,
                                      differentiable=differentiable))


class Adam(Optimizer):
    """torch.optim.Adam on fastoptim's kernels (AMSGrad, decoupled_weight_decay=True is AdamW)."""

    _twin = _optim.Adam

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, amsgrad=False, *,
                 foreach=None, maximize=False, capturable=False, differentiable=False, fused=None,
                 decoupled_weight_decay=False):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                      amsgrad=amsgrad, maximize=maximize, foreach=foreach,
                                      capturable=capturable, differentiable=differentiable, fused=fused,
                                      decoupled_weight_decay=decoupled_weight_decay))


class AdamW(Adam):
    """torch.optim.AdamW on fastoptim's kernels (weight decay decoupled: p *= 1 - lr * wd)."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False, *,
                 maximize=False, foreach=None, capturable=False, differentiable=False, fused=None):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
                         foreach=foreach, maximize=maximize, capturable=capturable,
                         differentiable=differentiable, fused=fused, decoupled_weight_decay=True)


__all__ = ["Optimizer", "SGD", "Adagrad", "RMSprop", "Adadelta", "Adam", "AdamW"]
