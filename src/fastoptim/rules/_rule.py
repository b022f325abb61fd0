"""What a rule is: the one description every face of an optimizer is made from.

A Rule holds its hyperparameters (with their checks and defaults), its state
slots (and how they start), its NumPy reference, its class and function
faces (Variant: Adam and AdamW are one rule), and the option grids its tests
and benchmarks run.  fastoptim.functional, fastoptim.reference,
fastoptim.optim, fastoptim.torch and the test/benchmark registry are
generated from the rules; nothing else names a rule's options.

The C side of a rule is csrc/fastoptim/rules/<kernel>.inc.  Its field list
(FO_<NAME>_FIELDS) is the Rule's kernel fields in the same order; the
arguments' common header carries lr, maximize, the step and the grad scale.
A checked step's hyperparameters are the tuple (lr, maximize, *fields).

A rule at the Python level (LBFGS, Muon: BLAS products, closures) has no C
kernel: its `python` (a PythonStep) steps the plan's arrays in Python, with
fused vector kernels for its element-wise work.  Checks, schedules, state
and state_dict are the step engine's, as for every other rule.
"""
import functools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Union

import numpy as np

from .. import _validation

if TYPE_CHECKING:
    from .._engine import StepArrays

# Keys torch.optim's optimizers take that change nothing in fastoptim (every step is one
# fused multi-tensor kernel), with torch's defaults; kept in the groups so checkpoints round-trip.
TORCH_ONLY_DEFAULTS = {"foreach": None, "capturable": False, "differentiable": False, "fused": None}
# How 16-bit (bfloat16, float16) params are stepped, keyword-only options of every class of every
# rule (fastoptim._engine.precision checks them; float32 and float64 params ignore them):
# state_dtype None keeps the state in the param's dtype (torch's fused kernels), "float32" in
# float32; master_weights keeps a float32 copy ("master_param") that the update is applied to;
# stochastic_rounding rounds the param stochastically, with random bits keyed by seed.
PRECISION_DEFAULTS = {"state_dtype": None, "master_weights": False, "stochastic_rounding": False, "seed": 0}


# ---- hyperparameters ----------------------------------------------------------------

@dataclass(frozen=True)
class Real:
    """A real hyperparameter: finite (or infinite too, with allow_inf), within [low, high]
    (open ends where said).

    label: torch.optim's word for it in messages ("learning rate", "epsilon value").
    kernel: False for a class option the kernel never sees (a state's start value).
    message: torch.optim's text for a bad value where it is not "Invalid {label}: {value}",
    "{}" standing for the value ("Learning rate should be >= 0 but is: {}"). Either way
    the error starts with torch's text and our context follows.
    allow_none: None is a value too (Adafactor's eps1: the dtype's machine epsilon); the
    kernel field then holds NaN.
    """
    name: str
    default: float | None
    label: str
    low: float = 0.0
    high: float = math.inf
    low_open: bool = False
    high_open: bool = False
    kernel: bool = True
    message: str | None = None
    allow_none: bool = False
    allow_inf: bool = False

    def check(self, value, where):
        return self.worded_check(value, None if self.message is None else self.message.format(value), where)

    def worded_check(self, value, head, where):
        """The check, a bad value raising `head` (torch's text; None: "Invalid {label}: {value}")
        first and our context after."""
        if value is None and self.allow_none:
            return None
        return _validation.real(value, self.name, low=self.low, high=self.high, low_open=self.low_open,
                                high_open=self.high_open, allow_inf=self.allow_inf, label=self.label,
                                where=where, head=head)


@dataclass(frozen=True)
class Flag:
    """A True/False hyperparameter."""
    name: str
    default: bool = False
    kernel: bool = True

    def check(self, value, where):
        return _validation.flag(value, self.name, where)


@dataclass(frozen=True)
class Pair:
    """A class option that is two kernel fields, as torch's betas = (beta1, beta2).

    message: torch.optim's message for a bad pair, "{}" standing for each part
    ("Invalid eta values: {}, {}"): a bad part then raises it first, our
    context after.
    """
    name: str
    parts: tuple[Real, Real]
    kernel: bool = True
    message: str | None = None

    @property
    def default(self):
        return tuple(part.default for part in self.parts)

    def split(self, value, where):
        try:
            first, second = value
        except (TypeError, ValueError):
            raise TypeError(f"Invalid {self.name}={value!r}{where}; expected a pair "
                            f"({', '.join(part.name for part in self.parts)})") from None
        return first, second


