"""HogwildSGDClassifier and HogwildSGDRegressor: scikit-learn estimators around the Hogwild! kernel."""
import contextlib
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np
import numpy.typing as npt

try:
    import scipy.sparse as sp
    from scipy.special import expit
    from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin, is_classifier
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.utils import check_random_state
    from sklearn.utils.class_weight import compute_class_weight
    from sklearn.utils.extmath import safe_sparse_dot
    from sklearn.utils.metaestimators import available_if
    from sklearn.utils.multiclass import check_classification_targets
    from sklearn.utils.validation import check_array, check_is_fitted, validate_data
except ImportError as exc:  # pragma: no cover - exercised by .ci/smoke.py --bare
    raise ImportError(f"fastoptim.hogwild needs scikit-learn (>= 1.6) and SciPy ({exc}): "
                      "pip install 'fastoptim[hogwild]'") from exc

from .._ext import runtime as _kernels
from .._config import _resolve_threads
from . import _kernel
from ._checks import check_init, check_params, check_sample_weight

# scikit-learn damps intercept updates on sparse input by this factor (SPARSE_INTERCEPT_DECAY).
SPARSE_INTERCEPT_DECAY = 0.01
# Unused indices for dense input (the kernel reads dense rows by position).
_NO_INDEX = np.zeros(1, dtype=np.int32)
# An epoch with fewer stored values than this runs on one thread: starting the
# threads would cost more than the work, and small fits stay deterministic.
# Tests lower it to exercise the threads on small problems.
PARALLEL_MIN_NNZ = 1 << 16

Array = npt.NDArray[Any]
#: random_state as scikit-learn takes it.
RandomState = int | np.random.RandomState | None
#: One binary problem of a row of the model: (targets, training weights or None).
Problem = tuple[Array, Array | None]
#: Early stopping's score of a row of the model, from its true (coef, intercept).
Score = Callable[[Array, float], float]


def _encode_labels(y: Array) -> tuple[Array, Array]:
    """(classes, each sample's index in classes) of a 1-d y, as np.unique(y, return_inverse=True).

    Integer labels within a small range are counted rather than sorted: several
    times faster on large y (about 1.5 ms instead of 4 for 500k labels).
    """
    if y.dtype.kind in "iu" and y.size:
        wide = y.astype(np.int64 if y.dtype.kind == "i" else np.uint64, copy=False)
        low, high = wide.min(), wide.max()
        if int(high) - int(low) < 1 << 16:
            offset = (wide - low).astype(np.intp, copy=False)
            present = np.bincount(offset) > 0
            classes = (np.flatnonzero(present).astype(wide.dtype) + low).astype(y.dtype)
            if len(classes) <= 2:
                return classes, (y != classes[0]).view(np.int8)
            return classes, (np.cumsum(present) - 1)[offset]
    return np.unique(y, return_inverse=True)


def _class_weights(class_weight: Any, classes: Array, labels: Array) -> Array:
    """compute_class_weight(class_weight, classes=classes, y=labels) for labels known to be in classes.

    Without class weights (None or an empty dict) that is all ones; scikit-learn's
    function would first check y against classes with np.unique, which costs about
    14 ms on 500k labels, in the serial part of a fit.
    """
    if class_weight is None or (isinstance(class_weight, dict) and not class_weight):
        return np.ones(len(classes))
    weights: Array = compute_class_weight(class_weight, classes=classes, y=labels)
    return weights


def _store_params(estimator: object, params: dict[str, Any]) -> None:
    """__init__ keeps each argument as is (scikit-learn's convention); checks happen in fit."""
    for name, value in params.items():
        if name != "self":
            setattr(estimator, name, value)


def _squared_norm(w: Array) -> float:
    return float(np.dot(w, w)) if w.dtype == np.float64 else float(np.square(w, dtype=np.float64).sum())


