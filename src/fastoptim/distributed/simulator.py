"""Asynchronous SGD at scales one machine cannot run: a deterministic simulator
of a parameter server receiving stale gradients, with DC-ASGD's compensation.

Server step t (from 0) applies a gradient computed at the params as they were
before server step s = t - min(delays[t], t).  Only the snapshots still
needed are kept, in a ring buffer of (maximum delay + 1) slots, each a copy of
the params made before the step that writes it.  With compensation, w_bak is
snapshot s and the arithmetic is the parameter server's kernel.

Delays come from a schedule of workers; two generators are here:
``round_robin_delays`` (workers of equal speed taking turns: every delay is
n - 1 once all are running) and ``random_delays`` (workers with random
service times, pushing in the order they finish).

API
---
``simulate(grad_fn, params, optimizer, *, delays, compensation=None,
compensation_lambda=0.04, compensation_momentum=0.95)``  -> stats dict
``round_robin_delays(n_workers, steps)``                 -> int64 array
``random_delays(n_workers, steps, *, seed=0, sigma=0.5)`` -> int64 array
"""
import heapq
import operator
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Optional, Union, overload

import numpy as np
import numpy.typing as npt

from ..optim import Optimizer
from ..typing import FloatArray, ParamGroup

from ._buckets import ParamSet
from ._dcasgd import DelayCompensation, check_compensation
from ._docs import shared_docs
from ._roles import build_optimizer

#: The optional grads of one structure, as grad_fn returns them.
_ListGrads = Sequence[Optional[FloatArray]]
_DictGrads = Mapping[str, Optional[FloatArray]]


@overload
def simulate(grad_fn: Callable[[list[FloatArray]], _ListGrads], params: Sequence[FloatArray],
             optimizer: Callable[[Any], Optimizer], *, delays: Sequence[int] | npt.NDArray[np.integer[Any]],
             compensation: Optional[str] = ..., compensation_lambda: float = ...,
             compensation_momentum: float = ...) -> dict[str, Any]: ...


@overload
def simulate(grad_fn: Callable[[dict[str, FloatArray]], _DictGrads], params: Mapping[str, FloatArray],
             optimizer: Callable[[Any], Optimizer], *, delays: Sequence[int] | npt.NDArray[np.integer[Any]],
             compensation: Optional[str] = ..., compensation_lambda: float = ...,
             compensation_momentum: float = ...) -> dict[str, Any]: ...


@overload
def simulate(grad_fn: Callable[[list[Any]], Sequence[Union[_ListGrads, _DictGrads]]], params: Sequence[ParamGroup],
             optimizer: Callable[[Any], Optimizer], *, delays: Sequence[int] | npt.NDArray[np.integer[Any]],
             compensation: Optional[str] = ..., compensation_lambda: float = ...,
             compensation_momentum: float = ...) -> dict[str, Any]: ...



def simulate(grad_fn: Callable[[Any], Any], params: Any, optimizer: Callable[[Any], Optimizer], *, delays: Any,
             compensation: Optional[str] = None, compensation_lambda: float = 0.04,
             compensation_momentum: float = 0.95) -> dict[str, Any]:
    """Run asynchronous SGD with the given delays in this process, deterministically.

    No MPI is involved: this is the serial oracle of ParameterServer, and a way to
    study staleness at scales one machine cannot run.

    Parameters
    ----------
    grad_fn : callable
        ``grad_fn(snapshot) -> grads``: the gradient at `snapshot`, a copy of the
        params in their structure (list, dict or param groups), which grad_fn must
        only read; grads come back in the same structure.
    params : list, dict or list of param groups
        The model's params, updated in place (the server's params).
    optimizer : callable
        Builds the server's optimizer over params, e.g.
        ``lambda p: fastoptim.SGD(p, lr=0.1)``, as ParameterServer takes it.
    delays : sequence of int
        One int >= 0 per server step: step t applies the gradient at the params
        from before step ``t - min(delays[t], t)``.
    compensation : {None, 'constant', 'adaptive'}, default None
        DC-ASGD's delay compensation, as in ParameterServer (None: plain
        asynchronous SGD).
    compensation_lambda : float, default 0.04
        DC-ASGD's lambda (lambda0 for 'adaptive'), >= 0.
    compensation_momentum : float, default 0.95
        DC-ASGD-a's momentum of the mean square, in [0, 1).

    Returns
    -------
    dict
        ``{"updates", "staleness_mean", "staleness_max", "seconds"}``, the
        staleness of step t being ``min(delays[t], t)``.

    Raises
    ------
    TypeError
        grad_fn is not callable, delays are not integers, or optimizer(params)
        is not a fastoptim optimizer over params.
    ValueError
        A negative delay, a compensation option out of range, or grads that do
        not match the params.

    Examples
    --------
    Minimise ``|w|^2 / 2`` (gradient ``w``) with gradients two steps stale:

    >>> import numpy as np
    >>> import fastoptim
    >>> from fastoptim.distributed import round_robin_delays, simulate
    >>> w = np.ones(3)
    >>> stats = simulate(lambda snapshot: [snapshot[0].copy()], [w],
    ...                  lambda p: fastoptim.SGD(p, lr=0.1), delays=round_robin_delays(3, 50))
    >>> stats["updates"], stats["staleness_max"]
    (50, 2)
    >>> bool(np.abs(w).max() < 0.05)
    True
    """
    kind, lambda_, momentum = check_compensation(compensation, compensation_lambda, compensation_momentum)
    if not callable(grad_fn):
        raise TypeError(f"grad_fn must be a callable taking the params' snapshot, got {type(grad_fn).__qualname__}")
    model = ParamSet(params)
    delays = _checked_delays(delays)
    received: list[FloatArray] = []
    opt = build_optimizer(optimizer, params, "simulate")
    steps = len(delays)
    staleness = np.minimum(delays, np.arange(steps, dtype=np.int64))
    slots = int(staleness.max()) + 1 if steps else 1
    ring = [[np.empty_like(a) for a in model.arrays] for _ in range(slots)]
    if kind is not None:
        received = [np.empty_like(a) for a in model.arrays]
        dc = DelayCompensation(kind, lambda_, momentum, received, model.arrays)
        against_slot = [dc.against(snapshot) for snapshot in ring]
    start = time.perf_counter()
    for t in range(steps):
        for a, copy in zip(model.arrays, ring[t % slots]):
            np.copyto(copy, a)
        s = t - int(staleness[t])
        snapshot = ring[s % slots]
        grads = model.flatten(grad_fn(model.unflatten(snapshot)), "grads returned by grad_fn")
        if kind is not None:
            for buffer, g in zip(received, grads):
                np.copyto(buffer, g)
            dc.apply(against_slot[s % slots])
            grads = received
        opt.step(model.for_optimizer(grads))
    return {"updates": steps,
            "staleness_mean": float(staleness.mean()) if steps else 0.0,
            "staleness_max": int(staleness.max()) if steps else 0,
            "seconds": time.perf_counter() - start}


