"""Pure-NumPy references for the optimizers of issue 12, part 2, not yet moved into their Rule.

Adafactor, Muon and LBFGS,
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
    "adafactor", "muon",
    "newton_schulz", "LBFGS", "block_norm", "block_sum_squares",
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


# ---- Muon ----------------------------------------------------------------------------

def _to_bfloat16(x):
    """Round to bfloat16 (nearest even) and back to float32, as torch's .bfloat16() rounds (needs ml_dtypes)."""
    import ml_dtypes
    return np.asarray(x, dtype=np.float32).astype(ml_dtypes.bfloat16).astype(np.float32)


def newton_schulz(grad, ns_coefficients=(3.4445, -4.7750, 2.0315), ns_steps=5, eps=1e-7,
                  ns_dtype="float32"):
    """torch's _zeropower_via_newtonschulz, in float32 or emulated bfloat16; returns a float32 array.

    ns_dtype="bfloat16" rounds every tensor torch computes in bfloat16 (the
    input, the norm, the division, each product) to bfloat16, with float32
    products and sums in between (NumPy's float32 BLAS: the sums' order is
    not torch's, so a few elements can land on the other side of a rounding).
    """
    if ns_steps >= 100:
        raise ValueError("Number of steps must be less than 100 for computational efficiency")
    if grad.ndim != 2:
        raise ValueError("Input tensor gradient must be a 2D matrix")
    if len(ns_coefficients) != 3:
        raise ValueError("Coefficients must be a tuple of exactly 3 values")
    if ns_dtype == "float32":
        rnd = lambda x: np.asarray(x, dtype=np.float32)  # noqa: E731
    elif ns_dtype == "bfloat16":
        rnd = _to_bfloat16
    else:
        raise ValueError(f"ns_dtype must be 'float32' or 'bfloat16', got {ns_dtype!r}")
    a, b, c = (np.float32(k) for k in ns_coefficients)
    x = rnd(grad)
    if grad.shape[0] > grad.shape[1]:
        x = x.T
    norm = rnd(np.sqrt(np.sum(np.square(x, dtype=np.float64))))  # torch sums bf16 norms in float32
    x = rnd(x / np.maximum(norm, rnd(eps)))
    for _ in range(ns_steps):
        gram = rnd(x @ x.T)
        gram_update = rnd(b * gram + c * (gram @ gram))  # addmm(gram, gram, gram, beta=b, alpha=c)
        x = rnd(a * x + gram_update @ x)  # addmm(x, gram_update, x, beta=a)
    if grad.shape[0] > grad.shape[1]:
        x = x.T
    return np.ascontiguousarray(x)


def _adjust_lr(lr, adjust_lr_fn, shape):
    rows, cols = shape[:2]
    if adjust_lr_fn is None or adjust_lr_fn == "original":
        ratio = math.sqrt(max(1, rows / cols))
    elif adjust_lr_fn == "match_rms_adamw":
        ratio = 0.2 * math.sqrt(max(rows, cols))
    else:
        ratio = 1.0
    return lr * ratio


def muon(param, grad, momentum_buffer, *, step=None, lr=1e-3, weight_decay=0.1, momentum=0.95,
         nesterov=True, ns_coefficients=(3.4445, -4.7750, 2.0315), eps=1e-7, ns_steps=5,
         adjust_lr_fn=None, ns_dtype="float32"):
    """torch 2.13's Muon on one 2-D param (no maximize; ``step`` is accepted for the common signature, unused).

    ``ns_dtype`` picks the Newton-Schulz arithmetic: float32 (ours by
    default) or emulated bfloat16 (what torch hard-codes).  A NumPy float32
    ``lr`` behaves like torch's 0-d float32 tensor lr.
    """
    if param.ndim != 2:
        raise ValueError(f"Muon only supports 2D parameters whereas we found a parameter with size: {param.shape}")
    t = param.dtype.type
    momentum_buffer[...] = _lerp(momentum_buffer, grad, 1 - momentum)
    update = _lerp(grad, momentum_buffer, momentum) if nesterov else momentum_buffer
    ortho = newton_schulz(update, ns_coefficients, ns_steps, eps, ns_dtype)
    adjusted_lr = _adjust_lr(lr, adjust_lr_fn, param.shape)
    param *= t(1 - lr * weight_decay)
    param += t(-adjusted_lr) * ortho.astype(param.dtype)


