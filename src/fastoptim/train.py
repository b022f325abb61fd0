"""Training strategies around the optimizers: batching, curriculum, early
stopping, gradient noise and clipping, and a `fit` loop that uses them all.

Grads may come in any structure an optimizer's step() takes (an array, a
list, a dict, a list of groups); the gradient functions walk it, check every
array first and then work in place through fastoptim._ext.train, with no
temporaries and results that never depend on the thread count.
"""
import math
import numbers
import operator
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Optional, Union, overload

import numpy as np
import numpy.typing as npt

from . import _validation
from ._ext import train as _kernels
from ._config import get_num_threads
from ._docstrings import fill
from .optim import Optimizer
from .typing import ArrayTree, Pacing

#: One batch's rows: a slice (batches in order) or an array of sample indices.
BatchIndex = Union[slice, npt.NDArray[np.intp]]

__all__ = [
    "minibatches", "Batches", "linear_pacing", "root_pacing", "step_pacing",
    "EarlyStopping",
    "noise_std", "add_gradient_noise",
    "grad_norm", "clip_grad_norm", "clip_grad_value", "grads_are_finite",
    "History", "fit",
]


# ---- argument checks ---------------------------------------------------------------

# ---- batches and curriculum ------------------------------------------------------------

def minibatches(n_samples: int, batch_size: Optional[int] = None, *, shuffle: bool = True, seed: Optional[int] = None,
                epoch: int = 0, order: Optional[npt.ArrayLike] = None, pacing: Optional[Pacing] = None,
                drop_last: bool = False) -> "Batches":
    """The batches of one epoch: a sequence of index arrays (or slices), made on demand.

    batch_size=None gives one batch of every sample (full-batch gradient
    descent), 1 gives single samples (SGD), k gives mini-batches of k (the
    last one smaller unless drop_last).  With shuffle the samples are permuted
    afresh each epoch: epoch e of seed s is always the same permutation, and
    different epochs differ.  Without shuffle (and without order) the batches
    are slices, so X[batch] is a view, not a copy.

    Curriculum learning: `order` lists sample indices from easiest to hardest
    (e.g. np.argsort(difficulty)); samples it leaves out are never used; `pacing(epoch) -> fraction in (0, 1]` says
    how much of that order the epoch sees (the easiest ceil(fraction * len(order))
    samples; see linear_pacing, root_pacing and step_pacing).  The visible
    samples are shuffled if shuffle, else kept in the order given.

    Parameters
    ----------
    n_samples : int
        The number of samples, >= 0.
    batch_size : int or None, default None
        Samples per batch, >= 1 (None: one batch of every sample).
    shuffle : bool, default True
        Permute the samples afresh each epoch.
    seed : int or None, default None
        The permutations' seed (None: fresh entropy).
    epoch : int, default 0
        The epoch's number, >= 0 (with seed, it picks the permutation).
    order : array of int or None, default None
        Sample indices from easiest to hardest (curriculum learning).
    pacing : callable or None, default None
        ``pacing(epoch) -> fraction in (0, 1]`` of `order` this epoch sees.
    drop_last : bool, default False
        Leave out a last batch smaller than batch_size.

    Returns
    -------
    Batches
        The epoch's batches: slices, or index arrays.

    Raises
    ------
    TypeError
        pacing is not callable.
    ValueError
        A count out of range, a bad order, or a pacing fraction outside (0, 1].

    Examples
    --------
    >>> from fastoptim.train import minibatches
    >>> list(minibatches(5, 2, shuffle=False))
    [slice(0, 2, None), slice(2, 4, None), slice(4, 5, None)]
    >>> [len(b) for b in minibatches(5, 2, seed=0)]
    [2, 2, 1]
    """
    n = operator.index(n_samples) if not isinstance(n_samples, bool) else None
    if n is None or n < 0:
        raise ValueError(f"n_samples must be an integer >= 0, got {n_samples!r}")
    batch_size = _validation.positive_int(batch_size, "batch_size", allow_none=True)
    epoch = operator.index(epoch)
    if epoch < 0:
        raise ValueError(f"epoch must be >= 0, got {epoch}")
    visible: Optional[npt.NDArray[Any]]
    if order is not None:
        order = np.asarray(order)
        if order.ndim != 1 or not np.issubdtype(order.dtype, np.integer):
            raise ValueError(f"order must be a 1-D array of sample indices, got shape {order.shape} "
                             f"and dtype {order.dtype}")
        if order.size and (order.min() < 0 or order.max() >= n):
            raise ValueError(f"order holds indices outside [0, {n}) (n_samples={n})")
        if np.unique(order).size != order.size:
            raise ValueError("order lists some sample more than once")
    if pacing is not None and not callable(pacing):
        raise TypeError(f"pacing must be a callable epoch -> fraction of the data, got {pacing!r}")
    if pacing is not None and order is None:
        order = np.arange(n)  # pacing alone grows a prefix of the samples as they are
    if order is not None:
        if pacing is not None:
            fraction = _validation.real(pacing(epoch), f"pacing({epoch})")
            if not 0.0 < fraction <= 1.0:
                raise ValueError(f"pacing({epoch}) must be in (0, 1], got {fraction!r}")
            # Rounded first so that 0.6 * 100 (= 60.00000000000001) shows 60 samples.
            order = order[:max(1, math.ceil(round(fraction * order.size, 6)))] if order.size else order
        visible = order
    else:
        visible = None
    size = n if visible is None else visible.size
    if shuffle and size:
        # A generator per (seed, epoch): any epoch can be replayed on its own.
        rng = np.random.default_rng(None if seed is None else [_validation.seed(seed), epoch])
        visible = rng.permutation(size) if visible is None else rng.permutation(visible)
    return Batches(visible, size, max(1, size) if batch_size is None else batch_size, drop_last)


