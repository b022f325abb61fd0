"""Exact NumPy references for low-precision optimizer steps (issue 13).

Pure NumPy (plus ``ml_dtypes`` for the bfloat16 dtype), self-contained, and
written so that each function is literally the algorithm the C kernels are
to run, element by element.  They are test oracles, not fast paths.

Sections
  1. float32 -> bfloat16 / float16 round to nearest even, on bit patterns.
  2. Philox4x32-10 and stochastic rounding keyed by (seed, step, param, element).
  3. torch's fused CPU kernels (Adam, AdamW, SGD, Adagrad) on 16-bit tensors.
  4. bitsandbytes' dynamic maps, blockwise quantization and 8-bit steps.

docs/lowp_notes.md explains every choice; the tests in
tests/test_lowp_reference.py check each section against ml_dtypes, torch,
fastoptim's C Philox and bitsandbytes.
"""

import math

import numpy as np

try:
    import ml_dtypes
    bfloat16 = np.dtype(ml_dtypes.bfloat16)
except ImportError:  # the bf16 extra is not installed: float16 still works
    ml_dtypes = None  # type: ignore[assignment]
    bfloat16 = None

float16 = np.dtype(np.float16)

_U32 = np.uint32


def _bits32(x):
    """The uint32 patterns of float32 values (a view when x is already float32)."""
    return np.ascontiguousarray(x, dtype=np.float32).view(_U32)


def _half_dtype(dtype):
    dtype = np.dtype(dtype)
    if dtype == float16 or (bfloat16 is not None and dtype == bfloat16):
        return dtype
    raise TypeError(f"expected float16 or bfloat16, got {dtype}")


# ---- 1. round to nearest even ------------------------------------------------

def bf16_bits_rne(x):
    """float32 -> bfloat16 bit patterns, round to nearest, ties to even.

    The scalar algorithm of the C kernel, on the float32 pattern u:
        NaN:        (u >> 16) | 0x0040            sign and top payload kept, made quiet
        otherwise:  (u + 0x7FFF + ((u >> 16) & 1)) >> 16
    Adding 0x7FFF plus the kept LSB rounds the discarded 16 bits to nearest
    with ties to even; a carry out of the mantissa increments the exponent,
    which is also how the largest floats overflow to infinity, and subnormals
    need nothing special (bfloat16 shares float32's exponent).
    """
    u = _bits32(x)
    out = ((u + (0x7FFF + ((u >> 16) & 1))) >> 16).astype(np.uint16)
    nan = (u & 0x7FFFFFFF) > 0x7F800000
    if nan.any():
        out[nan] = ((u[nan] >> 16) | 0x0040).astype(np.uint16)
    return out


def fp16_bits_rne(x):
    """float32 -> IEEE binary16 bit patterns, round to nearest, ties to even.

    What F16C's VCVTPS2PH does with imm8 = 0 (RNE, exceptions ignored, MXCSR
    not consulted); the integer form below is the scalar kernel for CPUs
    without F16C.  With a = |u| (the pattern without its sign):
      NaN          a > 0x7F800000:  0x7E00 | (a >> 13 & 0x3FF)   quiet, top payload kept
      overflow     a >= 0x477FF000 (65520, halfway past 65504, and inf): 0x7C00
      normal       a >= 0x38800000 (2^-14): rebias the exponent by 112 and
                   round the low 13 bits: (a - 0x38000000 + 0x0FFF + lsb) >> 13
      subnormal    the 24-bit significand m shifted right by s = 126 - e,
                   rounded to nearest even (0 for |x| <= 2^-25)
    The sign bit is copied.
    """
    u = _bits32(x)
    sign = ((u >> 16) & 0x8000).astype(np.uint16)
    a = u & 0x7FFFFFFF
    out = np.empty(u.shape, np.uint16)

    normal = (a >= 0x38800000) & (a < 0x477FF000)
    an = a[normal] - 0x38000000                    # exponent rebias 127 -> 15
    out[normal] = ((an + 0x0FFF + ((an >> 13) & 1)) >> 13).astype(np.uint16)

    small = a < 0x38800000
    asub = a[small]
    e = asub >> 23
    m = (asub & 0x7FFFFF) | np.where(e > 0, _U32(0x800000), _U32(0))
    # value = m * 2^(max(e,1) - 150); in units of 2^-24 that is m >> (126 - max(e,1))
    s = (126 - np.maximum(e, 1)).astype(np.int64)
    m64 = m.astype(np.int64)
    s_c = np.minimum(s, 40)                         # beyond 2^-40 everything rounds to 0
    q = m64 >> s_c
    rem = m64 - (q << s_c)
    half = np.int64(1) << (s_c - 1)
    q += (rem > half) | ((rem == half) & ((q & 1) == 1))
    out[small] = q.astype(np.uint16)

    big = (a >= 0x477FF000) & (a <= 0x7F800000)
    out[big] = 0x7C00
    nan = a > 0x7F800000
    out[nan] = (0x7E00 | ((a[nan] >> 13) & 0x3FF)).astype(np.uint16)
    return out | sign