# ---- LBFGS ------------------------------------------------------------------------------
# The vector operations LBFGS needs, each a small function so that a fused,
# deterministic kernel can replace it.  Scalars come back in the vectors'
# dtype, as torch's 0-d tensors do.

def _dot(x, y):
    return x.dtype.type(np.dot(x, y))


def _axpy(alpha, x, y):
    """y += alpha * x in place (torch's y.add_(x, alpha=alpha))."""
    y += y.dtype.type(alpha) * x


def _scaled(x, alpha):
    """A new vector x * alpha (alpha a Python or NumPy scalar, promoted as torch promotes)."""
    return x * alpha


def _difference(x, y):
    return x - y


def _max_abs(x):
    return np.max(np.abs(x))


def _sum_abs(x):
    return np.sum(np.abs(x))


def _cubic_interpolate(x1, f1, g1, x2, f2, g2, bounds=None):
    if bounds is not None:
        xmin_bound, xmax_bound = bounds
    else:
        xmin_bound, xmax_bound = (x1, x2) if x1 <= x2 else (x2, x1)
    d1 = g1 + g2 - 3 * (f1 - f2) / (x1 - x2)
    d2_square = d1**2 - g1 * g2
    if d2_square >= 0:
        d2 = np.sqrt(d2_square)
        if x1 <= x2:
            min_pos = x2 - (x2 - x1) * ((g2 + d2 - d1) / (g2 - g1 + 2 * d2))
        else:
            min_pos = x1 - (x1 - x2) * ((g1 + d2 - d1) / (g1 - g2 + 2 * d2))
        return min(max(min_pos, xmin_bound), xmax_bound)
    return (xmin_bound + xmax_bound) / 2.0


def _strong_wolfe(obj_func, x, t, d, f, g, gtd, c1=1e-4, c2=0.9, tolerance_change=1e-9, max_ls=25):
    d_norm = _max_abs(d)
    g = g.copy()
    f_new, g_new = obj_func(x, t, d)
    ls_func_evals = 1
    gtd_new = _dot(g_new, d)
    t_prev, f_prev, g_prev, gtd_prev = 0, f, g, gtd
    done = False
    ls_iter = 0
    while ls_iter < max_ls:
        # check conditions
        if f_new > (f + c1 * t * gtd) or (ls_iter > 1 and f_new >= f_prev):
            bracket, bracket_f = [t_prev, t], [f_prev, f_new]
            bracket_g, bracket_gtd = [g_prev, g_new.copy()], [gtd_prev, gtd_new]
            break
        if abs(gtd_new) <= -c2 * gtd:
            bracket, bracket_f, bracket_g = [t], [f_new], [g_new]
            done = True
            break
        if gtd_new >= 0:
            bracket, bracket_f = [t_prev, t], [f_prev, f_new]
            bracket_g, bracket_gtd = [g_prev, g_new.copy()], [gtd_prev, gtd_new]
            break
        # interpolate
        min_step = t + 0.01 * (t - t_prev)
        max_step = t * 10
        tmp = t
        t = _cubic_interpolate(t_prev, f_prev, gtd_prev, t, f_new, gtd_new, bounds=(min_step, max_step))
        t_prev, f_prev, g_prev, gtd_prev = tmp, f_new, g_new.copy(), gtd_new
        f_new, g_new = obj_func(x, t, d)
        ls_func_evals += 1
        gtd_new = _dot(g_new, d)
        ls_iter += 1
    if ls_iter == max_ls:  # reached max number of iterations
        bracket, bracket_f, bracket_g = [0, t], [f, f_new], [g, g_new]

    # zoom phase: a point satisfying the criteria, or a bracket too small to split
    insuf_progress = False
    low_pos, high_pos = (0, 1) if bracket_f[0] <= bracket_f[-1] else (1, 0)
    while not done and ls_iter < max_ls:
        if abs(bracket[1] - bracket[0]) * d_norm < tolerance_change:
            break
        t = _cubic_interpolate(bracket[0], bracket_f[0], bracket_gtd[0],
                               bracket[1], bracket_f[1], bracket_gtd[1])
        # test that we are making sufficient progress
        eps = 0.1 * (max(bracket) - min(bracket))
        if min(max(bracket) - t, t - min(bracket)) < eps:
            if insuf_progress or t >= max(bracket) or t <= min(bracket):
                if abs(t - max(bracket)) < abs(t - min(bracket)):
                    t = max(bracket) - eps
                else:
                    t = min(bracket) + eps
                insuf_progress = False
            else:
                insuf_progress = True
        else:
            insuf_progress = False
        f_new, g_new = obj_func(x, t, d)
        ls_func_evals += 1
        gtd_new = _dot(g_new, d)
        ls_iter += 1
        if f_new > (f + c1 * t * gtd) or f_new >= bracket_f[low_pos]:
            bracket[high_pos], bracket_f[high_pos] = t, f_new
            bracket_g[high_pos], bracket_gtd[high_pos] = g_new.copy(), gtd_new
            low_pos, high_pos = (0, 1) if bracket_f[0] <= bracket_f[1] else (1, 0)
        else:
            if abs(gtd_new) <= -c2 * gtd:
                done = True
            elif gtd_new * (bracket[high_pos] - bracket[low_pos]) >= 0:
                bracket[high_pos], bracket_f[high_pos] = bracket[low_pos], bracket_f[low_pos]
                bracket_g[high_pos], bracket_gtd[high_pos] = bracket_g[low_pos], bracket_gtd[low_pos]
            bracket[low_pos], bracket_f[low_pos] = t, f_new
            bracket_g[low_pos], bracket_gtd[low_pos] = g_new.copy(), gtd_new
    t = bracket[low_pos]
    return bracket_f[low_pos], bracket_g[low_pos], t, ls_func_evals


