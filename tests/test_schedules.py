"""fastoptim.schedules: each schedule against its formula and torch.optim.lr_scheduler,
argument checks, and schedules driving the optimizers' lr."""
import copy
import math
import pickle
import sys
import warnings

import numpy as np
import pytest

import fastoptim
from fastoptim import SGD, Adam, schedules as S
from fastoptim._registry import SPECS

from conftest import traced_memory_growth

RTOL = 1e-12


def values(schedule, steps):
    return np.array([schedule(t) for t in range(steps)])


def assert_close(ours, theirs, msg=""):
    np.testing.assert_allclose(ours, theirs, rtol=RTOL, atol=0, err_msg=msg)


# ---- formulas -----------------------------------------------------------------
FORMULAS = [
    (S.constant(0.3), lambda t: 0.3),
    (S.piecewise_constant([5, 12, 40], [1.0, 0.5, 0.25, 0.01]),
     lambda t: 1.0 if t < 5 else 0.5 if t < 12 else 0.25 if t < 40 else 0.01),
    (S.exponential(0.2, 0.97), lambda t: 0.2 * 0.97 ** t),
    (S.exponential(0.2, math.exp(-0.05), min_lr=0.01), lambda t: max(0.01, 0.2 * math.exp(-0.05 * t))),
    (S.polynomial(0.1, 0.5), lambda t: 0.1 * (t + 1) ** -0.5),
    (S.polynomial(0.1, 2.0, beta=0.3), lambda t: 0.1 * (0.3 * t + 1) ** -2.0),
    (S.polynomial_decay(0.1, 0.001, 50), lambda t: (0.1 - 0.001) * (1 - min(t, 50) / 50) + 0.001),
    (S.polynomial_decay(0.1, 0.0, 30, power=2.5), lambda t: 0.1 * (1 - min(t, 30) / 30) ** 2.5),
    (S.sqrt(0.4), lambda t: 0.4 / math.sqrt(t + 1)),
    (S.factor(0.5, 0.9, min_lr=1e-3), lambda t: max(1e-3, 0.5 * 0.9 ** t)),
    (S.multi_factor(0.5, [10, 20, 60], 0.1), lambda t: 0.5 * 0.1 ** sum(m <= t for m in (10, 20, 60))),
    (S.cosine(0.1, 60, final_lr=0.01),
     lambda t: 0.01 + 0.09 * (1 + math.cos(math.pi * min(t, 60) / 60)) / 2),
    (S.cosine(0.1, 60, final_lr=0.01, warmup_steps=10, warmup_begin_lr=0.001),
     lambda t: 0.001 + 0.099 * t / 10 if t < 10
     else 0.01 + 0.09 * (1 + math.cos(math.pi * (min(t, 60) - 10) / 50)) / 2),
    (S.warmup(S.exponential(0.1, 0.9), 8, start_lr=0.02),
     lambda t: 0.02 + (0.1 - 0.02) * t / 8 if t < 8 else 0.1 * 0.9 ** (t - 8)),
    (S.warmup(S.constant(0.1), 0), lambda t: 0.1),
    (S.join([S.constant(0.1), S.exponential(0.05, 0.9), S.sqrt(0.02)], [10, 25]),
     lambda t: 0.1 if t < 10 else 0.05 * 0.9 ** (t - 10) if t < 25 else 0.02 / math.sqrt(t - 25 + 1)),
]


@pytest.mark.parametrize("schedule, formula", FORMULAS, ids=lambda x: repr(x).split("(")[0])
def test_schedule_follows_its_formula(schedule, formula):
    steps = list(range(120)) + [1000, 10**6]
    ours = [schedule(t) for t in steps]
    assert all(type(v) is float for v in ours)
    assert_close(ours, [formula(t) for t in steps], repr(schedule))


def test_schedules_take_numpy_integers_and_reject_bad_steps():
    s = S.cosine(0.1, 100)
    for t in (np.int64(7), np.int32(7), np.uint8(7)):
        assert s(t) == s(7)
    with pytest.raises(ValueError, match="must be >= 0"):
        s(-1)
    with pytest.raises(ValueError, match="must be >= 0"):
        s(np.int64(-3))
    for bad in (1.0, True, np.float64(2), "3", None):
        with pytest.raises(TypeError, match="step must be an integer"):
            s(bad)


