"""The rules torch.optim lacks (Lion), against plain float64 transcriptions of issue 12's
formulas, through the NumPy class (hence the kernel; the kernel equals the reference bit
for bit in test_kernels.py); their hyperparameter bounds in torch's Adam-family words."""
import numpy as np
import pytest

import fastoptim

SHAPES = [(), (1,), (7,), (3, 5), (2, 3, 4), (1000,)]
STEPS = 20


def lion_transcribed(p, g, m, lr, beta1, beta2, wd):
    c = beta1 * m + (1 - beta1) * g
    p = p * (1 - lr * wd)
    p = p - lr * np.sign(c)
    m = beta2 * m + (1 - beta2) * g
    return p, m


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("options", [{}, dict(lr=0.01, betas=(0.5, 0.8), weight_decay=0.3),
                                     dict(weight_decay=0.1, maximize=True)])
def test_lion_matches_issue_formula(options, dtype):
    hyper = dict(lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0, maximize=False) | options  # the issue's defaults
    rng = np.random.default_rng(5)
    params = [rng.standard_normal(shape).astype(dtype) for shape in SHAPES]
    expected = [(p.astype(np.float64), np.zeros(p.shape)) for p in params]
    optimizer = fastoptim.Lion(params, **options)
    for step in range(STEPS):
        grads = [rng.standard_normal(p.shape).astype(dtype) for p in params]
        if step == 0:
            for g in grads:
                g.flat[:1] = 0.0  # c = 0 there: sign(0) = 0
        optimizer.step(grads)
        expected = [lion_transcribed(p, -g.astype(np.float64) if hyper["maximize"] else g.astype(np.float64), m,
                                     hyper["lr"], *hyper["betas"], hyper["weight_decay"])
                    for (p, m), g in zip(expected, grads)]
    tolerance = 1e-13 if dtype == np.float64 else 1e-5
    for i, (p, (expected_p, expected_m)) in enumerate(zip(params, expected)):
        np.testing.assert_allclose(p, expected_p, rtol=tolerance, atol=tolerance, err_msg=f"params[{i}]")
        np.testing.assert_allclose(optimizer.state[i]["exp_avg"], expected_m, rtol=tolerance, atol=tolerance,
                                   err_msg=f"params[{i}] exp_avg")
        assert set(optimizer.state[i]) == {"exp_avg"}  # lion-pytorch's state: no step count


def test_lion_sign_of_nan_is_zero():
    """torch.sign's convention (lion-pytorch uses it): a NaN momentum leaves the param where it is."""
    param = np.array([1.0, 2.0, 3.0])
    fastoptim.functional.lion(param, np.array([np.nan, 1.0, -1.0]), np.zeros(3), step=1, lr=0.5)
    np.testing.assert_array_equal(param, [1.0, 1.5, 3.5])


@pytest.mark.parametrize("options, message", [
    (dict(lr=-1.0), "Invalid learning rate: "),
    (dict(betas=(1.0, 0.5)), "Invalid beta parameter at index 0: "),
    (dict(betas=(0.5, float("nan"))), "Invalid beta parameter at index 1: "),
    (dict(weight_decay=-0.5), "Invalid weight_decay value: "),
])
def test_lion_bounds_in_torchs_words(options, message):
    with pytest.raises(ValueError) as error:
        fastoptim.Lion([np.zeros(2)], **options)
    assert str(error.value).startswith(message)
    fastoptim.Lion([np.zeros(2)], lr=0.0, betas=(0.0, 0.0), weight_decay=0.0)  # the bounds themselves pass