def bf16_bits_to_f32(bits):
    """bfloat16 patterns -> float32 (exact: the pattern shifted into the high half)."""
    return (np.asarray(bits, np.uint16).astype(_U32) << 16).view(np.float32)


def fp16_bits_to_f32(bits):
    """float16 patterns -> float32 (exact)."""
    return np.asarray(bits, np.uint16).view(np.float16).astype(np.float32)


def round_rne(x, dtype):
    """float32 values rounded to nearest even in `dtype` (float16 or bfloat16), as a `dtype` array."""
    dtype = _half_dtype(dtype)
    bits = fp16_bits_rne(x) if dtype == float16 else bf16_bits_rne(x)
    return bits.view(dtype)


def to_f32(x):
    """A float16/bfloat16/float32 array widened to float32 (exactly)."""
    x = np.asarray(x)
    if bfloat16 is not None and x.dtype == bfloat16:
        return bf16_bits_to_f32(x.view(np.uint16))
    return x.astype(np.float32)


def rne_f32(x, dtype):
    """float32 -> `dtype` -> float32: the value a 16-bit store keeps."""
    return to_f32(round_rne(x, dtype))


# ---- 2. Philox4x32-10 and stochastic rounding ------------------------------

PHILOX_M0, PHILOX_M1 = 0xD2511F53, 0xCD9E8D57
PHILOX_W0, PHILOX_W1 = 0x9E3779B9, 0xBB67AE85
STEP_HI_MIX = 0x85EBCA6B        # folds the step's high word into key1 (as the noise kernel does)
SR_KEY_TAG = 0x53523136         # "SR16": keeps rounding bits apart from gradient noise under one seed


def philox4x32_10(counters, key0, key1):
    """Philox4x32-10 of each row of `counters` (shape (n, 4), uint32) under key (key0, key1).

    Vectorised twin of fo_philox4x32_10 in csrc/fastoptim/counter_rng.h.
    """
    c = np.asarray(counters, dtype=np.uint64).reshape(-1, 4) & 0xFFFFFFFF
    c0, c1, c2, c3 = (c[:, i].copy() for i in range(4))
    k0, k1 = int(key0) & 0xFFFFFFFF, int(key1) & 0xFFFFFFFF
    for _ in range(10):
        p0 = np.uint64(PHILOX_M0) * c0
        p1 = np.uint64(PHILOX_M1) * c2
        c0, c1, c2, c3 = ((p1 >> np.uint64(32)) ^ c1 ^ np.uint64(k0), p1 & np.uint64(0xFFFFFFFF),
                          (p0 >> np.uint64(32)) ^ c3 ^ np.uint64(k1), p0 & np.uint64(0xFFFFFFFF))
        k0 = (k0 + PHILOX_W0) & 0xFFFFFFFF
        k1 = (k1 + PHILOX_W1) & 0xFFFFFFFF
    return np.stack([c0, c1, c2, c3], axis=1).astype(_U32)