def test_exponential_growth_overflows_to_inf():
    assert S.exponential(1.0, 2.0)(5000) == math.inf


# ---- against torch.optim.lr_scheduler ------------------------------------------
def torch_lrs(torch, make_scheduler, base_lr, steps):
    """The lr torch's scheduler gives at steps 0..steps-1 (read before each optimizer step)."""
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=base_lr)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # SequentialLR's and others' deprecation chatter
        scheduler = make_scheduler(opt)
        out = []
        for _ in range(steps):
            out.append(opt.param_groups[0]["lr"])
            opt.step()
            scheduler.step()
    return np.array(out)


def test_exponential_equals_exponential_lr(torch):
    L = torch.optim.lr_scheduler
    assert_close(values(S.exponential(0.1, 0.98), 500), torch_lrs(torch, lambda o: L.ExponentialLR(o, 0.98), 0.1, 500))


@pytest.mark.parametrize("milestones", [[3, 10, 50], [1], [0, 7]])
def test_multi_factor_equals_multistep_lr(torch, milestones):
    L = torch.optim.lr_scheduler
    theirs = torch_lrs(torch, lambda o: L.MultiStepLR(o, milestones, gamma=0.3), 0.2, 200)
    assert_close(values(S.multi_factor(0.2, milestones, 0.3), 200), theirs)


def test_piecewise_constant_equals_step_lr_and_multistep_lr(torch):
    L = torch.optim.lr_scheduler
    steps = 300
    boundaries = list(range(30, steps, 30))
    schedule = S.piecewise_constant(boundaries, [0.1 * 0.5 ** i for i in range(len(boundaries) + 1)])
    assert_close(values(schedule, steps), torch_lrs(torch, lambda o: L.StepLR(o, 30, gamma=0.5), 0.1, steps))
    schedule = S.piecewise_constant([4, 9, 100], [0.1, 0.1 * 0.2, 0.1 * 0.2 ** 2, 0.1 * 0.2 ** 3])
    assert_close(values(schedule, steps), torch_lrs(torch, lambda o: L.MultiStepLR(o, [4, 9, 100], 0.2), 0.1, steps))


@pytest.mark.parametrize("power", [1.0, 2.0, 0.5])
def test_polynomial_decay_equals_polynomial_lr(torch, power):
    L = torch.optim.lr_scheduler
    theirs = torch_lrs(torch, lambda o: L.PolynomialLR(o, total_iters=80, power=power), 0.1, 120)
    ours = values(S.polynomial_decay(0.1, 0.0, 80, power=power), 120)
    assert_close(ours, theirs)


@pytest.mark.parametrize("final_lr", [0.0, 0.003])
def test_cosine_equals_cosine_annealing_lr(torch, final_lr):
    L = torch.optim.lr_scheduler
    T = 200
    theirs = torch_lrs(torch, lambda o: L.CosineAnnealingLR(o, T_max=T, eta_min=final_lr), 0.1, T + 1)
    ours = values(S.cosine(0.1, T, final_lr=final_lr), T + 1)
    assert_close(ours, theirs)
    assert S.cosine(0.1, T, final_lr=final_lr)(T + 50) == final_lr  # held after T (torch's rises again)


@pytest.mark.parametrize("start_factor, warmup_steps", [(0.1, 10), (1 / 3, 5), (0.5, 1)])
def test_warmup_equals_linear_lr(torch, start_factor, warmup_steps):
    L = torch.optim.lr_scheduler
    theirs = torch_lrs(torch, lambda o: L.LinearLR(o, start_factor, total_iters=warmup_steps), 0.1, 60)
    ours = values(S.warmup(S.constant(0.1), warmup_steps, start_lr=0.1 * start_factor), 60)
    assert_close(ours, theirs)


@pytest.mark.parametrize("total_steps, pct_start, div_factor, final_div_factor",
                         [(100, 0.3, 25.0, 1e4), (1000, 0.25, 10.0, 100.0), (37, 0.5, 4.0, 1e3), (10, 0.15, 25.0, 1e4)])
