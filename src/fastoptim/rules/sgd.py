"""SGD with momentum, dampening and Nesterov momentum (torch.optim.SGD); C: csrc/fastoptim/rules/sgd.inc."""
import math

from ._numpy import signed_grad
from ._rule import MAXIMIZE, MOMENTUM, WEIGHT_DECAY, Demo, Flag, Real, Rule, Slot, Variant, learning_rate

FLAGS = (False, True)


def reference(param, grad, state, *, step, grad_scale, lr, maximize, momentum, dampening, weight_decay,
              nesterov):
    d = signed_grad(grad, maximize, grad_scale)
    if weight_decay != 0:
        d = d + weight_decay * param
    if momentum != 0:
        buf = state["momentum_buffer"]
        if step == 1:
            buf[...] = d
        else:
            buf *= momentum
            buf += (1 - dampening) * d
        d = d + momentum * buf if nesterov else buf
    param += -lr * d


def validate(fields, where):
    if fields["nesterov"] and (fields["momentum"] <= 0 or fields["dampening"] != 0):
        raise ValueError(f"Nesterov momentum requires a momentum and zero dampening{where}: "
                         f"got momentum={fields['momentum']!r}, dampening={fields['dampening']!r}")


SGD = Rule(
    kernel="sgd",
    options=(
        learning_rate(1e-3),
        MOMENTUM,
        Real("dampening", 0.0, "dampening value", low=-math.inf),
        WEIGHT_DECAY,
        Flag("nesterov"),
        MAXIMIZE,
    ),
    signature="lr momentum dampening weight_decay nesterov * maximize",
    torch_signature="lr momentum dampening weight_decay nesterov * maximize foreach differentiable fused",
    # At step 1 the buffer is set to the gradient, as torch does; its previous content is not read.
    state=(Slot("momentum_buffer", when=("momentum", lambda m: m != 0), reason="momentum != 0"),),
    reference=reference,
    validate=validate,
    step_in_state=False,
    variants=(Variant(
        "SGD", "sgd", "stochastic gradient descent with momentum, dampening and Nesterov momentum",
        torch_name="SGD", bench=dict(lr=0.01, momentum=0.9),
        demos=(
            Demo("SGD", dict(lr=0.1), dict(quadratic=0.1, ill_conditioned=0.4, saddle=0.1, rosenbrock=1e-3,
                                           x_cos_pi_x=0.05)),
            Demo("Momentum", dict(lr=0.05, momentum=0.9),
                 dict(quadratic=0.05, ill_conditioned=0.1, saddle=0.05, rosenbrock=2e-4, x_cos_pi_x=0.05)),
            Demo("Nesterov", dict(lr=0.05, momentum=0.9, nesterov=True),
                 dict(quadratic=0.05, ill_conditioned=0.1, saddle=0.05, rosenbrock=2e-4, x_cos_pi_x=0.05)),
        )),),
    grid=dict(lr=(0.05,), momentum=(0.0, 0.9), dampening=(0.0, 0.5), nesterov=FLAGS, weight_decay=(0.0, 0.1),
              maximize=FLAGS),
    grid_valid=lambda o: ((o["momentum"] > 0 or (o["dampening"] == 0 and not o["nesterov"]))
                          and not (o["nesterov"] and o["dampening"] != 0)),
)
