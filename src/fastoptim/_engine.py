"""The step engine: what a step does, whatever holds the arrays.

One step, for any rule and either backend:
  1. each group's hyperparameters: its lr (a number, or a schedule's value at
     t = step_count) and options, checked by the group's Rule;
  2. the grad scale, checked;
  3. the pointer tables (a cached StepPlan over the params and their state);
  4. the grads, checked and recorded by the plan;
  5. state for params that got their first grad (now that every check passed);
  6. the lrs written back to the groups, the kernels run, step_count advanced.
Nothing is written before 5, so a failed step changes nothing.  Between 6's lrs
and kernels, the adapter's _before_kernels() steps whatever it keeps out of
the plan (the torch adapter: params that take torch's own implementation) and
may skip the kernels (torch's found_inf).

StepEngine holds that logic once.  The two adapters subclass it and say what
their arrays are: fastoptim.optim.Optimizer (NumPy arrays, state keyed by
flat index) and fastoptim.torch.Optimizer (torch tensors read through
zero-copy NumPy views, state keyed by tensor, as torch.optim has it).  Their
hooks are listed under "adapter hooks" below.

Rules at the Python level (Rule.python, a PythonStep: LBFGS, Muon) take the
same steps 1-5; at 6 their Python step runs over the plan's arrays (a
StepArrays) instead of the C kernels.  A closure-driven rule (LBFGS) takes
step(closure): after 1-3 the engine evaluates the closure once and checks
its grads through the plan (4, 5) before anything is written, then hands the
rule `evaluate()` for the evaluations it makes itself.  Such a rule keeps its
own state (not per param) where torch does, in the first param's state dict,
converted by the adapters (NumPy arrays in the step, tensors in torch's state).
"""
import copy
import math
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, ClassVar, Generic, Protocol, TypeAlias, TypeVar, Union

import numpy as np
import numpy.typing as npt

from . import _validation
from ._ext.step import BLOCKWISE8, LAYOUTS, StepPlan, checked_grad_scale, is_half, same_options
from .rules import PRECISION_DEFAULTS, Rule, Slot, half_refusal, kernel_id

#: An array the kernels work on: a param (a torch tensor's zero-copy view), a grad, a state
#: slot or a step counter; any dtype the kernels take (bfloat16 is ml_dtypes', not np.floating).
Array: TypeAlias = npt.NDArray[Any]
#: A param group: {'params': ..., 'lr': ..., the rule's options...}.
Group: TypeAlias = dict[str, Any]
#: A param's key in messages and checkpoints: its name (dict params) or its flat index.
Key: TypeAlias = Union[int, str]
#: A learning-rate schedule as the engine takes it: any callable of the step; its value is checked.
Schedule: TypeAlias = Callable[[int], object]
#: A group's checked 16-bit options: (state_dtype, master_weights, stochastic_rounding, seed).
Precision: TypeAlias = tuple[Union[str, None], bool, bool, int]
#: A group's checked hyperparameters (lr, maximize, *the rule's kernel fields): floats, bools,
#: ints, strings or None, as the rule's fields are.
Hyper: TypeAlias = tuple[Any, ...]
#: The state slots a group's options use, in operand order (None for an unused one).
Slots: TypeAlias = tuple[Union[str, None], ...]
#: Per group, what its pointer tables depend on beside the state version: its Slots and
#: Precision (and, in the torch adapter, the options that route its params).
PlanKey: TypeAlias = tuple[tuple[Any, ...], ...]
#: An lr to write back once the step is sure to run: (group index, group, schedule or None, lr).
LRChange: TypeAlias = tuple[int, Group, Union[Schedule, None], Any]
#: A param's state entries as the kernels see them, in operand order (None: an unused slot).
Operands: TypeAlias = tuple[Union[Array, None], ...]



class Param(Protocol):
    """What the engine itself reads of a param (the adapters read the rest)."""

    @property
    def ndim(self) -> int: ...


#: A param as an adapter holds it: a NumPy array (fastoptim.optim), a torch.Tensor (fastoptim.torch).
P = TypeVar("P", bound=Param)

# The lr the memoized checks see when a group's lr is a valid float: they then hit
# although schedules and lr_schedulers change lr every step (no rule checks lr
# against the others); lr itself is checked by the caller and comes first.
_STAND_IN_LR = 0.0
_IMMUTABLE_OPTION_TYPES = frozenset([float, int, bool, str, type(None), np.float64, np.float32,
                                     np.int64, np.int32, np.bool_])


