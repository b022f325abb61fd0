"""Hogwild!: lock-free parallel SGD for sparse linear models, as scikit-learn estimators.

HogwildSGDClassifier and HogwildSGDRegressor take SGDClassifier's and
SGDRegressor's parameter names and defaults (L2 penalty only) plus `n_threads`.
Each epoch is one nogil OpenMP region: the threads claim slices of a shuffled
sample order in turn and update the shared weights without locks, touching
only the nonzeros of their rows (Niu, Recht, Re and Wright, 2011).

Results are bit-reproducible with n_threads=1 and a fixed random_state.  With
more threads the updates race by design (a thread may read weights another is
writing, and a write may occasionally be lost), so results vary slightly from
run to run; on sparse data such collisions are rare and accuracy is unaffected.
On dense data every update writes every weight, so threads contend for the
same cache lines: there one thread is usually as fast as several.  Averaged SGD
(`average`) keeps scikit-learn's lazy form, in which a weight update lost to a
race is never corrected in the average: with several threads use it on sparse
data with many features, where two threads rarely write the same weight at once.

fit reads X once per epoch and nothing more: it finds NaN and infinities in X
during the first epoch (each stored value enters a dot product) and then raises
scikit-learn's error, and the next epoch's shuffle and step-size plan are done
by the threads while the current epoch runs.  partial_fit checks X before it
writes anything.

Needs scikit-learn (>= 1.6) and SciPy: pip install 'fastoptim[hogwild]'.
"""
import contextlib
import numbers
import warnings

import numpy as np

try:
    import scipy.sparse as sp
    from scipy.special import expit
    from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.utils import check_random_state
    from sklearn.utils.extmath import safe_sparse_dot
    from sklearn.utils.metaestimators import available_if
    from sklearn.utils.multiclass import check_classification_targets
    from sklearn.utils.validation import check_array, check_is_fitted, validate_data
except ImportError as exc:  # pragma: no cover - exercised by .ci/smoke.py --bare
    raise ImportError(f"fastoptim.hogwild needs scikit-learn (>= 1.6) and SciPy ({exc}): "
                      "pip install 'fastoptim[hogwild]'") from exc

from . import _hogwild, _kernels
from ._config import _resolve_threads

__all__ = ["HogwildSGDClassifier", "HogwildSGDRegressor"]

# scikit-learn damps intercept updates on sparse input by this factor (SPARSE_INTERCEPT_DECAY).
SPARSE_INTERCEPT_DECAY = 0.01
LEARNING_RATES = ("constant", "optimal", "invscaling", "epoch_decay")
# Unused indices for dense input (the kernel reads dense rows by position).
_NO_INDEX = np.zeros(1, dtype=np.int32)
# An epoch with fewer stored values than this runs on one thread: starting the
# threads would cost more than the work, and small fits stay deterministic.
# Tests lower it to exercise the threads on small problems.
PARALLEL_MIN_NNZ = 1 << 16


def _check_number(name, value, low=None, high=None, low_open=False, integer=False, allow_none=False):
    if value is None and allow_none:
        return
    kind = numbers.Integral if integer else numbers.Real
    if isinstance(value, bool) or not isinstance(value, kind):
        raise TypeError(f"{name} must be {'an integer' if integer else 'a real number'}"
                        f"{' or None' if allow_none else ''}, got {value!r}")
    if not np.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")
    if low is not None and (value < low or (low_open and value == low)):
        raise ValueError(f"{name} must be {'>' if low_open else '>='} {low}, got {value!r}")
    if high is not None and value > high:
        raise ValueError(f"{name} must be <= {high}, got {value!r}")


def _check_sample_weight(sample_weight, n_samples):
    """sample_weight as float64 (None stays None: all ones, and the kernel reads nothing)."""
    if sample_weight is None:
        return None
    sample_weight = np.asarray(sample_weight, dtype=np.float64)
    if sample_weight.ndim == 0:
        return np.full(n_samples, float(sample_weight))
    if sample_weight.shape != (n_samples,):
        raise ValueError(f"sample_weight.shape == {sample_weight.shape}, expected {(n_samples,)}!")
    if not np.isfinite(sample_weight).all():
        raise ValueError("sample_weight contains NaN or infinity")
    if (sample_weight < 0).any():
        raise ValueError("sample_weight must be non-negative")
    if n_samples and not sample_weight.any():
        raise ValueError("Sample weights must contain at least one non-zero number.")
    return np.ascontiguousarray(sample_weight)