class Batches(Sequence[BatchIndex]):
    """The batches of one epoch, made on demand: batch i is a view of one index array (or a slice).

    A list of batches would hold one array object per batch, which for
    single-sample SGD on a large data set is far more memory than the indices.
    minibatches() makes them.

    Parameters
    ----------
    indices : numpy.ndarray or None
        The epoch's sample indices in order (None: the samples in order, as slices).
    size : int
        How many of them the epoch sees.
    batch_size : int
        Samples per batch.
    drop_last : bool
        Leave out a last batch smaller than batch_size.

    Raises
    ------
    IndexError
        A batch number out of range.

    Examples
    --------
    >>> import numpy as np
    >>> from fastoptim.train import Batches
    >>> batches = Batches(np.array([3, 1, 2, 0]), 4, 3, drop_last=False)
    >>> len(batches), batches[0], batches[-1]
    (2, array([3, 1, 2]), array([0]))
    """

    def __init__(self, indices: Optional[npt.NDArray[Any]], size: int, batch_size: int, drop_last: bool) -> None:
        self.indices = indices          # None: the samples in order (batches are slices)
        self.batch_size = batch_size
        self._stop = size - size % batch_size if drop_last else size
        self._size = size

    def __len__(self) -> int:
        return -(-self._stop // self.batch_size)

    @overload
    def __getitem__(self, i: int) -> BatchIndex: ...

    @overload
    def __getitem__(self, i: slice) -> list[BatchIndex]: ...

    def __getitem__(self, i: Union[int, slice]) -> Union[BatchIndex, list[BatchIndex]]:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"batch {i} out of range for {n} batches")
        start = (i % n) * self.batch_size
        end = min(start + self.batch_size, self._size)
        return slice(start, end) if self.indices is None else self.indices[start:end]

    def __repr__(self) -> str:
        return f"Batches({len(self)} of {self.batch_size} from {self._size} samples)"


_pacing_docs = fill(pacing_returns="""
    Returns
    -------
    callable
        ``pacing(epoch) -> fraction``, for minibatches and fit.

    Raises
    ------
    ValueError
        An argument out of range.""")


def _check_pacing_args(start_fraction: float, epochs: int, epochs_name: str = "full_epoch") -> tuple[float, int]:
    start_fraction = _validation.real(start_fraction, "start_fraction", low=0.0, low_open=True)
    if start_fraction > 1:
        raise ValueError(f"start_fraction must be in (0, 1], got {start_fraction}")
    count = _validation.positive_int(epochs, epochs_name)
    assert count is not None
    return start_fraction, count


@_pacing_docs
def linear_pacing(start_fraction: float = 0.2, full_epoch: int = 10) -> Pacing:
    """Pacing that grows the visible fraction linearly from start_fraction (epoch 0) to 1 (full_epoch).

    Parameters
    ----------
    start_fraction : float, default 0.2
        The fraction at epoch 0, in (0, 1].
    full_epoch : int, default 10
        The first epoch that sees every sample, >= 1.

    {{pacing_returns}}

    Examples
    --------
    >>> from fastoptim.train import linear_pacing
    >>> pacing = linear_pacing(0.2, full_epoch=4)
    >>> [round(pacing(e), 2) for e in range(6)]
    [0.2, 0.4, 0.6, 0.8, 1.0, 1.0]
    """
    c0, t_full = _check_pacing_args(start_fraction, full_epoch)
    return lambda epoch: min(1.0, c0 + (1.0 - c0) * epoch / t_full)


@_pacing_docs
def root_pacing(start_fraction: float = 0.2, full_epoch: int = 10, power: float = 2) -> Pacing:
    """Competence-based pacing (Platanios et al. 2019): (t (1 - c0^p) / T + c0^p) ** (1/p), capped at 1.

    Grows fast at first, when the easy samples are few, then slower.

    Parameters
    ----------
    start_fraction : float, default 0.2
        The fraction c0 at epoch 0, in (0, 1].
    full_epoch : int, default 10
        The first epoch T that sees every sample, >= 1.
    power : float, default 2
        The root p, > 0.

    {{pacing_returns}}

    Examples
    --------
    >>> from fastoptim.train import root_pacing
    >>> pacing = root_pacing(0.2, full_epoch=4)
    >>> [round(pacing(e), 2) for e in range(5)]
    [0.2, 0.53, 0.72, 0.87, 1.0]
    """
    c0, t_full = _check_pacing_args(start_fraction, full_epoch)
    p = _validation.real(power, "power", low=0.0, low_open=True)
    return lambda epoch: min(1.0, (epoch * (1.0 - c0 ** p) / t_full + c0 ** p) ** (1.0 / p))


