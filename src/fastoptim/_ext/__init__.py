"""fastoptim's compiled extension modules, one per concern.

runtime    threads, SIMD level, build facts, and the C kernel tables they select
checks     argument checks at C speed, shared by the other modules
step       the drivers of the update rules: one tensor (functional) or a cached
           pointer table over all of an optimizer's tensors (StepPlan)
train      gradient transforms of fastoptim.train: clipping, norms, scaling, noise
bandwidth  the machine's streaming bandwidth probe, for the benchmarks
compensation  DC-ASGD's delay compensation of grads, for fastoptim.distributed
vector     L-BFGS's fused vector operations (dot products, axpy), deterministic sums

Shared inline helpers (the C declarations, the thread split) are in common.pxd;
the OpenMP shim in openmp.pxd.
"""