def _encode_labels(y):
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


def _store_params(estimator, params):
    """__init__ keeps each argument as is (scikit-learn's convention); checks happen in fit."""
    for name, value in params.items():
        if name != "self":
            setattr(estimator, name, value)


def _squared_norm(w):
    return float(np.dot(w, w)) if w.dtype == np.float64 else float(np.square(w, dtype=np.float64).sum())


class _BaseHogwildSGD(BaseEstimator):
    """The parts both estimators share: checks, data layout and the epoch loop."""

    _LOSSES = ()

    def _check_params(self):
        cls = type(self).__name__
        if self.loss not in self._LOSSES:
            raise ValueError(f"The loss {self.loss!r} is not supported by {cls}; choose from {self._LOSSES}")
        if self.penalty not in ("l2", None):
            raise ValueError(f"penalty={self.penalty!r} is not supported: Hogwild! keeps updates sparse "
                             "with an L2 penalty ('l2') or none (None)")
        if self.learning_rate not in LEARNING_RATES:
            raise ValueError(f"learning_rate={self.learning_rate!r} is not supported; "
                             f"choose from {LEARNING_RATES}")
        _check_number("alpha", self.alpha, low=0.0)
        if self.learning_rate == "optimal" and self.alpha == 0:
            raise ValueError("alpha must be > 0 since learning_rate is 'optimal'. alpha is used to "
                             "compute the optimal learning rate.")
        _check_number("eta0", self.eta0, low=0.0, low_open=self.learning_rate != "optimal")
        _check_number("power_t", self.power_t)
        _check_number("beta", self.beta, low=0.0, high=1.0, low_open=True)
        _check_number("epsilon", self.epsilon, low=0.0)
        _check_number("max_iter", self.max_iter, low=1, integer=True)
        _check_number("n_iter_no_change", self.n_iter_no_change, low=1, integer=True)
        _check_number("tol", self.tol, allow_none=True)
        if not isinstance(self.average, (bool, np.bool_)):
            _check_number("average", self.average, low=0, integer=True)
        for name in ("shuffle", "fit_intercept"):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                raise TypeError(f"{name} must be a bool, got {getattr(self, name)!r}")
        return self._threads()

    def _threads(self):
        if self.n_threads is None:
            return _kernels.get_num_threads()
        n = _resolve_threads(self.n_threads)
        return n if _kernels.OPENMP else 1

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        try:
            tags.non_deterministic = self._threads() > 1
        except (TypeError, ValueError):  # an invalid n_threads is reported by fit
            pass
        return tags

    @contextlib.contextmanager
    def _previous_fit_kept_on_error(self):
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

    def _validate_data(self, X, y="no_validation", reset=False, **kwargs):
        """float32/float64, CSR (other sparse formats converted once) or dense C-contiguous.

        Once fitted, further data is converted to the weights' dtype.
        """
        dtype = [np.float64, np.float32] if reset or not hasattr(self, "coef_") else self.coef_.dtype
        return validate_data(self, X, y, accept_sparse="csr", dtype=dtype, order="C",
                             accept_large_sparse=True, reset=reset, **kwargs)

    def _optimal_init(self):
        """scikit-learn's offset of the 'optimal' schedule (Bottou's heuristic for the first step)."""
        typw = np.sqrt(1.0 / np.sqrt(self.alpha))
        derivative = _hogwild.derivative(_hogwild.LOSSES[self.loss], -typw, 1.0, self.epsilon)
        return 1.0 / (typw / max(1.0, derivative) * self.alpha)

    def _average_from(self):
        """The step from which the iterates are averaged (0: no averaging)."""
        return float(self.average)

    def _init_state(self, n_models, n_features, dtype):
        """Zero weights: the plain SGD iterates and, with `average`, their averages."""
        self._standard_coef = np.zeros((n_models, n_features), dtype=dtype)
        self._standard_intercept = np.zeros(n_models)
        if self._average_from():
            self._average_coef = np.zeros((n_models, n_features), dtype=dtype)
            self._average_intercept = np.zeros(n_models)
            self._n_averaged = np.zeros(n_models, dtype=np.int64)
        self.t_ = 1.0
        self.n_iter_ = 0

    def _fit_rows(self, X, targets, sample_weight, max_iter, n_threads, rng, check_finite=False):
        """SGD of each row of the model on its targets (an iterable of arrays), then coef_/intercept_.

        check_finite: X is not yet checked for NaN and infinity (see _run_sgd).
        """
        t_start, epochs_done = self.t_, self.n_iter_
        n_iter, converged = 0, True
        for row, y in enumerate(targets):
            self.t_ = t_start
            epochs, stopped = self._run_sgd(X, y, sample_weight, row, max_iter, n_threads, rng, epochs_done,
                                            check_finite and row == 0)
            n_iter, converged = max(n_iter, epochs), converged and stopped
        self.n_iter_ = epochs_done + n_iter if max_iter == 1 else n_iter
        self.t_ = t_start + n_iter * X.shape[0]
        if max_iter > 1:
            self._warn_not_converged(converged)
        averaged = self._average_from() and self._average_from() <= self.t_ - 1
        coef = self._average_coef if averaged else self._standard_coef
        intercept = (self._average_intercept if averaged else self._standard_intercept).astype(coef.dtype)
        self._publish(coef, intercept)

    def _run_sgd(self, X, y, sample_weight, row, max_iter, n_threads, rng, first_epoch, check_finite):
        """Hogwild! SGD of one row of the model (updated in place).

        With check_finite, the first epoch checks X for NaN and infinity on its way
        (each stored value enters some row's dot product with the finite weights),
        which saves fit a separate pass over X (fit restores the previous model
        when it raises).
        Returns (epochs run, whether the tol criterion stopped it).
        """
        coef, intercept = self._standard_coef[row], float(self._standard_intercept[row])
        average_from = self._average_from()
        average_coef = self._average_coef[row] if average_from else None
        average_sum, n_averaged = 0.0, 0
        n_samples, n_features = X.shape
        dense = not sp.issparse(X)
        if (X.size if dense else X.nnz) < PARALLEL_MIN_NNZ:
            n_threads = 1
        if dense:
            data, indices, indptr = X.reshape(-1), _NO_INDEX, _NO_INDEX
        else:
            data, indices = X.data, X.indices
            indptr = X.indptr.astype(indices.dtype, copy=False)
        scratch = np.zeros(n_threads * _hogwild.THREAD_SCRATCH)
        y = np.ascontiguousarray(y, dtype=np.float64)
        loss = _hogwild.LOSSES[self.loss]
        alpha = self.alpha if self.penalty == "l2" else 0.0
        # the stopping objective: mean loss plus alpha/2 |w|^2 before each step, as scikit-learn's
        track_norm = self.tol is not None and alpha > 0.0
        intercept_decay = 1.0 if dense else SPARSE_INTERCEPT_DECAY
        optimal_init = self._optimal_init() if self.learning_rate == "optimal" else 0.0

        def set_up(epoch, index, t_start, scale_start, average_a, average_b):
            """Record epoch number `index`'s shuffle and plan."""
            if self.shuffle:
                epoch.set_shuffle(rng.randint(np.iinfo(np.int64).max, dtype=np.int64))
            if self.learning_rate == "epoch_decay":
                schedule, eta0 = "constant", self.eta0 * self.beta ** (first_epoch + index)
            else:
                schedule, eta0 = self.learning_rate, self.eta0
            # the 'optimal' schedule uses alpha even without a penalty, as scikit-learn's
            epoch.set_plan(_hogwild.SCHEDULES[schedule], eta0, self.power_t, self.alpha, optimal_init, alpha,
                           t_start, scale_start, average_from, average_a, average_b)

        def fold_scale():
            """Fold the scale (and the lazy averaging terms) into the stored weights."""
            nonlocal scale_start, average_a, average_b
            if average_from:
                np.add(average_coef, average_a * coef, out=average_coef)
                np.divide(average_coef, average_b, out=average_coef)
                average_a, average_b = 0.0, 1.0
            np.multiply(coef, scale_start, out=coef)
            scale_start = 1.0

        # The true weights are scale_start * coef; the scale carries over epochs until
        # folded.  Two Epochs take turns: the one running prepares the other.
        scale_start, average_a, average_b = 1.0, 0.0, 1.0
        current = _hogwild.Epoch(n_samples, track_norm, bool(average_from))
        following = _hogwild.Epoch(n_samples, track_norm, bool(average_from)) if max_iter > 1 else None
        set_up(current, 0, self.t_, scale_start, average_a, average_b)
        current.prepare(n_threads)
        best_objective, no_improvement = np.inf, 0
        for epoch in range(max_iter):
            blocks = current.blocks()
            prepare = None
            if epoch + 1 < max_iter:
                set_up(following, epoch + 1, self.t_ + n_samples, current.scale_after[-1], *blocks[-1][2:])
                prepare = following
            average_first = min(n_samples, max(0, int(np.ceil(average_from - self.t_)))) if average_from \
                else n_samples
            objective, nonfinite = 0.0, 0
            for start, stop, block_a, block_b in blocks:
                if start > 0:  # a new block within the epoch starts from scale 1
                    fold_scale()
                if track_norm:
                    norm_at_start = _squared_norm(coef)
                block_loss, norm_changes, intercept, intercept_sum, block_nonfinite = _hogwild.run_block(
                    coef, data, indices, indptr, dense, n_features, y, sample_weight, current, start, stop,
                    scale_start, loss, self.epsilon, self.fit_intercept, intercept_decay, intercept, n_threads,
                    scratch, average_coef, average_first, prepare)
                prepare = None
                nonfinite += block_nonfinite
                if average_from and stop > average_first:
                    average_sum += intercept_sum
                    n_averaged += stop - max(start, average_first)
                average_a, average_b = block_a, block_b
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
            if self.tol is not None:
                objective /= n_samples
                no_improvement = no_improvement + 1 if objective > best_objective - self.tol else 0
                best_objective = min(best_objective, objective)
                if no_improvement >= self.n_iter_no_change:
                    break
            current, following = following, current
        fold_scale()
        self._standard_intercept[row] = intercept
        if average_from and n_averaged:  # the running mean of the intercept, as scikit-learn's
            before = self._n_averaged[row]
            self._average_intercept[row] = ((self._average_intercept[row] * before + average_sum)
                                            / (before + n_averaged))
            self._n_averaged[row] = before + n_averaged
        return epoch + 1, epoch + 1 < max_iter or no_improvement >= self.n_iter_no_change

    def _warn_not_converged(self, converged):
        if not converged and self.tol is not None and self.max_iter > 1:
            warnings.warn("Maximum number of iteration reached before convergence. Consider increasing "
                          "max_iter to improve the fit.", ConvergenceWarning)

    def _linear_predict(self, X):
        check_is_fitted(self, "coef_")
        X = self._validate_data(X)
        scores = safe_sparse_dot(X, self.coef_.T, dense_output=True) + self.intercept_
        return scores.ravel() if scores.ndim == 2 and scores.shape[1] == 1 else scores


