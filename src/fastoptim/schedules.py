"""Learning-rate schedules: pure functions of the step, as optax has them.

Each constructor returns a small picklable object, `schedule(t) -> float`,
with t = 0 for the first step (an int or a NumPy integer; t < 0 is an
error).  Pass one wherever an optimizer takes `lr` (defaults or per param
group): at its step t the optimizer uses `schedule(t)` (see
fastoptim.Optimizer).  Schedules compose: `warmup` and `join` take other
schedules.  Arguments are checked at construction.

    constant(lr)
    piecewise_constant(boundaries, values)
    exponential(base_lr, gamma, min_lr=0.0)
    polynomial(base_lr, alpha, beta=1.0)
    polynomial_decay(base_lr, end_lr, total_steps, power=1.0)
    sqrt(base_lr)
    factor(base_lr, factor, min_lr=0.0)
    multi_factor(base_lr, milestones, factor)
    cosine(base_lr, total_steps, final_lr=0.0, warmup_steps=0, warmup_begin_lr=0.0)
    warmup(schedule, warmup_steps, start_lr=0.0)
    one_cycle(max_lr, total_steps, pct_start=0.3, div_factor=25.0, final_div_factor=1e4)
    join(schedules, boundaries)

ReduceLROnPlateau is the one schedule with state, because it follows a
metric rather than the step; see its docstring.  plot() draws schedules.
"""
import bisect
import math
import os
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar, Literal

import numpy as np

from . import _validation
from .typing import LRSchedule

__all__ = [
    "Schedule", "constant", "piecewise_constant", "exponential", "polynomial", "polynomial_decay",
    "sqrt", "factor", "multi_factor", "cosine", "warmup", "one_cycle", "join",
    "ReduceLROnPlateau", "plot",
]


# ---- argument checks ------------------------------------------------------------
def _rate(owner: str, name: str, value: Any) -> float:
    """A learning rate argument: a finite real number >= 0, as a float."""
    return _validation.real(value, name, low=0.0, label="argument", name_first=True, where=f" ({owner})")


def _positive(owner: str, name: str, value: Any, high: float = math.inf, high_open: bool = False) -> float:
    return _validation.real(value, name, low=0.0, low_open=True, high=high, high_open=high_open,
                            label="argument", name_first=True, where=f" ({owner})")


def _count(owner: str, name: str, value: Any, minimum: int = 0) -> int:
    """A number of steps: an integer >= minimum, as an int."""
    return _validation.integer(value, name, minimum=minimum, label="argument", name_first=True,
                               where=f" ({owner})",
                               kind="an integer number of steps")


def _increasing_steps(owner: str, name: str, values: Any) -> tuple[int, ...]:
    """Step boundaries: integers >= 0, strictly increasing, as a tuple of ints."""
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        raise TypeError(f"Invalid argument: {name}={values!r} ({owner}); expected a sequence of steps")
    steps = tuple(_count(owner, f"{name}[{i}]", v) for i, v in enumerate(values))
    for i in range(1, len(steps)):
        if steps[i] <= steps[i - 1]:
            raise ValueError(f"Invalid argument: {name}={list(steps)} ({owner}); must be strictly "
                             f"increasing, but {name}[{i}]={steps[i]} <= {name}[{i - 1}]={steps[i - 1]}")
    return steps


def _schedule(owner: str, name: str, value: Any) -> LRSchedule:
    if not callable(value):
        raise TypeError(f"Invalid argument: {name}={value!r} ({owner}); expected a schedule "
                        f"(a callable taking the step)")
    return value  # type: ignore[no-any-return]


def _check_step(t: Any) -> int:
    """The step t a schedule is called with: an integer >= 0, as an int."""
    if type(t) is not int:
        if not _validation.is_integer(t):
            raise TypeError(f"a schedule's step must be an integer (int or NumPy integer), got {t!r}")
        t = int(t)
    if t < 0:
        raise ValueError(f"a schedule's step must be >= 0 (t = 0 is the first step), got {t}")
    return int(t)


def _power(base: float, exponent: float) -> float:
    """base ** exponent as a float; inf where it overflows (the optimizer then rejects it)."""
    try:
        return float(base ** exponent)
    except OverflowError:
        return math.inf


