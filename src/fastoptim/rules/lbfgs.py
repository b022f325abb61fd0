"""L-BFGS (torch.optim.LBFGS, torch 2.13): a closure-driven rule at the Python level.

One param group; every param is part of one flat vector (their concatenation, in order).
step(closure) evaluates the objective as often as it needs (up to max_eval times, with
line_search_fn="strong_wolfe" or a fixed step of lr).  State, as torch keeps it in the
first param's state: func_evals, n_iter (counting across steps), d, t, old_dirs, old_stps,
ro, H_diag, prev_flat_grad, prev_loss, and al from the second iteration on.

The algorithm is torch's (lbfgs_step), written over a few vector operations that fuse each
update with the dot product the algorithm needs next (the two-loop recursion is one pass
per history entry and loop).  The stepping forms run them as the fused OpenMP kernels of
fastoptim._ext.vector, whose sums are the same for any thread count; the reference runs
them as the NumPy expressions of NumpyVectors.  Vectors are updated in place: d's memory
holds each new direction, a pair (y, s) dropped from a full history holds the next one, and
the flat grad of a fixed-step evaluation is gathered into the previous one's memory, so a
step allocates only the history torch keeps (and the line search's copies, as torch does).
"""
import math

import numpy as np

from .._ext import vector as fused_vectors
from ._rule import Choice, Demo, Integer, PythonStep, Real, Rule, Variant


class NumpyVectors:
    """The vector operations as NumPy expressions (fused_vectors' semantics, NumPy's sums)."""

    @staticmethod
    def update(out, a, alpha, x, beta, z):
        """out = (a + alpha * x) * beta (x None: a * beta); returns z . out (None without z)."""
        T = out.dtype.type
        out[...] = (a if x is None else a + T(alpha) * x) * T(beta)
        return None if z is None else np.dot(z, out)

    @staticmethod
    def difference(y, s, g, prev, d, t):
        """y = g - prev, s = d * t; returns (y . s, y . y)."""
        y[...] = g - prev
        s[...] = d * s.dtype.type(t)
        return np.dot(y, s), np.dot(y, y)

    @staticmethod
    def dot(x, y):
        return np.dot(x, y)

    @staticmethod
    def sum_abs(x):
        return np.sum(np.abs(x))

    @staticmethod
    def max_abs(x, scale=1.0):
        """max |x * scale|, the product in x's dtype (NaN if an element is)."""
        return np.max(np.abs(x * x.dtype.type(scale)), initial=0.0)


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


def _strong_wolfe(vectors, obj_func, x, t, d, f, g, gtd, c1=1e-4, c2=0.9, tolerance_change=1e-9, max_ls=25):
    T = d.dtype.type
    d_norm = T(vectors.max_abs(d))
    g = g.copy()
    f_new, g_new = obj_func(x, t, d)
    ls_func_evals = 1
    gtd_new = T(vectors.dot(g_new, d))
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
        gtd_new = T(vectors.dot(g_new, d))
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
        gtd_new = T(vectors.dot(g_new, d))
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


def _flat_grad(params, grads, out=None):
    """The flat gradient: the grads concatenated, None as zeros (torch's _gather_flat_grad),
    in `out` when given, else a new vector."""
    if out is None:
        return np.concatenate([np.zeros(p.size, p.dtype) if g is None else np.asarray(g, p.dtype).reshape(-1)
                               for p, g in zip(params, grads)])
    offset = 0
    for p, g in zip(params, grads):
        part = out[offset:offset + p.size]
        if g is None:
            part[...] = 0
        else:
            np.copyto(part, np.asarray(g).reshape(-1), casting="same_kind")
        offset += p.size
    return out


def _add_grad(vectors, params, step_size, update):
    """params += step_size * update, update a flat vector over the params in order."""
    offset = 0
    for p in params:
        flat = p.reshape(-1)  # contiguous: a view
        vectors.update(flat, flat, step_size, update[offset:offset + p.size], 1.0, None)
        offset += p.size


def _writable(vector, shape, dtype):
    """vector if it can be written in place as a C-contiguous array of shape and dtype (a
    checkpoint's may not: read-only, another dtype), else a new one."""
    if (isinstance(vector, np.ndarray) and vector.dtype == dtype and vector.shape == shape
            and vector.flags.c_contiguous and vector.flags.writeable):
        return vector
    return np.empty(shape, dtype)


