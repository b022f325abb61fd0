"""NAdam (torch.optim.NAdam), with decoupled weight decay; C: csrc/fastoptim/rules/nadam.inc.

mu_product, the running product of the momentum schedule, is a per-tensor
scalar kept as torch keeps it: a 0-d float32 array (float64 after loading a
float64 param's checkpoint, as torch casts it), multiplied in its own dtype.
Keeping it in double instead moves float64 results 2e-7 away from torch.
"""
import numpy as np

from ._numpy import lerp, signed_grad
from ._rule import (MAXIMIZE, WEIGHT_DECAY, Demo, Flag, Pair, Real, Rule, Slot, Variant, epsilon, learning_rate)

FLAGS = (False, True)


def reference(param, grad, state, *, step, grad_scale, lr, maximize, beta1, beta2, eps, weight_decay,
              momentum_decay, decoupled_weight_decay):
    d = signed_grad(grad, maximize, grad_scale)
    if weight_decay != 0:
        if decoupled_weight_decay:
            param *= 1 - lr * weight_decay
        else:
            d = d + weight_decay * param
    mu = beta1 * (1.0 - 0.5 * (0.96 ** (step * momentum_decay)))
    mu_next = beta1 * (1.0 - 0.5 * (0.96 ** ((step + 1) * momentum_decay)))
    mu_product = state["mu_product"]
    mu_product *= mu  # in mu_product's dtype, mu rounded to it first (a 0-d tensor times a Python float)
    exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
    lerp(exp_avg, d, 1 - beta1)
    exp_avg_sq *= beta2
    exp_avg_sq += (1 - beta2) * d * d
    denom = np.sqrt(exp_avg_sq / (1 - beta2**step)) + eps
    product = float(mu_product)
    # two addcdiv_ in turn: param is rounded in between
    param += (-lr * (1.0 - mu) / (1.0 - product)) * d / denom
    param += ((-lr * mu_next) / (1.0 - product * mu_next)) * exp_avg / denom


NADAM = Rule(
    kernel="nadam",
    options=(
        learning_rate(2e-3),
        Pair("betas", (Real("beta1", 0.9, "beta parameter at index 0", high=1.0, high_open=True),
                       Real("beta2", 0.999, "beta parameter at index 1", high=1.0, high_open=True))),
        epsilon(1e-8),
        WEIGHT_DECAY,
        Real("momentum_decay", 4e-3, "momentum_decay value"),
        Flag("decoupled_weight_decay"),
        MAXIMIZE,
    ),
    signature="lr betas eps weight_decay momentum_decay decoupled_weight_decay * maximize",
    torch_signature=("lr betas eps weight_decay momentum_decay decoupled_weight_decay * foreach maximize capturable "
                     "differentiable"),
    state=(Slot("exp_avg"), Slot("exp_avg_sq"), Slot("mu_product", scalar=True, fill=1.0, from_step=True)),
    reference=reference,
    variants=(Variant(
        "NAdam", "nadam", "NAdam: Adam with Nesterov momentum (and decoupled weight decay)", torch_name="NAdam",
        demos=(Demo("NAdam", dict(lr=0.01), dict(quadratic=0.5, ill_conditioned=0.5, saddle=0.1, rosenbrock=0.05,
                                                  x_cos_pi_x=0.2)),)),),
    grid=dict(lr=(0.01,), betas=((0.9, 0.999), (0.3, 0.9)), weight_decay=(0.0, 0.1), momentum_decay=(0.1,),
              decoupled_weight_decay=FLAGS, maximize=FLAGS),
    grid_valid=lambda o: o["weight_decay"] != 0 or not o["decoupled_weight_decay"],
)
