# Stub of the compiled module fastoptim._ext.bandwidth (bandwidth.pyx): the benchmarks' bandwidth probe.
from typing import Any

def scale_add_inplace(a: Any, b: Any, s: float, n_threads: int) -> None: ...