_COMMON_PARAMS = """
    penalty : {'l2', None}, default='l2'
        L2 keeps each update sparse (a global scale factor, as scikit-learn's WeightVector).
    alpha : float, default=1e-4
        Regularisation strength; also sets the 'optimal' step size.
    fit_intercept : bool, default=True
    max_iter : int, default=1000
        Maximum number of epochs.
    tol : float or None, default=1e-3
        Stop when an epoch's summed loss is not below the best by tol * n_samples for
        n_iter_no_change epochs in a row (scikit-learn's criterion); None runs max_iter epochs.
    shuffle : bool, default=True
    epsilon : float, default=0.1
        Width of the 'huber' and 'epsilon_insensitive' losses.
    random_state : int, RandomState or None
        Seeds the shuffles.  With n_threads=1 a fixed seed gives bit-identical results.
    learning_rate : {'constant', 'optimal', 'invscaling', 'epoch_decay'}
        scikit-learn's schedules (eta0; 1/(alpha*(t0+t)); eta0/t**power_t), or Hogwild!'s
        per-epoch decay eta0 * beta**epoch.
    eta0 : float, default=0.01
    power_t : float
    beta : float in (0, 1], default=0.9
        The per-epoch decay of learning_rate='epoch_decay'.
    n_iter_no_change : int, default=5
    average : bool or int, default=False
        Averaged SGD: coef_ and intercept_ become the average of the iterates from
        sample `average` on (True: from the first), with scikit-learn's lazy updates.
    n_threads : int or None, default=None
        Threads of each epoch (None: fastoptim.get_num_threads(); -1: all usable cores).
        With more than one the updates race by design and results vary slightly.
"""


