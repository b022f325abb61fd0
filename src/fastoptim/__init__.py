"""fastoptim: fast, exact optimizers for NumPy on the CPU.

Fused OpenMP kernels for SGD (momentum, Nesterov), Adagrad, RMSprop, Adadelta,
Adam and AdamW with torch.optim's semantics, in three forms:
fastoptim.SGD/... (stateful), fastoptim.functional (one update per call) and
fastoptim.reference (the same in plain NumPy).  Every optimizer's lr may be a
learning-rate schedule from fastoptim.schedules.
"""
__version__ = "0.1.0"

from . import functional, optim, reference, schedules
from ._config import (get_num_threads, get_simd_level, num_threads, set_num_threads,
                      set_simd_level, show_config)
from .optim import *  # noqa: F403 - Optimizer and one class per face of each rule (fastoptim.rules)

__all__ = [
    *optim.__all__,
    "functional", "reference", "schedules",
    "set_num_threads", "get_num_threads", "num_threads",
    "get_simd_level", "set_simd_level", "show_config",
]