class LBFGS:
    """torch.optim.LBFGS over a list of float arrays of one dtype, updated in place.

    ``step(closure)``: the closure evaluates the objective at the arrays'
    current values and returns ``(loss, grads)``, grads a list like the params
    (None counts as zeros).  ``state`` holds torch's entries (``func_evals``,
    ``n_iter``, ``d``, ``t``, ``old_dirs``, ``old_stps``, ``ro``, ``H_diag``,
    ``prev_flat_grad``, ``prev_loss``, and ``al`` after the second iteration),
    with flat vectors over all params in order.  A NumPy float32 ``lr`` acts
    like torch's 0-d float32 tensor lr.
    """

    def __init__(self, params, lr=1, max_iter=20, max_eval=None, tolerance_grad=1e-7,
                 tolerance_change=1e-9, history_size=100, line_search_fn=None):
        check_hyperparameters("lbfgs", lr=lr)
        if line_search_fn not in (None, "strong_wolfe"):
            raise ValueError(f"line_search_fn must be None or 'strong_wolfe', got {line_search_fn!r}")
        self.params = list(params)
        if len({p.dtype for p in self.params}) != 1:
            raise ValueError("LBFGS params must share one dtype")
        for i, p in enumerate(self.params):
            if not (p.flags.c_contiguous and p.flags.writeable):
                raise ValueError(f"params[{i}] must be a C-contiguous, writeable array (updated in place)")
        if max_eval is None:
            max_eval = max_iter * 5 // 4
        self.lr, self.max_iter, self.max_eval = lr, max_iter, max_eval
        self.tolerance_grad, self.tolerance_change = tolerance_grad, tolerance_change
        self.history_size, self.line_search_fn = history_size, line_search_fn
        self.state = {}

    def _gather_flat_grad(self, grads):
        grads = list(grads)
        if len(grads) != len(self.params):
            raise ValueError(f"the closure returned {len(grads)} grads for {len(self.params)} params")
        for i, (p, g) in enumerate(zip(self.params, grads)):
            if g is not None and np.shape(g) != p.shape:
                raise ValueError(f"grads[{i}] has shape {np.shape(g)} but params[{i}] has shape {p.shape}")
        return np.concatenate([np.zeros(p.size, p.dtype) if g is None else np.asarray(g, p.dtype).reshape(-1)
                               for p, g in zip(self.params, grads)])

    def _add_grad(self, step_size, update):
        offset = 0
        for p in self.params:
            view = p.reshape(-1)  # params are contiguous: a view, updated in place
            _axpy(step_size, update[offset:offset + p.size], view)
            offset += p.size

    def _clone_param(self):
        return [p.copy() for p in self.params]

    def _set_param(self, params_data):
        for p, data in zip(self.params, params_data):
            p[...] = data

    def _evaluate(self, closure):
        loss, grads = closure()
        return float(loss), self._gather_flat_grad(grads)

    def _directional_evaluate(self, closure, x, t, d):
        self._add_grad(t, d)
        loss, flat_grad = self._evaluate(closure)
        self._set_param(x)
        return loss, flat_grad

    def step(self, closure):
        """One call of torch's LBFGS.step: up to max_iter iterations; returns the first loss."""
        lr, max_iter, max_eval = self.lr, self.max_iter, self.max_eval
        tolerance_grad, tolerance_change = self.tolerance_grad, self.tolerance_change
        history_size = self.history_size
        state = self.state
        state.setdefault("func_evals", 0)
        state.setdefault("n_iter", 0)

        orig_loss, flat_grad = self._evaluate(closure)
        loss = orig_loss
        current_evals = 1
        state["func_evals"] += 1
        opt_cond = _max_abs(flat_grad) <= tolerance_grad
        if opt_cond:  # optimal condition
            return orig_loss

        d, t = state.get("d"), state.get("t")
        old_dirs, old_stps, ro = state.get("old_dirs"), state.get("old_stps"), state.get("ro")
        H_diag = state.get("H_diag")
        prev_flat_grad, prev_loss = state.get("prev_flat_grad"), state.get("prev_loss")

        n_iter = 0
        while n_iter < max_iter:
            n_iter += 1
            state["n_iter"] += 1
            # compute the direction
            if state["n_iter"] == 1:
                d = -flat_grad
                old_dirs, old_stps, ro = [], [], []
                H_diag = 1
            else:
                y = _difference(flat_grad, prev_flat_grad)
                s = _scaled(d, t)
                ys = _dot(y, s)
                if ys > 1e-10:  # update the memory
                    if len(old_dirs) == history_size:
                        old_dirs.pop(0)
                        old_stps.pop(0)
                        ro.pop(0)
                    old_dirs.append(y)
                    old_stps.append(s)
                    ro.append(1.0 / ys)
                    H_diag = ys / _dot(y, y)
                num_old = len(old_dirs)
                if "al" not in state:
                    state["al"] = [None] * history_size
                al = state["al"]
                # two-loop recursion: q = -H g
                q = -flat_grad
                for i in range(num_old - 1, -1, -1):
                    al[i] = _dot(old_stps[i], q) * ro[i]
                    _axpy(-al[i], old_dirs[i], q)
                d = r = _scaled(q, H_diag)
                for i in range(num_old):
                    be_i = _dot(old_dirs[i], r) * ro[i]
                    _axpy(al[i] - be_i, old_stps[i], r)

            if prev_flat_grad is None:
                prev_flat_grad = flat_grad.copy()
            else:
                prev_flat_grad[...] = flat_grad
            prev_loss = loss

            # the step length
            if state["n_iter"] == 1:
                t = min(1.0, 1.0 / _sum_abs(flat_grad)) * lr
            else:
                t = lr
            gtd = _dot(flat_grad, d)
            if gtd > -tolerance_change:  # directional derivative below tolerance
                break

            ls_func_evals = 0
            if self.line_search_fn == "strong_wolfe":
                x_init = self._clone_param()

                def obj_func(x, t, d):
                    return self._directional_evaluate(closure, x, t, d)

                loss, flat_grad, t, ls_func_evals = _strong_wolfe(
                    obj_func, x_init, t, d, loss, flat_grad, gtd, max_ls=max_eval - current_evals)
                self._add_grad(t, d)
                opt_cond = _max_abs(flat_grad) <= tolerance_grad
            else:
                self._add_grad(t, d)  # fixed step
                if n_iter != max_iter:
                    # re-evaluate unless this was the last iteration
                    loss, flat_grad = self._evaluate(closure)
                    opt_cond = _max_abs(flat_grad) <= tolerance_grad
                    ls_func_evals = 1
            current_evals += ls_func_evals
            state["func_evals"] += ls_func_evals

            # conditions to stop
            if n_iter == max_iter:
                break
            if current_evals >= max_eval:
                break
            if opt_cond:
                break
            if _max_abs(_scaled(d, t)) <= tolerance_change:  # lack of progress
                break
            if abs(loss - prev_loss) < tolerance_change:
                break

        state.update(d=d, t=t, old_dirs=old_dirs, old_stps=old_stps, ro=ro, H_diag=H_diag,
                     prev_flat_grad=prev_flat_grad, prev_loss=prev_loss)
        return orig_loss


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
