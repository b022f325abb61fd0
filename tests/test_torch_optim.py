"""fastoptim.torch against torch.optim: every optimizer and option set on a small
MLP, checkpoints both ways, lr_scheduler interplay, errors, and a real training run."""
import copy
import io
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from fastoptim._registry import SPECS, TORCH_SPECS
from fastoptim.rules import PRECISION_DEFAULTS

from conftest import torch_optimizer


@pytest.fixture(scope="module")
def ft(torch):
    import fastoptim.torch as ft
    return ft


STEPS = 30
SPEC_IDS = [s.name for s in TORCH_SPECS]  # the faces torch.optim has too


def make_mlp(torch, dtype=None, seed=0):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(6, 10), torch.nn.Tanh(), torch.nn.Linear(10, 3),
                                torch.nn.Tanh(), torch.nn.Linear(3, 1))
    return model.to(dtype or torch.float64)


def batches(torch, n, dtype=None, seed=1):
    g = torch.Generator().manual_seed(seed)
    dtype = dtype or torch.float64
    return [(torch.randn(16, 6, generator=g, dtype=dtype), torch.randn(16, 1, generator=g, dtype=dtype))
            for _ in range(n)]


def train(torch, model, opt, data, scheduler=None, before_step=None):
    for k, (x, y) in enumerate(data):
        opt.zero_grad()
        loss = ((model(x) - y) ** 2).mean()
        loss.backward()
        if before_step is not None:
            before_step(k, model)
        opt.step()
        if scheduler is not None:
            scheduler.step()


def flat(model):
    return np.concatenate([p.detach().numpy().ravel() for p in model.parameters()])


def assert_same_state(torch, ours, theirs, tol):
    """Same params, same state keys and values, same step counts."""
    ours_params = [p for g in ours.param_groups for p in g["params"]]
    theirs_params = [p for g in theirs.param_groups for p in g["params"]]
    for i, (p, q) in enumerate(zip(ours_params, theirs_params)):
        np.testing.assert_allclose(p.detach().numpy(), q.detach().numpy(), rtol=tol, atol=tol, err_msg=f"params[{i}]")
        mine, their = ours.state.get(p, {}), theirs.state.get(q, {})
        assert set(mine) == set(their), f"params[{i}] state keys {set(mine)} vs torch {set(their)}"
        for key, value in their.items():
            if key == "step":
                assert float(mine[key]) == float(value), f"params[{i}] step"
            else:
                np.testing.assert_allclose(mine[key].numpy(), value.numpy(), rtol=tol, atol=tol,
                                           err_msg=f"params[{i}] {key}")


# ---- numerics ----------------------------------------------------------------------

@pytest.mark.parametrize("spec", TORCH_SPECS, ids=SPEC_IDS)
def test_matches_torch_every_option_float64(torch, ft, spec):
    data = batches(torch, STEPS)
    for options in spec.option_sets():
        ours_model, theirs_model = make_mlp(torch), make_mlp(torch)
        ours = getattr(ft, spec.torch_name)(ours_model.parameters(), **options)
        theirs = torch_optimizer(torch, spec)(theirs_model.parameters(), **options)
        train(torch, ours_model, ours, data)
        train(torch, theirs_model, theirs, data)
        assert_same_state(torch, ours, theirs, 1e-10)
        assert np.abs(flat(ours_model) - flat(make_mlp(torch))).max() > 1e-3, "the params did not move"


@pytest.mark.parametrize("spec", TORCH_SPECS, ids=SPEC_IDS)
def test_matches_torch_float32_groups_and_skipped_grads(torch, ft, spec):
    """float32, two param groups with their own lr, a param frozen for some steps,
    and a group lr changed mid-run."""
    data = batches(torch, STEPS, torch.float32)
    options = list(spec.option_sets())[-1]

    def groups(model):
        layers = list(model.children())
        return [{"params": layers[0].parameters(), "lr": options["lr"] * 2},
                {"params": list(layers[2].parameters()) + list(layers[4].parameters())}]

    def freeze(k, model):
        if 5 <= k < 12:
            model[2].bias.grad = None

    runs = []
    for cls in (getattr(ft, spec.torch_name), torch_optimizer(torch, spec)):
        model = make_mlp(torch, torch.float32)
        opt = cls(groups(model), **options)
        train(torch, model, opt, data[:15], before_step=freeze)
        opt.param_groups[1]["lr"] = options["lr"] / 3
        train(torch, model, opt, data[15:])
        runs.append(opt)
    assert_same_state(torch, runs[0], runs[1], 5e-4)  # float32 rounding, fed back through the network


