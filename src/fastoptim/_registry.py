"""Every optimizer in one list: its class, functional and reference forms, its
torch.optim counterpart and its option combinations.  Tests and benchmarks are
generated from it, so a new optimizer is added here once."""
import inspect
import itertools
from dataclasses import dataclass, field

import numpy as np

from . import functional, optim, reference


@dataclass(frozen=True)
class Spec:
    name: str                    # functional / reference function name
    cls: type                    # stateful class
    torch_name: str              # torch.optim class name
    state: tuple                 # positional state-array arguments of the functional form
    grid: dict                   # option name -> values; the product is tested
    valid: object = None         # predicate on an option dict, for combinations torch rejects
    keyword_state: dict = field(default_factory=dict)  # keyword state array -> predicate on options
    defaults: dict = field(default_factory=dict)       # functional hyperparameters the tests fix
    bench: dict = field(default_factory=dict)          # class options the benchmark uses

    @property
    def functional(self):
        return getattr(functional, self.name)

    @property
    def reference(self):
        return getattr(reference, self.name)

    def bench_options(self):
        """Every class option as the benchmark runs it: the class defaults, overridden by `bench`."""
        accepted = inspect.signature(self.cls).parameters
        defaults = self.cls([np.zeros(1)], **self.bench).defaults
        return {k: v for k, v in defaults.items() if k in accepted}

    def bytes_per_element(self, itemsize):
        """Memory traffic of one step per element: param, grad and state read, param and state written."""
        positional, keyword = self.new_state(np.zeros(1), self.bench_options())
        return (3 + 2 * (len(positional) + len(keyword))) * itemsize

    def option_sets(self):
        """Every valid combination of the grid's options (class keyword arguments)."""
        names = list(self.grid)
        for values in itertools.product(*(self.grid[n] for n in names)):
            options = dict(zip(names, values))
            if self.valid is None or self.valid(options):
                yield options

    def functional_kwargs(self, options):
        """The functional form's hyperparameters for class options."""
        kwargs = dict(self.defaults)
        kwargs.update(options)
        if "betas" in kwargs:
            kwargs["beta1"], kwargs["beta2"] = kwargs.pop("betas")
        kwargs.pop("initial_accumulator_value", None)
        kwargs.pop("decoupled_weight_decay", None)  # the function's name (adam/adamw) says it
        return kwargs

    def new_state(self, param, options):
        """Positional and keyword state arrays for the functional form, as the class starts them."""
        init = options.get("initial_accumulator_value", 0.0)
        positional = [np.full_like(param, init) if name == "state_sum" else np.zeros_like(param)
                      for name in self.state]
        keyword = {name: np.zeros_like(param) for name, needed in self.keyword_state.items() if needed(options)}
        return positional, keyword


FLAGS = (False, True)

SPECS = (
    Spec("sgd", optim.SGD, "SGD", ("momentum_buffer",),
         grid=dict(lr=(0.05,), momentum=(0.0, 0.9), dampening=(0.0, 0.5), nesterov=FLAGS,
                   weight_decay=(0.0, 0.1), maximize=FLAGS),
         bench=dict(lr=0.01, momentum=0.9),
         valid=lambda o: (o["momentum"] > 0 or (o["dampening"] == 0 and not o["nesterov"]))
         and not (o["nesterov"] and o["dampening"] != 0)),
    Spec("adagrad", optim.Adagrad, "Adagrad", ("state_sum",),
         grid=dict(lr=(0.05,), lr_decay=(0.0, 0.01), weight_decay=(0.0, 0.1),
                   initial_accumulator_value=(0.0, 0.1), maximize=FLAGS),
         defaults=dict(eps=1e-10)),
    Spec("rmsprop", optim.RMSprop, "RMSprop", ("square_avg",),
         grid=dict(lr=(0.01,), alpha=(0.99, 0.3), momentum=(0.0, 0.5), centered=FLAGS,
                   weight_decay=(0.0, 0.1), maximize=FLAGS),
         keyword_state={"momentum_buffer": lambda o: o["momentum"] > 0,
                        "grad_avg": lambda o: o["centered"]},
         defaults=dict(eps=1e-8)),
    Spec("adadelta", optim.Adadelta, "Adadelta", ("square_avg", "acc_delta"),
         grid=dict(lr=(1.0,), rho=(0.9, 0.3), weight_decay=(0.0, 0.1), maximize=FLAGS),
         defaults=dict(eps=1e-6)),
    Spec("adam", optim.Adam, "Adam", ("exp_avg", "exp_avg_sq"),
         grid=dict(lr=(0.01,), betas=((0.9, 0.999), (0.3, 0.9)), weight_decay=(0.0, 0.1),
                   amsgrad=FLAGS, maximize=FLAGS),
         keyword_state={"max_exp_avg_sq": lambda o: o["amsgrad"]},
         defaults=dict(eps=1e-8)),
    Spec("adamw", optim.AdamW, "AdamW", ("exp_avg", "exp_avg_sq"),
         grid=dict(lr=(0.01,), betas=((0.9, 0.999), (0.3, 0.9)), weight_decay=(0.0, 0.1),
                   amsgrad=FLAGS, maximize=FLAGS),
         keyword_state={"max_exp_avg_sq": lambda o: o["amsgrad"]},
         defaults=dict(eps=1e-8)),
)

BY_NAME = {spec.name: spec for spec in SPECS}
