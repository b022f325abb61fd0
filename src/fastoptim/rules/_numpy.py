"""Helpers of the rules' NumPy references (whole-array operations, in the array's dtype)."""
import math

import numpy as np


def signed_grad(grad, maximize, grad_scale):
    """The gradient the update sees: divided by grad_scale (torch's fused kernels), negated for maximize."""
    d = -grad if maximize else grad.copy()
    if grad_scale is not None:
        d = d / d.dtype.type(grad_scale)
    return d


def lerp(start, end, weight):
    """torch.lerp_ in place: weight < 0.5 interpolates from start, otherwise back from end."""
    w = start.dtype.type(weight)
    if abs(float(w)) < 0.5:
        start += w * (end - start)
    else:
        start[...] = end - (end - start) * (start.dtype.type(1) - w)


def torch_sign(x):
    """torch.sign on CPU: (x > 0) - (x < 0) in x's dtype, so sign(NaN) = 0 (np.sign(NaN) is NaN)."""
    return (x > 0).astype(x.dtype) - (x < 0).astype(x.dtype)


# ---- the deterministic norm of multi-pass rules (LAMB) -------------------------------

NORM_BLOCKS = 256
NORM_LANES = 8
# A summing pass's blocks (LAMB, Adafactor) hold at least this many elements (csrc's FO_SUM_BLOCK_LENGTH).
SUM_BLOCK_LENGTH = 4096


def sum_blocks(n):
    """The blocks a summing pass cuts a tensor of n elements into: one per SUM_BLOCK_LENGTH
    elements, at least 1 and at most NORM_BLOCKS (reached at 2^20 elements), since each block is
    one kernel call (update_rules.h, fo_sum_blocks)."""
    return min(NORM_BLOCKS, max(1, n // SUM_BLOCK_LENGTH))


def _combine_lanes(lanes):
    """((l0 + l1) + (l2 + l3)) + ((l4 + l5) + (l6 + l7)) over the last axis."""
    return (((lanes[..., 0] + lanes[..., 1]) + (lanes[..., 2] + lanes[..., 3]))
            + ((lanes[..., 4] + lanes[..., 5]) + (lanes[..., 6] + lanes[..., 7])))


def lane_sum(values):
    """The sum of doubles over the last axis in reductions.h's lane order: with m = 8 * (L // 8),
    lane k is 0.0 + v[k] + v[k+8] + ... over the first m, the tail 0.0 + v[m] + ... + v[L-1],
    the result ((l0 + l1) + (l2 + l3)) + ((l4 + l5) + (l6 + l7)) + tail."""
    length = values.shape[-1]
    main = length // NORM_LANES * NORM_LANES
    if main:
        lanes = values[..., :main].reshape(values.shape[:-1] + (-1, NORM_LANES))
        lanes = np.cumsum(lanes, axis=-2)[..., -1, :]  # each lane summed in element order
    else:
        lanes = np.zeros(values.shape[:-1] + (NORM_LANES,))
    tail = np.zeros(values.shape[:-1])
    for k in range(main, length):  # at most 7 elements, summed in order
        tail = tail + values[..., k]
    return _combine_lanes(lanes) + tail


def ordered_sum(values, axis):
    """The sum of doubles over `axis`, 0.0 + v[0] + v[1] + ... in index order."""
    values = np.moveaxis(values, axis, 0)
    total = np.zeros(values.shape[1:])
    for v in values:
        total = total + v
    return total


def _blocks_sum(x, starts, length, square):
    """Sum of the blocks x[s:s+length] for s in starts (of their squares if `square`), in
    reductions.h's order."""
    values = x[starts[:, None] + np.arange(length)]  # (blocks, length), double
    return lane_sum(np.square(values) if square else values)


def block_sum_squares(x, blocks=NORM_BLOCKS):
    """The sum of squares of x, computed so that a C kernel can reproduce it bit for bit.

    The exact order (fastoptim's clipping-norm order with the default 256 blocks, the summing
    passes' with sum_blocks(x.size); csrc/fastoptim/reductions.h):
    1. view x as n = x.size elements in C order, each converted to double;
    2. cut them into B = `blocks` blocks: block b holds elements
       [n*b // B, n*(b+1) // B) (integer division; blocks may be empty);
    3. in each block of length L, with m = 8 * (L // 8): lane k (k = 0..7) is
       0.0 + v[k]^2 + v[k+8]^2 + ... over the first m elements in order, the
       tail is 0.0 + v[m]^2 + ... + v[L-1]^2 in order, and the block's sum is
       ((l0 + l1) + (l2 + l3)) + ((l4 + l5) + (l6 + l7)) + tail;
    4. the result is 0.0 + s_0 + s_1 + ... + s_(B-1), in block order.
    Every operation is a double add or multiply, so the result depends on n
    and the values only, never on threads or SIMD width.
    """
    return _block_sum(x, blocks, square=True)


def block_sum(x, blocks):
    """The sum of x's values (in double) in block_sum_squares' order."""
    return _block_sum(x, blocks, square=False)


def _block_sum(x, blocks, square):
    flat = np.asarray(x, dtype=np.float64).reshape(-1)
    n = flat.size
    bounds = np.array([n * b // blocks for b in range(blocks + 1)], dtype=np.int64)
    lengths = np.diff(bounds)
    block_sums = np.zeros(blocks)
    for length in np.unique(lengths):  # at most two lengths: n // B and n // B + 1
        which = np.nonzero(lengths == length)[0]
        if length:
            block_sums[which] = _blocks_sum(flat, bounds[which], int(length), square)
    return float(np.cumsum(np.concatenate(([0.0], block_sums)))[-1])


def block_norm(x, blocks=NORM_BLOCKS):
    """sqrt(block_sum_squares(x, blocks)), in double."""
    return math.sqrt(block_sum_squares(x, blocks))
