"""Pure-NumPy references for the ten optimizers of issue 12, part 2.

Adamax, NAdam, RAdam, ASGD, Rprop, Adafactor, Lion and LAMB (Muon's and
LBFGS's have moved to fastoptim/rules/muon.py and rules/lbfgs.py; their
defaults and torch's checks stay in the tables below), written as torch 2.13.0 writes them (``torch/optim/<name>.py``, the
single-tensor path, ``foreach=False``), operation by operation, so that
float64 agrees with torch.optim to a few ulps and float32 to rounding.
Lion and LAMB are not in torch: they follow the formulas of issue 12.

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
    "adamax", "nadam", "radam", "asgd", "rprop", "adafactor", "lion", "lamb", "block_norm", "block_sum_squares",
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


def _torch_sign(x):
    """torch.sign on CPU: (x > 0) - (x < 0), so sign(NaN) = 0 and sign(-0.0) = 0 (np.sign(NaN) is NaN)."""
    one = x.dtype.type(1)
    return np.where(x > 0, one, x.dtype.type(0)) - np.where(x < 0, one, x.dtype.type(0))


def _norm(x):
    """The 2-norm as torch's ``x.norm(2).item()``: a double of the dtype-rounded norm.

    Summed in double here (torch sums in the dtype with its own order):
    float32 results differ from torch's by rounding only.
    """
    flat = np.asarray(x, dtype=np.float64).reshape(-1)
    return float(x.dtype.type(math.sqrt(float(np.dot(flat, flat)))))


# ---- per-element rules ------------------------------------------------------------

def adamax(param, grad, exp_avg, exp_inf, *, step, lr=2e-3, beta1=0.9, beta2=0.999, eps=1e-8,
           weight_decay=0.0, maximize=False):
    t = param.dtype.type
    d = _signed(grad, maximize)
    if weight_decay != 0:
        d = d + t(weight_decay) * param
    exp_avg[...] = _lerp(exp_avg, d, 1 - beta1)
    # torch.maximum propagates NaN, like np.maximum
    np.maximum(exp_inf * t(beta2), np.abs(d) + t(eps), out=exp_inf)
    clr = lr / (1 - beta1**step)
    param += t(-clr) * exp_avg / exp_inf


def nadam(param, grad, exp_avg, exp_avg_sq, mu_product, *, step, lr=2e-3, beta1=0.9, beta2=0.999,
          eps=1e-8, weight_decay=0.0, momentum_decay=4e-3, decoupled_weight_decay=False,
          maximize=False):
    """``mu_product`` is a 0-d array in torch's scalar dtype (float32), starting at 1."""
    t = param.dtype.type
    d = _signed(grad, maximize)
    bias_correction2 = 1 - beta2**step
    if weight_decay != 0:
        if decoupled_weight_decay:
            param *= t(1 - lr * weight_decay)
        else:
            d = d + t(weight_decay) * param
    mu = beta1 * (1.0 - 0.5 * (0.96 ** (step * momentum_decay)))
    mu_next = beta1 * (1.0 - 0.5 * (0.96 ** ((step + 1) * momentum_decay)))
    mu_product *= mu  # in mu_product's dtype: mu is rounded to float32 first, as torch's 0-d tensor does
    exp_avg[...] = _lerp(exp_avg, d, 1 - beta1)
    exp_avg_sq *= t(beta2)
    exp_avg_sq += t(1 - beta2) * d * d
    denom = np.sqrt(exp_avg_sq / t(bias_correction2))
    mu_product_next = float(mu_product) * mu_next
    denom += t(eps)
    param += t(-lr * (1.0 - mu) / (1.0 - float(mu_product))) * d / denom
    param += t((-lr * mu_next) / (1.0 - mu_product_next)) * exp_avg / denom


