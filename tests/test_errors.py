"""Bad input gets a clear error naming the argument, the param and the problem,
and a failed step leaves every param and state array untouched."""
import math
import re

import numpy as np
import pytest

from fastoptim import SGD, Adadelta, Adagrad, Adam, AdamW, RMSprop, functional
from fastoptim._registry import SPECS

from conftest import assert_unchanged, snapshot

BAD_NUMBERS = [-1.0, math.nan, math.inf]


@pytest.mark.parametrize("bad", BAD_NUMBERS)
@pytest.mark.parametrize("cls, name, label", [
    (SGD, "lr", "learning rate"), (SGD, "momentum", "momentum"), (SGD, "weight_decay", "weight_decay"),
    (Adagrad, "lr", "learning rate"), (Adagrad, "lr_decay", "lr_decay"), (Adagrad, "eps", "epsilon"),
    (Adagrad, "weight_decay", "weight_decay"), (Adagrad, "initial_accumulator_value", "initial_accumulator_value"),
    (RMSprop, "lr", "learning rate"), (RMSprop, "alpha", "alpha"), (RMSprop, "eps", "epsilon"),
    (RMSprop, "momentum", "momentum"), (RMSprop, "weight_decay", "weight_decay"),
    (Adadelta, "lr", "learning rate"), (Adadelta, "rho", "rho"), (Adadelta, "eps", "epsilon"),
    (Adadelta, "weight_decay", "weight_decay"),
    (Adam, "lr", "learning rate"), (Adam, "eps", "epsilon"), (Adam, "weight_decay", "weight_decay"),
    (AdamW, "lr", "learning rate"), (AdamW, "eps", "epsilon"), (AdamW, "weight_decay", "weight_decay"),
])
def test_invalid_hyperparameter_at_construction(cls, name, label, bad):
    # torch's text first ("Invalid momentum value: -1.0"), then ours
    with pytest.raises(ValueError, match=rf"^Invalid {label}( value)?: {re.escape(str(bad))} \(defaults\); {name} must be"):
        cls([np.zeros(2)], **{name: bad})


@pytest.mark.parametrize("betas, index", [((1.0, 0.9), 0), ((-0.1, 0.9), 0), ((0.9, 1.0), 1),
                                          ((0.9, math.nan), 1)])
@pytest.mark.parametrize("cls", [Adam, AdamW])
def test_invalid_betas(cls, betas, index):
    with pytest.raises(ValueError, match=f"Invalid beta parameter at index {index}"):
        cls([np.zeros(2)], betas=betas)


def test_other_invalid_hyperparameters():
    with pytest.raises(ValueError, match="Invalid rho"):
        Adadelta([np.zeros(2)], rho=1.5)
    with pytest.raises(ValueError, match="Nesterov momentum requires a momentum"):
        SGD([np.zeros(2)], nesterov=True)
    with pytest.raises(ValueError, match="Nesterov momentum requires .* zero dampening"):
        SGD([np.zeros(2)], momentum=0.9, dampening=0.1, nesterov=True)
    with pytest.raises(TypeError, match="betas"):
        Adam([np.zeros(2)], betas=0.9)
    with pytest.raises(TypeError, match="Invalid learning rate: '0.1' .*lr must be a real number"):
        Adam([np.zeros(2)], lr="0.1")
    with pytest.raises(TypeError, match="amsgrad"):
        Adam([np.zeros(2)], amsgrad="yes")
    with pytest.raises(ValueError, match=r"^Invalid learning rate: -1 \(param_groups\[1\]\); lr must be"):
        Adam([{"params": [np.zeros(2)]}, {"params": [np.zeros(2)], "lr": -1}])
    with pytest.raises(ValueError, match="unknown hyperparameters"):
        Adam([np.zeros(2)], **{}).add_param_group({"params": [np.zeros(1)], "momentum": 0.9})


def test_numpy_scalars_are_accepted():
    p = np.zeros(3, np.float32)
    opt = Adam([p], lr=np.float32(0.1), betas=(np.float64(0.9), np.float32(0.99)), eps=np.float64(1e-8),
               weight_decay=np.int64(0), amsgrad=np.bool_(True))
    opt.step([np.ones(3, np.float32)])
    functional.sgd(p, np.ones(3, np.float32), step=np.int64(1), lr=np.float16(0.5))
    assert np.all(p != 0)


def test_bad_hyperparameter_set_between_steps_is_caught_before_writing():
    p = np.ones(3)
    opt = Adam([p])
    opt.step([np.ones(3)])
    opt.param_groups[0]["lr"] = -0.5
    before = snapshot([p, *opt.state[0].values()])
    with pytest.raises(ValueError, match=r"learning rate.*param_groups\[0\]"):
        opt.step([np.ones(3)])
    assert_unchanged(before, [p, *opt.state[0].values()])


