"""Collectives over a model's params and grads.

The hot paths (a step's reductions and gathers) call Open MPI's blocking
collectives, whose algorithms are several times faster here than its
non-blocking ones (libnbc: measured side by side in the distributed
benchmark's exploration, see the README), under _mpi.blocking's watchdog, which
aborts the job if a call outlives its timeout.  A single-threaded rank gains
nothing from a non-blocking reduction anyway: Open MPI progresses it only
inside MPI calls, so it would not advance while the rank runs a fused step.
DataParallel overlaps the other way round: a stepping thread runs bucket k's
fused step (the kernels release the GIL) while the calling thread, the only
one that calls MPI, sits in bucket k + 1's blocking reduction.

API
---
``broadcast_params(params, comm=None, root=0, timeout=300.0)``
    public; see its docstring.
``broadcast_arrays(arrays, comm, root, timeout, what)``
    the same without checks, for wrappers that checked the model already.
``ShardedSum(buffer, bounds, comm)``
    the sum over ranks of a flat buffer, in place, shard by shard: shard r
    (buffer[bounds[r]:bounds[r + 1]]) is summed onto rank r (MPI_Reduce, in
    place at the root).  ``.reduce()`` leaves this rank's shard summed;
    ``.gather()`` then all-gathers the shards in place (MPI_Allgatherv): the
    whole sum on every rank, each element added up once, by its owner, so every
    rank gets the same bits and replicas never drift apart (MPI's Allreduce
    promises no such thing).  Call both inside _mpi.blocking.
``ReplicaSum(buffer, comm)``
    the sum over ranks of a flat buffer, in place, the same bits on every
    rank: ``.run()`` (blocking; call it inside _mpi.blocking).  On 2 ranks one
    MPI_Allreduce: each element of the sum is one IEEE addition of the two
    ranks' values, a + b or b + a whichever rank computes it and in whichever
    order, and IEEE addition is commutative, so every rank holds the same bits
    whatever algorithm Open MPI picks (1.3x faster than ShardedSum here).  The
    one exception: two NaNs with different payloads may sum to either payload
    (x86 keeps the first operand's), a NaN either way.  (Both ranks must add in
    the same floating-point environment: flush-to-zero set on one rank only
    would round subnormal sums differently there; ShardedSum adds each element
    on one rank and needs no such assumption.)  On 3 ranks or more
    (a + b) + c and a + (b + c) can differ, and MPI_Allreduce does not say
    which rank adds in which order, so the sum is a ShardedSum.
``ShardAllgather(arrays, space, bounds, comm)``
    the all-gather of element-wise shards of a flat space into the params:
    ``.run()``, blocking.  A space of one param, or of params that already lie
    end to end in one buffer (a model allocated as views of one array), is one
    contiguous buffer, so the shards land straight in it (MPI_Allgatherv in
    place).  Otherwise they travel through a flat buffer: this rank's pieces are
    copied in, gathered, and the other ranks' pieces copied out (a pass over
    the whole model: on 200 x 2^14 float32 params on 2 ranks, about a fifth of
    the step).  (Straight into the params by an
    MPI datatype over their addresses (hindexed from MPI_BOTTOM, with
    MPI_Alltoallw) was 1.5-3x slower here: Open MPI then packs through its
    shared-memory fragments, while a contiguous Allgatherv is one copy.)
``fused_step(optimizer, grads, divisor)``
    the fused step on summed grads, dividing them by `divisor` inside the kernel
    (the mean over ranks costs no pass of its own).
"""
from collections.abc import Sequence
from typing import Any, Optional, TypeVar

import numpy as np

from ..optim import Optimizer
from ..typing import FloatArray, Params
from ._buckets import FlatSpace, Int64Array, ParamSet, flat_view, laid_end_to_end, shard_bounds
from ._consistency import check_same_model
from ._docs import shared_docs
from ._mpi import DEFAULT_TIMEOUT, MPI, check_timeout, mpi_datatype, resolve_comm, wait

P = TypeVar("P", bound=Params)


