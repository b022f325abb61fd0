"""Adadelta (torch.optim.Adadelta); C: csrc/fastoptim/rules/adadelta.inc."""
import numpy as np

from ._numpy import signed_grad
from ._rule import MAXIMIZE, WEIGHT_DECAY, Demo, Real, Rule, Slot, Variant, epsilon, learning_rate

FLAGS = (False, True)


def reference(param, grad, state, *, step, grad_scale, lr, maximize, rho, eps, weight_decay):
    d = signed_grad(grad, maximize, grad_scale)
    if weight_decay != 0:
        d = d + weight_decay * param
    square_avg, acc_delta = state["square_avg"], state["acc_delta"]
    square_avg *= rho
    square_avg += (1 - rho) * d * d
    std = np.sqrt(square_avg + eps)
    delta = np.sqrt(acc_delta + eps) / std * d
    acc_delta *= rho
    acc_delta += (1 - rho) * delta * delta
    param += -lr * delta


# Adadelta's demo eps is raised from torch's 1e-6: with it, the first steps are
# ~sqrt(eps) long and the short runs of the demos never get going.
ADADELTA = Rule(
    kernel="adadelta",
    options=(
        learning_rate(1.0),
        Real("rho", 0.9, "rho value", high=1.0),
        epsilon(1e-6),
        WEIGHT_DECAY,
        MAXIMIZE,
    ),
    signature="lr rho eps weight_decay * maximize",
    torch_signature="lr rho eps weight_decay foreach * capturable maximize differentiable",
    state=(Slot("square_avg"), Slot("acc_delta")),
    reference=reference,
    variants=(Variant(
        "Adadelta", "adadelta", "Adadelta", torch_name="Adadelta",
        demos=(Demo("Adadelta", dict(lr=1.0, eps=1e-4),
                    dict(quadratic={"lr": 1.0, "eps": 1e-2}, ill_conditioned={"lr": 1.0, "eps": 1e-2},
                         saddle={"lr": 1.0, "eps": 1e-2}, rosenbrock=1.0, x_cos_pi_x=1.0)),)),),
    grid=dict(lr=(1.0,), rho=(0.9, 0.3), weight_decay=(0.0, 0.1), maximize=FLAGS),
)
