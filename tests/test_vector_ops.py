"""L-BFGS's fused vector operations (fastoptim._ext.vector): the NumPy expressions element for
element, sums within rounding of NumPy's, and every result the same bits for 1 and 2 threads
and at every SIMD level; then L-BFGS itself: the same bits for any thread count, and a step
that allocates no vector once its history is full."""
import numpy as np
import pytest

import fastoptim
from fastoptim._ext import runtime, vector
from fastoptim.rules.lbfgs import NumpyVectors

from conftest import DTYPES, traced_memory_growth

# One block, a few blocks (each >= 4096 elements), the most blocks (256), odd tails.
VECTOR_SIZES = (0, 1, 7, 8, 9, 4095, 4 * 4096 + 13, 300_007)


def vectors(n, dtype, count, seed=0):
    rng = np.random.default_rng(seed + n)
    return [rng.standard_normal(n).astype(dtype) for _ in range(count)]


def run_every_op(n, dtype):
    """Every operation on the same inputs: (outputs, sums)."""
    a, x, z, g, prev, d = vectors(n, dtype, 6)
    out, y, s, inplace = np.empty_like(a), np.empty_like(a), np.empty_like(a), a.copy()
    sums = [vector.update(out, a, -0.37, x, 1.9, z), vector.update(inplace, inplace, 0.61, x, 1.0, z),
            vector.update(out.copy(), a, 0.0, None, -1.0, a), *vector.difference(y, s, g, prev, d, 0.73),
            vector.dot(x, z), vector.sum_abs(x), vector.max_abs(x), vector.max_abs(x, -2.5)]
    vector.update(out, a, -0.37, x, 1.9, None)
    return [out, inplace, y, s], sums


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", VECTOR_SIZES)
def test_ops_are_the_numpy_expressions(n, dtype):
    outputs, sums = run_every_op(n, dtype)
    a, x, z, g, prev, d = vectors(n, dtype, 6)
    T = np.dtype(dtype).type
    expected = [(a + T(-0.37) * x) * T(1.9), a + T(0.61) * x, g - prev, d * T(0.73)]
    for got, want in zip(outputs, expected):
        np.testing.assert_array_equal(got, want)
    wide = [v.astype(np.float64) for v in (a, x, z, g, prev, d)]
    a64, x64, z64 = wide[:3]
    y64, s64 = expected[2].astype(np.float64), expected[3].astype(np.float64)
    want_sums = [z64 @ expected[0].astype(np.float64), z64 @ expected[1].astype(np.float64), -(a64 @ a64),
                 y64 @ s64, y64 @ y64, x64 @ z64, np.abs(x64).sum(), np.abs(x64).max(initial=0.0),
                 np.abs((x * T(-2.5)).astype(np.float64)).max(initial=0.0)]
    scale = max(1.0, float(np.abs(a64).sum() + np.abs(x64).sum() + np.abs(z64).sum())) * 4 * max(n, 1)
    for got, want in zip(sums, want_sums):
        assert abs(got - want) <= 1e-16 * scale, (got, want)


@pytest.mark.parametrize("dtype", DTYPES)
def test_same_bits_for_one_and_two_threads_at_every_simd_level(dtype, simd_level, split_everything):
    for n in VECTOR_SIZES:
        results = []
        for threads in (1, 2):
            fastoptim.set_num_threads(threads)
            try:
                results.append(run_every_op(n, dtype))
            finally:
                fastoptim.set_num_threads(None)
        (outputs_1, sums_1), (outputs_2, sums_2) = results
        for one, two in zip(outputs_1, outputs_2):
            np.testing.assert_array_equal(one, two)
        assert sums_1 == sums_2, n


@pytest.mark.parametrize("dtype", DTYPES)
def test_simd_levels_agree_bit_for_bit(dtype):
    old = runtime.get_simd_level()
    try:
        results = {}
        for level in runtime.supported_simd_levels():
            runtime.set_simd_level(level)
            results[level] = run_every_op(300_007, dtype)
    finally:
        runtime.set_simd_level(old)
    (outputs, sums), *others = results.values()
    for other_outputs, other_sums in others:
        assert other_sums == sums
        for one, two in zip(outputs, other_outputs):
            np.testing.assert_array_equal(one, two)


def test_max_abs_propagates_nan_as_torch_max_does():
    x = np.zeros(20_000)
    x[12_345] = np.nan
    x[3] = 7.0
    assert np.isnan(vector.max_abs(x)) and np.isnan(NumpyVectors.max_abs(x))
    x[12_345] = -9.0
    assert vector.max_abs(x) == 9.0 and vector.max_abs(x, 0.5) == 4.5


