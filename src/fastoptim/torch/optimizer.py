"""The torch adapter of the step engine: torch.optim.Optimizer's groups, state
and state_dict over torch tensors, stepped through zero-copy NumPy views.

The step itself is fastoptim._engine's; this module says what the tensors
are, reads grads through DLPack and words torch-specific errors.  The
optimizer classes are generated in fastoptim.torch.
"""
import copy
from collections import defaultdict

import numpy as np

import torch

from .. import _validation
from .._engine import State, StepEngine

_TORCH_DTYPES = (torch.float32, torch.float64)
_to_dlpack = torch._C._to_dlpack


class _StateMap(defaultdict):
    """torch's `state` (param -> state dict); every change invalidates the owner's pointer tables."""

    def __init__(self, owner, items=()):
        super().__init__(lambda: State(owner))
        self._owner = owner
        for key, value in dict(items).items():
            self[key] = value

    def __setitem__(self, key, value):
        if not isinstance(value, State):
            value = State(self._owner, value)
        super().__setitem__(key, value)
        self._owner._invalidate()

    def __delitem__(self, key):
        super().__delitem__(key)
        self._owner._invalidate()

    def pop(self, *args):
        self._owner._invalidate()
        return super().pop(*args)

    def clear(self):
        super().clear()
        self._owner._invalidate()

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


def _cloned(value):
    """A copy of a state value: tensors cloned (contiguous), lists item by item."""
    if isinstance(value, (list, tuple)):
        return type(value)(_cloned(v) for v in value)
    if isinstance(value, torch.Tensor):
        return value.detach().clone(memory_format=torch.contiguous_format)
    return copy.deepcopy(value)


def _state_step(value, where):
    """A step count from an int, a float or a 0-d tensor (torch keeps float32 steps)."""
    try:
        f = float(value)
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(f"{where} must be a number or a one-element tensor, got {value!r}") from None
    if not f.is_integer() or f < 0:
        raise ValueError(f"{where} must be a whole number >= 0, got {value!r}")
    return int(f)


