"""DC-ASGD's delay compensation (Zheng et al. 2017), shared by the parameter
server and the simulator: the options' checks and the compensation state.

A gradient g computed at the params w_bak arrives when the params are w; the
optimizer then steps with

    g~ = g + lambda * g * g * (w - w_bak)

where lambda is ``compensation_lambda`` ("constant"), or, for DC-ASGD-a
("adaptive"), lambda0 / (sqrt(ms) + 1e-7) elementwise with lambda0 =
``compensation_lambda`` and ms <- m * ms + (1 - m) * g * g updated with the
raw g before use (ms starts at 0, m = ``compensation_momentum``).  The
arithmetic is one fused kernel (fastoptim._ext.compensation, csrc/fastoptim/compensation.inc).

API
---
``check_compensation(compensation, lambda_, momentum)``  the checked (kind, lambda_, momentum)
``DelayCompensation(kind, lambda_, momentum, grads, params)``
    grads: the segments compensated in place (a receive buffer); params: the
    segments of w.  .mean_squares (adaptive: one array per segment, else None),
    .against(backups) -> a Compensation of those grads against backup segments,
    .apply(compensation) runs it.
"""
import math
from collections.abc import Sequence
from typing import Any, Optional

import numpy as np

from .._ext.compensation import Compensation
from ..typing import FloatArray

COMPENSATIONS = ("constant", "adaptive")


def check_compensation(compensation: Optional[str], lambda_: float,
                       momentum: float) -> tuple[Optional[str], float, float]:
    """The checked (compensation, lambda, momentum); compensation None means plain ASGD."""
    if compensation is not None and compensation not in COMPENSATIONS:
        raise ValueError(f"compensation must be None, 'constant' or 'adaptive', got {compensation!r}")
    if isinstance(lambda_, bool) or not isinstance(lambda_, (int, float, np.integer, np.floating)) \
            or not math.isfinite(lambda_) or lambda_ < 0:
        raise ValueError(f"compensation_lambda must be a finite number >= 0, got {lambda_!r}")
    if isinstance(momentum, bool) or not isinstance(momentum, (int, float, np.integer, np.floating)) \
            or not 0 <= momentum < 1:
        raise ValueError(f"compensation_momentum must be a number in [0, 1), got {momentum!r}")
    return compensation, float(lambda_), float(momentum)


class DelayCompensation:
    """The compensation of grads received into `grads` (segments, rewritten in place)
    against the current `params` segments and a backup chosen per gradient."""

    def __init__(self, kind: str, lambda_: float, momentum: float, grads: Sequence[FloatArray],
                 params: Sequence[FloatArray]) -> None:
        self.kind, self.lambda_, self.momentum = kind, lambda_, momentum
        self.grads, self.params = list(grads), list(params)
        self.mean_squares = [np.zeros_like(g) for g in self.grads] if kind == "adaptive" else None

    def against(self, backups: Sequence[FloatArray]) -> Compensation:
        """The fused kernel's pointers for the grads against these backup segments."""
        return Compensation(self.grads, self.params, list(backups), self.mean_squares)

    def apply(self, compensation: Compensation) -> None:
        """Compensate the grads in place (the adaptive form updates the mean squares first)."""
        if self.kind == "adaptive":
            compensation.run_adaptive(self.lambda_, self.momentum)
        else:
            compensation.run_constant(self.lambda_)