def sr_key(seed, step):
    """The Philox key of stochastic rounding at `step` under `seed`."""
    seed, step = int(seed), int(step)
    key0 = seed & 0xFFFFFFFF
    key1 = ((seed >> 32) ^ (((step >> 32) * STEP_HI_MIX) & 0xFFFFFFFF) ^ SR_KEY_TAG) & 0xFFFFFFFF
    return key0, key1


def sr_counter_layout(index):
    """Where element `index` takes its 16 random bits: (counter, word, half).

    Elements go in groups of 64; one Philox call per (group, lane), lane = i % 8:
        counter = (i // 64) * 8 + i % 8        (64 bits: counter words 0 and 1)
        word    = (i // 16) % 4                (which of the 4 output words)
        half    = (i // 8) % 2                 (0: bits 0-15, 1: bits 16-31)
    so 8 SIMD lanes computing 8 consecutive counters get, from each output word,
    the bits of 8 consecutive elements (low halves) and of the next 8 (high
    halves): no shuffles, and every element's bits depend on its index alone.
    """
    i = np.asarray(index, dtype=np.uint64)
    counter = (i >> np.uint64(6)) * np.uint64(8) + (i & np.uint64(7))
    word = ((i >> np.uint64(4)) & np.uint64(3)).astype(np.intp)
    half = ((i >> np.uint64(3)) & np.uint64(1)).astype(_U32)
    return counter, word, half


def sr_random_bits(seed, step, param_index, n, start=0):
    """The 16 random bits (uint16) of elements start .. start+n-1 of param `param_index` at `step`.

    Philox counter = (counter lo, counter hi, param index, step lo), key = sr_key(seed, step).
    """
    counter, word, half = sr_counter_layout(np.arange(start, start + n, dtype=np.uint64))
    words = np.empty((len(counter), 4), np.uint64)
    words[:, 0] = counter & np.uint64(0xFFFFFFFF)
    words[:, 1] = counter >> np.uint64(32)
    words[:, 2] = int(param_index) & 0xFFFFFFFF
    words[:, 3] = int(step) & 0xFFFFFFFF
    # Each counter serves 8 elements: draw each distinct counter once.
    _, first, inverse = np.unique(counter, return_index=True, return_inverse=True)
    table = philox4x32_10(words[first], *sr_key(seed, step))
    out = table[inverse.ravel(), word]
    return ((out >> (16 * half)) & 0xFFFF).astype(np.uint16)


def bf16_bits_sr(x, r):
    """float32 -> bfloat16 patterns by stochastic rounding with random uint16 `r`.

    (u + r) >> 16 on the float32 pattern u: the discarded 16 bits f round the
    magnitude up exactly when r >= 2^16 - f, with probability f / 2^16, so the
    result is unbiased.  ±inf stay (their low bits are 0); NaN is handled as in
    round to nearest (adding r could turn a NaN with a small payload into inf).
    A finite value above the largest bfloat16 may round up to inf.
    """
    u = _bits32(x)
    out = ((u + np.asarray(r, _U32)) >> 16).astype(np.uint16)
    nan = (u & 0x7FFFFFFF) > 0x7F800000
    if nan.any():
        out[nan] = ((u[nan] >> 16) | 0x0040).astype(np.uint16)
    return out


