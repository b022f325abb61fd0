"""Test problems with gradients: the textbook functions in 1-D and 2-D, and
linear and softmax regression on scikit-learn's bundled iris and digits.

A function f of the list below takes x with its coordinates on the first
axis (shape (dim,) for a point, (dim, ...) for a grid of points) and
broadcasts over the rest; `f.grad(x)` has x's shape, and
`f.loss_and_grad([x])` is the (loss, grads) pair an optimizer loop wants.

The regression models take their data as a batch (X, y), so that
`fastoptim.train.fit(params, model.loss_and_grad, (X, y), optimizer, ...)`
trains them.
"""
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import numpy.typing as npt

from .._docstrings import fill
from ..typing import FloatArray

#: An array of any dtype (data, class numbers).
Array = npt.NDArray[Any]
#: The params of a regression model: {'W': ..., 'b': ...}.
ModelParams = dict[str, FloatArray]

__all__ = [
    "Objective", "square", "x_cos_pi_x", "quadratic", "ill_conditioned", "saddle", "rosenbrock",
    "FUNCTIONS_1D", "FUNCTIONS_2D",
    "Dataset", "load_dataset", "LinearRegression", "SoftmaxRegression",
]


_objective_docs = fill(x_coordinates="""
    Parameters
    ----------
    x : array_like
        Coordinates on the first axis: shape (dim,) or (dim, ...).""")


@dataclass(frozen=True)
class Objective:
    """A test function with its gradient, a customary start point and a box to plot it in.

    Parameters
    ----------
    name : str
        Its name.
    formula : str
        The formula, in matplotlib's mathtext (for titles).
    dim : int
        The number of coordinates.
    value : callable
        ``value(x) -> f``, x of shape (dim, ...), broadcasting over the rest.
    gradient : callable
        ``gradient(x) -> grad``, of x's shape.
    start : tuple of float
        The customary start point.
    box : tuple of (float, float)
        The plotting range (lo, hi) of each coordinate.
    minima : tuple of points, default ()
        Known minimizers, for plots and tests.

    Raises
    ------
    ValueError
        Called (or its gradient) on x without `dim` coordinates on its first axis.

    Examples
    --------
    >>> import numpy as np
    >>> from fastoptim.demos.problems import quadratic, rosenbrock
    >>> float(quadratic([1.0, 1.0])), quadratic.grad(np.array([1.0, 1.0]))
    (3.0, array([2., 4.]))
    >>> loss, grads = rosenbrock.loss_and_grad([np.array(rosenbrock.start)])
    >>> round(loss, 2)
    24.2
    """
    name: str
    formula: str            # for titles, in matplotlib's mathtext
    dim: int
    value: Callable[[Array], Any]        # x (dim, ...) -> f (...)
    gradient: Callable[[Array], Array]   # x (dim, ...) -> grad (dim, ...)
    start: tuple[float, ...]
    box: tuple[tuple[float, float], ...]   # ((lo, hi),) per coordinate
    minima: tuple[tuple[float, ...], ...] = ()      # known minimizers (points), for plots and tests

    @_objective_docs
    def __call__(self, x: npt.ArrayLike) -> Any:
        """f(x).

        {{x_coordinates}}

        Returns
        -------
        float or numpy.ndarray
            The value, shaped like x without its first axis.
        """
        return self.value(self._point(x))

    @_objective_docs
    def grad(self, x: npt.ArrayLike) -> Array:
        """The gradient of f at x.

        {{x_coordinates}}

        Returns
        -------
        numpy.ndarray
            Of x's shape.
        """
        return self.gradient(self._point(x))

    def loss_and_grad(self, params: Sequence[FloatArray], batch: object = None) -> tuple[float, list[FloatArray]]:
        """(f(x), [grad f(x)]) for params = [x], as fastoptim.train.fit's loss_and_grad.

        Parameters
        ----------
        params : list of one array
            ``[x]``, x of shape (dim,).
        batch : object, default None
            Unused (the function is deterministic).

        Returns
        -------
        tuple
            ``(loss, [grad])``, the grad of x's dtype.
        """
        x = params[0]
        return float(self.value(x)), [np.asarray(self.gradient(x), dtype=x.dtype)]

    def _point(self, given: npt.ArrayLike) -> Array:
        x = np.asarray(given, dtype=float) if not isinstance(given, np.ndarray) else given
        if x.ndim == 0 and self.dim == 1:
            x = x.reshape(1)
        if x.shape[:1] != (self.dim,):
            raise ValueError(f"{self.name} takes x with {self.dim} coordinate(s) on its first axis, "
                             f"got shape {x.shape}")
        return x


