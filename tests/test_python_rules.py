"""Rules at the Python level (Rule.python): the step engine gives them the same checks,
schedules, state creation, state_dict and failure guarantees as the C rules.

Two toy rules written here exercise the extension apart from LBFGS and Muon:
heavy-ball momentum stepped per tensor in Python, and a closure-driven rule
that evaluates its objective twice per step and keeps state of its own.
"""
import copy
import pickle

import numpy as np
import pytest

from fastoptim import optim, schedules
from fastoptim.rules import Choice, Integer, PythonStep, Real, Reals, Rule, Slot, Variant
from fastoptim.rules._codegen import functional_parameters, generate_classes
from fastoptim.rules._rule import learning_rate

from conftest import assert_unchanged, snapshot


def heavy_ball_reference(param, grad, state, *, step, grad_scale, lr, maximize, momentum, repeats, shift, mode):
    g = grad / param.dtype.type(1.0 if grad_scale is None else grad_scale)
    buf = state["velocity"]
    for _ in range(repeats):
        buf *= param.dtype.type(momentum)
        buf += g
    param -= param.dtype.type(lr) * buf + param.dtype.type(sum(shift) if mode == "shifted" else 0.0)


class HeavyBall(PythonStep):
    def step(self, run):
        for i, grad in enumerate(run.grads):
            if grad is not None:
                state = dict(zip(["velocity"], run.state[i]))
                hyper = dict(run.hyper[run.groups[i]])
                assert run.steps[i] >= 1
                heavy_ball_reference(run.params[i], grad, state, step=int(run.steps[i]), grad_scale=run.grad_scale,
                                     **hyper)

    def run_single(self, rule, arrays, names, step, hyper, grad_scale):
        param, grad, velocity = arrays
        heavy_ball_reference(param, grad, {"velocity": velocity}, step=step, grad_scale=grad_scale,
                             **dict(zip(("lr", "maximize") + rule.field_names, hyper)))


HEAVY_BALL = Rule(
    kernel="heavy_ball",
    options=(learning_rate(0.1), Real("momentum", 0.5, "momentum value"),
             Integer("repeats", 1, "repeats", low=1, high=3, message="Too many repeats"),
             Reals("shift", (0.0, 0.0), 2, message="Shift needs two values"),
             Choice("mode", None, (None, "shifted"), message="Mode {} is unknown")),
    signature="lr momentum repeats shift mode",
    torch_signature="lr momentum repeats shift mode",
    state=(Slot("velocity"),),
    reference=heavy_ball_reference,
    variants=(Variant("HeavyBall", "heavy_ball", "heavy-ball momentum in Python"),),
    python=HeavyBall(),
    ndim=1,
)


class TwoPoint(PythonStep):
    """A step from the closure's first point, then a half step back if the loss grew: the
    closure is evaluated twice; `steps_taken` and `last_grad` are the rule's own state."""
    closure = True
    single_group = True

    def step(self, run):
        hyper = run.hyper[0]
        state = run.read_state()
        start = [p.copy() for p in run.params]
        first = float(run.loss)
        for p, g in zip(run.params, run.grads):
            p -= hyper["lr"] * g
        loss, grads = run.evaluate()
        if float(loss) > first:
            for p, s in zip(run.params, start):
                p += (s - p) / 2
        run.write_state({"steps_taken": state.get("steps_taken", 0) + 1,
                         "last_grad": np.concatenate([g.ravel() for g in grads]),
                         "max_iter": hyper["max_iter"]})
        return run.loss

    def run_closure(self, params, closure, state, **hyper):
        raise NotImplementedError


def two_point_reference(params, closure, state, *, lr, maximize, max_iter):
    raise NotImplementedError


TWO_POINT = Rule(
    kernel="two_point",
    options=(learning_rate(0.1), Integer("max_iter", 3, "max_iter", low=1),
             Integer("max_eval", None, "max_eval", low=1, allow_none=True)),
    signature="lr max_iter max_eval",
    torch_signature="lr max_iter max_eval",
    state=(),
    reference=two_point_reference,
    variants=(Variant("TwoPoint", "two_point", "two evaluations per step"),),
    python=TwoPoint(),
    step_in_state=False,
    fill_defaults=lambda defaults: defaults.update(max_eval=2 * defaults["max_iter"])
    if defaults.get("max_eval") is None else None,
)


