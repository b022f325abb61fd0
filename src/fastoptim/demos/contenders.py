"""The contenders of the demos, taken from the registry: every face of every rule
(fastoptim.rules) with the demo settings its Variant gives, in registry order."""
import os
from dataclasses import dataclass

from .._registry import SPECS

PLOT_HELP = "pip install 'fastoptim[plot]' (or matplotlib)"


@dataclass(frozen=True)
class Contender:
    """An optimizer of the comparison: its label, class and hyperparameters."""
    label: str
    cls: type
    options: dict

    def make(self, params, **overrides):
        return self.cls(params, **{**self.options, **overrides})

    def describe(self, **overrides):
        return ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                         for k, v in {**self.options, **overrides}.items())


CONTENDERS = tuple(Contender(demo.label, spec.cls, dict(demo.options)) for spec in SPECS for demo in spec.demos)
# Per contender label: its lr (a number) or options (a dict) on each test function.
TRAJECTORY_OPTIONS = {demo.label: dict(demo.trajectories) for spec in SPECS for demo in spec.demos}


def pyplot():
    """matplotlib.pyplot on the Agg backend, or a SystemExit saying how to get it."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SystemExit(f"the plots need matplotlib, which is not installed: {PLOT_HELP}") from None
    return plt


def _output_dir(out):
    os.makedirs(out, exist_ok=True)
    return out


def _colors(plt, n):
    return [plt.get_cmap("tab10")(i % 10) for i in range(n)]