def test_model_converted_after_construction(torch, ft):
    """model.double() swaps every param's storage: the next step must see the new tensors."""
    runs = []
    for module in (ft, torch.optim):
        model = make_mlp(torch, torch.float32)
        opt = module.Adam(model.parameters(), lr=0.01)
        train(torch, model, opt, batches(torch, 3, torch.float32))
        model.double()
        for s in opt.state.values():
            for k in ("exp_avg", "exp_avg_sq"):
                s[k] = s[k].double()
        train(torch, model, opt, batches(torch, 5))
        runs.append(model)
    np.testing.assert_allclose(flat(runs[0]), flat(runs[1]), rtol=1e-6, atol=1e-6)


def test_state_assignment_is_picked_up(torch, ft):
    runs = []
    for module in (ft, torch.optim):
        model = make_mlp(torch)
        opt = module.Adam(model.parameters(), lr=0.01)
        data = batches(torch, 10)
        train(torch, model, opt, data[:5])
        p = model[0].weight
        opt.state[p]["exp_avg"] = torch.full_like(p, 0.5)  # a new tensor, not an in-place update
        train(torch, model, opt, data[5:])
        runs.append(opt)
    assert_same_state(torch, runs[0], runs[1], 1e-10)


def test_add_param_group_and_deepcopy(torch, ft):
    runs = []
    for module in (ft, torch.optim):
        model = make_mlp(torch)
        opt = module.RMSprop(model[0].parameters(), lr=0.01, momentum=0.5, centered=True)
        data = batches(torch, 12)
        train(torch, model, opt, data[:4])
        opt.add_param_group({"params": list(model[2].parameters()) + list(model[4].parameters()),
                             "lr": 0.02})
        train(torch, model, opt, data[4:8])
        model_copy, opt_copy = copy.deepcopy((model, opt))
        train(torch, model, opt, data[8:])
        train(torch, model_copy, opt_copy, data[8:])
        runs += [opt, opt_copy]
    for run in runs[1:]:
        assert_same_state(torch, run, runs[0], 1e-10)


# ---- checkpoints -------------------------------------------------------------------

def saved(torch, state_dict, weights_only=True):
    buffer = io.BytesIO()
    torch.save(state_dict, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=weights_only)


@pytest.mark.parametrize("spec", TORCH_SPECS, ids=SPEC_IDS)
@pytest.mark.parametrize("direction", ["torch->fastoptim", "fastoptim->torch"])
def test_checkpoint_exchange(torch, ft, spec, direction):
    """Train 15 steps with one, load its live state_dict into the other on a copy of the
    model, then train both on: each matches torch.optim trained throughout, so the
    loaded state neither aliases the source nor loses anything."""
    options = list(spec.option_sets())[-1]
    data = batches(torch, 30)
    ours, theirs = getattr(ft, spec.torch_name), torch_optimizer(torch, spec)
    first, second = (theirs, ours) if direction == "torch->fastoptim" else (ours, theirs)
    reference_model = make_mlp(torch)
    reference = torch_optimizer(torch, spec)(reference_model.parameters(), **options)
    train(torch, reference_model, reference, data)

    model = make_mlp(torch)
    opt = first(model.parameters(), **options)
    train(torch, model, opt, data[:15])
    model_copy = copy.deepcopy(model)
    other = second(model_copy.parameters(), lr=0.123)
    other.load_state_dict(opt.state_dict())
    assert other.param_groups[0]["lr"] == options["lr"]
    for k in range(15, 30):  # interleaved, so shared state would show
        train(torch, model, opt, data[k:k + 1])
        train(torch, model_copy, other, data[k:k + 1])
    assert_same_state(torch, opt, reference, 1e-10)
    assert_same_state(torch, other, reference, 1e-10)


