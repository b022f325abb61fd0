import numpy as np

from .. import _kernels
from .._hyper import check_adagrad, check_initial_accumulator_value
from .optimizer import Optimizer


class Adagrad(Optimizer):
    """Adagrad, as torch.optim.Adagrad (state created at construction, like torch)."""

    _rule = _kernels.ADAGRAD
    _eager_state = True

    def __init__(self, params, lr=1e-2, lr_decay=0.0, weight_decay=0.0, initial_accumulator_value=0.0,
                 eps=1e-10, *, maximize=False):
        super().__init__(params, dict(lr=lr, lr_decay=lr_decay, weight_decay=weight_decay,
                                      initial_accumulator_value=initial_accumulator_value, eps=eps,
                                      maximize=maximize))

    def _check_hyper(self, g, lr, where):
        check_initial_accumulator_value(g["initial_accumulator_value"], where)
        return check_adagrad(lr, g["lr_decay"], g["weight_decay"], g["eps"], g["maximize"], where)

    def _state_slots(self, g):
        return ("sum",)

    def _new_state(self, group, param, name):
        return np.full_like(param, group["initial_accumulator_value"])