def test_checks():
    a = np.ones(10)
    with pytest.raises(ValueError, match="out shares memory with x"):
        vector.update(a, a, 1.0, a, 1.0, None)
    with pytest.raises(ValueError, match="out shares memory with a"):
        vector.update(a[1:], a[:-1], 1.0, None, 1.0, None)
    with pytest.raises(ValueError, match=r"z has dtype float32 and 10 elements; expected float64 and 10"):
        vector.update(a, a, 1.0, None, 1.0, np.ones(10, np.float32))
    read_only = np.ones(10)
    read_only.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        vector.difference(read_only, np.ones(10), a, a, a, 1.0)
    with pytest.raises(TypeError, match="float32 or float64"):
        vector.dot(np.ones(3, np.int64), np.ones(3, np.int64))
    with pytest.raises(ValueError, match="C-contiguous"):
        vector.dot(np.ones(20)[::2], np.ones(10))


# ---- L-BFGS ----------------------------------------------------------------------------

def quadratic(n, dtype, seed=3):
    """0.5 sum c_i x_i^2 - b . x with curvatures c in [1, 100]: grads written into one array."""
    rng = np.random.default_rng(seed)
    c, b = rng.uniform(1.0, 100.0, n).astype(dtype), rng.standard_normal(n).astype(dtype)
    grad = np.empty(n, dtype)

    def closure_for(x):
        def closure():
            np.multiply(c, x, out=grad)
            grad[...] -= b
            return 0.5 * float(np.dot(x, grad) - np.dot(b, x)), [grad]  # no temporary vector
        return closure
    return closure_for


def lbfgs_run(n, dtype, threads, steps=3, **options):
    x = np.zeros(n, dtype)
    closure = quadratic(n, dtype)(x)
    opt = fastoptim.LBFGS([x], history_size=4, max_iter=6, **options)
    fastoptim.set_num_threads(threads)
    try:
        losses = [opt.step(closure) for _ in range(steps)]
    finally:
        fastoptim.set_num_threads(None)
    return x, losses, opt.state[0]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("options", [{}, dict(line_search_fn="strong_wolfe")], ids=["fixed", "wolfe"])
def test_lbfgs_same_bits_for_one_and_two_threads(dtype, options, split_everything):
    (x1, losses1, state1), (x2, losses2, state2) = (lbfgs_run(50_001, dtype, t, **options) for t in (1, 2))
    np.testing.assert_array_equal(x1, x2)
    assert losses1 == losses2 and state1["n_iter"] == state2["n_iter"] > 6
    for key in ("d", "prev_flat_grad"):
        np.testing.assert_array_equal(state1[key], state2[key])
    assert [float(r) for r in state1["ro"]] == [float(r) for r in state2["ro"]]


@pytest.mark.parametrize("dtype", DTYPES)
def test_lbfgs_same_bits_at_every_simd_level(dtype):
    old = runtime.get_simd_level()
    try:
        results = []
        for level in runtime.supported_simd_levels():
            runtime.set_simd_level(level)
            results.append(lbfgs_run(20_011, dtype, 1))
    finally:
        runtime.set_simd_level(old)
    for x, losses, _ in results[1:]:
        np.testing.assert_array_equal(x, results[0][0])
        assert losses == results[0][1]


def test_lbfgs_fused_within_rounding_of_the_numpy_reference():
    n = 30_000
    x = np.zeros(n)
    closure_for = quadratic(n, np.float64)
    opt = fastoptim.LBFGS([x], history_size=4, max_iter=6)
    other, state = np.zeros(n), {}
    for _ in range(3):
        opt.step(closure_for(x))
        fastoptim.reference.lbfgs([other], closure_for(other), state, history_size=4, max_iter=6)
    assert opt.state[0]["n_iter"] == state["n_iter"]
    np.testing.assert_allclose(x, other, rtol=1e-10, atol=1e-12)


def test_lbfgs_step_with_a_full_history_allocates_no_vector():
    """Once the history is full, a step reuses the memory of d, of the pair it drops and of its flat
    grad: the same arrays stay in the state and no vector-sized block is allocated."""
    n = 100_000
    x = np.zeros(n)
    opt = fastoptim.LBFGS([x], history_size=3, max_iter=4, tolerance_change=-1.0, tolerance_grad=-1.0)
    closure = quadratic(n, np.float64)(x)
    for _ in range(2):
        opt.step(closure)
    state = opt.state[0]
    assert len(state["old_dirs"]) == 3

    def held():
        """The memory of the state's vectors and the spares kept for the next ones."""
        return {a.__array_interface__["data"][0] for a in [state["d"], state["prev_flat_grad"], *state["old_dirs"],
                                                            *state["old_stps"], *opt._scratch.values()]}
    before = held()
    kept, peak = traced_memory_growth(lambda: opt.step(closure), 3)
    assert held() == before
    assert peak < n * 8 // 4, f"a step allocated {peak} bytes at its peak"
    assert kept < n * 8 // 4
