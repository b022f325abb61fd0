"""fastoptim.demos.problems: values and gradients (checked numerically), data sets and models."""
import numpy as np
import pytest

import fastoptim
from fastoptim import train
from fastoptim.demos import problems

ALL_FUNCTIONS = problems.FUNCTIONS_1D + problems.FUNCTIONS_2D


def numerical_gradient(f, x, h=1e-6):
    """Central differences of a scalar function of an array, coordinate by coordinate."""
    grad = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        step = np.zeros_like(x)
        step[i] = h
        grad[i] = (f(x + step) - f(x - step)) / (2 * h)
    return grad


@pytest.mark.parametrize("fn", ALL_FUNCTIONS, ids=lambda f: f.name)
def test_gradient_matches_central_differences(fn):
    rng = np.random.default_rng(0)
    (lo, hi), *_ = fn.box
    for _ in range(5):
        x = rng.uniform(lo, hi, size=fn.dim) if fn.dim == 1 else np.array(
            [rng.uniform(*bounds) for bounds in fn.box])
        np.testing.assert_allclose(fn.grad(x), numerical_gradient(lambda z: float(fn(z)), x),
                                   rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("fn", ALL_FUNCTIONS, ids=lambda f: f.name)
def test_functions_broadcast_over_grids_and_have_zero_gradient_at_their_minima(fn):
    grid = np.stack(np.meshgrid(*[np.linspace(lo, hi, 7) for lo, hi in fn.box]))
    values = fn(grid)
    assert values.shape == grid.shape[1:]
    assert fn.grad(grid).shape == grid.shape
    point = grid[(slice(None),) + (3,) * fn.dim]
    assert values[(3,) * fn.dim] == pytest.approx(float(fn(point)))
    for minimum in fn.minima:
        np.testing.assert_allclose(fn.grad(np.array(minimum)), 0.0, atol=2e-3)


def test_known_values():
    assert problems.square(3.0) == 9.0
    assert problems.x_cos_pi_x(1.0) == pytest.approx(-1.0)
    assert problems.quadratic([1.0, 1.0]) == 3.0
    assert problems.ill_conditioned([1.0, 1.0]) == pytest.approx(2.1)
    assert problems.saddle([1.0, 2.0]) == -3.0
    assert problems.rosenbrock([1.0, 1.0]) == 0.0 and problems.rosenbrock([0.0, 0.0]) == 1.0
    with pytest.raises(ValueError, match="2 coordinate"):
        problems.rosenbrock([1.0, 2.0, 3.0])
    # The local minimum of x cos(pi x) is a minimum, and above the global one on [-1, 2].
    local, best = problems.x_cos_pi_x.minima
    assert problems.x_cos_pi_x(local[0]) < problems.x_cos_pi_x(local[0] + 0.05)
    assert problems.x_cos_pi_x(local[0]) < problems.x_cos_pi_x(local[0] - 0.05)
    assert problems.x_cos_pi_x(best[0]) < problems.x_cos_pi_x(local[0])


def test_gradient_descent_from_the_start_falls_into_the_local_minimum():
    x = np.array(problems.x_cos_pi_x.start)
    optimizer = fastoptim.SGD([x], lr=0.05)
    for _ in range(200):
        optimizer.step(problems.x_cos_pi_x.loss_and_grad([x])[1])
    assert x[0] == pytest.approx(problems.x_cos_pi_x.minima[0][0], abs=1e-3)


@pytest.mark.parametrize("name, n_features, n_classes", [("iris", 4, 3), ("digits", 64, 10)])
def test_load_dataset_classification(name, n_features, n_classes):
    data = problems.load_dataset(name)
    assert data.n_features == n_features and data.n_classes == n_classes
    assert data.X_train.flags.c_contiguous and data.X_train.dtype == np.float64
    assert len(data.X_test) == pytest.approx(0.25 * (len(data.X_train) + len(data.X_test)), abs=1)
    np.testing.assert_allclose(data.X_train.mean(axis=0), 0.0, atol=1e-12)
    assert set(np.unique(data.y_train)) == set(range(n_classes))
    # Stratified: every class keeps about its share in the test set.
    counts = np.bincount(data.y_test, minlength=n_classes)
    assert counts.min() >= 0.8 * counts.max() - 2
    again = problems.load_dataset(name, dtype=np.float32)
    assert again.X_train.dtype == np.float32
    np.testing.assert_allclose(again.X_train, data.X_train, rtol=1e-6, atol=1e-6)


def test_load_dataset_regression_targets():
    iris = problems.load_dataset("iris", "regression")
    assert iris.n_features == 3 and iris.y_train.ndim == 1 and "petal length (cm)" not in iris.feature_names
    assert 1.0 <= iris.y_train.min() and iris.y_train.max() <= 7.0
    digits = problems.load_dataset("digits", "regression")
    assert digits.y_train.shape[1] == 10
    np.testing.assert_array_equal(digits.y_train.sum(axis=1), 1.0)


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(name="mnist"), ValueError, "dataset must be one of"),
    (dict(name="iris", task="ranking"), ValueError, "task must be"),
    (dict(name="iris", test_size=1.5), ValueError, "test_size"),
    (dict(name="iris", dtype=np.int32), TypeError, "dtype must be float32 or float64"),
])
def test_load_dataset_errors(kwargs, error, match):
    with pytest.raises(error, match=match):
        problems.load_dataset(**kwargs)