def _immutable(value: object) -> bool:
    if type(value) is tuple:
        return all([type(v) in _IMMUTABLE_OPTION_TYPES for v in value])
    return type(value) in _IMMUTABLE_OPTION_TYPES


def scheduled_lr(schedule: Schedule, t: int, where: str) -> float:
    """A schedule's lr at step t, checked like any lr (a finite float >= 0)."""
    lr = schedule(t)
    if type(lr) is float and 0.0 <= lr < math.inf:  # the usual case, kept fast
        return lr
    return _validation.real(lr, "lr", low=0.0, label="learning rate",
                            where=f" ({where}['lr_schedule'] at step t={t})")


def precision(group: Mapping[str, Any], where: str) -> Precision:
    """A group's 16-bit options (PRECISION_DEFAULTS), checked: (state_dtype, master_weights,
    stochastic_rounding, seed), state_dtype None (the param's dtype) or "float32"."""
    state_dtype, master, stochastic, seed = [group.get(name, default) for name, default in PRECISION_DEFAULTS.items()]
    if state_dtype is not None and str(state_dtype) not in ("float32", "torch.float32"):
        raise ValueError(f"Invalid state_dtype: {state_dtype!r} ({where}); expected None (the param's dtype) "
                         f"or 'float32'")
    master = _validation.flag(master, "master_weights", f" ({where})")
    stochastic = _validation.flag(stochastic, "stochastic_rounding", f" ({where})")
    if master and stochastic:
        raise ValueError(f"master_weights=True and stochastic_rounding=True ({where}): with master weights "
                         f"the param is the master copy rounded to nearest; choose one")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2 ** 64:
        raise ValueError(f"Invalid seed: {seed!r} ({where}); expected an int in [0, 2**64)")
    return (None if state_dtype is None else "float32", master, stochastic, int(seed))


def param_layout(array: Array, options: Precision) -> int | None:
    """The kernels' layout of a param array under a group's checked precision options (None: its
    dtype's own loops; 16-bit: LAYOUTS by how the param is stored)."""
    if not is_half(array):
        return None
    _, master, stochastic, _ = options
    return LAYOUTS[(array.dtype.name, "master" if master else "stochastic" if stochastic else "nearest")]


def refuse_half(rule: Rule, name: str, array: Array, where: str) -> None:
    """A 16-bit param of a rule that does not take them yet (rules.half_refusal): a clear
    error naming the optimizer, the dtype and the param, raised before anything is written."""
    reason = half_refusal(rule)
    if reason is not None:
        raise TypeError(f"{name} does not take {array.dtype} params ({where}): {reason}; "
                        f"use float32 or float64 params")


def state_operands(state: dict[str, Any] | None, slots: Slots, new_array: Callable[[str], object],
                   checked: Callable[[Any, str], Array]) -> Operands | None:
    """One param's state arrays in kernel operand order (None for slots its options
    leave unused), or None while it has no state yet.  A slot switched on after the
    state began gets new_array(name); every array passes through checked(array, name)."""
    if all(name is None for name in slots):
        return (None,) * len(slots)  # nothing to keep for these options
    if not state:
        return None
    arrays: list[Array | None] = []
    for name in slots:
        if name is None:
            arrays.append(None)
            continue
        if state.get(name) is None:  # an option switched on after this state began (torch keeps None)
            dict.__setitem__(state, name, new_array(name))
        arrays.append(checked(state[name], name))
    return tuple(arrays)


# A state_dict keeps the groups' schedules beside the groups, under this key, so that
# torch.optim loads it without taking an 'lr_schedule' into its groups (it ignores
# unknown top-level keys, as it does 'step_count').
SCHEDULES_KEY = "lr_schedules"


def split_schedules(state_dict: dict[str, Any]) -> dict[str, Any]:
    """Move the saved groups' 'lr_schedule' entries to state_dict[SCHEDULES_KEY], {group index: schedule}."""
    schedules = {gi: g.pop("lr_schedule") for gi, g in enumerate(state_dict["param_groups"]) if "lr_schedule" in g}
    if schedules:
        state_dict[SCHEDULES_KEY] = schedules
    return state_dict


