"""The stateful optimizer: param groups, state, state_dict, as torch.optim has them.

A subclass names its kernel rule and says three things about a group: its
kernel hyperparameters (checked), the state arrays its options need, and how
a new state entry starts.  Everything else lives here.

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
import math
from collections.abc import Mapping

import numpy as np

from .. import _kernels
from .._hyper import _number

_TORCH_ONLY_GROUP_KEYS = ("foreach", "capturable", "differentiable", "fused")


class _State(dict):
    """A param's state; assigning to it tells the optimizer to rebuild its pointer tables."""

    __slots__ = ("_owner",)

    def __init__(self, owner, *args):
        super().__init__(*args)
        self._owner = owner

    def _changed(self):
        self._owner._state_version += 1

    def __setitem__(self, key, value):
        super().__setitem__(key, value)
        self._changed()

    def __delitem__(self, key):
        super().__delitem__(key)
        self._changed()

    def update(self, *args, **kwargs):
        super().update(*args, **kwargs)
        self._changed()

    def setdefault(self, key, default=None):
        self._changed()
        return super().setdefault(key, default)

    def pop(self, *args):
        self._changed()
        return super().pop(*args)

    def popitem(self):
        self._changed()
        return super().popitem()

    def clear(self):
        super().clear()
        self._changed()

    def __reduce__(self):
        return (dict, (dict(self),))

    def __deepcopy__(self, memo):
        return copy.deepcopy(dict(self), memo)


def _check_param(p, where):
    if not isinstance(p, np.ndarray):
        t = type(p)
        raise TypeError(f"{where} must be a numpy.ndarray of float32 or float64, "
                        f"got {t.__module__}.{t.__qualname__}")
    if p.dtype not in (np.float32, np.float64) or not p.dtype.isnative:
        raise TypeError(f"{where} has dtype {p.dtype}; expected native float32 or float64 "
                        f"(complex, integer and other dtypes are not supported)")
    if not p.flags.c_contiguous:
        raise ValueError(f"{where} is not C-contiguous (strides {p.strides} for shape {p.shape}); "
                         f"fastoptim updates params in place and never through a hidden copy: "
                         f"pass a contiguous array (np.ascontiguousarray makes one, but then "
                         f"update and use that array)")
    if not p.flags.writeable:
        raise ValueError(f"{where} is read-only; fastoptim updates params in place")
    if not p.flags.aligned:
        raise ValueError(f"{where} is misaligned; expected an aligned float32 or float64 array")


class ScheduledLR:
    """Learning-rate schedules for an optimizer with `param_groups`, `_step_count` and
    `_lr_written`: fastoptim.optim.Optimizer and fastoptim.torch's optimizers.

    A group's lr may be a schedule (any callable taking the step): at step
    t = step_count it uses schedule(t).  The schedule lives in the group under
    'lr_schedule', and 'lr' shows the float value used (before the first step,
    the value the first step will use).  Assigning to a group's 'lr' takes
    effect at the next step: a schedule installs it, a number replaces it.
    """

    # ---- learning-rate schedules ---------------------------------------------
    @property
    def step_count(self):
        """The number of step() calls made: the t at which the next step evaluates schedules."""
        return self._step_count

    @step_count.setter
    def step_count(self, value):
        self._step_count = _checked_step_count(value, "step_count")

    def _install_schedule(self, group, where):
        """Move a schedule given as 'lr' to 'lr_schedule', and set 'lr' to its value at the current step."""
        schedule = group.get("lr_schedule")
        if callable(group.get("lr")):
            schedule = group["lr"]
        if schedule is None:
            group.pop("lr_schedule", None)
            return
        if not callable(schedule):
            raise TypeError(f"{where}['lr_schedule']={schedule!r} is not a schedule "
                            f"(a callable taking the step)")
        group["lr"] = _scheduled_lr(schedule, self._step_count, where)
        group["lr_schedule"] = schedule

    def _group_schedule(self, gi, group):
        """The schedule group `gi` follows at this step, or None for its plain 'lr'.

        A schedule assigned to 'lr' is followed; a number assigned to 'lr' (anything
        but the value this optimizer wrote there) replaces the group's schedule.
        """
        lr = group["lr"]
        if callable(lr):
            return lr
        schedule = group.get("lr_schedule")
        if schedule is not None:
            written = self._lr_written.get(gi)
            if written is not None and written[0] is schedule and written[1] is not lr:
                return None
        return schedule

    def _write_lrs(self, lr_changes):
        for gi, g, schedule, lr in lr_changes:
            if schedule is None:
                del g["lr_schedule"]
                self._lr_written.pop(gi, None)
                continue
            g["lr"] = lr
            if g.get("lr_schedule") is not schedule:
                g["lr_schedule"] = schedule
            self._lr_written[gi] = (schedule, lr)