@dataclass(frozen=True)
class Integer:
    """An integer hyperparameter in [low, high] (None: no bound); allow_none for an optional one.

    message: torch's error text for a value above high, if torch has one.
    """
    name: str
    default: object
    label: str
    low: int | None = None
    high: int | None = None
    allow_none: bool = False
    message: str | None = None
    kernel: bool = True

    def check(self, value, where):
        if value is None and self.allow_none:
            return None
        kind = "an integer" + (" or None" if self.allow_none else "")
        value = _validation.integer(value, self.name, minimum=self.low, label=self.label, where=where, kind=kind)
        if self.high is not None and value > self.high:
            head = self.message or f"Invalid {self.label}"
            raise ValueError(f"{head}: {self.name}={value!r}{where}; must be <= {self.high}")
        return value


@dataclass(frozen=True)
class Choice:
    """One of a few values (strings or None).

    message: torch's error text, formatted with the value (e.g. "Adjust
    learning rate function {} is not supported"); ours follows it.
    """
    name: str
    default: object
    choices: tuple
    message: str | None = None

    kernel = True

    def check(self, value, where):
        for choice in self.choices:
            if value is choice or (type(value) is type(choice) and value == choice):
                return choice
        head = self.message.format(value) if self.message else f"Invalid {self.name}"
        raise ValueError(f"{head}: {self.name}={value!r}{where}; expected one of "
                         f"{', '.join(repr(c) for c in self.choices)}")


@dataclass(frozen=True)
class Reals:
    """A tuple of `length` real numbers of any sign, finite (Muon's ns_coefficients)."""
    name: str
    default: tuple
    length: int
    message: str | None = None     # torch's error text for a wrong length

    kernel = True

    def check(self, value, where):
        if not isinstance(value, (tuple, list)) or len(value) != self.length:
            head = self.message or f"Invalid {self.name}"
            raise ValueError(f"{head}: {self.name}={value!r}{where}; expected a tuple of {self.length} "
                             f"real numbers")
        return tuple(_validation.real(v, f"{self.name}[{i}]", label=self.name, where=where)
                     for i, v in enumerate(value))


# A class option, and a kernel field (a Pair is two of them).
Field = Union[Real, Flag, Integer, Choice, Reals]
Option = Union[Real, Flag, Pair, Integer, Choice, Reals]


# The hyperparameters most rules share, with torch's wording.
def learning_rate(default):
    return Real("lr", default, "learning rate")


def epsilon(default):
    return Real("eps", default, "epsilon value")


def betas(beta1, beta2):
    """torch's betas=(beta1, beta2): two coefficients in [0, 1)."""
    return Pair("betas", (Real("beta1", beta1, "beta parameter at index 0", high=1.0, high_open=True),
                          Real("beta2", beta2, "beta parameter at index 1", high=1.0, high_open=True)))


WEIGHT_DECAY = Real("weight_decay", 0.0, "weight_decay value")
MOMENTUM = Real("momentum", 0.0, "momentum value")
MAXIMIZE = Flag("maximize")


# ---- state --------------------------------------------------------------------------

