"""Synchronous data parallelism: every rank keeps a full replica and its optimizer's
full state; a step reduces the ranks' grads and runs the same fused step everywhere."""
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Optional

import numpy as np
import numpy.typing as npt

from ..optim import Optimizer
from ..typing import FloatArray, Grads
from ._buckets import BUCKET_BYTES, ParamSet, make_buckets
from ._collectives import ReplicaSum, broadcast_arrays, fused_step
from ._consistency import check_same_model
from ._docs import shared_docs
from ._mpi import DEFAULT_TIMEOUT, MPI, blocking, check_timeout, resolve_comm


@shared_docs
class DataParallel:
    """Wrap a fastoptim optimizer so that step(grads) steps on the ranks' combined grads.

    step(grads) takes this rank's local grads (in the params' structure), sums
    them over the ranks of `comm` (their mean with average=True), then runs the
    wrapped optimizer's fused step.  With equal shards of a batch, N ranks give
    the params one process gets stepping on the whole batch; every rank ends
    with the same bits (on 2 ranks one MPI_Allreduce, whose a + b is b + a; on
    more, each element of the sum is added up once, by one rank: see
    _collectives.ReplicaSum), so replicas never drift apart.

    Grads travel in a few preallocated flat buckets of about `bucket_bytes`
    (32 MiB by default; cut at param boundaries), one reduction per bucket, and
    each bucket's params step as soon as its reduction is done, while the next
    bucket is being reduced (overlap=True).  Write grads straight into the buckets to save the copy:
    grad_buffers() returns them in the params' structure; pass them to step().
    After a step they hold the sum of the ranks' grads: with average=True the
    kernel divides by the number of ranks as it steps (a grad scale), no pass of its own.

    At construction every rank must wrap the same model (else ValueError, on
    every rank), and rank 0's params are copied to every rank (as torch's
    DistributedDataParallel does).  All ranks must call step() together; every
    wait is bounded by `timeout` seconds (see fastoptim.distributed).

    Parameters
    ----------
    optimizer : fastoptim.optim.Optimizer
        The optimizer over this rank's replica of the model (any optimizer that
        steps on grads: not LBFGS, whose step evaluates a closure).
    {{comm}}
    average : bool, default True
        Step on the mean of the ranks' grads (False: their sum).
    {{timeout}}
    bucket_bytes : int, default 33554432
        The size a bucket of grads grows to (32 MiB; cut at param boundaries).
    overlap : bool, default True
        With several buckets, bucket k's fused step runs in a stepping thread
        (the kernels release the GIL) while this thread reduces bucket k + 1;
        the steps still run in bucket order, so the bits are those of
        overlap=False (reduce, then step, bucket after bucket).  Only the
        calling thread calls MPI.

    Raises
    ------
    TypeError
        A closure optimizer, a bad comm or a non-bool average or overlap.
    ValueError
        A bad timeout or bucket_bytes, or a model that differs across ranks
        (raised on every rank).

    Examples
    --------
    {{mpi_example}}
    >>> from fastoptim.distributed import DataParallel
    >>> params = {"w": np.zeros(3)}
    >>> dp = DataParallel(fastoptim.Adam(params, lr=0.1))  # doctest: +SKIP
    >>> grads = dp.grad_buffers()  # doctest: +SKIP
    >>> grads["w"][:] = 1.0  # this rank's grads, written in place  # doctest: +SKIP
    >>> dp.step(grads)  # their mean over the ranks, one fused Adam step  # doctest: +SKIP
    """

    def __init__(self, optimizer: Optimizer, comm: Optional[MPI.Intracomm] = None, average: bool = True, *,
                 timeout: float = DEFAULT_TIMEOUT, bucket_bytes: int = BUCKET_BYTES,
                 overlap: bool = True) -> None:
        self.comm = resolve_comm(comm)
        self.timeout = check_timeout(timeout)
        _bucket_elements(bucket_bytes, np.float64)  # checked before any message
        if not isinstance(average, (bool, np.bool_)):
            raise TypeError(f"average must be True (the mean over ranks) or False (the sum), got {average!r}")
        self.average = bool(average)
        if not isinstance(overlap, (bool, np.bool_)):
            raise TypeError(f"overlap must be True or False, got {overlap!r}")
        self.overlap = bool(overlap)
        self._stepper: Optional[ThreadPoolExecutor] = None
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
        members: list[list[int]] = []
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
        self._bucket_grads: list[Any] = []
        for m in members:
            grads: list[Optional[FloatArray]] = [None] * len(views)
            for i in m:
                grads[i] = views[i]
            self._bucket_grads.append(model.for_optimizer(grads))
        self._sums = [ReplicaSum(b.buffer, self.comm) for b in self.buckets] if self.size > 1 else None
        self._what = [f"the reduction of bucket {k} in DataParallel.step" for k in range(len(self.buckets))]

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        """The wrapped optimizer's param groups (a hyperparameter changed here takes effect)."""
        return self.optimizer.param_groups

    def grad_buffers(self) -> Any:
        """Per param, its grad's place in the flat buckets, in the params' structure.

        Write this rank's grads into these arrays (e.g. np.matmul(..., out=g)) and
        pass them to step(): no copy.  step() leaves the reduced grads in them.

        Returns
        -------
        list, dict or list of lists/dicts
            One array per param, shaped like it, in the params' structure.
        """
        return self.model.unflatten(self._grad_views)

    @shared_docs
    def step(self, grads: Grads) -> None:
        """Reduce this rank's grads over the ranks, then step (every rank calls it together).

        Parameters
        ----------
        grads : list, dict or list of lists/dicts
            One array per param (no None: every rank reduces every grad), in the
            params' structure; the arrays from grad_buffers() are used in place,
            others are copied into the buckets.

        Raises
        ------
        {{grad_errors}}
        CollectiveTimeout
            A rank did not join within the timeout.
        """
        flat = self.model.flatten(grads)
        t = self.optimizer.step_count
        if self._sums is None or not self.overlap or len(self.buckets) == 1:
            for k in range(len(self.buckets)):
                self._reduce_bucket(k, flat)
                self._step_bucket(k, t)
            return
        # Pipelined: a stepping thread runs bucket k's fused step (the kernels release the
        # GIL) while this thread sits in bucket k + 1's blocking reduction.  Only this thread
        # calls MPI.  The steps run one after another, in bucket order, as above.
        stepper = self._stepper
        if stepper is None:
            stepper = self._stepper = ThreadPoolExecutor(1, thread_name_prefix="fastoptim DataParallel step")
        self._reduce_bucket(0, flat)
        for k in range(len(self.buckets)):
            stepping = stepper.submit(self._step_bucket, k, t)
            try:
                if k + 1 < len(self.buckets):
                    self._reduce_bucket(k + 1, flat)
            finally:
                stepping.result()  # re-raises the step's exception, after the reduction

    def _reduce_bucket(self, k: int, flat: list[Any]) -> None:
        """Bucket k's grads copied in (those not written there), then summed over the ranks."""
        views = self._grad_views
        for i, _, _ in self.buckets[k].pieces:
            if flat[i] is not views[i]:
                np.copyto(views[i], flat[i])
        if self._sums is not None:
            blocking(self.timeout, self._what[k], self.comm, self._sums[k].run)

    def _step_bucket(self, k: int, t: int) -> None:
        """The fused step of bucket k's params on their reduced grads: part of step t."""
        self.optimizer.step_count = t  # every bucket's part of the step is step t
        fused_step(self.optimizer, self._bucket_grads[k], self.size if self.average else 1)

    def state_dict(self) -> dict[str, Any]:
        """The wrapped optimizer's state_dict (the same on every rank).

        Returns
        -------
        dict
            ``{"state", "param_groups", "step_count"}`` in torch's layout.
        """
        return self.optimizer.state_dict()

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Load a state_dict into the wrapped optimizer (load the same one on every rank).

        Parameters
        ----------
        state_dict : dict
            From state_dict(), or from a plain optimizer over the same params.
        """
        self.optimizer.load_state_dict(state_dict)


def _bucket_elements(bucket_bytes: int, dtype: npt.DTypeLike) -> int:
    if isinstance(bucket_bytes, bool) or not isinstance(bucket_bytes, (int, np.integer)) or bucket_bytes < 1:
        raise ValueError(f"bucket_bytes must be an integer >= 1, got {bucket_bytes!r}")
    return max(1, int(bucket_bytes) // np.dtype(dtype).itemsize)