def saved_groups_with_schedules(state_dict: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The saved groups, each with its schedule back under 'lr_schedule' (copies of the
    group dicts; a state_dict with schedules inside its groups is taken as it is)."""
    groups = list(state_dict["param_groups"])
    schedules = state_dict.get(SCHEDULES_KEY) or {}
    if not isinstance(schedules, dict) or any(not (isinstance(gi, int) and 0 <= gi < len(groups))
                                              for gi in schedules):
        raise ValueError(f"state_dict[{SCHEDULES_KEY!r}] must map param group indices (0 to "
                         f"{len(groups) - 1}) to schedules, got {schedules!r}")
    return [dict(g, lr_schedule=schedules[gi]) if gi in schedules else g for gi, g in enumerate(groups)]


class State(dict[str, Any]):
    """A param's state; any assignment to it calls owner._invalidate(), so the next step
    rebuilds its pointer tables instead of pointing at a replaced array."""

    __slots__ = ("_owner",)

    def __init__(self, owner: "StepEngine[Any]", *args: Any) -> None:
        super().__init__(*args)
        self._owner = owner

    def _changed(self) -> None:
        self._owner._invalidate()

    def __setitem__(self, key: str, value: Any) -> None:
        if dict.get(self, key, self) is value:  # the same object again (torch's SGD does it every step)
            return
        super().__setitem__(key, value)
        self._changed()

    def __delitem__(self, key: str) -> None:
        super().__delitem__(key)
        self._changed()

    def update(self, *args: Any, **kwargs: Any) -> None:
        super().update(*args, **kwargs)
        self._changed()

    def setdefault(self, key: str, default: Any = None) -> Any:
        self._changed()
        return super().setdefault(key, default)

    def pop(self, *args: Any) -> Any:
        self._changed()
        return super().pop(*args)

    def popitem(self) -> tuple[str, Any]:
        self._changed()
        return super().popitem()

    def clear(self) -> None:
        super().clear()
        self._changed()

    def __reduce__(self) -> tuple[type[dict[str, Any]], tuple[dict[str, Any]]]:
        return (dict, (dict(self),))

    def __deepcopy__(self, memo: dict[int, Any]) -> dict[str, Any]:
        return copy.deepcopy(dict(self), memo)


class StepArrays:
    """What the step of a rule at the Python level (Rule.python.step) works on.

    params: the params' NumPy arrays (torch tensors' views), in plan order;
    grads: each param's grad as a NumPy array, or None (no grad: skip it);
    state: per param, its slot arrays in the Rule's slot order (None for an
      unused slot), or None while it has no state;
    groups: each param's group index; hyper: per group, a dict of its checked
      hyperparameters (lr at this step, maximize, the Rule's fields);
    grad_scale: the checked divisor of every grad (1.0: none);
    steps: each param's step count, already advanced for this step;
    names: each param's name or flat index, for messages;
    scratch: a dict the rule may keep work arrays in across steps (not state);
    for a closure-driven rule: loss (the closure's first result, as returned),
    evaluate() -> (loss, grads) (another evaluation, checked like the first),
    read_state() / write_state(values): the rule's own state, as NumPy values.
    """

    __slots__ = ("params", "grads", "state", "groups", "hyper", "grad_scale", "steps", "names", "scratch",
                 "loss", "evaluate", "read_state", "write_state")

    params: list[Array]
    grads: list[Array | None]
    state: list[Operands | None]
    groups: list[int]
    hyper: list[dict[str, Any]]
    grad_scale: float
    steps: list[int]
    names: list[Key]
    scratch: dict[str, Any]
    loss: Any
    evaluate: Callable[[], tuple[Any, list[Array | None]]] | None
    read_state: Callable[[], dict[str, Any]] | None
    write_state: Callable[[Mapping[str, Any]], None] | None

    def __init__(self, engine: "StepEngine[Any]", grads: list[Array | None], hyper: Sequence[Hyper],
                 grad_scale: float) -> None:
        plan = engine._plan
        assert plan is not None  # the step's, built before the grads were gathered
        _, self.groups, self.names = engine._flat()
        self.params, self.state, self.grads = plan.params, plan.states, grads
        keys = ("lr", "maximize") + engine.rule.field_names
        self.hyper = [dict(zip(keys, h)) for h in hyper]
        self.grad_scale, self.steps, self.scratch = grad_scale, plan.step_counts, engine._scratch
        self.loss = self.evaluate = self.read_state = self.write_state = None


class ScheduledLR:
    """Learning-rate schedules of an optimizer with `param_groups`, `_step_count` and `_lr_written`.

    A group's lr may be a schedule (any callable taking the step): at step
    t = step_count it uses schedule(t).  The schedule lives in the group under
    'lr_schedule', and 'lr' shows the float value used (before the first step,
    the value the first step will use).  Assigning to a group's 'lr' takes
    effect at the next step: a schedule installs it, a number replaces it.
    """

    param_groups: list[dict[str, Any]]
    _step_count: int
    _lr_written: dict[int, tuple[Schedule, object]]  # group index -> (schedule, lr) last written there

    @property
    def step_count(self) -> int:
        """The number of step() calls made: the t at which the next step evaluates schedules."""
        return self._step_count

    @step_count.setter
    def step_count(self, value: int) -> None:
        self._step_count = _validation.step_count(value, "step_count")

    def _install_schedule(self, group: dict[str, Any], where: str) -> None:
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
        group["lr"] = scheduled_lr(schedule, self._step_count, where)
        group["lr_schedule"] = schedule

    def _group_schedule(self, gi: int, group: Mapping[str, Any]) -> Schedule | None:
        """The schedule group `gi` follows at this step, or None for its plain 'lr'.

        A schedule assigned to 'lr' is followed; a number assigned to 'lr' (anything
        but the value this optimizer wrote there) replaces the group's schedule.
        """
        lr: object = group["lr"]
        if callable(lr):
            return lr
        schedule: Schedule | None = group.get("lr_schedule")
        if schedule is not None:
            written = self._lr_written.get(gi)
            if written is not None and written[0] is schedule and written[1] is not lr:
                return None
        return schedule

    def _write_lrs(self, lr_changes: Iterable[LRChange]) -> None:
        for gi, g, schedule, lr in lr_changes:
            if schedule is None:
                del g["lr_schedule"]
                self._lr_written.pop(gi, None)
                continue
            g["lr"] = lr
            self._lr_written[gi] = (schedule, lr)
            if g.get("lr_schedule") is not schedule:
                g["lr_schedule"] = schedule


class StepEngine(ScheduledLR, Generic[P]):
    """The step of fastoptim's optimizers, for a subclass that sets `rule` (a fastoptim.rules.Rule)
    and implements the adapter hooks; P is the type of its params (NumPy arrays, torch tensors)."""

    rule: ClassVar[Rule]

    def _init_engine(self, defaults: dict[str, Any]) -> None:
        if self.rule.fill_defaults is not None:
            self.rule.fill_defaults(defaults)
        self._scratch: dict[str, Any] = {}  # a Python-level rule's work arrays, kept across steps
        self._state_version = 0       # bumped (_invalidate) whenever params or state containers change
        self._step_count = 0          # step() calls made: the t schedules are evaluated at
        self._lr_written = {}         # group index -> (schedule, lr) this optimizer last wrote there
        self._fresh: set[int] = set()  # flat indices of params whose state began this step (SGD)
        self._plan: StepPlan | None = None
        self._plan_key: tuple[int, PlanKey] | None = None
        self._plan_params: list[P] = []  # the params (arrays or tensors) of the current plan, in plan order
        self._option_keys = tuple(k for k in defaults if k != "lr_schedule")
        # the step's fast path: the option objects and checked hyperparameters of the last step
        self._remembered_options: list[list[Any]] | None = None
        self._remembered_hyper: list[Hyper] | None = None
        self._stepping = threading.Lock()  # held during a step: see _run_step

    # Whether each step checks that the groups still hold the plan's params (the NumPy
    # adapter; the torch adapter's gather checks it itself).
    _check_plan_params = False

    def _invalidate(self) -> None:
        """Make the next _current_plan() rebuild the tables."""
        self._state_version += 1

    # ---- adapter hooks ----------------------------------------------------------

    def _flat(self) -> tuple[list[P], list[int], list[Key]]:
        """(params, group index of each, key of each: its name or flat index), over all groups."""
        raise NotImplementedError

    def _plain_lr(self, lr: Any, where: str) -> Any:
        """A group's 'lr' as a number (torch allows a one-element tensor)."""
        return lr

    def _param_array(self, p: P, key: Key) -> Array:
        """The NumPy array the kernels update for param p (checked)."""
        raise NotImplementedError

    def _state_of(self, i: int, p: P) -> dict[str, Any] | None:
        """Param i's state dict, or None while it has none."""
        raise NotImplementedError

    def _new_state_for(self, i: int, p: P) -> dict[str, Any]:
        """Param i's (empty) state dict, to be filled at its first grad."""
        raise NotImplementedError

    def _state_array(self, value: Any, p: P, i: int, key: Key, name: str, float32: bool = False) -> Array:
        """The NumPy array of a state entry, checked against its param (shape, and dtype: the
        param's, or float32 if asked)."""
        raise NotImplementedError

    def _new_array(self, p: P, fill: Any, slot: Slot, float32: bool = False) -> P:
        """A new state entry of `slot` (a Rule's Slot) for param p, filled with `fill`: like p
        (in float32 if asked: a 16-bit p's float32 state), or a 0-d array of the scalar dtype for
        a scalar slot. A complex p (torch) gets `fill` in its imaginary parts too if
        slot.fill_imag, else zero: torch's Adagrad starts its sum at complex(v, v),
        torch.full_like at v + 0j."""
        raise NotImplementedError

    def _master_copy(self, p: P) -> P:
        """A new float32 copy of the 16-bit param p."""
        raise NotImplementedError

    def _is_half(self, p: P) -> bool:
        """Whether p is a bfloat16 or float16 param."""
        raise NotImplementedError

    def _scalar_f64(self) -> bool:
        """Whether new per-tensor scalars are float64 (torch's scalar dtype), else float32."""
        return False

    def _zero_step(self, group: Mapping[str, Any]) -> object:
        """A new state's 'step' entry, for a param of `group`."""
        raise NotImplementedError

    def _step_counter(self, state: dict[str, Any], group: Mapping[str, Any], i: int, key: Key) -> Array:
        """Param i's step count as the kernels advance it: a 0-d int64, float32 or float64
        array over the memory of state['step'] (which the adapter may first replace by a
        counter of its own kind, holding the same count)."""
        raise NotImplementedError

    def _quantized_state(self, p: P, i: int, array: Array, state: dict[str, Any], group: Group, slots: Slots,
                         key: Key) -> tuple[Operands, Any] | None:
        """A param's 8-bit state for the plan, (operands: its codes in the slots' places,
        a blockwise8.Quantized8), or None where its state is not 8-bit (the 8-bit classes)."""
        return None

    def _before_kernels(self) -> bool:
        """Called once a step is sure to run, before the kernels: step what the plan leaves
        out; False skips the kernels this time (state is made, nothing else changes)."""
        return True

    def _prepare_grads(self, grads: Any) -> Any:
        """The step's grads as the gather hook takes them (the NumPy adapter: a flat list; the
        torch adapter reads each param's .grad itself, and takes None)."""
        return grads

    # _gather(plan, grads): check and record the grads in `plan`; how many params got a first
    # grad.  May rebuild the plan (self._plan is then the one to run).  A callable attribute,
    # not a method, so that the NumPy adapter can make it StepPlan.gather itself (no Python
    # frame of its own on the step's fast path).
    _gather: Callable[[StepPlan, Any], int]

    def _attach(self, plan: StepPlan, params: list[P]) -> None:
        """Anything the adapter records on a new plan."""

    # Rules at the Python level (Rule.python) also need:

    def _grad_arrays(self, grads: Any) -> list[Array | None]:
        """The gathered grads (as _prepare_grads gave them) as NumPy arrays in plan order, None
        where a param has no grad."""
        raise NotImplementedError

    def _evaluate(self, closure: Callable[[], Any]) -> tuple[Any, Any]:
        """Call a closure-driven step's closure: (its loss, the grads as _gather takes them)."""
        raise NotImplementedError

    def _to_state(self, value: Any) -> Any:
        """A rule's own state value (NumPy arrays and scalars, lists of them) as the state keeps it."""
        return value

    def _from_state(self, value: Any, name: str) -> Any:
        """The inverse of _to_state (also for values loaded from a checkpoint); name: the entry's."""
        return value

    # ---- groups ------------------------------------------------------------------------
    def _check_group_count(self, gi: int, where: str) -> None:
        """Refuse a second param group for a rule with one only (torch's LBFGS)."""
        if gi > 0 and self.rule.python is not None and self.rule.python.single_group:
            raise ValueError(f"{type(self).__name__} doesn't support per-parameter options (parameter groups): "
                             f"it takes one param group, and {where} would be another")

    # ---- hyperparameters ------------------------------------------------------------
    def _checked_hyper(self, group: Mapping[str, Any], where: str, lr: float | None = None) -> Hyper:
        """The group's checked (lr, maximize, *fields), at `lr` if given (a schedule's value)."""
        precision(group, where)
        if lr is None:
            lr = self._plain_lr(group["lr"], where)
        if type(lr) is float and 0.0 <= lr < math.inf:
            return (lr,) + self.rule.check_options(group, _STAND_IN_LR, where)[1:]
        return self.rule.check_options(group, lr, where)

    def _slots(self, group: Mapping[str, Any]) -> Slots:
        return self.rule.slots(group)

    def _slots_by_group(self) -> PlanKey:
        # A list comprehension: in CPython 3.11 tuple(generator) leaves 48 bytes in tracemalloc per call.
        return tuple([(self.rule.slots(g), precision(g, "")) for g in self.param_groups])

    # ---- the step -------------------------------------------------------------------
    def _run_step(self, grads: Any, grad_scale: float | None = None) -> None:
        """One step (see the module docstring); grads as the adapter's _prepare_grads takes them.

        The kernels release the GIL, so another thread could enter a step of this same
        optimizer meanwhile and race it over the same arrays and pointer tables: a lock
        taken without waiting turns that into an error instead of a torn update.
        """
        if not self._stepping.acquire(False):
            raise RuntimeError(f"{type(self).__name__}.step() was called from two threads at once; "
                               f"an optimizer's steps must not overlap (step different optimizers in "
                               f"parallel, or hold a lock around this one's steps)")
        try:
            self._locked_step(grads, grad_scale)
        finally:
            self._stepping.release()

    def _locked_step(self, grads: Any, grad_scale: float | None) -> None:
        t = self._step_count
        lr_changes: list[LRChange] | None
        fast = same_options(self.param_groups, self._option_keys, self._remembered_options)
        if fast:
            # Every option is the object it was at the last step: same checks, same state slots.
            assert self._remembered_hyper is not None and self._plan_key is not None  # remembered together
            hyper, lr_changes, slots = self._remembered_hyper, None, self._plan_key[1]
        else:
            hyper, lr_changes = self._checked_groups(t)
            slots = self._slots_by_group()
        scale = 1.0 if grad_scale is None else checked_grad_scale(grad_scale)
        grads = self._prepare_grads(grads)
        self._gather_grads(slots, grads)
        if lr_changes is not None:
            self._write_lrs(lr_changes)
        plan = self._plan
        assert plan is not None  # _gather_grads built it
        if not self._before_kernels():
            plan.forget_grads()  # fresh state stays fresh: its first update is still to come
        elif self.rule.python is not None:
            self._run_python(hyper, scale, grads)
            self._fresh.clear()
        elif grad_scale is None:
            plan.run(hyper)
            self._fresh.clear()
        else:
            plan.run(hyper, scale)
            self._fresh.clear()
        self._step_count = t + 1
        if not fast and lr_changes is None:
            self._remember_options(hyper)

    def _gather_grads(self, slots: PlanKey, grads: Any) -> None:
        """Check the grads and record them in the plan; create the state of params that got
        their first grad, now that every check passed."""
        if self._gather(self._current_plan(slots), grads):
            params, group_of = self._plan_params, self._flat()[1]
            assert self._plan is not None  # the one _gather left
            for i in self._plan.missing_state():
                self._fill_state(self._new_state_for(i, params[i]), self.param_groups[group_of[i]], params[i])
                self._fresh.add(i)
            self._invalidate()
            self._gather(self._current_plan(slots), grads)

    def _taken_grads(self, grads: Any) -> list[Array | None]:
        """The gathered grads as NumPy arrays (plan order); the plan forgets them."""
        try:
            return self._grad_arrays(grads)
        finally:
            assert self._plan is not None  # the one the grads were gathered in
            self._plan.forget_grads()

    def _run_python(self, hyper: list[Hyper], grad_scale: float, grads: Any) -> None:
        """Step 6 for a rule at the Python level: its step over the plan's arrays."""
        arrays = self._taken_grads(grads)
        plan, python = self._plan, self.rule.python
        assert plan is not None and python is not None  # the step's plan; a rule at the Python level
        for i, g in enumerate(arrays):
            if g is not None:
                plan.advance_step(i)
        python.step(StepArrays(self, arrays, hyper, grad_scale))

    def _run_closure_step(self, closure: Callable[[], Any]) -> Any:
        """step(closure) of a closure-driven rule: checks, the closure's first evaluation (its
        grads checked, state created) before anything is written, then the rule's step.
        Returns what the rule's step returns (the first evaluation's loss)."""
        if not callable(closure):
            raise TypeError(f"{type(self).__name__}.step takes a closure that evaluates the objective at the "
                            f"params' current values, got {type(closure).__qualname__}")
        t = self._step_count
        hyper, lr_changes = self._checked_groups(t)
        slots = self._slots_by_group()

        def evaluate() -> tuple[Any, list[Array | None]]:
            loss, grads = self._evaluate(closure)
            self._gather_grads(slots, grads)
            self._fresh.clear()
            return loss, self._taken_grads(grads)

        loss, grads = evaluate()
        if lr_changes is not None:
            self._write_lrs(lr_changes)
        run = StepArrays(self, grads, hyper, 1.0)
        run.loss, run.evaluate = loss, evaluate
        run.read_state, run.write_state = self._read_rule_state, self._write_rule_state
        assert self.rule.python is not None  # a closure-driven rule is one at the Python level
        result = self.rule.python.step(run)
        self._step_count = t + 1
        return result

    def _rule_state(self) -> dict[str, Any]:
        """The state dict a rule keeps its own state in: the first param's, as torch's LBFGS does."""
        return self._new_state_for(0, self._plan_params[0])

    def _read_rule_state(self) -> dict[str, Any]:
        return {name: self._from_state(value, name) for name, value in self._rule_state().items()}

    def _write_rule_state(self, values: Mapping[str, Any]) -> None:
        state = self._rule_state()
        for name, value in values.items():
            # Not plan operands: the pointer tables stay valid (no _invalidate).
            dict.__setitem__(state, name, self._to_state(value))

    def _checked_groups(self, t: int) -> tuple[list[Hyper], list[LRChange] | None]:
        """Every group's checked hyperparameters at step t, and the lr changes to write
        once the step is sure to run: (group index, group, schedule or None, lr)."""
        hyper = []
        lr_changes: list[LRChange] | None = None
        for gi, g in enumerate(self.param_groups):
            where = f"param_groups[{gi}]"
            # A plain float lr and no schedule, the usual case, skips the schedule logic.
            schedule = None if type(g["lr"]) is float and "lr_schedule" not in g else self._group_schedule(gi, g)
            if schedule is None:
                hyper.append(self._checked_hyper(g, where))
                if "lr_schedule" in g:  # replaced by a number written to 'lr'
                    lr_changes = (lr_changes or []) + [(gi, g, None, g["lr"])]
                continue
            lr = scheduled_lr(schedule, t, where)
            hyper.append(self._checked_hyper(g, where, lr))
            lr_changes = (lr_changes or []) + [(gi, g, schedule, lr)]
        return hyper, lr_changes

    def _remember_options(self, hyper: list[Hyper]) -> None:
        """Keep this step's option objects and checked hyperparameters for the fast path,
        unless a value could change in place (a list of betas, say)."""
        remembered = [[g[k] for k in self._option_keys] for g in self.param_groups]
        if all([_immutable(v) for values in remembered for v in values]):
            self._remembered_options, self._remembered_hyper = remembered, hyper
        else:
            self._remembered_options = self._remembered_hyper = None

    # ---- state ------------------------------------------------------------------------
    def _fill_state(self, state: dict[str, Any], group: Mapping[str, Any], p: P) -> None:
        state_dtype, master, stochastic, _ = precision(group, "")
        half = self._is_half(p)
        if self.rule.step_in_state or (half and stochastic):  # stochastic rounding keys its bits by step
            dict.__setitem__(state, "step", self._zero_step(group))
        for slot in self.rule.state:
            if slot.used(group.__getitem__) and slot.serves(p.ndim):
                dict.__setitem__(state, slot.name, self._new_slot_array(group, p, slot.name,
                                                                        half and state_dtype == "float32"))
        if half and master:
            dict.__setitem__(state, "master_param", self._master_copy(p))

    def _new_slot_array(self, group: Mapping[str, Any], p: P, name: str, float32: bool = False) -> P:
        slot = self.rule.slots_by_name[name]
        fill = self.rule.start_value(slot, group)
        if slot.fill == "lr":  # torch's tensor lr: its value
            fill = self._plain_lr(fill, "")
        return self._new_array(p, fill, slot, float32)

    def _loaded_as_float32(self, name: str, group: Mapping[str, Any], p: P) -> bool:
        """Whether a loaded state entry `name` of param p is kept in float32 (else in p's dtype)."""
        if not self._is_half(p):
            return False
        return name == "master_param" or (precision(group, "")[0] == "float32" and name != "step")

    # ---- pointer tables -----------------------------------------------------------------
    def _current_plan(self, slots: PlanKey) -> StepPlan:
        """The plan for the current params and state, given the groups' state slots."""
        key = (self._state_version, slots)
        if (self._plan is None or self._plan_key != key
                or (self._check_plan_params and not self._plan.matches(self.param_groups))):
            self._plan, self._plan_params = self._build_plan()
            self._plan_key = (self._state_version, slots)
        return self._plan

    def _build_plan(self, extra: Sequence[P] = (), extra_keys: Sequence[Key] = (),
                    extra_group: Group | None = None) -> tuple[StepPlan, list[P]]:
        """(pointer tables, their params in plan order) over all params, and `extra`, the params
        of `extra_group` being added (a check that they share no memory with the others)."""
        params, groups, keys = self._flat()
        params, keys = params + list(extra), keys + list(extra_keys)
        groups = groups + [len(self.param_groups)] * len(extra)
        all_groups = list(self.param_groups) + ([extra_group] if extra_group is not None else [])
        slots = tuple([self.rule.slots(g) for g in all_groups])
        options = [precision(g, "") for g in all_groups]
        steps: list[int | Array] = [0] * len(params)
        arrays: list[Array] = []
        state_arrays: list[Operands | None] = []
        layouts: list[int | None] = []
        masters: list[Array | None] = []
        seeds: list[int] = []
        quantized: list[Any] = []
        for i, p in enumerate(params):
            key, group = keys[i], all_groups[groups[i]]
            array = self._param_array(p, key)
            arrays.append(array)
            if self.rule.ndim is not None and array.ndim != self.rule.ndim:
                raise ValueError(f"{type(self).__name__} only supports {self.rule.ndim}D parameters whereas we "
                                 f"found a parameter with size: {array.shape} (params[{key!r}])")
            layout = param_layout(array, options[groups[i]])
            if layout is not None:
                refuse_half(self.rule, type(self).__name__, array, f"params[{key!r}]")
            state_dtype, master, stochastic, seed = options[groups[i]]
            float32 = layout is not None and state_dtype == "float32"
            state = self._state_of(i, p)
            param_slots = self.rule.param_slots(slots[groups[i]], array.ndim)
            q8 = self._quantized_state(p, i, array, state, group, param_slots, key) if state else None
            quantized.append(q8)
            operands: Operands | None
            if q8 is not None:  # 8-bit state (fastoptim.blockwise8): its codes are the slots' operands
                operands, quantized[i] = q8
            else:
                operands = state_operands(
                    state, param_slots, lambda name: self._new_slot_array(group, p, name, float32),
                    lambda value, name: self._state_array(value, p, i, key, name, float32))
            # Master weights and stochastic rounding keep state (the copy; the step) for any rule.
            needs_state = layout is not None and (master or stochastic)
            if needs_state and not state:
                operands = None  # made at the param's first grad
            layouts.append(BLOCKWISE8 if q8 is not None else layout)
            seeds.append(seed)
            masters.append(None)
            if needs_state and state and master:
                if "master_param" not in state:  # master weights switched on after this state began
                    dict.__setitem__(state, "master_param", self._master_copy(p))
                masters[i] = self._state_array(state["master_param"], p, i, key, "master_param", True)
            state_arrays.append(operands)
            if operands is None or (all(a is None for a in operands) and not needs_state):
                continue
            assert state is not None  # operands or needs_state: the param has state
            if self.rule.step_in_state or (layout is not None and stochastic):
                if "step" not in state and not self.rule.step_in_state:
                    # stochastic rounding switched on after this rule's state began
                    dict.__setitem__(state, "step", 0 if i in self._fresh else 1)
                steps[i] = self._step_counter(state, group, i, key)
            else:
                steps[i] = 0 if i in self._fresh else 1
        plan = StepPlan(kernel_id(self.rule), arrays, state_arrays, groups, len(all_groups), keys, steps,
                        layouts, masters, seeds, quantized)
        plan.scalar_f64 = self._scalar_f64()
        self._attach(plan, params)
        return plan, params