def radam(param, grad, exp_avg, exp_avg_sq, *, step, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8,
          weight_decay=0.0, decoupled_weight_decay=False, maximize=False):
    t = param.dtype.type
    d = _signed(grad, maximize)
    if weight_decay != 0:
        if decoupled_weight_decay:
            param *= t(1 - lr * weight_decay)
        else:
            d = d + t(weight_decay) * param
    exp_avg[...] = _lerp(exp_avg, d, 1 - beta1)
    exp_avg_sq *= t(beta2)
    exp_avg_sq += t(1 - beta2) * d * d
    bias_correction1 = 1 - beta1**step
    bias_correction2 = 1 - beta2**step
    bias_corrected_exp_avg = exp_avg / t(bias_correction1)
    rho_inf = 2 / (1 - beta2) - 1
    rho_t = rho_inf - 2 * step * (beta2**step) / bias_correction2
    if rho_t > 5.0:
        rect = ((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t)) ** 0.5
        # torch's `scalar / tensor` is tensor.reciprocal() * scalar
        adaptive_lr = (t(1) / (np.sqrt(exp_avg_sq) + t(eps))) * t(bias_correction2**0.5)
        param -= bias_corrected_exp_avg * t(lr) * adaptive_lr * t(rect)
    else:
        param -= bias_corrected_exp_avg * t(lr)


def asgd(param, grad, ax, eta, mu, *, step, lr=1e-2, lambd=1e-4, alpha=0.75, t0=1e6,
         weight_decay=0.0, maximize=False):
    """``eta`` (starts at lr) and ``mu`` (starts at 1) are 0-d arrays in torch's scalar dtype (float32)."""
    t = param.dtype.type
    d = _signed(grad, maximize)
    if weight_decay != 0:
        d = d + t(weight_decay) * param
    eta_value = float(eta)
    param *= t(1 - lambd * eta_value)
    param += t(-eta_value) * d
    if float(mu) != 1:
        ax += (param - ax) * t(mu)
    else:
        ax[...] = param
    # the next step's eta and mu, rounded to their dtype as torch's copy_ does
    eta[...] = lr / ((1 + lambd * lr * step) ** alpha)
    mu[...] = 1 / max(1, step - t0)


def rprop(param, grad, prev, step_size, *, step, lr=1e-2, etaminus=0.5, etaplus=1.2,
          step_size_min=1e-6, step_size_max=50, maximize=False):
    """``step_size`` starts filled with lr, ``prev`` with zeros.  ``lr`` and ``step`` are not read here."""
    t = param.dtype.type
    d = _signed(grad, maximize)
    sign = _torch_sign(d * prev)  # NaN -> 0: a NaN grad keeps the step size
    factor = np.where(sign > 0, t(etaplus), np.where(sign < 0, t(etaminus), t(1)))
    step_size *= factor
    np.clip(step_size, t(step_size_min), t(step_size_max), out=step_size)  # NaN stays NaN, like clamp_
    d = np.where(sign < 0, t(0), d)  # torch: grad[sign.eq(etaminus)] = 0
    param += t(-1) * _torch_sign(d) * step_size
    prev[...] = d


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


def lion(param, grad, exp_avg, *, step=None, lr=1e-4, beta1=0.9, beta2=0.99, weight_decay=0.0,
         maximize=False):
    """Lion (Chen et al. 2023) as issue 12 states it; ``step`` is accepted for the common signature and unused.

    sign is torch.sign's (0 for NaN), as in lion-pytorch.
    """
    t = param.dtype.type
    g = _signed(grad, maximize)
    c = t(beta1) * exp_avg + t(1 - beta1) * g
    if weight_decay != 0:
        param *= t(1 - lr * weight_decay)
    param += t(-lr) * _torch_sign(c)
    exp_avg[...] = t(beta2) * exp_avg + t(1 - beta2) * g


# ---- LAMB and its deterministic norm ---------------------------------------------------

NORM_BLOCKS = 256
NORM_LANES = 8