def test_one_cycle_equals_one_cycle_lr(torch, total_steps, pct_start, div_factor, final_div_factor):
    L = torch.optim.lr_scheduler
    theirs = torch_lrs(torch, lambda o: L.OneCycleLR(
        o, max_lr=0.3, total_steps=total_steps, pct_start=pct_start, div_factor=div_factor,
        final_div_factor=final_div_factor, cycle_momentum=False), 0.3, total_steps)
    schedule = S.one_cycle(0.3, total_steps, pct_start, div_factor, final_div_factor)
    assert_close(values(schedule, total_steps), theirs)
    assert schedule(total_steps + 10) == theirs[-1] == 0.3 / div_factor / final_div_factor


def test_join_equals_sequential_lr(torch):
    L = torch.optim.lr_scheduler
    theirs = torch_lrs(torch, lambda o: L.SequentialLR(
        o, [L.LinearLR(o, 0.2, total_iters=10), L.ExponentialLR(o, 0.95)], milestones=[10]), 0.1, 100)
    ours = values(S.join([S.warmup(S.constant(0.1), 10, start_lr=0.02), S.exponential(0.1, 0.95)], [10]), 100)
    assert_close(ours, theirs)


def test_join_restarts_each_schedule_at_its_boundary():
    s = S.join([S.constant(1.0), S.piecewise_constant([2], [0.5, 0.25]), S.constant(0.1)], [3, 10])
    assert [s(t) for t in range(12)] == [1.0] * 3 + [0.5] * 2 + [0.25] * 5 + [0.1] * 2


# ---- ReduceLROnPlateau ------------------------------------------------------------
METRICS = [1.0, 0.9, 0.95, 0.95, 0.95, 0.9, 0.89999, 0.91, 0.92, 0.93, 0.5, 0.5, 0.5, 0.5, 0.5,
           float("nan"), 0.6, 0.7, 0.49, 0.48, 0.48, 0.48, 0.48, 0.48, 0.48, 0.48, 0.48, 0.48, 0.48] * 3


@pytest.mark.parametrize("options", [
    dict(),
    dict(mode="min", factor=0.5, patience=2, threshold=1e-4, threshold_mode="rel"),
    dict(mode="min", factor=0.5, patience=0, threshold=0.01, threshold_mode="abs", cooldown=2),
    dict(mode="max", factor=0.3, patience=1, threshold=0.05, threshold_mode="rel", min_lr=0.004),
    dict(mode="max", factor=0.2, patience=3, threshold=0.0, threshold_mode="abs", cooldown=1, min_lr=1e-3),
    dict(mode="min", factor=0.9, patience=1, min_lr=0.0999, eps=1e-8),
    dict(mode="min", factor=0.5, patience=0, min_lr=0.1 - 1e-9),  # a cut smaller than eps is skipped
])
def test_reduce_lr_on_plateau_equals_torch(torch, options):
    metrics = METRICS if options.get("mode", "min") == "min" else [-m for m in METRICS]
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    theirs = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, **options)
    ours = S.ReduceLROnPlateau(0.1, **options)
    for epoch, m in enumerate(metrics):
        theirs.step(m)
        assert ours.step(m) == opt.param_groups[0]["lr"] == ours(epoch), f"epoch {epoch}"
        assert (ours.best == theirs.best or (math.isnan(ours.best) and math.isnan(theirs.best)))
        assert (ours.num_bad_epochs, ours.cooldown_counter) == (theirs.num_bad_epochs, theirs.cooldown_counter)


def test_reduce_lr_on_plateau_state_dict_pickle_and_errors():
    p = S.ReduceLROnPlateau(0.1, patience=0)
    for m in (1.0, 2.0, np.float32(0.5), np.array(3.0)):
        p.step(m)
    assert p.lr == pytest.approx(0.001) and p.last_epoch == 4
    q = S.ReduceLROnPlateau(0.1, patience=0)
    q.load_state_dict(p.state_dict())
    assert q == p and q(0) == p.lr
    assert pickle.loads(pickle.dumps(p)) == p
    assert "current lr=0.001" in repr(p)
    with pytest.raises(TypeError, match="metric must be a real number"):
        p.step("0.5")
    with pytest.raises(TypeError, match="metric must be a real number"):
        p.step(None)
    before = q.state_dict()
    with pytest.raises(ValueError, match="num_bad_epochs"):
        q.load_state_dict(dict(before, lr=0.5, num_bad_epochs=-1))
    assert q.state_dict() == before
    with pytest.raises(ValueError, match="lacks"):
        q.load_state_dict({"lr": 0.1})
    with pytest.raises(TypeError):
        hash(p)