def _x_cos_grad(x: Array) -> Array:
    return np.cos(np.pi * x) - np.pi * x * np.sin(np.pi * x)


square = Objective(
    "square", r"$f(x) = x^2$", 1,
    lambda x: x[0] ** 2, lambda x: 2 * x,
    start=(2.0,), box=((-2.5, 2.5),), minima=((0.0,),))

x_cos_pi_x = Objective(
    "x_cos_pi_x", r"$f(x) = x \cos(\pi x)$", 1,
    lambda x: x[0] * np.cos(np.pi * x[0]), _x_cos_grad,
    # From -0.8 plain descent settles in the local minimum near -0.27, not
    # in the global one (on [-1, 2]) near 1.09.
    start=(-0.8,), box=((-1.0, 2.0),), minima=((-0.2739,), (1.0904,)))

quadratic = Objective(
    "quadratic", r"$f(x) = x_1^2 + 2 x_2^2$", 2,
    lambda x: x[0] ** 2 + 2 * x[1] ** 2,
    lambda x: np.stack([2 * x[0], 4 * x[1]]),
    start=(-5.0, -2.0), box=((-6.0, 6.0), (-3.0, 3.0)), minima=((0.0, 0.0),))

ill_conditioned = Objective(
    "ill_conditioned", r"$f(x) = 0.1 x_1^2 + 2 x_2^2$", 2,
    lambda x: 0.1 * x[0] ** 2 + 2 * x[1] ** 2,
    lambda x: np.stack([0.2 * x[0], 4 * x[1]]),
    start=(-5.0, -2.0), box=((-6.0, 6.0), (-3.0, 3.0)), minima=((0.0, 0.0),))

saddle = Objective(
    "saddle", r"$f(x) = x_1^2 - x_2^2$", 2,
    lambda x: x[0] ** 2 - x[1] ** 2,
    lambda x: np.stack([2 * x[0], -2 * x[1]]),
    # Just off the x2 = 0 ridge that leads into the saddle point (0, 0).
    start=(-1.5, 0.01), box=((-2.0, 2.0), (-2.0, 2.0)), minima=())

rosenbrock = Objective(
    "rosenbrock", r"$f(x) = (1 - x_1)^2 + 100 (x_2 - x_1^2)^2$", 2,
    lambda x: (1 - x[0]) ** 2 + 100 * (x[1] - x[0] ** 2) ** 2,
    lambda x: np.stack([-2 * (1 - x[0]) - 400 * x[0] * (x[1] - x[0] ** 2),
                        200 * (x[1] - x[0] ** 2)]),
    start=(-1.2, 1.0), box=((-2.0, 2.0), (-1.0, 3.0)), minima=((1.0, 1.0),))

FUNCTIONS_1D = (square, x_cos_pi_x)
FUNCTIONS_2D = (quadratic, ill_conditioned, saddle, rosenbrock)


# ---- data sets -------------------------------------------------------------------

@dataclass(frozen=True)
class Dataset:
    """A train/test split.  Classification: y holds class numbers; regression: targets (1-D or 2-D).

    load_dataset() makes them.

    Parameters
    ----------
    name : str
        The data set ('iris' or 'digits').
    task : {'classification', 'regression'}
        What y holds.
    X_train, y_train, X_test, y_test : numpy.ndarray
        The split.
    feature_names : tuple of str
        The columns of X.
    target_names : tuple of str
        Class names, or what the regression predicts.

    Examples
    --------
    >>> from fastoptim.demos.problems import load_dataset
    >>> iris = load_dataset("iris")
    >>> iris.n_features, iris.n_classes, iris.X_train.shape
    (4, 3, (112, 4))
    """
    name: str
    task: str
    X_train: Array
    y_train: Array
    X_test: Array
    y_test: Array
    feature_names: tuple[str, ...]
    target_names: tuple[str, ...]     # class names, or what the regression predicts

    @property
    def n_features(self) -> int:
        """The number of columns of X."""
        return int(self.X_train.shape[1])

    @property
    def n_classes(self) -> Optional[int]:
        """The number of classes (None for regression)."""
        return len(self.target_names) if self.task == "classification" else None


DATASETS = ("iris", "digits")


