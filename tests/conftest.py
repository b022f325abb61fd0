import os
import sys
import tracemalloc

import numpy as np
import pytest

from fastoptim._ext import runtime

# Sizes that hit every SIMD tail (4, 8 and 16 lanes), empty and large arrays.
SIZES = (0, 1, 3, 7, 8, 15, 16, 17, 31, 33, 1000, 4097, 2**17 + 5)
DTYPES = (np.float32, np.float64)


@pytest.fixture(scope="session")
def torch():
    """torch.optim, the numerical reference.  CI sets FASTOPTIM_REQUIRE_TORCH=1 so it cannot be skipped."""
    if os.environ.get("FASTOPTIM_REQUIRE_TORCH", "") not in ("", "0"):
        import torch
        return torch
    return pytest.importorskip("torch")


@pytest.fixture
def split_everything():
    """Split even the smallest step across threads, so every split boundary is exercised."""
    old = runtime._set_parallel_min_elements(0)
    yield
    runtime._set_parallel_min_elements(old)


@pytest.fixture(params=runtime.supported_simd_levels())
def simd_level(request):
    """Each SIMD level this CPU supports, in turn."""
    old = runtime.set_simd_level(request.param)
    yield request.param
    runtime.set_simd_level(old)


def snapshot(arrays):
    return [np.array(a, copy=True) for a in arrays]


def assert_unchanged(before, arrays):
    for b, a in zip(before, arrays):
        np.testing.assert_array_equal(a, b)


def _stop_tqdm_monitor():
    std = sys.modules.get("tqdm.std")
    if std is None:
        return
    std.tqdm.monitor_interval = 0  # tqdm's switch: later bars start no monitor thread
    classes = [std.tqdm]
    while classes:  # the running monitor belongs to the class used (tqdm.auto's is a subclass)
        cls = classes.pop()
        classes += cls.__subclasses__()
        if cls.__dict__.get("monitor") is not None:
            cls.monitor.exit()  # wakes it and joins it
            cls.monitor = None


def traced_memory_growth(run, times):
    """(bytes kept, peak bytes above the start) over `times` calls of run(), as tracemalloc sees them.

    tracemalloc counts every thread's allocations: tqdm's monitor thread, which the first
    progress bar (train.fit) starts and which then wakes every 10 s for the rest of the
    session, would be counted too whenever it wakes during the calls, so it is stopped."""
    _stop_tqdm_monitor()
    tracemalloc.start()
    try:
        run()
        start, _ = tracemalloc.get_traced_memory()
        for _ in range(times):
            run()
        end, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return end - start, peak - start


def torch_optimizer(torch, spec):
    """torch.optim's class of a face, or, for a rule torch.optim lacks (Lion), a torch.optim.Optimizer
    stepping the rule's NumPy reference on the tensors' memory: the oracle fastoptim.torch is held to.

    Its state is the rule's slots (and a float32 0-d 'step' where the rule keeps one), created at a
    param's first step as torch.optim creates its own; a rule without a step in its state gets the
    count of this optimizer's steps of that param."""
    cls = spec.torch_optim(torch)
    if cls is not None:
        return cls
    rule, variant = spec.rule, spec.variant

    class ReferenceOptimizer(torch.optim.Optimizer):
        def __init__(self, params, **options):
            defaults = {o.name: o.default for o in rule.options} | variant.defaults | options
            super().__init__(params, defaults)
            self._counts = {}

        @torch.no_grad()
        def step(self):
            for group in self.param_groups:
                fields = spec.functional_kwargs({o.name: group[o.name] for o in rule.options}) | variant.fixed
                for p in group["params"]:
                    if p.grad is None:
                        continue
                    state = self.state[p]
                    if not state:
                        if rule.step_in_state:
                            state["step"] = torch.tensor(0.0)
                        for slot in rule.state:
                            if slot.used(group.__getitem__):
                                state[slot.name] = torch.full_like(p, rule.start_value(slot, group))
                    if rule.step_in_state:
                        state["step"] += 1
                        step = int(state["step"])
                    else:
                        step = self._counts[p] = self._counts.get(p, 0) + 1
                    arrays = {k: v.numpy() for k, v in state.items() if k != "step"}
                    rule.reference(p.detach().numpy(), p.grad.numpy(), arrays, step=step, grad_scale=None, **fields)

    ReferenceOptimizer.__name__ = ReferenceOptimizer.__qualname__ = f"Reference{variant.name}"
    return ReferenceOptimizer
