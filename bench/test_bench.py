"""pytest-benchmark suite: optimizer x dtype x size x threads, each group comparing
fastoptim, fastoptim.reference (NumPy) and torch.optim's for-loop, foreach and fused
implementations.  See bench/README.md."""
import numpy as np
import pytest

import fastoptim
from fastoptim._ext import runtime
from fastoptim._registry import SPECS
from fastoptim.benchmarks.optim import TORCH_VARIANTS, fastoptim_step, functional_step, torch_step

SIZES = [2**k for k in range(10, 27, 2)]
THREADS = sorted({1, runtime.usable_cores()})
IMPLEMENTATIONS = ["fastoptim", "fastoptim.functional", "numpy", *(f"torch {v}" for v in TORCH_VARIANTS)]


def build(implementation, spec, n, dtype, torch):
    options = spec.bench_options()
    if implementation == "fastoptim":
        return fastoptim_step(spec, options, n, dtype)
    if implementation == "fastoptim.functional":
        return functional_step(spec, options, n, dtype, spec.functional)
    if implementation == "numpy":
        return functional_step(spec, options, n, dtype, spec.reference)
    if torch is None:
        pytest.skip("torch is not installed")
    step = torch_step(torch, implementation.split()[1], spec, options, n, dtype)
    if step is None:
        pytest.skip(f"torch has no {implementation} {spec.torch_name} on the CPU")
    return step


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("threads", THREADS, ids=lambda t: f"t{t}")
@pytest.mark.parametrize("size", SIZES, ids=lambda n: f"2^{n.bit_length() - 1}")
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_step(benchmark, request, torch, spec, dtype, size, threads, implementation):
    if size > request.config.getoption("--bench-max-size"):
        pytest.skip("larger than --bench-max-size")
    benchmark.group = f"{spec.name} {np.dtype(dtype).name} 2^{size.bit_length() - 1} threads={threads}"
    benchmark.extra_info.update(bytes_per_step=spec.bytes_per_element(np.dtype(dtype).itemsize) * size)
    if torch is not None:
        torch.set_num_threads(threads)
    rounds = 20 if size <= 2**20 else 5

    def fresh_state():  # every round starts from a new param and new state
        return (build(implementation, spec, size, dtype, torch),), {}

    with fastoptim.num_threads(threads):
        benchmark.pedantic(lambda step: step(), setup=fresh_state, rounds=rounds, iterations=1,
                           warmup_rounds=1)
