"""Downpour SGD (Dean et al. 2012) with sharded parameter servers, and DC-ASGD's
delay compensation (Zheng et al. 2017).

Ranks 0..servers-1 are servers: server s holds shard s of the flattened
params (element-wise contiguous, within one element of the others' sizes;
see _buckets.Shard) and its own optimizer over the shard's views into its
params, built by ``optimizer(shard_params)``.  The other ranks are workers.

Messages (point-to-point, non-blocking, every wait bounded by the timeout):

- a worker's push sends each server its shard of the accumulated gradient,
  straight from the worker's accumulation buffer (one flat array per dtype);
  tag PUSH, or PUSH_FETCH when the same call fetches;
- a fetch asks each server for its shard; the server sends it from its
  params' own memory (a struct datatype over the pieces: nothing packed) and
  the worker receives it straight into its own params;
- the server takes messages in arrival order through a matched probe, and
  receives a push into one preallocated buffer; it compensates it in place
  (the fused kernel of _ext.compensation), steps its optimizer with views of the
  buffer as grads, and replies when asked.  A reply is waited for only before
  the next update, so it travels while the next push arrives.  A worker's
  messages arrive in the order it sent them, so a fetch sees every earlier
  push of its worker.

The staleness of a push is the number of updates the server applied between
the worker's last fetch and the push; each server measures it for its shard
(they agree when the servers see the pushes in the same order).

API: ``ParameterServer`` (public; see its docstring).
"""
import os
from collections.abc import Callable, Sequence
from typing import Any, Optional, Union

import numpy as np

from ..optim import Optimizer
from ..typing import FloatArray, Grads, Params
from . import _checkpoint
from ._buckets import ParamSet, Piece, Shard, flat_view
from ._dcasgd import DelayCompensation, check_compensation
from ._docs import shared_docs
from ._mpi import DEFAULT_TIMEOUT, MPI, ArraysBuffer, wait
from ._roles import (TAG_FETCH, TAG_PARAMS, TAG_PUSH, TAG_PUSH_FETCH, AsyncRoles, agree,
                     build_optimizer, checked_count, shard_buffer)
from .zero import _per_tensor


