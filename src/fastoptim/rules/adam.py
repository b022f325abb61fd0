"""Adam, AMSGrad and AdamW (torch.optim.Adam, torch.optim.AdamW); C: csrc/fastoptim/rules/adam.inc."""
import numpy as np

from ._numpy import lerp, signed_grad
from ._rule import MAXIMIZE, WEIGHT_DECAY, Demo, Flag, Rule, Slot, Variant, betas, epsilon, learning_rate

FLAGS = (False, True)


def reference(param, grad, state, *, step, grad_scale, lr, maximize, beta1, beta2, eps, weight_decay, amsgrad,
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
    bias_correction1 = 1 - beta1**step
    bias_correction2 = 1 - beta2**step
    step_size = lr / bias_correction1
    bias_correction2_sqrt = bias_correction2**0.5
    if amsgrad:
        maximum = state["max_exp_avg_sq"]
        # torch.maximum: NaN in either propagates; of equal values (+0 and -0), the first
        # (np.maximum takes the second)
        np.copyto(maximum, exp_avg_sq, where=~((maximum >= exp_avg_sq) | np.isnan(maximum)))
        denom = np.sqrt(maximum) / bias_correction2_sqrt + eps
    else:
        denom = np.sqrt(exp_avg_sq) / bias_correction2_sqrt + eps
    param += -step_size * exp_avg / denom


GRID = dict(lr=(0.01,), betas=((0.9, 0.999), (0.3, 0.9)), weight_decay=(0.0, 0.1), amsgrad=FLAGS, maximize=FLAGS)

ADAM = Rule(
    kernel="adam",
    options=(
        learning_rate(1e-3),
        betas(0.9, 0.999),
        epsilon(1e-8),
        WEIGHT_DECAY,
        Flag("amsgrad"),
        MAXIMIZE,
        Flag("decoupled_weight_decay"),
    ),
    signature="lr betas eps weight_decay amsgrad * maximize decoupled_weight_decay",
    torch_signature=("lr betas eps weight_decay amsgrad * foreach maximize capturable differentiable fused "
                     "decoupled_weight_decay"),
    state=(Slot("exp_avg"), Slot("exp_avg_sq", nonnegative=True),
           Slot("max_exp_avg_sq", when=("amsgrad", bool), reason="amsgrad=True", positional=False,
                nonnegative=True)),
    reference=reference,
    variants=(
        Variant("Adam", "adam", "Adam (and AMSGrad); L2 weight decay added to the gradient", torch_name="Adam",
                demos=(Demo("Adam", dict(lr=0.01), dict(quadratic=0.5, ill_conditioned=0.5, saddle=0.1,
                                                         rosenbrock=0.05, x_cos_pi_x=0.2)),)),
        Variant("AdamW", "adamw", "AdamW: decoupled weight decay, ``param *= 1 - lr * weight_decay``",
                torch_name="AdamW", fixed=dict(decoupled_weight_decay=True), defaults=dict(weight_decay=1e-2),
                demos=(Demo("AdamW", dict(lr=0.01, weight_decay=0.01),
                            dict(quadratic=0.5, ill_conditioned=0.5, saddle=0.1, rosenbrock=0.05,
                                 x_cos_pi_x=0.2)),)),
    ),
    grid=GRID,
    torch_tensor_checks=("lr", "betas"),
)