class HogwildSGDClassifier(ClassifierMixin, _BaseHogwildSGD):
    __doc__ = """Linear classifier trained by Hogwild! SGD; multiclass is one-vs-rest.

    Parameters
    ----------
    loss : {'hinge', 'log_loss', 'modified_huber', 'squared_error'}, default='hinge'
""" + _COMMON_PARAMS + """
    Attributes
    ----------
    coef_ : ndarray of shape (1, n_features) or (n_classes, n_features), X's dtype
    intercept_ : ndarray of shape (1,) or (n_classes,)
    classes_, n_iter_ (epochs of the longest one-vs-rest fit), t_ (samples seen + 1),
    n_features_in_, feature_names_in_
    """

    _LOSSES = ("hinge", "log_loss", "modified_huber", "squared_error")

    def __init__(self, loss="hinge", *, penalty="l2", alpha=0.0001, fit_intercept=True, max_iter=1000,
                 tol=1e-3, shuffle=True, epsilon=0.1, random_state=None, learning_rate="optimal",
                 eta0=0.01, power_t=0.5, beta=0.9, n_iter_no_change=5, average=False, n_threads=None):
        _store_params(self, locals())

    def fit(self, X, y, sample_weight=None):
        """Fit from zero weights for up to max_iter epochs."""
        with self._previous_fit_kept_on_error():
            n_threads = self._check_params()
            # X's NaN and infinities are found by the first epoch (see _run_sgd)
            X, y = self._validate_data(X, y, reset=True, ensure_all_finite=False)
            classes, label = _encode_labels(y)
            check_classification_targets(classes)  # y's type is its classes' (and y is 1-d here)
            if len(classes) < 2:
                raise ValueError(f"The number of classes has to be greater than one; got {len(classes)} class")
            sample_weight = _check_sample_weight(sample_weight, X.shape[0])
            self.classes_ = classes
            self._init_state(1 if len(classes) == 2 else len(classes), X.shape[1], X.dtype)
            self._random_state = check_random_state(self.random_state)
            self._fit_rows(X, self._binary_targets(label), sample_weight, self.max_iter, n_threads,
                           self._random_state, check_finite=True)
        return self

    def partial_fit(self, X, y, classes=None, sample_weight=None):
        """One epoch over (X, y), continuing from the current weights; `classes` is required the first time."""
        n_threads = self._check_params()
        first_call = not hasattr(self, "classes_")
        X, y = self._validate_data(X, y, reset=first_call)
        check_classification_targets(y)
        if first_call:
            if classes is None:
                raise ValueError("classes must be passed on the first call to partial_fit.")
            classes = np.unique(classes)
            if len(classes) < 2:
                raise ValueError(f"The number of classes has to be greater than one; got {len(classes)} class")
            self.classes_ = classes
            self._init_state(1 if len(classes) == 2 else len(classes), X.shape[1], X.dtype)
            self._random_state = check_random_state(self.random_state)
        elif classes is not None and not np.array_equal(np.unique(classes), self.classes_):
            raise ValueError(f"classes={list(classes)} is not the same as on the first call to partial_fit, "
                             f"was: {self.classes_.tolist()}")
        unknown = np.setdiff1d(y, self.classes_)
        if len(unknown):
            raise ValueError(f"y contains labels {unknown.tolist()} that are not in classes "
                             f"{self.classes_.tolist()}")
        sample_weight = _check_sample_weight(sample_weight, X.shape[0])
        label = np.searchsorted(self.classes_, y)
        self._fit_rows(X, self._binary_targets(label), sample_weight, 1, n_threads, self._random_state)
        return self

    def _binary_targets(self, label):
        """One binary problem per row of coef_: +1 for its class, -1 for the rest (one-vs-rest).

        label holds each sample's index in classes_.
        """
        if len(self.classes_) == 2:
            targets = label * 2.0
            targets -= 1.0
            return [targets]
        return (np.where(label == k, 1.0, -1.0) for k in range(len(self.classes_)))

    def _publish(self, coef, intercept):
        self.coef_, self.intercept_ = coef, intercept

    def decision_function(self, X):
        """Signed distance to the hyperplane(s): shape (n_samples,) for two classes, else (n_samples, n_classes)."""
        return self._linear_predict(X)

    def predict(self, X):
        scores = self.decision_function(X)
        index = (scores > 0).astype(int) if scores.ndim == 1 else scores.argmax(axis=1)
        return self.classes_[index]

    def _has_proba(self):
        if self.loss not in ("log_loss", "modified_huber"):
            raise AttributeError(f"probability estimates are not available for loss={self.loss!r}")
        return True

    @available_if(_has_proba)
    def predict_proba(self, X):
        """Class probabilities (loss 'log_loss' or 'modified_huber'); one-vs-rest scores normalised."""
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
        return prob / total

    @available_if(_has_proba)
    def predict_log_proba(self, X):
        return np.log(self.predict_proba(X))


