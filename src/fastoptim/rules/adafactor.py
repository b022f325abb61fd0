"""Adafactor (torch.optim.Adafactor, torch 2.13); C: csrc/fastoptim/rules/adafactor.inc.

A param of 2 dimensions or more keeps its second moment factored over its
last two: row_var (shape [..., m, 1], the running mean of g^2 over each row)
and col_var ([..., 1, n], over each column); one of fewer keeps variance, its
own shape.  The step size is relative to the param: alpha = max(eps2,
RMS(p)) * min(lr, 1/sqrt(t)), and the update u = g / sqrt(max(v, eps1^2))
is scaled down to an RMS of at most d.  eps1=None is the param dtype's
machine epsilon (torch takes the first param's of the group; here each
param's own, the same for a group of one dtype).

Factored, u is computed as torch's rsqrt(max(row_var * col_var / normalizer,
eps1^2)) * g only where the clamp applies (or a factor is not finite);
elsewhere as (1 / sqrt(row_var / normalizer)) * (1 / sqrt(col_var)) * g, a
per-row times a per-column factor, as the kernel does to save a division, a
square root and another division per element: within a few roundings of
torch's u (in float32, a few units in the last place; in float64, 1e-16).
Where torch's float32 product row_var * col_var overflows (grads near 1e19)
torch's u is 0 and ours is the finite quotient.

The sums (rows in strips, columns in bands: _factored_sums; the RMS norms in
fixed blocks as LAMB's) are in double, so the kernel agrees with
this reference bit for bit, whatever the threads.  torch sums otherwise:
float64 results agree with it to about 1e-15, float32 ones to float32's
rounding of those sums.
"""
import math

import numpy as np

from ._numpy import block_sum, block_sum_squares, lane_sum, lerp, ordered_sum, signed_grad, sum_blocks
from ._rule import MAXIMIZE, Demo, Pair, Real, Rule, Slot, Variant

FLAGS = (False, True)


# The factored sums' tiles (csrc/fastoptim/rules/adafactor.inc, fo_adafactor_parts): a matrix's
# columns in strips of at least STRIP columns, its rows in bands of at least BAND rows, at most
# MAX_PARTS of each.
STRIP, BAND, MAX_PARTS = 4096, 64, 16


