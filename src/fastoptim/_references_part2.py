"""Pure-NumPy references for the optimizers of issue 12, part 2, not yet moved into their Rule.

Adafactor (Muon's and LBFGS's are in fastoptim/rules/muon.py and rules/lbfgs.py; their
defaults and torch's checks stay in the tables below),
written as torch 2.13.0 writes them (``torch/optim/<name>.py``, the
single-tensor path, ``foreach=False``), operation by operation, so that
float64 agrees with torch.optim to a few ulps and float32 to rounding.

The step functions have the signature of :mod:`fastoptim.reference`:
``name(param, grad, <state...>, *, step, <hyperparameters>)``; ``step`` is
the step count after this step's increment (1 on the first step), and the
param and the state arrays are updated in place.  Scalars follow torch's
types: a per-step scalar is a Python float (double) rounded to the array's
dtype where torch passes it to a tensor op; the per-tensor scalars torch keeps
as 0-d tensors (NAdam's ``mu_product``, ASGD's ``eta`` and ``mu``) are 0-d
arrays in torch's scalar dtype (float32 unless torch's default dtype is
float64) and round like them.  ``docs/new_rules_notes.md`` gives each rule's
per-element math as the C kernel must write it.

Where torch's CPU kernels fuse a multiply-add (add with ``alpha``, lerp,
addcmul: vectorised ``fmadd`` in the AVX2 build), this module rounds the
product and the sum separately: results differ from torch by rounding only.

This module checks little (like :mod:`fastoptim.reference`);
``check_hyperparameters`` reproduces torch's constructor checks and messages.
"""
import math

import numpy as np

__all__ = [
    "adafactor", "block_norm", "block_sum_squares",
    "DEFAULTS", "check_hyperparameters", "functional_hyperparameters", "new_state",
    "NORM_BLOCKS", "NORM_LANES",
]


# ---- helpers in torch's arithmetic ------------------------------------------------

def _signed(grad, maximize):
    return -grad if maximize else grad


def _lerp(start, end, weight):
    """torch.lerp: start + w * (end - start) for |w| < 0.5, else end - (end - start) * (1 - w).

    The weight is rounded to the arrays' dtype first, as torch does with a
    scalar weight.  Returns a new array.
    """
    w = start.dtype.type(weight)
    if abs(float(w)) < 0.5:
        return start + w * (end - start)
    return end - (end - start) * (start.dtype.type(1) - w)


def _norm(x):
    """The 2-norm as torch's ``x.norm(2).item()``: a double of the dtype-rounded norm.

    Summed in double here (torch sums in the dtype with its own order):
    float32 results differ from torch's by rounding only.
    """
    flat = np.asarray(x, dtype=np.float64).reshape(-1)
    return float(x.dtype.type(math.sqrt(float(np.dot(flat, flat)))))


# ---- per-element rules ------------------------------------------------------------

def adafactor(param, grad, row_var, col_var, variance, *, step, lr=1e-2, beta2_decay=-0.8, eps1=None,
              eps2=1e-3, d=1.0, weight_decay=0.0, maximize=False):
    """torch 2.13's Adafactor on one tensor.

    A param of 2 or more dimensions keeps ``row_var`` (its shape with the last
    dimension 1) and ``col_var`` (the second-last dimension 1), factored over
    the last two dimensions, and passes ``variance=None``; a 0-d or 1-d param
    keeps ``variance`` (its shape) and passes the others as None.
    ``eps1=None`` means the machine epsilon of the param's dtype.
    """
    t = param.dtype.type
    g = _signed(grad, maximize)
    if eps1 is None:
        eps1 = float(np.finfo(param.dtype).eps)
    one_minus_beta2_t = float(step) ** beta2_decay
    rho_t = min(lr, 1 / (float(step) ** 0.5))
    alpha = max(eps2, _norm(param) / (param.size**0.5)) * rho_t  # the norm before weight decay
    if weight_decay != 0:
        param *= t(1 - lr * weight_decay)
    if g.ndim > 1:
        # torch: norm(g, dim)**2 / n — a square root then a square, not a plain mean of squares
        row_mean = np.square(np.sqrt(np.sum(g * g, axis=-1, keepdims=True))) / t(g.shape[-1])
        row_var[...] = _lerp(row_var, row_mean, one_minus_beta2_t)
        col_mean = np.square(np.sqrt(np.sum(g * g, axis=-2, keepdims=True))) / t(g.shape[-2])
        col_var[...] = _lerp(col_var, col_mean, one_minus_beta2_t)
        var_estimate = row_var @ col_var  # (..., R, 1) @ (..., 1, C): one product per element
        var_estimate = var_estimate / np.maximum(row_var.mean(axis=-2, keepdims=True), t(eps1))
    else:
        variance[...] = _lerp(variance, g * g, one_minus_beta2_t)
        var_estimate = variance.copy()
    update = t(1) / np.sqrt(np.maximum(var_estimate, t(eps1 * eps1)))  # clamp_(min=eps1**2).rsqrt_()
    update = update * g
    denom = max(1.0, _norm(update) / ((update.size**0.5) * d))
    param += t(-alpha / denom) * update


# ---- the deterministic norm (LAMB's, now in fastoptim.rules) ----------------------------