def load_dataset(name: str, task: str = "classification", *, test_size: float = 0.25, seed: Optional[int] = 0,
                 dtype: npt.DTypeLike = np.float64, standardize: bool = True) -> Dataset:
    """iris or digits from scikit-learn's bundled copies (no download), split and standardized.

    task='classification': X the features, y the class (0..k-1).
    task='regression': iris predicts petal length (cm) from the three other
    measurements; digits predicts the one-hot class indicators from the pixels
    (least-squares classification), so y has 10 columns.
    The split is stratified by class and reproducible from `seed`; features
    are standardized with the training set's mean and standard deviation.

    Parameters
    ----------
    name : {'iris', 'digits'}
        The data set.
    task : {'classification', 'regression'}, default 'classification'
        What y holds.
    test_size : float, default 0.25
        The fraction held out for testing, in (0, 1).
    seed : int or None, default 0
        The split's seed.
    dtype : {numpy.float32, numpy.float64}, default numpy.float64
        The dtype of X (and of regression targets).
    standardize : bool, default True
        Standardize the features with the training set's statistics.

    Returns
    -------
    Dataset
        The split.

    Raises
    ------
    ValueError
        An unknown name or task, or test_size outside (0, 1).
    TypeError
        A dtype other than float32 and float64.
    ImportError
        scikit-learn is not installed.

    Examples
    --------
    >>> import numpy as np
    >>> from fastoptim.demos.problems import load_dataset
    >>> digits = load_dataset("digits", "regression", dtype=np.float32)
    >>> digits.X_train.dtype, digits.y_train.shape[1]
    (dtype('float32'), 10)
    """
    if name not in DATASETS:
        raise ValueError(f"dataset must be one of {DATASETS}, got {name!r}")
    if task not in ("classification", "regression"):
        raise ValueError(f"task must be 'classification' or 'regression', got {task!r}")
    if not 0.0 < test_size < 1.0:
        raise ValueError(f"test_size must be a fraction in (0, 1), got {test_size!r}")
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64):
        raise TypeError(f"dtype must be float32 or float64, got {dtype}")
    try:
        from sklearn import datasets
        from sklearn.model_selection import train_test_split
    except ImportError:
        raise ImportError(f"the {name} data set comes from scikit-learn, which is not installed: "
                          "pip install 'fastoptim[datasets]' (or scikit-learn)") from None
    bunch = datasets.load_iris() if name == "iris" else datasets.load_digits()
    X, classes = bunch.data.astype(np.float64), bunch.target
    feature_names = tuple(bunch.feature_names)
    if task == "classification":
        y, target_names = classes, tuple(str(t) for t in bunch.target_names)
    elif name == "iris":
        target = feature_names.index("petal length (cm)")
        y, target_names = X[:, target].copy(), ("petal length (cm)",)
        X = np.delete(X, target, axis=1)
        feature_names = feature_names[:target] + feature_names[target + 1:]
    else:
        y = np.eye(len(bunch.target_names))[classes]
        target_names = tuple(f"is {t}" for t in bunch.target_names)
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=test_size, random_state=seed, stratify=classes)
    if standardize:
        mean, std = X_train.mean(axis=0), X_train.std(axis=0)
        std[std == 0] = 1.0  # constant pixels of digits stay 0
        X_train, X_test = (X_train - mean) / std, (X_test - mean) / std
    def as_float(a: Array) -> Array:
        return np.ascontiguousarray(a, dtype=dtype)
    if task == "regression":
        y_train, y_test = as_float(y_train), as_float(y_test)
    return Dataset(name, task, as_float(X_train), y_train, as_float(X_test), y_test,
                   feature_names, target_names)


# ---- models ----------------------------------------------------------------------------

def _batch(batch: tuple[Array, Array], n_features: int) -> tuple[Array, Array]:
    X, y = batch
    if X.ndim != 2 or X.shape[1] != n_features:
        raise ValueError(f"X must have shape (n_samples, {n_features}), got {X.shape}")
    if y.shape[0] != X.shape[0]:
        raise ValueError(f"X has {X.shape[0]} rows but y has {y.shape[0]}")
    if X.shape[0] == 0:
        raise ValueError("the batch is empty")
    return X, y


def _check_l2(l2: float) -> float:
    if not (isinstance(l2, (int, float)) and math.isfinite(l2) and l2 >= 0):
        raise ValueError(f"l2 must be a finite number >= 0, got {l2!r}")
    return float(l2)


_model_docs = fill(
    dtype_returns_params="""
        Parameters
        ----------
        dtype : dtype, default numpy.float64
            Their dtype.

        Returns
        -------
        dict
            ``{'W': ..., 'b': ...}``.""",
    params_X="""
        Parameters
        ----------
        params : dict
            ``{'W': ..., 'b': ...}``.
        X : numpy.ndarray
            Samples, one per row.""",
    params_batch="""
        Parameters
        ----------
        params : dict
            ``{'W': ..., 'b': ...}``.
        batch : tuple of numpy.ndarray
            ``(X, y)``.""",
    # ends inside Returns: each loss adds what its float is
    params_batch_returns_float="""
        Parameters
        ----------
        params : dict
            ``{'W': ..., 'b': ...}``.
        batch : tuple of numpy.ndarray
            ``(X, y)``.

        Returns
        -------
        float""",
    loss_and_grad_returns="""
        Returns
        -------
        tuple
            ``(loss, {'W': grad, 'b': grad})``, the grads of W's dtype.""",
)