@dataclass(frozen=True)
class Slot:
    """A state array: its key in the optimizer's state (torch's name), in kernel operand order.

    argument: its name as a functional argument, if not the key;
    when: (field, predicate) for a slot only some options use (None: always);
    reason: the condition in words, for "... is required when {reason}";
    fill: its start value: the name of the class option holding it, a number, or None (zeros);
    fill_imag: for a complex param (torch), whether the imaginary parts start at the fill
        too (torch's Adagrad: complex(v, v)) or at zero (torch.full_like: v + 0j);
    positional: whether the functional form takes it positionally;
    scalar: a per-tensor scalar (NAdam's mu_product), kept as torch keeps it: a 0-d
    array of torch's scalar dtype (float32), read and written by the rule's
    per-tensor hook (fo_<name>_tensor) rather than by its loops;
    from_step: for a scalar slot, that its value follows from the step count and the
    options alone (NAdam's mu_product, ASGD's eta and mu), never from the tensor's
    values, so the pieces of a tensor cut into shards that step together keep equal
    copies of it (ZeroRedundancyOptimizer shards such a rule);
    reduced: the param dimension the slot averages away, kept with size 1 (Adafactor's
    row_var: -1, its shape [..., m, 1]); such a slot pairs elements in C order;
    ndims: (low, high), the param ndims that use the slot (None: no bound), as
    Adafactor's row_var serves params of 2 dimensions or more and its variance the others;
    nonnegative: never negative (exp_avg_sq, square_avg, sum): kept in 8 bits as a second
    state, it takes bitsandbytes' unsigned map (fastoptim.blockwise8).
    """
    name: str
    argument: str | None = None
    when: tuple[str, Callable[[Any], object]] | None = None
    reason: str = ""
    fill: str | float | None = None
    fill_imag: bool = False
    positional: bool = True
    scalar: bool = False
    from_step: bool = False
    reduced: int | None = None
    ndims: tuple[int | None, int | None] | None = None
    nonnegative: bool = False

    @property
    def arg(self) -> str:
        return self.argument or self.name

    def used(self, value_of: Callable[[str], Any]) -> bool:
        """Whether options give this slot an array; value_of(field name) -> the option's value."""
        return self.when is None or bool(self.when[1](value_of(self.when[0])))

    def serves(self, ndim: int) -> bool:
        """Whether a param of `ndim` dimensions has this slot (given options that use it)."""
        if self.ndims is None:
            return True
        low, high = self.ndims
        return (low is None or ndim >= low) and (high is None or ndim <= high)

    @property
    def ndim_reason(self):
        """The ndims condition in words, for messages."""
        low, high = self.ndims
        if high is None:
            return f"the param has {low} dimensions or more"
        return f"the param has {high} dimensions or fewer" if low in (None, 0) else \
            f"the param has {low} to {high} dimensions"

    def shape(self, param_shape: Sequence[int]) -> tuple[int, ...]:
        """The shape of this slot's array for a param of `param_shape`."""
        if self.scalar:
            return ()
        shape = list(param_shape)
        if self.reduced is not None:
            shape[self.reduced] = 1
        return tuple(shape)


# ---- rules at the Python level ----------------------------------------------------------

class PythonStep:
    """How a rule without a C kernel steps: Python over the plan's arrays (see _engine).

    Subclasses say:
      step(run): one optimizer step; `run` is an _engine.StepArrays (the params,
        their grads, their state slots, each group's checked hyperparameters,
        a scratch dict kept across steps; for a closure-driven rule also the
        closure's first evaluation, `evaluate()` and the rule's own state).
        A closure-driven rule returns the step's loss.
      run_single(rule, arrays, names, step, hyper, grad_scale): the functional
        form of a per-tensor rule, with _ext.step.run_single's arguments (the
        Rule in place of its kernel number);
      run_closure(params, closure, state, **hyper): the functional form of a
        closure-driven rule.
    closure: step(closure) evaluates the objective itself, maybe many times
      (LBFGS); the NumPy closure returns (loss, grads), torch's returns the loss.
    single_group: only one param group (torch's LBFGS).
    """
    closure = False
    single_group = False

    def step(self, run: "StepArrays") -> Any:
        raise NotImplementedError

    def run_single(self, rule, arrays, names, step, hyper, grad_scale):
        raise NotImplementedError

    def run_closure(self, params, closure, state, **hyper):
        raise NotImplementedError


# ---- faces, demos ---------------------------------------------------------------------

@dataclass(frozen=True)
class Demo:
    """A contender of `python -m fastoptim compare` and `trajectories`.

    options: its hyperparameters in the comparison; trajectories: per test
    function, its lr (a number) or options (a dict) there.
    """
    label: str
    options: dict
    trajectories: dict


@dataclass(frozen=True)
class Variant:
    """One public face of a rule: a class name, a function name, options it fixes.

    AdamW is Adam with decoupled_weight_decay fixed to True and weight_decay 1e-2.
    """
    name: str                       # class name (fastoptim and fastoptim.torch)
    function: str                   # fastoptim.functional / fastoptim.reference name
    summary: str                    # one line, for docstrings and the README's tables
    torch_name: str | None = None   # the torch.optim class (None: torch has none)
    fixed: dict[str, Any] = field(default_factory=dict)
    defaults: dict[str, Any] = field(default_factory=dict)
    bench: dict = field(default_factory=dict)     # options the benchmarks run
    demos: tuple = ()