# ---- argument checks ---------------------------------------------------------------
BAD_ARGUMENTS = [
    (lambda: S.constant(-0.1), ValueError, r"lr=-0.1 \(constant\); must be finite and >= 0"),
    (lambda: S.constant(float("nan")), ValueError, "lr=nan"),
    (lambda: S.constant("0.1"), TypeError, "expected a real number"),
    (lambda: S.piecewise_constant([5, 10], [1.0, 0.5]), ValueError, r"len\(values\) must be len\(boundaries\) \+ 1"),
    (lambda: S.piecewise_constant([10, 5], [1.0, 0.5, 0.1]), ValueError, "boundaries.*strictly increasing"),
    (lambda: S.piecewise_constant([5, 5], [1.0, 0.5, 0.1]), ValueError, "strictly increasing"),
    (lambda: S.piecewise_constant([-1], [1.0, 0.5]), ValueError, r"boundaries\[0\]=-1.*>= 0"),
    (lambda: S.piecewise_constant([2.5], [1.0, 0.5]), TypeError, r"boundaries\[0\]=2.5.*integer"),
    (lambda: S.piecewise_constant(5, [1.0, 0.5]), TypeError, "boundaries=5.*sequence"),
    (lambda: S.piecewise_constant([5], [1.0, -0.5]), ValueError, r"values\[1\]=-0.5"),
    (lambda: S.exponential(0.1, 0.0), ValueError, r"gamma=0.0 \(exponential\)"),
    (lambda: S.exponential(0.1, 0.9, min_lr=-1), ValueError, "min_lr=-1"),
    (lambda: S.polynomial(0.1, -1.0), ValueError, "alpha=-1.0"),
    (lambda: S.polynomial_decay(0.1, 0.0, 0), ValueError, "total_steps=0.*>= 1"),
    (lambda: S.polynomial_decay(0.1, 0.0, 10, power=0), ValueError, "power=0"),
    (lambda: S.polynomial_decay(0.1, 0.0, True), TypeError, "total_steps=True"),
    (lambda: S.sqrt(math.inf), ValueError, "base_lr=inf"),
    (lambda: S.factor(0.1, 1.5), ValueError, r"factor=1.5 \(factor\)"),
    (lambda: S.factor(0.1, 0.0), ValueError, "factor=0.0"),
    (lambda: S.multi_factor(0.1, [3, 2], 0.5), ValueError, "milestones.*strictly increasing"),
    (lambda: S.multi_factor(0.1, [3], -0.5), ValueError, "factor=-0.5"),
    (lambda: S.cosine(0.1, 10, warmup_steps=10), ValueError, "total_steps=10 must be greater than warmup_steps=10"),
    (lambda: S.cosine(0.1, 10, warmup_steps=-1), ValueError, "warmup_steps=-1"),
    (lambda: S.warmup(0.1, 5), TypeError, r"schedule=0.1 \(warmup\); expected a schedule"),
    (lambda: S.warmup(S.constant(0.1), -5), ValueError, "warmup_steps=-5"),
    (lambda: S.one_cycle(0.1, 100, pct_start=1.0), ValueError, "pct_start=1.0"),
    (lambda: S.one_cycle(0.1, 100, pct_start=0.01), ValueError, "pct_start \\* total_steps must exceed 1"),
    (lambda: S.one_cycle(0.1, 1), ValueError, "total_steps=1"),
    (lambda: S.one_cycle(0.1, 100, div_factor=0), ValueError, "div_factor=0"),
    (lambda: S.join([S.constant(0.1)], [5]), ValueError, r"len\(schedules\) must be len\(boundaries\) \+ 1"),
    (lambda: S.join([S.constant(0.1), 0.2], [5]), TypeError, r"schedules\[1\]=0.2"),
    (lambda: S.join([S.constant(0.1)] * 3, [5, 5]), ValueError, "strictly increasing"),
    (lambda: S.ReduceLROnPlateau(0.1, mode="minimum"), ValueError, "mode='minimum'"),
    (lambda: S.ReduceLROnPlateau(0.1, threshold_mode="relative"), ValueError, "threshold_mode='relative'"),
    (lambda: S.ReduceLROnPlateau(0.1, factor=1.0), ValueError, "factor=1.0"),
    (lambda: S.ReduceLROnPlateau(0.1, patience=-1), ValueError, "patience=-1"),
    (lambda: S.ReduceLROnPlateau(0.1, cooldown=0.5), TypeError, "cooldown=0.5"),
    (lambda: S.ReduceLROnPlateau(0.1, min_lr=-0.1), ValueError, "min_lr=-0.1"),
]


