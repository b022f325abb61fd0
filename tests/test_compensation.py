"""DC-ASGD's fused delay compensation (fastoptim._ext.compensation) against the NumPy
formulas, bit for bit: both dtypes, sizes that end in every SIMD tail, several
segments, 1 and 2 threads split at any element, every SIMD level this CPU runs."""
import numpy as np
import pytest

import fastoptim
from dc_reference import compensate
from fastoptim._ext import compensation as _compensation


def segments(sizes, dtype, seed=0):
    rng = np.random.default_rng(seed)
    def make(scale=1.0):
        return [(scale * rng.standard_normal(n)).astype(dtype) for n in sizes]
    return make(), make(), make(), [np.abs(a) for a in make(0.1)]


@pytest.fixture(params=[1, 2], ids=["1 thread", "2 threads"])
def threads(request, split_everything):
    with fastoptim.num_threads(request.param):
        yield request.param


@pytest.fixture
def simd(simd_level):
    """The kernel follows fastoptim's SIMD level: every level this CPU runs."""
    return simd_level


SIZES = [[0], [1], [3], [7], [8], [15], [16], [17], [31], [33], [1000], [5, 0, 17, 1, 64, 3], [2049, 31]]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("sizes", SIZES, ids=str)
def test_constant_equals_numpy_bit_for_bit(dtype, sizes, threads, simd):
    g, w, w_bak, _ = segments(sizes, dtype)
    expected = [compensate(*a, "constant", 0.04)[0] for a in zip(g, w, w_bak)]
    w_before, b_before = [a.copy() for a in w], [a.copy() for a in w_bak]
    plan = _compensation.Compensation(g, w, w_bak)
    assert plan.size == sum(sizes) and not plan.adaptive
    plan.run_constant(0.04)
    for got, want in zip(g, expected):
        assert got.dtype == dtype
        np.testing.assert_array_equal(got, want)
    for a, b in zip(w + w_bak, w_before + b_before):
        np.testing.assert_array_equal(a, b)           # read, never written


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("sizes", SIZES, ids=str)
def test_adaptive_equals_numpy_bit_for_bit_over_steps(dtype, sizes, threads, simd):
    g, w, w_bak, ms = segments(sizes, dtype)
    ms = [np.zeros_like(a) for a in ms]                 # starts at 0, as DC-ASGD-a's does
    plan = _compensation.Compensation(g, w, w_bak, ms)
    rng = np.random.default_rng(1)
    want_ms = [a.copy() for a in ms]
    for _ in range(3):
        for a in g:
            a[...] = rng.standard_normal(a.shape)
        expected = []
        for k, args in enumerate(zip(g, w, w_bak)):
            new_g, want_ms[k] = compensate(*args, "adaptive", 2.0, 0.95, want_ms[k])
            expected.append(new_g)
        plan.run_adaptive(2.0, 0.95)
        for got, want, got_ms, ms_ref in zip(g, expected, ms, want_ms):
            np.testing.assert_array_equal(got, want)
            np.testing.assert_array_equal(got_ms, ms_ref)


def test_segments_of_both_dtypes_and_any_shape():
    g = [np.ones((2, 3)), np.full(4, 2.0, dtype=np.float32)]
    w = [np.full(6, 3.0), np.full((2, 2), 1.0, dtype=np.float32)]
    w_bak = [np.full((3, 2), 1.0), np.zeros(4, dtype=np.float32)]
    _compensation.Compensation(g, w, w_bak).run_constant(0.5)
    np.testing.assert_array_equal(g[0], np.full((2, 3), 1 + 0.5 * 1 * 1 * 2))
    np.testing.assert_array_equal(g[1], np.full(4, 2 + 0.5 * 4 * 1, dtype=np.float32))


def test_zero_mean_square_and_zero_grad_stay_finite():
    g, w, w_bak, ms = [np.zeros(5)], [np.ones(5)], [np.zeros(5)], [np.zeros(5)]
    _compensation.Compensation(g, w, w_bak, ms).run_adaptive(1.0, 0.95)
    assert (g[0] == 0).all() and (ms[0] == 0).all()


def test_bad_segments_are_named_before_anything_is_written():
    g, w, b = [np.ones(4)], [np.ones(4)], [np.ones(4)]
    with pytest.raises(ValueError, match="params has 2 segments but grads has 1"):
        _compensation.Compensation(g, w + w, b)
    with pytest.raises(ValueError, match=r"backups\[0\] has dtype float32 and 4 elements but grads\[0\] has dtype float64"):
        _compensation.Compensation(g, w, [np.ones(4, dtype=np.float32)])
    with pytest.raises(ValueError, match=r"params\[0\] has dtype float64 and 3 elements"):
        _compensation.Compensation(g, [np.ones(3)], b)
    with pytest.raises(ValueError, match=r"grads\[0\] is not C-contiguous"):
        _compensation.Compensation([np.ones(8)[::2]], w, b)
    read_only = np.ones(4)
    read_only.flags.writeable = False
    with pytest.raises(ValueError, match=r"grads\[0\] is read-only"):
        _compensation.Compensation([read_only], w, b)
    _compensation.Compensation(g, [read_only], [read_only])       # read-only inputs are fine
    with pytest.raises(TypeError, match=r"mean_squares\[0\] has dtype int64"):
        _compensation.Compensation(g, w, b, [np.ones(4, dtype=np.int64)])
    shared = np.ones(8)
    with pytest.raises(ValueError, match=r"shares memory"):
        _compensation.Compensation([shared[:4]], [shared[2:6]], b)
    with pytest.raises(ValueError, match=r"shares memory"):
        _compensation.Compensation(g, w, b, [g[0]])
    with pytest.raises(ValueError, match="no adaptive form"):
        _compensation.Compensation(g, w, b).run_adaptive(1.0, 0.9)
    np.testing.assert_array_equal(g[0], np.ones(4))