class _BaseHogwildSGD(BaseEstimator):
    """The parts both estimators share: checks, data layout and the epoch loop."""

    _LOSSES: tuple[str, ...] = ()
    # fit's record (see _record): per class for one-vs-rest
    validation_scores_: Any
    best_validation_score_: Any
    best_loss_: Any

    def _check_params(self) -> int:
        """Check the hyperparameters (see _checks); returns the number of threads."""
        check_params(self, self._LOSSES)
        return self._threads()

    def _threads(self) -> int:
        if self.n_threads is None:
            return _kernels.get_num_threads()
        n = _resolve_threads(self.n_threads)
        return n if _kernels.OPENMP else 1

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        try:
            tags.non_deterministic = self._threads() > 1
        except (TypeError, ValueError):  # an invalid n_threads is reported by fit
            pass
        return tags

    @contextlib.contextmanager
    def _previous_fit_kept_on_error(self) -> Iterator[None]:
        """A fit that fails (on NaN in X only found in its first epoch, say) leaves the
        estimator as it was: fit rebinds every fitted attribute to new objects, so
        restoring the old bindings restores the old model."""
        before = dict(self.__dict__)
        try:
            yield
        except BaseException:
            self.__dict__.clear()
            self.__dict__.update(before)
            raise

    def _validate_data(self, X: Any, y: Any = "no_validation", reset: bool = False, **kwargs: Any) -> Any:
        """float32/float64, CSR (other sparse formats converted once) or dense C-contiguous.

        Once fitted, further data is converted to the weights' dtype.
        """
        dtype = [np.float64, np.float32] if reset or not hasattr(self, "coef_") else self.coef_.dtype
        return validate_data(self, X, y, accept_sparse="csr", dtype=dtype, order="C",
                             accept_large_sparse=True, reset=reset, **kwargs)

    def _check_partial_fit(self, first_call: bool) -> None:
        if first_call and self.early_stopping:
            raise ValueError("early_stopping should be False with partial_fit")

    def _start_fit(self, n_models: int, n_features: int, dtype: npt.DTypeLike, coef_init: npt.ArrayLike | None,
                   intercept_init: npt.ArrayLike | None) -> None:
        """The starting weights of fit: coef_init/intercept_init, else with warm_start the
        current model (coef_ and intercept_, averaged or not, as scikit-learn's), else zeros."""
        names = ["coef_init", "intercept_init"]
        if self.warm_start and hasattr(self, "coef_"):
            if coef_init is None:
                coef_init, names[0] = self.coef_, "coef_ (warm_start)"
            if intercept_init is None:
                intercept_init, names[1] = self.intercept_, "intercept_ (warm_start)"
        coef, intercept = check_init(coef_init, intercept_init, n_models, n_features, dtype, names)
        self._init_state(coef, intercept)
        self._random_state = check_random_state(self.random_state)

    def _validation_mask(self, y: Array, sample_weight: Array | None) -> Array | None:
        """With early_stopping, the validation rows scikit-learn holds out (stratified by class
        for a classifier), as a boolean mask; else None."""
        if not self.early_stopping:
            return None
        # imported when early stopping needs them (with sklearn.metrics, about 0.15 s of import)
        from sklearn.model_selection import ShuffleSplit, StratifiedShuffleSplit

        n_samples = len(y)
        splitter = StratifiedShuffleSplit if is_classifier(self) else ShuffleSplit
        train, validation = next(splitter(test_size=self.validation_fraction, random_state=self.random_state)
                                 .split(np.zeros((n_samples, 1)), y))
        if len(train) == 0 or len(validation) == 0:
            raise ValueError(f"Splitting {n_samples} samples into a train set and a validation set with "
                             f"validation_fraction={self.validation_fraction!r} led to an empty set "
                             f"({len(train)} and {len(validation)} samples). Please either change "
                             "validation_fraction, increase number of samples, or disable early_stopping.")
        if sample_weight is not None and not sample_weight[validation].any():
            raise ValueError("The sample weights for validation set are all zero, consider using a "
                             "different random state.")
        mask = np.zeros(n_samples, dtype=bool)
        mask[validation] = True
        return mask

    def _optimal_init(self) -> float:
        """scikit-learn's offset of the 'optimal' schedule (Bottou's heuristic for the first step)."""
        typw = np.sqrt(1.0 / np.sqrt(self.alpha))
        derivative = _kernel.derivative(_kernel.LOSSES[self.loss], -typw, 1.0, self.epsilon)
        return float(1.0 / (typw / max(1.0, derivative) * self.alpha))

    def _average_from(self) -> float:
        """The step from which the iterates are averaged (0: no averaging)."""
        return float(self.average)

    def _init_state(self, coef: Array, intercept: Array) -> None:
        """The plain SGD iterates from (coef, intercept) and, with `average`, their averages from zero."""
        self._standard_coef, self._standard_intercept = coef, intercept
        if self._average_from():
            self._average_coef = np.zeros_like(coef)
            self._average_intercept = np.zeros_like(intercept)
            self._n_averaged = np.zeros(len(intercept), dtype=np.int64)
        self.t_ = 1.0
        self.n_iter_ = 0

    def _fit_rows(self, X: Any, problems: Iterable[Problem], max_iter: int, n_threads: int,
                  rng: np.random.RandomState, fitting: bool = False, validation: Array | None = None,
                  sample_weight: Array | None = None) -> None:
        """SGD of each row of the model on its problem, then coef_/intercept_.

        problems: an iterable of (targets, training weights or None), one per row.
        fitting (fit, not partial_fit): X is not yet checked for NaN and infinity (see
        _run_sgd), and fit's record and warning follow.  validation: None, or the boolean
        mask of the rows held out for early stopping (not trained on), whose score is
        weighted by sample_weight (class weights are not, as in scikit-learn).
        """
        rows = X_validation = validation_weight = None
        n_train = X.shape[0]
        if validation is not None:
            rows = np.flatnonzero(~validation)
            n_train = len(rows)
            # not visited by the epochs, so not checked by them
            X_validation = check_array(X[validation], accept_sparse="csr", dtype=None, input_name="X",
                                       estimator=self)
            validation_weight = (np.ones(int(validation.sum())) if sample_weight is None
                                 else sample_weight[validation])
        t_start, epochs_done = self.t_, self.n_iter_
        n_iter, converged, monitors = 0, True, []
        for row, (y, weights) in enumerate(problems):
            self.t_ = t_start
            monitor = _Monitor(self, n_train)
            if validation is not None:
                monitor.score = self._validation_score(X_validation, y[validation], validation_weight)
            epochs = self._run_sgd(X, y, weights, row, max_iter, n_threads, rng, epochs_done,
                                   fitting and row == 0, rows, monitor)
            n_iter, converged = max(n_iter, epochs), converged and monitor.stopped
            monitors.append(monitor)
        self.n_iter_ = n_iter if fitting else epochs_done + n_iter
        self.t_ = t_start + n_iter * n_train
        if fitting:
            if not converged and self.tol is not None:
                warnings.warn("Maximum number of iteration reached before convergence. Consider increasing "
                              "max_iter to improve the fit.", ConvergenceWarning)
            self._record(monitors)
        averaged = self._average_from() and self._average_from() <= self.t_ - 1
        coef = self._average_coef if averaged else self._standard_coef
        intercept = (self._average_intercept if averaged else self._standard_intercept).astype(coef.dtype)
        self._publish(coef, intercept)

    def _record(self, monitors: list["_Monitor"]) -> None:
        """fit's validation_scores_, best_validation_score_ and best_loss_, as MLPClassifier's
        (scikit-learn's SGD keeps none): for one-vs-rest, one of each per class."""
        scores = [m.scores if self.early_stopping else None for m in monitors]
        best_scores = [max(m.scores) if self.early_stopping else None for m in monitors]
        best_losses = [m.best_objective if m.stops_on_objective else None for m in monitors]
        record: tuple[Any, Any, Any]
        if len(monitors) == 1:
            record = scores[0], best_scores[0], best_losses[0]
        else:
            record = (scores if self.early_stopping else None,
                      np.array(best_scores) if self.early_stopping else None,
                      np.array(best_losses) if monitors[0].stops_on_objective else None)
        self.validation_scores_, self.best_validation_score_, self.best_loss_ = record

    def _validation_score(self, X: Any, targets: Array, sample_weight: Array | None) -> Score:
        """Early stopping's score of one row of the model on the held-out rows (the subclass's metric)."""
        raise NotImplementedError

    def _publish(self, coef: Array, intercept: Array) -> None:
        """Set coef_ and intercept_ from the model's rows (the subclass's shapes)."""
        raise NotImplementedError

    @staticmethod
    def _decision(X: Any, coef: Array, intercept: Any) -> Array:
        """X @ coef + intercept for one row of the model, computed as scikit-learn's predictions are."""
        decision: Array = (safe_sparse_dot(X, coef.reshape(1, -1).T, dense_output=True)
                           + np.atleast_1d(intercept)).ravel()
        return decision

    def _run_sgd(self, X: Any, y: Array, sample_weight: Array | None, row: int, max_iter: int, n_threads: int,
                 rng: np.random.RandomState, first_epoch: int, check_finite: bool, rows: Array | None,
                 monitor: "_Monitor") -> int:
        """Hogwild! SGD of one row of the model (updated in place) over the given rows of X
        (None: all), until max_iter epochs or the monitor's stopping rule.

        With check_finite, the first epoch checks X for NaN and infinity on its way
        (each stored value enters some row's dot product with the finite weights),
        which saves fit a separate pass over X (fit restores the previous model
        when it raises).
        Returns the number of epochs run.
        """
        coef, intercept = self._standard_coef[row], float(self._standard_intercept[row])
        average_from = self._average_from()
        average_coef = self._average_coef[row] if average_from else None
        average_sum, n_averaged = 0.0, 0
        n_features = X.shape[1]
        n_samples = X.shape[0] if rows is None else len(rows)
        dense = not sp.issparse(X)
        if (X.size if dense else X.nnz) < PARALLEL_MIN_NNZ:
            n_threads = 1
        if dense:
            data, indices, indptr = X.reshape(-1), _NO_INDEX, _NO_INDEX
        else:
            data, indices = X.data, X.indices
            indptr = X.indptr.astype(indices.dtype, copy=False)
        scratch = np.zeros(n_threads * _kernel.THREAD_SCRATCH)
        y = np.ascontiguousarray(y, dtype=np.float64)
        loss = _kernel.LOSSES[self.loss]
        alpha = self.alpha if self.penalty == "l2" else 0.0
        # the objective: mean loss plus alpha/2 |w|^2 before each step, as scikit-learn's
        track_norm = monitor.tracks_objective and alpha > 0.0
        intercept_decay = 1.0 if dense else SPARSE_INTERCEPT_DECAY
        optimal_init = self._optimal_init() if self.learning_rate == "optimal" else 0.0

        # The true weights are scale_start * coef; the scale carries over epochs until folded.
        scale_start, average_a, average_b = 1.0, 0.0, 1.0

        def set_up(epoch: _kernel.Epoch, index: int, t_start: float, scale_start: float, average_a: float,
                   average_b: float) -> None:
            """Record epoch number `index`'s shuffle and plan."""
            if self.shuffle:
                epoch.set_shuffle(int(rng.randint(np.iinfo(np.int64).max, dtype=np.int64)))
            if self.learning_rate == "epoch_decay":
                schedule, eta0 = "constant", self.eta0 * self.beta ** (first_epoch + index)
            else:
                schedule, eta0 = self.learning_rate, self.eta0
            # the 'optimal' schedule uses alpha even without a penalty, as scikit-learn's
            epoch.set_plan(_kernel.SCHEDULES[schedule], eta0, self.power_t, self.alpha, optimal_init, alpha,
                           t_start, scale_start, average_from, average_a, average_b)

        def fold_scale() -> None:
            """Fold the scale (and the lazy averaging terms) into the stored weights."""
            nonlocal scale_start, average_a, average_b
            if average_coef is not None:  # averaging
                np.add(average_coef, average_a * coef, out=average_coef)
                np.divide(average_coef, average_b, out=average_coef)
                average_a, average_b = 0.0, 1.0
            np.multiply(coef, scale_start, out=coef)
            scale_start = 1.0

        # Two Epochs take turns: the one running prepares the other.
        current = _kernel.Epoch(n_samples, track_norm, bool(average_from), rows)
        following = _kernel.Epoch(n_samples, track_norm, bool(average_from), rows) if max_iter > 1 else None
        set_up(current, 0, self.t_, scale_start, average_a, average_b)
        current.prepare(n_threads)
        for epoch in range(max_iter):
            monitor.epoch_starts(epoch)
            blocks = current.blocks()
            prepare = None
            if following is not None and epoch + 1 < max_iter:
                set_up(following, epoch + 1, self.t_ + n_samples, current.scale_after[-1], *blocks[-1][2:])
                prepare = following
            average_first = min(n_samples, max(0, int(np.ceil(average_from - self.t_)))) if average_from \
                else n_samples
            loss_sum, objective, nonfinite = 0.0, 0.0, 0
            for start, stop, block_a, block_b in blocks:
                if start > 0:  # a new block within the epoch starts from scale 1
                    fold_scale()
                if track_norm:
                    norm_at_start = _squared_norm(coef)
                block_loss, norm_changes, intercept, intercept_sum, block_nonfinite = _kernel.run_block(
                    coef, data, indices, indptr, dense, n_features, y, sample_weight, current, start, stop,
                    scale_start, loss, self.epsilon, self.fit_intercept, intercept_decay, intercept, n_threads,
                    scratch, average_coef, average_first, prepare)
                prepare = None
                nonfinite += block_nonfinite
                if average_from and stop > average_first:
                    average_sum += intercept_sum
                    n_averaged += stop - max(start, average_first)
                average_a, average_b = block_a, block_b
                loss_sum += block_loss
                objective += block_loss
                if track_norm:  # the sum over the block of |w|^2 before each step
                    objective += 0.5 * alpha * (norm_at_start * (scale_start ** 2 + current.norm_weight[start]
                                                                 * current.scale_after[start] ** 2)
                                                + norm_changes)
                scale_start = current.scale_after[stop - 1]
            self.t_ += n_samples
            if check_finite and epoch == 0 and nonfinite:
                check_array(X, accept_sparse="csr", dtype=None, input_name="X", estimator=self)  # raises
            if not (np.isfinite(intercept) and np.isfinite(coef).all() and scale_start > 0):
                raise ValueError(f"Floating-point under-/overflow occurred at epoch #{epoch + 1}. Scaling "
                                 "input data with StandardScaler or MinMaxScaler might help.")
            if monitor.epoch_ends(epoch, coef, scale_start, intercept, loss_sum, objective):
                break
            if following is not None:
                current, following = following, current
        fold_scale()
        self._standard_intercept[row] = intercept
        if average_from and n_averaged:  # the running mean of the intercept, as scikit-learn's
            before = self._n_averaged[row]
            self._average_intercept[row] = ((self._average_intercept[row] * before + average_sum)
                                            / (before + n_averaged))
            self._n_averaged[row] = before + n_averaged
        return epoch + 1

    def _linear_predict(self, X: Any) -> Array:
        check_is_fitted(self, "coef_")
        X = self._validate_data(X)
        scores = safe_sparse_dot(X, self.coef_.T, dense_output=True) + self.intercept_
        predicted: Array = scores.ravel() if scores.ndim == 2 and scores.shape[1] == 1 else scores
        return predicted


