"""Hyperparameter checks shared by the functional API and the optimizers.

Each check_<rule> takes the rule's hyperparameters, raises a ValueError or
TypeError naming the argument, its value and where it came from, and returns
them as the kernel takes them (the order of _kernels.KERNEL_FIELDS).  It
rejects at least everything torch.optim rejects, plus NaN and infinities,
which torch lets through.
"""
import functools
import math

import numpy as np

from . import _kernels

_REAL_TYPES = (float, int, np.floating, np.integer)
_IMMUTABLE = frozenset([float, int, bool, str, np.float64, np.float32, np.float16, np.int64, np.int32,
                        np.bool_])


def _number(label, name, value, where, low=0.0, high=math.inf, low_open=False, high_open=False):
    # Concrete types, not numbers.Real: an ABC check is slower and grows abc's caches.
    if type(value) is not float and (isinstance(value, (bool, np.bool_))
                                     or not isinstance(value, _REAL_TYPES)):
        raise TypeError(f"Invalid {label}: {name}={value!r}{where}; expected a real number")
    x = float(value)
    ok = math.isfinite(x) and (x > low if low_open else x >= low) and (x < high if high_open else x <= high)
    if not ok:
        lo, hi = ("(" if low_open else "[") + f"{low:g}", f"{high:g}" + (")" if high_open else "]")
        bound = f">= {low:g}" if math.isinf(high) else f"in {lo}, {hi}"
        raise ValueError(f"Invalid {label}: {name}={value!r}{where}; must be finite and {bound}")
    return x


def _flag(name, value, where):
    if isinstance(value, (bool, np.bool_)) or (isinstance(value, (int, np.integer)) and value in (0, 1)):
        return bool(value)
    raise TypeError(f"Invalid {name}={value!r}{where}; expected True or False")


def _memoized(check):
    """Remember the checked result of hyperparameters seen before.

    Steps usually repeat the same values, and checking them is most of the
    cost of a small step.  First, the last call's argument objects: the very
    same objects (immutable ones only) give the same result.  Then a typed
    cache of recent values, so True never hits a cached 1.  NaN never equals
    itself, so it is always checked (and rejected); errors are never cached;
    unhashable values go to the check itself, which names them.
    """
    cached = functools.lru_cache(maxsize=256, typed=True)(check)
    last = [None]  # (args, result), swapped as one object so threads never mix the two

    @functools.wraps(check)
    def checked(*args):
        entry = last[0]
        if entry is not None and _kernels.same_objects(args, entry[0]):
            return entry[1]
        try:
            result = cached(*args)
        except TypeError:
            return check(*args)
        if all([type(a) in _IMMUTABLE for a in args]):
            last[0] = (args, result)
        return result
    return checked


def _where(where):
    return f" ({where})" if where else ""


@_memoized
def check_sgd(lr, momentum, dampening, weight_decay, nesterov, maximize, where=""):
    w = _where(where)
    lr = _number("learning rate", "lr", lr, w)
    momentum = _number("momentum value", "momentum", momentum, w)
    dampening = _number("dampening value", "dampening", dampening, w, low=-math.inf)
    weight_decay = _number("weight_decay value", "weight_decay", weight_decay, w)
    nesterov = _flag("nesterov", nesterov, w)
    if nesterov and (momentum <= 0 or dampening != 0):
        raise ValueError(f"Nesterov momentum requires a momentum and zero dampening{w}: "
                         f"got momentum={momentum!r}, dampening={dampening!r}")
    return (lr, momentum, dampening, weight_decay, nesterov, _flag("maximize", maximize, w))


@_memoized
def check_adagrad(lr, lr_decay, weight_decay, eps, maximize, where=""):
    w = _where(where)
    return (_number("learning rate", "lr", lr, w),
            _number("lr_decay value", "lr_decay", lr_decay, w),
            _number("weight_decay value", "weight_decay", weight_decay, w),
            _number("epsilon value", "eps", eps, w),
            _flag("maximize", maximize, w))


def check_initial_accumulator_value(value, where=""):
    return _number("initial_accumulator_value value", "initial_accumulator_value", value, _where(where))


@_memoized
def check_rmsprop(lr, alpha, eps, weight_decay, momentum, centered, maximize, where=""):
    w = _where(where)
    return (_number("learning rate", "lr", lr, w),
            _number("alpha value", "alpha", alpha, w),
            _number("epsilon value", "eps", eps, w),
            _number("weight_decay value", "weight_decay", weight_decay, w),
            _number("momentum value", "momentum", momentum, w),
            _flag("centered", centered, w),
            _flag("maximize", maximize, w))


@_memoized
def check_adadelta(lr, rho, eps, weight_decay, maximize, where=""):
    w = _where(where)
    return (_number("learning rate", "lr", lr, w),
            _number("rho value", "rho", rho, w, high=1.0),
            _number("epsilon value", "eps", eps, w),
            _number("weight_decay value", "weight_decay", weight_decay, w),
            _flag("maximize", maximize, w))


@_memoized
def check_adam(lr, beta1, beta2, eps, weight_decay, amsgrad, maximize, decoupled_weight_decay, where=""):
    w = _where(where)
    return (_number("learning rate", "lr", lr, w),
            _number("beta parameter at index 0", "beta1", beta1, w, high=1.0, high_open=True),
            _number("beta parameter at index 1", "beta2", beta2, w, high=1.0, high_open=True),
            _number("epsilon value", "eps", eps, w),
            _number("weight_decay value", "weight_decay", weight_decay, w),
            _flag("amsgrad", amsgrad, w),
            _flag("maximize", maximize, w),
            _flag("decoupled_weight_decay", decoupled_weight_decay, w))


def check_betas(betas, where=""):
    """A (beta1, beta2) pair; the values are checked by check_adam."""
    try:
        beta1, beta2 = betas
    except (TypeError, ValueError):
        raise TypeError(f"Invalid betas={betas!r}{_where(where)}; expected a pair (beta1, beta2)") from None
    return beta1, beta2