@pytest.mark.parametrize("make, error, match", BAD_ARGUMENTS, ids=[m for _, _, m in BAD_ARGUMENTS])
def test_bad_arguments_raise_at_construction(make, error, match):
    with pytest.raises(error, match=match):
        make()


ALL = [s for s, _ in FORMULAS] + [S.one_cycle(0.1, 100)]


@pytest.mark.parametrize("schedule", ALL, ids=lambda s: repr(s).split("(")[0])
def test_schedules_pickle_compare_and_repr(schedule):
    clone = pickle.loads(pickle.dumps(schedule))
    assert clone == schedule and hash(clone) == hash(schedule)
    assert values(clone, 50).tolist() == values(schedule, 50).tolist()
    assert eval(repr(schedule), vars(S)) == schedule  # the repr is the constructor call
    assert copy.deepcopy(schedule) == schedule


# ---- plot ------------------------------------------------------------------------
def test_plot_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    path = tmp_path / "lr.png"
    out = S.plot({"cosine": S.cosine(0.1, 100, warmup_steps=10), "one_cycle": S.one_cycle(0.1, 100),
                  "step": S.piecewise_constant([30, 60], [0.1, 0.05, 0.01])}, 120, path)
    assert out == path
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    seven = {repr(s): s for s in ALL[:7]}  # more than six: one panel each, unless told otherwise
    for grid in (None, False):
        path = tmp_path / f"seven-{grid}.png"
        S.plot(seven, 50, path, grid=grid, log_scale=grid is False)
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_names_the_extra_without_matplotlib(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(ImportError, match=r'pip install "fastoptim\[plot\]"'):
        S.plot({"c": S.constant(0.1)}, 10, tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_plot_checks_its_arguments(tmp_path):
    with pytest.raises(TypeError, match="schedules_by_name"):
        S.plot([S.constant(0.1)], 10, tmp_path / "x.png")
    with pytest.raises(TypeError, match=r"schedules_by_name\['c'\]"):
        S.plot({"c": 0.1}, 10, tmp_path / "x.png")
    with pytest.raises(ValueError, match="total_steps=0"):
        S.plot({"c": S.constant(0.1)}, 0, tmp_path / "x.png")


# ---- schedules in the optimizers -------------------------------------------------------
def test_fastoptim_exports_schedules():
    assert fastoptim.schedules is S and "schedules" in fastoptim.__all__


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_schedule_driven_training_equals_functional_with_the_lr_by_hand(spec):
    rng = np.random.default_rng(0)
    options = list(spec.option_sets())[-1]  # the one with the most state
    schedule = S.warmup(S.cosine(options["lr"], 30, final_lr=options["lr"] / 10), 5)
    grads = [rng.standard_normal(33) for _ in range(40)]
    p, q = np.ones(33), np.ones(33)
    opt = spec.cls([p], **dict(options, lr=schedule))
    # state filled from lr (ASGD's eta, Rprop's step sizes) takes the lr of the first step, as in torch
    positional, keyword = spec.new_state(q, dict(options, lr=schedule(0)))
    kwargs = spec.functional_kwargs(options)
    assert opt.param_groups[0]["lr"] == schedule(0)  # before the first step: the lr it will use
    for t, g in enumerate(grads):
        opt.step([g])
        assert opt.param_groups[0]["lr"] == schedule(t) and opt.step_count == t + 1
        spec.functional(q, g, *positional, step=t + 1, **dict(kwargs, lr=schedule(t)), **keyword)
        np.testing.assert_array_equal(p, q, err_msg=f"{spec.name} step {t}")
    assert opt.param_groups[0]["lr_schedule"] is schedule


def sgd_by_hand(param, grads, lrs):
    for g, lr in zip(grads, lrs):
        fastoptim.functional.sgd(param, g, step=1, lr=lr)


def test_per_group_schedules_and_defaults():
    rng = np.random.default_rng(1)
    a, b, c = np.zeros(5), np.zeros(4), np.zeros(3)
    ref = [x.copy() for x in (a, b, c)]
    decay = S.exponential(0.5, 0.9)
    steps = S.piecewise_constant([3], [0.2, 0.02])
    opt = SGD([{"params": [a]}, {"params": [b], "lr": steps}, {"params": [c], "lr": 0.05}], lr=decay)
    assert opt.defaults["lr_schedule"] is decay and opt.defaults["lr"] == 0.5
    assert opt.param_groups[0]["lr_schedule"] is decay  # inherited from the defaults
    assert "lr_schedule" not in opt.param_groups[2]  # its own float lr takes no schedule
    grads = [[rng.standard_normal(x.shape) for x in (a, b, c)] for _ in range(8)]
    for g in grads:
        opt.step(g)
    lrs_by_group = ([decay(t) for t in range(8)], [steps(t) for t in range(8)], [0.05] * 8)
    for i, (x, r) in enumerate(zip((a, b, c), ref)):
        sgd_by_hand(r, [g[i] for g in grads], lrs_by_group[i])
        np.testing.assert_array_equal(x, r)
    assert [g["lr"] for g in opt.param_groups] == [decay(7), steps(7), 0.05]


def test_a_group_added_later_starts_at_the_current_step():
    opt = SGD([np.zeros(2)], lr=0.1)
    for _ in range(4):
        opt.step([np.ones(2)])
    decay = S.exponential(1.0, 0.5)
    opt.add_param_group({"params": [np.zeros(2)], "lr": decay})
    assert opt.param_groups[1]["lr"] == decay(4)
    opt.step([np.ones(2), np.ones(2)])
    assert opt.param_groups[1]["lr"] == decay(4)


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_state_dict_round_trip_mid_schedule_is_bit_identical(spec):
    rng = np.random.default_rng(2)
    options = list(spec.option_sets())[-1]
    schedule = S.one_cycle(options["lr"], 40)
    grads = [[rng.standard_normal(6), rng.standard_normal((2, 3))] for _ in range(30)]
    p1 = [np.ones(6), np.ones((2, 3))]
    p2 = [x.copy() for x in p1]
    opt1 = spec.cls([{"params": [p1[0]]}, {"params": [p1[1]], "lr": schedule}], **options)
    for g in grads[:12]:
        opt1.step(g)
    checkpoint = pickle.loads(pickle.dumps(opt1.state_dict()))
    params_then = [x.copy() for x in p1]
    for g in grads[12:]:
        opt1.step(g)
    for x, y in zip(p2, params_then):
        x[...] = y
    opt2 = spec.cls([{"params": [p2[0]]}, {"params": [p2[1]]}], **options)  # no schedule until loaded
    opt2.load_state_dict(checkpoint)
    assert opt2.step_count == 12 and opt2.param_groups[1]["lr_schedule"] == schedule
    for g in grads[12:]:
        opt2.step(g)
    for x, y in zip(p1, p2):
        np.testing.assert_array_equal(x, y)
    assert opt2.param_groups[1]["lr"] == opt1.param_groups[1]["lr"] == schedule(29)
    assert opt2.step_count == opt1.step_count == 30


def test_loading_a_group_without_schedule_drops_the_schedule():
    constant_opt = SGD([np.zeros(2)], lr=0.3)
    opt = SGD([np.zeros(2)], lr=S.exponential(0.1, 0.5))
    opt.load_state_dict(constant_opt.state_dict())
    assert "lr_schedule" not in opt.param_groups[0] and opt.param_groups[0]["lr"] == 0.3
    opt.step([np.ones(2)])
    assert opt.param_groups[0]["lr"] == 0.3


def test_torch_state_dict_without_step_count_restarts_schedules(torch):
    t = torch.zeros(2, requires_grad=True)
    theirs = torch.optim.SGD([t], lr=0.2)
    opt = SGD([np.zeros(2)], lr=0.2)
    opt.step([np.ones(2)])
    opt.load_state_dict(theirs.state_dict())
    assert opt.step_count == 0


class BadAtThree:
    """A user's schedule (any callable taking the step) that returns `bad` at t = 3."""

    def __init__(self, bad):
        self.bad = bad

    def __call__(self, t):
        return self.bad if t == 3 else 0.1 / (t + 1)


@pytest.mark.parametrize("bad", [float("nan"), -0.1, math.inf, "0.1", None], ids=repr)
def test_bad_schedule_values_raise_and_change_nothing(bad):
    p, q = np.ones(4), np.ones(3)
    opt = Adam([{"params": [p], "lr": S.sqrt(0.1)}, {"params": [q], "lr": BadAtThree(bad)}])
    for _ in range(3):
        opt.step([np.ones(4), np.ones(3)])
    before = pickle.dumps(opt.state_dict())
    params = [p.copy(), q.copy()]
    lrs = [g["lr"] for g in opt.param_groups]
    error = TypeError if isinstance(bad, str) or bad is None else ValueError
    with pytest.raises(error, match=r"^Invalid learning rate: .*param_groups\[1\]\['lr_schedule'\] at step t=3"):
        opt.step([np.ones(4), np.ones(3)])
    assert pickle.dumps(opt.state_dict()) == before
    assert [g["lr"] for g in opt.param_groups] == lrs  # group 0's good value was not written either
    np.testing.assert_array_equal(p, params[0])
    np.testing.assert_array_equal(q, params[1])
    assert opt.step_count == 3


def test_a_bad_first_value_fails_at_construction():
    with pytest.raises(ValueError, match=r"^Invalid learning rate: -1.0 \(param_groups\[0\]\['lr_schedule'\] at step t=0\)"):
        SGD([{"params": [np.zeros(2)], "lr": lambda t: -1.0}], lr=0.1)
    with pytest.raises(ValueError, match=r"defaults\['lr_schedule'\]"):
        SGD([np.zeros(2)], lr=lambda t: float("nan"))
    with pytest.raises(TypeError, match=r"\['lr_schedule'\]=0.5 is not a schedule"):
        SGD([{"params": [np.zeros(2)], "lr_schedule": 0.5}], lr=0.1)


def test_failed_grads_do_not_advance_the_schedule():
    opt = SGD([np.zeros(2)], lr=S.exponential(0.1, 0.5))
    with pytest.raises(ValueError):
        opt.step([np.ones(3)])
    assert opt.step_count == 0 and opt.param_groups[0]["lr"] == 0.1


def test_writing_lr_replaces_or_installs_a_schedule():
    p, q = np.zeros(3), np.zeros(3)
    decay = S.exponential(0.1, 0.5)
    opt = SGD([p], lr=decay)
    opt.step([np.ones(3)])
    opt.param_groups[0]["lr"] = 0.05  # a number replaces the schedule, from the next step on
    opt.step([np.ones(3)])
    assert "lr_schedule" not in opt.param_groups[0] and opt.param_groups[0]["lr"] == 0.05
    opt.param_groups[0]["lr"] = decay  # a schedule installs it, at the current step (t = 2)
    opt.step([np.ones(3)])
    assert opt.param_groups[0]["lr_schedule"] is decay and opt.param_groups[0]["lr"] == decay(2)
    other = S.constant(0.01)
    opt.param_groups[0]["lr_schedule"] = other  # so does assigning 'lr_schedule'
    opt.step([np.ones(3)])
    assert opt.param_groups[0]["lr"] == 0.01
    sgd_by_hand(q, [np.ones(3)] * 4, [decay(0), 0.05, decay(2), 0.01])
    np.testing.assert_array_equal(p, q)


def test_step_count_can_be_set_and_is_checked():
    opt = SGD([np.zeros(2)], lr=S.exponential(1.0, 0.5))
    opt.step_count = np.int64(10)
    opt.step([np.ones(2)])
    assert opt.param_groups[0]["lr"] == 0.5 ** 10 and opt.step_count == 11
    for bad in (-1, 2.0, True):
        with pytest.raises(ValueError, match="step_count"):
            opt.step_count = bad


def test_reduce_lr_on_plateau_drives_an_optimizer_and_survives_a_checkpoint():
    plateau = S.ReduceLROnPlateau(0.1, factor=0.5, patience=1)
    p = np.zeros(2)
    opt = SGD([{"params": [p]}, {"params": [np.zeros(1)], "lr": plateau}], lr=plateau)
    assert opt.param_groups[0]["lr_schedule"] is opt.param_groups[1]["lr_schedule"] is plateau
    for epoch, loss in enumerate([1.0, 1.0, 1.0, 0.5, 0.6, 0.7]):
        opt.step([np.ones(2), np.ones(1)])
        plateau.step(loss)
    opt.step([np.ones(2), np.ones(1)])
    assert [g["lr"] for g in opt.param_groups] == [0.025, 0.025]
    checkpoint = pickle.loads(pickle.dumps(opt.state_dict()))
    plateau.step(0.1)
    plateau.step(0.2)
    plateau.step(0.2)  # reduces to 0.0125
    opt.load_state_dict(checkpoint)
    # The live object took the saved progress, so the caller's reference still drives the lr.
    assert opt.param_groups[0]["lr_schedule"] is plateau and plateau.lr == 0.025
    assert plateau.best == 0.5 and plateau.last_epoch == 6
    opt3 = SGD([{"params": [np.zeros(2)]}, {"params": [np.zeros(1)]}], lr=0.1)
    opt3.load_state_dict(checkpoint)  # no live one: the groups share the loaded copy, as they shared it
    loaded = opt3.param_groups[0]["lr_schedule"]
    assert loaded is opt3.param_groups[1]["lr_schedule"] and loaded == plateau and loaded is not plateau
    fresh = S.ReduceLROnPlateau(0.1, factor=0.5, patience=1)
    opt2 = SGD([{"params": [np.zeros(2)], "lr": fresh}, {"params": [np.zeros(1)], "lr": fresh}], lr=0.1)
    opt2.load_state_dict(checkpoint)
    assert fresh.lr == 0.025 and opt2.param_groups[1]["lr_schedule"] is fresh


def test_memoized_checks_return_each_lr_they_are_given():
    from fastoptim.rules import SGD
    # SGD.check(lr, maximize, momentum, dampening, weight_decay, nesterov, where)
    for lr in (0.1, 0.2, 1, np.float64(0.3), np.float32(0.5)):
        out = SGD.check(lr, False, 0.0, 0.0, 0.0, False, "")
        assert type(out[0]) is float and out[0] == float(lr)
    for bad in (float("nan"), -1e-3, math.inf):
        with pytest.raises(ValueError, match=r"^Invalid learning rate: .*lr must be"):
            SGD.check(bad, False, 0.0, 0.0, 0.0, False, "")
    with pytest.raises(ValueError, match=r"^Invalid momentum value: -1.0; momentum must be"):
        SGD.check(0.123, False, -1.0, 0.0, 0.0, False, "")


def test_scheduled_steps_allocate_nothing():
    params = [np.zeros(100), np.zeros(1000)]
    grads = [np.ones(100), np.ones(1000)]
    opt = Adam([{"params": [params[0]], "lr": S.cosine(1e-3, 10**6)}, {"params": [params[1]]}],
               lr=S.join([S.constant(1e-3), S.exponential(1e-3, 0.99)], [50]))
    for _ in range(3):
        opt.step(grads)
    kept, _ = traced_memory_growth(lambda: opt.step(grads), 2000)
    # Each step makes new lr floats; CPython may keep a few on its float free list (24 bytes
    # each, traced), so allow that, but nothing that grows with the steps.
    assert kept < 1024, f"{kept} bytes kept after 2000 steps"