def test_bad_params_at_construction():
    with pytest.raises(TypeError, match="params must be a list"):
        Adam(np.zeros(3))
    with pytest.raises(ValueError, match="empty parameter list"):
        Adam([])
    with pytest.raises(TypeError, match=r"params\[1\] has dtype int64"):
        Adam([np.zeros(2), np.zeros(2, dtype=np.int64)])
    with pytest.raises(TypeError, match=r"params\[0\] has dtype complex128"):
        Adam([np.zeros(2, dtype=complex)])
    with pytest.raises(TypeError, match=r"params\[0\] must be a numpy.ndarray.*list"):
        Adam([[1.0, 2.0]])
    with pytest.raises(ValueError, match=r"params\[0\] is not C-contiguous.*ascontiguousarray"):
        Adam([np.zeros((4, 4))[:, 1]])
    ro = np.zeros(3)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match=r"params\['w'\] is read-only"):
        Adam({"w": ro})
    shared = np.zeros(6)
    with pytest.raises(ValueError, match=r"params\[1\] shares memory with params\[0\]"):
        Adam([shared[:4], shared[2:]])


def make(n_params=4, size=5):
    rng = np.random.default_rng(0)
    params = [rng.standard_normal(size) for _ in range(n_params)]
    opt = Adam(params, lr=0.1, amsgrad=True)
    opt.step([np.ones(size)] * n_params)
    opt.step([np.ones(size)] * n_params)
    return params, opt


def everything(params, opt):
    return params + [v for s in opt.state.values() for v in s.values()]


def noncontiguous():
    return np.zeros((5, 2))[:, 0]


def wrong_byte_order():
    return np.zeros(5, dtype=">f8")


@pytest.mark.parametrize("make_bad, error, message", [
    (lambda p, o: np.ones(4), ValueError, r"grads\[3\] has shape \(4,\) but params\[3\] has shape \(5,\)"),
    (lambda p, o: np.ones((5, 1)), ValueError, r"grads\[3\] has shape \(5, 1\)"),
    (lambda p, o: np.ones(5, np.float32), TypeError, r"grads\[3\] has dtype float32 but params\[3\] has dtype float64"),
    (lambda p, o: np.ones(5, np.int64), TypeError, r"grads\[3\] has dtype int64"),
    (lambda p, o: np.ones(5, complex), TypeError, r"grads\[3\] has dtype complex128"),
    (lambda p, o: [1.0] * 5, TypeError, r"grads\[3\] must be a numpy.ndarray.*got a list"),
    (lambda p, o: 1.0, TypeError, r"grads\[3\] must be a numpy.ndarray.*got a float"),
    (lambda p, o: noncontiguous(), ValueError, r"grads\[3\] is not C-contiguous.*np.ascontiguousarray\(grads\)"),
    (lambda p, o: wrong_byte_order(), ValueError, r"grads\[3\] is byte-swapped"),
    (lambda p, o: p[3], ValueError, r"grads\[3\] shares memory with params\[3\]"),
    (lambda p, o: p[0], ValueError, r"grads\[3\] shares memory with params\[0\]"),
    (lambda p, o: o.state[1]["exp_avg_sq"], ValueError, r"grads\[3\] shares memory with params\[1\] or its state"),
])
def test_bad_last_grad_changes_nothing(make_bad, error, message):
    params, opt = make()
    grads = [np.ones(5) for _ in params[:-1]] + [make_bad(params, opt)]
    before = snapshot(everything(params, opt))
    steps = [int(s["step"]) for s in opt.state.values()]
    with pytest.raises(error, match=message):
        opt.step(grads)
    assert_unchanged(before, everything(params, opt))
    assert [int(s["step"]) for s in opt.state.values()] == steps
    opt.step([np.ones(5) for _ in params])  # and the optimizer still works


def test_grads_that_do_not_match_in_count_or_structure():
    params, opt = make()
    before = snapshot(everything(params, opt))
    with pytest.raises(ValueError, match="got 3 grads for 4 params"):
        opt.step([np.ones(5)] * 3)
    with pytest.raises(TypeError, match="grads must be a list"):
        opt.step(np.ones((4, 5)))
    named = Adam({"a": np.zeros(2), "b": np.zeros(2)})
    with pytest.raises(ValueError, match=r"missing \['b'\]"):
        named.step({"a": np.ones(2)})
    with pytest.raises(ValueError, match=r"unknown \['c'\]"):
        named.step({"a": np.ones(2), "b": np.ones(2), "c": np.ones(2)})
    with pytest.raises(TypeError, match="must be a dict"):
        named.step([np.ones(2), np.ones(2)])
    grouped = Adam([{"params": [np.zeros(2)]}, {"params": [np.zeros(2), np.zeros(2)]}])
    with pytest.raises(ValueError, match=r"grads\[1\] must hold the 2 grads of param_groups\[1\]"):
        grouped.step([[np.ones(2)], [np.ones(2)]])
    assert_unchanged(before, everything(params, opt))