NO_TORCH_TWIN = [s for s in SPECS if not s.variant.torch_name]  # LAMB: torch.optim has none


@pytest.mark.parametrize("spec", NO_TORCH_TWIN, ids=[s.name for s in NO_TORCH_TWIN])
def test_without_a_torch_twin_the_torch_face_is_the_numpy_face(torch, ft, spec):
    """fastoptim.torch.<Class> steps exactly as fastoptim.<Class> on the same grads, float32 and
    float64, and resumes from its state_dict (through torch.save) bit for bit."""
    for dtype, options in ((torch.float64, list(spec.option_sets())[0]), (torch.float32, list(spec.option_sets())[-1])):
        data = batches(torch, 12, dtype)
        model = make_mlp(torch, dtype)
        arrays = [p.detach().numpy().copy() for p in model.parameters()]
        opt, ours = getattr(ft, spec.torch_name)(model.parameters(), **options), spec.cls(arrays, **options)

        def record(k, model):
            ours.step([p.grad.numpy().copy() for p in model.parameters()])
        train(torch, model, opt, data[:6], before_step=record)
        resumed = getattr(ft, spec.torch_name)(model.parameters(), lr=0.5)
        resumed.load_state_dict(saved(torch, opt.state_dict()))
        train(torch, model, resumed, data[6:], before_step=record)
        for p, a in zip(model.parameters(), arrays):
            np.testing.assert_array_equal(p.detach().numpy(), a)
        assert np.abs(flat(model) - flat(make_mlp(torch, dtype))).max() > 1e-4, "the params did not move"


def test_checkpoint_through_torch_save(torch, ft):
    runs = []
    for first, second in ((ft, torch.optim), (torch.optim, ft)):
        model = make_mlp(torch)
        opt = first.AdamW(model.parameters(), lr=0.01, amsgrad=True)
        train(torch, model, opt, batches(torch, 20)[:10])
        other = second.AdamW(model.parameters())
        other.load_state_dict(saved(torch, opt.state_dict()))
        train(torch, model, other, batches(torch, 20)[10:])
        runs.append(other)
    assert_same_state(torch, runs[0], runs[1], 1e-10)


@pytest.mark.parametrize("spec", TORCH_SPECS, ids=SPEC_IDS)
def test_state_dict_layout_is_torchs(torch, ft, spec):
    options = list(spec.option_sets())[-1]
    dicts = []
    for cls in (getattr(ft, spec.torch_name), torch_optimizer(torch, spec)):
        model = make_mlp(torch)
        opt = cls(model.named_parameters(), **options)
        train(torch, model, opt, batches(torch, 3))
        dicts.append(saved(torch, opt.state_dict()))
    ours, theirs = dicts
    # plus fastoptim's own 16-bit options (PRECISION_DEFAULTS), which torch.optim ignores on loading
    assert [sorted(set(g) - set(PRECISION_DEFAULTS)) for g in ours["param_groups"]] == [
        sorted(g) for g in theirs["param_groups"]]
    assert [g["params"] for g in ours["param_groups"]] == [g["params"] for g in theirs["param_groups"]]
    assert ours["param_groups"][0]["param_names"] == theirs["param_groups"][0]["param_names"]
    assert set(ours["state"]) == set(theirs["state"])
    for key, entry in theirs["state"].items():
        assert set(ours["state"][key]) == set(entry)
        for name, value in entry.items():
            assert ours["state"][key][name].dtype == value.dtype, name
            assert ours["state"][key][name].shape == value.shape, name


def test_fused_torch_checkpoint_loads(torch, ft):
    """torch's fused Adam keeps float32 steps and fused=True in its groups."""
    model = make_mlp(torch)
    theirs = torch.optim.Adam(model.parameters(), lr=0.01, fused=True)
    train(torch, model, theirs, batches(torch, 4))
    ours = ft.Adam(model.parameters())
    ours.load_state_dict(saved(torch, theirs.state_dict()))
    assert ours.param_groups[0]["fused"] is True
    train(torch, model, ours, batches(torch, 2))
    # torch's dtype for a fused group's step, kept live by the kernels
    assert all(int(s["step"]) == 6 and s["step"].dtype == torch.float32 for s in ours.state.values())


