"""What the asynchronous algorithms share: servers and workers, run(), the
serving loop, the final params and the stats.

Ranks 0..n_servers-1 serve (a parameter server's shards, or asynchronous
EASGD's center); the others are workers.  ``run(worker_fn)``:

- on a server, serves messages from any worker, in the order they arrive
  (a matched probe, MPI_Improbe, bounded by the timeout), until every worker
  has said it is done;
- on a worker, calls ``_start_worker()``, then ``worker_fn(self)``, then
  ``_finish_worker()`` and tells every server it is done;
- then every rank takes the servers' final params (one non-blocking
  broadcast per server, straight into every rank's params) and the same
  stats dict (an allgather).

Every message is point-to-point and non-blocking, waited on with the
timeout; a worker whose worker_fn raises aborts the job (the package's
excepthook, and at interpreter exit if the exception is caught), and a
worker that dies makes mpiexec end the job, so servers never wait forever.

API
---
``AsyncRoles``            base class: .comm .rank .is_server .n_servers .n_workers .worker_index
                          .model (ParamSet) .timeout; run(worker_fn); subclasses implement
                          _start_run() (zero the run's counters), _serve_message(message, status),
                          _final_buffers(), _rank_stats(), _combine_stats(per_rank), and may
                          _start_worker(), _finish_worker(), _finish_serving()
``build_optimizer(optimizer, params, who)``   optimizer(params), checked
``agree(comm, timeout, error, who)``          raise the same ValueError on every rank if any rank had one
``checked_count(value, name, minimum)``       an int >= minimum, else ValueError naming it
``shard_buffer(views)``                       an ArraysBuffer over a Shard's views, space after space
``TAG_*``                 message tags
"""
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Optional

import numpy as np

from ..optim import Optimizer
from ..typing import FloatArray

from ._buckets import ParamSet
from ._consistency import check_same_model
from ._mpi import MPI, ArraysBuffer, _abort_at_exit, allgather_object, check_timeout, probe_any, \
    resolve_comm, wait

# Tags of the messages a worker sends a server, and of the server's replies.
TAG_PUSH = 1          # gradients
TAG_PUSH_FETCH = 2    # gradients, then send me the params
TAG_FETCH = 3         # send me the params
TAG_DONE = 4          # this worker's worker_fn returned
TAG_PARAMS = 5        # server -> worker: params
TAG_EXCHANGE = 6      # EASGD: my params, send me the elastic difference
TAG_DIFFERENCE = 7    # EASGD center -> worker: the elastic difference


def build_optimizer(optimizer: Callable[[Any], Optimizer], params: Any, who: str) -> Optimizer:
    """optimizer(params), which must be a fastoptim optimizer over exactly these params."""
    if not callable(optimizer):
        raise TypeError(f"{who}: optimizer must be a callable building an optimizer over the params it is "
                        f"given, e.g. lambda p: fastoptim.Adagrad(p, lr=0.1); got {type(optimizer).__qualname__}")
    built: object = optimizer(params)
    if not all(hasattr(built, name) for name in ("step", "state_dict", "load_state_dict", "param_groups")):
        raise TypeError(f"{who}: optimizer(params) must return a fastoptim optimizer, got "
                        f"{type(built).__module__}.{type(built).__qualname__}")
    given = ParamSet(params).arrays
    held = ParamSet.from_optimizer(built).arrays
    if len(given) != len(held) or any(a is not b for a, b in zip(given, held)):
        raise ValueError(f"{who}: optimizer(params) must build its optimizer over the params it is given "
                         f"(it holds other arrays)")
    return built  # type: ignore[return-value]  # duck-typed: what it needs was checked above


def agree(comm: MPI.Intracomm, timeout: float, error: Optional[BaseException], who: str) -> None:
    """Every rank passes the exception it met (or None); if any rank met one, raise the
    same ValueError on every rank, naming the rank and the error."""
    everyone = allgather_object(None if error is None else f"{type(error).__name__}: {error}",
                                comm, timeout, f"the outcome of {who}'s set-up")
    problems = [f"on rank {rank}: {text}" for rank, text in enumerate(everyone) if text is not None]
    if problems:
        raise ValueError(f"{who} could not start: " + "; ".join(problems)) from error


