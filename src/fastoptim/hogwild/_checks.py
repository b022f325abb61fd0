"""Argument checks of the Hogwild! estimators, all in one place.

Each raises before fit writes anything, with a message naming the argument.
"""
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from .. import _validation

LEARNING_RATES = ("constant", "optimal", "invscaling", "epoch_decay")


def check_number(name: str, value: Any, low: float | None = None, high: float | None = None, low_open: bool = False,
                 high_open: bool = False, integer: bool = False, allow_none: bool = False) -> None:
    """A finite real number (an integer if `integer`) in the bounds (None: unbounded; closed
    unless *_open); None passes if allow_none.  The checks are fastoptim._validation's."""
    if value is None and allow_none:
        return
    if not (_validation.is_integer(value) if integer else _validation.is_real(value)):
        raise TypeError(f"{name} must be {'an integer' if integer else 'a real number'}"
                        f"{' or None' if allow_none else ''}, got {value!r}")
    _validation.real(value, name, low=-math.inf if low is None else low, high=math.inf if high is None else high,
                     low_open=low_open, high_open=high_open)


def check_flag(name: str, value: Any) -> None:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a bool, got {value!r}")


def check_params(estimator: Any, losses: tuple[str, ...]) -> None:
    """The hyperparameters of a HogwildSGDClassifier or HogwildSGDRegressor."""
    cls = type(estimator).__name__
    if estimator.loss not in losses:
        raise ValueError(f"The loss {estimator.loss!r} is not supported by {cls}; choose from {losses}")
    if estimator.penalty not in ("l2", None):
        raise ValueError(f"penalty={estimator.penalty!r} is not supported: Hogwild! keeps updates sparse "
                         "with an L2 penalty ('l2') or none (None)")
    if estimator.learning_rate not in LEARNING_RATES:
        raise ValueError(f"learning_rate={estimator.learning_rate!r} is not supported; "
                         f"choose from {LEARNING_RATES}")
    check_number("alpha", estimator.alpha, low=0.0)
    if estimator.learning_rate == "optimal" and estimator.alpha == 0:
        raise ValueError("alpha must be > 0 since learning_rate is 'optimal'. alpha is used to "
                         "compute the optimal learning rate.")
    check_number("eta0", estimator.eta0, low=0.0, low_open=estimator.learning_rate != "optimal")
    check_number("power_t", estimator.power_t)
    check_number("beta", estimator.beta, low=0.0, high=1.0, low_open=True)
    check_number("epsilon", estimator.epsilon, low=0.0)
    check_number("max_iter", estimator.max_iter, low=1, integer=True)
    check_number("n_iter_no_change", estimator.n_iter_no_change, low=1, integer=True)
    check_number("tol", estimator.tol, allow_none=True)
    check_number("validation_fraction", estimator.validation_fraction, low=0.0, high=1.0, low_open=True,
                 high_open=True)
    if not isinstance(estimator.average, (bool, np.bool_)):
        check_number("average", estimator.average, low=0, integer=True)
    if not isinstance(estimator.verbose, (bool, np.bool_)):
        check_number("verbose", estimator.verbose, low=0, integer=True)
    for name in ("shuffle", "fit_intercept", "early_stopping", "warm_start"):
        check_flag(name, getattr(estimator, name))
    if hasattr(estimator, "class_weight"):
        check_class_weight(estimator.class_weight)


def check_class_weight(class_weight: Any) -> None:
    """None, 'balanced' or a dict {label: weight} of finite non-negative weights."""
    if class_weight is None or (isinstance(class_weight, str) and class_weight == "balanced"):
        return
    if not isinstance(class_weight, Mapping):
        raise ValueError(f"class_weight must be None, 'balanced' or a dict {{label: weight}}, got {class_weight!r}")
    for label, weight in class_weight.items():
        check_number(f"class_weight[{label!r}]", weight, low=0.0)


def check_sample_weight(sample_weight: npt.ArrayLike | None, n_samples: int) -> npt.NDArray[np.float64] | None:
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


def check_init(coef_init: npt.ArrayLike | None, intercept_init: npt.ArrayLike | None, n_models: int, n_features: int,
               dtype: npt.DTypeLike, names: Sequence[str] = ("coef_init", "intercept_init")
               ) -> tuple[npt.NDArray[Any], npt.NDArray[np.float64]]:
    """fit's coef_init and intercept_init as new arrays (coef: (n_models, n_features) of dtype;
    intercept: (n_models,) float64, rounded to dtype first as scikit-learn's); None gives zeros.
    names: what to call them in errors.

    As in scikit-learn, one model (two classes, or regression) takes any coef_init of
    n_features values ((n_features,) or (1, n_features)) and an intercept_init of shape
    () or (1,); one-vs-rest takes (n_classes, n_features) and (n_classes,).
    """
    coef_name, intercept_name = names
    coef = np.zeros((n_models, n_features), dtype=dtype)
    intercept = np.zeros(n_models)
    if coef_init is not None:
        given = np.asarray(coef_init)
        if given.dtype.kind not in "biuf":
            raise TypeError(f"{coef_name} must hold real numbers, got dtype {given.dtype}")
        expected = (n_features,) if n_models == 1 else (n_models, n_features)
        shape = given.reshape(-1).shape if n_models == 1 else given.shape
        if shape != expected:
            raise ValueError(f"{coef_name} has shape {given.shape}, but the data need "
                             f"{(n_models, n_features) if n_models > 1 else (n_features,)}")
        coef[...] = given.reshape(coef.shape)
        if not np.isfinite(coef).all():
            raise ValueError(f"{coef_name} contains NaN or infinity")
    if intercept_init is not None:
        given = np.asarray(intercept_init)
        if given.dtype.kind not in "biuf":
            raise TypeError(f"{intercept_name} must hold real numbers, got dtype {given.dtype}")
        if given.shape not in ([(), (1,)] if n_models == 1 else [(n_models,)]):
            raise ValueError(f"{intercept_name} has shape {given.shape}, but the data need {(n_models,)}")
        intercept[...] = given.astype(dtype).reshape(n_models)
        if not np.isfinite(intercept).all():
            raise ValueError(f"{intercept_name} contains NaN or infinity")
    return coef, intercept
