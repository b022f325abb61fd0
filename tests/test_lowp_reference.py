"""The low-precision references (fastoptim._lowp_reference) against their oracles.

Rounding against ml_dtypes, NumPy and torch; the Philox twin against the C
generator; stochastic rounding for exact unbiasedness; torch's fused 16-bit
kernels bit for bit; bitsandbytes' maps, quantization and 8-bit optimizers.
"""
import itertools
import os
import zlib

import ml_dtypes
import numpy as np
import pytest

from fastoptim import _lowp_reference as L
from fastoptim import blockwise8
from fastoptim import reference
from fastoptim._ext import train as _train_kernels

BF16 = np.dtype(ml_dtypes.bfloat16)
F16 = np.dtype(np.float16)


@pytest.fixture(scope="module")
def bnb(torch):
    """bitsandbytes (the 8-bit oracle); required wherever torch is (FASTOPTIM_REQUIRE_TORCH)."""
    if os.environ.get("FASTOPTIM_REQUIRE_TORCH", "") not in ("", "0"):
        import bitsandbytes
        return bitsandbytes
    return pytest.importorskip("bitsandbytes")


@pytest.fixture
def torch_one_thread(torch):
    """torch on one thread while a test steps many tiny tensors (an OpenMP barrier per tensor
    dominates on a loaded host).  Results do not depend on it: the fused kernels' scalar tail
    is the last numel % 16 elements whatever the split."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield torch
    torch.set_num_threads(threads)


def same_bits_or_both_nan(a, b):
    fa, fb = L.to_f32(a), L.to_f32(b)
    return (fa.view(np.uint32) == fb.view(np.uint32)) | (np.isnan(fa) & np.isnan(fb))


# ---- 1. round to nearest even --------------------------------------------------

def float32_patterns():
    """Every rounding decision of float32 -> bfloat16 and -> float16, plus random patterns.

    For each sign, exponent and top 10 mantissa bits: the low 13 bits at every
    boundary of float16 rounding (0, 1, half - 1, half, half + 1, all ones),
    each combined with the bits 13-15 that bfloat16 also discards; every
    bfloat16 high half with its boundary low halves; and, for float16
    subnormal results, the neighbourhood of every halfway point.
    """
    rng = np.random.default_rng(0)
    high = np.arange(1 << 19, dtype=np.uint32) << 13          # sign, exponent, top 10 mantissa bits
    low13 = np.array([0, 1, 0x0FFF, 0x1000, 0x1001, 0x1FFF], np.uint32)
    parts = [(high[:, None] | low13[None, :]).ravel()]
    upper = np.arange(1 << 16, dtype=np.uint32) << 16
    low16 = np.array([0, 1, 0x7FFF, 0x8000, 0x8001, 0xFFFF], np.uint32)
    parts.append((upper[:, None] | low16[None, :]).ravel())
    for e in range(0, 114):                                   # float16 subnormal results
        shift = 126 - max(e, 1)
        if shift > 30:
            continue
        q = np.arange(0, 1 << max(0, 24 - shift) + 1, dtype=np.int64)
        half = 1 << (shift - 1)
        m = ((q[:, None] << shift) + np.array([-1, 0, 1, half - 1, half, half + 1])[None, :]).ravel()
        m = m[(m >= (0x800000 if e else 0)) & (m < (0x1000000 if e else 0x800000))]
        pattern = (np.uint32(e) << 23) | (m & 0x7FFFFF).astype(np.uint32)
        parts += [pattern, pattern | np.uint32(0x80000000)]
    parts.append(rng.integers(0, 1 << 32, 1 << 20, dtype=np.uint64).astype(np.uint32))
    return np.concatenate(parts).view(np.float32)


@pytest.fixture(scope="module")
def patterns():
    return float32_patterns()


def test_bf16_round_to_nearest_even_matches_ml_dtypes_and_torch(patterns, torch):
    ours = L.bf16_bits_rne(patterns)
    finite_or_inf = ~np.isnan(patterns)
    with np.errstate(invalid="ignore"):
        ml_bits = patterns.astype(BF16).view(np.uint16)
    assert np.array_equal(ours[finite_or_inf], ml_bits[finite_or_inf])
    theirs = torch.from_numpy(patterns).bfloat16().view(torch.int16).numpy().view(np.uint16)
    assert np.array_equal(ours[finite_or_inf], theirs[finite_or_inf])


def test_fp16_round_to_nearest_even_matches_numpy_and_torch(patterns, torch):
    ours = L.fp16_bits_rne(patterns)
    finite_or_inf = ~np.isnan(patterns)
    with np.errstate(over="ignore"):
        numpy_bits = patterns.astype(np.float16).view(np.uint16)
    assert np.array_equal(ours[finite_or_inf], numpy_bits[finite_or_inf])
    # NaN included: torch converts with F16C's VCVTPS2PH, which the reference is
    theirs = torch.from_numpy(patterns).half().view(torch.int16).numpy().view(np.uint16)
    assert np.array_equal(ours, theirs)


def test_nan_stays_nan_quiet_with_sign_and_top_payload():
    nans = np.array([0x7F800001, 0x7FC00000, 0xFF800001, 0x7FBFFFFF, 0xFFFFFFFF, 0x7F812345],
                    np.uint32).view(np.float32)
    b = L.bf16_bits_rne(nans)
    assert np.array_equal(b, [0x7FC0, 0x7FC0, 0xFFC0, 0x7FFF, 0xFFFF, 0x7FC1])
    h = L.fp16_bits_rne(nans)
    assert np.array_equal(h, [0x7E00, 0x7E00, 0xFE00, 0x7FFF, 0xFFFF, 0x7E09])
    assert np.isnan(L.bf16_bits_to_f32(b)).all() and np.isnan(L.fp16_bits_to_f32(h)).all()


def test_overflow_and_subnormal_edges():
    x = np.array([65504, 65519.996, 65520, np.inf, -65520, 2.0**-24, 2.0**-25, 2.0**-25 * 1.0000001,
                  3 * 2.0**-25, 2.0**-14 - 2.0**-25, 3.3895313e38, 3.3961775e38, 3.4028235e38], np.float32)
    assert np.array_equal(L.fp16_bits_rne(x[:11]),
                          [0x7BFF, 0x7BFF, 0x7C00, 0x7C00, 0xFC00, 0x0001, 0x0000, 0x0001, 0x0002, 0x0400, 0x7C00])
    # bfloat16: the largest finite, the halfway point to infinity (rounds to even: inf), FLT_MAX
    assert np.array_equal(L.bf16_bits_rne(x[11:]), [0x7F80, 0x7F80])
    assert L.bf16_bits_rne(x[10:11])[0] == 0x7F7F


@pytest.mark.parametrize("dtype", [BF16, F16], ids=["bf16", "fp16"])
def test_every_16bit_value_round_trips(dtype):
    bits = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16)
    values = bits.view(dtype)
    back = L.round_rne(L.to_f32(values), dtype).view(np.uint16)
    keep = ~np.isnan(L.to_f32(values))
    assert np.array_equal(back[keep], bits[keep])


# ---- 2. Philox and stochastic rounding ------------------------------------------

RANDOM123_KNOWN_ANSWERS = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF, 0xFFFFFFFF), (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
]


def test_philox_matches_random123_and_the_c_generator():
    for counter, key, expected in RANDOM123_KNOWN_ANSWERS:
        assert tuple(L.philox4x32_10(np.array([counter]), *key)[0]) == expected
    rng = np.random.default_rng(1)
    counters = rng.integers(0, 1 << 32, (64, 4), dtype=np.uint64)
    for row in range(64):
        key = rng.integers(0, 1 << 32, 2, dtype=np.uint64)
        ours = L.philox4x32_10(counters[row:row + 1], int(key[0]), int(key[1]))[0]
        theirs = _train_kernels.philox4x32_10([int(c) for c in counters[row]], [int(k) for k in key])
        assert tuple(int(w) for w in ours) == theirs


def test_sr_bits_follow_the_documented_layout_through_the_c_generator():
    seed, step, param = 0x1234567890, (5 << 32) + 77, 3
    key = L.sr_key(seed, step)
    assert key == (0x34567890, (0x12 ^ ((5 * L.STEP_HI_MIX) & 0xFFFFFFFF) ^ L.SR_KEY_TAG) & 0xFFFFFFFF)
    indices = [0, 1, 7, 8, 15, 16, 63, 64, 1000, (1 << 33) + 9]
    for i in indices:
        counter = (i // 64) * 8 + i % 8
        words = _train_kernels.philox4x32_10([counter & 0xFFFFFFFF, counter >> 32, param, step & 0xFFFFFFFF], key)
        expected = (words[(i // 16) % 4] >> (16 * ((i // 8) % 2))) & 0xFFFF
        assert L.sr_random_bits(seed, step, param, 1, start=i)[0] == expected


def test_sr_bits_do_not_depend_on_how_the_range_is_split():
    whole = L.sr_random_bits(7, 3, 2, 1000)
    pieces = np.concatenate([L.sr_random_bits(7, 3, 2, b - a, start=a)
                             for a, b in [(0, 5), (5, 64), (64, 71), (71, 1000)]])
    assert np.array_equal(whole, pieces)
    assert not np.array_equal(whole, L.sr_random_bits(7, 4, 2, 1000))
    assert not np.array_equal(whole, L.sr_random_bits(7, 3, 1, 1000))
    assert not np.array_equal(whole, L.sr_random_bits(8, 3, 2, 1000))


def test_sr_bits_look_uniform():
    r = L.sr_random_bits(0, 1, 0, 1 << 16).astype(np.float64)
    # mean of U{0..65535} is 32767.5 with sd 18918 / sqrt(n) = 74
    assert abs(r.mean() - 32767.5) < 5 * 74
    counts = np.bincount((r // 4096).astype(int), minlength=16)
    chi2 = ((counts - 4096) ** 2 / 4096).sum()
    assert chi2 < 45        # 15 degrees of freedom: p < 1e-4


SR_VALUES = np.array([1.0, -1.0, 0.1, -3.14159, 1e-3, 2.5e-5, 6.1e-5, 1e-30, 1e-40, 3e38, 65000.0, 1e-6],
                     np.float32)


@pytest.mark.parametrize("dtype", [BF16, F16], ids=["bf16", "fp16"])
def test_sr_is_exactly_unbiased_over_all_random_values(dtype):
    r = np.arange(1 << 16, dtype=np.uint32)
    for x in SR_VALUES:
        if dtype == F16 and abs(x) > 65504:
            continue
        xs = np.full(r.size, x, np.float32)
        bits = L.fp16_bits_sr(xs, r) if dtype == F16 else L.bf16_bits_sr(xs, r)
        out = L.to_f32(bits.view(dtype)).astype(np.float64)
        toward_zero, away = out[0], out[-1]                      # r = 0 truncates; r = 0xFFFF rounds up
        assert set(np.unique(out)) <= {toward_zero, away}
        if dtype == F16 and abs(x) < 2.0**-17:
            # fewer than d <= 16 discarded bits resolved: bias below 2^-16 of the spacing 2^-24
            assert abs(out.mean() - float(x)) <= 2.0**-40
        else:
            assert min(toward_zero, away) <= x <= max(toward_zero, away)
            assert out.mean() == float(x)


@pytest.mark.parametrize("dtype", [BF16, F16], ids=["bf16", "fp16"])
def test_sr_keeps_nan_and_inf(dtype):
    x = np.array([np.inf, -np.inf, np.nan, -np.nan, 0.0, -0.0], np.float32)
    x[2:4] = np.array([0x7F800001, 0xFF800001], np.uint32).view(np.float32)   # payload only in low bits
    r = np.full(x.size, 0xFFFF, np.uint32)
    bits = L.fp16_bits_sr(x, r) if dtype == F16 else L.bf16_bits_sr(x, r)
    out = L.to_f32(bits.view(dtype))
    assert out[0] == np.inf and out[1] == -np.inf and np.isnan(out[2:4]).all()
    assert np.array_equal(out[4:].view(np.uint32), x[4:].view(np.uint32))


def test_sr_rounds_up_with_the_probability_of_the_discarded_fraction():
    x = np.full(1 << 15, 1 + 0.3 * 2.0**-7, np.float32)           # 0.3 of a bf16 ulp above 1
    out = L.to_f32(L.round_stochastic(x, BF16, seed=11, step=1, param_index=0))
    p = (out > 1).mean()
    assert abs(p - 0.3) < 5 * np.sqrt(0.3 * 0.7 / x.size)


def sgd_100_steps(**mode):
    n = 4096
    param = np.ones(n, BF16)
    grad = np.ones(n, BF16)
    master = np.ones(n, np.float32) if mode.pop("master", False) else None
    for t in range(1, 101):
        L.step_16bit(reference.sgd, param, grad, {}, step=t, lr=1e-4, master_param=master, **mode)
    return L.to_f32(param), master


def test_issue_check_sgd_on_bf16_ones():
    rne, _ = sgd_100_steps()
    assert (rne == 1.0).all()                                     # 1 - 1e-4 rounds back to 1
    sr, _ = sgd_100_steps(rounding="stochastic", seed=0)
    assert abs(sr.mean() - 0.99) < 2e-3
    _, master = sgd_100_steps(master=True)
    expected = np.float32(1)
    for _ in range(100):
        expected = expected + np.float32(-1e-4) * np.float32(1)       # float32, one rounding each
    assert (master == expected).all() and abs(expected - 0.99) < 2e-6


# ---- 3. torch's fused kernels on 16-bit tensors ---------------------------------

def as_numpy(t, dtype):
    """A bf16/fp16 tensor's bits as a NumPy array of `dtype`."""
    return t.detach().numpy().copy() if dtype == F16 else \
        t.detach().float().numpy().astype(BF16)


