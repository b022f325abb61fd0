from .. import _kernels
from .._hyper import check_adam, check_betas
from .optimizer import Optimizer


class Adam(Optimizer):
    """Adam (and AMSGrad), as torch.optim.Adam; decoupled_weight_decay=True is AdamW."""

    _rule = _kernels.ADAM

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False,
                 *, maximize=False, decoupled_weight_decay=False):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                      amsgrad=amsgrad, maximize=maximize,
                                      decoupled_weight_decay=decoupled_weight_decay))

    def _check_hyper(self, g, lr, where):
        beta1, beta2 = check_betas(g["betas"], where)
        return check_adam(lr, beta1, beta2, g["eps"], g["weight_decay"], g["amsgrad"],
                          g["maximize"], g["decoupled_weight_decay"], where)

    def _state_slots(self, g):
        return ("exp_avg", "exp_avg_sq", "max_exp_avg_sq" if g["amsgrad"] else None)


class AdamW(Adam):
    """AdamW, as torch.optim.AdamW: weight decay decoupled from the gradient (param *= 1 - lr * wd)."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False,
                 *, maximize=False):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
                         maximize=maximize, decoupled_weight_decay=True)