def fp16_bits_sr(x, r):
    """float32 -> float16 patterns by stochastic rounding with random uint16 `r`.

    The random bits go below the float16 LSB at the value's magnitude:
      |x| >= 2^-14 (float16 normals): the LSB is float32 mantissa bit 13, so
          t = (a + (r >> 3)) & ~0x1FFF, the top 13 random bits under the 13
          discarded bits; t >= 2^16 (past 65504) gives inf; otherwise t
          rebiased is the float16 pattern.
      |x| < 2^-14 (float16 subnormals, spacing 2^-24): with the 24-bit
          significand m and d = 126 - max(e, 1) >= 14 discarded bits,
          q = (m + R) >> d with R = r >> (16 - d) for d <= 16 and
          R = r << (d - 16) beyond: exactly unbiased while d <= 16 (|x| >= 2^-17);
          below, the round-up probability is quantised to 2^-16 (bias under
          2^-40 absolute).
    NaN and ±inf are kept as in round to nearest.
    """
    u = _bits32(x)
    r = np.asarray(r, _U32)
    r = np.broadcast_to(r, u.shape)
    sign = ((u >> 16) & 0x8000).astype(np.uint16)
    a = u & 0x7FFFFFFF
    out = np.empty(u.shape, np.uint16)

    normal = (a >= 0x38800000) & (a < 0x7F800000)
    t = (a[normal] + (r[normal] >> 3)) & ~_U32(0x1FFF)
    out[normal] = np.where(t >= 0x47800000, _U32(0x7C00), (t - 0x38000000) >> 13).astype(np.uint16)

    small = a < 0x38800000
    asub = a[small]
    e = asub >> 23
    m = ((asub & 0x7FFFFF) | np.where(e > 0, _U32(0x800000), _U32(0))).astype(np.int64)
    d = (126 - np.maximum(e, 1)).astype(np.int64)
    rs = r[small].astype(np.int64)
    d_c = np.minimum(d, 40)                          # (m + R) < 2^d whenever d > 40
    rr = np.where(d_c <= 16, rs >> np.maximum(16 - d_c, 0), rs << np.maximum(d_c - 16, 0))
    q = np.where(d <= 40, (m + rr) >> d_c, 0)
    out[small] = q.astype(np.uint16)

    out[a == 0x7F800000] = 0x7C00
    nan = a > 0x7F800000
    out[nan] = (0x7E00 | ((a[nan] >> 13) & 0x3FF)).astype(np.uint16)
    return out | sign


def round_stochastic(x, dtype, seed, step, param_index, start=0):
    """float32 values of one param rounded stochastically to `dtype`, bits from sr_random_bits."""
    dtype = _half_dtype(dtype)
    x = np.ascontiguousarray(x, dtype=np.float32)
    r = sr_random_bits(seed, step, param_index, x.size, start).reshape(x.shape)
    bits = fp16_bits_sr(x, r) if dtype == float16 else bf16_bits_sr(x, r)
    return bits.view(dtype)


# ---- 3. torch's fused CPU kernels on 16-bit tensors -------------------------
#
# aten/src/ATen/native/cpu/Fused{Adam,SGD,Adagrad}Kernel.cpp, torch 2.13, AVX2
# build (Zen 3).  16-bit values are widened to float32, the update runs in
# float32, and each state and the param are rounded back (RNE) when stored.
# The float32 results that feed the param update are the unrounded ones.
# GCC contracts some a*b + c into one fused multiply-add; which ones was found
# by matching torch bit for bit (docs/lowp_notes.md) and is written out below
# with fma32.  Per-step scalars are computed in double, then cast to float.

def fma32(a, b, c):
    """float32 a*b + c with one rounding (what vfmadd does), exactly, in NumPy.

    a*b is exact in float64; the float64 sum is made round-to-odd (nudged one
    float64 ulp toward the exact sum when inexact and even), after which the
    cast to float32 rounds exactly as a single rounding of a*b + c would.
    """
    a64 = np.asarray(a, np.float32).astype(np.float64)
    b64 = np.asarray(b, np.float32).astype(np.float64)
    c64 = np.asarray(c, np.float32).astype(np.float64)
    p = a64 * b64
    s = p + c64
    with np.errstate(invalid="ignore"):
        bv = s - p
        err = (p - (s - bv)) + (c64 - bv)           # Knuth's TwoSum: s + err == p + c exactly
        nudge = (err != 0) & np.isfinite(err) & ((s.view(np.int64) & 1) == 0)
    if np.any(nudge):
        s = np.where(nudge, np.nextafter(s, np.where(err > 0, np.inf, -np.inf)), s)
    return s.astype(np.float32)


