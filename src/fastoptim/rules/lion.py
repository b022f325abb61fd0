"""Lion (Chen et al. 2023; not in torch.optim): issue 12's formulas and defaults; C: csrc/fastoptim/rules/lion.inc.

Per element, with c = beta1 m + (1 - beta1) g: p <- p (1 - lr wd); p <- p - lr sign(c);
m <- beta2 m + (1 - beta2) g.  sign is torch.sign's (0 at 0 and NaN), as lion-pytorch's.
"""
from ._numpy import signed_grad, torch_sign
from ._rule import MAXIMIZE, WEIGHT_DECAY, Demo, Rule, Slot, Variant, betas, learning_rate

FLAGS = (False, True)


def reference(param, grad, state, *, step, grad_scale, lr, maximize, beta1, beta2, weight_decay):
    d = signed_grad(grad, maximize, grad_scale)
    exp_avg = state["exp_avg"]
    c = beta1 * exp_avg + (1 - beta1) * d
    if weight_decay != 0:
        param *= 1 - lr * weight_decay
    param += -lr * torch_sign(c)
    exp_avg *= beta2
    exp_avg += (1 - beta2) * d


LION = Rule(
    kernel="lion",
    options=(
        learning_rate(1e-4),
        betas(0.9, 0.99),
        WEIGHT_DECAY,
        MAXIMIZE,
    ),
    signature="lr betas weight_decay * maximize",
    torch_signature="lr betas weight_decay * maximize",
    state=(Slot("exp_avg"),),
    reference=reference,
    step_in_state=False,
    variants=(Variant(
        "Lion", "lion", "Lion: signed steps of an interpolated momentum, decoupled weight decay",
        demos=(Demo("Lion", dict(lr=0.01), dict(quadratic=0.1, ill_conditioned=0.1, saddle=0.05, rosenbrock=0.01,
                                                x_cos_pi_x=0.05)),)),),
    grid=dict(lr=(0.01,), betas=((0.9, 0.99), (0.3, 0.6)), weight_decay=(0.0, 0.1), maximize=FLAGS),
)
