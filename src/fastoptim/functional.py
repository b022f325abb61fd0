"""One function per optimizer: check everything, then update in place.

Each takes the param, its grad and its state arrays, the 1-based `step`
and the hyperparameters, with torch.optim's names and semantics.  Arrays
must be C-contiguous, of one float dtype (float32 or float64) and shape;
param and state must be writeable.  Nothing is written unless every check
passes, and nothing is allocated.  fastoptim.reference has the same
functions in plain NumPy.
"""
from . import _kernels
from ._hyper import check_adadelta, check_adagrad, check_adam, check_rmsprop, check_sgd

__all__ = ["sgd", "adagrad", "rmsprop", "adadelta", "adam", "adamw"]

_SGD_NAMES = ("param", "grad", "momentum_buffer")
_ADAGRAD_NAMES = ("param", "grad", "state_sum")
_RMSPROP_NAMES = ("param", "grad", "square_avg", "momentum_buffer", "grad_avg")
_ADADELTA_NAMES = ("param", "grad", "square_avg", "acc_delta")
_ADAM_NAMES = ("param", "grad", "exp_avg", "exp_avg_sq", "max_exp_avg_sq")


def _require(array, name, reason):
    if array is None:
        raise ValueError(f"{name} is required when {reason}; pass an array shaped like param "
                         f"(zeros before the first step)")
    return array


def sgd(param, grad, momentum_buffer=None, *, step, lr, momentum=0.0, dampening=0.0,
        weight_decay=0.0, nesterov=False, maximize=False):
    """SGD with optional momentum, dampening and Nesterov momentum (torch.optim.SGD).

    At step 1 the momentum buffer is set to the gradient, as torch does; its
    previous content is not read.  momentum_buffer is needed only when momentum != 0.
    """
    hyper = check_sgd(lr, momentum, dampening, weight_decay, nesterov, maximize)
    buf = _require(momentum_buffer, "momentum_buffer", "momentum != 0") if hyper[1] != 0 else None
    _kernels.run_single(_kernels.SGD, (param, grad, buf), _SGD_NAMES, step, hyper)


def adagrad(param, grad, state_sum, *, step, lr, lr_decay=0.0, weight_decay=0.0, eps=1e-10,
            maximize=False):
    """Adagrad (torch.optim.Adagrad); state_sum starts at initial_accumulator_value."""
    hyper = check_adagrad(lr, lr_decay, weight_decay, eps, maximize)
    _kernels.run_single(_kernels.ADAGRAD, (param, grad, state_sum), _ADAGRAD_NAMES, step, hyper)


def rmsprop(param, grad, square_avg, *, step, lr, alpha, eps, weight_decay=0.0, momentum=0.0,
            centered=False, momentum_buffer=None, grad_avg=None, maximize=False):
    """RMSprop (torch.optim.RMSprop); momentum_buffer is needed when momentum > 0,
    grad_avg when centered."""
    hyper = check_rmsprop(lr, alpha, eps, weight_decay, momentum, centered, maximize)
    buf = _require(momentum_buffer, "momentum_buffer", "momentum > 0") if hyper[4] > 0 else None
    avg = _require(grad_avg, "grad_avg", "centered=True") if hyper[5] else None
    _kernels.run_single(_kernels.RMSPROP, (param, grad, square_avg, buf, avg), _RMSPROP_NAMES,
                        step, hyper)


def adadelta(param, grad, square_avg, acc_delta, *, step, lr, rho, eps, weight_decay=0.0,
             maximize=False):
    """Adadelta (torch.optim.Adadelta)."""
    hyper = check_adadelta(lr, rho, eps, weight_decay, maximize)
    _kernels.run_single(_kernels.ADADELTA, (param, grad, square_avg, acc_delta), _ADADELTA_NAMES,
                        step, hyper)


def _adam(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, step, hyper):
    maximum = _require(max_exp_avg_sq, "max_exp_avg_sq", "amsgrad=True") if hyper[5] else None
    _kernels.run_single(_kernels.ADAM, (param, grad, exp_avg, exp_avg_sq, maximum), _ADAM_NAMES,
                        step, hyper)


def adam(param, grad, exp_avg, exp_avg_sq, *, step, lr, beta1, beta2, eps, weight_decay=0.0,
         amsgrad=False, max_exp_avg_sq=None, maximize=False):
    """Adam (torch.optim.Adam): L2 weight decay added to the gradient."""
    hyper = check_adam(lr, beta1, beta2, eps, weight_decay, amsgrad, maximize, False)
    _adam(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, step, hyper)


def adamw(param, grad, exp_avg, exp_avg_sq, *, step, lr, beta1, beta2, eps, weight_decay=1e-2,
          amsgrad=False, max_exp_avg_sq=None, maximize=False):
    """AdamW (torch.optim.AdamW): decoupled weight decay, param *= 1 - lr * weight_decay."""
    hyper = check_adam(lr, beta1, beta2, eps, weight_decay, amsgrad, maximize, True)
    _adam(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, step, hyper)