# ---- schedules ------------------------------------------------------------------
class Schedule:
    """Base class: a learning rate as a function of the step, `schedule(t) -> float`.

    Subclasses list their constructor arguments in `_fields` (stored as
    attributes of the same names) and compute the value in `_value(t)` for a
    checked t.  Equality, hashing and repr follow the arguments.
    """

    _fields: ClassVar[tuple[str, ...]] = ()
    _constructor: ClassVar[str | None] = None     # the public name, for repr

    def __call__(self, t: int) -> float:
        if type(t) is not int or t < 0:  # the usual int t skips the call
            t = _check_step(t)
        return self._value(t)

    def _value(self, t: int) -> float:
        raise NotImplementedError

    def _arguments(self) -> tuple[Any, ...]:
        return tuple(getattr(self, name) for name in self._fields)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Schedule) and type(self) is type(other) and self._arguments() == other._arguments()

    def __hash__(self) -> int:
        return hash((type(self), self._arguments()))

    def __repr__(self) -> str:
        args = ", ".join(f"{name}={value!r}" for name, value in zip(self._fields, self._arguments()))
        return f"{self._constructor or type(self).__name__}({args})"


class Constant(Schedule):
    """`lr` at every step."""
    _fields = ("lr",)
    _constructor = "constant"

    def __init__(self, lr: float) -> None:
        self.lr = _rate("constant", "lr", lr)

    def _value(self, t: int) -> float:
        return self.lr


class PiecewiseConstant(Schedule):
    """`values[i]` for `boundaries[i-1] <= t < boundaries[i]`: values[0] before boundaries[0],
    values[-1] from boundaries[-1] on (so len(values) == len(boundaries) + 1)."""
    _fields = ("boundaries", "values")
    _constructor = "piecewise_constant"

    def __init__(self, boundaries: Iterable[int], values: Iterable[float]) -> None:
        where = "piecewise_constant"
        self.boundaries = _increasing_steps(where, "boundaries", boundaries)
        if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
            raise TypeError(f"Invalid argument: values={values!r} ({where}); expected a sequence of rates")
        self.values = tuple(_rate(where, f"values[{i}]", v) for i, v in enumerate(values))
        if len(self.values) != len(self.boundaries) + 1:
            raise ValueError(f"Invalid arguments ({where}): len(values) must be len(boundaries) + 1, "
                             f"got {len(self.values)} values for {len(self.boundaries)} boundaries")

    def _value(self, t: int) -> float:
        return self.values[bisect.bisect_right(self.boundaries, t)]


class Exponential(Schedule):
    """`max(min_lr, base_lr * gamma**t)`; gamma = exp(-lambda) gives base_lr * e^(-lambda t)."""
    _fields = ("base_lr", "gamma", "min_lr")
    _constructor = "exponential"

    def __init__(self, base_lr: float, gamma: float, min_lr: float = 0.0) -> None:
        self.base_lr = _rate(self._constructor, "base_lr", base_lr)
        self.gamma = _positive(self._constructor, self._fields[1], gamma)
        self.min_lr = _rate(self._constructor, "min_lr", min_lr)

    def _value(self, t: int) -> float:
        return max(self.min_lr, self.base_lr * _power(self.gamma, t))


class Factor(Exponential):
    """`max(min_lr, base_lr * factor**t)`: exponential's curve, as a decay (0 < factor <= 1)."""
    _fields = ("base_lr", "factor", "min_lr")
    _constructor = "factor"

    def __init__(self, base_lr: float, factor: float, min_lr: float = 0.0) -> None:
        super().__init__(base_lr, _positive(self._constructor, "factor", factor, high=1.0), min_lr)

    @property
    def factor(self) -> float:
        return self.gamma


class Polynomial(Schedule):
    """`base_lr * (beta*t + 1)**(-alpha)`."""
    _fields = ("base_lr", "alpha", "beta")
    _constructor = "polynomial"

    def __init__(self, base_lr: float, alpha: float, beta: float = 1.0) -> None:
        self.base_lr = _rate("polynomial", "base_lr", base_lr)
        self.alpha = _rate("polynomial", "alpha", alpha)
        self.beta = _rate("polynomial", "beta", beta)

    def _value(self, t: int) -> float:
        return self.base_lr * float((self.beta * t + 1) ** (-self.alpha))