class _Monitor:
    """The stopping rule and the record of the fit of one row of the model, as scikit-learn's
    SGD: after each epoch, with early_stopping the score on the held-out rows (accuracy or
    R^2, the estimator's score) must beat the best by tol, else the mean training objective
    (loss plus ``alpha/2 |w|^2`` before each step) must fall below the best by tol; n_iter_no_change
    epochs in a row without that stop the fit.  verbose prints scikit-learn's lines."""

    def __init__(self, estimator: _BaseHogwildSGD, n_train: int) -> None:
        self.tol = -np.inf if estimator.tol is None else estimator.tol
        self.patience = estimator.n_iter_no_change
        self.verbose = estimator.verbose
        self.early_stopping = estimator.early_stopping
        self.stops_on_objective = estimator.tol is not None and not estimator.early_stopping
        # the objective is computed for the tol criterion, and for verbose's lines
        self.tracks_objective = self.stops_on_objective or bool(self.verbose)
        self.n_train = n_train
        self.score: Score | None = None  # callable (true coef, intercept) -> validation score, with early_stopping
        self.scores: list[float] = []
        self.best_score = -np.inf
        self.best_objective = np.inf
        self.no_improvement, self.stopped = 0, False
        self.started = time.perf_counter()

    def epoch_starts(self, epoch: int) -> None:
        if self.verbose:
            print(f"-- Epoch {epoch + 1}")

    def epoch_ends(self, epoch: int, coef: Array, scale: float, intercept: float, loss_sum: float,
                   objective_sum: float) -> bool:
        """After epoch number `epoch` (true weights scale * coef): True to stop."""
        line = None
        if self.verbose:
            norm = scale * np.sqrt(_squared_norm(coef))
            line = (f"Norm: {norm:.2f}, NNZs: {np.count_nonzero(coef)}, Bias: {intercept:.6f}, "
                    f"T: {(epoch + 1) * self.n_train}, Avg. loss: {loss_sum / self.n_train:.6f}, "
                    f"Objective: {objective_sum / self.n_train:.6f}")
        if self.early_stopping:
            assert self.score is not None, "early stopping needs the validation score"
            score = self.score(coef * scale if scale != 1.0 else coef, intercept)
            self.scores.append(score)
            if line:
                line += f", Validation score: {score:.6f}"
            self.no_improvement = self.no_improvement + 1 if score < self.best_score + self.tol else 0
            self.best_score = max(self.best_score, score)
        elif self.stops_on_objective:
            objective = objective_sum / self.n_train
            self.no_improvement = self.no_improvement + 1 if objective > self.best_objective - self.tol else 0
            self.best_objective = min(self.best_objective, objective)
        if line:
            print(line)
            print(f"Total training time: {time.perf_counter() - self.started:.2f} seconds.")
        self.stopped = self.no_improvement >= self.patience
        if self.stopped and self.verbose:
            print(f"Convergence after {epoch + 1} epochs took {time.perf_counter() - self.started:.2f} seconds")
        return self.stopped