@shared_docs
def broadcast_params(params: P, comm: Optional[MPI.Intracomm] = None, root: int = 0,
                     timeout: float = DEFAULT_TIMEOUT) -> P:
    """Copy root's params into every rank's params, in place (a collective).

    Parameters
    ----------
    params : list, dict or list of param groups
        The model's arrays, as optimizers take them; every rank passes its own
        arrays of the same model.
    {{comm}}
    root : int, default 0
        The rank whose params every rank receives.
    {{timeout}}

    Returns
    -------
    list, dict or list of param groups
        `params`, now holding root's values.

    Raises
    ------
    TypeError
        comm is not an intracommunicator, or params are not arrays in a structure
        optimizers take.
    ValueError
        A bad root or timeout, or a model that differs across ranks (raised on
        every rank, before any array is written).
    CollectiveTimeout
        A rank did not join within `timeout` seconds.

    Examples
    --------
    {{mpi_example}}
    >>> from fastoptim.distributed import broadcast_params
    >>> params = {"w": np.random.default_rng().standard_normal(3)}  # differs per rank
    >>> broadcast_params(params)  # doctest: +SKIP
    {'w': array([...])}
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


def broadcast_arrays(arrays: Sequence[FloatArray], comm: MPI.Intracomm, root: int, timeout: float,
                     what: str) -> None:
    """Root's arrays into every rank's arrays of the same shapes and dtypes, in place."""
    requests = [comm.Ibcast([a, mpi_datatype(a.dtype)], root=root) for a in arrays if a.size]
    wait(requests, timeout, what, comm)


class ShardedSum:
    """Sum a flat buffer over the ranks, in place, each shard onto its owner, then gather."""

    def __init__(self, buffer: FloatArray, bounds: Int64Array, comm: MPI.Intracomm) -> None:
        self.buffer, self.comm = buffer, comm
        self.rank = comm.Get_rank()
        self.counts, self.displs = np.diff(bounds), bounds[:-1].copy()
        self.datatype = mpi_datatype(buffer.dtype)
        self.shards = [buffer[int(a):int(b)] for a, b in zip(bounds[:-1], bounds[1:])]

    def reduce(self) -> None:
        """This rank's shard becomes the sum over ranks."""
        for root, shard in enumerate(self.shards):
            if shard.size == 0:
                continue
            if root == self.rank:
                self.comm.Reduce(MPI.IN_PLACE, [shard, self.datatype], op=MPI.SUM, root=root)
            else:
                self.comm.Reduce([shard, self.datatype], None, op=MPI.SUM, root=root)

    def gather(self) -> None:
        """Every rank's reduced shard into every rank's buffer."""
        self.comm.Allgatherv(MPI.IN_PLACE, [self.buffer, self.counts, self.displs, self.datatype])


class ReplicaSum:
    """Sum a flat buffer over the ranks, in place, with the same bits on every rank."""

    def __init__(self, buffer: FloatArray, comm: MPI.Intracomm) -> None:
        self.buffer, self.comm = buffer, comm
        self.allreduce = comm.Get_size() == 2
        self.spec: list[Any] = [buffer, mpi_datatype(buffer.dtype)]
        self.sharded = None if self.allreduce else ShardedSum(buffer, shard_bounds(buffer.size, comm.Get_size()),
                                                               comm)

    def run(self) -> None:
        """The sum on every rank (blocking: call it inside _mpi.blocking)."""
        if self.sharded is None:
            if self.buffer.size:
                self.comm.Allreduce(MPI.IN_PLACE, self.spec, op=MPI.SUM)
        else:
            self.sharded.reduce()
            self.sharded.gather()


class ShardAllgather:
    """All-gather the element-wise shards of a flat space into the params."""

    def __init__(self, arrays: Sequence[FloatArray], space: FlatSpace, bounds: Int64Array,
                 comm: MPI.Intracomm) -> None:
        self.comm = comm
        rank = comm.Get_rank()
        datatype = mpi_datatype(space.dtype)
        counts, displs = np.diff(bounds), bounds[:-1].copy()
        start = {i: int(space.offsets[j]) for j, i in enumerate(space.indices)}
        whole = laid_end_to_end(arrays, space)
        self.own: list[tuple[FloatArray, FloatArray]] = []
        self.others: list[tuple[FloatArray, FloatArray]] = []
        if whole is not None:   # the params are the flat space: gather straight into them
            self.flat = whole
        else:
            self.flat = np.empty(space.size, dtype=space.dtype)

            def parts(r: int) -> list[tuple[FloatArray, FloatArray]]:  # (param piece, its place in the flat buffer)
                return [(flat_view(arrays[i])[lo:hi], self.flat[start[i] + lo:start[i] + hi])
                        for i, lo, hi in space.pieces(int(bounds[r]), int(bounds[r + 1]))]
            self.own = parts(rank)
            self.others = [part for r in range(len(counts)) if r != rank for part in parts(r)]
        self.recv: list[Any] = [self.flat, counts, displs, datatype]

    def run(self) -> None:
        """Gather (blocking: call it inside _mpi.blocking)."""
        for piece, place in self.own:
            np.copyto(place, piece)
        self.comm.Allgatherv(MPI.IN_PLACE, self.recv)
        for piece, place in self.others:
            np.copyto(piece, place)


def fused_step(optimizer: Optimizer, grads: Any, divisor: int) -> None:
    """The fused step on summed grads; the kernel divides them by `divisor` (torch's
    grad_scale semantics: grad / divisor, exactly, so N ranks' sum divided by N is the
    mean one process computes)."""
    optimizer.step(grads, grad_scale=None if divisor == 1 else divisor)
