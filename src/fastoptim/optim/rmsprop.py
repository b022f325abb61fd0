from .. import _kernels
from .._hyper import check_rmsprop
from .optimizer import Optimizer


class RMSprop(Optimizer):
    """RMSprop with optional momentum and centering, as torch.optim.RMSprop."""

    _rule = _kernels.RMSPROP

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0,
                 centered=False, *, maximize=False):
        super().__init__(params, dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay,
                                      momentum=momentum, centered=centered, maximize=maximize))

    def _check_hyper(self, g, lr, where):
        return check_rmsprop(lr, g["alpha"], g["eps"], g["weight_decay"], g["momentum"],
                             g["centered"], g["maximize"], where)

    def _state_slots(self, g):
        return ("square_avg",
                "momentum_buffer" if g["momentum"] > 0 else None,
                "grad_avg" if g["centered"] else None)
