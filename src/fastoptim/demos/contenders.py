"""The contenders of the demos, taken from the registry: every face of every rule
(fastoptim.rules) with the demo settings its Variant gives, in registry order.

The demos drive every contender alike through what its rule says: a rule for params of
one ndim (Muon: matrices) sees views of that many dimensions of the problem's arrays,
and a closure-driven rule (LBFGS) steps with a closure evaluating the problem."""
import os
from dataclasses import dataclass

from .._registry import DEMO_SPECS

PLOT_HELP = "pip install 'fastoptim[plot]' (or matplotlib)"


@dataclass(frozen=True)
class Contender:
    """An optimizer of the comparison: its label, class and hyperparameters."""
    label: str
    cls: type
    options: dict
    ndim: int | None = None   # the rule's: its params have this many dimensions (None: any)
    closure: bool = False     # the rule's step takes a closure (else grads)

    def make(self, params, **overrides):
        """The optimizer over params as problem() gives them."""
        return self.cls(params, **{**self.options, **overrides})

    def problem(self, params, loss_and_grad):
        """(params, loss_and_grad) as this contender's optimizer takes them: each array as a view
        of the rule's ndim (the same memory), loss_and_grad(params, *args) taking and giving
        those shapes; unchanged for a rule that takes any ndim."""
        if self.ndim is None:
            return params, loss_and_grad
        ndim = self.ndim
        views = _tree_map(lambda a: _as_ndim(a, ndim), params)

        def shaped_loss_and_grad(shaped, *args):
            loss, grads = loss_and_grad(_tree_map(lambda v, a: v.reshape(a.shape), shaped, params), *args)
            return loss, _tree_map(lambda g: _as_ndim(g, ndim), grads)
        return views, shaped_loss_and_grad

    def step(self, optimizer, params, loss_and_grad):
        """One step of optimizer on loss_and_grad(params) -> (loss, grads)."""
        if self.closure:
            optimizer.step(lambda: loss_and_grad(params))
        else:
            optimizer.step(loss_and_grad(params)[1])

    def describe(self, **overrides):
        return ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                         for k, v in {**self.options, **overrides}.items())


def _as_ndim(array, ndim):
    """A view of array with ndim dimensions: leading 1s added, or trailing dimensions merged."""
    if array.ndim < ndim:
        return array.reshape((1,) * (ndim - array.ndim) + array.shape)
    return array.reshape(array.shape[:ndim - 1] + (-1,))


def _tree_map(fn, tree, *others):
    """fn over the arrays of a list, tuple or dict of arrays (others: trees of the same structure)."""
    if isinstance(tree, dict):
        return {k: fn(v, *(o[k] for o in others)) for k, v in tree.items()}
    return [fn(v, *o) for v, *o in zip(tree, *others)]


CONTENDERS = tuple(Contender(demo.label, spec.cls, dict(demo.options), spec.rule.ndim, spec.rule.closure)
                   for spec in DEMO_SPECS for demo in spec.demos)
# Per contender label: its lr (a number) or options (a dict) on each test function.
TRAJECTORY_OPTIONS = {demo.label: dict(demo.trajectories) for spec in DEMO_SPECS for demo in spec.demos}


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