def _f32(x):
    return np.float32(x)


def _store(dst, value32):
    """Round float32 values to dst's 16-bit dtype (RNE) and write them in place."""
    dst[...] = round_rne(value32, dst.dtype).reshape(dst.shape)


def _grad_unscaled(grad, grad_scale):
    """torch's grad_scale: grad / float(scale) in float32, written back (rounded) into grad."""
    g = to_f32(grad)
    if grad_scale is not None:
        g = g / _f32(grad_scale)
        _store(grad, g)
    return g


def torch_fused_adam(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq=None, *, step, lr, beta1, beta2,
                     eps, weight_decay=0.0, amsgrad=False, maximize=False, decoupled=False,
                     grad_scale=None, found_inf=None):
    """One torch._fused_adam_ / _fused_adamw_ (decoupled=True) step on 16-bit arrays, in place.

    `step` is the state step after torch's increment (1 on the first step).
    With found_inf true the kernel returns at once (torch then takes the step
    back): nothing is written and False is returned.
    The vectorised body and the scalar tail compute the same bits.
    """
    if found_inf:
        return False
    step = float(np.float32(step))                   # state_step.item<float>() widened to double
    bias_correction1 = 1 - beta1 ** step
    bias_correction2 = 1 - beta2 ** step
    step_size = lr / bias_correction1
    bias_correction2_sqrt = math.sqrt(bias_correction2)

    p = to_f32(param)
    g = _grad_unscaled(grad, grad_scale)
    if maximize:
        g = -g
    if weight_decay != 0:
        if decoupled:
            p = p * _f32(1 - lr * weight_decay)
        else:
            g = fma32(p, _f32(weight_decay), g)
    # exp_avg.lerp_(grad, 1 - beta1): torch's two-sided lerp, one fma
    weight = _f32(1 - beta1)
    m = to_f32(exp_avg)
    if abs(weight) < 0.5:
        m = fma32(weight, g - m, m)
    else:
        m = fma32(weight - _f32(1), g - m, g)
    v = fma32(_f32(1 - beta2) * g, g, to_f32(exp_avg_sq) * _f32(beta2))
    _store(exp_avg, m)
    _store(exp_avg_sq, v)
    if amsgrad:
        v = np.maximum(to_f32(max_exp_avg_sq), v)
        _store(max_exp_avg_sq, v)
    denom = np.sqrt(v) / _f32(bias_correction2_sqrt) + _f32(eps)
    p = p + (_f32(-step_size) * m) / denom
    _store(param, p)
    return True


def torch_fused_sgd(param, grad, momentum_buffer=None, *, lr, momentum=0.0, dampening=0.0, weight_decay=0.0,
                    nesterov=False, maximize=False, is_first_step=False, grad_scale=None, found_inf=None):
    """One torch._fused_sgd_ step on 16-bit arrays, in place: the kernel's scalar path.

    torch 2.13's vectorised body for 16-bit params is broken (pytorch issue
    191763): it never writes the param and reads the momentum buffer as
    float32.  Only the last numel % 16 elements (the scalar tail) are updated,
    by exactly this; the fix (pytorch PR 192545) makes the body compute it too.
    """
    if found_inf:
        return False
    p = to_f32(param)
    g = _grad_unscaled(grad, grad_scale)
    if maximize:
        g = -g
    if weight_decay != 0:
        g = fma32(p, _f32(weight_decay), g)
    if momentum != 0:
        if is_first_step:
            buf = g
        else:
            buf = fma32(to_f32(momentum_buffer), _f32(momentum), g * _f32(1 - dampening))
        _store(momentum_buffer, buf)
        g = fma32(buf, _f32(momentum), g) if nesterov else buf
    _store(param, fma32(-g, _f32(lr), p))
    return True


