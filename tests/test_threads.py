"""Thread safety: Python threads stepping optimizers at once.

The kernels run without the GIL, so threads stepping different optimizers run
truly in parallel and must give the bits they give one after another; two
threads stepping the same optimizer must get an error, never a torn update.
Every join has a timeout, so a hang fails instead of eating CI time.
"""
import threading

import numpy as np
import pytest

import fastoptim
from fastoptim._registry import SPECS

JOIN_TIMEOUT = 120


def _run_threads(targets):
    errors = []

    def wrap(fn):
        def run():
            try:
                fn()
            except BaseException as e:  # reported by the main thread
                errors.append(e)
        return run

    threads = [threading.Thread(target=wrap(fn), daemon=True) for fn in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join(JOIN_TIMEOUT)
        assert not t.is_alive(), "a stepping thread hung"
    if errors:
        raise errors[0]


def _problem(spec, seed, n, steps, dtype):
    rng = np.random.default_rng(seed)
    params = {"w": rng.standard_normal(n).astype(dtype), "b": rng.standard_normal((7, 3)).astype(dtype)}
    grads = [{"w": rng.standard_normal(n).astype(dtype), "b": rng.standard_normal((7, 3)).astype(dtype)}
             for _ in range(steps)]
    return params, grads


@pytest.mark.parametrize("threads_per_step", [1, 2])
def test_threads_stepping_different_optimizers_give_the_sequential_bits(threads_per_step):
    n, steps = 50_003, 6
    specs = list(SPECS) * 2  # more optimizers than cores: threads interleave and overlap
    problems = [_problem(spec, i, n, steps, (np.float32, np.float64)[i % 2]) for i, spec in enumerate(specs)]

    def run(spec, params, grads):
        opt = spec.cls(params, lr=1e-2)
        for g in grads:
            opt.step(g)
        # and the functional face, on the same thread
        m = np.zeros_like(params["b"])
        fastoptim.functional.sgd(params["b"], grads[0]["b"], momentum_buffer=m, step=1, lr=0.1, momentum=0.9)

    with fastoptim.num_threads(threads_per_step):
        sequential = []
        for spec, (params, grads) in zip(specs, problems):
            own = {k: v.copy() for k, v in params.items()}
            run(spec, own, grads)
            sequential.append(own)
        parallel = [{k: v.copy() for k, v in params.items()} for params, _ in problems]
        barrier = threading.Barrier(len(specs), timeout=JOIN_TIMEOUT)

        def worker(spec, params, grads):
            def go():
                barrier.wait()
                run(spec, params, grads)
            return go

        _run_threads([worker(spec, own, grads) for spec, own, (_, grads) in zip(specs, parallel, problems)])
    for spec, a, b in zip(specs, sequential, parallel):
        for k in a:
            assert a[k].tobytes() == b[k].tobytes(), (spec.name, k)


def test_a_step_releases_the_gil():
    """While one thread is inside a kernel, another runs Python code: it sees the param half
    updated (impossible if the step held the GIL, which would keep it out until the end)."""
    n = 1 << 23
    p = np.zeros(n)
    g = -np.ones(n)
    opt = fastoptim.SGD([p], lr=1.0)
    inside = threading.Event()
    stop = threading.Event()
    seen = []

    def stepper():
        while not stop.is_set():
            p[:] = 0.0
            inside.set()
            opt.step([g])  # one thread: one pass from the first element to the last

    def watcher():
        inside.wait(JOIN_TIMEOUT)
        for _ in range(2_000_000):
            if p[0] == 1.0 and p[-1] == 0.0:  # started, not finished
                seen.append(True)
                break
        stop.set()

    with fastoptim.num_threads(1):
        _run_threads([stepper, watcher])
    assert seen, "no Python code ran while a kernel was running: the step holds the GIL"


def test_two_threads_stepping_one_optimizer_get_an_error_not_a_torn_update():
    n = 1 << 21
    p = np.zeros(n)
    g = -np.ones(n)
    opt = fastoptim.SGD([p], lr=1.0)  # each step adds exactly 1 to every element
    done = {"steps": 0, "refused": 0}
    lock = threading.Lock()
    stop = threading.Event()

    def stepper():
        for _ in range(400):
            if stop.is_set():
                return
            try:
                opt.step([g])
                with lock:
                    done["steps"] += 1
            except RuntimeError as e:
                assert "called from two threads at once" in str(e)
                with lock:
                    done["refused"] += 1
                    if done["refused"] >= 3:
                        stop.set()

    with fastoptim.num_threads(1):
        _run_threads([stepper, stepper])
    assert done["refused"] >= 1, "the two threads never overlapped"
    # every step that ran, ran whole; every refused one changed nothing
    np.testing.assert_array_equal(p, float(done["steps"]))
    assert opt.step_count == done["steps"]


def test_overlapping_step_is_refused_before_anything_changes():
    p = np.zeros(5)
    opt = fastoptim.Adam([p], lr=0.1)
    opt.step([np.ones(5)])
    before = p.copy(), opt.state[0]["exp_avg"].copy()
    with opt._stepping:  # as if another thread were inside step()
        with pytest.raises(RuntimeError, match=r"Adam.step\(\) was called from two threads at once"):
            opt.step([np.ones(5)])
    np.testing.assert_array_equal(p, before[0])
    np.testing.assert_array_equal(opt.state[0]["exp_avg"], before[1])
    opt.step([np.ones(5)])  # the lock is free again
    assert opt.step_count == 2


def test_fastoptim_torch_steps_are_guarded_too(torch):
    import fastoptim.torch as ftorch
    t = torch.zeros(4, requires_grad=True)
    t.grad = torch.ones(4)
    opt = ftorch.SGD([t], lr=0.1)
    with opt._stepping:
        with pytest.raises(RuntimeError, match="two threads at once"):
            opt.step()
    opt.step()
    assert torch.equal(t.detach(), torch.full((4,), -0.1))