def _spare(scratch, name, shape, dtype):
    """scratch[name], a vector of shape and dtype that no state entry holds."""
    vector = scratch[name] = _writable(scratch.get(name), shape, dtype)
    return vector


def lbfgs_step(params, loss, flat_grad, evaluate, state, vectors, scratch, *, lr, max_iter, max_eval,
               tolerance_grad, tolerance_change, history_size, line_search_fn):
    """One call of torch's LBFGS.step, after the closure's first evaluation (loss, flat_grad).

    params: C-contiguous arrays of one dtype, updated in place; evaluate(out=None) -> (loss as a
    float, the flat grad at the params' current values, gathered into out when given, else new);
    state: torch's entries, updated in place (to what the iterations reached, also when an
    evaluation raises); vectors: the vector operations (fused_vectors or NumpyVectors); scratch:
    spare vectors kept across calls (the next history pair's memory).
    """
    T = flat_grad.dtype.type
    state.setdefault("func_evals", 0)
    state.setdefault("n_iter", 0)
    current_evals = 1
    state["func_evals"] += 1
    opt_cond = T(vectors.max_abs(flat_grad)) <= tolerance_grad
    if opt_cond:  # optimal condition
        return

    d, t = state.get("d"), state.get("t")
    old_dirs, old_stps, ro = state.get("old_dirs"), state.get("old_stps"), state.get("ro")
    H_diag = state.get("H_diag")
    prev_flat_grad, prev_loss = state.get("prev_flat_grad"), state.get("prev_loss")

    try:
        n_iter = 0
        while n_iter < max_iter:
            n_iter += 1
            state["n_iter"] += 1
            # compute the direction d and gtd = flat_grad . d, each update fused with the next dot
            if state["n_iter"] == 1:
                d = np.empty_like(flat_grad)
                gtd = T(vectors.update(d, flat_grad, 0.0, None, -1.0, flat_grad))  # d = -g
                old_dirs, old_stps, ro = [], [], []
                H_diag = 1
            else:
                previous_d, d = d, _writable(d, flat_grad.shape, flat_grad.dtype)
                y = _spare(scratch, "next_y", flat_grad.shape, flat_grad.dtype)
                s = _spare(scratch, "next_s", flat_grad.shape, flat_grad.dtype)
                ys, yy = vectors.difference(y, s, flat_grad, prev_flat_grad, previous_d, t)  # y = g - g_prev, s = d t
                ys = T(ys)
                if ys > 1e-10:  # update the memory
                    if len(old_dirs) == history_size:
                        # the dropped pair's memory holds the next pair
                        scratch["next_y"], scratch["next_s"] = old_dirs.pop(0), old_stps.pop(0)
                        ro.pop(0)
                    else:
                        del scratch["next_y"], scratch["next_s"]  # kept in the history
                    old_dirs.append(y)
                    old_stps.append(s)
                    ro.append(1.0 / ys)
                    H_diag = ys / T(yy)
                num_old = len(old_dirs)
                if "al" not in state:
                    state["al"] = [None] * history_size
                al = state["al"]
                # two-loop recursion: d = -H g, in d's memory
                if num_old == 0:
                    vectors.update(d, flat_grad, 0.0, None, -1.0, None)
                    gtd = T(vectors.update(d, d, 0.0, None, H_diag, flat_grad))
                else:
                    # q = -g; al[i] = (s_i . q) ro_i and q -= al[i] y_i, i from the newest
                    dot = vectors.update(d, flat_grad, 0.0, None, -1.0, old_stps[-1])
                    for i in range(num_old - 1, 0, -1):
                        al[i] = T(dot) * ro[i]
                        dot = vectors.update(d, d, -al[i], old_dirs[i], 1.0, old_stps[i - 1])
                    al[0] = T(dot) * ro[0]
                    # the last q update and r = q H_diag; be_i = (y_i . r) ro_i, r += (al[i] - be_i) s_i
                    dot = vectors.update(d, d, -al[0], old_dirs[0], H_diag, old_dirs[0])
                    for i in range(num_old):
                        be_i = T(dot) * ro[i]
                        dot = vectors.update(d, d, al[i] - be_i, old_stps[i], 1.0,
                                             old_dirs[i + 1] if i + 1 < num_old else flat_grad)
                    gtd = T(dot)
            state["d"] = d

            if prev_flat_grad is None:
                prev_flat_grad = flat_grad.copy()
            else:
                prev_flat_grad[...] = flat_grad
            prev_loss = loss

            # the step length
            if state["n_iter"] == 1:
                t = min(1.0, 1.0 / T(vectors.sum_abs(flat_grad))) * lr
            else:
                t = lr
            if gtd > -tolerance_change:  # directional derivative below tolerance
                break

            ls_func_evals = 0
            if line_search_fn == "strong_wolfe":
                x_init = [p.copy() for p in params]

                def obj_func(x, t, d):
                    _add_grad(vectors, params, t, d)
                    try:
                        return evaluate()  # a new vector: the line search keeps it
                    finally:
                        for p, saved in zip(params, x):
                            p[...] = saved

                loss, flat_grad, t, ls_func_evals = _strong_wolfe(
                    vectors, obj_func, x_init, t, d, loss, flat_grad, gtd, max_ls=max_eval - current_evals)
                _add_grad(vectors, params, t, d)
                opt_cond = T(vectors.max_abs(flat_grad)) <= tolerance_grad
            else:
                _add_grad(vectors, params, t, d)  # fixed step
                if n_iter != max_iter:
                    # re-evaluate unless this was the last iteration, into flat_grad's memory
                    # (prev_flat_grad holds its values)
                    loss, flat_grad = evaluate(flat_grad)
                    opt_cond = T(vectors.max_abs(flat_grad)) <= tolerance_grad
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
            if T(vectors.max_abs(d, t)) <= tolerance_change:  # lack of progress
                break
            if abs(loss - prev_loss) < tolerance_change:
                break
    finally:
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

    return _step_with_closure(params, closure, state, NumpyVectors, {}, lr=lr, max_iter=max_iter, max_eval=max_eval,
                              tolerance_grad=tolerance_grad, tolerance_change=tolerance_change,
                              history_size=history_size, line_search_fn=line_search_fn)


