"""Collectives over a model's params and grads.

API
---
``broadcast_params(params, comm=None, root=0, timeout=300.0)``
    public; see its docstring.
``broadcast_arrays(arrays, comm, root, timeout, what)``
    the same without checks, for wrappers that checked the model already.
``IdenticalAllreduce(buffer, comm)``
    the sum over ranks of a flat buffer, in place, that every rank gets bit for
    bit: a reduce-scatter (each element is summed by exactly one rank, into a
    preallocated shard) then an all-gather of the shards.  MPI's Allreduce does
    not promise every rank the same bits, and replicas that differ in the last
    bit drift apart.  ``.start()``, then ``.wait(timeout, what)``; reusable.
``ShardAllgather(arrays, space, bounds, comm)``
    the all-gather of element-wise shards of a flat space straight into the
    params' memory: ``.start()`` returns the request.  A space of one param is
    one contiguous buffer (MPI_Iallgatherv in place); otherwise each rank's shard
    is described by an MPI datatype over the params' addresses (hindexed, from
    MPI_BOTTOM) and the shards travel by MPI_Ialltoallw, never through a copy.
``step_with_mean(optimizer, grads, buffers, divisor)``
    the fused step of `optimizer` on reduced grads (views into `buffers`), their
    mean over `divisor` ranks.
"""
import numpy as np

from ._buckets import ParamSet, shard_bounds
from ._consistency import check_same_model
from ._mpi import DEFAULT_TIMEOUT, MPI, check_timeout, mpi_datatype, resolve_comm, wait


def broadcast_params(params, comm=None, root=0, timeout=DEFAULT_TIMEOUT):
    """Copy root's params into every rank's params, in place.

    params: a list or dict of arrays (or param groups), as optimizers take;
    every rank passes its own arrays of the same model.  A model that differs
    across ranks raises ValueError on every rank.  Returns `params`.
    """
    comm = resolve_comm(comm)
    timeout = check_timeout(timeout)
    size = comm.Get_size()
    if isinstance(root, bool) or not isinstance(root, (int, np.integer)) or not 0 <= root < size:
        raise ValueError(f"root must be a rank of comm (0..{size - 1}), got {root!r}")
    model = ParamSet(params)
    check_same_model(model, comm, timeout, "broadcast_params")
    broadcast_arrays(model.arrays, comm, int(root), timeout, f"broadcast_params from rank {root}")
    return params


def broadcast_arrays(arrays, comm, root, timeout, what):
    """Root's arrays into every rank's arrays of the same shapes and dtypes, in place."""
    requests = [comm.Ibcast([a, mpi_datatype(a.dtype)], root=root) for a in arrays if a.size]
    wait(requests, timeout, what, comm)


class IdenticalAllreduce:
    """Sum a flat buffer over the ranks, in place, with the same bits on every rank."""

    def __init__(self, buffer, comm):
        self.buffer, self.comm = buffer, comm
        size, rank = comm.Get_size(), comm.Get_rank()
        bounds = shard_bounds(buffer.size, size)
        self.counts, self.displs = np.diff(bounds), bounds[:-1].copy()
        self.shard = np.empty(int(self.counts[rank]), dtype=buffer.dtype)
        self.datatype = mpi_datatype(buffer.dtype)
        self.request = None

    def start(self):
        self.request = self.comm.Ireduce_scatter([self.buffer, self.datatype], [self.shard, self.datatype],
                                                 self.counts, op=MPI.SUM)
        return self

    def wait(self, timeout, what):
        wait(self.request, timeout, f"the reduce-scatter of {what}", self.comm)
        self.request = self.comm.Iallgatherv([self.shard, self.datatype],
                                             [self.buffer, self.counts, self.displs, self.datatype])
        wait(self.request, timeout, f"the all-gather of {what}", self.comm)
        self.request = None


class ShardAllgather:
    """All-gather the element-wise shards of a flat space into the params, in place."""

    def __init__(self, arrays, space, bounds, comm):
        self.comm = comm
        size, rank = comm.Get_size(), comm.Get_rank()
        datatype = mpi_datatype(space.dtype)
        counts, displs = np.diff(bounds), bounds[:-1].copy()
        self.types = []
        if len(space.indices) == 1:
            flat = arrays[space.indices[0]].reshape(-1)
            self.recv = [flat, counts, displs, datatype]
            self.send = MPI.IN_PLACE
            self.alltoallw = False
            return
        for r in range(size):
            pieces = space.pieces(int(bounds[r]), int(bounds[r + 1]))
            addresses = [MPI.Get_address(arrays[i].reshape(-1)[lo:hi]) for i, lo, hi in pieces]
            self.types.append(datatype.Create_hindexed([hi - lo for _, lo, hi in pieces], addresses).Commit())
        zeros = [0] * size
        ones = [0 if r == rank or counts[r] == 0 else 1 for r in range(size)]  # nothing to or from oneself
        own = [self.types[rank]] * size
        sends = [0 if r == rank or counts[rank] == 0 else 1 for r in range(size)]
        self.send = [MPI.BOTTOM, sends, zeros, own]
        self.recv = [MPI.BOTTOM, ones, zeros, self.types]
        self.alltoallw = True

    def start(self):
        if self.alltoallw:
            return self.comm.Ialltoallw(self.send, self.recv)
        return self.comm.Iallgatherv(self.send, self.recv)

    def __del__(self):
        if self.types and MPI.Is_initialized() and not MPI.Is_finalized():
            for t in self.types:
                t.Free()


def _scale_bucket(buffer, divisor):
    """Divide reduced grads by the number of ranks, in place: their mean.

    A separate pass for now.  When the kernels take a grad scale (the redesign of
    issue 12: step(grads, grad_scale=N) divides inside the fused update, torch's
    fused grad_scale semantics), this function goes away: see step_with_mean.
    """
    np.divide(buffer, divisor, out=buffer)


def step_with_mean(optimizer, grads, buffers, divisor):
    """Step `optimizer` with `grads` (views into `buffers`, summed over ranks) divided by `divisor`."""
    if divisor != 1:
        for buffer in buffers:
            _scale_bucket(buffer, divisor)  # becomes: optimizer.step(grads, grad_scale=divisor)
    optimizer.step(grads)