_COMMON_PARAMS = """
    penalty : {'l2', None}, default='l2'
        L2 keeps each update sparse (a global scale factor, as scikit-learn's WeightVector).
    alpha : float, default=1e-4
        Regularisation strength; also sets the 'optimal' step size.
    fit_intercept : bool, default=True
    max_iter : int, default=1000
        Maximum number of epochs.
    tol : float or None, default=1e-3
        Stop when for n_iter_no_change epochs in a row the epoch's mean objective (loss plus
        ``alpha/2 |w|^2`` before each step) is not below the best by tol, or with early_stopping
        the validation score is not above the best by tol (scikit-learn's criteria); None
        runs max_iter epochs.
    shuffle : bool, default=True
    verbose : int, default=0
        Print scikit-learn's lines per epoch (norm, nonzeros, intercept, samples seen,
        mean loss and objective, validation score).
    epsilon : float, default=0.1
        Width of the 'huber' and 'epsilon_insensitive' losses.
    random_state : int, RandomState or None
        Seeds the shuffles and the validation split.  With n_threads=1 a fixed seed gives
        bit-identical results.
    learning_rate : {'constant', 'optimal', 'invscaling', 'epoch_decay'}
        scikit-learn's schedules (eta0; 1/(alpha*(t0+t)); eta0/t**power_t), or Hogwild!'s
        per-epoch decay eta0 * beta**epoch.
    eta0 : float, default=0.01
    power_t : float
    early_stopping : bool, default=False
        Hold out validation_fraction of the training rows (stratified by class for the
        classifier, scikit-learn's split) and stop on their score (accuracy, or R^2 for
        the regressor) instead of the training objective.
    validation_fraction : float in (0, 1), default=0.1
    n_iter_no_change : int, default=5
"""

