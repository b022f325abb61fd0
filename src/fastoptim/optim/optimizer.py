"""The NumPy adapter of the step engine: param groups, state and state_dict of
NumPy arrays, as torch.optim has them.

The step itself (checks, schedules, state creation, pointer tables) is
fastoptim._engine's; this module says what the arrays are.  The optimizer
classes (SGD, Adam, ...) are generated from fastoptim.rules by
fastoptim.optim.

Arrays are NumPy's, so state is keyed by the param's flat index over all
groups (the key torch uses in state_dicts) instead of by the param itself.

Learning-rate schedules: a group's lr may be a schedule (fastoptim.schedules,
or any callable taking the step).  The optimizer counts its steps
(`step_count`: t = 0 for the first step; saved in state_dict); at step t a
group with a schedule uses schedule(t), checked like any lr before anything
is written.  The schedule lives in the group under 'lr_schedule', and
'lr' shows the float value used (before the first step, the value the first
step will use).  Assigning to a group's 'lr' takes effect at the next step:
a schedule installs it, a number replaces the group's schedule.
"""
import copy
import threading
from collections.abc import Callable, Iterator, Mapping, MutableMapping, Sequence
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from .. import _validation
from .._engine import Array, Key, State, StepEngine, saved_groups_with_schedules, split_schedules
from .._ext.step import StepPlan, is_half
from ..rules import TORCH_ONLY_DEFAULTS, Slot, Variant
from ..typing import Grads, ParamGroup, Params


_SCALAR_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def _check_param(p: object, where: str) -> None:
    if not isinstance(p, np.ndarray):
        t = type(p)
        raise TypeError(f"{where} must be a numpy.ndarray of float32 or float64, "
                        f"got {t.__module__}.{t.__qualname__}")
    if not (p.dtype in (np.float32, np.float64) or is_half(p)) or not p.dtype.isnative:
        raise TypeError(f"{where} has dtype {p.dtype}; expected native float32, float64, float16 or "
                        f"bfloat16 (ml_dtypes; complex, integer and other dtypes are not supported)")
    if not p.flags.c_contiguous:
        raise ValueError(f"{where} is not C-contiguous (strides {p.strides} for shape {p.shape}); "
                         f"fastoptim updates params in place and never through a hidden copy: "
                         f"pass a contiguous array (np.ascontiguousarray makes one, but then "
                         f"update and use that array)")
    if not p.flags.writeable:
        raise ValueError(f"{where} is read-only; fastoptim updates params in place")
    if not p.flags.aligned:
        raise ValueError(f"{where} is misaligned; expected an aligned float32 or float64 array")