def test_load_state_dict_checks_first(torch, ft):
    model = make_mlp(torch)
    opt = ft.Adam(model.parameters(), lr=0.01)
    train(torch, model, opt, batches(torch, 2))
    good = opt.state_dict()
    before = copy.deepcopy(good)
    bad = copy.deepcopy(good)
    bad["state"][2]["exp_avg"] = torch.zeros(7)
    with pytest.raises(ValueError, match=r"loaded state\[2\]\['exp_avg'\] has shape \(7,\)"):
        opt.load_state_dict(bad)
    bad = copy.deepcopy(good)
    bad["param_groups"][0]["lr"] = -1.0
    with pytest.raises(ValueError, match="Invalid learning rate"):
        opt.load_state_dict(bad)
    bad = copy.deepcopy(good)
    bad["param_groups"][0]["betas"] = (0.9, 1.5)
    with pytest.raises(ValueError, match="Invalid beta parameter at index 1: 1.5"):
        opt.load_state_dict(bad)
    after = opt.state_dict()
    assert after["param_groups"][0]["lr"] == 0.01
    for key, entry in before["state"].items():
        for name, value in entry.items():
            assert torch.equal(after["state"][key][name], value)


# ---- learning rates ------------------------------------------------------------------

SCHEDULERS = {
    "StepLR": lambda s, o: s.StepLR(o, step_size=4, gamma=0.5),
    "OneCycleLR": lambda s, o: s.OneCycleLR(o, max_lr=0.05, total_steps=STEPS),  # cycles betas/momentum too
    "CosineAnnealingWarmRestarts": lambda s, o: s.CosineAnnealingWarmRestarts(o, T_0=7),
    "SequentialLR": lambda s, o: s.SequentialLR(o, [s.LinearLR(o, 0.1, total_iters=5), s.ExponentialLR(o, 0.9)],
                                                milestones=[5]),
}


@pytest.mark.parametrize("name", list(SCHEDULERS))
@pytest.mark.parametrize("optimizer", ["SGD", "Adam"])
def test_lr_scheduler_drives_fastoptim(torch, ft, name, optimizer):
    options = dict(lr=0.01, momentum=0.9) if optimizer == "SGD" else dict(lr=0.01)
    runs, lrs = [], []
    for module in (ft, torch.optim):
        model = make_mlp(torch)
        opt = getattr(module, optimizer)(model.parameters(), **options)
        scheduler = SCHEDULERS[name](torch.optim.lr_scheduler, opt)
        train(torch, model, opt, batches(torch, STEPS), scheduler=scheduler)
        runs.append(opt)
        lrs.append(scheduler.get_last_lr())
    assert lrs[0] == lrs[1]
    assert_same_state(torch, runs[0], runs[1], 1e-10)


def test_reduce_lr_on_plateau(torch, ft):
    model = make_mlp(torch)
    opt = ft.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, patience=1, factor=0.5)
    for _ in range(4):
        opt.step()
        scheduler.step(1.0)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.05)


def test_callable_lr_is_a_schedule(torch, ft):
    """lr(t), t = steps taken (0 first), equals torch's LambdaLR; param_groups shows the lr used."""
    used = []
    model = make_mlp(torch)
    opt = ft.Adam(model.parameters(), lr=lambda t: 0.02 * 0.9 ** t)
    assert opt.param_groups[0]["lr"] == 0.02 and opt.step_count == 0
    for k, (x, y) in enumerate(batches(torch, 10)):
        opt.zero_grad()
        ((model(x) - y) ** 2).mean().backward()
        opt.step()
        used.append(opt.param_groups[0]["lr"])
    assert used == [0.02 * 0.9 ** t for t in range(10)]
    assert opt.step_count == 10 and callable(opt.param_groups[0]["lr_schedule"])
    model = make_mlp(torch)
    theirs = torch.optim.Adam(model.parameters(), lr=0.02)
    train(torch, model, theirs, batches(torch, 10),
          scheduler=torch.optim.lr_scheduler.LambdaLR(theirs, lambda t: 0.9 ** t))
    assert_same_state(torch, opt, theirs, 1e-10)