@shared_docs
class ParameterServer(AsyncRoles):
    """Downpour SGD with `servers` sharded parameter servers; DC-ASGD with `compensation`.

    ``ps = ParameterServer(params, optimizer, ...)`` on every rank, with the same
    model, then ``stats = ps.run(worker_fn)``.  On workers, worker_fn(ps) uses ps.worker_index (0..n_workers-1),
    ps.n_workers and ps.step(grads).  After run(), every rank's params hold the
    servers' final params, and run() returns on every rank the same dict:
    updates (the servers' count of steps, one per push however many servers,
    continuing a resumed checkpoint's and earlier runs'), and of this run:
    staleness_mean, staleness_max, pushes (per worker), bytes_sent (by all
    ranks), seconds.  run() may be called again: workers fetch anew.

    Parameters
    ----------
    params : list, dict or list of param groups
        The model, the same on every rank.  Servers start from their own rank's
        values (or `resume`); workers fetch the servers' params when run() starts.
    optimizer : callable
        Builds a server's optimizer over its shard's params (param groups of 1-D
        views, mirroring the model's groups), e.g. ``lambda p: fastoptim.Adagrad(p, lr=0.1)``;
        its rule must be element-wise.
    comm : mpi4py.MPI.Intracomm or None, default None
        The communicator (None: ``MPI.COMM_WORLD``); ranks 0..servers-1 serve, the
        others are workers.
    servers : int, default 1
        The number of server ranks (shards), >= 1.
    fetch_every : int, default 1
        A worker's step() fetches the newest params every fetch_every calls.
    push_every : int, default 1
        A worker's step() pushes the mean of its grads every push_every calls
        (pushing first when both fall on one call; grads accumulated when
        worker_fn returns are pushed then).
    compensation : {None, 'constant', 'adaptive'}, default None
        None (Downpour/ASGD), or DC-ASGD-c / DC-ASGD-a.
    compensation_lambda : float, default 0.04
        DC-ASGD's lambda (lambda0 for 'adaptive'), >= 0.
    compensation_momentum : float, default 0.95
        DC-ASGD-a's momentum m of the mean square, in [0, 1).
    checkpoint : str, path or None, default None
        Where each server writes its params, optimizer state_dict and update
        count, atomically (several servers: one file per shard beside it).
    checkpoint_every : int, default 0
        Write a checkpoint every this many updates (0: only when serving ends).
    resume : str, path or None, default None
        A checkpoint to start the servers from; the update count continues from its.
    {{timeout}}

    Raises
    ------
    ValueError
        Too few ranks, an option out of range, checkpoint_every without a
        checkpoint, a model that differs across ranks, or a set-up error on any
        rank (a per-tensor optimizer rule, a checkpoint of another model), raised
        on every rank.

    Examples
    --------
    {{mpi_example}}
    >>> from fastoptim.distributed import ParameterServer
    >>> params = [np.zeros(3)]
    >>> ps = ParameterServer(params, lambda p: fastoptim.SGD(p, lr=0.1),  # doctest: +SKIP
    ...                      compensation="constant")
    >>> def work(ps):
    ...     for _ in range(100):
    ...         ps.step([params[0] - 1.0])  # the gradient of |w - 1|^2 / 2, at the fetched params
    >>> stats = ps.run(work)  # rank 0 serves, the others call work  # doctest: +SKIP
    """

    def __init__(self, params: Params, optimizer: Callable[[Any], Optimizer], comm: Optional[MPI.Intracomm] = None,
                 servers: int = 1, fetch_every: int = 1, push_every: int = 1,
                 compensation: Optional[str] = None, compensation_lambda: float = 0.04,
                 compensation_momentum: float = 0.95, checkpoint: Union[str, "os.PathLike[str]", None] = None,
                 checkpoint_every: int = 0, resume: Union[str, "os.PathLike[str]", None] = None,
                 timeout: float = DEFAULT_TIMEOUT) -> None:
        servers = checked_count(servers, "servers", 1)
        self.fetch_every = checked_count(fetch_every, "fetch_every", 1)
        self.push_every = checked_count(push_every, "push_every", 1)
        self.compensation, self.compensation_lambda, self.compensation_momentum = check_compensation(
            compensation, compensation_lambda, compensation_momentum)
        self.checkpoint_every = checked_count(checkpoint_every, "checkpoint_every", 0)
        self.checkpoint = None if checkpoint is None else os.fspath(checkpoint)
        if self.checkpoint_every and self.checkpoint is None:
            raise ValueError(f"checkpoint_every={self.checkpoint_every} needs a checkpoint path")
        resume_path = None if resume is None else os.fspath(resume)
        super().__init__(params, comm, timeout, servers, "ParameterServer", extra={
            "servers": servers, "fetch_every": self.fetch_every, "push_every": self.push_every,
            "compensation": self.compensation, "compensation_lambda": self.compensation_lambda,
            "compensation_momentum": self.compensation_momentum,
            "checkpoint_every": self.checkpoint_every, "resume": resume_path is not None})
        self.shards = [Shard(self.model, s, servers) for s in range(servers)]
        self.optimizer = None
        self.updates = 0
        error: Optional[Exception] = None
        try:
            if self.is_server:
                self._set_up_server(optimizer, resume_path)
            else:
                self._set_up_worker()
        except Exception as caught:
            error = caught
        agree(self.comm, self.timeout, error, "ParameterServer")

    def _start_run(self) -> None:
        # Counters of this run; `updates` is the servers' count, which runs on (from a checkpoint, too).
        self.bytes_sent = 0
        self.pushes = 0
        self._staleness_sum = self._staleness_count = self._staleness_max = 0

    # ---- the server ---------------------------------------------------------------------
    def _set_up_server(self, optimizer: Callable[[Any], Optimizer], resume: Optional[str]) -> None:
        shard = self.shards[self.rank]
        self.optimizer = built = build_optimizer(optimizer, shard.param_groups(), "ParameterServer")
        per_tensor = _per_tensor(type(built))
        if per_tensor:  # its shard cuts tensors: a per-tensor rule would compute on pieces
            raise ValueError(f"ParameterServer: the servers' shards cut across tensors, so their optimizer must be "
                             f"element-wise; {type(self.optimizer).__name__}'s is per tensor ({per_tensor})")
        # The shard optimizer's params, in its order, and the piece of the model each one is.
        self._group_pieces = _group_pieces(shard)
        self._pieces = [piece for group in self._group_pieces for piece in group]
        own = [p for group in built.param_groups for p in group["params"]]
        # One preallocated receive buffer per dtype space; the optimizer's grads are its views.
        self._received = [np.zeros(stop - start, dtype=space.dtype)
                          for space, (start, stop) in zip(self.model.spaces, shard.ranges)]
        self._receive_buffer = ArraysBuffer(self._received)
        self._send_buffer = shard_buffer(shard.views)
        grads = _piece_segments(self._received, shard, self._pieces, self.model)
        self._grads = grads
        self._fetched_at = [0] * self.n_workers
        self._replies: list[MPI.Request] = []         # params sent and not yet received: waited before the next update
        self._written_at: Optional[int] = None
        self._dc: Optional[DelayCompensation] = None
        if self.compensation is not None:
            self._dc = DelayCompensation(self.compensation, self.compensation_lambda,
                                         self.compensation_momentum, grads, own)
            backups = [[np.zeros_like(r) for r in self._received] for _ in range(self.n_workers)]
            self._backups = [_piece_segments(b, shard, self._pieces, self.model) for b in backups]
            self._against = [self._dc.against(b) for b in self._backups]
            self._own = own
        if resume is not None:
            self._resume(_checkpoint.load(resume), own, built)

    def _resume(self, saved: dict[str, Any], own: Sequence[FloatArray], optimizer: Optimizer) -> None:
        mine = [(a.shape, a.dtype) for a in self.model.arrays]
        theirs = [(a.shape, a.dtype) for a in saved["params"]]
        if mine != theirs:
            raise ValueError(f"the checkpoint to resume holds params {theirs}, but the model has {mine}")
        state = _checkpoint.slice_state_dict(saved["optimizer"], saved["params"], self._pieces,
                                             self._group_pieces)
        optimizer.load_state_dict(state)
        for view, (i, lo, hi) in zip(own, self._pieces):
            np.copyto(view, flat_view(saved["params"][i])[lo:hi])
        if self._dc is not None and self._dc.mean_squares is not None and saved["mean_square"] is not None:
            for ms, (i, lo, hi) in zip(self._dc.mean_squares, self._pieces):
                np.copyto(ms, flat_view(saved["mean_square"][i])[lo:hi])
        self.updates = saved["updates"]

    def _serve_message(self, message: MPI.Message, status: MPI.Status) -> None:
        source, tag = status.Get_source(), status.Get_tag()
        worker = source - self.n_servers
        if tag in (TAG_PUSH, TAG_PUSH_FETCH):
            expected = self._receive_buffer.nbytes
            if status.Get_count(MPI.BYTE) != expected:
                raise RuntimeError(f"ParameterServer server {self.rank}: worker {worker} pushed "
                                   f"{status.Get_count(MPI.BYTE)} bytes, expected {expected}")
            # Replies still in flight finish while the push arrives: they must, before the
            # params change.
            wait([message.Irecv(self._receive_buffer.spec)] + self._replies, self.timeout,
                 f"the push of worker {worker} (ParameterServer server {self.rank})", self.comm)
            self._replies = []
            staleness = self.updates - self._fetched_at[worker]
            self._staleness_sum += staleness
            self._staleness_count += 1
            self._staleness_max = max(self._staleness_max, staleness)
            if self._dc is not None:
                self._dc.apply(self._against[worker])
            assert self.optimizer is not None  # a server has one
            self.optimizer.step(self._grads)
            self.updates += 1
            if self.checkpoint_every and self.updates % self.checkpoint_every == 0:
                self._write_checkpoint()
        elif tag == TAG_FETCH:
            wait(message.Irecv([np.empty(0), MPI.DOUBLE]), self.timeout, "a fetch request", self.comm)
        else:
            raise RuntimeError(f"ParameterServer server {self.rank}: unexpected message tag {tag} "
                               f"from rank {source}")
        if tag in (TAG_FETCH, TAG_PUSH_FETCH):
            if self._dc is not None:
                for backup, view in zip(self._backups[worker], self._own):
                    np.copyto(backup, view)
            self._replies.append(self.comm.Isend(self._send_buffer.spec, dest=source, tag=TAG_PARAMS))
            self._fetched_at[worker] = self.updates
            self.bytes_sent += self._send_buffer.nbytes

    def _finish_serving(self) -> None:
        wait(self._replies, self.timeout, f"the last params sent (ParameterServer server {self.rank})", self.comm)
        self._replies = []
        if self.checkpoint is not None and self._written_at != self.updates:
            self._write_checkpoint()

    def _write_checkpoint(self) -> None:
        shard = self.shards[self.rank]
        assert self.optimizer is not None and self.checkpoint is not None
        payload = {
            "format": _checkpoint.FORMAT, "version": _checkpoint.VERSION,
            "shard": self.rank, "shards": self.n_servers,
            "model": self.model.describe(), "group_sizes": self.model.group_sizes, "named": self.model.named,
            "pieces": self._pieces,
            "params": [np.array(p) for group in self.optimizer.param_groups for p in group["params"]],
            "optimizer": self.optimizer.state_dict(),
            "updates": self.updates,
            "mean_square": None if self._dc is None or self._dc.mean_squares is None
            else [np.array(ms) for ms in self._dc.mean_squares],
        }
        _checkpoint.atomic_write(_checkpoint.shard_path(self.checkpoint, shard.index, self.n_servers), payload)
        self._written_at = self.updates

    @staticmethod
    def load_checkpoint(path: Union[str, "os.PathLike[str]"]) -> dict[str, Any]:
        """The checkpoint at path (several servers: its shard files, reassembled).

        Parameters
        ----------
        path : str or path
            The `checkpoint` path a ParameterServer wrote.

        Returns
        -------
        dict
            ``{"params": [arrays in flat param order], "updates": int, "optimizer":
            state_dict of an optimizer over the whole model, "mean_square":
            DC-ASGD-a's, or None}``.

        Raises
        ------
        FileNotFoundError
            No checkpoint at path.
        ValueError
            Files that are not a complete checkpoint of one model.
        """
        return _checkpoint.load(path)

    # ---- the worker ---------------------------------------------------------------------
    def _set_up_worker(self) -> None:
        # Accumulated grads: one flat array per dtype space, so server s's part of each is contiguous.
        self._accumulated = [np.zeros(space.size, dtype=space.dtype) for space in self.model.spaces]
        self._accumulated_views: list[FloatArray] = [np.empty(0) for _ in range(len(self.model))]
        for space, flat in zip(self.model.spaces, self._accumulated):
            for i, begin, end in zip(space.indices, space.offsets[:-1], space.offsets[1:]):
                self._accumulated_views[i] = flat[begin:end].reshape(self.model.arrays[i].shape)
        self._push_buffers = [ArraysBuffer([flat[start:stop] for flat, (start, stop)
                                            in zip(self._accumulated, shard.ranges)])
                              for shard in self.shards]
        self._fetch_buffers = [shard_buffer(s.views) for s in self.shards]
        self._pending = 0          # grads accumulated since the last push
        self._calls = 0
        self._sends: list[MPI.Request] = []           # the last push's sends, if it did not fetch

    @shared_docs
    def step(self, grads: Grads) -> None:
        """Accumulate grads; push their mean every push_every calls, fetch every fetch_every.

        For workers, inside run(): the fetched params land in the params.

        {{worker_step}}
        """
        self._check_worker("step")
        flat = self.model.flatten(grads)
        self._wait_sends()
        for view, grad in zip(self._accumulated_views, flat):
            if self._pending:
                np.add(view, grad, out=view)
            else:
                np.copyto(view, grad)
        self._pending += 1
        self._calls += 1
        fetch = self._calls % self.fetch_every == 0
        if self._calls % self.push_every == 0:
            self._push(fetch)
        elif fetch:
            self._fetch()

    def _push(self, fetch: bool) -> None:
        if self._pending > 1:
            for flat in self._accumulated:
                np.divide(flat, self._pending, out=flat)
        receives = self._receive_params() if fetch else []
        tag = TAG_PUSH_FETCH if fetch else TAG_PUSH
        sends = [self.comm.Isend(b.spec, dest=s, tag=tag) for s, b in enumerate(self._push_buffers)]
        self._pending = 0
        self.pushes += 1
        self.bytes_sent += sum(b.nbytes for b in self._push_buffers)
        if fetch:
            wait(receives + sends, self.timeout, f"worker {self.worker_index}'s push and fetch", self.comm)
        else:
            self._sends = sends

    def _fetch(self) -> None:
        receives = self._receive_params()
        sends = [self.comm.Isend([np.empty(0), MPI.DOUBLE], dest=s, tag=TAG_FETCH) for s in range(self.n_servers)]
        wait(receives + sends, self.timeout, f"worker {self.worker_index}'s fetch", self.comm)

    def _receive_params(self) -> list[MPI.Request]:
        # Posted before the request goes out: the params land straight in this worker's params.
        return [self.comm.Irecv(b.spec, source=s, tag=TAG_PARAMS) for s, b in enumerate(self._fetch_buffers)]

    def _wait_sends(self) -> None:
        if self._sends:
            wait(self._sends, self.timeout, f"worker {self.worker_index}'s last push", self.comm)
            self._sends = []

    def _start_worker(self) -> None:
        self._fetch()

    def _finish_worker(self) -> None:
        self._wait_sends()
        if self._pending:
            self._push(fetch=False)
            self._wait_sends()

    # ---- the end -------------------------------------------------------------------------
    def _final_buffers(self) -> list[ArraysBuffer]:
        return [shard_buffer(s.views) for s in self.shards]

    def _rank_stats(self) -> dict[str, Any]:
        if self.is_server:
            return {"updates": self.updates, "staleness_sum": self._staleness_sum,
                    "staleness_count": self._staleness_count, "staleness_max": self._staleness_max,
                    "bytes_sent": self.bytes_sent}
        return {"pushes": self.pushes, "bytes_sent": self.bytes_sent}

    def _combine_stats(self, per_rank: list[dict[str, Any]]) -> dict[str, Any]:
        servers, workers = per_rank[:self.n_servers], per_rank[self.n_servers:]
        count = sum(s["staleness_count"] for s in servers)
        return {
            "updates": servers[0]["updates"],
            "staleness_mean": sum(s["staleness_sum"] for s in servers) / count if count else 0.0,
            "staleness_max": max(s["staleness_max"] for s in servers),
            "pushes": [w["pushes"] for w in workers],
            "bytes_sent": sum(r["bytes_sent"] for r in per_rank),
            "seconds": max(r["seconds"] for r in per_rank),
        }


def _group_pieces(shard: Shard) -> list[list[Piece]]:
    """Per group, the shard optimizer's params as (param index, lo, hi) pieces of the model
    (a group's empty placeholder view is (its first param, 0, 0)); see Shard.group_members."""
    firsts = np.cumsum([0] + shard.paramset.group_sizes[:-1])
    return [[(int(first), 0, 0) if m is None else shard.pieces[m[0]][m[1]] for m in members]
            for first, members in zip(firsts, shard.group_members())]


def _piece_segments(buffers: Sequence[FloatArray], shard: Shard, pieces: Sequence[Piece],
                    model: ParamSet) -> list[FloatArray]:
    """The segments of per-space shard buffers that correspond to `pieces` (an empty
    array for a group's empty placeholder piece)."""
    where: dict[Piece, FloatArray] = {}
    for buffer, space_pieces in zip(buffers, shard.pieces):
        offset = 0
        for piece in space_pieces:
            where[piece] = buffer[offset:offset + piece[2] - piece[1]]
            offset += piece[2] - piece[1]
    return [where[p] if p in where else np.empty(0, dtype=model.arrays[p[0]].dtype) for p in pieces]
