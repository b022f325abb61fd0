"""Asynchronous EASGD / EAMSGD (Zhang, Choromanska, LeCun 2015, Algorithm 1).

Rank 0 holds the center x~; every other rank is a worker with its own local
optimizer.  A worker's step(grads) first makes an elastic exchange every
`period` local steps (at local steps 0, period, 2 period, ...), then runs its
local step.  The exchange is atomic at the center, which serves one worker
at a time:

    d  = alpha (x_i - x~)      from the values before the exchange
    x~ <- x~ + d               at the center
    x_i <- x_i - d             at the worker, with the very d the center added

The worker sends its params from their own memory; the center receives them
into a preallocated buffer, turns it into d in place, adds it to x~ and sends
it back.  EAMSGD is this with SGD with Nesterov momentum as the local optimizer.

API: ``AsyncElasticAveraging`` (public; see its docstring).
"""
from collections.abc import Callable, Sequence
from typing import Any, Optional

import numpy as np

from ..optim import Optimizer
from ..typing import FloatArray, Grads, Params
from ._buckets import flat_view
from ._docs import shared_docs
from ._mpi import DEFAULT_TIMEOUT, MPI, ArraysBuffer, wait
from ._roles import (TAG_DIFFERENCE, TAG_EXCHANGE, AsyncRoles, agree, build_optimizer, checked_count)