def torch_fused_adagrad(param, grad, state_sum, *, step, lr, lr_decay=0.0, weight_decay=0.0, eps=1e-10,
                        maximize=False, grad_scale=None, found_inf=None, vector_width=16):
    """One torch._fused_adagrad_ step on 16-bit arrays, in place.

    The vectorised body rounds its constants (weight_decay, eps and the
    decayed lr) to the param's 16-bit type before widening them
    (``fVec(scalar_t(x))``); the scalar tail, the last numel % vector_width
    elements (16 for 16-bit types on AVX2, 32 on AVX-512), uses them in
    float32.  Both are reproduced.
    """
    if found_inf:
        return False
    step = float(np.float32(step))
    clr = lr / (1.0 + (step - 1.0) * lr_decay)
    p = to_f32(param).ravel()
    g = _grad_unscaled(grad, grad_scale).ravel()
    if maximize:
        g = -g
    n = p.size
    body = np.arange(n) < n - n % vector_width

    def const(x):
        return np.where(body, rne_f32(np.float32(x), param.dtype), np.float32(x)).astype(np.float32)

    if weight_decay != 0:
        g = fma32(p, const(weight_decay), g)
    s = fma32(g, g, to_f32(state_sum).ravel())
    _store(state_sum, s)
    std = np.sqrt(s) + const(eps)
    _store(param, p - (const(clr) * g) / std)
    return True


# ---- fastoptim's own 16-bit steps (the behaviour issue 13 asks for) -----------

def step_16bit(rule, param, grad, states, *, step, rounding="nearest", master_param=None, seed=0,
               param_index=0, **hyper):
    """One step of a fastoptim rule on a 16-bit param, as the kernels are to run it.

    `rule` is a float32 update from fastoptim.reference (sgd, adagrad, rmsprop,
    adadelta, adam, adamw), `states` a dict of its state arrays by keyword
    (16-bit, or float32 for state_dtype="float32").  Every element is widened
    to float32, updated by the rule in float32 in the rule's own operation
    order (no fused multiply-adds: fastoptim builds with -ffp-contract=off),
    and stored back; the param update uses the unrounded float32 state, as
    torch's fused kernels do.  Stores round to nearest even, except:
      master_param (float32 array): the rule updates this copy, and the param
          receives its value rounded to nearest even;
      rounding="stochastic": the param (only) is rounded by round_stochastic
          with bits keyed by (seed, step, param_index, element index).
    Everything is updated in place.
    """
    if rounding not in ("nearest", "stochastic"):
        raise ValueError(f"rounding must be 'nearest' or 'stochastic', got {rounding!r}")
    p32 = master_param if master_param is not None else to_f32(param)
    states32 = {name: to_f32(a) for name, a in states.items()}
    rule(p32, to_f32(grad), step=step, **states32, **hyper)
    for name, a in states.items():
        a[...] = states32[name] if a.dtype == np.float32 else round_rne(states32[name], a.dtype)
    if rounding == "stochastic" and master_param is None:
        param[...] = round_stochastic(p32, param.dtype, seed, step, param_index)
    else:
        param[...] = round_rne(p32, param.dtype)


# ---- 4. bitsandbytes' 8-bit blockwise state ----------------------------------

# The maps and the exact quantizer are the package's own (fastoptim.blockwise8), tested against
# bitsandbytes' maps and a brute-force nearest search.
from .blockwise8 import BLOCK_SIZE, create_dynamic_map, dequantize_blockwise, quantize_blockwise  # noqa: E402


