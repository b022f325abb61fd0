"""fastoptim.train: batches, curriculum, early stopping, gradient noise and clipping, fit."""
import math
import warnings

import numpy as np
import pytest
from conftest import DTYPES, assert_unchanged, snapshot

import fastoptim
from fastoptim import train
from fastoptim._ext import runtime
from fastoptim._ext import train as train_kernels
from fastoptim.demos import problems


@pytest.fixture
def split_train_kernels():
    """Split even the smallest call across threads, so every boundary is exercised."""
    old = runtime._set_parallel_min_elements(0)
    yield
    runtime._set_parallel_min_elements(old)


def two_threads():
    if not runtime.OPENMP:
        pytest.fail("fastoptim was built without OpenMP: the thread-count tests need it")
    return fastoptim.num_threads(2)


def mixed_grads(seed=0, sizes=(1, 7, 4097, 33, 0, 1000)):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(n).astype(DTYPES[i % 2]) for i, n in enumerate(sizes)]


# ---- minibatches --------------------------------------------------------------------------

def test_minibatch_sizes_cover_every_sample_once():
    for batch_size, expected in ((None, [10]), (1, [1] * 10), (3, [3, 3, 3, 1]), (20, [10])):
        batches = train.minibatches(10, batch_size, seed=0)
        assert [len(b) for b in batches] == expected
        assert sorted(np.concatenate(batches)) == list(range(10))
    assert [len(b) for b in train.minibatches(10, 3, seed=0, drop_last=True)] == [3, 3, 3]
    assert len(train.minibatches(0, 4)) == 0 and list(train.minibatches(0, None)) == []
    batches = train.minibatches(10, 3, seed=0)
    assert np.array_equal(batches[-1], batches[3]) and len(batches[1:3]) == 2
    with pytest.raises(IndexError):
        batches[4]


def test_unshuffled_batches_are_slices_so_indexing_gives_views():
    batches = train.minibatches(10, 4, shuffle=False)
    assert list(batches) == [slice(0, 4), slice(4, 8), slice(8, 10)]
    X = np.arange(20.0).reshape(10, 2)
    assert np.shares_memory(X[batches[0]], X)


def test_shuffle_is_reproducible_per_epoch_and_differs_between_epochs():
    a = train.minibatches(100, 10, seed=3, epoch=2)
    b = train.minibatches(100, 10, seed=3, epoch=2)
    c = train.minibatches(100, 10, seed=3, epoch=3)
    d = train.minibatches(100, 10, seed=4, epoch=2)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(np.concatenate(a), np.concatenate(c))
    assert not np.array_equal(np.concatenate(a), np.concatenate(d))
    assert not np.array_equal(np.concatenate(a), np.arange(100))


def test_curriculum_shows_the_easiest_samples_first_and_grows():
    difficulty = np.random.default_rng(0).random(100)
    order = np.argsort(difficulty)
    pacing = train.linear_pacing(start_fraction=0.2, full_epoch=4)
    seen = []
    for epoch in range(6):
        batches = train.minibatches(100, 8, seed=1, epoch=epoch, order=order, pacing=pacing)
        visible = np.concatenate(batches)
        assert len(np.unique(visible)) == len(visible)
        seen.append(set(visible.tolist()))
    assert [len(s) for s in seen] == [20, 40, 60, 80, 100, 100]
    assert seen[0] == set(order[:20].tolist())
    assert all(seen[i] <= seen[i + 1] for i in range(5))
    unshuffled = train.minibatches(100, 8, shuffle=False, epoch=0, order=order, pacing=pacing)
    np.testing.assert_array_equal(np.concatenate(unshuffled), order[:20])


