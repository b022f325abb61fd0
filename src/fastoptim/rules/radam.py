"""RAdam (torch.optim.RAdam): Adam with a rectified variance; C: csrc/fastoptim/rules/radam.inc."""
import numpy as np

from ._numpy import lerp, signed_grad
from ._rule import MAXIMIZE, WEIGHT_DECAY, Demo, Flag, Rule, Slot, Variant, betas, epsilon, learning_rate

FLAGS = (False, True)


def rectification(step, beta2):
    """torch's rect term at this step, or None while rho_t <= 5 (the step is plain momentum then)."""
    rho_inf = 2 / (1 - beta2) - 1
    rho_t = rho_inf - 2 * step * (beta2**step) / (1 - beta2**step)
    if rho_t > 5.0:
        return ((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t)) ** 0.5
    return None


def reference(param, grad, state, *, step, grad_scale, lr, maximize, beta1, beta2, eps, weight_decay,
              decoupled_weight_decay):
    d = signed_grad(grad, maximize, grad_scale)
    if weight_decay != 0:
        if decoupled_weight_decay:
            param *= 1 - lr * weight_decay
        else:
            d = d + weight_decay * param
    exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
    lerp(exp_avg, d, 1 - beta1)
    exp_avg_sq *= beta2
    exp_avg_sq += (1 - beta2) * d * d
    corrected = exp_avg / (1 - beta1**step)
    rect = rectification(step, beta2)
    if rect is None:
        param -= corrected * lr
    else:
        # torch: bias_correction2 ** 0.5 / tensor is tensor.reciprocal() * scalar
        adaptive = (1 / (np.sqrt(exp_avg_sq) + eps)) * (1 - beta2**step) ** 0.5
        param -= corrected * lr * adaptive * rect


RADAM = Rule(
    kernel="radam",
    options=(
        learning_rate(1e-3),
        betas(0.9, 0.999),
        epsilon(1e-8),
        WEIGHT_DECAY,
        Flag("decoupled_weight_decay"),
        MAXIMIZE,
    ),
    signature="lr betas eps weight_decay decoupled_weight_decay * maximize",
    torch_signature="lr betas eps weight_decay decoupled_weight_decay * foreach maximize capturable differentiable",
    state=(Slot("exp_avg"), Slot("exp_avg_sq")),
    reference=reference,
    variants=(Variant(
        "RAdam", "radam", "RAdam: Adam with its variance rectified, momentum steps until it can be",
        torch_name="RAdam",
        # rosenbrock: its first five steps are plain momentum steps of lr * gradient (~200 at the start)
        demos=(Demo("RAdam", dict(lr=0.05), dict(quadratic=0.5, ill_conditioned=0.5, saddle=0.5, rosenbrock=0.005,
                                                  x_cos_pi_x=0.2)),)),),
    # (0.3, 0.9): lerp's large-weight branch (1 - beta1 >= 0.5) and a short rho_inf (19); both rectify from step 6
    grid=dict(lr=(0.01,), betas=((0.9, 0.999), (0.3, 0.9)), weight_decay=(0.0, 0.1), decoupled_weight_decay=FLAGS,
              maximize=FLAGS),
    grid_valid=lambda o: o["weight_decay"] != 0 or not o["decoupled_weight_decay"],  # the flag needs a decay
)