def _checked_delays(delays: Any) -> npt.NDArray[np.int64]:
    try:
        values = [operator.index(d) for d in delays]
    except TypeError:
        raise TypeError("delays must be a sequence of integers (one per server step)") from None
    array = np.asarray(values, dtype=np.int64)
    if (array < 0).any():
        raise ValueError(f"delays must be >= 0; delays[{int(np.argmax(array < 0))}] is "
                         f"{int(array[array < 0][0])}")
    return array


def _checked_count(value: int, name: str, minimum: int) -> int:
    try:
        value = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an integer, got {value!r}") from None
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


@shared_docs
def round_robin_delays(n_workers: int, steps: int) -> npt.NDArray[np.int64]:
    """Delays of n_workers of equal speed taking turns.

    Each worker fetches right after its push, so once all have started every
    gradient is n_workers - 1 server steps old.

    Parameters
    ----------
    {{workers_steps}}

    {{delays_returns_raises}}
    ValueError
        n_workers < 1 or steps < 0.

    Examples
    --------
    >>> from fastoptim.distributed import round_robin_delays
    >>> round_robin_delays(3, 6)
    array([0, 1, 2, 2, 2, 2])
    """
    n_workers = _checked_count(n_workers, "n_workers", 1)
    steps = _checked_count(steps, "steps", 0)
    return np.minimum(np.arange(steps, dtype=np.int64), n_workers - 1)


@shared_docs
def random_delays(n_workers: int, steps: int, *, seed: Optional[int] = 0,
                  sigma: float = 0.5) -> npt.NDArray[np.int64]:
    """Delays of n_workers whose gradients take random times.

    Service times are log-normal (median 1, shape sigma); each worker fetches
    the params right after its push is applied and pushes when its next
    gradient is done: a push's delay is the number of server steps since its
    worker's fetch.  Deterministic for a given seed.

    Parameters
    ----------
    {{workers_steps}}
    seed : int or None, default 0
        The seed of numpy.random.default_rng.
    sigma : float, default 0.5
        The log-normal shape, >= 0 (0: equal speeds, as round_robin_delays).

    {{delays_returns_raises}}
    ValueError
        n_workers < 1, steps < 0 or sigma < 0.

    Examples
    --------
    >>> from fastoptim.distributed import random_delays
    >>> delays = random_delays(4, 1000, seed=1)
    >>> delays.shape, bool(delays.min() >= 0)
    ((1000,), True)
    """
    n_workers = _checked_count(n_workers, "n_workers", 1)
    steps = _checked_count(steps, "steps", 0)
    if not sigma >= 0:
        raise ValueError(f"sigma must be >= 0, got {sigma!r}")
    rng = np.random.default_rng(seed)
    # (time the gradient is done, worker, server step count when it fetched)
    running = [(float(rng.lognormal(0.0, sigma)), w, 0) for w in range(n_workers)]
    heapq.heapify(running)
    delays = np.empty(steps, dtype=np.int64)
    for t in range(steps):
        done, worker, fetched = heapq.heappop(running)
        delays[t] = t - fetched
        heapq.heappush(running, (done + float(rng.lognormal(0.0, sigma)), worker, t + 1))
    return delays