def test_pacing_functions():
    assert train.linear_pacing(0.5, 2)(0) == 0.5 and train.linear_pacing(0.5, 2)(1) == 0.75
    root = train.root_pacing(0.1, 10)
    assert root(0) == pytest.approx(0.1) and root(10) == 1.0
    assert root(5) == pytest.approx(math.sqrt(5 * (1 - 0.01) / 10 + 0.01))
    steps = train.step_pacing(0.25, step_epochs=2, increase=2)
    assert [steps(e) for e in range(6)] == [0.25, 0.25, 0.5, 0.5, 1.0, 1.0]
    with pytest.raises(ValueError, match="step_epochs must be a positive integer"):
        train.step_pacing(0.25, step_epochs=0)
    with pytest.raises(ValueError, match=r"start_fraction must be in \(0, 1\]"):
        train.linear_pacing(1.5)
    with pytest.raises(ValueError, match="start_fraction must be > 0"):
        train.root_pacing(0.0)


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(n_samples=10, batch_size=0), ValueError, "batch_size"),
    (dict(n_samples=10, batch_size=2.5), TypeError, "batch_size"),
    (dict(n_samples=-1), ValueError, "n_samples"),
    (dict(n_samples=10, order=[0, 10]), ValueError, "order holds indices"),
    (dict(n_samples=10, order=[1, 1]), ValueError, "more than once"),
    (dict(n_samples=10, order=[[0]]), ValueError, "1-D array"),
    (dict(n_samples=10, pacing=0.5), TypeError, "pacing must be a callable"),
    (dict(n_samples=10, pacing=lambda e: 0.0), ValueError, r"pacing\(0\) must be in \(0, 1\]"),
])
def test_minibatch_errors(kwargs, error, match):
    with pytest.raises(error, match=match):
        train.minibatches(**kwargs)


# ---- gradient noise ---------------------------------------------------------------------------

def test_noise_is_reproducible_and_depends_on_seed_and_step():
    def noise(seed, step):
        grads = [np.zeros(1000), np.zeros((10, 10), np.float32)]
        train.add_gradient_noise(grads, step, seed=seed)
        return grads

    a, b = noise(1, 5), noise(1, 5)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    for other in (noise(2, 5), noise(1, 6)):
        assert not np.array_equal(a[0], other[0]) and not np.array_equal(a[1], other[1])
    assert not np.array_equal(a[0][:100], a[1].ravel().astype(np.float64))  # streams differ per array


@pytest.mark.usefixtures("split_train_kernels")
def test_noise_is_identical_for_one_and_two_threads():
    grads1, grads2 = mixed_grads(0), mixed_grads(0)
    with fastoptim.num_threads(1):
        train.add_gradient_noise(grads1, 3, eta=0.5, seed=11)
    with two_threads():
        train.add_gradient_noise(grads2, 3, eta=0.5, seed=11)
    for x, y in zip(grads1, grads2):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(grads1[2], mixed_grads(0)[2])


def test_noise_of_an_element_does_not_depend_on_where_a_split_falls():
    # Element j of an array gets the same draw whether the call covers it alone or the whole array.
    whole = np.zeros(101)
    train.add_gradient_noise([whole], 0, eta=1.0, gamma=0.0, seed=5)
    longer = np.zeros(300)
    train.add_gradient_noise([longer], 0, eta=1.0, gamma=0.0, seed=5)
    np.testing.assert_array_equal(whole, longer[:101])


@pytest.mark.parametrize("dtype", DTYPES)
def test_noise_has_the_right_mean_and_variance(dtype):
    n, step, eta, gamma = 400_000, 9, 0.3, 0.55
    grad = np.full(n, 2.0, dtype=dtype)
    std = train.add_gradient_noise({"g": grad}, step, eta=eta, gamma=gamma, seed=123)
    assert std == pytest.approx(math.sqrt(eta / (1 + step) ** gamma))
    z = (grad.astype(np.float64) - 2.0) / std
    # Bounds of 6 standard errors: a wrong variance or mean fails, chance does not.
    assert abs(z.mean()) < 6 / math.sqrt(n)
    assert abs(z.var() - 1) < 6 * math.sqrt(2 / n)
    assert abs(np.mean(z ** 3)) < 6 * math.sqrt(15 / n)           # symmetric
    assert abs(np.mean(z ** 4) - 3) < 6 * math.sqrt(96 / n)       # Gaussian tails
    assert abs(np.mean(np.abs(z) < 1) - 0.682689) < 6 * math.sqrt(0.25 / n)
    # Neighbouring draws are uncorrelated.
    assert abs(np.mean(z[:-1] * z[1:])) < 6 / math.sqrt(n)


