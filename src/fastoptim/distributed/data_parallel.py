"""Synchronous data parallelism: every rank keeps a full replica and its optimizer's
full state; a step reduces the ranks' grads and runs the same fused step everywhere."""
import numpy as np

from ._buckets import BUCKET_BYTES, ParamSet, make_buckets, shard_bounds
from ._collectives import ShardedSum, broadcast_arrays, fused_step
from ._consistency import check_same_model
from ._mpi import DEFAULT_TIMEOUT, blocking, check_timeout, resolve_comm


class DataParallel:
    """Wrap a fastoptim optimizer so that step(grads) steps on the ranks' combined grads.

    step(grads) takes this rank's local grads (in the params' structure), sums
    them over the ranks of `comm` (their mean with average=True), then runs the
    wrapped optimizer's fused step.  With equal shards of a batch, N ranks give
    the params one process gets stepping on the whole batch; every rank ends
    with the same bits (each element of the sum is added up once, by one rank,
    see _collectives.ShardedSum), so replicas never drift apart.

    Grads travel in a few preallocated flat buckets of about `bucket_bytes`
    (32 MiB by default; cut at param boundaries), one reduction per bucket, and
    each bucket's params step as soon as its reduction is done.  Write grads straight into the buckets to save the copy:
    grad_buffers() returns them in the params' structure; pass them to step().
    After a step they hold the sum of the ranks' grads: with average=True the
    kernel divides by the number of ranks as it steps (a grad scale), no pass of its own.

    At construction every rank must wrap the same model (else ValueError, on
    every rank), and rank 0's params are copied to every rank (as torch's
    DistributedDataParallel does).  All ranks must call step() together; every
    wait is bounded by `timeout` seconds (see fastoptim.distributed).
    """

    def __init__(self, optimizer, comm=None, average=True, *, timeout=DEFAULT_TIMEOUT,
                 bucket_bytes=BUCKET_BYTES):
        self.comm = resolve_comm(comm)
        self.timeout = check_timeout(timeout)
        _bucket_elements(bucket_bytes, np.float64)  # checked before any message
        if not isinstance(average, (bool, np.bool_)):
            raise TypeError(f"average must be True (the mean over ranks) or False (the sum), got {average!r}")
        self.average = bool(average)
        if getattr(getattr(optimizer, "rule", None), "closure", False):
            raise TypeError(f"{type(optimizer).__name__} steps with a closure that evaluates the loss "
                            f"itself; DataParallel.step takes grads: use a grad-based optimizer")
        self.optimizer = optimizer
        self.model = model = ParamSet.from_optimizer(optimizer)
        check_same_model(model, self.comm, self.timeout, "DataParallel",
                         extra={"optimizer": type(optimizer).__name__, "average": self.average})
        broadcast_arrays(model.arrays, self.comm, 0, self.timeout, "DataParallel's copy of rank 0's params")
        self.size = self.comm.Get_size()
        self.buckets = [b for space in model.spaces
                        for b in make_buckets(space, _bucket_elements(bucket_bytes, space.dtype))]
        # Per param, the view of its bucket that holds its grad (a zero-size param: its own array).
        views = [np.zeros_like(a) for a in model.arrays]
        members = []
        for bucket in self.buckets:
            indices = [i for i, _, _ in bucket.pieces]
            for i, view in zip(indices, bucket.views(model.arrays)):
                views[i] = view
            members.append(indices)
        for i, a in enumerate(model.arrays):  # zero-size params step with the first bucket
            if a.size == 0:
                members[0].append(i)
        self._grad_views = views
        # Per bucket, the grads its step passes to the optimizer: its params' views, None elsewhere.
        self._bucket_grads = []
        for m in members:
            grads = [None] * len(views)
            for i in m:
                grads[i] = views[i]
            self._bucket_grads.append(model.for_optimizer(grads))
        self._sums = ([ShardedSum(b.buffer, shard_bounds(b.buffer.size, self.size), self.comm)
                       for b in self.buckets] if self.size > 1 else None)
        self._what = [f"the reduction of bucket {k} in DataParallel.step" for k in range(len(self.buckets))]

    @property
    def param_groups(self):
        """The wrapped optimizer's param groups."""
        return self.optimizer.param_groups

    def grad_buffers(self):
        """Per param, its grad's place in the flat buckets, in the params' structure.

        Write this rank's grads into these arrays (e.g. np.matmul(..., out=g)) and
        pass them to step(): no copy.  step() leaves the reduced grads in them.
        """
        return self.model.unflatten(self._grad_views)

    def step(self, grads):
        """Reduce this rank's grads over the ranks, then step (every rank calls it together).

        grads: one array per param (no None: every rank reduces every grad), in the
        params' structure; the arrays from grad_buffers() are used in place, others
        are copied into the buckets.  Every grad is checked before any message.
        """
        flat = self.model.flatten(grads)
        views = self._grad_views
        divisor = self.size if self.average else 1
        t = self.optimizer.step_count
        for k, bucket in enumerate(self.buckets):
            for i, _, _ in bucket.pieces:
                if flat[i] is not views[i]:
                    np.copyto(views[i], flat[i])
            if self._sums is not None:
                blocking(self.timeout, self._what[k], self.comm, self._reduce, self._sums[k])
            self.optimizer.step_count = t  # every bucket's part of the step is step t
            fused_step(self.optimizer, self._bucket_grads[k], divisor)

    @staticmethod
    def _reduce(total):
        total.reduce()
        total.gather()

    def state_dict(self):
        """The wrapped optimizer's state_dict (the same on every rank)."""
        return self.optimizer.state_dict()

    def load_state_dict(self, state_dict):
        """Load a state_dict into the wrapped optimizer (load the same one on every rank)."""
        self.optimizer.load_state_dict(state_dict)


def _bucket_elements(bucket_bytes, dtype):
    if isinstance(bucket_bytes, bool) or not isinstance(bucket_bytes, (int, np.integer)) or bucket_bytes < 1:
        raise ValueError(f"bucket_bytes must be an integer >= 1, got {bucket_bytes!r}")
    return max(1, int(bucket_bytes) // np.dtype(dtype).itemsize)