def _combine_lanes(lanes):
    """((l0 + l1) + (l2 + l3)) + ((l4 + l5) + (l6 + l7)) over the last axis."""
    return (((lanes[..., 0] + lanes[..., 1]) + (lanes[..., 2] + lanes[..., 3]))
            + ((lanes[..., 4] + lanes[..., 5]) + (lanes[..., 6] + lanes[..., 7])))


def _blocks_sum_squares(x, starts, length):
    """Sum of squares of the blocks x[s:s+length] for s in starts, in reductions.h's order."""
    main = length // NORM_LANES * NORM_LANES
    squares = np.square(x[starts[:, None] + np.arange(length)])  # (blocks, length), double
    if main:
        lanes = squares[:, :main].reshape(len(starts), -1, NORM_LANES)
        lanes = np.cumsum(lanes, axis=1)[:, -1, :]  # each lane summed in element order
    else:
        lanes = np.zeros((len(starts), NORM_LANES))
    tail = np.zeros(len(starts))
    for k in range(main, length):  # at most 7 elements, summed in order
        tail = tail + squares[:, k]
    return _combine_lanes(lanes) + tail


def block_sum_squares(x):
    """The sum of squares of x, computed so that a C kernel can reproduce it bit for bit.

    The exact order (fastoptim's clipping-norm order, csrc/fastoptim/reductions.h):
    1. view x as n = x.size elements in C order, each converted to double;
    2. cut them into NORM_BLOCKS = 256 blocks: block b holds elements
       [n*b // 256, n*(b+1) // 256) (integer division; blocks may be empty);
    3. in each block of length L, with m = 8 * (L // 8): lane k (k = 0..7) is
       0.0 + v[k]^2 + v[k+8]^2 + ... over the first m elements in order, the
       tail is 0.0 + v[m]^2 + ... + v[L-1]^2 in order, and the block's sum is
       ((l0 + l1) + (l2 + l3)) + ((l4 + l5) + (l6 + l7)) + tail;
    4. the result is 0.0 + s_0 + s_1 + ... + s_255, in block order.
    Every operation is a double add or multiply, so the result depends on n
    and the values only, never on threads or SIMD width.
    """
    flat = np.asarray(x, dtype=np.float64).reshape(-1)
    n = flat.size
    bounds = np.array([n * b // NORM_BLOCKS for b in range(NORM_BLOCKS + 1)], dtype=np.int64)
    lengths = np.diff(bounds)
    block_sums = np.zeros(NORM_BLOCKS)
    for length in np.unique(lengths):  # at most two lengths: n // 256 and n // 256 + 1
        which = np.nonzero(lengths == length)[0]
        if length:
            block_sums[which] = _blocks_sum_squares(flat, bounds[which], int(length))
    return float(np.cumsum(np.concatenate(([0.0], block_sums)))[-1])


def block_norm(x):
    """sqrt(block_sum_squares(x)), in double."""
    return math.sqrt(block_sum_squares(x))


def _lamb_direction(param, exp_avg, exp_avg_sq, step, beta1, beta2, eps, weight_decay):
    """r = (m / (1 - beta1^t)) / (sqrt(v / (1 - beta2^t)) + eps) + wd * p, in the dtype."""
    t = param.dtype.type
    r = (exp_avg / t(1 - beta1**step)) / (np.sqrt(exp_avg_sq / t(1 - beta2**step)) + t(eps))
    if weight_decay != 0:
        r = r + t(weight_decay) * param
    return r


def lamb(param, grad, exp_avg, exp_avg_sq, *, step, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-6,
         weight_decay=0.0, maximize=False):
    """LAMB (You et al. 2019) on one tensor, as issue 12 states it.

    Two passes over memory in the C kernel: the first updates m and v and sums
    the squares of p and of r (block_sum_squares' order), the second
    recomputes r from the stored m, v and p and writes p.  trust = ||p|| / ||r||
    in double, or 1 unless both norms are > 0 (so a NaN r still reaches p).
    """
    t = param.dtype.type
    g = _signed(grad, maximize)
    exp_avg[...] = t(beta1) * exp_avg + t(1 - beta1) * g
    exp_avg_sq[...] = t(beta2) * exp_avg_sq + t(1 - beta2) * g * g
    r = _lamb_direction(param, exp_avg, exp_avg_sq, step, beta1, beta2, eps, weight_decay)
    param_norm, r_norm = block_norm(param), block_norm(r)
    trust = param_norm / r_norm if param_norm > 0 and r_norm > 0 else 1.0
    param += t(-(lr * trust)) * r


# ---- hyperparameters: torch's defaults, checks and messages ------------------------------------

# The constructors' arguments as torch names them (Lion and LAMB: issue 12's),
# without torch's implementation flags (foreach, capturable, differentiable, fused).
DEFAULTS = {
    "adamax": dict(lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, maximize=False),
    "nadam": dict(lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, momentum_decay=4e-3,
                  decoupled_weight_decay=False, maximize=False),
    "radam": dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, decoupled_weight_decay=False,
                  maximize=False),
    "asgd": dict(lr=1e-2, lambd=1e-4, alpha=0.75, t0=1e6, weight_decay=0.0, maximize=False),
    "rprop": dict(lr=1e-2, etas=(0.5, 1.2), step_sizes=(1e-6, 50), maximize=False),
    "adafactor": dict(lr=1e-2, beta2_decay=-0.8, eps=(None, 1e-3), d=1.0, weight_decay=0.0, maximize=False),
    "lion": dict(lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0, maximize=False),
    "lamb": dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.0, maximize=False),
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
    "adamax": _ADAM_LIKE,
    "nadam": _ADAM_LIKE + [_at_least("momentum_decay", 0.0, "Invalid momentum_decay value: {}")],
    "radam": _ADAM_LIKE,
    "asgd": [_lr, _weight_decay],
    "rprop": [_lr, lambda h: (0.0 < h["etas"][0] < 1.0 < h["etas"][1],
                              f"Invalid eta values: {h['etas'][0]}, {h['etas'][1]}")],
    "adafactor": [
        _at_least("lr", 0.0, "Learning rate should be >= 0 but is: {}"),
        lambda h: (0.0 >= h["beta2_decay"], f"beta2_decay should be <= 0 but is: {h['beta2_decay']}"),
        lambda h: (h["eps"][0] is None or 0.0 <= h["eps"][0], f"epsilon1 should be >= 0 but is: {h['eps'][0]}"),
        lambda h: (0.0 <= h["eps"][1], f"epsilon2 should be >= 0 but is: {h['eps'][1]}"),
        _at_least("d", 1.0, "Clipping threshold d should be >= 1 but is: {}"),
        _at_least("weight_decay", 0.0, "weight_decay should be >= 0 but is: {}"),
    ],
    # Lion and LAMB: torch-style wording for the same kinds of bound
    "lion": [_lr, _beta(0), _beta(1), _weight_decay],
    "lamb": _ADAM_LIKE,
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
    if name == "adamax":
        return {"exp_avg": zeros(), "exp_inf": zeros()}
    if name == "nadam":
        return {"mu_product": np.ones((), scalar_dtype), "exp_avg": zeros(), "exp_avg_sq": zeros()}
    if name in ("radam", "lamb"):
        return {"exp_avg": zeros(), "exp_avg_sq": zeros()}
    if name == "asgd":
        return {"eta": np.array(lr, scalar_dtype), "mu": np.ones((), scalar_dtype), "ax": zeros()}
    if name == "rprop":
        return {"prev": zeros(), "step_size": np.full_like(param, lr)}
    if name == "adafactor":
        if param.ndim > 1:
            return {"row_var": np.zeros(param.shape[:-1] + (1,), param.dtype),
                    "col_var": np.zeros(param.shape[:-2] + (1,) + param.shape[-1:], param.dtype)}
        return {"variance": zeros()}
    if name == "lion":
        return {"exp_avg": zeros()}
    if name == "muon":
        return {"momentum_buffer": zeros()}
    raise ValueError(f"no per-param state layout for {name!r}")
