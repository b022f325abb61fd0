from .. import _kernels
from .._hyper import check_sgd
from .optimizer import Optimizer


class SGD(Optimizer):
    """Stochastic gradient descent with momentum, dampening and Nesterov momentum.

    Same arguments, defaults and semantics as torch.optim.SGD.  Full-batch,
    stochastic and mini-batch descent differ only in the grads given to step().
    The EMA form of momentum, m = beta * m + (1 - beta) * g, is dampening=beta.
    """

    _rule = _kernels.SGD
    _has_step = False

    def __init__(self, params, lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0,
                 nesterov=False, *, maximize=False):
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening,
                                      weight_decay=weight_decay, nesterov=nesterov, maximize=maximize))

    def _check_hyper(self, g, lr, where):
        return check_sgd(lr, g["momentum"], g["dampening"], g["weight_decay"], g["nesterov"],
                         g["maximize"], where)

    def _state_slots(self, g):
        return ("momentum_buffer" if g["momentum"] != 0 else None,)