def as_torch(torch, a):
    tdt = torch.bfloat16 if a.dtype == BF16 else torch.float16
    return torch.from_numpy(a.view(np.int16).copy()).view(tdt)


TORCH_GRIDS = {
    "Adam": dict(lr=[0.05], weight_decay=[0.0, 0.1], amsgrad=[False, True], maximize=[False, True]),
    "AdamW": dict(lr=[0.05], weight_decay=[0.0, 0.1], amsgrad=[False, True], maximize=[False, True]),
    "Adagrad": dict(lr=[0.05], weight_decay=[0.0, 0.1], lr_decay=[0.0, 0.01], maximize=[False, True]),
    "SGD": dict(lr=[0.05], momentum=[0.0, 0.9], dampening=[0.0, 0.1], weight_decay=[0.0, 0.1],
                nesterov=[False, True], maximize=[False, True]),
}


def torch_cases():
    for name, grid in TORCH_GRIDS.items():
        for k, values in enumerate(itertools.product(*grid.values())):
            opts = dict(zip(grid, values))
            if opts.get("nesterov") and (opts["momentum"] == 0 or opts["dampening"] != 0):
                continue
            yield name, opts, k % 2 == 1        # every other case with a grad scale


def reference_step(name, opts, param, grad, states, step, grad_scale):
    kw = dict(grad_scale=grad_scale)
    if name in ("Adam", "AdamW"):
        beta1, beta2 = opts.get("betas", (0.9, 0.999))
        return L.torch_fused_adam(param, grad, states["exp_avg"], states["exp_avg_sq"],
                                  states.get("max_exp_avg_sq"), step=step, lr=opts["lr"], beta1=beta1,
                                  beta2=beta2, eps=1e-8, weight_decay=opts["weight_decay"],
                                  amsgrad=opts["amsgrad"], maximize=opts["maximize"],
                                  decoupled=name == "AdamW", **kw)
    if name == "Adagrad":
        return L.torch_fused_adagrad(param, grad, states["sum"], step=step, lr=opts["lr"],
                                     lr_decay=opts["lr_decay"], weight_decay=opts["weight_decay"], eps=1e-10,
                                     maximize=opts["maximize"], **kw)
    return L.torch_fused_sgd(param, grad, states.get("momentum_buffer"), lr=opts["lr"],
                             momentum=opts["momentum"], dampening=opts["dampening"],
                             weight_decay=opts["weight_decay"], nesterov=opts["nesterov"],
                             maximize=opts["maximize"], is_first_step=step == 1, **kw)


