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
"""
import functools
import math
from dataclasses import dataclass, field

import numpy as np

from .. import _validation

# Keys torch.optim's optimizers take that change nothing in fastoptim (every step is one
# fused multi-tensor kernel), with torch's defaults; kept in the groups so checkpoints round-trip.
TORCH_ONLY_DEFAULTS = {"foreach": None, "capturable": False, "differentiable": False, "fused": None}


# ---- hyperparameters ----------------------------------------------------------------

@dataclass(frozen=True)
class Real:
    """A real hyperparameter: finite, within [low, high] (open ends where said).

    label: torch.optim's word for it in messages ("learning rate", "epsilon value").
    kernel: False for a class option the kernel never sees (a state's start value).
    """
    name: str
    default: float
    label: str
    low: float = 0.0
    high: float = math.inf
    low_open: bool = False
    high_open: bool = False
    kernel: bool = True

    def check(self, value, where):
        return _validation.real(value, self.name, low=self.low, high=self.high, low_open=self.low_open,
                                high_open=self.high_open, label=self.label, where=where)


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
    """A class option that is two kernel fields, as torch's betas = (beta1, beta2)."""
    name: str
    parts: tuple            # two Real
    kernel: bool = True

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


# The hyperparameters most rules share, with torch's wording.
def learning_rate(default):
    return Real("lr", default, "learning rate")


def epsilon(default):
    return Real("eps", default, "epsilon value")


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
    fill: the class option holding its start value (None: zeros);
    fill_imag: for a complex param (torch), whether the imaginary parts start at the fill
        too (torch's Adagrad: complex(v, v)) or at zero (torch.full_like: v + 0j);
    positional: whether the functional form takes it positionally.
    """
    name: str
    argument: str = None
    when: tuple = None
    reason: str = ""
    fill: str = None
    fill_imag: bool = False
    positional: bool = True

    @property
    def arg(self):
        return self.argument or self.name

    def used(self, value_of):
        """Whether options give this slot an array; value_of(field name) -> the option's value."""
        return self.when is None or bool(self.when[1](value_of(self.when[0])))


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
    torch_name: str = None          # the torch.optim class (None: torch has none)
    fixed: dict = field(default_factory=dict)
    defaults: dict = field(default_factory=dict)
    bench: dict = field(default_factory=dict)     # options the benchmarks run
    demos: tuple = ()


# ---- the rule -----------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class Rule:
    """One update rule: see the module docstring.

    options: every class option, lr first (the step engine replaces it by a
    schedule's value) and maximize among them; signature / torch_signature: the
    NumPy and torch classes' argument order, names separated by spaces, "*"
    before the keyword-only ones (torch's may name TORCH_ONLY_DEFAULTS keys);
    reference(param, grad, state, *, step, grad_scale, lr, maximize, **fields):
    the update in plain NumPy, state a dict of the used slots' arrays.
    """
    kernel: str
    options: tuple
    signature: str
    torch_signature: str
    state: tuple
    reference: object
    variants: tuple
    validate: object = None         # cross-field check(fields: dict, where) after each field's own
    step_in_state: bool = True      # torch keeps a 'step' in each param's state
    eager_state: bool = False       # torch creates the state at construction (Adagrad)
    grid: dict = field(default_factory=dict)   # option name -> values; the product is tested
    grid_valid: object = None       # predicate on an option dict, for combinations torch rejects
    # Options torch's constructor checks as tensors (Adam's lr and betas): with foreach=True
    # (and not capturable) a tensor is refused, and a Pair's parts must be both tensors or neither.
    torch_tensor_checks: tuple = ()

    def __post_init__(self):
        fields = []
        for option in self.options:
            if isinstance(option, Pair):
                fields.extend(option.parts)
            elif option.kernel and option.name not in ("lr", "maximize"):
                fields.append(option)
        object.__setattr__(self, "fields", tuple(fields))
        object.__setattr__(self, "by_name", {o.name: o for o in self.options})
        object.__setattr__(self, "check", _memoized(self._check))

    # ---- names ------------------------------------------------------------------
    @property
    def field_names(self):
        """The kernel fields after (lr, maximize), in the C rule's order."""
        return tuple(f.name for f in self.fields)

    def layout(self, torch=False):
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
        checked = [by_field["lr"].check(lr, w), by_field["maximize"].check(maximize, w)]
        checked += [f.check(v, w) for f, v in zip(self.fields, values)]
        if self.validate is not None:
            self.validate(dict(zip(self.field_names, checked[2:])), w)
        return tuple(checked)

    def check_options(self, options, lr, where=""):
        """A group's (or a class's) options, checked into (lr, maximize, *fields), at `lr`."""
        w = f" ({where})" if where else ""
        from_pairs = {}
        for option in self.options:
            if isinstance(option, Pair):
                from_pairs.update(zip([p.name for p in option.parts], option.split(options[option.name], w)))
            elif not option.kernel:
                option.check(options[option.name], w)
        values = [from_pairs[f.name] if f.name in from_pairs else options[f.name] for f in self.fields]
        return self.check(lr, options["maximize"], *values, where)

    # ---- state --------------------------------------------------------------------
    def slots(self, options):
        """The state slots the options use, in operand order; None for the unused ones."""
        return tuple([s.name if s.used(options.__getitem__) else None for s in self.state])

    def start_value(self, slot, options):
        """The value a new array of `slot` starts at."""
        return 0.0 if slot.fill is None else options[slot.fill]


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
