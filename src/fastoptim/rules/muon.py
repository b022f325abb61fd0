"""Muon (torch.optim.Muon, torch 2.13): momentum, then Newton-Schulz orthogonalization of each
2-D param's update.  A rule at the Python level: the matrix products go through NumPy's BLAS
(sgemm), into work arrays kept across steps, so a step allocates nothing in float32 mode.

torch computes Newton-Schulz in bfloat16 (hard-coded); we compute it in float32 by default
(`ns_dtype="float32"`) and can emulate torch's bfloat16 roundings (`ns_dtype="bfloat16"`,
through ml_dtypes).  torch checks ns_steps and ns_coefficients at step time; we check them
with every other option, at construction, in torch's words.
"""
import math

import numpy as np

from ._numpy import lerp, signed_grad
from ._rule import Choice, Demo, Flag, Integer, PythonStep, Real, Reals, Rule, Slot, Variant

NS_DTYPES = ("float32", "bfloat16")


def _lerp_into(out, start, end, weight, difference):
    """out = torch.lerp(start, end, weight) (out may be start; difference: a distinct work array):
    start + w*(end - start) for |w| < 0.5, else end - (end - start)*(1 - w), w rounded to the dtype
    first, as torch does (the reference's _numpy.lerp, without temporaries)."""
    w = start.dtype.type(weight)
    np.subtract(end, start, out=difference)
    if abs(float(w)) < 0.5:
        difference *= w
        np.add(start, difference, out=out)
    else:
        difference *= start.dtype.type(1) - w
        np.subtract(end, difference, out=out)
    return out


def _to_bfloat16(x):
    """Round to bfloat16 (nearest even) and back to float32, as torch's .bfloat16() rounds."""
    import ml_dtypes
    return np.asarray(x, dtype=np.float32).astype(ml_dtypes.bfloat16).astype(np.float32)


_NORM_BLOCK = 4096  # elements summed per einsum call: its float64 cast buffer stays small (32 KiB)