def run_against_torch(torch, name, opts, dtype, n, steps, grad_scale):
    """20 steps of torch.optim.<name>(fused=True) and of the reference; returns both final states."""
    rng = np.random.default_rng(zlib.crc32(f"{name} {opts} {dtype}".encode()))
    param = L.round_rne(rng.standard_normal(n).astype(np.float32), dtype)
    tparam = as_torch(torch, param)
    opt = getattr(torch.optim, name)([tparam], fused=True, **opts)
    if grad_scale:
        opt.grad_scale, opt.found_inf = torch.tensor(grad_scale), torch.tensor(0.0)
    states = {}
    for step in range(1, steps + 1):
        grad = L.round_rne((rng.standard_normal(n) * (grad_scale or 1)).astype(np.float32), dtype)
        tparam.grad = as_torch(torch, grad)
        opt.step()
        tstate = opt.state[tparam]
        if not states:
            states = {k: np.zeros(n, dtype) for k, v in tstate.items() if k != "step"}
            if name == "Adagrad":
                states["sum"][...] = 0
        reference_step(name, opts, param, grad, states, step, grad_scale)
        assert same_bits_or_both_nan(grad, as_numpy(tparam.grad, dtype)).all()
    return param, states, tparam, opt.state[tparam]


@pytest.mark.parametrize("dtype", [BF16, F16], ids=["bf16", "fp16"])
def test_torch_fused_16bit_bit_for_bit(torch_one_thread, dtype):
    """Every option combination, 20 steps, body and tail (143 = 8 * 16 + 15): identical bits.

    One torch optimizer per (optimizer, grad scale), one param group per option
    combination, so torch runs few Python steps.  SGD: the 15 tail elements
    only; torch 2.13's vector body is broken (test_torch_fused_sgd_16bit_body).
    """
    torch = torch_one_thread
    n = 143
    by_optimizer = {}
    for name, opts, scaled in torch_cases():
        by_optimizer.setdefault((name, scaled), []).append(opts)
    for (name, scaled), option_list in by_optimizer.items():
        grad_scale = 1024.0 if scaled else None
        rng = np.random.default_rng(zlib.crc32(f"{name} {scaled} {dtype}".encode()))
        params = [L.round_rne(rng.standard_normal(n).astype(np.float32), dtype) for _ in option_list]
        tparams = [as_torch(torch, p) for p in params]
        opt = getattr(torch.optim, name)([dict(params=[t], **o) for t, o in zip(tparams, option_list)],
                                         fused=True)
        if grad_scale:
            opt.grad_scale, opt.found_inf = torch.tensor(grad_scale), torch.tensor(0.0)
        states = [{} for _ in option_list]
        for step in range(1, 21):
            grads = [L.round_rne((rng.standard_normal(n) * (grad_scale or 1)).astype(np.float32), dtype)
                     for _ in option_list]
            for t, g in zip(tparams, grads):
                t.grad = as_torch(torch, g)
            opt.step()
            for opts, param, grad, t, st in zip(option_list, params, grads, tparams, states):
                if not st:
                    st.update({k: np.zeros(n, dtype) for k in opt.state[t] if k != "step"})
                reference_step(name, opts, param, grad, st, step, grad_scale)
                assert same_bits_or_both_nan(grad, as_numpy(t.grad, dtype)).all()
        check = slice(n - n % 16, n) if name == "SGD" else slice(None)
        for opts, param, t, st in zip(option_list, params, tparams, states):
            assert same_bits_or_both_nan(param[check], as_numpy(t, dtype)[check]).all(), (name, opts)
            for key, value in st.items():
                assert same_bits_or_both_nan(value[check], as_numpy(opt.state[t][key], dtype)[check]).all(), \
                    (name, opts, key)


