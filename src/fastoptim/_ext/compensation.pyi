# Stub of the compiled module fastoptim._ext.compensation (compensation.pyx): DC-ASGD's delay compensation.
from typing import Any

class Compensation:
    n_segments: int
    size: int
    adaptive: bool
    arrays: list[Any]
    def __init__(self, grads: list[Any], params: list[Any], backups: list[Any],
                 mean_squares: list[Any] | None = None) -> None: ...
    def run_constant(self, lambda_: float) -> None: ...
    def run_adaptive(self, lambda0: float, momentum: float) -> None: ...
