"""The optimizers in plain NumPy, with fastoptim.functional's signatures.

The oracle of the tests and the baseline of the benchmarks: the textbook
update written with whole-array NumPy operations, in torch.optim's order of
operations, computing in the array's dtype.  The kernels evaluate the same
expressions element by element in the same order, so on the same inputs
they agree with this module bit for bit.  Unlike functional, this module
allocates temporaries and checks little.
"""
import numpy as np

__all__ = ["sgd", "adagrad", "rmsprop", "adadelta", "adam", "adamw"]


def _signed(grad, maximize):
    return -grad if maximize else grad.copy()


def _lerp(start, end, weight):
    """torch.lerp_ in place: weight < 0.5 interpolates from start, otherwise back from end."""
    w = start.dtype.type(weight)
    if abs(float(w)) < 0.5:
        start += w * (end - start)
    else:
        start[...] = end - (end - start) * (start.dtype.type(1) - w)


def sgd(param, grad, momentum_buffer=None, *, step, lr, momentum=0.0, dampening=0.0,
        weight_decay=0.0, nesterov=False, maximize=False):
    d = _signed(grad, maximize)
    if weight_decay != 0:
        d = d + weight_decay * param
    if momentum != 0:
        if step == 1:
            momentum_buffer[...] = d
        else:
            momentum_buffer *= momentum
            momentum_buffer += (1 - dampening) * d
        d = d + momentum * momentum_buffer if nesterov else momentum_buffer
    param += -lr * d


def adagrad(param, grad, state_sum, *, step, lr, lr_decay=0.0, weight_decay=0.0, eps=1e-10,
            maximize=False):
    d = _signed(grad, maximize)
    if weight_decay != 0:
        d = d + weight_decay * param
    clr = lr / (1 + (step - 1) * lr_decay)
    state_sum += d * d
    std = np.sqrt(state_sum) + eps
    param += -clr * d / std


def rmsprop(param, grad, square_avg, *, step, lr, alpha, eps, weight_decay=0.0, momentum=0.0,
            centered=False, momentum_buffer=None, grad_avg=None, maximize=False):
    d = _signed(grad, maximize)
    if weight_decay != 0:
        d = d + weight_decay * param
    square_avg *= alpha
    square_avg += (1 - alpha) * d * d
    if centered:
        _lerp(grad_avg, d, 1 - alpha)
        avg = np.sqrt(square_avg + -1.0 * grad_avg * grad_avg)
    else:
        avg = np.sqrt(square_avg)
    avg += eps
    if momentum > 0:
        momentum_buffer *= momentum
        momentum_buffer += d / avg
        param += -lr * momentum_buffer
    else:
        param += -lr * d / avg


def adadelta(param, grad, square_avg, acc_delta, *, step, lr, rho, eps, weight_decay=0.0,
             maximize=False):
    d = _signed(grad, maximize)
    if weight_decay != 0:
        d = d + weight_decay * param
    square_avg *= rho
    square_avg += (1 - rho) * d * d
    std = np.sqrt(square_avg + eps)
    delta = np.sqrt(acc_delta + eps) / std * d
    acc_delta *= rho
    acc_delta += (1 - rho) * delta * delta
    param += -lr * delta


def _adam(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, step, lr, beta1, beta2, eps,
          weight_decay, amsgrad, maximize, decoupled):
    d = _signed(grad, maximize)
    if weight_decay != 0:
        if decoupled:
            param *= 1 - lr * weight_decay
        else:
            d = d + weight_decay * param
    _lerp(exp_avg, d, 1 - beta1)
    exp_avg_sq *= beta2
    exp_avg_sq += (1 - beta2) * d * d
    bias_correction1 = 1 - beta1**step
    bias_correction2 = 1 - beta2**step
    step_size = lr / bias_correction1
    bias_correction2_sqrt = bias_correction2**0.5
    if amsgrad:
        np.maximum(max_exp_avg_sq, exp_avg_sq, out=max_exp_avg_sq)
        denom = np.sqrt(max_exp_avg_sq) / bias_correction2_sqrt + eps
    else:
        denom = np.sqrt(exp_avg_sq) / bias_correction2_sqrt + eps
    param += -step_size * exp_avg / denom


def adam(param, grad, exp_avg, exp_avg_sq, *, step, lr, beta1, beta2, eps, weight_decay=0.0,
         amsgrad=False, max_exp_avg_sq=None, maximize=False):
    _adam(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, step, lr, beta1, beta2, eps,
          weight_decay, amsgrad, maximize, decoupled=False)


def adamw(param, grad, exp_avg, exp_avg_sq, *, step, lr, beta1, beta2, eps, weight_decay=1e-2,
          amsgrad=False, max_exp_avg_sq=None, maximize=False):
    _adam(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, step, lr, beta1, beta2, eps,
          weight_decay, amsgrad, maximize, decoupled=True)