def classes(base, torch):
    return generate_classes([HEAVY_BALL, TWO_POINT], base, torch, __name__, lambda variant: variant.summary)


NP = classes(optim.Optimizer, False)


# ---- a per-tensor rule at the Python level -------------------------------------------------

def test_checks_with_torch_words_then_ours():
    cls = NP["HeavyBall"]
    for options, error, message in [
            ({"lr": -1.0}, ValueError, r"^Invalid learning rate: -1.0 \(defaults\); lr must be"),
            ({"repeats": 0}, ValueError, r"^Invalid repeats: 0 \(defaults\); repeats must be >= 1"),
            ({"repeats": 4}, ValueError, r"Too many repeats: repeats=4 \(defaults\); must be <= 3"),
            ({"repeats": 1.0}, TypeError, r"^Invalid repeats: 1.0 \(defaults\); repeats must be an integer"),
            ({"shift": (1.0,)}, ValueError, r"Shift needs two values: shift=\(1.0,\) \(defaults\)"),
            ({"shift": (1.0, float("nan"))}, ValueError, r"^Invalid shift: nan \(defaults\); shift\[1\] must be finite$"),
            ({"mode": "other"}, ValueError,
             r"Mode other is unknown: mode='other' \(defaults\); expected one of None, 'shifted'")]:
        with pytest.raises(error, match=message):
            cls([np.zeros(3)], **options)
    with pytest.raises(ValueError, match=r"unknown hyperparameters \['maximize'\]"):
        cls([np.zeros(3)]).add_param_group({"params": [np.zeros(2)], "maximize": True})
    with pytest.raises(ValueError, match=r"HeavyBall only supports 1D parameters whereas we found a parameter with "
                                         r"size: \(2, 2\) \(params\[1\]\)"):
        cls([np.zeros(3), np.zeros((2, 2))])


def test_step_state_schedule_and_grad_scale_as_the_reference():
    rng = np.random.default_rng(0)
    params = [rng.standard_normal(5), rng.standard_normal(3).astype(np.float32)]
    expected = [p.copy() for p in params]
    velocity = [np.zeros_like(p) for p in params]
    lr = schedules.exponential(0.1, 0.5)
    opt = NP["HeavyBall"]([{"params": [params[0]], "mode": "shifted", "shift": (0.5, 0.25)},
                           {"params": [params[1]], "repeats": 2}], lr=lr, momentum=0.9)
    for t in range(4):
        grads = [rng.standard_normal(5), None if t == 1 else rng.standard_normal(3).astype(np.float32)]
        opt.step(grads, grad_scale=2.0)
        for i, (group, g) in enumerate(zip(opt.param_groups, grads)):
            if g is not None:
                heavy_ball_reference(expected[i], g, {"velocity": velocity[i]}, step=1, grad_scale=2.0, lr=lr(t),
                                     maximize=False, momentum=0.9, repeats=group["repeats"],
                                     shift=group["shift"], mode=group["mode"])
        assert opt.param_groups[0]["lr"] == lr(t)
    for p, e in zip(params, expected):
        np.testing.assert_array_equal(p, e)
    assert [int(opt.state[i]["step"]) for i in (0, 1)] == [4, 3]
    np.testing.assert_array_equal(opt.state[1]["velocity"], velocity[1])


def test_failed_step_changes_nothing_and_state_dict_round_trips():
    params = [np.ones(4)]
    opt = NP["HeavyBall"](params, momentum=0.5)
    opt.step([np.ones(4)])
    before = snapshot([params[0], opt.state[0]["velocity"]])
    with pytest.raises(ValueError, match=r"grads\[0\] has shape \(3,\)"):
        opt.step([np.ones(3)])
    opt.param_groups[0]["repeats"] = 7
    with pytest.raises(ValueError, match="Too many repeats"):
        opt.step([np.ones(4)])
    assert_unchanged(before, [params[0], opt.state[0]["velocity"]])
    assert int(opt.state[0]["step"]) == 1
    opt.param_groups[0]["repeats"] = 1
    checkpoint = pickle.loads(pickle.dumps(opt.state_dict()))
    other_params = [params[0].copy()]
    other = NP["HeavyBall"](other_params)
    other.load_state_dict(checkpoint)
    for o, p in ((opt, params), (other, other_params)):
        o.step([np.full(4, 2.0)])
    np.testing.assert_array_equal(params[0], other_params[0])