def halving(t):
    return 0.04 * 0.5 ** t


def test_schedule_checkpoint_and_replacement(torch, ft):
    """step_count travels in the state_dict (torch.optim ignores it); a number written
    to 'lr' replaces the schedule; a schedule written to 'lr' installs it."""
    model = make_mlp(torch)
    opt = ft.SGD(model.parameters(), lr=halving)
    train(torch, model, opt, batches(torch, 3))
    sd = saved(torch, opt.state_dict(), weights_only=False)  # a schedule is code, not weights
    assert sd["step_count"] == 3 and sd["param_groups"][0]["lr"] == 0.04 * 0.5 ** 2
    torch.optim.SGD(make_mlp(torch).parameters()).load_state_dict(sd)
    other = ft.SGD(model.parameters(), lr=0.5)
    other.load_state_dict(sd)
    assert other.step_count == 3 and other.param_groups[0]["lr_schedule"] is halving
    train(torch, model, other, batches(torch, 1))
    assert other.param_groups[0]["lr"] == 0.04 * 0.5 ** 3
    other.param_groups[0]["lr"] = 0.01
    train(torch, model, other, batches(torch, 1))
    assert other.param_groups[0]["lr"] == 0.01 and "lr_schedule" not in other.param_groups[0]
    other.param_groups[0]["lr"] = halving
    train(torch, model, other, batches(torch, 1))
    assert other.param_groups[0]["lr"] == 0.04 * 0.5 ** 5 and other.step_count == 6


def test_tensor_lr(torch, ft):
    runs = []
    for module in (ft, torch.optim):
        model = make_mlp(torch)
        opt = module.Adam(model.parameters(), lr=torch.tensor(0.01, dtype=torch.float64))
        train(torch, model, opt, batches(torch, 5))
        runs.append(opt)
    assert_same_state(torch, runs[0], runs[1], 1e-10)


# ---- errors ------------------------------------------------------------------------

def params_and_state(torch, opt):
    params = [p for g in opt.param_groups for p in g["params"]]
    return ([p.detach().clone() for p in params],
            [{k: v.clone() for k, v in opt.state[p].items()} for p in params if p in opt.state])


def assert_nothing_changed(torch, opt, before):
    after = params_and_state(torch, opt)
    for a, b in zip(after[0], before[0]):
        assert torch.equal(a, b)
    assert len(after[1]) == len(before[1])
    for a, b in zip(after[1], before[1]):
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# (Sparse grads and grads laid out unlike their param take torch's path: test_torch_dropin.py.)
@pytest.mark.parametrize("bad_grad, error, match", [
    ("dtype", TypeError, r"params\[1\]\.grad has dtype torch.float32 but params\[1\] has dtype torch.float64"),
    ("alias", ValueError, r"params\[1\]\.grad shares memory with params\[0\]"),
])
def test_bad_grad_is_an_error_and_changes_nothing(torch, ft, bad_grad, error, match):
    a = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    opt = ft.Adam([a, b], lr=0.1)
    a.grad, b.grad = torch.ones_like(a), torch.ones_like(b)
    opt.step()
    before = params_and_state(torch, opt)
    if bad_grad == "dtype":
        b.grad_dtype = None
        b.grad = torch.ones(4, 3, dtype=torch.float32)
    else:
        b.grad = a.detach()
    with pytest.raises(error, match=match):
        opt.step()
    assert_nothing_changed(torch, opt, before)


def test_bad_params(torch, ft):
    with pytest.raises(ValueError, match="optimizer got an empty parameter list"):
        ft.Adam([])


