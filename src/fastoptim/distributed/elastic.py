"""Synchronous elastic averaging: EASGD and EAMSGD (Zhang, Choromanska and LeCun, 2015)."""
import numbers
from collections.abc import Mapping
from typing import Any, Optional

import numpy as np

from ..optim import Optimizer
from ..typing import FloatArray, Grads
from ._buckets import ParamSet, flat_view
from ._collectives import ReplicaSum, broadcast_arrays
from ._consistency import check_same_model
from ._docs import shared_docs
from ._mpi import DEFAULT_TIMEOUT, MPI, blocking, check_timeout, resolve_comm


@shared_docs
class ElasticAveraging:
    """Synchronous EASGD: each rank a worker, with an elastic pull toward a center variable.

    The center x~ is replicated on every rank (the same bits everywhere) and
    starts as the params at construction (rank 0's, copied to every rank).  At
    step t (counted from 0) with t % period == 0, before the inner step, in
    this order:

    1. every rank computes d_i = alpha * (x_i - x~) from its current params;
    2. x~ <- x~ + sum_i d_i (an allreduce);
    3. x_i <- x_i - d_i.

    Then the wrapped optimizer steps with the grads given (computed at the
    pre-exchange x_i, as in the paper's equations).  alpha defaults to 0.9 / N
    (the paper's beta = N alpha = 0.9).  With SGD(momentum=..., nesterov=True)
    as the inner optimizer this is EAMSGD.  Between exchanges, workers step on
    their own grads without communicating.

    `center` holds x~ in the params' structure (live arrays).  At construction
    every rank must wrap the same model (else ValueError, on every rank); every
    wait is bounded by `timeout` seconds.

    Parameters
    ----------
    optimizer : fastoptim.optim.Optimizer
        This rank's inner optimizer over its params.
    {{comm}}
    period : int, default 10
        Steps between elastic exchanges (tau), >= 1.
    alpha : float or None, default None
        The elastic moving rate in (0, 1] (None: 0.9 / number of ranks).
    {{timeout}}

    Raises
    ------
    TypeError
        A bad comm, or an optimizer without param groups.
    ValueError
        A bad period, alpha or timeout, or a model that differs across ranks.

    Examples
    --------
    {{mpi_example}}
    >>> from fastoptim.distributed import ElasticAveraging
    >>> params = [np.zeros(3)]
    >>> sgd = fastoptim.SGD(params, lr=0.05, momentum=0.9, nesterov=True)  # EAMSGD's inner step
    >>> ea = ElasticAveraging(sgd, period=4)  # doctest: +SKIP
    >>> ea.step([np.ones(3)])  # doctest: +SKIP
    """

    def __init__(self, optimizer: Optimizer, comm: Optional[MPI.Intracomm] = None, period: int = 10,
                 alpha: Optional[float] = None, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.comm = resolve_comm(comm)
        self.timeout = check_timeout(timeout)
        self.size = self.comm.Get_size()
        given: object = period  # checked as the object it is, whatever the annotation says
        if isinstance(given, bool) or not isinstance(given, numbers.Integral) or given < 1:
            raise ValueError(f"period must be an integer >= 1 (steps between elastic exchanges), got {period!r}")
        rate: object = 0.9 / self.size if alpha is None else alpha
        if isinstance(rate, bool) or not isinstance(rate, numbers.Real) or not 0 < float(rate) <= 1:
            raise ValueError(f"alpha must be a number in (0, 1] (the elastic moving rate), got {alpha!r}")
        self.period, self.alpha = int(given), float(rate)
        self.optimizer = optimizer
        self.model = model = ParamSet.from_optimizer(optimizer)
        check_same_model(model, self.comm, self.timeout, "ElasticAveraging",
                         extra={"optimizer": type(optimizer).__name__, "period": self.period, "alpha": self.alpha})
        broadcast_arrays(model.arrays, self.comm, 0, self.timeout, "ElasticAveraging's copy of rank 0's params")
        self.step_count = 0   # t: steps taken; exchanges happen before steps with t % period == 0
        # Per dtype space: the center, the elastic differences d_i, and their sum over the ranks.
        self._center = [np.empty(space.size, dtype=space.dtype) for space in model.spaces]
        self._diff = [np.empty(space.size, dtype=space.dtype) for space in model.spaces]
        self._sum = [np.empty(space.size, dtype=space.dtype) for space in model.spaces]
        self._slices: list[tuple[int, slice, FloatArray]] = []   # per param: (space index, its slice of the space, its flat view)
        self._center_views: list[FloatArray] = [np.empty(0) for _ in model.arrays]
        for s, space in enumerate(model.spaces):
            for j, i in enumerate(space.indices):
                part = slice(int(space.offsets[j]), int(space.offsets[j + 1]))
                self._slices.append((s, part, flat_view(model.arrays[i])))
                self._center_views[i] = self._center[s][part].reshape(model.arrays[i].shape)
                self._center[s][part] = self._slices[-1][2]
        self._sums = [ReplicaSum(total, self.comm) for total in self._sum] if self.size > 1 else None

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        """The wrapped optimizer's param groups."""
        return self.optimizer.param_groups

    @property
    def center(self) -> Any:
        """The center variable x~ in the params' structure (live arrays, the same on every rank).

        Returns
        -------
        list, dict or list of lists/dicts
            One array per param, shaped like it.
        """
        return self.model.unflatten(self._center_views)

    def step(self, grads: Grads) -> None:
        """The elastic exchange when step_count % period == 0, then the inner step.

        The exchange is a collective: every rank steps together.

        Parameters
        ----------
        grads : list, dict or list of lists/dicts
            This rank's grads, in the params' structure (None skips a param).

        Raises
        ------
        TypeError, ValueError
            A grad that does not match its param (checked before the exchange).
        """
        self.model.flatten(grads, allow_none=True)  # checked before the exchange changes anything
        if self.step_count % self.period == 0:
            self._exchange()
        self.optimizer.step(grads)
        self.step_count += 1

    def _exchange(self) -> None:
        for s, part, x in self._slices:
            np.subtract(x, self._center[s][part], out=self._diff[s][part])
        for d, total in zip(self._diff, self._sum):
            np.multiply(d, self.alpha, out=d)
            np.copyto(total, d)
        if self._sums is not None:
            blocking(self.timeout, "the elastic exchange of ElasticAveraging.step", self.comm, self._sum_over_ranks)
        for center, total in zip(self._center, self._sum):
            np.add(center, total, out=center)
        for s, part, x in self._slices:
            np.subtract(x, self._diff[s][part], out=x)

    def _sum_over_ranks(self) -> None:
        assert self._sums is not None
        for total in self._sums:
            total.run()

    def state_dict(self) -> dict[str, Any]:
        """The wrapped optimizer's state_dict, with the center and the step count.

        Returns
        -------
        dict
            ``{"optimizer", "center", "step_count"}``.
        """
        return {"optimizer": self.optimizer.state_dict(), "center": [c.copy() for c in self._center_views],
                "step_count": self.step_count}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Load a state_dict from state_dict() (every rank the same one).

        Parameters
        ----------
        state_dict : dict
            ``{"optimizer", "center", "step_count"}``, from state_dict().

        Raises
        ------
        ValueError
            A state that does not match the model.
        """
        if not isinstance(state_dict, Mapping) or not {"optimizer", "center", "step_count"} <= set(state_dict):
            raise ValueError("state_dict must be a dict with 'optimizer', 'center' and 'step_count' "
                             "(from ElasticAveraging.state_dict())")
        center = state_dict["center"]
        if len(center) != len(self.model.arrays):
            raise ValueError(f"loaded center has {len(center)} arrays, the model has {len(self.model.arrays)} params")
        for key, c, p in zip(self.model.keys, center, self.model.arrays):
            if np.shape(c) != p.shape:
                raise ValueError(f"loaded center[{key!r}] has shape {np.shape(c)} but params[{key!r}] has shape {p.shape}")
        step_count = state_dict["step_count"]
        if isinstance(step_count, bool) or not isinstance(step_count, numbers.Integral) or step_count < 0:
            raise ValueError(f"loaded step_count must be an integer >= 0, got {step_count!r}")
        self.optimizer.load_state_dict(state_dict["optimizer"])
        for view, c in zip(self._center_views, center):
            np.copyto(view, c)
        self.step_count = int(step_count)