class PolynomialDecay(Schedule):
    """`(base_lr - end_lr) * (1 - min(t, T)/T)**power + end_lr` with T = total_steps:
    end_lr from total_steps on (torch's PolynomialLR is end_lr = 0)."""
    _fields = ("base_lr", "end_lr", "total_steps", "power")
    _constructor = "polynomial_decay"

    def __init__(self, base_lr: float, end_lr: float, total_steps: int, power: float = 1.0) -> None:
        where = "polynomial_decay"
        self.base_lr = _rate(where, "base_lr", base_lr)
        self.end_lr = _rate(where, "end_lr", end_lr)
        self.total_steps = _count(where, "total_steps", total_steps, minimum=1)
        self.power = _positive(where, "power", power)

    def _value(self, t: int) -> float:
        T = self.total_steps
        return (self.base_lr - self.end_lr) * float((1 - min(t, T) / T) ** self.power) + self.end_lr


class Sqrt(Schedule):
    """`base_lr * (t + 1)**-0.5`."""
    _fields = ("base_lr",)
    _constructor = "sqrt"

    def __init__(self, base_lr: float) -> None:
        self.base_lr = _rate("sqrt", "base_lr", base_lr)

    def _value(self, t: int) -> float:
        return self.base_lr * float((t + 1) ** -0.5)


class MultiFactor(Schedule):
    """`base_lr * factor**(number of milestones <= t)` (torch's MultiStepLR), 0 < factor <= 1."""
    _fields = ("base_lr", "milestones", "factor")
    _constructor = "multi_factor"

    def __init__(self, base_lr: float, milestones: Iterable[int], factor: float) -> None:
        self.base_lr = _rate("multi_factor", "base_lr", base_lr)
        self.milestones = _increasing_steps("multi_factor", "milestones", milestones)
        self.factor = _positive("multi_factor", "factor", factor, high=1.0)

    def _value(self, t: int) -> float:
        return self.base_lr * self.factor ** bisect.bisect_right(self.milestones, t)


class Cosine(Schedule):
    """Linear warm-up from warmup_begin_lr to base_lr over warmup_steps (w), then
    `final_lr + (base_lr - final_lr) * (1 + cos(pi*(t - w)/(T - w)))/2` up to
    T = total_steps, then final_lr.  With w = 0 this is torch's CosineAnnealingLR
    (T_max = total_steps, eta_min = final_lr) up to T; torch's curve rises again after T."""
    _fields = ("base_lr", "total_steps", "final_lr", "warmup_steps", "warmup_begin_lr")
    _constructor = "cosine"

    def __init__(self, base_lr: float, total_steps: int, final_lr: float = 0.0, warmup_steps: int = 0,
                 warmup_begin_lr: float = 0.0) -> None:
        where = "cosine"
        self.base_lr = _rate(where, "base_lr", base_lr)
        self.total_steps = _count(where, "total_steps", total_steps, minimum=1)
        self.final_lr = _rate(where, "final_lr", final_lr)
        self.warmup_steps = _count(where, "warmup_steps", warmup_steps)
        self.warmup_begin_lr = _rate(where, "warmup_begin_lr", warmup_begin_lr)
        if self.total_steps <= self.warmup_steps:
            raise ValueError(f"Invalid arguments ({where}): total_steps={self.total_steps} must be "
                             f"greater than warmup_steps={self.warmup_steps}")

    def _value(self, t: int) -> float:
        w, T = self.warmup_steps, self.total_steps
        if t < w:
            return self.warmup_begin_lr + (self.base_lr - self.warmup_begin_lr) * t / w
        if t > T:
            return self.final_lr
        return self.final_lr + (self.base_lr - self.final_lr) * (1 + math.cos(math.pi * (t - w) / (T - w))) / 2


class Warmup(Schedule):
    """Linear from start_lr to schedule(0) over warmup_steps (w), then schedule(t - w)."""
    _fields = ("schedule", "warmup_steps", "start_lr")
    _constructor = "warmup"

    def __init__(self, schedule: LRSchedule, warmup_steps: int, start_lr: float = 0.0) -> None:
        self.schedule = _schedule("warmup", "schedule", schedule)
        self.warmup_steps = _count("warmup", "warmup_steps", warmup_steps)
        self.start_lr = _rate("warmup", "start_lr", start_lr)

    def _value(self, t: int) -> float:
        w = self.warmup_steps
        if t < w:
            return self.start_lr + (float(self.schedule(0)) - self.start_lr) * t / w
        return float(self.schedule(t - w))