def _parts(length, least):
    return min(max(length // least, 1), MAX_PARTS)


def _factored_sums(squares):
    """Each row's and each column's sum of squares (doubles, ..., m, n) in the kernel's order: a
    row's strips (of `width` columns, a multiple of 8 but the last) each in reductions.h's lane
    order, added in strip order; a column's bands (band k: rows m*k//bands to m*(k+1)//bands) each
    in row order, added in band order."""
    m, n = squares.shape[-2:]
    strips, bands = _parts(n, STRIP), _parts(m, BAND)
    width = -(-n // strips)  # ceil(n / strips) ...
    width = -(-width // 8) * 8  # ... up to a whole number of octets
    rows = np.zeros(squares.shape[:-1])
    for k in range(strips):
        rows = rows + lane_sum(squares[..., k * width:(k + 1) * width])
    cols = np.zeros(squares.shape[:-2] + (n,))
    for k in range(bands):
        cols = cols + ordered_sum(squares[..., m * k // bands:m * (k + 1) // bands, :], -2)
    return rows, cols


def _exact_update(v, g, floor):
    """torch's u = rsqrt(max(v, eps1^2)) * g (clamp_min: NaN stays)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return (floor.dtype.type(1) / np.sqrt(np.where(v < floor, floor, v))) * g


def reference(param, grad, state, *, step, grad_scale, lr, maximize, beta2_decay, eps1, eps2, d, weight_decay):
    t = param.dtype.type
    if param.size == 0:
        return  # torch divides by zero here; nothing to update
    eps1 = float(np.finfo(param.dtype).eps) if eps1 is None else eps1
    g = signed_grad(grad, maximize, grad_scale)
    one_minus_beta2 = float(step) ** beta2_decay
    rho = min(lr, 1 / float(step) ** 0.5)
    floor = t(eps1 * eps1)
    blocks = sum_blocks(param.size)
    if param.ndim >= 2:
        row_var, col_var = state["row_var"], state["col_var"]
        m, n = param.shape[-2:]
        row_sums, col_sums = _factored_sums(np.square(g.astype(np.float64)))
        lerp(row_var, (row_sums / n).astype(param.dtype)[..., None], one_minus_beta2)
        lerp(col_var, (col_sums / m).astype(param.dtype)[..., None, :], one_minus_beta2)
        mean = np.asarray(ordered_sum(row_var[..., 0].astype(np.float64), -1) / m).astype(param.dtype)
        normalizer = np.where(mean < t(eps1), t(eps1), mean)[..., None, None]
        u = _exact_update((row_var * col_var) / normalizer, g, floor)
        # off the clamp (rsqrt(v) <= rsqrt(floor)), a per-row times a per-column factor (the
        # kernel's fast path): the same bits as the kernel, within a few roundings of torch's
        with np.errstate(divide="ignore", invalid="ignore"):
            factor = (t(1) / np.sqrt(row_var / normalizer)) * (t(1) / np.sqrt(col_var))
            u = np.where(factor <= t(1) / np.sqrt(floor), factor * g, u)
        update_squares = block_sum_squares(u, blocks)
    else:
        variance = state["variance"]
        lerp(variance, g * g, one_minus_beta2)
        u = _exact_update(variance, g, floor)
        # u^2 as g * (g / max(v, eps1^2)), as the kernel's first pass sums it (no square root)
        with np.errstate(divide="ignore", invalid="ignore"):
            update_squares = block_sum(g * (g / np.where(variance < floor, floor, variance)), blocks)
    root = param.size ** 0.5
    alpha = max(eps2, math.sqrt(block_sum_squares(param, blocks)) / root) * rho
    denom = max(1.0, math.sqrt(update_squares) / (root * d))
    if weight_decay != 0:
        param *= t(1 - lr * weight_decay)
    param += t(-alpha / denom) * u


ADAFACTOR = Rule(
    kernel="adafactor",
    options=(
        Real("lr", 1e-2, "learning rate", message="Learning rate should be >= 0 but is: {}"),
        Real("beta2_decay", -0.8, "beta2_decay", low=-math.inf, high=0.0,
             message="beta2_decay should be <= 0 but is: {}"),
        Pair("eps", (Real("eps1", None, "epsilon1", allow_none=True, message="epsilon1 should be >= 0 but is: {}"),
                     Real("eps2", 1e-3, "epsilon2", message="epsilon2 should be >= 0 but is: {}"))),
        Real("d", 1.0, "clipping threshold d", low=1.0, message="Clipping threshold d should be >= 1 but is: {}"),
        Real("weight_decay", 0.0, "weight_decay", message="weight_decay should be >= 0 but is: {}"),
        MAXIMIZE,
    ),
    signature="lr beta2_decay eps d weight_decay * maximize",
    torch_signature="lr beta2_decay eps d weight_decay * foreach maximize",
    state=(Slot("row_var", reduced=-1, ndims=(2, None)), Slot("col_var", reduced=-2, ndims=(2, None)),
           Slot("variance", ndims=(None, 1))),
    reference=reference,
    variants=(Variant(
        "Adafactor", "adafactor",
        "Adafactor: second moments factored over rows and columns, steps relative to the param's RMS",
        torch_name="Adafactor",
        demos=(Demo("Adafactor", dict(lr=0.1), dict(quadratic=0.5, ill_conditioned=0.5, saddle=0.1,
                                                     rosenbrock=0.05, x_cos_pi_x=0.2)),)),),
    # a 1-D param: pass 0 reads p, g, variance, writes variance; pass 1 reads p, g, variance, writes p
    traffic=8,
    # factored (2 dimensions or more): the row and column sums read g once; pass 0 reads p, g; pass 1
    # reads p, g, writes p (row_var, col_var and the sums' partials are not per element)
    matrix_traffic=6,
    takes_complex=False,
    # t^-0.8 is 1, 0.57, 0.42 over the kernel tests' three steps: both of lerp's branches
    grid=dict(lr=(0.01,), eps=((None, 1e-3), (1e-4, 0.1)), d=(1.0, 4.0), weight_decay=(0.0, 0.1), maximize=FLAGS),
)