from .rules._numpy import NORM_BLOCKS, NORM_LANES, block_norm, block_sum_squares  # noqa: E402


# ---- hyperparameters: torch's defaults, checks and messages ------------------------------------

# The constructors' arguments as torch names them (those moved into their Rule are gone),
# without torch's implementation flags (foreach, capturable, differentiable, fused).
DEFAULTS = {
    "adafactor": dict(lr=1e-2, beta2_decay=-0.8, eps=(None, 1e-3), d=1.0, weight_decay=0.0, maximize=False),
    "muon": dict(lr=1e-3, weight_decay=0.1, momentum=0.95, nesterov=True,
                 ns_coefficients=(3.4445, -4.7750, 2.0315), eps=1e-7, ns_steps=5, adjust_lr_fn=None),
    "lbfgs": dict(lr=1, max_iter=20, max_eval=None, tolerance_grad=1e-7, tolerance_change=1e-9,
                  history_size=100, line_search_fn=None),
}


def _lr(h):
    return 0.0 <= h["lr"], f"Invalid learning rate: {h['lr']}"


def _eps(h):
    return 0.0 <= h["eps"], f"Invalid epsilon value: {h['eps']}"


def _beta(index):
    def check(h):
        return 0.0 <= h["betas"][index] < 1.0, f"Invalid beta parameter at index {index}: {h['betas'][index]}"
    return check


def _weight_decay(h):
    return 0.0 <= h["weight_decay"], f"Invalid weight_decay value: {h['weight_decay']}"


def _at_least(name, bound, message):
    def check(h):
        return bound <= h[name], message.format(h[name])
    return check


_ADAM_LIKE = [_lr, _eps, _beta(0), _beta(1), _weight_decay]

# Each optimizer's checks in torch's order; the first that fails raises ValueError(message).
_CHECKS = {
    "adafactor": [
        _at_least("lr", 0.0, "Learning rate should be >= 0 but is: {}"),
        lambda h: (0.0 >= h["beta2_decay"], f"beta2_decay should be <= 0 but is: {h['beta2_decay']}"),
        lambda h: (h["eps"][0] is None or 0.0 <= h["eps"][0], f"epsilon1 should be >= 0 but is: {h['eps'][0]}"),
        lambda h: (0.0 <= h["eps"][1], f"epsilon2 should be >= 0 but is: {h['eps'][1]}"),
        _at_least("d", 1.0, "Clipping threshold d should be >= 1 but is: {}"),
        _at_least("weight_decay", 0.0, "weight_decay should be >= 0 but is: {}"),
    ],
    "muon": [
        _at_least("lr", 0.0, "Learning rate should be >= 0 but is: {}"),
        _at_least("momentum", 0.0, "momentum should be >= 0 but is: {}"),
        _at_least("weight_decay", 0.0, "weight decay should be >= 0 but is: {}"),
        lambda h: (h["adjust_lr_fn"] in (None, "original", "match_rms_adamw"),
                   f"Adjust learning rate function {h['adjust_lr_fn']} is not supported"),
    ],
    "lbfgs": [_lr],
}


def check_hyperparameters(name, **hyper):
    """Raise torch's ValueError for the first invalid hyperparameter (torch's order and message).

    Missing arguments take DEFAULTS[name].  A NaN fails every check, as in torch.
    """
    full = dict(DEFAULTS[name], **hyper)
    for check in _CHECKS[name]:
        ok, message = check(full)
        if not ok:
            raise ValueError(message)


_TUPLE_ARGUMENTS = {"betas": ("beta1", "beta2"), "etas": ("etaminus", "etaplus"),
                    "step_sizes": ("step_size_min", "step_size_max")}


def functional_hyperparameters(name, **hyper):
    """The constructor's arguments (DEFAULTS[name] filled in) as this module's step functions take them.

    betas -> beta1, beta2; etas -> etaminus, etaplus; step_sizes ->
    step_size_min, step_size_max; Adafactor's eps -> eps1, eps2.
    """
    full = dict(DEFAULTS[name], **hyper)
    out = {}
    for key, value in full.items():
        if key in _TUPLE_ARGUMENTS:
            out.update(zip(_TUPLE_ARGUMENTS[key], value))
        elif name == "adafactor" and key == "eps":
            out["eps1"], out["eps2"] = value
        else:
            out[key] = value
    return out


def new_state(name, param, scalar_dtype=np.float32, lr=None):
    """A param's state as torch's state_dict holds it before the first step (step counts excluded).

    Per-tensor scalars that torch keeps as 0-d tensors are 0-d arrays of
    ``scalar_dtype`` (torch's _get_scalar_dtype(): float32 unless the default
    dtype is float64).  ``lr`` is needed for ASGD's eta and Rprop's step_size.
    """
    zeros = lambda: np.zeros_like(param)  # noqa: E731
    if name == "adafactor":
        if param.ndim > 1:
            return {"row_var": np.zeros(param.shape[:-1] + (1,), param.dtype),
                    "col_var": np.zeros(param.shape[:-2] + (1,) + param.shape[-1:], param.dtype)}
        return {"variance": zeros()}
    if name == "muon":
        return {"momentum_buffer": zeros()}
    raise ValueError(f"no per-param state layout for {name!r}")