class OneCycle(Schedule):
    """The lr of torch's OneCycleLR (anneal_strategy='cos', three_phase=False) at step t:
    cosine from max_lr/div_factor up to max_lr over the first pct_start of total_steps,
    then cosine down to max_lr/div_factor/final_div_factor at step total_steps - 1,
    held after that (where torch raises)."""
    _fields = ("max_lr", "total_steps", "pct_start", "div_factor", "final_div_factor")
    _constructor = "one_cycle"

    def __init__(self, max_lr: float, total_steps: int, pct_start: float = 0.3, div_factor: float = 25.0,
                 final_div_factor: float = 1e4) -> None:
        where = "one_cycle"
        self.max_lr = _rate(where, "max_lr", max_lr)
        self.total_steps = _count(where, "total_steps", total_steps, minimum=2)
        self.pct_start = _positive(where, "pct_start", pct_start, high=1.0, high_open=True)
        self.div_factor = _positive(where, "div_factor", div_factor)
        self.final_div_factor = _positive(where, "final_div_factor", final_div_factor)
        # Phase ends as torch computes them; the rise must span at least one step.
        self._rise_end = float(self.pct_start * self.total_steps) - 1
        if self._rise_end <= 0:
            raise ValueError(f"Invalid arguments ({where}): pct_start * total_steps must exceed 1 so "
                             f"the rising phase has a step, got pct_start={self.pct_start!r}, "
                             f"total_steps={self.total_steps}")
        self._initial_lr = self.max_lr / self.div_factor
        self._min_lr = self._initial_lr / self.final_div_factor

    @staticmethod
    def _annealing_cos(start: float, end: float, pct: float) -> float:
        # torch's OneCycleLR._annealing_cos, operation for operation, for identical values.
        cos_out = math.cos(math.pi * pct) + 1
        return end + (start - end) / 2.0 * cos_out

    def _value(self, t: int) -> float:
        last = self.total_steps - 1
        if t >= last:
            return self._min_lr
        if t <= self._rise_end:
            return self._annealing_cos(self._initial_lr, self.max_lr, t / self._rise_end)
        pct = (t - self._rise_end) / (last - self._rise_end)
        return self._annealing_cos(self.max_lr, self._min_lr, pct)


class Join(Schedule):
    """optax's join_schedules: schedules[0] before boundaries[0], then schedules[i]
    evaluated at t - boundaries[i-1] from boundaries[i-1] on."""
    _fields = ("schedules", "boundaries")
    _constructor = "join"

    def __init__(self, schedules: Iterable[LRSchedule], boundaries: Iterable[int]) -> None:
        where = "join"
        if isinstance(schedules, (str, bytes)) or not hasattr(schedules, "__iter__"):  # type: ignore[unreachable]
            raise TypeError(f"Invalid argument: schedules={schedules!r} ({where}); expected a sequence "
                            f"of schedules")
        self.schedules = tuple(_schedule(where, f"schedules[{i}]", s) for i, s in enumerate(schedules))
        self.boundaries = _increasing_steps(where, "boundaries", boundaries)
        if len(self.schedules) != len(self.boundaries) + 1:
            raise ValueError(f"Invalid arguments ({where}): len(schedules) must be len(boundaries) + 1, "
                             f"got {len(self.schedules)} schedules for {len(self.boundaries)} boundaries")

    def _value(self, t: int) -> float:
        i = bisect.bisect_right(self.boundaries, t)
        return float(self.schedules[i](t - self.boundaries[i - 1] if i else t))


# The constructors, by the names the issue and optax use.
constant = Constant
piecewise_constant = PiecewiseConstant
exponential = Exponential
polynomial = Polynomial
polynomial_decay = PolynomialDecay
sqrt = Sqrt
factor = Factor
multi_factor = MultiFactor
cosine = Cosine
warmup = Warmup
one_cycle = OneCycle
join = Join