class Optimizer(StepEngine, torch.optim.Optimizer):
    """Base of fastoptim's torch.optim drop-ins; the generated subclasses set `rule`."""

    rule = None

    def __init__(self, params, defaults):
        self._init_engine(defaults)
        super().__init__(params, defaults)

    # ---- state containers ------------------------------------------------------
    @property
    def state(self):
        return self._state_map

    @state.setter
    def state(self, value):
        # torch assigns a plain defaultdict (in __init__ and load_state_dict);
        # ours counts changes, so the cached plan never points at replaced tensors.
        self._state_map = _StateMap(self, value)

    def __setstate__(self, state):
        if "_state_version" not in self.__dict__:  # unpickling: __init__ did not run
            self._init_engine(state["defaults"])
        state = dict(state)
        state_map = state.pop("state", None)
        super().__setstate__(state)
        if state_map is not None:
            self.state = state_map
        self._invalidate()

    # ---- groups ------------------------------------------------------------
    def add_param_group(self, param_group):
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        gi = len(self.param_groups) - 1
        try:
            where = f"param_groups[{gi}]"
            self._check_group_count(gi, where)
            self._check_torch_flags(group, where)
            self._install_schedule(group, where)  # 'lr' shows the value the next step uses
            if "lr_schedule" in group:
                self._lr_written[gi] = (group["lr_schedule"], group["lr"])
            self._checked_hyper(group, where)
            names = group.get("param_names")
            for j, p in enumerate(group["params"]):
                _check_tensor(p, f"param_groups[{gi}]['params'][{j}]" + (f" ({names[j]!r})" if names else ""))
            self._build_plan()  # checks that no two params share memory
        except Exception:
            self.param_groups.pop()
            self._lr_written.pop(gi, None)
            raise
        if self.rule.eager_state:  # torch's Adagrad creates its state here
            for p in group["params"]:
                self._fill_state(self.state[p], group, p)
        self._invalidate()

    def _check_torch_flags(self, group, where):
        for flag, reason in (("differentiable", "autograd cannot see through the in-place C kernels"),
                             ("capturable", "it is for CUDA graphs; fastoptim.torch steps CPU tensors")):
            if group.get(flag, False):
                raise ValueError(f"{flag}=True is not supported by fastoptim.torch ({where}): {reason}")

    # ---- the step -----------------------------------------------------------
    @torch.no_grad()
    def step(self, closure=None):
        """Update every param that has a grad, in place, in one call into the kernels."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self._run_step(None)
        return loss

    @torch.no_grad()
    def closure_step(self, closure):
        """One step of a closure-driven optimizer (LBFGS), as torch.optim's: closure() clears the
        grads, computes the loss, calls backward() and returns the loss; the step calls it (with
        grad enabled) as often as it needs.  Returns the first evaluation's loss."""
        return self._run_closure_step(closure)

    # ---- engine hooks: torch tensors, state by tensor ----------------------------
    def _flat(self):
        params, groups, keys = [], [], []
        for gi, g in enumerate(self.param_groups):
            names = g.get("param_names")
            for j, p in enumerate(g["params"]):
                params.append(p)
                groups.append(gi)
                keys.append(names[j] if names else len(keys))
        return params, groups, keys

    def _plain_lr(self, lr, where):
        if isinstance(lr, torch.Tensor):  # torch allows a one-element tensor lr
            if lr.numel() != 1:
                raise ValueError(f"Invalid learning rate: lr is a tensor of shape {tuple(lr.shape)} "
                                 f"({where}); expected a number or a one-element tensor")
            return lr.item()
        return lr

    def _param_array(self, p, key):
        _check_tensor(p, f"params[{key!r}]")
        return p.detach().numpy()

    def _state_of(self, i, p):
        return self.state.get(p)

    def _new_state_for(self, i, p):
        return self.state[p]

    def _state_array(self, t, p, i, key, name):
        where = f"state[params[{key!r}]][{name!r}]"
        _check_tensor(t, where, "state tensor")
        slot = self.rule.slot(name)
        if slot.scalar:
            if t.dim() != 0:
                raise ValueError(f"{where} has shape {tuple(t.shape)}; expected a 0-d tensor (a per-tensor scalar)")
        else:
            shape = slot.shape(tuple(p.shape))
            if t.dtype != p.dtype or tuple(t.shape) != shape:
                like = "like its param" if shape == tuple(p.shape) else f"for its param of shape {tuple(p.shape)}"
                raise ValueError(f"{where} has dtype {t.dtype} and shape {tuple(t.shape)}; expected "
                                 f"{p.dtype} and {shape} {like}")
        return t.detach().numpy()

    def _new_array(self, p, fill, slot):
        if slot.scalar:  # torch.optim's 0-d tensors of _get_scalar_dtype()
            return torch.tensor(float(fill), dtype=_scalar_dtype())
        shape = slot.shape(tuple(p.shape))
        if shape == tuple(p.shape):
            if fill:
                return torch.full_like(p, fill, memory_format=torch.contiguous_format)
            return torch.zeros_like(p, memory_format=torch.contiguous_format)
        return torch.full(shape, fill, dtype=p.dtype) if fill else torch.zeros(shape, dtype=p.dtype)

    def _scalar_f64(self):
        return _scalar_dtype() == torch.float64

    def _zero_step(self):
        return torch.zeros((), dtype=torch.int64)

    def _step_value(self, value, i, key):
        return _state_step(value, f"state[params[{key!r}]]['step']")

    def _live_step(self, steps, i):
        return torch.from_numpy(steps[i:i + 1].reshape(()))

    def _attach(self, plan, params):
        plan.attach_tensors(params)

    def _grad_arrays(self, grads):
        return [None if p.grad is None else p.grad.detach().numpy() for p in self._plan_params]

    def _evaluate(self, closure):
        with torch.enable_grad():
            return closure(), None

    def _to_state(self, value):
        """NumPy arrays as tensors sharing their memory, NumPy scalars as 0-d tensors (torch's layout)."""
        if isinstance(value, list):
            return [self._to_state(v) for v in value]
        if isinstance(value, np.ndarray):
            return torch.from_numpy(value)
        if isinstance(value, np.floating):
            return torch.tensor(value)
        return value

    def _from_state(self, value, name):
        if isinstance(value, list):
            return [self._from_state(v, f"{name}[{i}]") for i, v in enumerate(value)]
        if isinstance(value, torch.Tensor):
            _check_tensor(value, f"state[params[0]][{name}]", "state tensor")
            array = value.detach().numpy()
            return array[()] if array.ndim == 0 else array
        return value

    def _gather(self, plan, grads):
        missing = plan.gather_torch(self.param_groups, _to_dlpack)
        if missing == -1:  # params were added, replaced or moved: new tables, checked again
            self._invalidate()
            plan = self._current_plan(self._plan_key[1])
            missing = plan.gather_torch(self.param_groups, _to_dlpack)
            if missing == -1:
                raise RuntimeError("fastoptim.torch: the params changed while building the step")
        if missing == -2:
            self._raise_bad_grad(plan)
        return missing

    def _raise_bad_grad(self, plan):
        """The error for the grad plan.gather_torch refused."""
        params, _, keys = self._flat()
        i, hit = plan.bad_tensor, plan.bad_overlap
        p, g = params[i], params[i].grad
        name, param_name = f"params[{keys[i]!r}].grad", f"params[{keys[i]!r}]"
        if hit >= 0:
            raise ValueError(f"{name} shares memory with params[{keys[hit]!r}] or its state; "
                             f"a gradient must be its own tensor")
        if g.is_sparse or g.layout != torch.strided:
            raise TypeError(f"{name} is a sparse ({g.layout}) tensor; fastoptim.torch takes dense "
                            f"gradients only (use a dense embedding, or torch.optim.SparseAdam)")
        if g.device.type != "cpu":
            raise ValueError(f"{name} is on {g.device}; fastoptim.torch steps CPU tensors and never "
                             f"copies them behind your back")
        if g.dtype != p.dtype:
            raise TypeError(f"{name} has dtype {g.dtype} but {param_name} has dtype {p.dtype}")
        if g.shape != p.shape:
            raise ValueError(f"{name} has shape {tuple(g.shape)} but {param_name} has shape {tuple(p.shape)}")
        raise ValueError(f"{name} is not contiguous (strides {g.stride()} for shape {tuple(g.shape)}); "
                         f"fastoptim.torch never reads through a hidden copy: make it contiguous "
                         f"(p.grad = p.grad.contiguous()) or keep it so")

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
        step_count = _validation.step_count(state_dict.get("step_count", 0), "loaded step_count")
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
            self._checked_hyper(merged, where)
            id_map.update(zip(saved["params"], group["params"]))
        state = {}
        slot_names = {slot.name for slot in self.rule.state}
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
                elif name not in slot_names:  # a rule's own state (LBFGS's): copied as it is
                    own[name] = _cloned(value)
                elif isinstance(value, torch.Tensor):
                    slot = self.rule.slot(name)
                    shape = tuple(p.shape) if slot is None else slot.shape(tuple(p.shape))
                    if tuple(value.shape) != shape:
                        raise ValueError(f"{where} has shape {tuple(value.shape)} but its param has "
                                         f"shape {tuple(p.shape)}" + ("" if shape == tuple(p.shape) else
                                                                       f" (it needs {shape})"))
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
        self._invalidate()