class HogwildSGDRegressor(RegressorMixin, _BaseHogwildSGD):
    __doc__ = """Linear regressor trained by Hogwild! SGD.

    Parameters
    ----------
    loss : {'squared_error', 'huber', 'epsilon_insensitive'}, default='squared_error'
""" + _COMMON_PARAMS + """
    Attributes
    ----------
    coef_ : ndarray of shape (n_features,), X's dtype
    intercept_ : ndarray of shape (1,)
    n_iter_, t_, n_features_in_, feature_names_in_
    """

    _LOSSES = ("squared_error", "huber", "epsilon_insensitive")

    def __init__(self, loss="squared_error", *, penalty="l2", alpha=0.0001, fit_intercept=True,
                 max_iter=1000, tol=1e-3, shuffle=True, epsilon=0.1, random_state=None,
                 learning_rate="invscaling", eta0=0.01, power_t=0.25, beta=0.9, n_iter_no_change=5,
                 average=False, n_threads=None):
        _store_params(self, locals())

    def _validate_Xy(self, X, y, reset, **kwargs):
        return self._validate_data(X, y, reset=reset, y_numeric=True, **kwargs)

    def fit(self, X, y, sample_weight=None):
        """Fit from zero weights for up to max_iter epochs."""
        with self._previous_fit_kept_on_error():
            n_threads = self._check_params()
            # X's NaN and infinities are found by the first epoch (see _run_sgd)
            X, y = self._validate_Xy(X, y, reset=True, ensure_all_finite=False)
            sample_weight = _check_sample_weight(sample_weight, X.shape[0])
            self._init_state(1, X.shape[1], X.dtype)
            self._random_state = check_random_state(self.random_state)
            self._fit_rows(X, [y], sample_weight, self.max_iter, n_threads, self._random_state, check_finite=True)
        return self

    def partial_fit(self, X, y, sample_weight=None):
        """One epoch over (X, y), continuing from the current weights."""
        n_threads = self._check_params()
        first_call = not hasattr(self, "coef_")
        X, y = self._validate_Xy(X, y, reset=first_call)
        sample_weight = _check_sample_weight(sample_weight, X.shape[0])
        if first_call:
            self._init_state(1, X.shape[1], X.dtype)
            self._random_state = check_random_state(self.random_state)
        self._fit_rows(X, [y], sample_weight, 1, n_threads, self._random_state)
        return self

    def _publish(self, coef, intercept):
        self.coef_, self.intercept_ = coef[0], intercept

    def predict(self, X):
        return self._linear_predict(X)