FMA_CASES = [  # (optimizer, options, params x elements): every fused multiply-add site of the references
    ("Adam", dict(lr=0.05, weight_decay=0.1, amsgrad=False, maximize=False), (1, 2**16 + 15)),
    ("Adagrad", dict(lr=0.05, weight_decay=0.1, lr_decay=0.0, maximize=False), (1, 2**17 + 15)),
    ("SGD", dict(lr=0.7, momentum=0.9, dampening=0.1, weight_decay=0.1, nesterov=False, maximize=False),
     (1000, 15)),
    ("SGD", dict(lr=1.0, momentum=0.9, dampening=0.0, weight_decay=0.0, nesterov=True, maximize=False),
     (1000, 15)),
]


@pytest.mark.parametrize("case", FMA_CASES, ids=lambda c: f"{c[0]}-{'nesterov' if c[1].get('nesterov') else 'wd'}")
def test_torch_fused_fma_placement(torch_one_thread, case):
    """Enough float16 elements that one float32 rounding more or less somewhere shows in the stored bits.

    A float32 difference flips the float16 result with probability ~2^-13 per
    element; these sizes give hundreds of chances per step (the cases above
    would not: they pass with any placement).  SGD: many params of 15, all
    scalar tail.
    """
    torch = torch_one_thread
    name, opts, (count, n) = case
    rng = np.random.default_rng(9)
    params = [L.round_rne(rng.standard_normal(n).astype(np.float32), F16) for _ in range(count)]
    tparams = [as_torch(torch, p) for p in params]
    opt = getattr(torch.optim, name)(tparams, fused=True, **opts)
    states = [{} for _ in range(count)]
    for step in range(1, 4):
        grads = [L.round_rne(rng.standard_normal(n).astype(np.float32), F16) for _ in range(count)]
        for t, g in zip(tparams, grads):
            t.grad = as_torch(torch, g)
        opt.step()
        for i in range(count):
            if not states[i]:
                states[i] = {k: np.zeros(n, F16) for k in opt.state[tparams[i]] if k != "step"}
            reference_step(name, opts, params[i], grads[i], states[i], step, None)
    for p, t, st in zip(params, tparams, states):
        assert same_bits_or_both_nan(p, as_numpy(t, F16)).all()
        for key, value in st.items():
            assert same_bits_or_both_nan(value, as_numpy(opt.state[t][key], F16)).all(), key