class LinearRegression:
    """Least squares: loss = mean over samples of ||x W + b - y||^2 / 2 + l2 / 2 ||W||^2.

    params: {'W': (n_features,) or (n_features, n_outputs), 'b': () or (n_outputs,)}.

    Parameters
    ----------
    n_features : int
        The number of features.
    n_outputs : int or None, default None
        The number of targets (None: one, with 1-D y).
    l2 : float, default 0.0
        The L2 penalty on W, >= 0.

    Raises
    ------
    ValueError
        A bad l2, or a batch of the wrong shape (loss, loss_and_grad).

    Examples
    --------
    >>> import numpy as np
    >>> import fastoptim
    >>> from fastoptim import train
    >>> from fastoptim.demos.problems import LinearRegression
    >>> X = np.random.default_rng(0).standard_normal((64, 3)); y = X @ [1.0, 2.0, -1.0] + 0.5
    >>> model = LinearRegression(3)
    >>> params = model.init_params()
    >>> _ = train.fit(params, model.loss_and_grad, (X, y), fastoptim.Adam(params, lr=0.1), epochs=300,
    ...               progress=False)
    >>> np.round(params["W"], 2), np.round(model.solve(X, y)["W"], 2)
    (array([ 1.,  2., -1.]), array([ 1.,  2., -1.]))
    """

    def __init__(self, n_features: int, n_outputs: Optional[int] = None, l2: float = 0.0) -> None:
        self.n_features = int(n_features)
        self.n_outputs = None if n_outputs is None else int(n_outputs)
        self.l2 = _check_l2(l2)

    @_model_docs
    def init_params(self, dtype: npt.DTypeLike = np.float64) -> ModelParams:
        """Zero params.

        {{dtype_returns_params}}
        """
        shape: tuple[int, ...] = () if self.n_outputs is None else (self.n_outputs,)
        return {"W": np.zeros((self.n_features,) + shape, dtype=dtype), "b": np.zeros(shape, dtype=dtype)}

    @_model_docs
    def predict(self, params: Mapping[str, FloatArray], X: Array) -> Array:
        """The predictions x W + b.

        {{params_X}}

        Returns
        -------
        numpy.ndarray
            One prediction per row.
        """
        return X @ params["W"] + params["b"]

    @_model_docs
    def loss(self, params: Mapping[str, FloatArray], batch: tuple[Array, Array]) -> float:
        """The loss on a batch.

        {{params_batch_returns_float}}
            The mean squared error / 2 plus the penalty.
        """
        X, y = _batch(batch, self.n_features)
        residual = self.predict(params, X) - y
        return 0.5 * float(np.sum(residual * residual)) / len(X) + 0.5 * self.l2 * float(np.sum(params["W"] ** 2))

    @_model_docs
    def loss_and_grad(self, params: Mapping[str, FloatArray], batch: tuple[Array, Array]) -> tuple[float, ModelParams]:
        """The loss on a batch and its gradient, as fastoptim.train.fit's loss_and_grad.

        {{params_batch}}

        {{loss_and_grad_returns}}
        """
        X, y = _batch(batch, self.n_features)
        W = params["W"]
        residual = self.predict(params, X) - y
        n = len(X)
        loss = 0.5 * float(np.sum(residual * residual)) / n + 0.5 * self.l2 * float(np.sum(W * W))
        grad_W = X.T @ residual / n + self.l2 * W
        grad_b = np.asarray(residual.mean(axis=0), dtype=W.dtype)
        return loss, {"W": grad_W.astype(W.dtype, copy=False), "b": grad_b}

    def solve(self, X: Array, y: Array) -> ModelParams:
        """The exact minimizer (normal equations with the intercept unpenalized), for reference.

        Parameters
        ----------
        X : numpy.ndarray
            Samples, one per row.
        y : numpy.ndarray
            Targets.

        Returns
        -------
        dict
            ``{'W': ..., 'b': ...}``.
        """
        n = len(X)
        A = np.hstack([X, np.ones((n, 1))])
        penalty = np.diag(np.r_[np.full(X.shape[1], self.l2 * n), 0.0])
        coef = np.linalg.solve(A.T @ A + penalty, A.T @ y)
        return {"W": coef[:-1], "b": coef[-1]}