_COMMON_PARAMS_END = """    warm_start : bool, default=False
        fit starts from the current ``coef_`` and ``intercept_`` (unless coef_init/intercept_init
        are given); the step count ``t_`` restarts, as in scikit-learn.
    average : bool or int, default=False
        Averaged SGD: ``coef_`` and ``intercept_`` become the average of the iterates from
        sample `average` on (True: from the first), with scikit-learn's lazy updates.
    beta : float in (0, 1], default=0.9
        The per-epoch decay of learning_rate='epoch_decay'.
    n_threads : int or None, default=None
        Threads of each epoch (None: fastoptim.get_num_threads(); -1: all usable cores).
        With more than one the updates race by design and results vary slightly.
"""

_RAISES = """
    Raises
    ------
    ValueError, TypeError
        From fit and partial_fit, before anything is written: an invalid hyperparameter
        (named), data scikit-learn's checks refuse (NaN or infinity in X, a wrong shape), or
        a coef_init/intercept_init/sample_weight of the wrong shape or with NaN.
"""

_COMMON_ATTRIBUTES = """
    n_iter_ : int
        Epochs of the fit (of the longest one-vs-rest fit); partial_fit adds one.
    t_ : float
        Training samples seen + 1 (the step counter of the schedules).
    validation_scores_ : list of float or None
        With early_stopping, the validation score after each epoch of fit (one list per
        class for one-vs-rest), else None (as MLPClassifier's; SGDClassifier keeps none).
    best_validation_score_ : float or None
        The best of ``validation_scores_`` (one per class for one-vs-rest).
    best_loss_ : float or None
        The smallest epoch objective of fit when the tol criterion stops it (tol set,
        early_stopping off), else None (one per class for one-vs-rest).
    n_features_in_, feature_names_in_
"""