def checked_count(value: int, name: str, minimum: int) -> int:
    """`value` as an int >= minimum, else ValueError naming it."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


class AsyncRoles:
    """Servers and workers over one communicator (see the module docstring)."""

    #: Set by each subclass: the optimizer of this rank (None where it has none).
    optimizer: Optional[Optimizer]

    def __init__(self, params: Any, comm: Optional[MPI.Intracomm], timeout: float, n_servers: int, who: str,
                 extra: Mapping[str, Any]) -> None:
        self.comm = resolve_comm(comm)
        self.timeout = check_timeout(timeout)
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        self.who = who
        self.model = ParamSet(params)
        self.params = params
        if self.size <= n_servers:
            raise ValueError(f"{who} needs at least {n_servers + 1} ranks ({n_servers} server"
                             f"{'s' if n_servers > 1 else ''} and a worker), the communicator has {self.size}")
        check_same_model(self.model, self.comm, self.timeout, who, extra)
        self.n_servers = n_servers
        self.n_workers = self.size - n_servers
        self.is_server = self.rank < n_servers
        self.worker_index: Optional[int] = None if self.is_server else self.rank - n_servers
        self._running = False

    # ---- run ------------------------------------------------------------------------
    def run(self, worker_fn: Callable[[Any], object]) -> dict[str, Any]:
        """Serve (servers) or call worker_fn(self) (workers); a collective of every rank.

        Then every rank holds the final params, and gets the same stats dict.

        Parameters
        ----------
        worker_fn : callable
            ``worker_fn(self)``, called on each worker: it steps with ``self.step(grads)``
            and may read ``self.worker_index`` and ``self.n_workers``.

        Returns
        -------
        dict
            The run's stats, the same on every rank (see the class).

        Raises
        ------
        TypeError
            worker_fn is not callable.
        CollectiveTimeout
            A rank did not answer within the timeout.
        """
        if not callable(worker_fn):
            raise TypeError(f"worker_fn must be a callable taking the {self.who}, got {type(worker_fn).__qualname__}")
        start = time.perf_counter()
        self._start_run()
        if self.is_server:
            self._serve()
        else:
            self._running = True
            try:
                self._start_worker()
                worker_fn(self)
                self._finish_worker()
            except BaseException:
                # The servers cannot finish without this worker: never let the job hang, even if
                # the caller catches this (the excepthook aborts at once if it does not).
                _abort_at_exit(1)
                raise
            finally:
                self._running = False
            done = [self.comm.Isend([np.empty(0), MPI.DOUBLE], dest=s, tag=TAG_DONE) for s in range(self.n_servers)]
            wait(done, self.timeout, f"telling the servers worker {self.worker_index} is done", self.comm)
        buffers = self._final_buffers()
        requests = [self.comm.Ibcast(buffer.spec, root=root) for root, buffer in enumerate(buffers)]
        wait(requests, self.timeout, f"the final params of the {self.who}'s servers", self.comm)
        for buffer in buffers:
            buffer.free()
        mine = dict(self._rank_stats(), seconds=time.perf_counter() - start)
        return self._combine_stats(allgather_object(mine, self.comm, self.timeout, f"the {self.who}'s stats"))

    def _serve(self) -> None:
        done = 0
        empty = [np.empty(0), MPI.DOUBLE]
        while done < self.n_workers:
            message, status = probe_any(self.comm, self.timeout,
                                        f"a message from a worker ({self.who} server {self.rank}, "
                                        f"{self.n_workers - done} workers running)")
            if status.Get_tag() == TAG_DONE:
                wait(message.Irecv(empty), self.timeout, "a worker's done message", self.comm)
                done += 1
            else:
                self._serve_message(message, status)
        self._finish_serving()

    def _check_worker(self, method: str) -> None:
        if self.is_server:
            raise RuntimeError(f"{self.who}.{method}() is for workers; rank {self.rank} is a server "
                               f"(ranks 0..{self.n_servers - 1} serve, the others call worker_fn)")
        if not self._running:
            raise RuntimeError(f"{self.who}.{method}() is called by worker_fn, inside run()")

    # ---- what subclasses implement --------------------------------------------------------
    def _start_run(self) -> None:
        raise NotImplementedError

    def _serve_message(self, message: MPI.Message, status: MPI.Status) -> None:
        raise NotImplementedError

    def _final_buffers(self) -> list[ArraysBuffer]:
        raise NotImplementedError

    def _rank_stats(self) -> dict[str, Any]:
        raise NotImplementedError

    def _combine_stats(self, per_rank: list[dict[str, Any]]) -> dict[str, Any]:
        raise NotImplementedError

    def _start_worker(self) -> None:
        """Before worker_fn (a first fetch, say)."""

    def _finish_worker(self) -> None:
        """After worker_fn returned (grads left to push, say)."""

    def _finish_serving(self) -> None:
        """After the last worker is done (a final checkpoint, say)."""


def shard_buffer(views: Sequence[Sequence[FloatArray]]) -> ArraysBuffer:
    """An ArraysBuffer over the 1-D views of a shard's pieces, space after space."""
    return ArraysBuffer([v for space_views in views for v in space_views])
