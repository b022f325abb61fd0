"""Adagrad (torch.optim.Adagrad); C: csrc/fastoptim/rules/adagrad.inc."""
import numpy as np

from ._numpy import signed_grad
from ._rule import MAXIMIZE, WEIGHT_DECAY, Demo, Real, Rule, Slot, Variant, epsilon, learning_rate

FLAGS = (False, True)


def reference(param, grad, state, *, step, grad_scale, lr, maximize, lr_decay, weight_decay, eps):
    d = signed_grad(grad, maximize, grad_scale)
    if weight_decay != 0:
        d = d + weight_decay * param
    clr = lr / (1 + (step - 1) * lr_decay)
    state_sum = state["sum"]
    state_sum += d * d
    std = np.sqrt(state_sum) + eps
    param += -clr * d / std


# torch.optim.Adagrad creates its state when a param is added, not at its first grad.
ADAGRAD = Rule(
    kernel="adagrad",
    eager_state=True,
    options=(
        learning_rate(1e-2),
        Real("lr_decay", 0.0, "lr_decay value"),
        WEIGHT_DECAY,
        Real("initial_accumulator_value", 0.0, "initial_accumulator_value value", kernel=False),
        epsilon(1e-10),
        MAXIMIZE,
    ),
    signature="lr lr_decay weight_decay initial_accumulator_value eps * maximize",
    torch_signature="lr lr_decay weight_decay initial_accumulator_value eps foreach * maximize differentiable fused",
    state=(Slot("sum", argument="state_sum", fill="initial_accumulator_value", fill_imag=True,
                nonnegative=True),),
    reference=reference,
    variants=(Variant(
        "Adagrad", "adagrad", "Adagrad", torch_name="Adagrad",
        demos=(Demo("Adagrad", dict(lr=0.1), dict(quadratic=1.0, ill_conditioned=1.0, saddle=0.5, rosenbrock=0.3,
                                                   x_cos_pi_x=0.5)),)),),
    grid=dict(lr=(0.05,), lr_decay=(0.0, 0.01), weight_decay=(0.0, 0.1), initial_accumulator_value=(0.0, 0.1),
              maximize=FLAGS),
)