class HogwildSGDClassifier(ClassifierMixin, _BaseHogwildSGD):
    __doc__ = """Linear classifier trained by Hogwild! SGD; multiclass is one-vs-rest.

    Parameters
    ----------
    loss : {'hinge', 'log_loss', 'modified_huber', 'squared_error'}, default='hinge'
""" + _COMMON_PARAMS + """    class_weight : dict, 'balanced' or None, default=None
        Weights of the classes, multiplying sample_weight: {label: weight}, or
        'balanced' (n_samples / (n_classes * count), from fit's y).  As in scikit-learn,
        a one-vs-rest problem weighs its class by its weight and the rest by 1.
""" + _COMMON_PARAMS_END + """

    Attributes
    ----------
    coef_ : ndarray of shape (1, n_features) or (n_classes, n_features), X's dtype
    intercept_ : ndarray of shape (1,) or (n_classes,)
    classes_ : ndarray of shape (n_classes,)
""" + _COMMON_ATTRIBUTES + _RAISES + """
    Examples
    --------
    >>> from sklearn.datasets import make_classification
    >>> from fastoptim.hogwild import HogwildSGDClassifier
    >>> X, y = make_classification(n_samples=200, n_features=10, random_state=0)
    >>> clf = HogwildSGDClassifier(n_threads=1, random_state=0).fit(X, y)
    >>> bool(clf.score(X, y) > 0.8)
    True
"""

    _LOSSES = ("hinge", "log_loss", "modified_huber", "squared_error")

    def __init__(self, loss: str = "hinge", *, penalty: str | None = "l2", alpha: float = 0.0001,
                 fit_intercept: bool = True, max_iter: int = 1000, tol: float | None = 1e-3, shuffle: bool = True,
                 verbose: int = 0, epsilon: float = 0.1, random_state: RandomState = None,
                 learning_rate: str = "optimal", eta0: float = 0.01, power_t: float = 0.5,
                 early_stopping: bool = False, validation_fraction: float = 0.1, n_iter_no_change: int = 5,
                 class_weight: dict[Any, float] | str | None = None, warm_start: bool = False,
                 average: bool | int = False, beta: float = 0.9, n_threads: int | None = None) -> None:
        _store_params(self, locals())

    def fit(self, X: Any, y: npt.ArrayLike, coef_init: npt.ArrayLike | None = None,
            intercept_init: npt.ArrayLike | None = None,
            sample_weight: npt.ArrayLike | None = None) -> "HogwildSGDClassifier":
        """Fit for up to max_iter epochs, from coef_init/intercept_init, else with warm_start from
        the current model, else from zero.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
            float64 or float32; CSR is used as is, other sparse formats are converted once.
            ``coef_`` takes X's dtype.
        y : array-like of shape (n_samples,)
            Class labels (at least two classes).
        coef_init : array-like of shape (n_classes, n_features), optional
            Starting weights (n_features values for two classes).
        intercept_init : array-like of shape (n_classes,), optional
            Starting intercepts (one value for two classes).
        sample_weight : array-like of shape (n_samples,), optional
            Non-negative weights of the samples (None: all 1).

        Returns
        -------
        HogwildSGDClassifier
            self, fitted.
        """
        with self._previous_fit_kept_on_error():
            n_threads = self._check_params()
            # X's NaN and infinities are found by the first epoch (see _run_sgd)
            X, labels = self._validate_data(X, y, reset=True, ensure_all_finite=False)
            classes, label = _encode_labels(labels)
            check_classification_targets(classes)  # y's type is its classes' (and y is 1-d here)
            if len(classes) < 2:
                raise ValueError(f"The number of classes has to be greater than one; got {len(classes)} class")
            sample_weight = check_sample_weight(sample_weight, X.shape[0])
            class_weight = _class_weights(self.class_weight, classes, labels)
            validation = self._validation_mask(label, sample_weight)
            self._start_fit(1 if len(classes) == 2 else len(classes), X.shape[1], X.dtype, coef_init,
                            intercept_init)
            self.classes_ = classes
            self._fit_rows(X, self._binary_problems(label, class_weight, sample_weight), self.max_iter,
                           n_threads, self._random_state, fitting=True, validation=validation,
                           sample_weight=sample_weight)
        return self

    def partial_fit(self, X: Any, y: npt.ArrayLike, classes: npt.ArrayLike | None = None,
                    sample_weight: npt.ArrayLike | None = None) -> "HogwildSGDClassifier":
        """One epoch over (X, y), continuing from the current weights.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
            float64 or float32; CSR is used as is, other sparse formats are converted once.
            Later calls convert to the weights' dtype.
        y : array-like of shape (n_samples,)
            Class labels, each in `classes`.
        classes : array-like, optional
            Every class label; required on the first call, optional (but equal) after.
        sample_weight : array-like of shape (n_samples,), optional
            Non-negative weights of the samples (None: all 1).

        Returns
        -------
        HogwildSGDClassifier
            self, updated.
        """
        n_threads = self._check_params()
        first_call = not hasattr(self, "classes_")
        self._check_partial_fit(first_call)
        if first_call and isinstance(self.class_weight, str):
            raise ValueError("class_weight 'balanced' is not supported for partial_fit. In order to use "
                             "'balanced' weights, use compute_class_weight('balanced', classes=classes, y=y). "
                             "In place of y you can use a large enough sample of the full training set "
                             "target to properly estimate the class frequency distributions. Pass the "
                             "resulting weights as the class_weight parameter.")
        X, labels = self._validate_data(X, y, reset=first_call)
        check_classification_targets(labels)
        if first_call:
            if classes is None:
                raise ValueError("classes must be passed on the first call to partial_fit.")
            classes = np.unique(classes)
            if len(classes) < 2:
                raise ValueError(f"The number of classes has to be greater than one; got {len(classes)} class")
        elif classes is not None and not np.array_equal(np.unique(classes), self.classes_):
            raise ValueError(f"classes={np.asarray(classes).tolist()} is not the same as on the first call to "
                             "partial_fit, "
                             f"was: {self.classes_.tolist()}")
        else:
            classes = self.classes_
        unknown = np.setdiff1d(labels, classes)
        if len(unknown):
            raise ValueError(f"y contains labels {unknown.tolist()} that are not in classes {classes.tolist()}")
        sample_weight = check_sample_weight(sample_weight, X.shape[0])
        class_weight = _class_weights(self.class_weight, classes, labels)
        if first_call:
            self.classes_ = classes
            n_models = 1 if len(classes) == 2 else len(classes)
            self._init_state(np.zeros((n_models, X.shape[1]), dtype=X.dtype), np.zeros(n_models))
            self._random_state = check_random_state(self.random_state)
        label = np.searchsorted(self.classes_, labels)
        self._fit_rows(X, self._binary_problems(label, class_weight, sample_weight), 1, n_threads,
                       self._random_state)
        return self

    def _binary_problems(self, label: Array, class_weight: Array, sample_weight: Array | None) -> Iterator[Problem]:
        """One binary problem per row of coef_, as (targets, training weights or None): +1 for
        its class, -1 for the rest (one-vs-rest), weighted by sample_weight times the class
        weight of the sample's side (the rest weigh 1 in one-vs-rest, as in scikit-learn).

        label holds each sample's index in classes_.
        """
        if len(self.classes_) == 2:
            targets = label * 2.0
            targets -= 1.0
            yield targets, _times(np.where(label == 1, class_weight[1], class_weight[0])
                                  if (class_weight != 1.0).any() else None, sample_weight)
            return
        for k in range(len(self.classes_)):
            positive = label == k
            yield (np.where(positive, 1.0, -1.0),
                   _times(np.where(positive, class_weight[k], 1.0) if class_weight[k] != 1.0 else None,
                          sample_weight))

    def _validation_score(self, X: Any, targets: Array, sample_weight: Array | None) -> Score:
        """Early stopping's score of one row of the model: the accuracy of its binary problem on
        the held-out rows, as scikit-learn's."""
        from sklearn.metrics import accuracy_score

        def score(coef: Array, intercept: float) -> float:
            predicted = np.where(self._decision(X, coef, intercept) > 0, 1.0, -1.0)
            return float(accuracy_score(targets, predicted, sample_weight=sample_weight))
        return score

    def _publish(self, coef: Array, intercept: Array) -> None:
        self.coef_, self.intercept_ = coef, intercept

    def decision_function(self, X: Any) -> Array:
        """Signed distance to the hyperplane(s).

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
            float64 or float32; CSR is used as is, other sparse formats are converted once.

        Returns
        -------
        ndarray of shape (n_samples,) for two classes, else (n_samples, n_classes)
        """
        return self._linear_predict(X)

    def predict(self, X: Any) -> Array:
        """The class of each sample (the largest decision function).

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
            float64 or float32; CSR is used as is, other sparse formats are converted once.

        Returns
        -------
        ndarray of shape (n_samples,)
            Labels from ``classes_``.
        """
        scores = self.decision_function(X)
        index = (scores > 0).astype(int) if scores.ndim == 1 else scores.argmax(axis=1)
        labels: Array = self.classes_[index]
        return labels

    def _has_proba(self) -> bool:
        if self.loss not in ("log_loss", "modified_huber"):
            raise AttributeError(f"probability estimates are not available for loss={self.loss!r}")
        return True

    @available_if(_has_proba)
    def predict_proba(self, X: Any) -> Array:
        """Class probabilities (loss 'log_loss' or 'modified_huber'); one-vs-rest scores normalised.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
            float64 or float32; CSR is used as is, other sparse formats are converted once.

        Returns
        -------
        ndarray of shape (n_samples, n_classes)
        """
        scores = self.decision_function(X)
        if self.loss == "log_loss":
            prob = expit(scores)
        else:
            prob = (np.clip(scores, -1.0, 1.0) + 1.0) / 2.0
        if prob.ndim == 1:
            return np.column_stack([1.0 - prob, prob])
        total = prob.sum(axis=1, keepdims=True)
        uniform = total[:, 0] == 0
        prob[uniform] = 1.0
        total[uniform] = prob.shape[1]
        normalised: Array = prob / total
        return normalised

    @available_if(_has_proba)
    def predict_log_proba(self, X: Any) -> Array:
        """The log of predict_proba.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
            float64 or float32; CSR is used as is, other sparse formats are converted once.

        Returns
        -------
        ndarray of shape (n_samples, n_classes)
        """
        log_proba: Array = np.log(self.predict_proba(X))
        return log_proba