class Optimizer(ScheduledLR):
    """Base class of fastoptim's stateful optimizers (see torch.optim.Optimizer).

    params: a list of arrays, a dict name -> array, or a list of param group
    dicts ({'params': [...] or {...}, 'lr': ...}).  step(grads) takes grads in
    the same structure (a group list takes a flat list or one list/dict per
    group); a None grad skips its param and leaves its state untouched.
    A group's lr may be a schedule (see the module docstring): it is kept in
    the group's 'lr_schedule', and 'lr' shows the value used at the last step.
    """

    _rule = None            # _kernels rule id, set by subclasses
    _has_step = True        # whether torch keeps a 'step' in this optimizer's state
    _eager_state = False    # whether torch creates the state at construction (Adagrad)

    def __init__(self, params, defaults):
        self._step_count = 0         # step() calls made: the t schedules are evaluated at
        self._lr_written = {}        # group index -> (schedule, lr) this optimizer last wrote there
        self.defaults = dict(defaults)
        self._option_keys = tuple(k for k in self.defaults if k != "lr_schedule")
        self._remembered_options = self._remembered_hyper = None  # the step's fast path
        self._install_schedule(self.defaults, "defaults")
        self._check_group(self.defaults, "defaults")
        self.param_groups = []
        self._keys = []              # per flat param: its name or flat index
        self._named = None           # True if params were given by name
        self._states = []            # per flat param: its _State (possibly empty)
        self._state_version = 0
        self._fresh = set()          # params whose state began this step (SGD's first step)
        self._plan = None
        self._plan_key = None
        if isinstance(params, np.ndarray) or not hasattr(params, "__iter__"):
            raise TypeError("params must be a list of arrays, a dict name -> array, or a list "
                            f"of param group dicts, got {type(params).__qualname__}")
        if not isinstance(params, (Mapping, list, tuple)):
            params = list(params)  # e.g. a generator of arrays
        if isinstance(params, Mapping):
            self._structure = "dict"
            groups = [{"params": params}]
        else:
            if len(params) == 0:
                raise ValueError("optimizer got an empty parameter list")
            if all(isinstance(g, Mapping) for g in params):
                self._structure = "groups"
                groups = list(params)
            elif any(isinstance(g, Mapping) for g in params):
                raise TypeError("params mixes arrays and param group dicts; pass a list of arrays "
                                "or a list of group dicts")
            else:
                self._structure = "list"
                groups = [{"params": list(params)}]
        for group in groups:
            self.add_param_group(group)

    # ---- groups ------------------------------------------------------------
    def add_param_group(self, param_group):
        """Add a group (a dict with 'params' and optional hyperparameter overrides)."""
        if not isinstance(param_group, Mapping) or "params" not in param_group:
            raise TypeError("a param group must be a dict with a 'params' entry")
        gi = len(self.param_groups)
        where = f"param_groups[{gi}]"
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
        self._check_group(group, where)
        # Checked before anything is recorded, so a bad group leaves no trace.
        self._build_plan(extra=params, extra_keys=keys)
        self.param_groups.append(group)
        if "lr_schedule" in group:
            self._lr_written[gi] = (group["lr_schedule"], group["lr"])
        self._keys.extend(keys)
        for p in params:
            state = _State(self)
            self._states.append(state)
            if self._eager_state:
                self._fill_state(state, group, p)
        self._state_version += 1

    def _check_group(self, group, where):
        """Checked kernel hyperparameters of a group (a tuple in _kernels.KERNEL_FIELDS order)."""
        return self._check_hyper(group, group["lr"], where)

    def _check_hyper(self, group, lr, where):
        """Checked kernel hyperparameters of a group, with `lr` as its learning rate."""
        raise NotImplementedError

    def _state_slots(self, group):
        """Names of the state arrays in kernel operand order, None for slots the options leave unused."""
        raise NotImplementedError

    def _new_state(self, group, param, name):
        """A new state array named `name` for `param`."""
        return np.zeros_like(param)

    # ---- state -----------------------------------------------------------
    @property
    def state(self):
        """Per param (by flat index), its state dict: torch's keys, arrays updated in place."""
        return {i: s for i, s in enumerate(self._states) if len(s)}

    def _flat_params(self):
        return [p for g in self.param_groups for p in g["params"]]

    def _group_of(self):
        return [gi for gi, g in enumerate(self.param_groups) for _ in g["params"]]

    # ---- the step ---------------------------------------------------------
    def step(self, grads):
        """Update every param that has a grad, in place, in one call into the kernels.

        Groups with a schedule use its value at t = step_count (see the module docstring).
        """
        t = self._step_count
        if _kernels.same_options(self.param_groups, self._option_keys, self._remembered_options):
            # Every option is the object it was at the last step: same checks, same state slots.
            self._step_checked(grads, t, self._remembered_hyper, None, self._plan_key[1])
            return
        hyper = []
        lr_changes = None  # (group index, group, schedule or None, lr), written once all checks pass
        for gi, g in enumerate(self.param_groups):
            # A plain float lr and no schedule, the usual case, skips the schedule logic.
            schedule = None if type(g["lr"]) is float and "lr_schedule" not in g else self._group_schedule(gi, g)
            if schedule is None:
                hyper.append(self._check_group(g, f"param_groups[{gi}]"))
                if "lr_schedule" in g:  # replaced by a number written to 'lr'
                    lr_changes = (lr_changes or []) + [(gi, g, None, g["lr"])]
                continue
            where = f"param_groups[{gi}]"
            lr = _scheduled_lr(schedule, t, where)
            # The memoized check sees a fixed stand-in lr, so it hits although the value changes
            # every step (no rule checks lr against the others); lr itself was checked above and
            # comes first in every rule's kernel fields.
            hyper.append((lr,) + self._check_hyper(g, _STAND_IN_LR, where)[1:])
            if lr_changes is None:
                lr_changes = []
            lr_changes.append((gi, g, schedule, lr))
        self._step_checked(grads, t, hyper, lr_changes, None)
        if lr_changes is None:
            self._remember_options(hyper)

    def _remember_options(self, hyper):
        """Keep this step's option objects and checked hyperparameters for the fast path,
        unless a value could change in place (a list of betas, say)."""
        remembered = [[g[k] for k in self._option_keys] for g in self.param_groups]
        if all([_immutable(v) for values in remembered for v in values]):
            self._remembered_options, self._remembered_hyper = remembered, hyper
        else:
            self._remembered_options = self._remembered_hyper = None

    def _step_checked(self, grads, t, hyper, lr_changes, slots):
        """The step once its hyperparameters are checked: grads, state, kernels."""
        flat_grads = self._flatten_grads(grads)
        plan = self._current_plan(slots)
        if plan.gather(flat_grads):
            # First grad of some params: create their state, now that every check passed.
            params, group_of = self._flat_params(), self._group_of()
            for i in plan.missing_state():
                self._create_state(i, self.param_groups[group_of[i]], params[i])
            plan = self._current_plan()
            plan.gather(flat_grads)
        if lr_changes is not None:
            self._write_lrs(lr_changes)
        plan.run(hyper)
        self._fresh.clear()
        self._step_count = t + 1

    def _flatten_grads(self, grads):
        n = len(self._keys)
        if self._structure == "dict":
            if not isinstance(grads, Mapping):
                raise TypeError(f"params were given as a dict, so grads must be a dict with the same "
                                f"names, got {type(grads).__qualname__}")
            return self._grads_from_mapping(grads, self._keys)
        if isinstance(grads, np.ndarray) or not isinstance(grads, (list, tuple)):
            raise TypeError(f"grads must be a list of {n} arrays (None to skip a param), "
                            f"got {type(grads).__qualname__}")
        if self._structure == "groups" and any([isinstance(g, (list, tuple, Mapping)) for g in grads]):
            if len(grads) != len(self.param_groups):
                raise ValueError(f"got grads for {len(grads)} groups, but there are "
                                 f"{len(self.param_groups)} param groups")
            return self._grads_per_group(grads)
        if len(grads) != n:
            raise ValueError(f"got {len(grads)} grads for {n} params; pass one grad (or None) "
                             f"per param, in the order of the params")
        return grads

    def _grads_per_group(self, grads):
        flat, start = [], 0
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
    def _grads_from_mapping(grads, keys, where="grads"):
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

    # ---- pointer tables -------------------------------------------------------
    def _slots_by_group(self):
        # A list comprehension: in CPython 3.11 tuple(generator) leaves 48 bytes in tracemalloc per call.
        return tuple([self._state_slots(g) for g in self.param_groups])

    def _current_plan(self, slots=None):
        """The plan for the current params and state (slots: the groups' state slots, if known)."""
        key = (self._state_version, self._slots_by_group() if slots is None else slots)
        if self._plan is None or self._plan_key != key or not self._plan.matches(self.param_groups):
            self._plan = self._build_plan()
            self._plan_key = (self._state_version, key[1])
        return self._plan

    def _build_plan(self, extra=(), extra_keys=()):
        """Pointer tables over all params (and `extra`, when checking a new group)."""
        params = self._flat_params() + list(extra)
        groups = self._group_of() + [len(self.param_groups)] * len(extra)
        keys = self._keys + list(extra_keys)
        slots = self._slots_by_group()
        steps = np.zeros(len(params), dtype=np.int64)
        state_arrays = []
        for i, p in enumerate(params):
            state = self._states[i] if i < len(self._states) else None
            group_slots = slots[groups[i]] if groups[i] < len(slots) else ()
            operands = state_operands(
                state, group_slots,
                lambda name: self._new_state(self.param_groups[groups[i]], p, name),
                lambda array, name: self._checked_state(array, p, i, name))
            state_arrays.append(operands)
            if operands is None or all(a is None for a in operands):
                continue
            if self._has_step:
                steps[i] = _step_value(state.get("step", 0), i)
                # The state's 'step' is a live 0-d view of the count the kernels advance.
                dict.__setitem__(state, "step", steps[i:i + 1].reshape(()))
            else:
                steps[i] = 0 if i in self._fresh else 1
        return _kernels.StepPlan(self._rule, params, state_arrays, groups,
                                 len(self.param_groups) + (1 if len(extra) else 0), keys, steps)

    def _checked_state(self, array, param, i, name):
        where = f"state[{i}][{name!r}]"
        if not isinstance(array, np.ndarray) or array.dtype != param.dtype or array.shape != param.shape:
            raise ValueError(f"{where} must be an array of dtype {param.dtype} and shape {param.shape} "
                             f"like params[{self._keys[i]!r}], got "
                             + (f"dtype {array.dtype}, shape {array.shape}" if isinstance(array, np.ndarray)
                                else type(array).__qualname__))
        _check_param(array, where)
        return array

    def _create_state(self, i, group, p):
        self._fill_state(self._states[i], group, p)
        self._fresh.add(i)
        self._state_version += 1

    def _fill_state(self, state, group, p):
        if self._has_step:
            dict.__setitem__(state, "step", 0)
        for name in self._state_slots(group):
            if name is not None:
                dict.__setitem__(state, name, self._new_state(group, p, name))

    # ---- checkpoints ----------------------------------------------------------
    def state_dict(self):
        """torch.optim's layout: {'state': {index: {...}}, 'param_groups': [{..., 'params': [indices]}]},
        plus 'step_count' (which torch ignores when loading).

        Arrays and schedules are copies, so the dict does not change as training goes on.
        """
        state = {}
        for i, s in enumerate(self._states):
            if not len(s):
                continue
            entry = {}
            for name, value in s.items():
                if name == "step":
                    entry[name] = int(value)
                elif isinstance(value, np.ndarray):
                    entry[name] = value.copy()
                else:
                    entry[name] = copy.deepcopy(value)
            state[i] = entry
        groups, start = [], 0
        shared = {}  # one deepcopy memo: a schedule shared by groups stays shared in the copy
        for g in self.param_groups:
            packed = {k: copy.deepcopy(v, shared) for k, v in g.items() if k != "params"}
            packed["params"] = list(range(start, start + len(g["params"])))
            start += len(g["params"])
            groups.append(packed)
        return {"state": state, "param_groups": groups, "step_count": self._step_count}

    def load_state_dict(self, state_dict):
        """Load a state_dict from state_dict() (or torch.optim's of the same optimizer).

        Each group takes the saved hyperparameters, its schedule included: a saved
        group without 'lr_schedule' has a constant lr.  A schedule with state
        (ReduceLROnPlateau) already in the group, of the saved one's type, is
        kept and given the saved one's state, so references to it stay live.
        step_count is restored (0 for torch's state_dicts, which have none).
        Everything is checked and copied first; on any error nothing changes.
        """
        if not isinstance(state_dict, Mapping) or "state" not in state_dict or "param_groups" not in state_dict:
            raise ValueError("state_dict must be a dict with 'state' and 'param_groups'")
        saved_groups = state_dict["param_groups"]
        if len(saved_groups) != len(self.param_groups):
            raise ValueError(f"loaded state dict has {len(saved_groups)} param groups, "
                             f"this optimizer has {len(self.param_groups)}")
        step_count = _checked_step_count(state_dict.get("step_count", 0), "loaded step_count")
        index_map = {}
        new_groups = []
        schedule_states = []  # (live schedule, saved state) to load once everything is checked
        shared = {}  # one deepcopy memo, so a schedule shared by saved groups stays shared
        for gi, (group, saved) in enumerate(zip(self.param_groups, saved_groups)):
            saved_params = list(saved["params"])
            if len(saved_params) != len(group["params"]):
                raise ValueError(f"loaded param_groups[{gi}] has {len(saved_params)} params, "
                                 f"this optimizer's has {len(group['params'])}")
            base = len(index_map)
            for j, saved_index in enumerate(saved_params):
                index_map[saved_index] = base + j
            merged = {k: v for k, v in saved.items()
                      if k not in ("params",) + _TORCH_ONLY_GROUP_KEYS and (k in group or k == "lr_schedule")}
            new_group = dict(group)
            new_group.pop("lr_schedule", None)
            new_group.update(copy.deepcopy(merged, shared))
            where = f"loaded param_groups[{gi}]"
            schedule = new_group.get("lr_schedule")
            if schedule is None:
                new_group.pop("lr_schedule", None)
            else:
                if not callable(schedule):
                    raise TypeError(f"{where}['lr_schedule']={schedule!r} is not a schedule "
                                    f"(a callable taking the step)")
                live = group.get("lr_schedule")
                if type(live) is type(schedule) and hasattr(live, "load_state_dict"):
                    saved_state = schedule.state_dict()
                    copy.deepcopy(live).load_state_dict(saved_state)  # checks it, changing nothing
                    schedule_states.append((live, saved_state))
                    new_group["lr_schedule"] = live
            self._check_group(new_group, where)
            new_groups.append(new_group)
        params = self._flat_params()
        new_states = [_State(self) for _ in params]
        for saved_index, entry in state_dict["state"].items():
            if saved_index not in index_map:
                raise ValueError(f"loaded state has an entry for param {saved_index!r}, "
                                 f"which no loaded param group lists")
            i = index_map[saved_index]
            p = params[i]
            loaded = {}
            for name, value in entry.items():
                if name == "step":
                    loaded[name] = _step_value(value, i)
                    continue
                array = _to_numpy(value)
                if array is not None:
                    if array.shape != p.shape:
                        raise ValueError(f"loaded state[{saved_index}][{name!r}] has shape {array.shape} "
                                         f"but params[{self._keys[i]!r}] has shape {p.shape}")
                    # Our own contiguous copy in the param's dtype (torch casts likewise).
                    loaded[name] = np.array(array, dtype=p.dtype, order="C", copy=True)
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

    def zero_grad(self, set_to_none=True):  # pragma: no cover - grads are arguments here
        """NumPy grads are passed to step(); there is nothing to reset.  Present for torch habits."""

    def __repr__(self):
        lines = [f"{type(self).__name__} ("]
        for gi, g in enumerate(self.param_groups):
            lines.append(f"Parameter Group {gi}")
            for k in sorted(g):
                if k not in ("params", "param_names"):
                    lines.append(f"    {k}: {g[k]}")
        lines.append(")")
        return "\n".join(lines)