def _frobenius_norm(x):
    """‖x‖_F of a float32 matrix, summed in double (float32 squares are exact there) over blocks of
    rows in a fixed order (no temporary of the matrix's size), rounded to float32."""
    rows = max(1, _NORM_BLOCK // max(1, x.shape[1]))
    total = 0.0
    for start in range(0, x.shape[0], rows):
        block = x[start:start + rows]
        total += float(np.einsum("ij,ij->", block, block, dtype=np.float64))
    return np.float32(math.sqrt(total))


class NewtonSchulzWork:
    """The float32 work arrays of one Newton-Schulz shape (m <= n): X (m, n), the product B @ X,
    the Gram matrix A and its update B (m, m)."""
    __slots__ = ("x", "bx", "gram", "gram_update")

    def __init__(self, m, n):
        self.x, self.bx = np.empty((m, n), np.float32), np.empty((m, n), np.float32)
        self.gram, self.gram_update = np.empty((m, m), np.float32), np.empty((m, m), np.float32)


def newton_schulz(update, ns_coefficients, ns_steps, eps, ns_dtype, work):
    """torch's _zeropower_via_newtonschulz of a 2-D update in float32 through BLAS, in work's arrays:
    returns work.x or its transpose (valid until work's next use).  ns_dtype="bfloat16" runs the
    reference's emulation of torch's bfloat16 instead (it allocates)."""
    if ns_dtype == "bfloat16":
        return newton_schulz_reference(update, ns_coefficients, ns_steps, eps, ns_dtype)
    transposed = update.shape[0] > update.shape[1]
    a, b, c = (np.float32(k) for k in ns_coefficients)
    x, bx, gram, gram_update = work.x, work.bx, work.gram, work.gram_update
    x[...] = update.T if transposed else update                   # rounded to float32 once
    x /= max(_frobenius_norm(x), np.float32(eps))
    for _ in range(ns_steps):
        np.matmul(x, x.T, out=gram)
        np.matmul(gram, gram, out=gram_update)                    # addmm(A, A, A, beta=b, alpha=c): b*A + c*(A@A)
        gram_update *= c
        gram *= b
        gram_update += gram
        np.matmul(gram_update, x, out=bx)                         # addmm(X, B, X, beta=a): a*X + B@X
        x *= a
        x += bx
    return x.T if transposed else x


def newton_schulz_reference(update, ns_coefficients, ns_steps, eps, ns_dtype):
    """The same in plain NumPy, float32 or emulated bfloat16: every tensor torch computes in bfloat16
    (the input, the norm, the quotient, each product) rounded to bfloat16, float32 in between (NumPy's
    BLAS sums in its own order: a few elements can round the other way than torch's)."""
    rnd = _to_bfloat16 if ns_dtype == "bfloat16" else (lambda v: np.asarray(v, dtype=np.float32))
    a, b, c = (np.float32(k) for k in ns_coefficients)
    transposed = update.shape[0] > update.shape[1]
    x = rnd(update.T if transposed else update)
    x = rnd(x / np.maximum(rnd(_frobenius_norm(x)), rnd(eps)))
    for _ in range(ns_steps):
        gram = rnd(x @ x.T)
        gram_update = rnd(b * gram + c * (gram @ gram))
        x = rnd(a * x + gram_update @ x)
    return x.T if transposed else x


def adjusted_lr(lr, adjust_lr_fn, shape):
    """torch's _adjust_lr: lr scaled by the param's (rows, cols)."""
    rows, cols = shape[:2]
    if adjust_lr_fn is None or adjust_lr_fn == "original":
        ratio = math.sqrt(max(1, rows / cols))
    else:  # "match_rms_adamw"
        ratio = 0.2 * math.sqrt(max(rows, cols))
    return lr * ratio


def reference(param, grad, state, *, step, grad_scale, lr, maximize, weight_decay, momentum, nesterov,
              ns_coefficients, eps, ns_steps, adjust_lr_fn, ns_dtype):
    """torch 2.13's Muon on one 2-D param, in torch's order (no maximize option; step unused)."""
    t = param.dtype.type
    g = signed_grad(grad, maximize, grad_scale)
    buf = state["momentum_buffer"]
    lerp(buf, g, 1 - momentum)
    if nesterov:
        update = g.copy()
        lerp(update, buf, momentum)
    else:
        update = buf
    ortho = newton_schulz_reference(update, ns_coefficients, ns_steps, eps, ns_dtype)
    param *= t(1 - lr * weight_decay)
    param += t(-adjusted_lr(lr, adjust_lr_fn, param.shape)) * ortho.astype(param.dtype)


class _Work:
    """A param's work arrays: Newton-Schulz's (by shape) and two of the param's shape and dtype."""

    def __init__(self, param):
        self.newton_schulz = NewtonSchulzWork(*sorted(param.shape))
        self.update, self.difference = np.empty_like(param), np.empty_like(param)


def _update(param, grad, momentum_buffer, work, lr, weight_decay, momentum, nesterov, ns_coefficients, eps,
            ns_steps, adjust_lr_fn, ns_dtype):
    """One param's step, as the reference computes it, in work arrays (no temporaries in float32 mode)."""
    t = param.dtype.type
    _lerp_into(momentum_buffer, momentum_buffer, grad, 1 - momentum, work.difference)
    update = _lerp_into(work.update, grad, momentum_buffer, momentum, work.difference) if nesterov \
        else momentum_buffer
    ortho = newton_schulz(update, ns_coefficients, ns_steps, eps, ns_dtype, work.newton_schulz)
    # (T)(-lr') * X in the param's dtype (float64: X converted first, as the reference's astype)
    np.multiply(ortho, t(-adjusted_lr(lr, adjust_lr_fn, param.shape)), out=work.difference)
    param *= t(1 - lr * weight_decay)
    param += work.difference


def _check_matrices(arrays, names):
    """The functional form's arrays: one float dtype and shape, 2-D, C-contiguous, writeable (but grad)."""
    param = arrays[0]
    for array, name in zip(arrays, names):
        if not isinstance(array, np.ndarray):
            raise TypeError(f"{name} must be a NumPy array, got {type(array).__qualname__}")
        if array.dtype not in (np.float32, np.float64) or array.dtype != param.dtype:
            raise TypeError(f"{name} has dtype {array.dtype}; expected float32 or float64, param's dtype "
                            f"({param.dtype})")
        if array.shape != param.shape:
            raise ValueError(f"{name} has shape {array.shape} but param has shape {param.shape}")
        if not array.flags.c_contiguous:
            raise ValueError(f"{name} is not C-contiguous; pass a contiguous array (no silent copies)")
        if name != "grad" and not array.flags.writeable:
            raise ValueError(f"{name} is read-only; it is updated in place")
    if param.ndim != 2:
        raise ValueError(f"Muon only supports 2D parameters whereas we found a parameter with size: "
                         f"{param.shape} (param)")


class MuonStep(PythonStep):
    """Each param with a grad: momentum (NumPy in place), Newton-Schulz (BLAS), in work arrays
    kept per param across steps."""

    def step(self, run):
        for i, grad in enumerate(run.grads):
            if grad is None:
                continue
            param, (momentum_buffer,) = run.params[i], run.state[i]
            key = ("muon", i, param.shape, param.dtype)
            work = run.scratch.get(key)
            if work is None:
                work = run.scratch[key] = _Work(param)
            if run.grad_scale != 1.0:
                grad = np.divide(grad, param.dtype.type(run.grad_scale), out=work.update)
            hyper = run.hyper[run.groups[i]]
            _update(param, grad, momentum_buffer, work, hyper["lr"], hyper["weight_decay"], hyper["momentum"],
                    hyper["nesterov"], hyper["ns_coefficients"], hyper["eps"], hyper["ns_steps"],
                    hyper["adjust_lr_fn"], hyper["ns_dtype"])

    def run_single(self, rule, arrays, names, step, hyper, grad_scale):
        """The functional form: checks, then the step in fresh work arrays."""
        _check_matrices(arrays, names)
        param, grad, momentum_buffer = arrays
        if grad_scale is not None:
            grad = grad / param.dtype.type(grad_scale)
        _update(param, grad, momentum_buffer, _Work(param), hyper[0], *hyper[2:])


NESTEROV = Flag("nesterov", True)

MUON = Rule(
    kernel="muon",
    options=(
        Real("lr", 1e-3, "learning rate", message="Learning rate should be >= 0 but is: {}"),
        Real("weight_decay", 0.1, "weight decay", message="weight decay should be >= 0 but is: {}"),
        Real("momentum", 0.95, "momentum", message="momentum should be >= 0 but is: {}"),
        NESTEROV,
        Reals("ns_coefficients", (3.4445, -4.7750, 2.0315), 3,
              message="Coefficients must be a tuple of exactly 3 values"),
        Real("eps", 1e-7, "epsilon value"),
        Integer("ns_steps", 5, "ns_steps", low=0, high=99,
                message="Number of steps must be less than 100 for computational efficiency"),
        Choice("adjust_lr_fn", None, (None, "original", "match_rms_adamw"),
               message="Adjust learning rate function {} is not supported"),
        Choice("ns_dtype", "float32", NS_DTYPES, message="Newton-Schulz dtype {} is not supported"),
    ),
    signature="lr weight_decay momentum nesterov ns_coefficients eps ns_steps adjust_lr_fn * ns_dtype",
    torch_signature="lr weight_decay momentum nesterov ns_coefficients eps ns_steps adjust_lr_fn * ns_dtype",
    state=(Slot("momentum_buffer"),),
    reference=reference,
    variants=(Variant(
        "Muon", "muon", "Muon (momentum, Newton-Schulz orthogonalized)", torch_name="Muon",
        # the demos give Muon each param as a matrix (a vector as one row): steps of about lr in norm
        demos=(Demo("Muon", dict(lr=0.05), dict(quadratic=0.15, ill_conditioned=0.15, saddle=0.05, rosenbrock=0.01,
                                                x_cos_pi_x=0.03)),)),),
    grid=dict(momentum=(0.95, 0.3), nesterov=(True, False), adjust_lr_fn=(None, "match_rms_adamw"),
              weight_decay=(0.1, 0.0)),
    step_in_state=False,
    not_in_torch=("ns_dtype",),
    python=MuonStep(),
    ndim=2,
    takes_complex=False,
)