@pytest.mark.parametrize("dtype", [BF16, F16], ids=["bf16", "fp16"])
def test_torch_fused_sgd_16bit_body(torch, dtype):
    """pytorch issue 191763: the fused SGD body never writes 16-bit params (torch <= 2.13).

    If a later torch writes them, they must be the reference's values."""
    opts = dict(lr=0.05, momentum=0.9, dampening=0.0, weight_decay=0.0, nesterov=False, maximize=False)
    param, _, tparam, _ = run_against_torch(torch, "SGD", opts, dtype, 64, 3, None)
    body = as_numpy(tparam, dtype)
    rng = np.random.default_rng(zlib.crc32(f"SGD {opts} {dtype}".encode()))
    start = L.round_rne(rng.standard_normal(64).astype(np.float32), dtype)
    untouched = np.array_equal(body.view(np.uint16), start.view(np.uint16))
    assert untouched or np.array_equal(body.view(np.uint16), param.view(np.uint16))


def test_torch_found_inf_skips_everything(torch):
    param = L.round_rne(np.linspace(-1, 1, 40).astype(np.float32), BF16)
    tparam = as_torch(torch, param)
    opt = torch.optim.Adam([tparam], lr=0.1, fused=True)
    opt.grad_scale, opt.found_inf = torch.tensor(2.0), torch.tensor(1.0)
    tparam.grad = torch.ones(40, dtype=torch.bfloat16)
    opt.step()
    assert opt.state[tparam]["step"].item() == 0
    assert np.array_equal(as_numpy(tparam, BF16).view(np.uint16), param.view(np.uint16))
    assert (as_numpy(tparam.grad, BF16) == 1).all()                     # not unscaled either
    states = {k: np.zeros(40, BF16) for k in ("exp_avg", "exp_avg_sq")}
    assert not L.torch_fused_adam(param, np.ones(40, BF16), states["exp_avg"], states["exp_avg_sq"], step=1,
                                  lr=0.1, beta1=0.9, beta2=0.999, eps=1e-8, grad_scale=2.0, found_inf=1.0)


FASTOPTIM_RULES = {
    "Adam": (reference.adam, ("exp_avg", "exp_avg_sq"), dict(beta1=0.9, beta2=0.999, eps=1e-8)),
    "AdamW": (reference.adamw, ("exp_avg", "exp_avg_sq"), dict(beta1=0.9, beta2=0.999, eps=1e-8,
                                                              weight_decay=0.1)),
    "Adagrad": (reference.adagrad, ("state_sum",), dict(eps=1e-10)),
    "SGD": (reference.sgd, ("momentum_buffer",), dict(momentum=0.9)),
}