def test_normals_are_box_muller_of_philox_words():
    # The kernel's series for log, sin and cos against NumPy's, on the same random words.
    first, quads, stream, step, key = 2**33 + 5, 16, 3, 7, (11, 13)
    z = train_kernels._standard_normals(first, quads, stream, step, *key)
    words = np.array([train_kernels.philox4x32_10((q & 0xFFFFFFFF, q >> 32, stream, step), key)
                      for q in range(first, first + quads)], dtype=np.float64).reshape(-1, 2)
    radius = np.sqrt(-2 * np.log((words[:, 0] + 1) / 2**32))
    angle = 2 * np.pi * words[:, 1] / 2**32
    exact = np.stack([radius * np.cos(angle), radius * np.sin(angle)], axis=1).ravel()
    np.testing.assert_allclose(z, exact, rtol=0, atol=1e-12)
    assert set((words[:, 1] // 2**30).astype(int)) == {0, 1, 2, 3}  # every quadrant of the angle was met


def test_noise_defaults_follow_neelakantan():
    assert train.noise_std(0) == pytest.approx(0.1)
    assert train.noise_std(99) == pytest.approx(math.sqrt(0.01 / 100 ** 0.55))


def test_philox_known_answers():
    # Random123's known-answer vectors for philox4x32-10.
    assert train_kernels.philox4x32_10((0, 0, 0, 0), (0, 0)) == (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)
    assert train_kernels.philox4x32_10((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2) == (
        0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)
    assert train_kernels.philox4x32_10((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344),
                                        (0xA4093822, 0x299F31D0)) == (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)


# ---- norms and clipping ------------------------------------------------------------------------

def numpy_norm(grads, p):
    flat = np.concatenate([g.astype(np.float64).ravel() for g in grads])
    if p == math.inf:
        return np.abs(flat).max()
    return float(np.sum(np.abs(flat) ** p) ** (1 / p))


@pytest.mark.parametrize("p", [2.0, 1.0, 3.0, 0.5, math.inf])
def test_grad_norm_equals_numpy(p):
    grads = mixed_grads(1)
    assert train.grad_norm(grads, p) == pytest.approx(numpy_norm(grads, p), rel=1e-12)
    assert train.grad_norm({"a": grads[0], "rest": grads[1:]}, p) == train.grad_norm(grads, p)


@pytest.mark.usefixtures("split_train_kernels")
@pytest.mark.parametrize("p", [2.0, 1.0, 3.0, math.inf])
def test_grad_norm_is_identical_for_one_and_two_threads(p):
    grads = mixed_grads(2, sizes=(5, 100_003, 17, 64_000))
    with fastoptim.num_threads(1):
        one = train.grad_norm(grads, p)
    with two_threads():
        two = train.grad_norm(grads, p)
    assert one == two  # bit for bit


def test_grad_norm_survives_overflow_and_underflow_and_reports_nonfinite():
    assert train.grad_norm([np.array([3e200]), np.array([4e200])]) == pytest.approx(5e200, rel=1e-15)
    assert train.grad_norm([np.array([3e-200, 4e-200])]) == pytest.approx(5e-200, rel=1e-15)
    assert train.grad_norm([np.array([3e-310, 4e-310])]) == pytest.approx(5e-310, rel=1e-9)
    assert train.grad_norm([np.zeros(5)]) == 0.0 and train.grad_norm([]) == 0.0
    assert math.isnan(train.grad_norm([np.array([1.0, np.nan, np.inf])]))
    assert train.grad_norm([np.array([1.0, -np.inf])]) == math.inf
    assert math.isnan(train.grad_norm([np.array([np.nan, 1.0])], math.inf))
    assert train.grad_norm([np.array([np.inf, 1.0])], math.inf) == math.inf


@pytest.mark.usefixtures("split_train_kernels")
@pytest.mark.parametrize("p", [2.0, 1.0, math.inf])
def test_clip_grad_norm_equals_the_numpy_computation(p):
    grads = mixed_grads(3)
    expected_norm = numpy_norm(grads, p)
    max_norm = expected_norm / 3
    original = snapshot(grads)
    with two_threads():
        total = train.clip_grad_norm(grads, max_norm, norm_type=p)
    assert total == pytest.approx(expected_norm, rel=1e-12)
    coefficient = max_norm / (total + 1e-6)  # torch.nn.utils.clip_grad_norm_'s rule
    expected = [g * g.dtype.type(coefficient) for g in original]
    for g, e in zip(grads, expected):
        np.testing.assert_array_equal(g, e)
    assert train.grad_norm(grads, p) == pytest.approx(max_norm, rel=1e-5)


def test_clip_grad_norm_matches_torch(torch):
    grads = mixed_grads(4, sizes=(10, 300, 7))
    grads = [g.astype(np.float64) for g in grads]
    tensors = [torch.tensor(g) for g in grads]
    for t in tensors:
        t.grad = t.clone()
    torch_norm = torch.nn.utils.clip_grad_norm_(tensors, 2.0).item()
    ours = train.clip_grad_norm(grads, 2.0)
    assert ours == pytest.approx(torch_norm, rel=1e-14)
    for g, t in zip(grads, tensors):
        np.testing.assert_allclose(g, t.grad.numpy(), rtol=1e-14)


def test_clip_grad_norm_below_the_bound_changes_nothing_and_nonfinite_is_left_or_raised():
    grads = mixed_grads(5)
    before = snapshot(grads)
    train.clip_grad_norm(grads, 1e9)
    assert_unchanged(before, grads)
    bad = [np.array([1.0, np.nan])]
    assert math.isnan(train.clip_grad_norm(bad, 1.0))
    assert bad[0][0] == 1.0
    with pytest.raises(RuntimeError, match="cannot be clipped"):
        train.clip_grad_norm(bad, 1.0, error_if_nonfinite=True)


@pytest.mark.usefixtures("split_train_kernels")
def test_clip_grad_value():
    grads = mixed_grads(6)
    grads[2][:3] = [np.nan, np.inf, -np.inf]
    expected = [np.clip(g, -0.5, 0.5) for g in grads]
    with two_threads():
        train.clip_grad_value(grads, 0.5)
    for g, e in zip(grads, expected):
        np.testing.assert_array_equal(g, e)  # NaN stays NaN, like np.clip and torch.clamp


def test_grads_are_finite():
    assert train.grads_are_finite(mixed_grads(0))
    for bad in (np.nan, np.inf, -np.inf):
        grads = mixed_grads(0)
        grads[3][-1] = bad
        assert not train.grads_are_finite(grads)


@pytest.mark.parametrize("call, error, match", [
    (lambda g: train.clip_grad_norm(g, -1.0), ValueError, "max_norm must be >= 0"),
    (lambda g: train.clip_grad_norm(g, 1.0, norm_type=0), ValueError, "norm_type must be > 0"),
    (lambda g: train.clip_grad_value(g, "1"), TypeError, "clip_value must be a real number"),
    (lambda g: train.add_gradient_noise(g, -1), ValueError, "step must be >= 0"),
    (lambda g: train.add_gradient_noise(g, 0, eta=-1.0), ValueError, "eta must be >= 0"),
    (lambda g: train.add_gradient_noise(g, 0, seed=-3), ValueError, "seed must be >= 0"),
    (lambda g: train.clip_grad_value(g + [np.zeros(4, np.int64)], 1.0), TypeError,
     r"grads\[2\] has dtype int64"),
    (lambda g: train.clip_grad_value(g + [np.zeros((4, 4))[:, 0]], 1.0), ValueError,
     r"grads\[2\] is not C-contiguous"),
    (lambda g: train.clip_grad_value({"w": g[0], "v": [1.0]}, 1.0), TypeError,
     r"grads\['v'\]\[0\] must be a numpy.ndarray"),
    (lambda g: train.clip_grad_value([g[0], g[0]], 1.0), ValueError, r"grads\[1\] shares memory with grads\[0\]"),
])
def test_errors_name_the_argument_and_write_nothing(call, error, match):
    grads = [np.linspace(-3, 3, 10), np.linspace(-2, 2, 6).astype(np.float32)]
    before = snapshot(grads)
    with pytest.raises(error, match=match):
        call(grads)
    assert_unchanged(before, grads)


def test_read_only_grads_are_refused():
    g = np.ones(4)
    g.flags.writeable = False
    with pytest.raises(ValueError, match=r"grads\[0\] is read-only"):
        train.clip_grad_value([g], 0.5)
    assert train.grad_norm([g]) == 2.0  # reading is fine


# ---- early stopping -----------------------------------------------------------------------------

def test_early_stopping_waits_patience_epochs_and_keeps_the_best():
    params = {"w": np.zeros(3)}
    stopper = train.EarlyStopping(patience=2, min_delta=0.01)
    metrics = [1.0, 0.5, 0.495, 0.6, 0.7]  # 0.495 is not better than 0.5 by min_delta
    stops = []
    for epoch, metric in enumerate(metrics):
        params["w"][:] = epoch
        stops.append(stopper(metric, params))
    assert stops == [False, False, False, True, True]
    assert stopper.best == 0.5 and stopper.best_epoch == 1
    assert stopper.restore(params)
    np.testing.assert_array_equal(params["w"], [1.0, 1.0, 1.0])


def test_early_stopping_max_mode_nan_and_no_restore():
    stopper = train.EarlyStopping(patience=1, mode="max", restore_best=False)
    assert not stopper(0.5, [np.zeros(1)])
    assert stopper(float("nan"), [np.zeros(1)])
    assert stopper.best == 0.5
    assert not stopper.restore([np.zeros(1)])
    with pytest.raises(ValueError, match="mode must be 'min' or 'max'"):
        train.EarlyStopping(3, mode="lowest")
    with pytest.raises(ValueError, match="patience must be a positive integer"):
        train.EarlyStopping(0)


# ---- fit ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def iris_regression():
    data = problems.load_dataset("iris", "regression")
    model = problems.LinearRegression(data.n_features)
    return data, model, model.solve(data.X_train, data.y_train)


@pytest.mark.parametrize("batch_size, lr, epochs, tolerance", [
    (None, 0.3, 150, 1e-3),   # batch gradient descent
    (1, 0.005, 20, 0.05),     # stochastic gradient descent
    (16, 0.05, 40, 0.05),     # mini-batch
])
def test_bgd_sgd_and_minibatch_sgd_converge_on_linear_regression(iris_regression, batch_size, lr, epochs, tolerance):
    data, model, exact = iris_regression
    params = model.init_params()
    optimizer = fastoptim.SGD(params, lr=lr)
    history = train.fit(params, model.loss_and_grad, (data.X_train, data.y_train), optimizer,
                        epochs=epochs, batch_size=batch_size, seed=0, progress=False)
    best = model.loss(exact, (data.X_train, data.y_train))
    final = model.loss(params, (data.X_train, data.y_train))
    assert final < best * (1 + tolerance)
    np.testing.assert_allclose(params["W"], exact["W"], atol=20 * tolerance)
    assert history.loss[-1] < history.loss[0] / 5
    assert len(history.loss) == len(history.lr) == len(history.time) == epochs
    assert history.lr == [lr] * epochs
    steps_per_epoch = 1 if batch_size is None else math.ceil(len(data.X_train) / batch_size)
    assert history.steps == steps_per_epoch * epochs and history.skipped_steps == 0


def test_fit_is_reproducible_with_a_seed(iris_regression):
    data, model, _ = iris_regression
    results = []
    for _ in range(2):
        params = model.init_params()
        train.fit(params, model.loss_and_grad, (data.X_train, data.y_train), fastoptim.Adam(params, lr=0.01),
                  epochs=3, batch_size=8, seed=7, grad_noise=True, clip_norm=1.0, progress=False)
        results.append(params["W"].copy())
    np.testing.assert_array_equal(*results)


def test_fit_stops_early_and_restores_the_best_params(iris_regression):
    data, model, _ = iris_regression
    params = model.init_params()
    seen = []

    def validation(p):
        # A metric that gets worse after epoch 3, whatever the params do.
        seen.append(p["W"].copy())
        return [5.0, 4.0, 3.0, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0][len(seen) - 1]

    stopper = train.EarlyStopping(patience=3)
    history = train.fit(params, model.loss_and_grad, (data.X_train, data.y_train), fastoptim.SGD(params, lr=0.01),
                        epochs=10, batch_size=16, seed=0, validation=validation, early_stopping=stopper,
                        progress=False)
    assert len(history.loss) == 7 and history.stopped_early and history.best_epoch == 3
    assert history.val == [5.0, 4.0, 3.0, 2.0, 2.5, 3.0, 3.5]
    assert history.restored
    np.testing.assert_array_equal(params["W"], seen[3])
    assert not np.array_equal(seen[3], seen[6])


def test_fit_skips_nonfinite_steps_and_changes_nothing():
    params = [np.ones(5)]
    optimizer = fastoptim.Adam(params, lr=0.1)
    calls = []

    def loss_and_grad(p, batch):
        calls.append(1)
        grad = np.full(5, 0.5)
        if len(calls) % 2 == 0:
            grad[2] = np.nan if len(calls) % 4 == 0 else np.inf
        return 1.0, [grad]

    # Compare with a run that only sees the finite grads.
    reference = [np.ones(5)]
    ref_opt = fastoptim.Adam(reference, lr=0.1)
    for _ in range(3):
        ref_opt.step([np.full(5, 0.5)])
    with pytest.warns(RuntimeWarning, match="skipped 3 of 6 steps"):
        history = train.fit(params, loss_and_grad, np.zeros((6, 1)), optimizer, epochs=1, batch_size=1,
                            progress=False)
    assert history.skipped == [3] and history.steps == 3
    np.testing.assert_array_equal(params[0], reference[0])
    assert int(optimizer.state[0]["step"]) == 3
    np.testing.assert_array_equal(optimizer.state[0]["exp_avg"], ref_opt.state[0]["exp_avg"])


@pytest.mark.parametrize("with_clip_norm", [False, True])
def test_fit_skip_with_and_without_clipping_leaves_params_untouched(with_clip_norm):
    params = [np.ones(3)]
    optimizer = fastoptim.SGD(params, lr=0.1, momentum=0.9)
    bad = lambda p, batch: (0.0, [np.array([1.0, np.nan, 1.0])])  # noqa: E731
    with pytest.warns(RuntimeWarning):
        history = train.fit(params, bad, np.zeros((4, 1)), optimizer, epochs=2, batch_size=2, progress=False,
                            clip_norm=1.0 if with_clip_norm else None, clip_value=0.5, grad_noise=True)
    np.testing.assert_array_equal(params[0], np.ones(3))
    assert optimizer.state == {} and history.skipped == [2, 2] and history.steps == 0


def test_fit_applies_clipping_and_noise_as_the_standalone_functions_do():
    grad_value = np.array([3.0, -4.0, 12.0])
    params = [np.zeros(3)]
    seen = []

    class Recorder(fastoptim.SGD):
        def step(self, grads):
            seen.append(grads[0].copy())
            super().step(grads)

    optimizer = Recorder(params, lr=0.0)
    history = train.fit(params, lambda p, b: (0.0, [grad_value.copy()]), np.zeros((2, 1)), optimizer, epochs=1,
                        batch_size=1, clip_value=5.0, clip_norm=2.0, seed=3, progress=False)
    expected = grad_value * (2.0 / (13.0 + 1e-6))  # the norm is taken before the value clipping
    np.testing.assert_allclose(seen[0], np.clip(expected, -5, 5), rtol=1e-15)
    assert history.grad_norm == [pytest.approx(13.0)]


def test_fit_history_callback_and_progress_bar(iris_regression, capsys):
    pytest.importorskip("tqdm")
    data, model, _ = iris_regression
    params = model.init_params()
    records = []
    history = train.fit(params, model.loss_and_grad, (data.X_train, data.y_train), fastoptim.SGD(params, lr=0.05),
                        epochs=5, batch_size=32, validation=lambda p: model.loss(p, (data.X_test, data.y_test)),
                        callback=lambda epoch, record: records.append(record) or epoch == 2, progress=True)
    assert len(records) == 3 and history.epoch == [0, 1, 2] and history.stopped_early
    assert records[-1]["loss"] == history.loss[-1] and records[-1]["val"] == history.val[-1]
    assert all(t > 0 for t in history.time) and history.lr == [0.05] * 3
    assert "fit" in capsys.readouterr().err


def test_fit_errors_come_before_any_step(iris_regression):
    data, model, _ = iris_regression
    params = model.init_params()
    optimizer = fastoptim.SGD(params, lr=0.1)
    fit = lambda **kw: train.fit(**{**dict(params=params, loss_and_grad=model.loss_and_grad,  # noqa: E731
                                           data=(data.X_train, data.y_train), optimizer=optimizer,
                                           epochs=2, progress=False), **kw})
    before = snapshot(params.values())
    cases = [
        (dict(epochs=0), ValueError, "epochs must be a positive integer"),
        (dict(batch_size=-2), ValueError, "batch_size"),
        (dict(data=(data.X_train, data.y_train[:5])), ValueError, "different numbers of rows"),
        (dict(params={"W": np.zeros_like(params["W"]), "b": params["b"]}), ValueError,
         "params must be the arrays the optimizer updates"),
        (dict(clip_norm=-1.0), ValueError, "clip_norm must be >= 0"),
        (dict(grad_noise={"sigma": 1}), ValueError, "grad_noise must be None, True or a dict"),
        (dict(early_stopping=5), TypeError, "early_stopping must be an EarlyStopping"),
        (dict(optimizer=object()), TypeError, "optimizer must be a fastoptim optimizer"),
        (dict(pacing=lambda e: 2.0), ValueError, r"pacing\(0\) must be in \(0, 1\]"),
    ]
    for kwargs, error, match in cases:
        with pytest.raises(error, match=match):
            fit(**kwargs)
    assert_unchanged(before, params.values())
    assert optimizer.state == {}


def test_fit_with_curriculum_sees_easy_samples_first():
    seen = []

    def loss_and_grad(p, batch):
        seen.append(batch[0].ravel().copy())
        return 0.0, [np.zeros(1)]

    X = np.arange(10.0).reshape(10, 1)
    order = np.arange(10)[::-1]  # "easiest" = largest value
    params = [np.zeros(1)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        train.fit(params, loss_and_grad, (X,), fastoptim.SGD(params, lr=0.1), epochs=2, batch_size=3,
                  order=order, pacing=train.linear_pacing(0.3, 1), shuffle=False, progress=False)
    np.testing.assert_array_equal(np.concatenate(seen[:1]), [9, 8, 7])
    np.testing.assert_array_equal(np.concatenate(seen[1:]), np.arange(10)[::-1])


@pytest.mark.usefixtures("split_train_kernels")
def test_gradient_functions_allocate_nothing_of_the_grads_size():
    import tracemalloc
    grads = {"w": np.ones(1_000_000), "v": np.ones(300_000, np.float32)}  # 9.2 MB

    def run():
        train.clip_grad_norm(grads, 1.0)
        train.clip_grad_value(grads, 1e-4)
        train.add_gradient_noise(grads, 5, seed=1)
        train.grads_are_finite(grads)
        train.grad_norm(grads, 3.0)

    with two_threads():
        run()  # warm up: imports, caches
        tracemalloc.start()
        try:
            run()
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert peak < 64_000, f"{peak} bytes allocated"


@pytest.mark.usefixtures("split_train_kernels", "split_everything")
def test_fit_gives_the_same_params_for_one_and_two_threads(iris_regression):
    data, model, _ = iris_regression
    results = []
    for threads in (1, 2):
        params = model.init_params()
        with (fastoptim.num_threads(1) if threads == 1 else two_threads()):
            train.fit(params, model.loss_and_grad, (data.X_train, data.y_train), fastoptim.Adam(params, lr=0.01),
                      epochs=2, batch_size=8, seed=5, grad_noise={"eta": 0.1}, clip_norm=0.5, clip_value=0.2,
                      progress=False)
        results.append(params)
    for name in ("W", "b"):
        np.testing.assert_array_equal(results[0][name], results[1][name])


def test_fit_steps_a_closure_driven_optimizer_once_per_batch():
    """LBFGS: one step per batch, its closure first giving fit's evaluation, then evaluating that
    batch anew; a batch with a non-finite grad is skipped before the step."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((64, 3))
    y = X @ np.array([1.0, -2.0, 0.5])
    evaluations = []

    def loss_and_grad(params, batch):
        (w,), (Xb, yb) = params, batch
        evaluations.append(len(yb))
        err = Xb @ w - yb
        return float(err @ err) / len(yb), [2 * Xb.T @ err / len(yb)]
    params = [np.zeros(3)]
    optimizer = fastoptim.LBFGS(params, max_iter=4, line_search_fn="strong_wolfe")
    history = train.fit(params, loss_and_grad, (X, y), optimizer, epochs=3, batch_size=32, seed=0, progress=False)
    np.testing.assert_allclose(params[0], [1.0, -2.0, 0.5], atol=1e-4)
    assert history.steps == 6 and len(evaluations) > 2 * history.steps  # the steps evaluated again
    assert optimizer.state[0]["func_evals"] == len(evaluations)  # fit's evaluation is the step's first

    before = params[0].copy()
    with pytest.warns(RuntimeWarning, match="skipped 2 of 2 steps"):
        history = train.fit(params, lambda p, b: (math.nan, [np.full(3, math.nan)]), (X, y), optimizer, epochs=1,
                            batch_size=32, progress=False)
    assert history.skipped == [2] and np.array_equal(params[0], before)
