"""Rprop, resilient backpropagation (torch.optim.Rprop); C: csrc/fastoptim/rules/rprop.inc.

Each element keeps its own step size (starting at lr, which nothing else
reads), grown by etaplus while the grad keeps its sign and shrunk by
etaminus when it flips.  torch.sign(NaN) is 0, so a NaN grad leaves the
param and its step size alone.
"""
import numpy as np

from ._numpy import signed_grad, torch_sign
from ._rule import MAXIMIZE, Demo, Pair, Real, Rule, Slot, Variant, learning_rate

FLAGS = (False, True)


def reference(param, grad, state, *, step, grad_scale, lr, maximize, etaminus, etaplus, step_size_min,
              step_size_max):
    t = param.dtype.type
    d = signed_grad(grad, maximize, grad_scale)
    prev, step_size = state["prev"], state["step_size"]
    product = d * prev
    step_size *= np.where(product > 0, t(etaplus), np.where(product < 0, t(etaminus), t(1)))
    # torch's clamp_: raise below the min, then lower above the max; NaN stays, and so does -0.0
    # against a min of 0 (np.maximum would give +0.0)
    np.copyto(step_size, t(step_size_min), where=step_size < t(step_size_min))
    np.copyto(step_size, t(step_size_max), where=step_size > t(step_size_max))
    d = np.where(product < 0, t(0), d)
    prev[...] = d
    param += t(-1) * torch_sign(d) * step_size


def validate(fields, where):
    if fields["step_size_min"] > fields["step_size_max"]:
        raise ValueError(f"Invalid step_sizes: ({fields['step_size_min']}, {fields['step_size_max']}){where}; "
                         f"the minimum must not exceed the maximum")


RPROP = Rule(
    kernel="rprop",
    options=(
        learning_rate(1e-2),
        Pair("etas", (Real("etaminus", 0.5, "etaminus", low_open=True, high=1.0, high_open=True),
                      Real("etaplus", 1.2, "etaplus", low=1.0, low_open=True)),
             message="Invalid eta values: {}, {}"),
        Pair("step_sizes", (Real("step_size_min", 1e-6, "minimal step size"),
                            Real("step_size_max", 50.0, "maximal step size"))),
        MAXIMIZE,
    ),
    signature="lr etas step_sizes * maximize",
    torch_signature="lr etas step_sizes * capturable foreach maximize differentiable",
    state=(Slot("prev"), Slot("step_size", fill="lr", fill_imag=True)),
    reference=reference,
    validate=validate,
    variants=(Variant(
        "Rprop", "rprop", "Rprop: a step size per element, adapted to the grad's sign", torch_name="Rprop",
        # Rprop is a full-batch method: on mini-batches a gentler etaminus keeps the step sizes up
        demos=(Demo("Rprop", dict(lr=0.01, etas=(0.7, 1.2)),
                    dict(quadratic=0.05, ill_conditioned=0.05, saddle=0.05, rosenbrock=1e-3, x_cos_pi_x=0.05)),)),),
    grid=dict(lr=(0.01,), etas=((0.5, 1.2), (0.3, 1.9)), step_sizes=((1e-6, 50.0), (1e-3, 2e-2)), maximize=FLAGS),
)
