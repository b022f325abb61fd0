"""Adafactor against torch.optim.Adafactor (torch 2.13): factored state over the last two
dimensions, eps1=None as the dtype's epsilon, relative steps, update clipping, weight decay;
its state_dict both ways; its factored sums the same on every thread count and SIMD level."""
import numpy as np
import pytest

import fastoptim
from fastoptim.rules.adafactor import reference

SHAPES = [(), (1,), (7,), (33,), (5, 3), (4, 9), (2, 3, 5), (3, 1, 17)]
STEPS = 30
OPTIONS = [
    {},
    dict(eps=(1e-4, 1e-2), d=2.0),
    dict(lr=0.3, weight_decay=0.1, beta2_decay=-0.5),
    dict(maximize=True, weight_decay=0.05, eps=(None, 0.5)),
]


def _problem(dtype, seed=3):
    rng = np.random.default_rng(seed)
    params = [rng.standard_normal(shape).astype(dtype) for shape in SHAPES]
    grads = [[(rng.standard_normal(shape) * 10.0 ** rng.integers(-2, 2)).astype(dtype) for shape in SHAPES]
             for _ in range(STEPS)]
    return params, grads


def _torch_run(torch, params, grads, options):
    tensors = [torch.tensor(p) for p in params]
    optimizer = torch.optim.Adafactor(tensors, **options)
    for step_grads in grads:
        for t, g in zip(tensors, step_grads):
            t.grad = torch.tensor(g)
        optimizer.step()
    return [t.numpy() for t in tensors], optimizer


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("options", OPTIONS, ids=["defaults", "eps1-d", "wd-lr", "maximize-eps2"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
def test_matches_torch(torch, simd_level, split_everything, dtype, options, threads):
    """float64 within 1e-10 of torch.optim.Adafactor after 30 steps (it is ~1e-15: the sums are
    ordered differently, nothing else).  float32 within 2e-5 relative: torch sums the row and
    column means and the two RMS norms in float32 (and as a norm then squared), we in double, so
    the float32 results differ by a few roundings of those sums every step."""
    params, grads = _problem(dtype)
    expected, torch_optimizer = _torch_run(torch, params, grads, options)
    ours = [p.copy() for p in params]
    with fastoptim.num_threads(threads):
        optimizer = fastoptim.Adafactor(ours, **options)
        for step_grads in grads:
            optimizer.step(step_grads)
    tolerance = dict(rtol=1e-10, atol=1e-10) if dtype == np.float64 else dict(rtol=2e-5, atol=2e-6)
    for i, (p, e) in enumerate(zip(ours, expected)):
        np.testing.assert_allclose(p, e, err_msg=f"params[{i}] of shape {p.shape}", **tolerance)
        for name, value in torch_optimizer.state[torch_optimizer.param_groups[0]["params"][i]].items():
            if name == "step":
                assert int(optimizer.state[i]["step"]) == STEPS
                continue
            assert optimizer.state[i][name].shape == tuple(value.shape), name
            np.testing.assert_allclose(optimizer.state[i][name], value.numpy(), err_msg=f"state[{i}][{name!r}]",
                                       **tolerance)
        assert set(optimizer.state[i]) == set(torch_optimizer.state[torch_optimizer.param_groups[0]["params"][i]])


# Shapes whose rows and columns cross thread splits, SIMD tails and the factored sums' tiles
# (bands of rows, strips of columns, groups of four rows): one row, one column, fewer rows than
# threads, 3-D batches, wide and tall matrices.
FACTORED_SHAPES = [(37, 41), (3, 130, 9), (300, 300), (1, 5000), (257, 1), (2, 2051), (3, 5, 1031),
                   (4, 1, 7), (1, 1), (5, 2, 3, 4), (1030, 3)]


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("maximize, grad_scale", [(False, None), (True, 8.0)], ids=["plain", "maximize-scaled"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
def test_factored_sums_do_not_depend_on_threads_or_simd(simd_level, split_everything, dtype, maximize, grad_scale,
                                                        threads):
    """The kernel equals the reference bit for bit, for 1, 2 and 3 threads and every SIMD level,
    on matrices whose rows and columns cross thread splits and SIMD tails."""
    shapes = FACTORED_SHAPES
    params = [np.random.default_rng(1).standard_normal(s).astype(dtype) for s in shapes]
    with fastoptim.num_threads(threads):
        optimizer = fastoptim.Adafactor(params, weight_decay=0.01, maximize=maximize)
        for step in range(3):
            optimizer.step([np.random.default_rng(step).standard_normal(s).astype(dtype) for s in shapes],
                           grad_scale=grad_scale)
    got = params + [optimizer.state[i][k] for i in range(len(shapes)) for k in ("row_var", "col_var")]
    params = [np.random.default_rng(1).standard_normal(s).astype(dtype) for s in shapes]
    state = [{"row_var": np.zeros(s[:-1] + (1,), dtype), "col_var": np.zeros(s[:-2] + (1, s[-1]), dtype)}
             for s in shapes]
    for step in range(3):
        for p, st, s in zip(params, state, shapes):
            g = np.random.default_rng(step).standard_normal(s).astype(dtype)
            reference(p, g, st, step=step + 1, grad_scale=grad_scale, lr=0.01, maximize=maximize, beta2_decay=-0.8,
                      eps1=None, eps2=1e-3, d=1.0, weight_decay=0.01)
    expected = params + [st[k] for st in state for k in ("row_var", "col_var")]
    for i, (a, b) in enumerate(zip(got, expected)):
        np.testing.assert_array_equal(a, b, err_msg=f"array {i}")


@pytest.fixture(params=["one-wave", "waves-of-the-largest"])
def sweep_waves(request):
    """The factored sums of all tensors in one parallel region per sweep (the default scratch
    budget holds them all), or in waves no bigger than the largest tensor's scratch (budget 0)."""
    from fastoptim._ext import step
    old = step._set_sweep_scratch_budget(1 << 20 if request.param == "one-wave" else 0)
    yield request.param
    step._set_sweep_scratch_budget(old)


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
def test_factored_sums_in_waves_with_missing_grads(simd_level, split_everything, sweep_waves, dtype, threads):
    """Tensors whose sweeps run together or in waves, some of them without a grad at a step: the
    kernel equals the reference bit for bit, and a param without a grad is left as it was."""
    shapes = FACTORED_SHAPES
    without_grad = {1: {0, 4}, 2: {2, len(shapes) - 1}}
    params = [np.random.default_rng(1).standard_normal(s).astype(dtype) for s in shapes]

    def grads(step):
        return [None if i in without_grad.get(step, ()) else np.random.default_rng(step).standard_normal(s).astype(dtype)
                for i, s in enumerate(shapes)]

    with fastoptim.num_threads(threads):
        optimizer = fastoptim.Adafactor(params, weight_decay=0.01)
        for step in range(4):
            before = [p.copy() for p in params]
            optimizer.step(grads(step))
            for i in without_grad.get(step, ()):
                np.testing.assert_array_equal(params[i], before[i], err_msg=f"params[{i}] without a grad")
    expected = [np.random.default_rng(1).standard_normal(s).astype(dtype) for s in shapes]
    state = [{"row_var": np.zeros(s[:-1] + (1,), dtype), "col_var": np.zeros(s[:-2] + (1, s[-1]), dtype)}
             for s in shapes]
    counts = [0] * len(shapes)
    for step in range(4):
        for i, g in enumerate(grads(step)):
            if g is not None:
                counts[i] += 1
                reference(expected[i], g, state[i], step=counts[i], grad_scale=None, lr=0.01, maximize=False,
                          beta2_decay=-0.8, eps1=None, eps2=1e-3, d=1.0, weight_decay=0.01)
    for i in range(len(shapes)):
        np.testing.assert_array_equal(params[i], expected[i], err_msg=f"params[{i}] of shape {shapes[i]}")
        for k in ("row_var", "col_var"):
            np.testing.assert_array_equal(optimizer.state[i][k], state[i][k], err_msg=f"{k} of params[{i}]")


def _clamp_problem(dtype, shapes, steps=3):
    """Grads with zero rows and columns and values over six decades: with eps1 = 0.05 (a floor
    of 2.5e-3 on v) some elements take torch's clamped formula, the rest the factored one, in
    the same SIMD registers."""
    grads = []
    for step in range(steps):
        rng = np.random.default_rng(10 + step)
        step_grads = []
        for s in shapes:
            g = rng.standard_normal(s) * 10.0 ** rng.integers(-3, 3, size=s)
            g[..., 1, :] = 0.0  # a zero row: its row_var stays 0
            g[..., :, 2] = 0.0  # a zero column
            step_grads.append(g.astype(dtype))
        grads.append(step_grads)
    return grads


# Rows of many strips of the factored sums (the last one narrower), cut mid-row by thread splits
# and by the passes' blocks; a batch; small matrices.
STRIP_SHAPES = [(3, 16384 + 37), (2, 2, 8192 + 19), (5, 7), (3, 3, 33)]


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
def test_factored_update_takes_the_clamp_and_wide_rows_alike_everywhere(simd_level, split_everything, dtype, threads):
    """The factored u (a per-row times a per-column factor, torch's clamped formula where the
    clamp applies) equals the reference bit for bit at every SIMD level and thread count, where
    both formulas meet in one register and where a row spans many strips."""
    grads = _clamp_problem(dtype, STRIP_SHAPES)
    ours = [np.random.default_rng(1).standard_normal(s).astype(dtype) for s in STRIP_SHAPES]
    with fastoptim.num_threads(threads):
        optimizer = fastoptim.Adafactor(ours, eps=(0.05, 1e-3), weight_decay=0.01)
        for step_grads in grads:
            optimizer.step(step_grads)
    params = [np.random.default_rng(1).standard_normal(s).astype(dtype) for s in STRIP_SHAPES]
    state = [{"row_var": np.zeros(s[:-1] + (1,), dtype), "col_var": np.zeros(s[:-2] + (1, s[-1]), dtype)}
             for s in STRIP_SHAPES]
    clamped = 0
    for step, step_grads in enumerate(grads):
        for p, st, g in zip(params, state, step_grads):
            reference(p, g, st, step=step + 1, grad_scale=None, lr=0.01, maximize=False, beta2_decay=-0.8,
                      eps1=0.05, eps2=1e-3, d=1.0, weight_decay=0.01)
            v = st["row_var"] * st["col_var"] / max(st["row_var"].mean(axis=-2, keepdims=True).max(), 0.05)
            clamped += int((v < 0.05 ** 2).sum())
    assert 0 < clamped < sum(p.size for p in params) * len(grads) // 2  # both formulas taken
    for i, (a, b) in enumerate(zip(ours, params)):
        np.testing.assert_array_equal(a, b, err_msg=f"params[{i}]")


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
def test_factored_update_matches_torch_across_the_clamp(torch, dtype):
    """Where the clamp applies to some elements only, the factored u stays within torch's
    tolerances: float64 1e-10, float32 2e-5 relative (see test_matches_torch)."""
    shapes = [(6, 40), (2, 9, 17)]
    grads = _clamp_problem(dtype, shapes, steps=10)
    params = [np.random.default_rng(2).standard_normal(s).astype(dtype) for s in shapes]
    expected, _ = _torch_run(torch, params, grads, dict(eps=(0.05, 1e-3)))
    ours = [p.copy() for p in params]
    optimizer = fastoptim.Adafactor(ours, eps=(0.05, 1e-3))
    for step_grads in grads:
        optimizer.step(step_grads)
    tolerance = dict(rtol=1e-10, atol=1e-10) if dtype == np.float64 else dict(rtol=2e-5, atol=2e-6)
    for i, (p, e) in enumerate(zip(ours, expected)):
        np.testing.assert_allclose(p, e, err_msg=f"params[{i}]", **tolerance)


def test_factored_update_spreads_nan_as_torch_does():
    """A NaN grad element makes the whole factored step NaN, as torch's (through its row's and
    column's factors, and the norms)."""
    param = np.ones((4, 5))
    grad = np.full((4, 5), 0.5)
    grad[1, 2] = np.nan
    optimizer = fastoptim.Adafactor([param])
    optimizer.step([grad])
    assert np.isnan(param).all()
    expected, state = np.ones((4, 5)), {"row_var": np.zeros((4, 1)), "col_var": np.zeros((1, 5))}
    reference(expected, grad, state, step=1, grad_scale=None, lr=0.01, maximize=False, beta2_decay=-0.8,
              eps1=None, eps2=1e-3, d=1.0, weight_decay=0.0)
    assert np.isnan(expected).all()


@pytest.mark.parametrize("direction", ["torch to fastoptim", "fastoptim to torch"])
def test_state_dict_round_trips_with_torch(torch, direction):
    """A checkpoint of either continues in the other as it would have in itself."""
    import fastoptim.torch as fot
    params, grads = _problem(np.float64, seed=8)
    first, second = (torch.optim.Adafactor, fot.Adafactor) if direction == "torch to fastoptim" else \
        (fot.Adafactor, torch.optim.Adafactor)
    options = dict(lr=0.05, weight_decay=0.01, eps=(1e-5, 1e-3))
    runs = {}
    for resumed_in in (first, second):
        tensors = [torch.tensor(p) for p in params]
        optimizer = first(tensors, **options)
        for step_grads in grads[:10]:
            for t, g in zip(tensors, step_grads):
                t.grad = torch.tensor(g)
            optimizer.step()
        saved = optimizer.state_dict()
        if first is torch.optim.Adafactor:
            assert sorted(saved["state"][4]) == ["col_var", "row_var", "step"]
            assert tuple(saved["state"][4]["row_var"].shape) == (5, 1)
            assert tuple(saved["state"][6]["col_var"].shape) == (2, 1, 5)
            assert sorted(saved["state"][2]) == ["step", "variance"]
        resumed = resumed_in(tensors, **options)
        resumed.load_state_dict(saved)
        for step_grads in grads[10:]:
            for t, g in zip(tensors, step_grads):
                t.grad = torch.tensor(g)
            resumed.step()
        runs[resumed_in] = [t.numpy().copy() for t in tensors], resumed.state_dict()
    (same, same_state), (other, other_state) = runs[first], runs[second]
    for i, (a, b) in enumerate(zip(same, other)):
        np.testing.assert_allclose(b, a, rtol=1e-10, atol=1e-10, err_msg=f"params[{i}]")
    for key, entry in same_state["state"].items():
        assert sorted(entry) == sorted(other_state["state"][key])
        for name, value in entry.items():
            assert tuple(value.shape) == tuple(other_state["state"][key][name].shape)
            assert value.dtype == other_state["state"][key][name].dtype, (key, name)
            np.testing.assert_allclose(other_state["state"][key][name].numpy(), value.numpy(), rtol=1e-10, atol=1e-12)


def test_numpy_state_dict_loads_into_torch_and_back(torch):
    params, grads = _problem(np.float64, seed=9)
    ours = [p.copy() for p in params]
    optimizer = fastoptim.Adafactor(ours)
    for step_grads in grads[:5]:
        optimizer.step(step_grads)
    tensors = [torch.tensor(p) for p in ours]
    theirs = torch.optim.Adafactor(tensors)
    saved = optimizer.state_dict()
    assert saved["state"][4]["row_var"].shape == (5, 1) and saved["state"][2]["variance"].shape == (7,)
    saved["state"] = {i: {k: torch.tensor(float(v)) if k == "step" else torch.from_numpy(v.copy())
                          for k, v in entry.items()} for i, entry in saved["state"].items()}
    theirs.load_state_dict(saved)
    again = fastoptim.Adafactor([p.copy() for p in ours])
    again.load_state_dict(theirs.state_dict())
    for step_grads in grads[5:]:
        for t, g in zip(tensors, step_grads):
            t.grad = torch.tensor(g)
        theirs.step()
        optimizer.step(step_grads)
    for i, (p, t) in enumerate(zip(ours, tensors)):
        np.testing.assert_allclose(p, t.numpy(), rtol=1e-10, atol=1e-10, err_msg=f"params[{i}]")
    assert again.state[4]["row_var"].shape == (5, 1)


def test_functional_face_checks_the_factored_state():
    param, grad = np.ones((4, 3)), np.ones((4, 3))
    with pytest.raises(ValueError, match="row_var is required when the param has 2 dimensions or more"):
        fastoptim.functional.adafactor(param, grad, step=1)
    with pytest.raises(ValueError, match=r"col_var has shape \(4, 1\); expected \(1, 3\)"):
        fastoptim.functional.adafactor(param, grad, np.zeros((4, 1)), np.zeros((4, 1)), step=1)
    np.testing.assert_array_equal(param, 1.0)  # nothing written
    row_var, col_var = np.zeros((4, 1)), np.zeros((1, 3))
    fastoptim.functional.adafactor(param, grad, row_var, col_var, step=1)
    expected, state = np.ones((4, 3)), {"row_var": np.zeros((4, 1)), "col_var": np.zeros((1, 3))}
    fastoptim.reference.adafactor(expected, grad, state["row_var"], state["col_var"], step=1)
    np.testing.assert_array_equal(param, expected)
    np.testing.assert_array_equal(row_var, state["row_var"])
    vector, variance = np.ones(5), np.zeros(5)
    fastoptim.functional.adafactor(vector, np.ones(5), variance=variance, step=1)
    assert (vector < 1).all() and (variance == 1).all()


@pytest.mark.parametrize("options, message", [
    (dict(lr=-1.0), "Learning rate should be >= 0 but is: -1.0"),
    (dict(beta2_decay=0.5), "beta2_decay should be <= 0 but is: 0.5"),
    (dict(eps=(-1.0, 1e-3)), "epsilon1 should be >= 0 but is: -1.0"),
    (dict(eps=(None, -1.0)), "epsilon2 should be >= 0 but is: -1.0"),
    (dict(d=0.5), "Clipping threshold d should be >= 1 but is: 0.5"),
    (dict(weight_decay=-0.1), "weight_decay should be >= 0 but is: -0.1"),
])
def test_bounds_in_torchs_words(torch, options, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        torch.optim.Adafactor([torch.zeros(2)], **options)
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        fastoptim.Adafactor([np.zeros(2)], **options)


def test_sharded_strategies_refuse_it():
    """ZeRO's and the parameter server's shards cut tensors: a per-tensor RMS would be a shard's."""
    from fastoptim.distributed.zero import _per_tensor
    assert _per_tensor(fastoptim.Adafactor) == "2 passes over each tensor"
