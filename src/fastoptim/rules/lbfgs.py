"""L-BFGS (torch.optim.LBFGS, torch 2.13): a closure-driven rule at the Python level.

One param group; every param is part of one flat vector (their concatenation, in order).
step(closure) evaluates the objective as often as it needs (up to max_eval times, with
line_search_fn="strong_wolfe" or a fixed step of lr).  State, as torch keeps it in the
first param's state: func_evals, n_iter (counting across steps), d, t, old_dirs, old_stps,
ro, H_diag, prev_flat_grad, prev_loss, and al from the second iteration on.

The algorithm is torch's, operation by operation; its vector operations are NumPy's (BLAS
dot products, in-place axpy), written as the small functions below.
"""
import math

import numpy as np

from ._rule import Choice, Integer, PythonStep, Real, Rule, Variant

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


def _flat_grad(params, grads):
    """The flat gradient (a new vector): the grads concatenated, None as zeros (torch's _gather_flat_grad)."""
    return np.concatenate([np.zeros(p.size, p.dtype) if g is None else np.asarray(g, p.dtype).reshape(-1)
                           for p, g in zip(params, grads)])


def _add_grad(params, step_size, update):
    """params += step_size * update, update a flat vector over the params in order."""
    offset = 0
    for p in params:
        _axpy(step_size, update[offset:offset + p.size], p.reshape(-1))  # contiguous: a view
        offset += p.size


def lbfgs_step(params, loss, flat_grad, evaluate, state, *, lr, max_iter, max_eval, tolerance_grad,
               tolerance_change, history_size, line_search_fn):
    """One call of torch's LBFGS.step, after the closure's first evaluation (loss, flat_grad).

    params: C-contiguous arrays of one dtype, updated in place; evaluate() -> (loss as a float,
    a new flat grad) at the params' current values; state: torch's entries, updated in place.
    """
    state.setdefault("func_evals", 0)
    state.setdefault("n_iter", 0)
    current_evals = 1
    state["func_evals"] += 1
    opt_cond = _max_abs(flat_grad) <= tolerance_grad
    if opt_cond:  # optimal condition
        return

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
        if line_search_fn == "strong_wolfe":
            x_init = [p.copy() for p in params]

            def obj_func(x, t, d):
                _add_grad(params, t, d)
                try:
                    return evaluate()
                finally:
                    for p, saved in zip(params, x):
                        p[...] = saved

            loss, flat_grad, t, ls_func_evals = _strong_wolfe(
                obj_func, x_init, t, d, loss, flat_grad, gtd, max_ls=max_eval - current_evals)
            _add_grad(params, t, d)
            opt_cond = _max_abs(flat_grad) <= tolerance_grad
        else:
            _add_grad(params, t, d)  # fixed step
            if n_iter != max_iter:
                # re-evaluate unless this was the last iteration
                loss, flat_grad = evaluate()
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


def _check_params(params):
    """LBFGS's params: arrays of one float dtype, C-contiguous and writeable (updated through flat views)."""
    params = list(params)
    for i, p in enumerate(params):
        if not isinstance(p, np.ndarray):
            raise TypeError(f"params[{i}] must be a NumPy array, got {type(p).__qualname__}")
        if p.dtype not in (np.float32, np.float64) or p.dtype != params[0].dtype:
            raise TypeError(f"params[{i}] has dtype {p.dtype}; LBFGS's params form one flat vector: every "
                            f"param must be float32 or float64, params[0]'s dtype ({params[0].dtype})")
        if not (p.flags.c_contiguous and p.flags.writeable):
            raise ValueError(f"params[{i}] must be a C-contiguous, writeable array (updated in place)")
    return params


def _checked_grads(params, grads):
    grads = list(grads)
    if len(grads) != len(params):
        raise ValueError(f"the closure returned {len(grads)} grads for {len(params)} params")
    for i, (p, g) in enumerate(zip(params, grads)):
        if g is not None and np.shape(g) != p.shape:
            raise ValueError(f"grads[{i}] has shape {np.shape(g)} but params[{i}] has shape {p.shape}")
    return grads


def reference(params, closure, state, *, lr, maximize, max_iter, max_eval, tolerance_grad, tolerance_change,
              history_size, line_search_fn):
    """One step of torch's LBFGS over a list of arrays; closure() returns (loss, grads); state is
    torch's state dict (empty at first), updated in place.  Returns the first evaluation's loss.
    A NumPy float32 lr acts like torch's 0-d float32 tensor lr."""
    params = _check_params(params)
    if max_eval is None:
        max_eval = max_iter * 5 // 4

    def evaluate():
        loss, grads = closure()
        return float(loss), _flat_grad(params, _checked_grads(params, grads))

    first_loss, first_grads = closure()
    flat_grad = _flat_grad(params, _checked_grads(params, first_grads))
    lbfgs_step(params, float(first_loss), flat_grad, evaluate, state, lr=lr, max_iter=max_iter, max_eval=max_eval,
               tolerance_grad=tolerance_grad, tolerance_change=tolerance_change, history_size=history_size,
               line_search_fn=line_search_fn)
    return first_loss


class LBFGSStep(PythonStep):
    """step(closure) through the engine: the first evaluation checked before anything is written,
    the rule's state read from and written back to the first param's state."""
    closure = True
    single_group = True

    def step(self, run):
        params = _check_params(run.params)
        hyper = run.hyper[0]
        state = run.read_state()

        def evaluate():
            loss, grads = run.evaluate()
            return float(loss), _flat_grad(params, grads)

        try:
            lbfgs_step(params, float(run.loss), _flat_grad(params, run.grads), evaluate, state, lr=hyper["lr"],
                       **{name: hyper[name] for name in LBFGS.field_names})
        finally:  # what the iterations reached, even when a later evaluation raised
            run.write_state(state)
        return run.loss

    def run_closure(self, params, closure, state, **hyper):
        return reference(params, closure, state, maximize=False, **hyper)


def _max_eval_from_max_iter(defaults):
    """torch: max_eval=None means max_iter * 5 // 4."""
    if defaults.get("max_eval") is None:
        defaults["max_eval"] = defaults["max_iter"] * 5 // 4


LBFGS = Rule(
    kernel="lbfgs",
    options=(
        Real("lr", 1, "learning rate"),
        Integer("max_iter", 20, "max_iter", low=1),
        Integer("max_eval", None, "max_eval", low=1, allow_none=True),
        # torch takes any tolerance: +inf stops after the first evaluation, a negative one never stops
        Real("tolerance_grad", 1e-7, "tolerance_grad", low=-math.inf, allow_inf=True),
        Real("tolerance_change", 1e-9, "tolerance_change", low=-math.inf, allow_inf=True),
        Integer("history_size", 100, "history_size", low=1),
        Choice("line_search_fn", None, (None, "strong_wolfe"), message="only 'strong_wolfe' is supported"),
    ),
    signature="lr max_iter max_eval tolerance_grad tolerance_change history_size line_search_fn",
    torch_signature="lr max_iter max_eval tolerance_grad tolerance_change history_size line_search_fn",
    state=(),
    reference=reference,
    variants=(Variant("LBFGS", "lbfgs", "L-BFGS (closure-driven, one param group)", torch_name="LBFGS",
                      demos=()),),
    step_in_state=False,
    python=LBFGSStep(),
    fill_defaults=_max_eval_from_max_iter,
)