def _step_with_closure(params, closure, state, vectors, scratch, *, max_eval, max_iter, **hyper):
    """One step with closure() -> (loss, grads) and the given vector operations."""
    params = _check_params(params)
    if max_eval is None:
        max_eval = max_iter * 5 // 4

    def evaluate(out=None):
        loss, grads = closure()
        return float(loss), _flat_grad(params, _checked_grads(params, grads), out)

    first_loss, first_grads = closure()
    flat_grad = _flat_grad(params, _checked_grads(params, first_grads))
    lbfgs_step(params, float(first_loss), flat_grad, evaluate, state, vectors, scratch, max_iter=max_iter,
               max_eval=max_eval, **hyper)
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

        def evaluate(out=None):
            loss, grads = run.evaluate()
            return float(loss), _flat_grad(params, grads, out)

        try:
            # the first flat grad into the memory kept for it (never a state entry: those are copies)
            size = sum(p.size for p in params)
            flat_grad = _flat_grad(params, run.grads, _spare(run.scratch, "flat_grad", (size,), params[0].dtype))
            lbfgs_step(params, float(run.loss), flat_grad, evaluate, state, fused_vectors, run.scratch,
                       lr=hyper["lr"], **{name: hyper[name] for name in LBFGS.field_names})
        finally:  # what the iterations reached, even when a later evaluation raised
            run.write_state(state)
        return run.loss

    def run_closure(self, params, closure, state, **hyper):
        # the functional form keeps no scratch: a full history's next pair is new memory
        return _step_with_closure(params, closure, state, fused_vectors, {}, **hyper)


def _max_eval_from_max_iter(defaults):
    """torch: max_eval=None means max_iter * 5 // 4."""
    if defaults.get("max_eval") is None:
        defaults["max_eval"] = defaults["max_iter"] * 5 // 4


_ONE_ITERATION = dict(lr=1, max_iter=1, max_eval=10, history_size=10, line_search_fn="strong_wolfe")

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
                      demos=(Demo("LBFGS", dict(lr=1, max_iter=2, history_size=5, line_search_fn="strong_wolfe"),
                                  # one iteration per step, each point of the path; on the saddle,
                                  # where a line search runs off at once, a short fixed step
                                  dict(quadratic=_ONE_ITERATION, ill_conditioned=_ONE_ITERATION,
                                       saddle=dict(lr=0.02, max_iter=1, history_size=10),
                                       rosenbrock=_ONE_ITERATION, x_cos_pi_x=_ONE_ITERATION)),)),),
    step_in_state=False,
    python=LBFGSStep(),
    fill_defaults=_max_eval_from_max_iter,
)