def state_operands(state, slots, new_array, checked):
    """One param's state arrays in kernel operand order (None for slots its options
    leave unused), or None while it has no state yet.  A slot switched on after the
    state began gets new_array(name); every array passes through checked(array, name)."""
    if all(name is None for name in slots):
        return (None,) * len(slots)  # nothing to keep for these options
    if not state:
        return None
    arrays = []
    for name in slots:
        if name is None:
            arrays.append(None)
            continue
        if name not in state:  # an option switched on after this state began
            dict.__setitem__(state, name, new_array(name))
        arrays.append(checked(state[name], name))
    return tuple(arrays)


_STAND_IN_LR = 0.0
_IMMUTABLE_OPTION_TYPES = frozenset([float, int, bool, str, type(None), np.float64, np.float32,
                                     np.int64, np.int32, np.bool_])


def _immutable(value):
    if type(value) is tuple:
        return all([type(v) in _IMMUTABLE_OPTION_TYPES for v in value])
    return type(value) in _IMMUTABLE_OPTION_TYPES


def _scheduled_lr(schedule, t, where):
    """A schedule's lr at step t, checked like any lr (a finite float >= 0)."""
    lr = schedule(t)
    if type(lr) is float and 0.0 <= lr < math.inf:  # the usual case, kept fast
        return lr
    return _number("learning rate", "lr", lr, f" ({where}['lr_schedule'] at step t={t})")


def _checked_step_count(value, name):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"{name} must be an integer >= 0 (the number of steps taken), got {value!r}")
    return int(value)


def _step_value(value, i):
    """A step count from an int, a float, a 0-d array or a torch scalar tensor."""
    try:
        f = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"state[{i}]['step'] must be a number, got {value!r}") from None
    if not f.is_integer() or f < 0:
        raise ValueError(f"state[{i}]['step'] must be a whole number >= 0, got {value!r}")
    return int(f)


def _to_numpy(value):
    """An array from a NumPy array or a torch tensor (CPU), else None."""
    if isinstance(value, np.ndarray):
        return value
    if hasattr(value, "detach") and hasattr(value, "cpu"):  # torch.Tensor, without importing torch
        return value.detach().cpu().numpy()
    return None