def test_overlapping_params_step_as_torch(torch, ft):
    """Views sharing memory: torch steps one after the other, and so does its path here."""
    runs = []
    for module in (ft, torch.optim):
        base = torch.arange(10.0, dtype=torch.float64)
        v1, v2 = base[:6].requires_grad_(), base[4:].requires_grad_()
        opt = module.SGD([v1, v2], lr=0.1)
        v1.grad, v2.grad = torch.ones(6, dtype=torch.float64), torch.full((6,), 2.0, dtype=torch.float64)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ft.FallbackWarning)
            opt.step()
        runs.append(base)
    torch.testing.assert_close(runs[0], runs[1], rtol=0, atol=0)


def test_param_moved_after_construction(torch, ft):
    """p.data swapped for a strided view with gaps: that param takes torch's path from then on."""
    runs = []
    for module in (ft, torch.optim):
        p = torch.nn.Parameter(torch.zeros(3, dtype=torch.float64))
        opt = module.Adam([p])
        p.grad = torch.ones(3, dtype=torch.float64)
        opt.step()
        p.data = torch.zeros(6, dtype=torch.float64)[::2]  # new storage, strided
        p.grad = torch.ones(3, dtype=torch.float64)
        if module is ft:
            with pytest.warns(ft.FallbackWarning, match="strided view with gaps"):
                opt.step()
        else:
            opt.step()
        runs.append((p.detach().clone(), opt.state[p]["exp_avg"].clone()))
    for mine, theirs in zip(*runs):
        torch.testing.assert_close(mine, theirs, rtol=1e-12, atol=1e-12)


def test_param_reshaped_in_place_after_construction(torch, ft):
    """p.data = p.data.view(...) keeps the memory but not the shape: the plan follows."""
    runs = []
    for module in (ft, torch.optim):
        p = torch.nn.Parameter(torch.arange(12.0, dtype=torch.float64).reshape(4, 3))
        opt = module.SGD([p], lr=0.1)
        p.grad = torch.ones(4, 3, dtype=torch.float64)
        opt.step()
        p.data = p.data.view(12)
        p.grad = torch.arange(12.0, dtype=torch.float64)
        opt.step()
        runs.append(p.detach().clone())
    torch.testing.assert_close(runs[0], runs[1], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(lr=-0.1), ValueError, "Invalid learning rate"),
    (dict(betas=(1.0, 0.9)), ValueError, "Invalid beta parameter at index 0"),
    (dict(eps=float("nan")), ValueError, "Invalid epsilon value"),
    (dict(fused=True, differentiable=True), RuntimeError, "`fused` does not support `differentiable`"),
    (dict(fused=True, foreach=True), RuntimeError, "`fused` and `foreach` cannot be `True` together"),
    (dict(amsgrad="yes"), TypeError, "Invalid amsgrad"),
])
def test_bad_hyperparameters(torch, ft, kwargs, error, match):
    with pytest.raises(error, match=match):
        ft.Adam([torch.zeros(2, requires_grad=True)], **kwargs)


def test_bad_group_leaves_no_trace(torch, ft):
    opt = ft.SGD([torch.zeros(2, requires_grad=True)], lr=0.1)
    with pytest.raises(ValueError, match=r"Invalid momentum value.*param_groups\[1\]"):
        opt.add_param_group({"params": [torch.zeros(3, requires_grad=True)], "momentum": -1})
    assert len(opt.param_groups) == 1


def test_bad_schedule_value_changes_nothing(torch, ft):
    p = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    opt = ft.SGD([p], lr=lambda t: 0.1 if t < 2 else float("nan"))
    for _ in range(2):
        p.grad = torch.ones_like(p)
        opt.step()
    before = p.detach().clone()
    with pytest.raises(ValueError, match=r"Invalid learning rate.*\['lr_schedule'\] at step t=2"):
        opt.step()
    assert torch.equal(p.detach(), before)
    assert opt.param_groups[0]["lr"] == 0.1 and opt.step_count == 2


def test_import_error_without_torch():
    code = "import sys; sys.modules['torch'] = None\ntry:\n import fastoptim.torch\nexcept ImportError as e:\n print(e)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/")
    assert "fastoptim.torch needs PyTorch" in out.stdout, out.stderr