def test_functional_form_checks_then_runs_the_rules_step():
    from fastoptim.functional import _generate
    parameters, _ = functional_parameters(HEAVY_BALL, HEAVY_BALL.variants[0])
    assert "maximize=_default_maximize" not in parameters  # the rule has no maximize option
    heavy_ball = _generate(HEAVY_BALL, HEAVY_BALL.variants[0])
    p, v = np.ones(3), np.zeros(3)
    heavy_ball(p, np.ones(3), v, step=1, lr=0.5, repeats=2, momentum=0.5)
    np.testing.assert_array_equal(v, 1.5)
    np.testing.assert_array_equal(p, 1 - 0.75)
    with pytest.raises(ValueError, match="Too many repeats"):
        heavy_ball(p, np.ones(3), v, step=1, repeats=9)


# ---- a closure-driven rule -----------------------------------------------------------------

def quadratic_closure(params):
    def closure():
        return sum(float(p @ p) for p in params), [2 * p for p in params]
    return closure


def test_closure_step_evaluates_checks_and_keeps_its_own_state():
    cls = NP["TwoPoint"]
    params = [np.array([1.0, -2.0]), np.array([3.0])]
    opt = cls(params, lr=0.25, max_iter=4)
    assert opt.defaults["max_eval"] == 8  # fill_defaults: completed from max_iter
    loss = opt.step(quadratic_closure(params))
    assert loss == 14.0
    np.testing.assert_array_equal(np.concatenate(params), [0.5, -1.0, 1.5])
    assert opt.state[0]["steps_taken"] == 1 and opt.state[0]["max_iter"] == 4
    np.testing.assert_array_equal(opt.state[0]["last_grad"], [1.0, -2.0, 3.0])
    with pytest.raises(ValueError, match=r"doesn't support per-parameter options \(parameter groups\).*"
                                         r"param_groups\[1\]"):
        opt.add_param_group({"params": [np.zeros(1)]})
    with pytest.raises(TypeError, match="takes a closure"):
        opt.step([np.ones(2), np.ones(1)])
    before = snapshot(params)
    with pytest.raises(ValueError, match=r"grads\[1\] has shape \(2,\) but params\[1\] has shape \(1,\)"):
        opt.step(lambda: (0.0, [np.ones(2), np.ones(2)]))
    with pytest.raises(TypeError, match=r"must return \(loss, grads\)"):
        opt.step(lambda: 0.0)
    assert_unchanged(before, params)
    assert opt.state[0]["steps_taken"] == 1
    checkpoint = copy.deepcopy(opt.state_dict())
    other_params = [p.copy() for p in params]
    other = cls(other_params, lr=0.25)
    other.load_state_dict(checkpoint)
    assert other.param_groups[0]["max_iter"] == 4
    for o, p in ((opt, params), (other, other_params)):
        o.step(quadratic_closure(p))
        assert o.state[0]["steps_taken"] == 2
    np.testing.assert_array_equal(np.concatenate(params), np.concatenate(other_params))


def test_closure_rule_on_torch_keeps_tensors_in_its_state(torch):
    from fastoptim.torch import Optimizer
    cls = classes(Optimizer, True)["TwoPoint"]
    params = [torch.tensor([1.0, -2.0], requires_grad=True), torch.tensor([3.0], requires_grad=True)]
    opt = cls(params, lr=0.25)

    def closure():
        opt.zero_grad()
        loss = sum((p * p).sum() for p in params)
        loss.backward()
        return loss

    loss = opt.step(closure)
    assert isinstance(loss, torch.Tensor) and loss.item() == 14.0
    state = opt.state[params[0]]
    assert isinstance(state["last_grad"], torch.Tensor) and state["last_grad"].tolist() == [1.0, -2.0, 3.0]
    saved = opt.state_dict()
    other = cls([p.detach().clone().requires_grad_() for p in params], lr=0.5)
    other.load_state_dict(saved)
    assert other.state[other.param_groups[0]["params"][0]]["steps_taken"] == 1
    assert saved["state"][0]["last_grad"].data_ptr() != state["last_grad"].data_ptr()  # a copy