def test_param_made_read_only_later():
    params, opt = make()
    params[2].flags.writeable = False
    before = snapshot(everything(params, opt))
    with pytest.raises(ValueError, match=r"params\[2\] is read-only"):
        opt.step([np.ones(5)] * 4)
    assert_unchanged(before, everything(params, opt))


def test_first_step_failure_creates_no_state():
    p = [np.zeros(3), np.zeros(3)]
    opt = Adam(p)
    with pytest.raises(ValueError):
        opt.step([np.ones(3), np.ones(4)])
    assert opt.state == {}


# ---- functional -------------------------------------------------------------

def functional_operands(spec, dtype=np.float64, size=6):
    # plain options, but with momentum where the state array depends on it
    options = next(o for o in spec.option_sets()
                   if all(not v for v in o.values() if isinstance(v, bool)) and o.get("momentum", 1) > 0)
    param = np.linspace(-1, 1, size).astype(dtype)
    positional, keyword = spec.new_state(param, options)
    return param, np.ones(size, dtype), positional, keyword, spec.functional_kwargs(options)


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
@pytest.mark.parametrize("target", ["param", "grad", "state"])
@pytest.mark.parametrize("problem, error, message", [
    ("shape", ValueError, "has shape"),
    ("dtype", TypeError, "has dtype float32"),
    ("noncontiguous", ValueError, "is not C-contiguous"),
    ("readonly", ValueError, "is read-only"),
    ("alias", ValueError, "shares memory"),
    ("integer", TypeError, "has dtype int64"),
])
def test_functional_bad_operand_changes_nothing(spec, target, problem, error, message):
    param, grad, positional, keyword, kwargs = functional_operands(spec)
    used = next(k for k, a in enumerate(positional) if a is not None)  # the first state a 1-D param has
    operands = {"param": param, "grad": grad, "state": positional[used]}
    name = {"param": "param", "grad": "grad", "state": spec.state[used]}[target]
    x = operands[target]
    if problem == "shape":
        if target == "param":
            return  # the param defines the shape; covered by the others
        bad = np.ones(x.size + 1)
    elif problem == "dtype":
        bad = x.astype(np.float32)
        if target == "param":  # the float64 grad then mismatches the float32 param
            message = r"grad has dtype float64 but param has dtype float32"
    elif problem == "noncontiguous":
        bad = np.repeat(x, 2)[::2]
    elif problem == "readonly":
        if target == "grad":
            return  # a read-only grad is fine: it is only read
        bad = x.copy()
        bad.flags.writeable = False
    elif problem == "alias":
        if target == "param":
            return
        bad = param
        message = f"{name} shares memory with param"
    else:
        bad = x.astype(np.int64)
    operands[target] = bad
    args = [operands["param"], operands["grad"], *positional[:used], operands["state"], *positional[used + 1:]]
    before = snapshot([param, grad, *positional, *keyword.values()])
    with pytest.raises(error, match=message):
        spec.functional(*args, step=2, **keyword, **kwargs)
    assert_unchanged(before, [param, grad, *positional, *keyword.values()])


def test_functional_read_only_grad_is_accepted():
    p, g = np.zeros(3), np.ones(3)
    g.flags.writeable = False
    functional.sgd(p, g, step=1, lr=0.1)
    np.testing.assert_array_equal(p, -0.1 * np.ones(3))


def test_functional_missing_or_bad_arguments():
    p, g = np.zeros(3), np.ones(3)
    with pytest.raises(ValueError, match="momentum_buffer is required when momentum != 0"):
        functional.sgd(p, g, step=1, lr=0.1, momentum=0.9)
    with pytest.raises(ValueError, match="max_exp_avg_sq is required when amsgrad=True"):
        functional.adam(p, g, np.zeros(3), np.zeros(3), step=1, lr=0.1, beta1=0.9, beta2=0.99, eps=1e-8,
                        amsgrad=True)
    with pytest.raises(ValueError, match="grad_avg is required when centered=True"):
        functional.rmsprop(p, g, np.zeros(3), step=1, lr=0.1, alpha=0.9, eps=1e-8, centered=True)
    for step in (0, -1, 1.5, "1", None):
        with pytest.raises(ValueError, match="Invalid step"):
            functional.sgd(p, g, step=step, lr=0.1)
    with pytest.raises(ValueError, match="^Invalid learning rate: nan"):
        functional.sgd(p, g, step=1, lr=math.nan)
    np.testing.assert_array_equal(p, 0)