@shared_docs
class AsyncElasticAveraging(AsyncRoles):
    """Asynchronous EASGD: rank 0 holds the center, the other ranks are workers.

    ``ea = AsyncElasticAveraging(params, optimizer, period=10)`` on every rank,
    with the same model, then ``stats = ea.run(worker_fn)``.  On workers, worker_fn(ea) uses ea.worker_index, ea.n_workers and
    ea.step(grads).  After run(), every rank's params hold the final center,
    and run() returns on every rank the same dict, of this run: exchanges,
    staleness_mean and staleness_max (center updates by other workers between
    a worker's exchanges), steps (per worker), bytes_sent, seconds.

    Parameters
    ----------
    params : list, dict or list of param groups
        The model; every rank starts from rank 0's values (the center's start).
    optimizer : callable
        Builds a worker's local optimizer over params, e.g.
        ``lambda p: fastoptim.SGD(p, lr=0.05, momentum=0.9, nesterov=True)`` (EAMSGD).
    {{comm}}
    period : int, default 10
        Local steps between elastic exchanges (tau), >= 1.
    alpha : float or None, default None
        The moving rate in (0, 1] (None: 0.9 / n_workers, the paper's beta = 0.9).
    {{timeout}}

    Raises
    ------
    ValueError
        Fewer than 2 ranks, a bad period, alpha or timeout, a model that differs
        across ranks, or an optimizer that fails to build on some rank (raised on
        every rank).

    Examples
    --------
    {{mpi_example}}
    >>> from fastoptim.distributed import AsyncElasticAveraging
    >>> params = [np.zeros(3)]
    >>> ea = AsyncElasticAveraging(params, lambda p: fastoptim.SGD(p, lr=0.05))  # doctest: +SKIP
    >>> def work(ea):
    ...     for _ in range(100):
    ...         ea.step([params[0] - 1.0])  # the gradient of |w - 1|^2 / 2
    >>> stats = ea.run(work)  # rank 0 serves, the others call work  # doctest: +SKIP
    """

    def __init__(self, params: Params, optimizer: Callable[[Any], Optimizer], comm: Optional[MPI.Intracomm] = None,
                 period: int = 10, alpha: Optional[float] = None, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.period = checked_count(period, "period", 1)
        given: object = alpha
        number = isinstance(given, (int, float, np.integer, np.floating)) and not isinstance(given, bool)
        if alpha is not None and not (number and 0 < alpha <= 1):
            raise ValueError(f"alpha must be a number in (0, 1] (or None for 0.9 / n_workers), got {alpha!r}")
        super().__init__(params, comm, timeout, 1, "AsyncElasticAveraging",
                         extra={"period": self.period, "alpha": alpha})
        self.alpha = 0.9 / self.n_workers if alpha is None else float(alpha)
        # Every rank starts from the center's start: rank 0's params.
        everything = self._final_buffers()
        wait(self.comm.Ibcast(everything[0].spec, root=0), self.timeout,
             "the center's start (AsyncElasticAveraging)", self.comm)
        everything[0].free()
        self.optimizer = None
        error: Optional[Exception] = None
        try:
            if self.is_server:
                self._set_up_center()
            else:
                self._set_up_worker(optimizer)
        except Exception as caught:
            error = caught
        agree(self.comm, self.timeout, error, "AsyncElasticAveraging")

    def _start_run(self) -> None:
        # Counters of this run.  A worker's local step count runs on, and so does its period.
        self.bytes_sent = 0
        self.exchanges = 0
        self._staleness_sum = self._staleness_max = 0
        self._last_exchange = [0] * self.n_workers
        self._steps_at_start = getattr(self, "steps", 0)

    def _space_views(self, flats: Sequence[FloatArray]) -> list[FloatArray]:
        """Per param, its part of per-space flat arrays, shaped like the param."""
        views: list[FloatArray] = [np.empty(0) for _ in range(len(self.model))]
        for space, flat in zip(self.model.spaces, flats):
            for i, begin, end in zip(space.indices, space.offsets[:-1], space.offsets[1:]):
                views[i] = flat[begin:end].reshape(self.model.arrays[i].shape)
        return views

    # ---- the center --------------------------------------------------------------------------
    def _set_up_center(self) -> None:
        # The center lives in one flat array per dtype space while serving: three whole-array
        # operations per exchange; it is copied into params when serving ends.
        self._center = [np.empty(space.size, dtype=space.dtype) for space in self.model.spaces]
        for view, a in zip(self._space_views(self._center), self.model.arrays):
            np.copyto(view, a)
        self._received = [np.empty_like(c) for c in self._center]
        self._receive_buffer = ArraysBuffer(self._received)

    def _serve_message(self, message: MPI.Message, status: MPI.Status) -> None:
        source, tag = status.Get_source(), status.Get_tag()
        worker = source - 1
        if tag != TAG_EXCHANGE or status.Get_count(MPI.BYTE) != self._receive_buffer.nbytes:
            raise RuntimeError(f"AsyncElasticAveraging center: unexpected message (tag {tag}, "
                               f"{status.Get_count(MPI.BYTE)} bytes) from rank {source}")
        wait(message.Irecv(self._receive_buffer.spec), self.timeout,
             f"the params of worker {worker} (AsyncElasticAveraging center)", self.comm)
        for x, center in zip(self._received, self._center):
            np.subtract(x, center, out=x)
            np.multiply(x, self.alpha, out=x)          # d = alpha (x_i - center)
            np.add(center, x, out=center)
        staleness = self.exchanges - self._last_exchange[worker]
        self._staleness_sum += staleness
        self._staleness_max = max(self._staleness_max, staleness)
        self.exchanges += 1
        self._last_exchange[worker] = self.exchanges
        wait(self.comm.Isend(self._receive_buffer.spec, dest=source, tag=TAG_DIFFERENCE), self.timeout,
             f"the elastic difference for worker {worker} (AsyncElasticAveraging center)", self.comm)
        self.bytes_sent += self._receive_buffer.nbytes

    def _finish_serving(self) -> None:
        for a, view in zip(self.model.arrays, self._space_views(self._center)):
            np.copyto(a, view)

    # ---- a worker ---------------------------------------------------------------------------
    def _set_up_worker(self, optimizer: Callable[[Any], Optimizer]) -> None:
        self.optimizer = build_optimizer(optimizer, self.params, "AsyncElasticAveraging")
        self._difference = [np.empty(space.size, dtype=space.dtype) for space in self.model.spaces]
        self._difference_views = self._space_views(self._difference)
        self._difference_buffer = ArraysBuffer(self._difference)
        self._params_buffer = self._final_buffers()[0]
        self.steps = 0             # local steps: exchanges fall on multiples of `period`

    @shared_docs
    def step(self, grads: Grads) -> None:
        """An elastic exchange with the center every `period` local steps, then the local step.

        For workers, inside run().

        {{worker_step}}
        """
        self._check_worker("step")
        self.model.flatten(grads)           # checked before anything is exchanged
        if self.steps % self.period == 0:
            receive = self.comm.Irecv(self._difference_buffer.spec, source=0, tag=TAG_DIFFERENCE)
            send = self.comm.Isend(self._params_buffer.spec, dest=0, tag=TAG_EXCHANGE)
            wait([receive, send], self.timeout, f"worker {self.worker_index}'s elastic exchange", self.comm)
            self.bytes_sent += self._params_buffer.nbytes
            for x, d in zip(self.model.arrays, self._difference_views):
                np.subtract(x, d, out=x)
        assert self.optimizer is not None  # a worker has one
        self.optimizer.step(grads)
        self.steps += 1

    # ---- the end ------------------------------------------------------------------------------
    def _final_buffers(self) -> list[ArraysBuffer]:
        # Every param, space after space (so its type signature is the center buffers').
        return [ArraysBuffer([flat_view(self.model.arrays[i]) for space in self.model.spaces
                              for i in space.indices])]

    def _rank_stats(self) -> dict[str, Any]:
        if self.is_server:
            return {"exchanges": self.exchanges, "staleness_sum": self._staleness_sum,
                    "staleness_max": self._staleness_max, "bytes_sent": self.bytes_sent}
        return {"steps": self.steps - self._steps_at_start, "bytes_sent": self.bytes_sent}

    def _combine_stats(self, per_rank: list[dict[str, Any]]) -> dict[str, Any]:
        center, workers = per_rank[0], per_rank[1:]
        return {
            "exchanges": center["exchanges"],
            "staleness_mean": center["staleness_sum"] / center["exchanges"] if center["exchanges"] else 0.0,
            "staleness_max": center["staleness_max"],
            "steps": [w["steps"] for w in workers],
            "bytes_sent": sum(r["bytes_sent"] for r in per_rank),
            "seconds": max(r["seconds"] for r in per_rank),
        }
