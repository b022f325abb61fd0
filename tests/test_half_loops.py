"""The rules' loops on bfloat16 storage (csrc/fastoptim/loops.inc, FO_HALF_STORAGE) against the
staged driver they replace (staged.inc): the same bits for every option set, SIMD level, thread
split and vector tail, on values that hit every rounding case (NaN, infinities, overflow,
subnormals), and on the state_dtype="float32" and master-weight modes, which stay staged.

Where two NaNs of different payloads meet in one operation, which one comes out depends on the
order the compiler gives the operands, which differs between SIMD levels in the staged driver
itself; so the rules' results are compared bit for bit except for the payload of such NaNs, and
the rounding of every float32 pattern, NaN payloads included, on one operation at a time."""
import numpy as np
import pytest

import fastoptim
from fastoptim import _lowp_reference as lowp
from fastoptim._ext import runtime
from fastoptim._registry import SPECS

from test_lowp import all_state, assert_same_bits, bits, new_state, random_half

ml_dtypes = pytest.importorskip("ml_dtypes")
BF16 = ml_dtypes.bfloat16
# The rules with loops on bfloat16 storage (rules.h, FO_HALF_RULES); the others stay staged.
EXPECTED_RULES = {"sgd", "adagrad", "rmsprop", "adadelta", "adam", "adamax", "radam", "lion", "rprop"}
LOOP_SPECS = tuple(spec for spec in SPECS if spec.rule.kernel in EXPECTED_RULES)
# one element; around the 8- and 16-wide vector bodies and their tails; a staged chunk (256) and more
SIZES = (1, 7, 8, 15, 16, 17, 31, 33, 273, 2113)
STEPS = 3


@pytest.fixture
def staged_only():
    """Runs the body with every 16-bit param through the staged drivers."""
    old = runtime._set_half_loops(False)
    yield
    runtime._set_half_loops(old)


def test_the_rules_with_bfloat16_loops_are_the_expected_ones(simd_level, staged_only):
    assert runtime.half_loop_rules()["bfloat16"] == ()
    runtime._set_half_loops(True)
    assert set(runtime.half_loop_rules()["bfloat16"]) == EXPECTED_RULES


def assert_same_bits_but_nan_payloads(got, want, where):
    """The same bits, except that a NaN may be another NaN."""
    nan = np.isnan(want.astype(np.float32))
    np.testing.assert_array_equal(np.isnan(got.astype(np.float32)), nan, err_msg=where + " (NaN positions)")
    np.testing.assert_array_equal(bits(got)[~nan], bits(want)[~nan], err_msg=where)


def awkward_half(rng, size, scale=1.0):
    """Normal values at several magnitudes, with NaNs (payloads, both signs), infinities, zeros,
    subnormals and values near the largest bfloat16 sprinkled in."""
    x = random_half(rng, size, np.float32, scale) * np.float32(10.0) ** rng.integers(-3, 4, size)
    specials = np.array([np.nan, -np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-40, -3e-39, 3.3e38, -3.3e38],
                        dtype=np.float32)
    where = rng.random(size) < 0.1
    x[where] = rng.choice(specials, where.sum())
    h = x.astype(BF16)
    payload = np.isnan(x) & (rng.random(size) < 0.5)  # a NaN with other payload bits
    h.view(np.uint16)[payload] |= np.uint16(0x15)
    return h


def step_all(spec, options, param, grads, state, threads):
    positional, keyword = state
    with fastoptim.num_threads(threads):
        for step, grad in enumerate(grads, start=1):
            spec.functional(param, grad, *positional, step=step, **spec.functional_kwargs(options), **keyword)