# ---- a real model -------------------------------------------------------------------

def test_batchnorm_mlp_learns_digits(torch, ft):
    """An MLP with batch normalization, trained with fastoptim.torch.Adam, classifies
    scikit-learn's digits (1797 8x8 images) with >= 95% test accuracy."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    X, y = load_digits(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(X / 16.0, y, test_size=0.25, random_state=0, stratify=y)
    X_train, X_test = torch.tensor(X_train, dtype=torch.float32), torch.tensor(X_test, dtype=torch.float32)
    y_train, y_test = torch.tensor(y_train), torch.tensor(y_test)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.BatchNorm1d(128), torch.nn.ReLU(),
                                torch.nn.Linear(128, 10))
    opt = ft.Adam(model.parameters(), lr=1e-2)
    generator = torch.Generator().manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a small model: one thread is fastest, and immune to busy CI cores
    try:
        for epoch in range(4):
            model.train()
            for idx in torch.randperm(len(X_train), generator=generator).split(64):
                opt.zero_grad()
                torch.nn.functional.cross_entropy(model(X_train[idx]), y_train[idx]).backward()
                opt.step()
    finally:
        torch.set_num_threads(threads)
    model.eval()
    with torch.no_grad():
        accuracy = (model(X_test).argmax(1) == y_test).float().mean().item()
    assert accuracy >= 0.95, accuracy


def test_bench_torch_runs(torch, monkeypatch):
    """python -m fastoptim bench torch, on small stand-ins for its two models."""
    from fastoptim.benchmarks import torch as torch_bench
    monkeypatch.setattr(torch_bench, "make_model", lambda torch, name: torch.nn.Sequential(
        *[torch.nn.Linear(8, 8) for _ in range(2 if name == "large" else 20)]))
    out = io.StringIO()
    results = torch_bench.run(["adam", "rmsprop"], (1,), ["fused", "foreach"], rounds=1, min_seconds=0.0, out=out)
    text = out.getvalue()
    assert "vs fused" in text and "adam" in text and "rmsprop" in text
    runs = {(r["optimizer"], r["model"]): r for r in results["runs"]}
    assert set(runs) == {(o, m) for o in ("adam", "rmsprop") for m in ("large", "many")}
    assert set(runs[("adam", "many")]["speedups"]) == {"fused", "foreach"}
    assert set(runs[("rmsprop", "many")]["speedups"]) == {"foreach"}  # torch has no fused RMSprop


def test_steps_do_not_grow_memory(torch, ft):
    import gc
    import tracemalloc
    model = torch.nn.Sequential(*[torch.nn.Linear(8, 8) for _ in range(20)])
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    opt = ft.Adam(model.parameters(), lr=1e-3)
    for _ in range(3):
        opt.step()
    gc.collect()
    tracemalloc.start()
    growths = []
    try:
        opt.step()
        # two windows of 100 steps: a leak grows both; a one-time allocation elsewhere in the
        # interpreter (a cache filled, a dict resized) lands in at most one of them
        for _ in range(2):
            gc.collect()
            before = tracemalloc.get_traced_memory()[0]
            for _ in range(100):
                opt.step()
            gc.collect()
            growths.append(tracemalloc.get_traced_memory()[0] - before)
    finally:
        tracemalloc.stop()
    assert min(growths) < 4096, growths


def test_batchnorm_example(torch, tmp_path):
    """examples/batchnorm.py: without batch norm the MLP diverges, with it the loss falls; a PNG is written."""
    pytest.importorskip("matplotlib")
    script = Path(__file__).resolve().parents[1] / "examples" / "batchnorm.py"
    out = tmp_path / "curves.png"
    run = subprocess.run([sys.executable, str(script), "--lr", "0.5", "--epochs", "2", "--out", str(out)],
                         capture_output=True, text=True, cwd=tmp_path, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert "without batch norm" in lines[0] and "diverged" in lines[0], run.stdout
    assert "with batch norm" in lines[1] and "final loss" in lines[1], run.stdout
    assert out.stat().st_size > 10_000