def _times(weights: Array | None, sample_weight: Array | None) -> Array | None:
    """The product of two optional per-sample weights (None: all 1)."""
    if weights is None:
        return sample_weight
    if sample_weight is not None:
        weights *= sample_weight
    return weights


class HogwildSGDRegressor(RegressorMixin, _BaseHogwildSGD):
    __doc__ = """Linear regressor trained by Hogwild! SGD.

    Parameters
    ----------
    loss : {'squared_error', 'huber', 'epsilon_insensitive'}, default='squared_error'
""" + _COMMON_PARAMS + _COMMON_PARAMS_END + """
    Attributes
    ----------
    coef_ : ndarray of shape (n_features,), X's dtype
    intercept_ : ndarray of shape (1,)
""" + _COMMON_ATTRIBUTES + _RAISES + """
    Examples
    --------
    >>> from sklearn.datasets import make_regression
    >>> from fastoptim.hogwild import HogwildSGDRegressor
    >>> X, y = make_regression(n_samples=200, n_features=10, noise=0.1, random_state=0)
    >>> reg = HogwildSGDRegressor(n_threads=1, random_state=0, eta0=0.01).fit(X, y)
    >>> bool(reg.score(X, y) > 0.9)
    True
"""

    _LOSSES = ("squared_error", "huber", "epsilon_insensitive")

    def __init__(self, loss: str = "squared_error", *, penalty: str | None = "l2", alpha: float = 0.0001,
                 fit_intercept: bool = True, max_iter: int = 1000, tol: float | None = 1e-3, shuffle: bool = True,
                 verbose: int = 0, epsilon: float = 0.1, random_state: RandomState = None,
                 learning_rate: str = "invscaling", eta0: float = 0.01, power_t: float = 0.25,
                 early_stopping: bool = False, validation_fraction: float = 0.1, n_iter_no_change: int = 5,
                 warm_start: bool = False, average: bool | int = False, beta: float = 0.9,
                 n_threads: int | None = None) -> None:
        _store_params(self, locals())

    def _validate_Xy(self, X: Any, y: Any, reset: bool, **kwargs: Any) -> Any:
        return self._validate_data(X, y, reset=reset, y_numeric=True, **kwargs)

    def fit(self, X: Any, y: npt.ArrayLike, coef_init: npt.ArrayLike | None = None,
            intercept_init: npt.ArrayLike | None = None,
            sample_weight: npt.ArrayLike | None = None) -> "HogwildSGDRegressor":
        """Fit for up to max_iter epochs, from coef_init/intercept_init, else with warm_start from
        the current model, else from zero.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
            float64 or float32; CSR is used as is, other sparse formats are converted once.
            ``coef_`` takes X's dtype.
        y : array-like of shape (n_samples,)
            Targets.
        coef_init : array-like of n_features values, optional
            Starting weights.
        intercept_init : array-like of one value, optional
            Starting intercept.
        sample_weight : array-like of shape (n_samples,), optional
            Non-negative weights of the samples (None: all 1).

        Returns
        -------
        HogwildSGDRegressor
            self, fitted.
        """
        with self._previous_fit_kept_on_error():
            n_threads = self._check_params()
            # X's NaN and infinities are found by the first epoch (see _run_sgd)
            X, target = self._validate_Xy(X, y, reset=True, ensure_all_finite=False)
            sample_weight = check_sample_weight(sample_weight, X.shape[0])
            validation = self._validation_mask(target, sample_weight)
            self._start_fit(1, X.shape[1], X.dtype, coef_init, intercept_init)
            self._fit_rows(X, [(target, sample_weight)], self.max_iter, n_threads, self._random_state, fitting=True,
                           validation=validation, sample_weight=sample_weight)
        return self

    def partial_fit(self, X: Any, y: npt.ArrayLike,
                    sample_weight: npt.ArrayLike | None = None) -> "HogwildSGDRegressor":
        """One epoch over (X, y), continuing from the current weights.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
            float64 or float32; CSR is used as is, other sparse formats are converted once.
            Later calls convert to the weights' dtype.
        y : array-like of shape (n_samples,)
            Targets.
        sample_weight : array-like of shape (n_samples,), optional
            Non-negative weights of the samples (None: all 1).

        Returns
        -------
        HogwildSGDRegressor
            self, updated.
        """
        n_threads = self._check_params()
        first_call = not hasattr(self, "coef_")
        self._check_partial_fit(first_call)
        X, target = self._validate_Xy(X, y, reset=first_call)
        sample_weight = check_sample_weight(sample_weight, X.shape[0])
        if first_call:
            self._init_state(np.zeros((1, X.shape[1]), dtype=X.dtype), np.zeros(1))
            self._random_state = check_random_state(self.random_state)
        self._fit_rows(X, [(target, sample_weight)], 1, n_threads, self._random_state)
        return self

    def _validation_score(self, X: Any, targets: Array, sample_weight: Array | None) -> Score:
        """Early stopping's score: R^2 on the held-out rows, as scikit-learn's."""
        from sklearn.metrics import r2_score

        def score(coef: Array, intercept: float) -> float:
            return float(r2_score(targets, self._decision(X, coef, intercept), sample_weight=sample_weight))
        return score

    def _publish(self, coef: Array, intercept: Array) -> None:
        self.coef_, self.intercept_ = coef[0], intercept

    def predict(self, X: Any) -> Array:
        """The predicted target of each sample.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
            float64 or float32; CSR is used as is, other sparse formats are converted once.

        Returns
        -------
        ndarray of shape (n_samples,)
        """
        return self._linear_predict(X)