def _blocks(n, block_size):
    return -(-n // block_size)


def bnb_quantize_blockwise_lut(x, code, block_size=BLOCK_SIZE):
    """bitsandbytes 0.50's CPU quantize_blockwise, bit for bit: a 65536-bin lookup table.

    Not exact nearest: [-1, 1] is cut into 65535 steps, each bin's code chosen
    for the bin's left point against float32 midpoints; values normalised by
    x * (1 / absmax).  Kept to document (and test) how its codes differ from
    quantize_blockwise's.
    """
    x = np.ascontiguousarray(x, dtype=np.float32).ravel()
    code = np.asarray(code, np.float32)
    midpoints = (np.float32(0.5) * (code[:-1] + code[1:])).astype(np.float32)
    grid = np.float32(-1) + (np.float32(2) * np.arange(65536, dtype=np.float32)) / np.float32(65535)
    lut = np.searchsorted(midpoints, grid, side="left").astype(np.uint8)
    nb = _blocks(x.size, block_size)
    padded = np.zeros(nb * block_size, np.float32)
    padded[:x.size] = x
    absmax = np.abs(padded.reshape(nb, block_size)).max(axis=1).astype(np.float32)
    with np.errstate(divide="ignore"):
        inv = (np.float32(1) / absmax).astype(np.float32)
    v = np.clip(x * np.repeat(inv, block_size)[:x.size], -1, 1).astype(np.float32)
    index = ((v + np.float32(1)) * np.float32(0.5) * np.float32(65535) + np.float32(0.5)).astype(np.uint16)
    codes = np.where(np.repeat(absmax, block_size)[:x.size] > 0, lut[index], 0).astype(np.uint8)
    return codes, absmax


def lion(param, grad, exp_avg, *, step, lr=1e-4, beta1=0.9, beta2=0.99, weight_decay=0.0, maximize=False):
    """Lion (Chen et al. 2023) in float32, in bitsandbytes' order: decay, signed step, then the average.

        c = beta1 * m + (1 - beta1) * g;  p = p * (1 - lr * wd);  p = p - lr * sign(c)
        m = beta2 * m + (1 - beta2) * g
    """
    g = -grad if maximize else grad
    direction = np.sign(exp_avg * np.float32(beta1) + g * np.float32(1 - beta1))
    if weight_decay != 0:
        param *= np.float32(1 - lr * weight_decay)
    param += np.float32(-lr) * direction
    exp_avg *= np.float32(beta2)
    exp_avg += np.float32(1 - beta2) * g


def step_8bit(rule, param, grad, state1, absmax1, qmap1, state2=None, absmax2=None, qmap2=None, *,
              step, names=("exp_avg", "exp_avg_sq"), block_size=BLOCK_SIZE, quantize=quantize_blockwise,
              **hyper):
    """One fused 8-bit blockwise step of `rule` (a float32 update as in step_16bit), in place.

    For each block of `block_size` elements:
      - if any grad in the block is NaN or ±inf, the block's param, codes and
        absmax are left as they were, and the block is counted;
      - else state = qmap[codes] * absmax (float32), the rule updates param and
        state in float32, absmax becomes the new max |state| of the block, and
        the codes are requantized by exact nearest search (quantize_blockwise).
    `names` are the rule's keywords for state1 and state2.  The param may be
    float32 or 16-bit (rounded to nearest even when stored).  Returns the
    number of blocks skipped.  `quantize` can be swapped for
    bnb_quantize_blockwise_lut to reproduce bitsandbytes' codes.
    """
    n = param.size
    g = to_f32(grad).ravel()
    nb = _blocks(n, block_size)
    finite = np.ones(nb * block_size, bool)
    finite[:n] = np.isfinite(g)
    good_block = finite.reshape(nb, block_size).all(axis=1)
    good = np.repeat(good_block, block_size)[:n]

    slots = [(names[0], state1, absmax1, qmap1)]
    if state2 is not None:
        slots.append((names[1], state2, absmax2, qmap2))
    states32 = {name: dequantize_blockwise(codes.reshape(-1), absmax, qmap, block_size)
                for name, codes, absmax, qmap in slots}
    p32 = to_f32(param).ravel()
    with np.errstate(invalid="ignore", over="ignore"):
        rule(p32, np.where(good, g, np.float32(0)), step=step, **states32, **hyper)
    for name, codes, absmax, qmap in slots:
        new_codes, new_absmax = quantize(states32[name], qmap, block_size)
        codes.reshape(-1)[good] = new_codes[good]
        absmax[good_block] = new_absmax[good_block]
    flat = param.reshape(-1)
    flat[good] = p32[good] if param.dtype == np.float32 else round_rne(p32[good], param.dtype)
    return int((~good_block).sum())
