"""Adamax (torch.optim.Adamax): Adam with the infinity norm; C: csrc/fastoptim/rules/adamax.inc."""
import numpy as np

from ._numpy import lerp, signed_grad
from ._rule import MAXIMIZE, WEIGHT_DECAY, Demo, Rule, Slot, Variant, betas, epsilon, learning_rate

FLAGS = (False, True)


def reference(param, grad, state, *, step, grad_scale, lr, maximize, beta1, beta2, eps, weight_decay):
    d = signed_grad(grad, maximize, grad_scale)
    if weight_decay != 0:
        d = d + weight_decay * param
    exp_avg, exp_inf = state["exp_avg"], state["exp_inf"]
    lerp(exp_avg, d, 1 - beta1)
    # torch.maximum propagates a NaN from either side, as np.maximum does
    np.maximum(exp_inf * beta2, np.abs(d) + eps, out=exp_inf)
    clr = lr / (1 - beta1**step)
    param += -clr * exp_avg / exp_inf


ADAMAX = Rule(
    kernel="adamax",
    options=(
        learning_rate(2e-3),
        betas(0.9, 0.999),
        epsilon(1e-8),
        WEIGHT_DECAY,
        MAXIMIZE,
    ),
    signature="lr betas eps weight_decay * maximize",
    torch_signature="lr betas eps weight_decay foreach * maximize differentiable capturable",
    state=(Slot("exp_avg"), Slot("exp_inf")),
    reference=reference,
    variants=(Variant(
        "Adamax", "adamax", "Adamax: Adam with the infinity norm of past gradients", torch_name="Adamax",
        demos=(Demo("Adamax", dict(lr=0.02), dict(quadratic=0.5, ill_conditioned=0.5, saddle=0.1, rosenbrock=0.05,
                                                   x_cos_pi_x=0.2)),)),),
    # beta1 = 0.3 takes lerp's large-weight branch (1 - beta1 >= 0.5)
    grid=dict(lr=(0.01,), betas=((0.9, 0.999), (0.3, 0.9)), weight_decay=(0.0, 0.1), maximize=FLAGS),
)
