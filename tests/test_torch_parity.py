"""The stateful optimizers against torch.optim: every option set, both dtypes,
several params (0-d included), several groups, skipped (None) grads, 60 steps.
A rule torch.optim lacks (Lion) meets its reference in a torch.optim.Optimizer (conftest)."""
import numpy as np
import pytest

from fastoptim._registry import TORCH_SPECS

from conftest import DTYPES, torch_optimizer

STEPS = 60
SHAPES = [(), (1,), (7,), (3, 5), (33,)]
TOLERANCE = {np.float64: dict(rtol=1e-10, atol=1e-10), np.float32: dict(rtol=1e-5, atol=1e-5)}


def make_params(rng, dtype):
    return [rng.standard_normal(s).astype(dtype) for s in SHAPES]


def run_both(torch, spec, groups_np, groups_torch, options, grads_per_step):
    ours = spec.cls(groups_np, **options)
    theirs = torch_optimizer(torch, spec)(groups_torch, **options)
    tparams = [p for g in theirs.param_groups for p in g["params"]]
    for grads in grads_per_step:
        ours.step(grads)
        for t, g in zip(tparams, grads):
            t.grad = None if g is None else torch.from_numpy(g.copy())
        theirs.step()
    return ours, theirs, tparams


def grads_for(rng, params, steps):
    """Random grads; param 1 skips every fifth step and param 3 starts late."""
    out = []
    for step in range(steps):
        grads = [rng.standard_normal(p.shape).astype(p.dtype) for p in params]
        if step % 5 == 2:
            grads[1] = None
        if step < 7:
            grads[3] = None
        out.append(grads)
    return out


def assert_same(ours, theirs, tparams, params, dtype, where):
    tol = TOLERANCE[dtype]
    for i, (p, t) in enumerate(zip(params, tparams)):
        np.testing.assert_allclose(p, t.detach().numpy(), **tol, err_msg=f"{where} params[{i}]")
        mine, theirs_state = ours.state.get(i, {}), theirs.state.get(t, {})
        assert set(mine) == set(theirs_state), f"{where}: state keys {set(mine)} vs torch {set(theirs_state)}"
        for key, value in theirs_state.items():
            if key == "step":
                assert int(mine[key]) == int(value.item()), f"{where} params[{i}] step"
            else:
                np.testing.assert_allclose(mine[key], value.detach().numpy(), **tol,
                                           err_msg=f"{where} params[{i}] {key}")


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("spec", TORCH_SPECS, ids=lambda s: s.name)
def test_matches_torch_every_option(torch, spec, dtype):
    for options in spec.option_sets():
        rng = np.random.default_rng(0)
        params = make_params(rng, dtype)
        tparams = [torch.tensor(p.copy(), requires_grad=True) for p in params]
        grads = grads_for(rng, params, STEPS)
        ours, theirs, tparams = run_both(torch, spec, params, tparams, options, grads)
        assert_same(ours, theirs, tparams, params, dtype, f"{spec.name} {options}")


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("spec", TORCH_SPECS, ids=lambda s: s.name)
def test_matches_torch_param_groups(torch, spec, dtype):
    """Groups override lr and weight_decay (if the rule has it); lr changes between steps through param_groups."""
    rng = np.random.default_rng(1)
    params = make_params(rng, dtype)
    tparams = [torch.tensor(p.copy(), requires_grad=True) for p in params]
    options = next(iter(spec.option_sets()))
    base_lr = options["lr"]
    split = lambda ps: [{"params": ps[:2], "lr": base_lr * 2},  # noqa: E731
                        {"params": ps[2:], **({"weight_decay": 0.05} if "weight_decay" in options else {})}]
    ours = spec.cls(split(params), **options)
    theirs = torch_optimizer(torch, spec)(split(tparams), **options)
    for step, grads in enumerate(grads_for(rng, params, STEPS)):
        if step == 30:
            for opt in (ours, theirs):
                opt.param_groups[1]["lr"] = base_lr / 3
        ours.step(grads)
        for t, g in zip(tparams, grads):
            t.grad = None if g is None else torch.from_numpy(g.copy())
        theirs.step()
    assert_same(ours, theirs, tparams, params, dtype, f"{spec.name} groups")
    ours_sd, theirs_sd = ours.state_dict(), theirs.state_dict()
    torch_only = {"foreach", "capturable", "differentiable", "fused"}
    for g_ours, g_theirs in zip(ours_sd["param_groups"], theirs_sd["param_groups"]):
        assert set(g_ours) == set(g_theirs) - torch_only
        assert g_ours["params"] == g_theirs["params"]
    assert set(ours_sd["state"]) == set(theirs_sd["state"])


def test_torch_checkpoint_loads_into_fastoptim(torch):
    """A torch.optim.Adam state_dict loads, and training continues as torch's does."""
    rng = np.random.default_rng(2)
    params = make_params(rng, np.float64)
    tparams = [torch.tensor(p.copy(), requires_grad=True) for p in params]
    theirs = torch.optim.Adam(tparams, lr=0.01, amsgrad=True)
    grads = grads_for(rng, params, 40)
    for g_step in grads[:20]:
        for t, g in zip(tparams, g_step):
            t.grad = None if g is None else torch.from_numpy(g.copy())
        theirs.step()
    from fastoptim import Adam
    mine = [t.detach().numpy().copy() for t in tparams]
    ours = Adam(mine, lr=0.5, amsgrad=True)
    ours.load_state_dict(theirs.state_dict())
    assert ours.param_groups[0]["lr"] == 0.01
    for g_step in grads[20:]:
        ours.step(g_step)
        for t, g in zip(tparams, g_step):
            t.grad = None if g is None else torch.from_numpy(g.copy())
        theirs.step()
    assert_same(ours, theirs, tparams, mine, np.float64, "adam from torch checkpoint")