class SoftmaxRegression:
    """Multinomial logistic regression: mean cross-entropy of softmax(x W + b) + l2 / 2 ||W||^2.

    params: {'W': (n_features, n_classes), 'b': (n_classes,)}; y holds class numbers.

    Parameters
    ----------
    n_features : int
        The number of features.
    n_classes : int
        The number of classes, >= 2.
    l2 : float, default 0.0
        The L2 penalty on W, >= 0.

    Raises
    ------
    ValueError
        Fewer than 2 classes, a bad l2, or a batch of the wrong shape.

    Examples
    --------
    >>> import fastoptim
    >>> from fastoptim import train
    >>> from fastoptim.demos.problems import SoftmaxRegression, load_dataset
    >>> iris = load_dataset("iris")
    >>> model = SoftmaxRegression(iris.n_features, iris.n_classes)
    >>> params = model.init_params()
    >>> _ = train.fit(params, model.loss_and_grad, (iris.X_train, iris.y_train),
    ...               fastoptim.Adam(params, lr=0.05), epochs=20, batch_size=16, seed=0, progress=False)
    >>> model.accuracy(params, iris.X_test, iris.y_test) > 0.85
    True
    """

    def __init__(self, n_features: int, n_classes: int, l2: float = 0.0) -> None:
        self.n_features = int(n_features)
        self.n_classes = int(n_classes)
        if self.n_classes < 2:
            raise ValueError(f"n_classes must be >= 2, got {n_classes}")
        self.l2 = _check_l2(l2)

    @_model_docs
    def init_params(self, dtype: npt.DTypeLike = np.float64) -> ModelParams:
        """Zero params.

        {{dtype_returns_params}}
        """
        return {"W": np.zeros((self.n_features, self.n_classes), dtype=dtype),
                "b": np.zeros(self.n_classes, dtype=dtype)}

    @_model_docs
    def logits(self, params: Mapping[str, FloatArray], X: Array) -> Array:
        """The logits x W + b.

        {{params_X}}

        Returns
        -------
        numpy.ndarray
            Shape (n_samples, n_classes).
        """
        return X @ params["W"] + params["b"]

    @_model_docs
    def predict(self, params: Mapping[str, FloatArray], X: Array) -> Array:
        """The most likely class of each sample.

        {{params_X}}

        Returns
        -------
        numpy.ndarray of int
            One class per row.
        """
        return np.asarray(np.argmax(self.logits(params, X), axis=1))

    @_model_docs
    def accuracy(self, params: Mapping[str, FloatArray], X: Array, y: Array) -> float:
        """The fraction of samples whose class is predicted.

        {{params_X}}
        y : numpy.ndarray
            Their classes.

        Returns
        -------
        float
            In [0, 1].
        """
        return float(np.mean(self.predict(params, X) == y))

    def _log_probabilities(self, params: Mapping[str, FloatArray], X: Array) -> Array:
        z = self.logits(params, X)
        z = z - z.max(axis=1, keepdims=True)
        return np.asarray(z - np.log(np.exp(z).sum(axis=1, keepdims=True)))

    @_model_docs
    def loss(self, params: Mapping[str, FloatArray], batch: tuple[Array, Array]) -> float:
        """The loss on a batch.

        {{params_batch_returns_float}}
            The mean cross-entropy plus the penalty.
        """
        X, y = _batch(batch, self.n_features)
        log_p = self._log_probabilities(params, X)
        return (-float(log_p[np.arange(len(X)), y].mean())
                + 0.5 * self.l2 * float(np.sum(params["W"] ** 2)))

    @_model_docs
    def loss_and_grad(self, params: Mapping[str, FloatArray], batch: tuple[Array, Array]) -> tuple[float, ModelParams]:
        """The loss on a batch and its gradient, as fastoptim.train.fit's loss_and_grad.

        {{params_batch}}

        {{loss_and_grad_returns}}
        """
        X, y = _batch(batch, self.n_features)
        W = params["W"]
        n = len(X)
        log_p = self._log_probabilities(params, X)
        rows = np.arange(n)
        loss = -float(log_p[rows, y].mean()) + 0.5 * self.l2 * float(np.sum(W * W))
        error = np.exp(log_p)            # softmax probabilities, minus the one-hot targets:
        error[rows, y] -= 1.0
        grad_W = X.T @ error / n + self.l2 * W
        grad_b = error.mean(axis=0)
        return loss, {"W": grad_W.astype(W.dtype, copy=False), "b": grad_b.astype(W.dtype, copy=False)}
