"""Every optimizer face in one list, generated from fastoptim.rules: its class,
functional and reference forms, its torch.optim counterpart and its option
combinations.  Tests, benchmarks and demos are generated from it, so a new
rule appears in all of them with no code of its own there."""
import inspect
import itertools
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import functional, optim, reference
from .rules import PRECISION_DEFAULTS, VARIANTS, Pair


@dataclass(frozen=True, eq=False)
class Spec:
    rule: Any                    # fastoptim.rules.Rule
    variant: Any                 # its face: fastoptim.rules.Variant

    @property
    def name(self):
        """The functional / reference function name."""
        return self.variant.function

    @property
    def cls(self):
        return getattr(optim, self.variant.name)

    @property
    def torch_name(self):
        """The torch.optim (and fastoptim.torch) class name."""
        return self.variant.torch_name or self.variant.name

    def torch_optim(self, torch):
        """torch.optim's class of this face, or None where torch has none (Lion)."""
        return getattr(torch.optim, self.variant.torch_name) if self.variant.torch_name else None

    @property
    def functional(self):
        return getattr(functional, self.name)

    @property
    def reference(self):
        return getattr(reference, self.name)

    @property
    def state(self):
        """The positional state-array arguments of the functional form."""
        return tuple(slot.arg for slot in self.rule.state if slot.positional)

    @property
    def grid(self):
        return self.rule.grid

    @property
    def demos(self):
        return self.variant.demos

    def bench_options(self):
        """Every class option as the benchmark runs it: the class defaults, overridden by the variant's bench."""
        accepted = inspect.signature(self.cls).parameters
        defaults = self.cls([np.zeros(1)], **self.variant.bench).defaults
        # the 16-bit options at their defaults are fastoptim's own: torch.optim does not take them
        return {k: v for k, v in defaults.items() if k in accepted and k not in PRECISION_DEFAULTS}

    def bytes_per_element(self, itemsize, ndim=1):
        """Memory traffic of one step per element of a param of `ndim` dimensions: param, grad and
        state read, param and state written (per-tensor scalars and factored state are not per element)."""
        traffic = self.rule.traffic
        if ndim >= 2 and self.rule.matrix_traffic is not None:
            traffic = self.rule.matrix_traffic
        if traffic is not None:
            return traffic * itemsize
        positional, keyword = self.new_state(np.zeros((1,) * ndim), self.bench_options())
        arrays = [a for a in positional + list(keyword.values()) if a is not None and a.ndim]
        return (3 + 2 * len(arrays)) * itemsize

    def option_sets(self):
        """Every valid combination of the grid's options (class keyword arguments)."""
        names = list(self.grid)
        for values in itertools.product(*(self.grid[n] for n in names)):
            options = dict(zip(names, values))
            if self.rule.grid_valid is None or self.rule.grid_valid(options):
                yield options

    def functional_kwargs(self, options):
        """The functional form's hyperparameters for class options."""
        kwargs = {}
        for name, value in options.items():
            option = self.rule.by_name[name]
            if isinstance(option, Pair):
                kwargs.update(zip([part.name for part in option.parts], value))
            elif option.kernel and name not in self.variant.fixed:
                kwargs[name] = value
        return kwargs

    def new_state(self, param, options):
        """Positional and keyword state arrays for the functional form, as the class starts them."""
        def value_of(name):
            return options[name] if name in options else self.rule.by_name[name].default

        def new(slot):
            fill = self.rule.start_value(slot, {n: value_of(n) for n in (slot.fill,) if isinstance(n, str)})
            if slot.scalar:
                return np.array(fill, dtype=np.float32)
            return np.full(slot.shape(param.shape), fill, dtype=param.dtype)

        serves = [slot.serves(np.ndim(param)) for slot in self.rule.state]
        positional = [new(slot) if fits else None for slot, fits in zip(self.rule.state, serves) if slot.positional]
        keyword = {slot.arg: new(slot) for slot, fits in zip(self.rule.state, serves)
                   if not slot.positional and slot.used(value_of) and fits}
        return positional, keyword


# The faces of the C-kernel rules: the registry-driven tests, benchmarks and demos iterate these.
SPECS = tuple(Spec(rule, variant) for rule, variant in VARIANTS if rule.python is None)
# Rules at the Python level (Muon, LBFGS: BLAS products, closures) have tests of their own.
PYTHON_SPECS = tuple(Spec(rule, variant) for rule, variant in VARIANTS if rule.python is not None)
# Every face with demo settings, the Python-level rules' too: the contenders of compare and trajectories.
DEMO_SPECS = tuple(Spec(rule, variant) for rule, variant in VARIANTS if variant.demos)
BY_NAME = {spec.name: spec for spec in SPECS}
# The faces torch.optim has too (LAMB has none): what the torch comparisons iterate.
TORCH_SPECS = tuple(spec for spec in SPECS if spec.variant.torch_name)