@pytest.mark.parametrize("spec", LOOP_SPECS, ids=lambda s: s.name)
def test_bfloat16_loops_match_the_staged_driver(spec, simd_level, split_everything):
    for size in SIZES:
        rng = np.random.default_rng(size)
        param0 = awkward_half(rng, size)
        grads = [awkward_half(rng, size) for _ in range(STEPS)]
        for options in spec.option_sets():
            state0 = new_state(spec, param0, options, False)
            for array in all_state(state0):  # a state other than its start value: |awkward values|
                if array is not None and array.ndim:
                    array[...] = np.abs(awkward_half(rng, size)).astype(BF16)
            results = {}
            for loops in (True, False):
                old = runtime._set_half_loops(loops)
                try:
                    for threads in (1, 2):
                        param = param0.copy()
                        state = ([None if a is None else a.copy() for a in state0[0]],
                                 {k: a.copy() for k, a in state0[1].items()})
                        step_all(spec, options, param, grads, state, threads)
                        results[loops, threads] = [param] + all_state(state)
                finally:
                    runtime._set_half_loops(old)
            for threads in (1, 2):
                where = f"{spec.name} {options} size={size} threads={threads} level={simd_level}"
                for got, want in zip(results[True, threads], results[False, threads]):
                    if got is not None:
                        assert_same_bits_but_nan_payloads(got, want, where)


@pytest.mark.parametrize("mode", [{}, {"state_dtype": "float32"}, {"master_weights": True}],
                         ids=["nearest", "state32", "master"])
def test_optimizer_bfloat16_modes_match_the_staged_driver(mode, simd_level, split_everything):
    """The step engine's plan (several params, one call per group) chooses the loops per param:
    the default mode takes them, state_dtype="float32" and master weights stay staged."""
    spec = next(s for s in SPECS if s.name == "adam")
    rng = np.random.default_rng(11)
    sizes = (33, 2113, 1)
    params0 = [awkward_half(rng, n) for n in sizes]
    grads = [[awkward_half(rng, n) for n in sizes] for _ in range(STEPS)]
    results = {}
    for loops in (True, False):
        old = runtime._set_half_loops(loops)
        try:
            params = [p.copy() for p in params0]
            opt = spec.cls(params, lr=1e-2, amsgrad=True, weight_decay=0.1, **mode)
            with fastoptim.num_threads(2):
                for g in grads:
                    opt.step(g)
            results[loops] = (params, opt.state)
        finally:
            runtime._set_half_loops(old)
    for index in range(len(sizes)):
        where = f"param {index} {mode} level={simd_level}"
        assert_same_bits_but_nan_payloads(results[True][0][index], results[False][0][index], where)
        for key, value in results[False][1][index].items():
            if isinstance(value, np.ndarray) and value.ndim:
                assert_same_bits_but_nan_payloads(results[True][1][index][key], value, f"{where} {key}")


# 1 + 2^-8 makes ties (low 16 bits 0x8000) of many products; tiny and huge ones make subnormal
# and overflowing results
LEARNING_RATES = (1.0, 1.0 + 2.0**-8, 1.0 + 2.0**-8 + 2.0**-23, 3.0 * 2.0**-9, 1e-30, 1e30)


def test_bfloat16_loops_round_every_kind_of_float32(simd_level, split_everything):
    """One SGD step from 0 with every bfloat16 pattern as the grad: the param's new value is the
    float32 0 + -lr * grad rounded into bfloat16 by the loop (one NaN per operation, so its
    payload is defined), as the staged driver and the NumPy reference round it."""
    spec = next(s for s in SPECS if s.name == "sgd")
    every = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(BF16)
    for lr in LEARNING_RATES:
        with np.errstate(all="ignore"):
            expected = lowp.round_rne(np.float32(0) + np.float32(-lr) * lowp.to_f32(every), BF16)
        for threads in (1, 2):
            got = {}
            for loops in (True, False):
                old = runtime._set_half_loops(loops)
                try:
                    param = np.zeros_like(every)
                    step_all(spec, {"lr": lr}, param, [every], ([None], {}), threads)
                    got[loops] = param
                finally:
                    runtime._set_half_loops(old)
            where = f"lr={lr} threads={threads} level={simd_level}"
            assert_same_bits(got[True], got[False], where + " (against the staged driver)")
            assert_same_bits(got[True], expected, where + " (against the reference)")