class Optimizer(StepEngine[Array]):
    """Base class of fastoptim's stateful optimizers (see torch.optim.Optimizer).

    params: a list of arrays, a dict name -> array, or a list of param group
    dicts ({'params': [...] or {...}, 'lr': ...}).  step(grads) takes grads in
    the same structure (a group list takes a flat list or one list/dict per
    group); a None grad skips its param and leaves its state untouched.
    A group's lr may be a schedule (see the module docstring): it is kept in
    the group's 'lr_schedule', and 'lr' shows the value used at the last step.
    """

    # StepEngine.rule: the fastoptim.rules.Rule, set by the generated classes
    variant: ClassVar[Variant]  # the fastoptim.rules.Variant (the class: Adam or AdamW), set likewise

    def __init__(self, params: Params, defaults: Mapping[str, Any]) -> None:
        self.defaults = dict(defaults)
        self._init_engine(self.defaults)
        self._install_schedule(self.defaults, "defaults")
        self._checked_hyper(self.defaults, "defaults")
        self.param_groups: list[dict[str, Any]] = []
        self._keys: list[Key] = []   # per flat param: its name or flat index
        self._named: bool | None = None  # True if params were given by name
        self._states: list[State] = []   # per flat param: its State (possibly empty)
        groups: list[Any]
        if isinstance(params, np.ndarray) or not hasattr(params, "__iter__"):
            raise TypeError("params must be a list of arrays, a dict name -> array, or a list "
                            f"of param group dicts, got {type(params).__qualname__}")
        if isinstance(params, Mapping):
            self._structure = "dict"
            groups = [{"params": params}]
        else:
            # a list or tuple as given; any other iterable (a generator of arrays) as a list
            given: Sequence[Any] = params if isinstance(params, (list, tuple)) else list(params)
            if len(given) == 0:
                raise ValueError("optimizer got an empty parameter list")
            if all(isinstance(g, Mapping) for g in given):
                self._structure = "groups"
                groups = list(given)
            elif any(isinstance(g, Mapping) for g in given):
                raise TypeError("params mixes arrays and param group dicts; pass a list of arrays "
                                "or a list of group dicts")
            else:
                self._structure = "list"
                groups = [{"params": list(given)}]
        for group in groups:
            self.add_param_group(group)

    # ---- groups ------------------------------------------------------------
    def add_param_group(self, param_group: ParamGroup) -> None:
        """Add a group (a dict with 'params' and optional hyperparameter overrides)."""
        if not isinstance(param_group, Mapping) or "params" not in param_group:
            raise TypeError("a param group must be a dict with a 'params' entry")
        gi = len(self.param_groups)
        where = f"param_groups[{gi}]"
        self._check_group_count(gi, where)
        group = dict(param_group)
        params = group["params"]
        if isinstance(params, np.ndarray):
            params = [params]
        if isinstance(params, Mapping):
            names, params = list(params.keys()), list(params.values())
            if not all(isinstance(n, str) for n in names):
                raise TypeError(f"{where}: param names must be strings")
        else:
            params, names = list(params), None
        if self._named is None:
            self._named = names is not None
        elif self._named != (names is not None):
            raise TypeError(f"{where}: name all params (dicts) or none (lists), not a mix")
        if len(params) == 0:
            raise ValueError(f"{where} has no params")
        start = len(self._keys)
        keys = names if names is not None else list(range(start, start + len(params)))
        for key, p in zip(keys, params):
            if names is not None and key in self._keys:
                raise ValueError(f"param name {key!r} appears more than once")
            _check_param(p, f"params[{key!r}]")
        unknown = set(group) - set(self.defaults) - {"params", "param_names", "lr_schedule"}
        if unknown:
            raise ValueError(f"{where} has unknown hyperparameters {sorted(unknown)}; "
                             f"{type(self).__name__} takes {sorted(set(self.defaults) - {'lr_schedule'})}")
        # A group that sets its own lr (a number or a schedule) takes neither from the defaults.
        own_lr = "lr" in group or "lr_schedule" in group
        for name, value in self.defaults.items():
            if not (own_lr and name in ("lr", "lr_schedule")):
                group.setdefault(name, value)
        group["params"] = params
        if names is not None:
            group["param_names"] = names
        self._install_schedule(group, where)
        self._checked_hyper(group, where)
        # Checked before anything is recorded, so a bad group leaves no trace.
        self._build_plan(extra=params, extra_keys=keys, extra_group=group)
        self.param_groups.append(group)
        if "lr_schedule" in group:
            self._lr_written[gi] = (group["lr_schedule"], group["lr"])
        self._keys.extend(keys)
        for p in params:
            state = State(self)
            self._states.append(state)
            if self.rule.eager_state:
                self._fill_state(state, group, p)
        self._state_version += 1

    # ---- pickling and copying --------------------------------------------------
    # The pointer tables (a C object) and the step's fast-path memory are caches of
    # the groups and state: a pickle or a copy leaves them out and builds its own at
    # its first step, over its own arrays, so it continues bit for bit.
    _CACHES = ("_plan", "_plan_key", "_plan_params", "_remembered_options", "_remembered_hyper", "_stepping")

    def __getstate__(self) -> dict[str, Any]:
        state = {k: v for k, v in self.__dict__.items() if k not in self._CACHES}
        state["_states"] = [dict(s) for s in self._states]
        # Whether each scheduled group's lr is still the very float this optimizer wrote there
        # (else a number the user assigned, which replaces the schedule): pickle does not keep
        # the identity of floats, so it is saved as a flag.
        state["_lr_written"] = {gi: (schedule, self.param_groups[gi]["lr"] is lr)
                                for gi, (schedule, lr) in self._lr_written.items()}
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._plan = self._plan_key = self._remembered_options = self._remembered_hyper = None
        self._plan_params = []
        self._stepping = threading.Lock()
        self._states = [State(self, s) for s in state["_states"]]
        self._lr_written = {gi: (schedule, self.param_groups[gi]["lr"] if ours else object())
                            for gi, (schedule, ours) in state["_lr_written"].items()}
        self._invalidate()

    # ---- state -----------------------------------------------------------
    @property
    def state(self) -> "MutableMapping[Key, dict[str, Any]]":
        """Per param (by flat index; a name also works for dict params), its state dict:
        torch's keys, arrays updated in place.  A live mapping, as torch's `state` is:
        `del opt.state[i]` and `opt.state.clear()` reset state, which starts afresh at
        the param's next grad."""
        return _StateView(self)

    def _flat_params(self) -> list[Array]:
        return [p for g in self.param_groups for p in g["params"]]

    def _group_of(self) -> list[int]:
        return [gi for gi, g in enumerate(self.param_groups) for _ in g["params"]]

    # ---- the step ---------------------------------------------------------
    def step(self, grads: Grads, *, grad_scale: float | None = None) -> None:
        """Update every param that has a grad, in place, in one call into the kernels.

        Groups with a schedule use its value at t = step_count (see the module docstring).
        grad_scale (None: 1) divides every grad inside the kernels, as torch's fused
        kernels do; it is checked (finite, > 0) before anything is written.
        """
        self._run_step(grads, grad_scale)

    def closure_step(self, closure: "Callable[[], tuple[float, Grads]]") -> float:
        """One step of a closure-driven optimizer (LBFGS): closure() evaluates the objective at
        the params' current values and returns (loss, grads), grads in the params' structure
        (None counts as zeros); the step calls it as often as it needs.  Returns the loss of
        the first evaluation.  Hyperparameters, params and the first evaluation's grads are
        checked before anything is written."""
        loss: float = self._run_closure_step(closure)
        return loss

    # ---- engine hooks: NumPy arrays, state by flat index ----------------------------
    _check_plan_params = True    # an array swapped into a group is noticed at the next step

    def _flat(self) -> tuple[list[Array], list[int], list[Key]]:
        return self._flat_params(), self._group_of(), list(self._keys)

    def _param_array(self, p: Array, key: Key) -> Array:
        return p

    def _state_of(self, i: int, p: Array) -> dict[str, Any] | None:
        return self._states[i] if i < len(self._states) else None

    def _new_state_for(self, i: int, p: Array) -> dict[str, Any]:
        return self._states[i]

    def _state_array(self, array: Any, param: Array, i: int, key: Key, name: str, float32: bool = False) -> Array:
        where = f"state[{i}][{name!r}]"
        slot = self.rule.slot(name)
        got = (f"dtype {array.dtype}, shape {array.shape}" if isinstance(array, np.ndarray)
               else type(array).__qualname__)
        if slot is not None and slot.scalar:
            if not isinstance(array, np.ndarray) or array.shape != () or array.dtype not in _SCALAR_DTYPES:
                raise ValueError(f"{where} must be a 0-d float32 or float64 array (a per-tensor scalar), got {got}")
        else:
            shape = param.shape if slot is None else slot.shape(param.shape)
            dtype = np.dtype(np.float32) if float32 else param.dtype
            if not isinstance(array, np.ndarray) or array.dtype != dtype or array.shape != shape:
                like = f"like params[{key!r}]" if shape == param.shape else f"for params[{key!r}] of shape {param.shape}"
                raise ValueError(f"{where} must be an array of dtype {dtype} and shape {shape} {like}, got {got}")
        _check_param(array, where)
        return array

    def _new_array(self, p: Array, fill: Any, slot: Slot, float32: bool = False) -> Array:  # params are real here: slot.fill_imag has nothing to do
        if slot.scalar:  # torch's 0-d tensor of its scalar dtype
            return np.array(fill, dtype=np.float32)
        shape = slot.shape(p.shape)
        dtype = np.float32 if float32 else p.dtype
        return np.full(shape, fill, dtype=dtype) if fill else np.zeros(shape, dtype=dtype)

    def _master_copy(self, p: Array) -> Array:
        return p.astype(np.float32)

    def _is_half(self, p: Array) -> bool:
        return is_half(p)

    def _zero_step(self, group: Mapping[str, Any]) -> int:
        return 0

    def _step_counter(self, state: dict[str, Any], group: Mapping[str, Any], i: int, key: Key) -> Array:
        """state['step'] as a live 0-d int64 array (made from a number or another array)."""
        value = state.get("step", 0)
        if (type(value) is np.ndarray and value.shape == () and value.dtype == np.int64
                and value.flags.writeable and value.base is None):
            return value
        counter = np.array(_step_value(value, i), dtype=np.int64)
        dict.__setitem__(state, "step", counter)
        return counter

    def _grad_arrays(self, grads: Sequence[Any]) -> list[Array | None]:
        return [None if g is None else np.asarray(g) for g in grads]

    def _evaluate(self, closure: Callable[[], Any]) -> tuple[Any, Sequence[Any]]:
        result = closure()
        if not (isinstance(result, tuple) and len(result) == 2):
            raise TypeError(f"the closure must return (loss, grads), got {type(result).__qualname__}")
        return result[0], self._prepare_grads(result[1])

    # plan.gather(grads), called without a Python frame of its own (the step's fast path)
    _gather = staticmethod(StepPlan.gather)

    def _prepare_grads(self, grads: Any) -> Sequence[Any]:
        """grads in any of the structures step() takes, as one flat list in param order."""
        n = len(self._keys)
        if isinstance(grads, Mapping) and self._named:
            return self._grads_from_mapping(grads, self._keys)
        if isinstance(grads, np.ndarray) or not isinstance(grads, (list, tuple)):
            if self._structure == "dict":
                raise TypeError(f"params were given by name, so grads must be a dict with the same "
                                f"names (or one list or dict per param group), got {type(grads).__qualname__}")
            raise TypeError(f"grads must be a list of {n} arrays (None to skip a param), "
                            f"got {type(grads).__qualname__}")
        # One list (or dict) per group, for group lists and for any optimizer that got more
        # groups through add_param_group (with a single group, a list there is a bad grad).
        if ((self._structure == "groups" or len(self.param_groups) > 1)
                and any([isinstance(g, (list, tuple, Mapping)) for g in grads])):
            if len(grads) != len(self.param_groups):
                raise ValueError(f"got grads for {len(grads)} groups (a list of lists or dicts is one "
                                 f"per param group), but there are {len(self.param_groups)} param groups")
            return self._grads_per_group(grads)
        if self._structure == "dict":
            raise TypeError(f"params were given as a dict, so grads must be a dict with the same "
                            f"names (or one list or dict per param group), got a {type(grads).__qualname__}")
        if len(grads) != n:
            raise ValueError(f"got {len(grads)} grads for {n} params; pass one grad (or None) "
                             f"per param, in the order of the params")
        return grads

    def _grads_per_group(self, grads: Sequence[Any]) -> list[Any]:
        flat: list[Any] = []
        start = 0
        for gi, (group, g) in enumerate(zip(self.param_groups, grads)):
            count = len(group["params"])
            keys = self._keys[start:start + count]
            start += count
            if isinstance(g, Mapping):
                flat.extend(self._grads_from_mapping(g, keys, f"grads[{gi}]"))
            elif isinstance(g, (list, tuple)) and len(g) == count:
                flat.extend(g)
            else:
                raise ValueError(f"grads[{gi}] must hold the {count} grads of param_groups[{gi}] "
                                 f"(a list, or a dict by name), got {type(g).__qualname__}"
                                 + (f" of length {len(g)}" if hasattr(g, "__len__") else ""))
        return flat

    @staticmethod
    def _grads_from_mapping(grads: Mapping[Any, Any], keys: Sequence[Key], where: str = "grads") -> list[Any]:
        missing = [k for k in keys if k not in grads]
        extra = [k for k in grads if k not in set(keys)]
        if missing or extra:
            parts = []
            if missing:
                parts.append(f"missing {missing} (pass None to skip a param)")
            if extra:
                parts.append(f"unknown {extra}")
            raise ValueError(f"{where} does not match the params' names: " + "; ".join(parts))
        return [grads[k] for k in keys]

    # ---- checkpoints ----------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """torch.optim's layout: {'state': {index: {...}}, 'param_groups': [{..., 'params': [indices]}]},
        plus 'step_count' and, if any group has a schedule, 'lr_schedules' {group index: schedule}
        (torch.optim ignores both when loading).

        Arrays and schedules are copies, so the dict does not change as training goes on.
        """
        state: dict[int, dict[str, Any]] = {}
        for i, s in enumerate(self._states):
            if not len(s):
                continue
            entry: dict[str, Any] = {}
            for name, value in s.items():
                if name == "step":
                    entry[name] = int(value)
                elif isinstance(value, np.ndarray):
                    entry[name] = value.copy()
                else:
                    entry[name] = copy.deepcopy(value)
            state[i] = entry
        groups: list[dict[str, Any]] = []
        start = 0
        shared: dict[int, Any] = {}  # one deepcopy memo: a schedule shared by groups stays shared in the copy
        for g in self.param_groups:
            packed = {k: copy.deepcopy(v, shared) for k, v in g.items() if k != "params"}
            packed["params"] = list(range(start, start + len(g["params"])))
            start += len(g["params"])
            groups.append(packed)
        return split_schedules({"state": state, "param_groups": groups, "step_count": self._step_count})

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Load a state_dict from state_dict() (or torch.optim's of the same optimizer).

        Groups are matched by position; within a group, params given by name (a dict)
        are matched by name, whatever the order (a loaded group that names other params
        is a ValueError), and params given as a list by position, as torch does.

        Each group takes the saved hyperparameters, its schedule included: a saved
        group without 'lr_schedule' has a constant lr.  A schedule with state
        (ReduceLROnPlateau) already in the group, of the saved one's type, is
        kept and given the saved one's state, so references to it stay live.
        step_count is restored (0 for torch's state_dicts, which have none).
        Everything is checked and copied first; on any error nothing changes.
        """
        if not isinstance(state_dict, Mapping) or "state" not in state_dict or "param_groups" not in state_dict:
            raise ValueError("state_dict must be a dict with 'state' and 'param_groups'")
        saved_groups = saved_groups_with_schedules(state_dict)
        if len(saved_groups) != len(self.param_groups):
            raise ValueError(f"loaded state dict has {len(saved_groups)} param groups, "
                             f"this optimizer has {len(self.param_groups)}")
        step_count = _validation.step_count(state_dict.get("step_count", 0), "loaded step_count")
        index_map: dict[Any, Any] = {}
        new_groups = []
        schedule_states: list[tuple[Any, Any]] = []  # (live schedule, saved state) to load once everything is checked
        shared: dict[int, Any] = {}  # one deepcopy memo, so a schedule shared by saved groups stays shared
        for gi, (group, saved) in enumerate(zip(self.param_groups, saved_groups)):
            saved_params = list(saved["params"])
            if len(saved_params) != len(group["params"]):
                raise ValueError(f"loaded param_groups[{gi}] has {len(saved_params)} params, "
                                 f"this optimizer's has {len(group['params'])}")
            base = len(index_map)
            for saved_index, j in zip(saved_params, _positions(group, saved, gi)):
                index_map[saved_index] = base + j
            merged = {k: v for k, v in saved.items()
                      if k not in ("params", "param_names", *TORCH_ONLY_DEFAULTS)
                      and (k in group or k == "lr_schedule")}
            new_group: dict[str, Any] = dict(group)
            new_group.pop("lr_schedule", None)
            new_group.update(copy.deepcopy(merged, shared))
            new_group.update(self.variant.fixed)  # the class decides the rule: AdamW stays AdamW
            where = f"loaded param_groups[{gi}]"
            schedule = new_group.get("lr_schedule")
            if schedule is None:
                new_group.pop("lr_schedule", None)
            else:
                if not callable(schedule):
                    raise TypeError(f"{where}['lr_schedule']={schedule!r} is not a schedule "
                                    f"(a callable taking the step)")
                live: Any = group.get("lr_schedule")
                if type(live) is type(schedule) and hasattr(live, "load_state_dict"):
                    saved_state = schedule.state_dict()
                    copy.deepcopy(live).load_state_dict(saved_state)  # checks it, changing nothing
                    schedule_states.append((live, saved_state))
                    new_group["lr_schedule"] = live
            self._checked_hyper(new_group, where)
            new_groups.append(new_group)
        params = self._flat_params()
        group_of = self._group_of()
        slot_names = {slot.name for slot in self.rule.state} | {"master_param"}
        new_states = [State(self) for _ in params]
        for saved_index, entry in state_dict["state"].items():
            if saved_index not in index_map:
                raise ValueError(f"loaded state has an entry for param {saved_index!r}, "
                                 f"which no loaded param group lists")
            i = index_map[saved_index]
            p = params[i]
            loaded: dict[str, Any] = {}
            for name, value in entry.items():
                if name == "step":
                    loaded[name] = _step_value(value, i)
                    continue
                if name not in slot_names:  # a rule's own state (LBFGS's): copied as it is
                    loaded[name] = _copied(value)
                    continue
                array = _to_numpy(value)
                if array is not None:
                    slot = self.rule.slot(name)
                    shape = p.shape if slot is None else slot.shape(p.shape)
                    if array.shape != shape:
                        raise ValueError(f"loaded state[{saved_index}][{name!r}] has shape {array.shape} "
                                         f"but params[{self._keys[i]!r}] of shape {p.shape} needs {shape}")
                    # Our own contiguous copy in the param's dtype (torch casts likewise), or in
                    # float32 for a 16-bit param's master copy and float32 state; a per-tensor
                    # scalar keeps its float32 or float64 (torch would cast it too, but then a resumed
                    # run is no longer the run that was saved, bit for bit).
                    if slot is not None and slot.scalar and array.dtype in _SCALAR_DTYPES:
                        dtype: npt.DTypeLike = array.dtype
                    elif self._loaded_as_float32(name, new_groups[group_of[i]], p):
                        dtype = np.float32
                    else:
                        dtype = p.dtype
                    loaded[name] = np.array(array, dtype=dtype, order="C", copy=True)
                else:
                    loaded[name] = copy.deepcopy(value)
            dict.update(new_states[i], loaded)
        for live, saved_state in schedule_states:
            live.load_state_dict(saved_state)
        for gi, group in enumerate(new_groups):
            self.param_groups[gi] = group
            if "lr_schedule" in group:
                self._lr_written[gi] = (group["lr_schedule"], group["lr"])
            else:
                self._lr_written.pop(gi, None)
        self._states = new_states
        self._step_count = step_count
        self._state_version += 1

    def zero_grad(self, set_to_none: bool = True) -> None:  # pragma: no cover - grads are arguments here
        """NumPy grads are passed to step(); there is nothing to reset.  Present for torch habits."""

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__} ("]
        for gi, g in enumerate(self.param_groups):
            lines.append(f"Parameter Group {gi}")
            for k in sorted(g):
                if k not in ("params", "param_names"):
                    lines.append(f"    {k}: {g[k]}")
        lines.append(")")
        return "\n".join(lines)


class _StateView(MutableMapping[Key, dict[str, Any]]):
    """An optimizer's state as torch's `state` mapping: flat index -> the param's state,
    listing the params that have state.  Changes go to the optimizer's own records."""

    __slots__ = ("_owner",)

    def __init__(self, owner: Optimizer) -> None:
        self._owner = owner

    def _index(self, key: object) -> int:
        keys = self._owner._keys
        if isinstance(key, str) and self._owner._named and key in keys:
            return keys.index(key)
        if _validation.is_integer(key) and 0 <= key < len(keys):
            return int(key)
        raise KeyError(key)

    def __getitem__(self, key: Key) -> dict[str, Any]:
        state = self._owner._states[self._index(key)]
        if not len(state):
            raise KeyError(key)
        return state

    def __setitem__(self, key: Key, value: dict[str, Any]) -> None:
        if not isinstance(value, Mapping):
            raise TypeError(f"state[{key!r}] must be a dict of the param's state, got {type(value).__qualname__}")
        state = self._owner._states[self._index(key)]
        dict.clear(state)
        state.update(value)  # checked at the next step, like any change to the state

    def __delitem__(self, key: Key) -> None:
        self[key]  # KeyError for a param without state
        # A new empty state, so a state taken out (pop) keeps its contents.
        self._owner._states[self._index(key)] = State(self._owner)
        self._owner._invalidate()

    def clear(self) -> None:
        self._owner._states = [State(self._owner) for _ in self._owner._states]
        self._owner._invalidate()

    def __iter__(self) -> Iterator[Key]:
        return iter([i for i, s in enumerate(self._owner._states) if len(s)])

    def __len__(self) -> int:
        return sum([1 for s in self._owner._states if len(s)])

    def __repr__(self) -> str:
        return repr(dict(self))


def _positions(group: Mapping[str, Any], saved: Mapping[str, Any], gi: int) -> Sequence[int]:
    """For each param of a loaded group, in its order, the position in `group` of the param
    it belongs to: by name where both name their params (dict params), else by position."""
    names, saved_names = group.get("param_names"), saved.get("param_names")
    if names is None or saved_names is None:  # a list of params on either side: torch's rule
        return range(len(group["params"]))
    where = f"loaded param_groups[{gi}]"
    saved_names = list(saved_names)
    if len(saved_names) != len(saved["params"]) or len(set(saved_names)) != len(saved_names):
        raise ValueError(f"{where}['param_names'] must name each of its {len(saved['params'])} params once, "
                         f"got {saved_names}")
    position = {name: j for j, name in enumerate(names)}
    unknown = [n for n in saved_names if n not in position]
    missing = [n for n in names if n not in set(saved_names)]
    if unknown or missing:
        parts = ([f"unknown {unknown}"] if unknown else []) + ([f"missing {missing}"] if missing else [])
        raise ValueError(f"{where} does not name the same params as this optimizer's param_groups[{gi}]: "
                         + "; ".join(parts) + "; state is matched by name, so nothing was loaded")
    return [position[n] for n in saved_names]


def _step_value(value: Any, i: int) -> int:
    """A step count from an int, a float, a 0-d array or a torch scalar tensor."""
    try:
        f = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"state[{i}]['step'] must be a number, got {value!r}") from None
    if not f.is_integer() or f < 0:
        raise ValueError(f"state[{i}]['step'] must be a whole number >= 0, got {value!r}")
    return int(f)


def _copied(value: Any) -> Any:
    """A copy of a state value, torch tensors as NumPy (0-d ones as NumPy scalars), lists item by item."""
    if isinstance(value, (list, tuple)):
        return type(value)(_copied(v) for v in value)
    array = _to_numpy(value)
    if array is None:
        return copy.deepcopy(value)
    return array[()].copy() if array.ndim == 0 else np.array(array, order="C", copy=True)


def _to_numpy(value: Any) -> Array | None:
    """An array from a NumPy array or a torch tensor (CPU), else None."""
    if isinstance(value, np.ndarray):
        return value
    if hasattr(value, "detach") and hasattr(value, "cpu"):  # torch.Tensor, without importing torch
        value = value.detach().cpu()
        if str(value.dtype) == "torch.bfloat16":  # NumPy has no bfloat16: widened exactly
            value = value.float()
        array: Array = value.numpy()
        return array
    return None