@_pacing_docs
def step_pacing(start_fraction: float = 0.2, step_epochs: int = 2, increase: float = 2.0) -> Pacing:
    """Baby-steps pacing (Hacohen & Weinshall 2019): start_fraction * increase ** (epoch // step_epochs), capped at 1.

    Parameters
    ----------
    start_fraction : float, default 0.2
        The fraction at epoch 0, in (0, 1].
    step_epochs : int, default 2
        Epochs between increases, >= 1.
    increase : float, default 2.0
        The factor of each increase, > 1.

    {{pacing_returns}}

    Examples
    --------
    >>> from fastoptim.train import step_pacing
    >>> pacing = step_pacing(0.25, step_epochs=2)
    >>> [pacing(e) for e in range(6)]
    [0.25, 0.25, 0.5, 0.5, 1.0, 1.0]
    """
    c0, every = _check_pacing_args(start_fraction, step_epochs, "step_epochs")
    factor = _validation.real(increase, "increase", low=1.0, low_open=True)
    return lambda epoch: min(1.0, c0 * factor ** (epoch // every))


# ---- structures of arrays ------------------------------------------------------------------

def _flatten(tree: Any, name: str) -> tuple[list[npt.NDArray[Any]], list[str]]:
    """The arrays of a structure (array, list/tuple, dict, nested), with labels for messages; None is skipped."""
    arrays: list[npt.NDArray[Any]] = []
    labels: list[str] = []

    def walk(node: Any, label: str) -> None:
        if node is None:
            return
        if isinstance(node, np.ndarray):
            arrays.append(node)
            labels.append(label)
        elif isinstance(node, Mapping):
            for key, value in node.items():
                walk(value, f"{label}[{key!r}]")
        elif isinstance(node, (list, tuple)):
            for i, value in enumerate(node):
                walk(value, f"{label}[{i}]")
        else:
            t = type(node)
            raise TypeError(f"{label} must be a numpy.ndarray (or a list/dict of them), "
                            f"got {t.__module__}.{t.__qualname__}")

    walk(tree, name)
    return arrays, labels


def _check_no_shared_memory(arrays: Sequence[npt.NDArray[Any]], labels: Sequence[str]) -> None:
    """In-place operations on two arrays over the same memory would hit it twice."""
    spans = sorted((a.__array_interface__["data"][0], a.nbytes, label)
                   for a, label in zip(arrays, labels) if a.nbytes)
    for (start0, size0, label0), (start1, _, label1) in zip(spans, spans[1:]):
        if start1 < start0 + size0:
            raise ValueError(f"{label1} shares memory with {label0}; each grad must be its own array")


def _writable_arrays(grads: Any, name: str) -> tuple[list[npt.NDArray[Any]], list[str]]:
    arrays, labels = _flatten(grads, name)
    _check_no_shared_memory(arrays, labels)
    return arrays, labels


# ---- gradient noise -------------------------------------------------------------------

def noise_std(step: int, eta: float = 0.01, gamma: float = 0.55) -> float:
    """The standard deviation sqrt(eta / (1 + step) ** gamma) of the gradient noise at `step` (0-based).

    Parameters
    ----------
    step : int
        The step, from 0.
    eta : float, default 0.01
        The variance at step 0.
    gamma : float, default 0.55
        The decay exponent.

    Returns
    -------
    float
        The standard deviation.

    Raises
    ------
    ZeroDivisionError, TypeError
        A step below 0 (this pure formula does not check it; add_gradient_noise does).

    Examples
    --------
    >>> from fastoptim.train import noise_std
    >>> noise_std(0), round(noise_std(99, eta=1.0, gamma=1.0), 6)
    (0.1, 0.1)
    """
    return math.sqrt(eta / (1.0 + step) ** gamma)


def add_gradient_noise(grads: ArrayTree, step: int, *, eta: float = 0.01, gamma: float = 0.55,
                       seed: Optional[int] = 0) -> float:
    """Add Gaussian noise of variance eta / (1 + step) ** gamma to the grads, in place.

    Neelakantan et al. (2015), "Adding Gradient Noise Improves Learning for
    Very Deep Networks".  `step` counts from 0.  The noise of every element is
    a function of (seed, step, the array's position in the structure, the
    element's index) alone, so it is reproducible and the same for any
    thread count.

    Parameters
    ----------
    grads : array, list, tuple or dict of arrays (nested)
        The grads, in any structure an optimizer's step() takes; None entries are skipped.
    step : int
        The step, from 0.
    eta : float, default 0.01
        The variance at step 0, >= 0.
    gamma : float, default 0.55
        The decay exponent, >= 0.
    seed : int, default 0
        The noise's seed.

    Returns
    -------
    float
        The standard deviation used.

    Raises
    ------
    TypeError
        A grad that is not a numpy array.
    ValueError
        A negative step, eta or gamma, or two grads sharing memory.

    Examples
    --------
    >>> import numpy as np
    >>> from fastoptim.train import add_gradient_noise
    >>> g = np.zeros(1000)
    >>> std = add_gradient_noise([g], step=0, eta=1.0)
    >>> std, bool(0.9 < g.std() < 1.1)
    (1.0, True)
    """
    step = operator.index(step)
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    eta = _validation.real(eta, "eta", low=0.0)
    gamma = _validation.real(gamma, "gamma", low=0.0)
    seed = _validation.seed(seed)
    arrays, labels = _writable_arrays(grads, "grads")
    std = noise_std(step, eta, gamma)
    _kernels.add_noise(arrays, labels, std, seed, step, get_num_threads())
    return std


# ---- clipping and norms -------------------------------------------------------------------

def _norm_type(norm_type: float) -> float:
    return _validation.real(norm_type, "norm_type", low=0.0, low_open=True, allow_inf=True)


def _reduce(arrays: list[npt.NDArray[Any]], labels: list[str], mode: str, p: float = 1.0,
            scale: float = 1.0) -> float:
    return _kernels.reduce(arrays, labels, _kernels.REDUCE_MODES[mode], p, scale, get_num_threads())


def _norm_of(arrays: list[npt.NDArray[Any]], labels: list[str], p: float) -> float:
    """The p-norm of all elements (NaN if any is NaN, else inf if any is inf), exact to rounding
    even where the powers overflow or underflow, and the same for any thread count.

    One pass over the grads in the common case; a second only when the first
    sum is not finite or tiny.
    """
    if math.isinf(p):
        if math.isnan(_reduce(arrays, labels, "sum_zero")):  # some NaN or inf
            return math.nan if _reduce(arrays, labels, "count_nan") else math.inf
        return _reduce(arrays, labels, "max_abs")
    mode = "sum_squares" if p == 2 else "sum_abs" if p == 1 else "sum_power"
    total = _reduce(arrays, labels, mode, p)
    if math.isnan(total):  # NaN propagates through a sum of non-negative terms
        return math.nan
    if 1e-280 < total < 1e280:
        return float(total ** (1.0 / p))  # float ** float is typed Any (it may be complex)
    max_abs = _reduce(arrays, labels, "max_abs")
    if math.isinf(max_abs):
        return math.inf
    if max_abs == 0.0:
        return 0.0
    # The powers overflowed or underflowed: sum them again with the largest
    # element scaled near 1, by a power of two so that the scaling is exact.
    scale = math.ldexp(1.0, min(1000, -math.frexp(max_abs)[1]))
    return float(_reduce(arrays, labels, mode, p, scale) ** (1.0 / p)) / scale


def grad_norm(grads: ArrayTree, norm_type: float = 2.0) -> float:
    """The norm of all grads together, as if concatenated (torch.nn.utils.get_total_norm).

    Parameters
    ----------
    grads : array, list, tuple or dict of arrays (nested)
        The grads, in any structure an optimizer's step() takes; None entries are skipped.
    norm_type : float, default 2.0
        The order p of the norm, > 0 (math.inf: the largest magnitude).

    Returns
    -------
    float
        The norm (NaN if any element is NaN, else inf if any is inf).

    Raises
    ------
    TypeError
        A grad that is not a numpy array.
    ValueError
        norm_type <= 0.

    Examples
    --------
    >>> import numpy as np
    >>> from fastoptim.train import grad_norm
    >>> grad_norm({"w": np.array([3.0]), "b": np.array([4.0])})
    5.0
    """
    p = _norm_type(norm_type)
    arrays, labels = _flatten(grads, "grads")
    return _norm_of(arrays, labels, p)


def clip_grad_norm(grads: ArrayTree, max_norm: float, norm_type: float = 2.0,
                   error_if_nonfinite: bool = False) -> float:
    """Scale all grads in place so that their joint norm is at most max_norm; return the norm before.

    ``torch.nn.utils.clip_grad_norm_``'s rule: grads are multiplied by
    max_norm / (norm + 1e-6) when that is below 1.  A NaN or infinite norm
    raises with error_if_nonfinite, else leaves the grads as they are (torch
    would spread the NaN to every grad).

    Parameters
    ----------
    grads : array, list, tuple or dict of arrays (nested)
        The grads, in any structure an optimizer's step() takes; None entries are skipped.
    max_norm : float
        The largest joint norm, >= 0.
    norm_type : float, default 2.0
        The order p of the norm, > 0 (math.inf: the largest magnitude).
    error_if_nonfinite : bool, default False
        Raise on a NaN or infinite norm.

    Returns
    -------
    float
        The joint norm before clipping.

    Raises
    ------
    TypeError
        A grad that is not a numpy array.
    ValueError
        A bad max_norm or norm_type, or two grads sharing memory.
    RuntimeError
        A non-finite norm with error_if_nonfinite.

    Examples
    --------
    >>> import numpy as np
    >>> from fastoptim.train import clip_grad_norm
    >>> g = [np.array([3.0, 4.0])]
    >>> clip_grad_norm(g, max_norm=1.0)
    5.0
    >>> g[0].round(6)
    array([0.6, 0.8])
    """
    max_norm = _validation.real(max_norm, "max_norm", low=0.0)
    p = _norm_type(norm_type)
    arrays, labels = _writable_arrays(grads, "grads")
    total = _norm_of(arrays, labels, p)
    if not math.isfinite(total):
        if error_if_nonfinite:
            raise RuntimeError(f"the total norm of order {p} of the grads is {total}, so they cannot be "
                               f"clipped; pass error_if_nonfinite=False to leave them unclipped")
        return total
    _scale_to_norm(arrays, labels, total, max_norm)
    return total


def _scale_to_norm(arrays: list[npt.NDArray[Any]], labels: list[str], total: float, max_norm: float) -> None:
    coefficient = max_norm / (total + 1e-6)
    if coefficient < 1.0:
        _kernels.scale(arrays, labels, coefficient, get_num_threads())


def clip_grad_value(grads: ArrayTree, clip_value: float) -> None:
    """Clamp every grad element to [-clip_value, clip_value] in place (NaN stays NaN).

    Parameters
    ----------
    grads : array, list, tuple or dict of arrays (nested)
        The grads, in any structure an optimizer's step() takes; None entries are skipped.
    clip_value : float
        The bound, >= 0.

    Raises
    ------
    TypeError
        A grad that is not a numpy array.
    ValueError
        A negative clip_value, or two grads sharing memory.

    Examples
    --------
    >>> import numpy as np
    >>> from fastoptim.train import clip_grad_value
    >>> g = np.array([-3.0, 0.5, 2.0])
    >>> clip_grad_value(g, 1.0)
    >>> g
    array([-1. ,  0.5,  1. ])
    """
    clip_value = _validation.real(clip_value, "clip_value", low=0.0)
    arrays, labels = _writable_arrays(grads, "grads")
    _kernels.clip_value(arrays, labels, clip_value, get_num_threads())


def grads_are_finite(grads: ArrayTree) -> bool:
    """Whether no grad element is NaN or infinite (one parallel pass, no temporaries).

    Parameters
    ----------
    grads : array, list, tuple or dict of arrays (nested)
        The grads, in any structure an optimizer's step() takes; None entries are skipped.

    Returns
    -------
    bool
        True if every element is finite.

    Raises
    ------
    TypeError
        A grad that is not a numpy array.

    Examples
    --------
    >>> import numpy as np
    >>> from fastoptim.train import grads_are_finite
    >>> grads_are_finite([np.ones(3)]), grads_are_finite([np.array([1.0, np.nan])])
    (True, False)
    """
    return _finite(*_flatten(grads, "grads"))


# ---- early stopping -------------------------------------------------------------------------

class EarlyStopping:
    """Stop when a monitored metric has not improved for `patience` epochs; keep the best params.

    Call it once per epoch with the metric and the params (any structure of
    arrays); it returns True when training should stop.  With restore_best,
    restore(params) copies the best params seen back into the arrays, in place.
    An improvement is a metric below best - min_delta (mode='min') or above
    best + min_delta (mode='max'); NaN is never an improvement.

    Parameters
    ----------
    patience : int
        Epochs without improvement before stopping, >= 1.
    min_delta : float, default 0.0
        The smallest change that counts as an improvement, >= 0.
    mode : {'min', 'max'}, default 'min'
        Whether the metric should go down (a loss) or up (an accuracy).
    restore_best : bool, default True
        Keep a copy of the best params, for restore().

    Raises
    ------
    ValueError
        A bad patience, min_delta or mode.

    Examples
    --------
    >>> import numpy as np
    >>> from fastoptim.train import EarlyStopping
    >>> w = np.zeros(1)
    >>> stopper = EarlyStopping(patience=2)
    >>> for epoch, loss in enumerate([3.0, 2.0, 2.5, 2.6, 1.0]):
    ...     w[0] = epoch
    ...     if stopper(loss, w):
    ...         break
    >>> epoch, stopper.best_epoch, stopper.restore(w), w
    (3, 1, True, array([1.]))
    """

    def __init__(self, patience: int, min_delta: float = 0.0, mode: str = "min", restore_best: bool = True) -> None:
        self.patience: int = _validation.positive_int(patience, "patience")  # type: ignore[assignment]  # not None
        self.min_delta = _validation.real(min_delta, "min_delta", low=0.0)
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
        self.mode = mode
        self.restore_best = bool(restore_best)
        self.reset()

    def reset(self) -> None:
        """Forget everything seen, to reuse the object for another run."""
        self.best: Optional[float] = None
        self.best_epoch: Optional[int] = None
        self.epochs = 0
        self.wait = 0
        self.stopped = False
        self._best_params: Optional[list[npt.NDArray[Any]]] = None

    def improves(self, metric: float) -> bool:
        """Whether `metric` would count as an improvement on the best so far.

        Parameters
        ----------
        metric : float
            The monitored value.

        Returns
        -------
        bool
            False for NaN.
        """
        if math.isnan(metric):
            return False
        if self.best is None:
            return True
        if self.mode == "min":
            return metric < self.best - self.min_delta
        return metric > self.best + self.min_delta

    def __call__(self, metric: float, params: ArrayTree = None) -> bool:
        """Record one epoch's metric (and params); True when training should stop.

        Parameters
        ----------
        metric : float
            The epoch's monitored value.
        params : arrays (any structure) or None, default None
            Copied when the metric improves (with restore_best).

        Returns
        -------
        bool
            True once `patience` epochs passed without improvement.
        """
        metric = float(metric)
        epoch = self.epochs
        self.epochs += 1
        if self.improves(metric):
            self.best, self.best_epoch, self.wait = metric, epoch, 0
            if self.restore_best and params is not None:
                self._keep(params)
        else:
            self.wait += 1
        self.stopped = self.wait >= self.patience
        return self.stopped

    def _keep(self, params: ArrayTree) -> None:
        arrays, _ = _flatten(params, "params")
        if self._best_params is None or len(self._best_params) != len(arrays) or any(
                b.shape != a.shape or b.dtype != a.dtype for b, a in zip(self._best_params, arrays)):
            self._best_params = [np.array(a, copy=True) for a in arrays]
        else:  # the same arrays as last time: copy into the buffers kept, allocate nothing
            for kept, a in zip(self._best_params, arrays):
                np.copyto(kept, a)

    def restore(self, params: ArrayTree) -> bool:
        """Copy the best params seen into `params` (same structure), in place.

        Parameters
        ----------
        params : arrays (any structure)
            The arrays to overwrite, like those passed when the best was seen.

        Returns
        -------
        bool
            False if no params were kept.

        Raises
        ------
        ValueError
            Arrays that do not match the kept copy.
        """
        if self._best_params is None:
            return False
        arrays, labels = _flatten(params, "params")
        if len(arrays) != len(self._best_params):
            raise ValueError(f"params has {len(arrays)} arrays but {len(self._best_params)} were kept")
        for kept, a, label in zip(self._best_params, arrays, labels):
            if kept.shape != a.shape or kept.dtype != a.dtype:
                raise ValueError(f"{label} has shape {a.shape} and dtype {a.dtype}, but the kept "
                                 f"copy has shape {kept.shape} and dtype {kept.dtype}")
        for kept, a in zip(self._best_params, arrays):
            np.copyto(a, kept)
        return True


# ---- fit ----------------------------------------------------------------------------------

@dataclass
class History:
    """What fit() saw, one entry per epoch run.

    loss: the mean training loss over the epoch's batches (weighted by batch
    size); lr: param_groups[0]['lr'] after the epoch's last step; time: wall
    seconds of the epoch's training (validation excluded); val: the validation metric
    (None without one); skipped: steps skipped for non-finite grads;
    grad_norm: the mean norm of the grads before clipping (only with clip_norm).

    Parameters
    ----------
    epoch, loss, lr, time, val, skipped, grad_norm : list
        One entry per epoch, as above.
    steps : int
        Optimizer steps taken (skipped ones excluded).
    stopped_early : bool
        Whether early stopping or the callback ended training.
    best_epoch : int or None
        With early stopping: the epoch whose params were kept.
    restored : bool
        Whether the best params were copied back at the end.

    Examples
    --------
    >>> from fastoptim.train import History
    >>> h = History(epoch=[0, 1], loss=[1.0, 0.5], skipped=[0, 2])
    >>> h.skipped_steps, h.as_dict()["loss"]
    (2, [1.0, 0.5])
    """
    epoch: list[int] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    lr: list[Any] = field(default_factory=list)
    time: list[float] = field(default_factory=list)
    val: list[Optional[float]] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)
    grad_norm: list[Optional[float]] = field(default_factory=list)
    steps: int = 0                 # optimizer steps taken (skipped ones excluded)
    stopped_early: bool = False
    best_epoch: int | None = None       # with early stopping: the epoch whose params were kept
    restored: bool = False         # whether the best params were copied back at the end

    @property
    def skipped_steps(self) -> int:
        """Steps skipped for non-finite grads, over every epoch."""
        return sum(self.skipped)

    def as_dict(self) -> dict[str, Any]:
        """Every field, by name.

        Returns
        -------
        dict
            ``{"epoch": [...], "loss": [...], ...}``.
        """
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


def _batch_of(data: Any, index: BatchIndex) -> Any:
    if isinstance(data, tuple):
        return tuple(d[index] for d in data)
    return data[index]


def _n_samples(data: Any) -> int:
    parts = data if isinstance(data, tuple) else (data,)
    if not parts:
        raise ValueError("data must be an array or a tuple of arrays with one row per sample, got ()")
    lengths: list[int] = []
    for i, d in enumerate(parts):
        if not hasattr(d, "shape") or not hasattr(d, "__getitem__") or len(d.shape) == 0:
            where = f"data[{i}]" if isinstance(data, tuple) else "data"
            raise TypeError(f"{where} must be an array with one row per sample (data: an array or a tuple "
                            f"of arrays), got {type(d).__qualname__}")
        lengths.append(d.shape[0])
    if len(set(lengths)) != 1:
        raise ValueError(f"the arrays of data have different numbers of rows: {lengths}")
    return lengths[0]


def _current_lr(optimizer: Any) -> Any:
    lr = optimizer.param_groups[0].get("lr")
    return float(lr) if isinstance(lr, numbers.Real) else lr


def _progress_bar(progress: Optional[bool], epochs: int) -> Any:
    if progress is False:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        if progress is None:  # the default: a bar if tqdm is there
            return None
        raise ImportError("fit(progress=True) shows a tqdm progress bar, and tqdm is not installed: "
                          "pip install 'fastoptim[progress]' (or tqdm), or pass progress=False") from None
    return tqdm(total=epochs, desc="fit", unit="epoch", leave=False)


def _batch_closure(loss: Any, grads: Any, loss_and_grad: Callable[[Any, Any], tuple[float, Any]], params: Any,
                   batch: Any, prepare: Callable[[Any], tuple[bool, Optional[float]]]) -> Callable[[], Any]:
    """The closure of a closure-driven optimizer's step (LBFGS) on one batch: first the evaluation
    fit has made (loss, grads), then new ones at the params' current values, transformed alike."""
    first = [(loss, grads)]

    def closure() -> Any:
        if first:
            return first.pop()
        loss, grads = loss_and_grad(params, batch)
        prepare(grads)
        return loss, grads
    return closure


def fit(params: ArrayTree, loss_and_grad: Callable[[Any, Any], tuple[float, Any]],
        data: Union[npt.NDArray[Any], tuple[npt.NDArray[Any], ...]], optimizer: Optimizer, *, epochs: int,
        batch_size: Optional[int] = None, shuffle: bool = True, seed: Optional[int] = None,
        order: Optional[npt.ArrayLike] = None, pacing: Optional[Pacing] = None, drop_last: bool = False,
        clip_value: Optional[float] = None, clip_norm: Optional[float] = None, norm_type: float = 2.0,
        grad_noise: Union[None, bool, Mapping[str, float]] = None, skip_nonfinite: bool = True,
        validation: Optional[Callable[[Any], float]] = None, early_stopping: Optional["EarlyStopping"] = None,
        callback: Optional[Callable[[int, dict[str, Any]], object]] = None,
        progress: Optional[bool] = None) -> History:
    """Train `params` with `optimizer` for `epochs` passes over `data`; return a History.

    Parameters
    ----------
    params : arrays in the optimizer's structure
        The arrays the optimizer updates, in the structure it was given (they must be
        its params, the same arrays).
    loss_and_grad : callable
        ``loss_and_grad(params, batch) -> (loss, grads)``: grads in the params'
        structure; they may be modified in place (clipping, noise).
    data : ndarray or tuple of ndarray
        One row per sample; a batch is the same structure indexed by the batch's rows
        (a view when the batches are slices, i.e. without shuffle or order; else
        NumPy's gather, a copy of the batch's rows).
    optimizer : fastoptim.Optimizer
        Any optimizer over `params`.  A closure-driven one (LBFGS) steps once per batch with a
        closure evaluating `loss_and_grad` on that batch (the grad transforms applied each time).
    epochs : int
        Passes over `data`.
    batch_size, shuffle, seed, order, pacing, drop_last
        As `minibatches`; each epoch draws its batches with the epoch's number, so a
        seed makes the whole run reproducible.
    clip_value : float, optional
        Clamp each grad element to [-clip_value, clip_value].
    clip_norm, norm_type : float, optional
        Scale the grads so their joint norm is at most clip_norm.
    grad_noise : None, True or dict
        True (eta=0.01, gamma=0.55) or a dict with eta and/or gamma: Gaussian noise of
        variance ``eta / (1 + t) ** gamma`` added to the grads at step t (after
        clipping), seeded from `seed`.
    skip_nonfinite : bool, default True
        Skip a step whose grads hold NaN or inf (params and optimizer state untouched),
        count it in History.skipped and warn.
    validation : callable, optional
        ``validation(params) -> float``, evaluated after every epoch (History.val).
    early_stopping : EarlyStopping, optional
        Watches the validation metric (or the training loss without validation); fit
        resets it first.  With restore_best the best params are copied back when
        training ends.
    callback : callable, optional
        ``callback(epoch, record) -> bool``, called after every epoch with that epoch's
        entries ({'loss', 'lr', 'time', 'val', ...}); True stops.
    progress : bool, optional
        A tqdm bar over epochs (None: if tqdm is installed).

    Returns
    -------
    History
        Per epoch: loss, lr, time, validation metric, skipped steps, grad norm.

    Raises
    ------
    TypeError, ValueError
        A bad argument, named in the message, before anything is trained.

    Examples
    --------
    >>> import numpy as np
    >>> import fastoptim
    >>> from fastoptim import train
    >>> X = np.arange(8.0).reshape(4, 2); y = X @ np.array([1.0, -2.0])
    >>> params = [np.zeros(2)]
    >>> def loss_and_grad(params, batch):
    ...     (w,), (Xb, yb) = params, batch
    ...     err = Xb @ w - yb
    ...     return float(err @ err) / len(yb), [2 * Xb.T @ err / len(yb)]
    >>> history = train.fit(params, loss_and_grad, (X, y), fastoptim.Adam(params, lr=0.1), epochs=200,
    ...                     progress=False)
    >>> history.loss[-1] < history.loss[0]
    True
    """
    epochs = _validation.positive_int(epochs, "epochs")  # type: ignore[assignment]  # never None here
    n = _n_samples(data)
    if n == 0:
        raise ValueError("data has no samples")
    if not callable(loss_and_grad):
        raise TypeError(f"loss_and_grad must be a callable (params, batch) -> (loss, grads), got {loss_and_grad!r}")
    if not (hasattr(optimizer, "step") and hasattr(optimizer, "param_groups")):
        raise TypeError(f"optimizer must be a fastoptim optimizer, got {type(optimizer).__qualname__}")
    param_arrays, _ = _flatten(params, "params")
    optimizer_arrays = [p for group in optimizer.param_groups for p in group["params"]]
    if len(param_arrays) != len(optimizer_arrays) or any(
            a is not b for a, b in zip(param_arrays, optimizer_arrays)):
        raise ValueError("params must be the arrays the optimizer updates (the same objects, in its order): "
                         f"got {len(param_arrays)} arrays, the optimizer has {len(optimizer_arrays)}")
    clip_value = None if clip_value is None else _validation.real(clip_value, "clip_value", low=0.0)
    clip_norm = None if clip_norm is None else _validation.real(clip_norm, "clip_norm", low=0.0)
    p = _norm_type(norm_type)
    noise = _noise_options(grad_noise)
    for name, fn in (("validation", validation), ("callback", callback)):
        if fn is not None and not callable(fn):
            raise TypeError(f"{name} must be callable, got {fn!r}")
    if early_stopping is not None and not isinstance(early_stopping, EarlyStopping):
        raise TypeError(f"early_stopping must be an EarlyStopping, got {type(early_stopping).__qualname__}")
    base_seed = _validation.seed(seed)
    # Validates batch_size, order and pacing before any step.
    minibatches(n, batch_size, shuffle=shuffle, seed=base_seed, epoch=0, order=order, pacing=pacing,
                drop_last=drop_last)
    noise_seed = int(np.random.SeedSequence([base_seed, 1]).generate_state(1, np.uint64)[0])

    takes_closure = bool(getattr(getattr(optimizer, "rule", None), "closure", False))

    def prepare(grads: Any, steps: int) -> tuple[bool, Optional[float]]:
        """The grad transforms, in place: (whether to step, the norm clip_norm measured)."""
        arrays, labels = _writable_arrays(grads, "grads")
        total = None
        if clip_norm is not None:
            # The norm doubles as the finiteness check: it is finite
            # exactly when every element is (overflow is rescaled away).
            total = _norm_of(arrays, labels, p)
            if math.isfinite(total):
                _scale_to_norm(arrays, labels, total, clip_norm)
            elif skip_nonfinite:
                return False, None
            else:
                total = None
        elif skip_nonfinite and not _finite(arrays, labels):
            return False, None
        if clip_value is not None:
            _kernels.clip_value(arrays, labels, clip_value, get_num_threads())
        if noise is not None:
            std = noise_std(steps, noise["eta"], noise["gamma"])
            _kernels.add_noise(arrays, labels, std, noise_seed, steps, get_num_threads())
        return True, total

    if early_stopping is not None:
        early_stopping.reset()
    history = History()
    bar = _progress_bar(progress, epochs)
    try:
        for epoch in range(epochs):
            start = time.perf_counter()
            batches = minibatches(n, batch_size, shuffle=shuffle, seed=base_seed, epoch=epoch, order=order,
                                  pacing=pacing, drop_last=drop_last)
            loss_sum, seen, skipped, norm_sum, norms = 0.0, 0, 0, 0.0, 0
            for index in batches:
                batch = _batch_of(data, index)  # a gather (a copy) when shuffled: made once
                loss, grads = loss_and_grad(params, batch)
                rows = index.stop - index.start if isinstance(index, slice) else len(index)
                loss_sum += float(loss) * rows
                seen += rows
                ready, norm = prepare(grads, history.steps)
                if norm is not None:
                    norm_sum += norm
                    norms += 1
                if not ready:
                    skipped += 1
                    continue
                if takes_closure:
                    optimizer.closure_step(_batch_closure(loss, grads, loss_and_grad, params, batch,
                                                  lambda g: prepare(g, history.steps)))
                else:
                    optimizer.step(grads)
                history.steps += 1
            train_loss = loss_sum / seen if seen else math.nan
            elapsed = time.perf_counter() - start
            val = float(validation(params)) if validation is not None else None
            record = dict(epoch=epoch, loss=train_loss, lr=_current_lr(optimizer),
                          time=elapsed, val=val, skipped=skipped,
                          grad_norm=norm_sum / norms if norms else (math.nan if clip_norm is not None else None))
            for key, value in record.items():
                getattr(history, key).append(value)
            if skipped:
                warnings.warn(f"fit: epoch {epoch} skipped {skipped} of {len(batches)} steps whose grads "
                              f"held NaN or inf", RuntimeWarning, stacklevel=2)
            if bar is not None:
                bar.update(1)
                bar.set_postfix({k: f"{v:.4g}" for k, v in (("loss", train_loss), ("val", val)) if v is not None})
            stop = False
            if early_stopping is not None:
                stop = early_stopping(val if val is not None else train_loss, params)
            if callback is not None and callback(epoch, record):
                stop = True
            if stop:
                history.stopped_early = epoch + 1 < epochs
                break
    finally:
        if bar is not None:
            bar.close()
    if early_stopping is not None:
        history.best_epoch = early_stopping.best_epoch
        if early_stopping.restore_best and early_stopping.best_epoch is not None:
            history.restored = early_stopping.restore(params)
    return history


def _finite(arrays: list[npt.NDArray[Any]], labels: list[str]) -> bool:
    return not math.isnan(_reduce(arrays, labels, "sum_zero"))


def _noise_options(grad_noise: Any) -> Optional[dict[str, float]]:
    if grad_noise is None or grad_noise is False:
        return None
    options = {"eta": 0.01, "gamma": 0.55}
    if grad_noise is not True:
        if not isinstance(grad_noise, Mapping) or set(grad_noise) - set(options):
            raise ValueError(f"grad_noise must be None, True or a dict with 'eta' and/or 'gamma', got {grad_noise!r}")
        options.update(grad_noise)
    return {name: _validation.real(value, f"grad_noise[{name!r}]", low=0.0) for name, value in options.items()}
