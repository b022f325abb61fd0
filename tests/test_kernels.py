"""Every kernel equals fastoptim.reference bit for bit: every option set, dtype,
SIMD level, tail size, with one thread and with the work split across threads."""
import numpy as np
import pytest

import fastoptim
from fastoptim._registry import BY_NAME, SPECS

from conftest import DTYPES, SIZES

# The step numbers each test runs, one call each: a late one too (RAdam rectifies from step 6 on)
STEPS = (1, 2, 7)


def run(update, param, grads, state, kwargs, options, spec):
    positional, keyword = state
    for step, grad in zip(STEPS, grads, strict=True):
        update(param, grad, *positional, step=step, **spec.functional_kwargs(options), **keyword, **kwargs)


def assert_kernel_matches_reference(spec, size, dtype, simd_level, rng):
    """Every option set of spec on `size` elements of `dtype`, one thread and two, bit for bit."""
    param0 = rng.standard_normal(size).astype(dtype)
    grads = [rng.standard_normal(size).astype(dtype) for _ in STEPS]
    for options in spec.option_sets():
        expected = param0.copy()
        expected_state = spec.new_state(expected, options)
        run(spec.reference, expected, grads, expected_state, {}, options, spec)
        for threads in (1, 2):
            param = param0.copy()
            state = spec.new_state(param, options)
            with fastoptim.num_threads(threads):
                run(spec.functional, param, grads, state, {}, options, spec)
            where = f"{spec.name} size={size} {options} threads={threads} level={simd_level}"
            np.testing.assert_array_equal(param, expected, err_msg=where)
            for got, want in zip(state[0] + list(state[1].values()),
                                 expected_state[0] + list(expected_state[1].values())):
                np.testing.assert_array_equal(got, want, err_msg=where)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_kernel_matches_reference(spec, size, dtype, simd_level, split_everything):
    assert_kernel_matches_reference(spec, size, dtype, simd_level, np.random.default_rng(size))


# LAMB's pass 0 goes over a block a register at a time at the wide SIMD levels (8 or 16 elements)
# and hands the rest (up to 15 elements, an octet of them into the lanes) to its chunked loop:
# blocks of every length from 16 to 33 (a tensor under 8192 elements is one block; one of
# 2 * 4096 + 2 * length + 1 elements has two, of 4096 + length and 4096 + length + 1), so that
# every remainder is updated as the reference does.
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_lamb_every_block_remainder(dtype, simd_level):
    rng = np.random.default_rng(12)
    for length in range(16, 34):
        assert_kernel_matches_reference(BY_NAME["lamb"], length, dtype, simd_level, rng)
    for length in range(16, 34, 3):
        assert_kernel_matches_reference(BY_NAME["lamb"], 2 * 4096 + 2 * length + 1, dtype, simd_level, rng)


@pytest.mark.parametrize("shape", [(), (3, 5), (2, 3, 4)])
@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_any_shape(spec, shape):
    rng = np.random.default_rng(1)
    options = next(iter(spec.option_sets()))
    param = rng.standard_normal(shape)
    expected = param.copy()
    grads = [rng.standard_normal(shape) for _ in STEPS]
    state, expected_state = spec.new_state(param, options), spec.new_state(expected, options)
    run(spec.functional, param, grads, state, {}, options, spec)
    run(spec.reference, expected, grads, expected_state, {}, options, spec)
    np.testing.assert_array_equal(param, expected)

