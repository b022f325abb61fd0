"""LAMB (You et al. 2019) as issue 12 states it; C: csrc/fastoptim/rules/lamb.inc.

Adam's bias-corrected direction r = m_hat / (sqrt(v_hat) + eps) + wd * p (the bias
corrections applied as multiplications by their reciprocals, as the kernel does),
scaled per tensor by the trust ratio ``||p|| / ||r||`` (1 unless both norms are
> 0).  torch.optim has no LAMB.  The kernel goes over each tensor twice: the
first pass updates m and v and sums p^2 and r^2 in block_sum_squares' fixed
order over sum_blocks(n) blocks (so the norms never depend on the thread count), the second recomputes
r and writes p.
"""
import numpy as np

from ._numpy import block_norm, signed_grad, sum_blocks
from ._rule import MAXIMIZE, WEIGHT_DECAY, Demo, Pair, Real, Rule, Slot, Variant, epsilon, learning_rate

FLAGS = (False, True)


def direction(param, exp_avg, exp_avg_sq, step, beta1, beta2, eps, weight_decay):
    """r = (m * (1 / (1 - beta1^t))) / (sqrt(v * (1 / (1 - beta2^t))) + eps) + wd * p, in the dtype
    (the reciprocals in double, then rounded to it)."""
    t = param.dtype.type
    r = (exp_avg * t(1 / (1 - beta1**step))) / (np.sqrt(exp_avg_sq * t(1 / (1 - beta2**step))) + t(eps))
    if weight_decay != 0:
        r = r + t(weight_decay) * param
    return r


def reference(param, grad, state, *, step, grad_scale, lr, maximize, beta1, beta2, eps, weight_decay):
    t = param.dtype.type
    d = signed_grad(grad, maximize, grad_scale)
    exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
    exp_avg[...] = t(beta1) * exp_avg + t(1 - beta1) * d
    exp_avg_sq[...] = t(beta2) * exp_avg_sq + t(1 - beta2) * d * d
    r = direction(param, exp_avg, exp_avg_sq, step, beta1, beta2, eps, weight_decay)
    blocks = sum_blocks(param.size)
    param_norm, direction_norm = block_norm(param, blocks), block_norm(r, blocks)
    trust = param_norm / direction_norm if param_norm > 0 and direction_norm > 0 else 1.0
    param += t(-(lr * trust)) * r


LAMB = Rule(
    kernel="lamb",
    options=(
        learning_rate(1e-3),
        Pair("betas", (Real("beta1", 0.9, "beta parameter at index 0", high=1.0, high_open=True),
                       Real("beta2", 0.999, "beta parameter at index 1", high=1.0, high_open=True))),
        epsilon(1e-6),
        WEIGHT_DECAY,
        MAXIMIZE,
    ),
    signature="lr betas eps weight_decay * maximize",
    torch_signature="lr betas eps weight_decay * maximize",
    state=(Slot("exp_avg"), Slot("exp_avg_sq")),
    reference=reference,
    variants=(Variant(
        "LAMB", "lamb", "LAMB: Adam's direction scaled per tensor by the trust ratio ``||p|| / ||r||``",
        demos=(Demo("LAMB", dict(lr=0.05), dict(quadratic=0.05, ill_conditioned=0.05, saddle=0.05,
                                                 rosenbrock=0.01, x_cos_pi_x=0.05)),)),),
    # pass 0 reads p, g, m, v and writes m, v; pass 1 reads p, m, v and writes p
    traffic=10,
    grid=dict(lr=(0.01,), betas=((0.9, 0.999), (0.3, 0.9)), eps=(1e-6,), weight_decay=(0.0, 0.1), maximize=FLAGS),
)