# ---- the rule -----------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class Rule:
    """One update rule: see the module docstring.

    options: every class option, lr first (the step engine replaces it by a
    schedule's value) and maximize among them (a rule without it only
    minimizes); signature / torch_signature: the NumPy and torch classes'
    argument order, names separated by spaces, "*" before the keyword-only
    ones (torch's may name TORCH_ONLY_DEFAULTS keys);
    reference(param, grad, state, *, step, grad_scale, lr, maximize, **fields):
    the update in plain NumPy, state a dict of the used slots' arrays (a
    closure-driven rule: reference(params, closure, state, *, lr, maximize,
    **fields), one step with torch's state dict).
    """
    kernel: str
    options: tuple["Option", ...]
    signature: str
    torch_signature: str
    state: tuple[Slot, ...]
    reference: object
    variants: tuple
    validate: object = None         # cross-field check(fields: dict, where) after each field's own
    step_in_state: bool = True      # torch keeps a 'step' in each param's state
    eager_state: bool = False       # torch creates the state at construction (Adagrad)
    grid: dict = field(default_factory=dict)   # option name -> values; the product is tested
    grid_valid: object = None       # predicate on an option dict, for combinations torch rejects
    # Options torch's constructor checks as tensors (Adam's lr and betas): with foreach=True
    # (and not capturable) a tensor is refused, and a Pair's parts must be both tensors or neither.
    torch_tensor_checks: tuple[str, ...] = ()
    traffic: int | None = None             # arrays read or written per element and step, where it is not param, grad
                                    # and state read, param and state written (LAMB's two passes)
    matrix_traffic: int | None = None      # the same for params of 2 dimensions or more, where it differs
                                    # (Adafactor's factored state)
    not_in_torch: tuple = ()        # class options of ours that torch.optim's class lacks (keyword-only)
    python: PythonStep | None = None       # a rule at the Python level: no C kernel (see PythonStep)
    ndim: int | None = None                # params must have this many dimensions (Muon: 2), else any
    takes_complex: bool = True      # torch's complex params are stepped (as view_as_real); False: refused with
                                    # torch.optim's RuntimeError, as its class does (Muon, Adafactor)
    fill_defaults: Callable[[dict[str, Any]], None] | None = None
    #                               fill_defaults(defaults): complete a class's defaults in place
    #                               (torch's LBFGS sets max_eval from max_iter)
    # Made from the above by __post_init__:
    fields: tuple["Field", ...] = field(init=False, repr=False)   # the kernel fields after (lr, maximize)
    by_name: dict[str, "Option"] = field(init=False, repr=False)
    slots_by_name: dict[str, Slot] = field(init=False, repr=False)
    worded_pairs: dict[str, Pair] = field(init=False, repr=False)  # a Pair's part name -> the Pair
    check: Callable[..., tuple[Any, ...]] = field(init=False, repr=False)  # memoized _check

    def __post_init__(self):
        fields = []
        for option in self.options:
            if isinstance(option, Pair):
                fields.extend(option.parts)
            elif option.kernel and option.name not in ("lr", "maximize"):
                fields.append(option)
        object.__setattr__(self, "fields", tuple(fields))
        object.__setattr__(self, "by_name", {o.name: o for o in self.options})
        object.__setattr__(self, "slots_by_name", {s.name: s for s in self.state})
        object.__setattr__(self, "worded_pairs", {part.name: option for option in self.options
                                                  if isinstance(option, Pair) and option.message
                                                  for part in option.parts})
        object.__setattr__(self, "check", _memoized(self._check))

    @property
    def closure(self) -> bool:
        """Whether step() takes a closure that it evaluates itself (LBFGS)."""
        return self.python is not None and self.python.closure

    # ---- names ------------------------------------------------------------------
    @property
    def field_names(self) -> tuple[str, ...]:
        """The kernel fields after (lr, maximize), in the C rule's order."""
        return tuple(f.name for f in self.fields)

    def layout(self, torch: bool = False) -> list[tuple[str, bool]]:
        """[(name, keyword_only)] of a class signature."""
        out, keyword_only = [], False
        for name in (self.torch_signature if torch else self.signature).split():
            if name == "*":
                keyword_only = True
            else:
                out.append((name, keyword_only))
        return out

    # ---- checks -------------------------------------------------------------------
    def _check(self, lr, maximize, *args):
        """(lr, maximize, *fields) checked; args: the fields' values, then `where`."""
        *values, where = args
        w = f" ({where})" if where else ""
        by_field = self.by_name
        checked = [by_field["lr"].check(lr, w), self._check_maximize(maximize, w)]
        if self.worded_pairs:
            checked += [self._check_field(f, v, values, w) for f, v in zip(self.fields, values)]
        else:
            checked += [f.check(v, w) for f, v in zip(self.fields, values)]
        if self.validate is not None:
            self.validate(dict(zip(self.field_names, checked[2:])), w)
        return tuple(checked)

    def _check_field(self, field, value, values, w):
        pair = self.worded_pairs.get(field.name)
        if pair is None:
            return field.check(value, w)
        first = self.field_names.index(pair.parts[0].name)
        return field.worded_check(value, pair.message.format(*values[first:first + 2]), w)

    def _check_maximize(self, maximize, where):
        if "maximize" in self.by_name:
            return self.by_name["maximize"].check(maximize, where)
        if maximize is not False:  # a rule without the option (Muon, LBFGS) only minimizes
            raise TypeError(f"Invalid maximize={maximize!r}{where}; this optimizer only minimizes")
        return False

    def check_options(self, options: Mapping[str, Any], lr: Any, where: str = "") -> tuple[Any, ...]:
        """A group's (or a class's) options, checked into (lr, maximize, *fields), at `lr`."""
        w = f" ({where})" if where else ""
        from_pairs: dict[str, Any] = {}
        for option in self.options:
            if isinstance(option, Pair):
                from_pairs.update(zip([p.name for p in option.parts], option.split(options[option.name], w)))
            elif not option.kernel:
                option.check(options[option.name], w)
        values = [from_pairs[f.name] if f.name in from_pairs else options[f.name] for f in self.fields]
        return self.check(lr, options.get("maximize", False), *values, where)

    # ---- state --------------------------------------------------------------------
    def slots(self, options: Mapping[str, Any]) -> tuple[str | None, ...]:
        """The state slots the options use, in operand order; None for the unused ones."""
        return tuple([s.name if s.used(options.__getitem__) else None for s in self.state])

    def param_slots(self, slots: tuple[str | None, ...], ndim: int) -> tuple[str | None, ...]:
        """slots (a group's, from slots()) narrowed to those a param of `ndim` dimensions has."""
        if not self.ndim_slots:
            return slots
        return tuple([name if name is not None and self.slots_by_name[name].serves(ndim) else None
                      for name in slots])

    @property
    def ndim_slots(self) -> bool:
        """Whether some state slot serves params of some ndims only (Adafactor's)."""
        return any(s.ndims is not None for s in self.state)

    def start_value(self, slot: Slot, options: Mapping[str, Any]) -> Any:
        """The value a new array of `slot` starts at."""
        if slot.fill is None:
            return 0.0
        return options[slot.fill] if isinstance(slot.fill, str) else slot.fill

    def slot(self, name: str) -> Slot | None:
        """The state slot called `name`, or None (a key the kernels do not see, as 'step')."""
        return self.slots_by_name.get(name)

    @property
    def special_operands(self) -> bool:
        """Whether some state slot is not shaped like the param (functional forms then check each kind)."""
        return any(s.scalar or s.reduced is not None for s in self.state)


_IMMUTABLE = frozenset([float, int, bool, str, np.float64, np.float32, np.float16, np.int64, np.int32,
                        np.bool_])


def _memoized(check):
    """Remember the checked result of hyperparameters seen before.

    Steps usually repeat the same values, and checking them is most of the
    cost of a small step.  First, the last call's argument objects: the very
    same objects (immutable ones only) give the same result.  Then a typed
    cache of recent values, so True never hits a cached 1.  NaN never equals
    itself, so it is always checked (and rejected); errors are never cached;
    unhashable values go to the check itself, which names them.
    """
    from .._ext.step import same_objects
    cached = functools.lru_cache(maxsize=256, typed=True)(check)
    last = [None]  # (args, result), swapped as one object so threads never mix the two

    @functools.wraps(check)
    def checked(*args):
        entry = last[0]
        if entry is not None and same_objects(args, entry[0]):
            return entry[1]
        try:
            result = cached(*args)
        except TypeError:
            return check(*args)
        if all([type(a) in _IMMUTABLE for a in args]):
            last[0] = (args, result)
        return result
    return checked