def ulps_apart(a, b):
    """|a - b| in units in the last place of the larger magnitude (a, b: arrays of one 16-bit dtype)."""
    larger = np.where(np.abs(L.to_f32(a)) >= np.abs(L.to_f32(b)), a, b)
    magnitude = (larger.view(np.uint16) & 0x7FFF).view(a.dtype)
    ulp = L.to_f32((magnitude.view(np.uint16) + 1).view(a.dtype)) - L.to_f32(magnitude)
    return np.abs(L.to_f32(a) - L.to_f32(b)) / ulp


@pytest.mark.parametrize("dtype", [BF16, F16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("name", sorted(FASTOPTIM_RULES))
def test_fastoptim_16bit_default_within_one_ulp_of_torch_fused(torch, name, dtype):
    """The issue's target: our rules in float32 (no FMA), RNE stores, vs torch fused: <= 1 ulp over 20 steps.

    SGD and Adagrad: torch's scalar tail only.  Its vector body is broken for
    SGD (above) and, for Adagrad, rounds lr, eps and weight_decay to the 16-bit
    type first: up to hundreds of ulps away, and NaN for a zero fp16 grad
    (test_torch_fused_adagrad_fp16_zero_grad_is_nan).
    """
    rule, state_names, hyper = FASTOPTIM_RULES[name]
    n = 4096 + 15
    rng = np.random.default_rng(3)
    param = L.round_rne(rng.standard_normal(n).astype(np.float32), dtype)
    tparam = as_torch(torch, param)
    torch_kw = {"Adam": dict(), "AdamW": dict(weight_decay=0.1), "Adagrad": dict(eps=1e-10),
                "SGD": dict(momentum=0.9)}[name]
    opt = getattr(torch.optim, name)([tparam], lr=0.01, fused=True, **torch_kw)
    states = {s: np.zeros(n, dtype) for s in state_names}
    check = slice(n - 15, n) if name in ("SGD", "Adagrad") else slice(None)
    for step in range(1, 21):
        grad = L.round_rne(rng.standard_normal(n).astype(np.float32), dtype)
        tparam.grad = as_torch(torch, grad)
        opt.step()
        L.step_16bit(rule, param, grad, states, step=step, lr=0.01, **hyper)
        assert ulps_apart(param[check], as_numpy(tparam, dtype)[check]).max() <= 1, (name, step)


def test_torch_fused_adagrad_fp16_zero_grad_is_nan(torch):
    """eps = 1e-10 rounds to 0 in float16, so torch's vector body divides 0 by 0; the reference agrees."""
    param = np.ones(20, F16)
    tparam = as_torch(torch, param)
    tparam.grad = torch.zeros(20, dtype=torch.float16)
    torch.optim.Adagrad([tparam], lr=0.01, fused=True).step()
    L.torch_fused_adagrad(param, np.zeros(20, F16), np.zeros(20, F16), step=1, lr=0.01)
    for result in (as_numpy(tparam, F16), param):
        assert np.isnan(result[:16]).all() and (result[16:] == 1).all()


# ---- 4. bitsandbytes ---------------------------------------------------------------

def test_linspace_is_torchs(torch):
    for n in (2, 3, 5, 9, 17, 33, 65, 129, 1000):
        theirs = torch.linspace(0.1, 1, n, dtype=torch.float32).numpy()
        assert np.array_equal(blockwise8._linspace_float32(0.1, 1, n).view(np.uint32), theirs.view(np.uint32))


@pytest.mark.parametrize("args", [(True, 7, 8), (False, 7, 8), (True, 5, 8), (True, 3, 6), (True, 4, 7)])
def test_dynamic_map_equals_bitsandbytes(bnb, args):
    ours = L.create_dynamic_map(*args)
    theirs = bnb.functional.create_dynamic_map(*args).numpy()
    assert ours.dtype == np.float32 and ours.shape == (256,)
    assert np.array_equal(ours.view(np.uint32), theirs.view(np.uint32))


def test_default_maps():
    signed, unsigned = L.create_dynamic_map(True), L.create_dynamic_map(False)
    assert signed[0] == np.float32(-0.99296875) and signed[-1] == 1 and (signed == 0).sum() == 1
    assert unsigned[0] == 0 and unsigned[-1] == 1 and (unsigned > 0).sum() == 255
    assert (np.diff(signed) > 0).all() and (np.diff(unsigned) > 0).all()


def quantize_brute_force(x, code):
    """Nearest entry by exhaustive search in float64, ties to the lower index."""
    x = np.asarray(x, np.float32).ravel()
    absmax = np.abs(np.pad(x, (0, -x.size % 256)).reshape(-1, 256)).max(axis=1)
    scale = np.repeat(absmax, 256)[:x.size]
    q = np.where(scale > 0, x / np.where(scale > 0, scale, 1), 0).astype(np.float32)
    dist = np.abs(q.astype(np.float64)[:, None] - code.astype(np.float64)[None, :])
    return np.argmin(dist, axis=1).astype(np.uint8), absmax


def test_quantize_is_exact_nearest_with_ties_low():
    code = L.create_dynamic_map(True)
    rng = np.random.default_rng(4)
    x = (rng.standard_normal(256 * 8 + 77) * np.exp(rng.uniform(-14, 0, 256 * 8 + 77))).astype(np.float32)
    x[:256] = 0                                                     # a zero block
    codes, absmax = L.quantize_blockwise(x, code)
    brute, brute_absmax = quantize_brute_force(x, code)
    assert np.array_equal(codes, brute) and np.array_equal(absmax, brute_absmax)
    assert absmax.shape == (9,) and (code[codes[:256]] == 0).all()
    # exactly on a float32-representable midpoint: the lower entry
    mid = (np.float64(code[200]) + np.float64(code[201])) / 2
    assert np.float32(mid) == mid
    assert L.quantize_blockwise(np.array([mid, 1.0], np.float32), code)[0][0] == 200


def test_bnb_quantize_is_a_lookup_table_we_reproduce(bnb, torch):
    code = L.create_dynamic_map(True)
    rng = np.random.default_rng(5)
    x = (rng.standard_normal(256 * 64 + 3) * np.exp(rng.uniform(-12, 0, 256 * 64 + 3))).astype(np.float32)
    qt, qs = bnb.functional.quantize_blockwise(torch.from_numpy(x), code=torch.from_numpy(code.copy()),
                                               blocksize=256)
    lut_codes, lut_absmax = L.bnb_quantize_blockwise_lut(x, code)
    assert np.array_equal(qt.numpy(), lut_codes) and np.array_equal(qs.absmax.numpy(), lut_absmax)
    exact, _ = L.quantize_blockwise(x, code)
    q = x / np.repeat(lut_absmax, 256)[:x.size]
    # exact nearest is never farther; the table misses by up to a few codes, mostly near 0
    assert (np.abs(code[exact] - q) <= np.abs(code[lut_codes] - q)).all()
    assert 0.05 < (exact != lut_codes).mean() < 0.4
    out = bnb.functional.dequantize_blockwise(qt, qs).numpy()
    assert np.array_equal(out, L.dequantize_blockwise(lut_codes, lut_absmax, code))


BNB_RULES = {
    # bnb class, its kwargs, our float32 rule, its kwargs, state names, 2 states?
    "Adam8bit": ("Adam8bit", dict(lr=1e-2), reference.adam, dict(lr=1e-2, beta1=0.9, beta2=0.999, eps=1e-8),
                 ("exp_avg", "exp_avg_sq")),
    "SGD8bit": ("SGD8bit", dict(lr=1e-2, momentum=0.9), reference.sgd, dict(lr=1e-2, momentum=0.9),
                ("momentum_buffer",)),
    "RMSprop8bit": ("RMSprop8bit", dict(lr=1e-3), reference.rmsprop, dict(lr=1e-3, alpha=0.99, eps=1e-8),
                    ("square_avg",)),
    "Adagrad8bit": ("Adagrad8bit", dict(lr=1e-2), reference.adagrad, dict(lr=1e-2, eps=1e-10),
                    ("state_sum",)),
    "Lion8bit": ("Lion8bit", dict(lr=1e-3), L.lion, dict(lr=1e-3, beta1=0.9, beta2=0.99), ("exp_avg",)),
}


@pytest.mark.parametrize("name", sorted(BNB_RULES))
def test_8bit_step_against_bitsandbytes(bnb, torch, name):
    """From bitsandbytes' own state, one step each for 5 steps: how far apart the two are.

    Differences come from bnb's lookup-table quantization (codes off by a few
    near 0) and its eager torch arithmetic (param within a few float32 ulps).
    """
    cls, bnb_kw, rule, kw, names = BNB_RULES[name]
    n = 256 * 16 + 40
    rng = np.random.default_rng(6)
    tparam = torch.from_numpy(rng.standard_normal(n).astype(np.float32))
    opt = getattr(bnb.optim, cls)([tparam], min_8bit_size=0, **bnb_kw)
    nb = -(-n // 256)
    ours = dict(state1=np.zeros(n, np.uint8), absmax1=np.zeros(nb, np.float32),
                state2=np.zeros(n, np.uint8), absmax2=np.zeros(nb, np.float32))
    for step in range(1, 6):
        grad = rng.standard_normal(n).astype(np.float32)
        param = tparam.numpy().copy()
        before = param.copy()
        tparam.grad = torch.from_numpy(grad)
        opt.step()
        s = opt.state[tparam]
        q1 = s["qmap1"].numpy()
        q2 = s["qmap2"].numpy() if len(names) == 2 else None
        L.step_8bit(rule, param, grad, ours["state1"], ours["absmax1"], q1,
                    ours["state2"] if q2 is not None else None, ours["absmax2"], q2,
                    step=step, names=names, **kw)
        for k in ("state1", "absmax1") + (("state2", "absmax2") if q2 is not None else ()):
            theirs = s[k].numpy()
            if k.startswith("state"):
                values = L.dequantize_blockwise(ours[k], ours["absmax" + k[-1]], s["qmap" + k[-1]].numpy())
                their_values = L.dequantize_blockwise(theirs, s["absmax" + k[-1]].numpy(), s["qmap" + k[-1]].numpy())
                # codes a few apart at most: within 1.5% of the block's absmax (one step of the
                # map near its ends is 1.4%)
                scale = np.repeat(s["absmax" + k[-1]].numpy(), 256)[:n]
                assert (np.abs(values - their_values) <= 0.015 * scale).all(), (name, step, k)
                assert (ours[k] != theirs).mean() < 0.05, (name, step, k)
            else:
                assert np.allclose(ours[k], theirs, rtol=2.5e-7, atol=0), (name, step, k)
            ours[k][...] = theirs                     # continue from bnb's state: one-step agreement
        update = np.abs(tparam.numpy() - before)
        assert (np.abs(param - tparam.numpy()) <= 1e-3 * update + 2 * np.spacing(np.abs(param))).all(), (name, step)


def test_8bit_step_skips_blocks_with_nonfinite_grads():
    n = 256 * 3 + 10
    rng = np.random.default_rng(7)
    param = rng.standard_normal(n).astype(np.float32)
    grad = rng.standard_normal(n).astype(np.float32)
    grad[300] = np.nan
    grad[-1] = -np.inf
    q1, q2 = L.create_dynamic_map(True), L.create_dynamic_map(False)
    s1, a1 = L.quantize_blockwise(rng.standard_normal(n).astype(np.float32) * 0.1, q1)
    s2, a2 = L.quantize_blockwise(rng.random(n).astype(np.float32) * 0.01, q2)
    before = [x.copy() for x in (param, s1, a1, s2, a2)]
    skipped = L.step_8bit(reference.adam, param, grad, s1, a1, q1, s2, a2, q2, step=3, lr=1e-2, beta1=0.9,
                          beta2=0.999, eps=1e-8)
    assert skipped == 2
    for blk in (1, 3):
        sl = slice(256 * blk, min(256 * (blk + 1), n))
        for now, then in zip((param, s1, s2), (before[0], before[1], before[3])):
            assert np.array_equal(now[sl], then[sl])
        assert a1[blk] == before[2][blk] and a2[blk] == before[4][blk]
    for blk in (0, 2):
        sl = slice(256 * blk, 256 * (blk + 1))
        assert not np.array_equal(param[sl], before[0][sl])


def test_8bit_step_is_the_float32_rule_then_exact_requantization():
    n = 256 * 2 + 5
    rng = np.random.default_rng(8)
    param = rng.standard_normal(n).astype(np.float32)
    grad = rng.standard_normal(n).astype(np.float32)
    q1 = L.create_dynamic_map(True)
    s1, a1 = L.quantize_blockwise(rng.standard_normal(n).astype(np.float32), q1)
    m = L.dequantize_blockwise(s1, a1, q1)
    expected_param = param.copy()
    reference.sgd(expected_param, grad, m, step=2, lr=0.1, momentum=0.9)
    expected_codes, expected_absmax = L.quantize_blockwise(m, q1)
    L.step_8bit(reference.sgd, param, grad, s1, a1, q1, step=2, names=("momentum_buffer",), lr=0.1, momentum=0.9)
    assert np.array_equal(param, expected_param)
    assert np.array_equal(s1, expected_codes) and np.array_equal(a1, expected_absmax)


def test_bnb_state_dict_layout(bnb, torch):
    p = torch.zeros(1000)
    small = torch.zeros(10)
    opt = bnb.optim.Adam8bit([p, small], min_8bit_size=100)
    p.grad, small.grad = torch.ones(1000), torch.ones(10)
    opt.step()
    sd = opt.state_dict()
    big, tiny = sd["state"][0], sd["state"][1]
    assert big["step"] == 1 and isinstance(big["step"], int)
    quant = big["__bnb_optimizer_quant_state__"]
    assert sorted(quant) == ["absmax1", "absmax2", "qmap1", "qmap2", "state1", "state2"]
    assert quant["state1"].dtype == torch.uint8 and tuple(quant["state1"].shape) == (1000,)
    assert quant["absmax1"].dtype == torch.float32 and tuple(quant["absmax1"].shape) == (4,)
    assert np.array_equal(quant["qmap1"].numpy(), L.create_dynamic_map(True))
    assert np.array_equal(quant["qmap2"].numpy(), L.create_dynamic_map(False))
    # a param under min_8bit_size keeps float32 state1/state2 and no maps
    assert sorted(tiny) == ["__bnb_optimizer_quant_state__", "step"]
    assert tiny["__bnb_optimizer_quant_state__"]["state1"].dtype == torch.float32
    # and loads back
    opt2 = bnb.optim.Adam8bit([torch.zeros(1000), torch.zeros(10)], min_8bit_size=100)
    opt2.load_state_dict(sd)
    assert np.array_equal(opt2.state[opt2.param_groups[0]["params"][0]]["state1"].numpy(),
                          opt.state[p]["state1"].numpy())