def check_model_gradient(model, params, batch):
    loss, grads = model.loss_and_grad(params, batch)
    assert loss == pytest.approx(model.loss(params, batch), rel=1e-12)
    for name, p in params.items():
        assert grads[name].shape == p.shape and grads[name].dtype == p.dtype

        def loss_of(value, name=name):
            return model.loss({**params, name: value}, batch)

        np.testing.assert_allclose(grads[name], numerical_gradient(loss_of, p.copy()), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("l2", [0.0, 0.3])
def test_linear_regression_gradients(l2):
    rng = np.random.default_rng(1)
    X, y, Y = rng.standard_normal((20, 3)), rng.standard_normal(20), rng.standard_normal((20, 2))
    single = problems.LinearRegression(3, l2=l2)
    params = {"W": rng.standard_normal(3), "b": np.array(0.7)}
    check_model_gradient(single, params, (X, y))
    multi = problems.LinearRegression(3, n_outputs=2, l2=l2)
    check_model_gradient(multi, {"W": rng.standard_normal((3, 2)), "b": rng.standard_normal(2)}, (X, Y))
    # solve() is the minimizer: the gradient vanishes there.
    _, grads = single.loss_and_grad(single.solve(X, y), (X, y))
    np.testing.assert_allclose(grads["W"], 0.0, atol=1e-12)
    np.testing.assert_allclose(grads["b"], 0.0, atol=1e-12)


@pytest.mark.parametrize("l2", [0.0, 0.1])
def test_softmax_regression_gradients(l2):
    rng = np.random.default_rng(2)
    X, y = rng.standard_normal((30, 4)), rng.integers(0, 3, 30)
    model = problems.SoftmaxRegression(4, 3, l2=l2)
    params = {"W": rng.standard_normal((4, 3)), "b": rng.standard_normal(3)}
    check_model_gradient(model, params, (X, y))
    # Huge logits stay finite (log-sum-exp is shifted).
    loss, grads = model.loss_and_grad({"W": params["W"] * 1e4, "b": params["b"]}, (X, y))
    assert np.isfinite(loss) and all(np.isfinite(g).all() for g in grads.values())


def test_softmax_regression_matches_scikit_learn_cross_entropy():
    from sklearn.metrics import log_loss
    rng = np.random.default_rng(3)
    X, y = rng.standard_normal((40, 5)), rng.integers(0, 4, 40)
    model = problems.SoftmaxRegression(5, 4)
    params = {"W": rng.standard_normal((5, 4)), "b": rng.standard_normal(4)}
    z = model.logits(params, X)
    probabilities = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    assert model.loss(params, (X, y)) == pytest.approx(log_loss(y, probabilities, labels=range(4)), rel=1e-12)


def test_models_train_in_float32():
    data = problems.load_dataset("iris", dtype=np.float32)
    model = problems.SoftmaxRegression(data.n_features, data.n_classes)
    params = model.init_params(np.float32)
    train.fit(params, model.loss_and_grad, (data.X_train, data.y_train), fastoptim.Adam(params, lr=0.05),
              epochs=20, batch_size=16, seed=0, progress=False)
    assert params["W"].dtype == np.float32
    assert model.accuracy(params, data.X_test, data.y_test) >= 0.9


def test_model_errors():
    model = problems.SoftmaxRegression(4, 3)
    params = model.init_params()
    with pytest.raises(ValueError, match=r"X must have shape \(n_samples, 4\)"):
        model.loss_and_grad(params, (np.zeros((5, 3)), np.zeros(5, int)))
    with pytest.raises(ValueError, match="X has 5 rows but y has 4"):
        model.loss_and_grad(params, (np.zeros((5, 4)), np.zeros(4, int)))
    with pytest.raises(ValueError, match="n_classes must be >= 2"):
        problems.SoftmaxRegression(4, 1)
    with pytest.raises(ValueError, match="l2 must be"):
        problems.LinearRegression(4, l2=-1.0)
