"""Threads follow OpenMP's count (OMP_NUM_THREADS, threadpoolctl) until set_num_threads
sets one; threadpoolctl sees and limits our OpenMP runtime; results never depend on it."""
import os

import numpy as np
import pytest
from threadpoolctl import threadpool_info, threadpool_limits

import fastoptim
from fastoptim._ext import runtime

pytestmark = pytest.mark.skipif(not runtime.OPENMP, reason="a serial build has no OpenMP runtime")


@pytest.fixture
def following_openmp():
    """Steps follow OpenMP for the test, whatever the process had set."""
    old = runtime._num_threads_setting()
    fastoptim.set_num_threads(None)
    yield
    runtime._set_num_threads(old)


def test_threadpool_info_lists_our_openmp_runtime():
    ours = runtime.openmp_library()
    assert ours is not None and os.path.exists(ours)
    listed = [m for m in threadpool_info() if m["internal_api"] == "openmp"]
    assert any(os.path.realpath(m["filepath"]) == os.path.realpath(ours) for m in listed), (ours, listed)


def test_threadpool_limits_limits_our_steps(following_openmp):
    full = fastoptim.get_num_threads()
    assert full == runtime.default_num_threads() == min(runtime.usable_cores(), full)
    with threadpool_limits(1):
        assert fastoptim.get_num_threads() == 1
        with threadpool_limits(2, user_api="openmp"):
            assert fastoptim.get_num_threads() == min(2, runtime.usable_cores())
        assert fastoptim.get_num_threads() == 1
    assert fastoptim.get_num_threads() == full


def test_set_num_threads_overrides_and_none_follows_again(following_openmp):
    with threadpool_limits(1):
        fastoptim.set_num_threads(2)
        assert fastoptim.get_num_threads() == 2
        with fastoptim.num_threads(3) as n:
            assert n == fastoptim.get_num_threads() == 3
        assert fastoptim.get_num_threads() == 2
        with fastoptim.num_threads(None) as n:
            assert n == fastoptim.get_num_threads() == 1  # following threadpoolctl again
        assert fastoptim.get_num_threads() == 2
        fastoptim.set_num_threads(None)
        assert fastoptim.get_num_threads() == 1
    assert fastoptim.get_num_threads() == runtime.default_num_threads()


def test_num_threads_restores_following(following_openmp):
    with fastoptim.num_threads(1):
        assert runtime._num_threads_setting() == 1
    assert runtime._num_threads_setting() == 0
    with threadpool_limits(1):
        assert fastoptim.get_num_threads() == 1


def test_results_bit_identical_under_threadpool_limits(following_openmp, split_everything):
    rng = np.random.default_rng(0)
    shapes = [(1000,), (33, 7), (4097,)]
    start = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    grads = [[rng.standard_normal(s).astype(np.float32) for s in shapes] for _ in range(3)]

    def train(limit):
        params = [p.copy() for p in start]
        opt = fastoptim.AdamW(params, lr=1e-2, weight_decay=0.1, amsgrad=True)
        with threadpool_limits(limit):
            threads = fastoptim.get_num_threads()
            for g in grads:
                opt.step(g)
        return threads, params

    one, ours_one = train(1)
    many, ours_many = train(2)
    assert one == 1 and many == min(2, runtime.usable_cores())
    for a, b in zip(ours_one, ours_many):
        np.testing.assert_array_equal(a.view(np.uint32), b.view(np.uint32))
