from .. import _kernels
from .._hyper import check_adadelta
from .optimizer import Optimizer


class Adadelta(Optimizer):
    """Adadelta, as torch.optim.Adadelta."""

    _rule = _kernels.ADADELTA

    def __init__(self, params, lr=1.0, rho=0.9, eps=1e-6, weight_decay=0.0, *, maximize=False):
        super().__init__(params, dict(lr=lr, rho=rho, eps=eps, weight_decay=weight_decay,
                                      maximize=maximize))

    def _check_hyper(self, g, lr, where):
        return check_adadelta(lr, g["rho"], g["eps"], g["weight_decay"], g["maximize"], where)

    def _state_slots(self, g):
        return ("square_avg", "acc_delta")
