"""RMSprop with centering and momentum (torch.optim.RMSprop); C: csrc/fastoptim/rules/rmsprop.inc."""
import numpy as np

from ._numpy import lerp, signed_grad
from ._rule import MAXIMIZE, MOMENTUM, WEIGHT_DECAY, Demo, Flag, Real, Rule, Slot, Variant, epsilon, learning_rate

FLAGS = (False, True)


def reference(param, grad, state, *, step, grad_scale, lr, maximize, alpha, eps, weight_decay, momentum,
              centered):
    d = signed_grad(grad, maximize, grad_scale)
    if weight_decay != 0:
        d = d + weight_decay * param
    square_avg = state["square_avg"]
    square_avg *= alpha
    square_avg += (1 - alpha) * d * d
    if centered:
        grad_avg = state["grad_avg"]
        lerp(grad_avg, d, 1 - alpha)
        avg = np.sqrt(square_avg + -1.0 * grad_avg * grad_avg)
    else:
        avg = np.sqrt(square_avg)
    avg += eps
    if momentum > 0:
        buf = state["momentum_buffer"]
        buf *= momentum
        buf += d / avg
        param += -lr * buf
    else:
        param += -lr * d / avg


RMSPROP = Rule(
    kernel="rmsprop",
    options=(
        learning_rate(1e-2),
        Real("alpha", 0.99, "alpha value"),
        epsilon(1e-8),
        WEIGHT_DECAY,
        MOMENTUM,
        Flag("centered"),
        MAXIMIZE,
    ),
    signature="lr alpha eps weight_decay momentum centered * maximize",
    torch_signature="lr alpha eps weight_decay momentum centered capturable foreach maximize differentiable",
    state=(Slot("square_avg", nonnegative=True),
           Slot("momentum_buffer", when=("momentum", lambda m: m > 0), reason="momentum > 0", positional=False),
           Slot("grad_avg", when=("centered", bool), reason="centered=True", positional=False)),
    reference=reference,
    variants=(Variant(
        "RMSprop", "rmsprop", "RMSprop with optional momentum and centering", torch_name="RMSprop",
        demos=(Demo("RMSprop", dict(lr=0.01), dict(quadratic=0.1, ill_conditioned=0.1, saddle=0.05, rosenbrock=0.01,
                                                    x_cos_pi_x=0.05)),)),),
    grid=dict(lr=(0.01,), alpha=(0.99, 0.3), momentum=(0.0, 0.5), centered=FLAGS, weight_decay=(0.0, 0.1),
              maximize=FLAGS),
)