# ---- the metric-driven schedule -----------------------------------------------------
class ReduceLROnPlateau(Schedule):
    """torch's ReduceLROnPlateau as a schedule: its value is the current lr.

    Unlike torch's it does not drive an optimizer; it *is* the lr.  Pass it as
    `lr` (defaults or per group) of any optimizer, and call `step(metric)`
    once per epoch; every optimizer step until the next reduction uses the
    current lr, whatever t is.  Because it lives in the optimizer's param
    group, the optimizer's state_dict saves it, and load_state_dict loads the
    saved state into the ReduceLROnPlateau the group already holds (so your
    reference to it stays live).  Groups that should be reduced together
    share one object; groups with their own lr each get one.

    step(metric): after more than `patience` epochs without improvement
    (`metric < best * (1 - threshold)` for mode='min', threshold_mode='rel';
    `best - threshold` for 'abs'; mirrored for 'max'), lr becomes
    `max(lr * factor, min_lr)` if that lowers it by more than eps, then
    `cooldown` epochs pass without counting bad epochs.  A NaN metric is
    never an improvement.  This is the only schedule with state.
    """
    _fields = ("initial_lr", "mode", "factor", "patience", "threshold", "threshold_mode", "cooldown",
               "min_lr", "eps")
    _state_fields = ("lr", "best", "num_bad_epochs", "cooldown_counter", "last_epoch")
    _constructor = "ReduceLROnPlateau"

    def __init__(self, lr: float, mode: Literal["min", "max"] = "min", factor: float = 0.1, patience: int = 10,
                 threshold: float = 1e-4, threshold_mode: Literal["rel", "abs"] = "rel", cooldown: int = 0,
                 min_lr: float = 0.0, eps: float = 1e-8) -> None:
        where = "ReduceLROnPlateau"
        self.initial_lr = _rate(where, "lr", lr)
        if mode not in ("min", "max"):
            raise ValueError(f"Invalid argument: mode={mode!r} ({where}); expected 'min' or 'max'")
        if threshold_mode not in ("rel", "abs"):
            raise ValueError(f"Invalid argument: threshold_mode={threshold_mode!r} ({where}); "
                             f"expected 'rel' or 'abs'")
        self.mode, self.threshold_mode = mode, threshold_mode
        self.factor = _validation.real(factor, "factor", low=0.0, high=1.0, high_open=True, label="argument",
                                       name_first=True,
                                       where=f" ({where})")
        self.patience = _count(where, "patience", patience)
        self.threshold = _rate(where, "threshold", threshold)
        self.cooldown = _count(where, "cooldown", cooldown)
        self.min_lr = _rate(where, "min_lr", min_lr)
        self.eps = _rate(where, "eps", eps)
        self.lr = self.initial_lr
        self.best = math.inf if mode == "min" else -math.inf
        self.num_bad_epochs = 0
        self.cooldown_counter = 0
        self.last_epoch = 0

    def _value(self, t: int) -> float:
        return self.lr

    def _is_better(self, a: float) -> bool:
        if self.mode == "min":
            bound = self.best * (1.0 - self.threshold) if self.threshold_mode == "rel" else self.best - self.threshold
            return a < bound
        bound = self.best * (self.threshold + 1.0) if self.threshold_mode == "rel" else self.best + self.threshold
        return a > bound

    def step(self, metric: float) -> float:
        """Record one epoch's metric; returns the lr from now on."""
        if isinstance(metric, (str, bytes, bool, np.bool_)):
            raise TypeError(f"ReduceLROnPlateau.step: metric must be a real number, got {metric!r}")
        try:
            current = float(metric)
        except (TypeError, ValueError):
            raise TypeError(f"ReduceLROnPlateau.step: metric must be a real number, got {metric!r}") from None
        self.last_epoch += 1
        if self._is_better(current):
            self.best = current
            self.num_bad_epochs = 0
        else:
            self.num_bad_epochs += 1
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0  # bad epochs in cooldown do not count
        if self.num_bad_epochs > self.patience:
            new_lr = max(self.lr * self.factor, self.min_lr)
            if self.lr - new_lr > self.eps:
                self.lr = new_lr
            self.cooldown_counter = self.cooldown
            self.num_bad_epochs = 0
        return self.lr

    def state_dict(self) -> dict[str, Any]:
        """The progress so far (lr, best, counters); the arguments are the constructor's."""
        return {name: getattr(self, name) for name in self._state_fields}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Continue from state_dict(); checked first, so on error nothing changes."""
        where = "ReduceLROnPlateau.load_state_dict"
        missing = [name for name in self._state_fields if name not in state_dict]
        if missing:
            raise ValueError(f"{where}: state_dict lacks {missing}")
        lr = _rate(where, "lr", state_dict["lr"])
        best = _validation.real(state_dict["best"], "best", low=-math.inf, label="argument", name_first=True,
                                where=f" ({where})")
        counters = {name: _count(where, name, state_dict[name])
                    for name in ("num_bad_epochs", "cooldown_counter", "last_epoch")}
        self.lr, self.best = lr, best
        for name, value in counters.items():
            setattr(self, name, value)

    def _arguments(self) -> tuple[Any, ...]:
        return super()._arguments() + tuple(getattr(self, name) for name in self._state_fields)

    __hash__ = None  # type: ignore[assignment]  # it changes as it steps

    def __repr__(self) -> str:
        args = ", ".join(f"{name}={getattr(self, name)!r}" for name in self._fields[1:])
        return (f"ReduceLROnPlateau(lr={self.initial_lr!r}, {args}; "
                f"current lr={self.lr!r}, best={self.best!r}, epochs={self.last_epoch})")


# ---- drawing --------------------------------------------------------------------
def _subclasses(cls: type) -> list[type]:
    out: list[type] = []
    sub: type
    for sub in cls.__subclasses__():
        out += [sub] + _subclasses(sub)
    return out


# Every schedule class, e.g. for torch.serialization.add_safe_globals (fastoptim.torch does so).
SCHEDULE_CLASSES = tuple(_subclasses(Schedule))


def plot(schedules_by_name: Mapping[str, LRSchedule], total_steps: int, path: str | os.PathLike[str], *,
         title: str = "Learning-rate schedules", grid: bool | None = None,
         log_scale: bool = False) -> str | os.PathLike[str]:
    """Draw each schedule's lr over steps 0..total_steps-1 into one PNG at `path`; returns path.

    schedules_by_name: a dict name -> schedule (any callable taking the step).
    grid: one small panel per schedule (True) or all curves on one axes
    (False); by default panels when there are more than six schedules, which
    one axes cannot keep apart.  Needs matplotlib (pip install "fastoptim[plot]").
    """
    if not isinstance(schedules_by_name, Mapping) or not schedules_by_name:
        raise TypeError("plot: schedules_by_name must be a non-empty dict name -> schedule")
    for name, schedule in schedules_by_name.items():
        _schedule("plot", f"schedules_by_name[{name!r}]", schedule)
    total_steps = _count("plot", "total_steps", total_steps, minimum=1)
    # Evaluated before matplotlib is touched, so a bad schedule leaves no half-drawn file.
    steps = np.arange(total_steps)
    curves = {str(name): [float(s(t)) for t in range(total_steps)] for name, s in schedules_by_name.items()}
    try:
        from matplotlib.figure import Figure  # no pyplot: leaves the caller's backend and figures alone
    except ImportError:
        raise ImportError('fastoptim.schedules.plot needs matplotlib: pip install "fastoptim[plot]"') from None
    if grid is None:
        grid = len(curves) > 6
    if grid:
        cols = min(len(curves), 4)
        rows = -(-len(curves) // cols)
        fig = Figure(figsize=(3.6 * cols, 2.7 * rows + 0.5), layout="constrained")
        axes = fig.subplots(rows, cols, sharex=True, squeeze=False).ravel()
        for i, (ax, (name, values)) in enumerate(zip(axes, curves.items())):
            ax.plot(steps, values, color=f"C{i % 10}", linewidth=1.6)
            ax.set_title(name, fontsize=9)
            ax.set_ylim(bottom=0 if not log_scale else None)
        for ax in axes[len(curves):]:
            ax.set_visible(False)
        for ax in axes[-cols:]:
            ax.set_xlabel("step t")
        for ax in axes[::cols]:
            ax.set_ylabel("learning rate")
        fig.suptitle(title)
    else:
        # Room for the legend beside the axes, however long and many the names.
        longest = max(len(name) for name in curves)
        fig = Figure(figsize=(6.5 + 0.07 * longest, max(5.5, 1.5 + 0.28 * len(curves))), layout="constrained")
        ax = fig.add_subplot()
        for i, (name, values) in enumerate(curves.items()):
            ax.plot(steps, values, label=name, linewidth=1.6, linestyle=("-", "--", ":")[i // 10 % 3])
        ax.set_xlabel("step t")
        ax.set_ylabel("learning rate")
        ax.set_title(title)
        ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
        axes = np.array([ax])
    for ax in axes:
        if log_scale:
            ax.set_yscale("log")
        ax.set_xlim(0, max(total_steps - 1, 1))
        ax.grid(True, alpha=0.3)
    fig.savefig(path, dpi=110)
    return path
