"""ASGD, averaged SGD (torch.optim.ASGD); C: csrc/fastoptim/rules/asgd.inc.

eta (the step size) and mu (the averaging weight) are per-tensor scalars
kept as torch keeps them: 0-d float32 arrays, set at the end of each step
for the next one (torch.as_tensor of a Python float: float32).  Keeping eta
in double instead moves float64 results 3e-8 away from torch.
"""
import numpy as np

from ._numpy import signed_grad
from ._rule import MAXIMIZE, WEIGHT_DECAY, Demo, Real, Rule, Slot, Variant, learning_rate

FLAGS = (False, True)


def reference(param, grad, state, *, step, grad_scale, lr, maximize, lambd, alpha, t0, weight_decay):
    d = signed_grad(grad, maximize, grad_scale)
    if weight_decay != 0:
        d = d + weight_decay * param
    eta, mu, ax = state["eta"], state["mu"], state["ax"]
    eta_value = float(eta)
    param *= 1 - lambd * eta_value
    param += -eta_value * d
    if float(mu) != 1:
        ax += (param - ax) * param.dtype.type(mu)
    else:
        ax[...] = param
    # the next step's eta and mu: torch.as_tensor (float32) copied into the state's dtype.  In IEEE
    # doubles as the kernel's pow (Python floats raise on 0 ** -a and go complex below 0).
    with np.errstate(all="ignore"):
        eta[...] = np.float32(np.float64(lr) / np.float64(1 + lambd * lr * step) ** alpha)
    mu[...] = np.float32(1 / max(1, step - t0))


def _finite(name, default, label):
    """An option torch does not check: any finite number (torch's wording for a bad one)."""
    return Real(name, default, label, low=-np.inf)


ASGD = Rule(
    kernel="asgd",
    options=(
        learning_rate(1e-2),
        _finite("lambd", 1e-4, "lambd value"),
        _finite("alpha", 0.75, "alpha value"),
        _finite("t0", 1e6, "t0 value"),
        WEIGHT_DECAY,
        MAXIMIZE,
    ),
    signature="lr lambd alpha t0 weight_decay * maximize",
    torch_signature="lr lambd alpha t0 weight_decay foreach maximize differentiable capturable",
    state=(Slot("ax"), Slot("eta", scalar=True, fill="lr", from_step=True),
           Slot("mu", scalar=True, fill=1.0, from_step=True)),
    reference=reference,
    variants=(Variant(
        "ASGD", "asgd", "ASGD: SGD with iterate averaging (the average kept in ax)", torch_name="ASGD",
        demos=(Demo("ASGD", dict(lr=0.1), dict(quadratic=0.1, ill_conditioned=0.4, saddle=0.1,
                                                         rosenbrock=1e-3, x_cos_pi_x=0.05)),)),),
    # t0=0: averaging from the third step on, within the kernel tests' three steps
    grid=dict(lr=(0.05,), lambd=(0.01,), alpha=(0.75,), t0=(1e6, 0.0), weight_decay=(0.0, 0.1), maximize=FLAGS),
)
