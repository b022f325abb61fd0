"""Every rule torch.optim has, on torch's own test configurations: each CPU config of
optim_db (torch.testing._internal.common_optimizers, optim_inputs_func(device="cpu")),
both dtypes, params of shapes 0-d, 1-element, odd sizes, 2-D and 3-D, one param
skipping steps, every state entry compared; NaN and inf grads; and torch's
verdict on bad hyperparameters (ours says what torch says, then where).

On CPU, torch 2.13's configs set none of the implementation flags (foreach,
fused, capturable, differentiable: torch's tests add those themselves);
test_configs_set_no_implementation_flag fails if that changes.  A tensor lr
(torch's "Tensor lr" configs) is a NumPy float32 for the NumPy classes.
"""
import math
import os

import numpy as np
import pytest

from fastoptim._registry import SPECS
from fastoptim.rules import Pair


def _optim_db():
    """torch's optim_db, or [] when torch is missing (CI sets FASTOPTIM_REQUIRE_TORCH=1)."""
    try:
        from torch.testing._internal.common_optimizers import optim_db
    except ImportError:
        if os.environ.get("FASTOPTIM_REQUIRE_TORCH", "") not in ("", "0"):
            raise
        return []
    return optim_db


OPTIM_DB = {info.optim_cls.__name__: info for info in _optim_db()}
TORCH_SPECS = [spec for spec in SPECS if spec.variant.torch_name in OPTIM_DB]
CONFIGS = [(spec, item.desc, item.kwargs) for spec in TORCH_SPECS
           for item in OPTIM_DB[spec.torch_name].optim_inputs_func(device="cpu")]
IMPLEMENTATION_FLAGS = ("capturable", "differentiable", "foreach", "fused")
STEPS = 20
SHAPES = [(), (1,), (7,), (3, 5), (2, 3, 4), (1, 9), (33,)]
SKIPPING = 1  # this param has no grad every fourth step
TOLERANCE = {np.float64: dict(rtol=1e-10, atol=1e-10), np.float32: dict(rtol=1e-5, atol=1e-5)}


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Tensors of a few elements: torch's second OpenMP thread only spins (40x the CPU time when busy)."""
    try:
        import torch
    except ImportError:
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def numpy_options(torch, kwargs):
    """A config's options for the NumPy classes: a tensor (lr) as the NumPy float32 it holds."""
    return {k: np.float32(v.item()) if isinstance(v, torch.Tensor) else v for k, v in kwargs.items()}


def assert_same(torch, ours, theirs, params, tparams, dtype, where):
    """Params and every state entry (the step count included) as torch's."""
    for i, (p, t) in enumerate(zip(params, tparams)):
        np.testing.assert_allclose(p, t.detach().numpy(), **TOLERANCE[dtype], err_msg=f"{where} params[{i}]")
        mine, their = ours.state.get(i, {}), theirs.state.get(t, {})
        assert set(mine) == set(their), f"{where} params[{i}]: state keys {set(mine)} vs torch {set(their)}"
        for key, value in their.items():
            value = value.detach().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
            if key == "step":
                assert int(mine[key]) == value, f"{where} params[{i}] step"
                continue
            assert mine[key].shape == value.shape and mine[key].dtype == value.dtype, f"{where} {key}"
            np.testing.assert_allclose(mine[key], value, **TOLERANCE[dtype], err_msg=f"{where} params[{i}] {key}")


def step_both(torch, ours, theirs, tparams, grads):
    ours.step(grads)
    for t, g in zip(tparams, grads):
        t.grad = None if g is None else torch.from_numpy(g.copy())
    theirs.step()


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("spec, desc, kwargs", CONFIGS, ids=[f"{s.name}-{d}" for s, d, _ in CONFIGS])
def test_matches_torch_on_its_configs(torch, spec, desc, kwargs, dtype):
    rng = np.random.default_rng(0)
    params = [rng.standard_normal(s).astype(dtype) for s in SHAPES]
    tparams = [torch.tensor(p.copy(), requires_grad=True) for p in params]
    ours = spec.cls(params, **numpy_options(torch, kwargs))
    theirs = getattr(torch.optim, spec.torch_name)(tparams, **kwargs)
    for k in range(STEPS):
        grads = [None if (i == SKIPPING and k % 4 == 2) else rng.standard_normal(p.shape).astype(dtype)
                 for i, p in enumerate(params)]
        step_both(torch, ours, theirs, tparams, grads)
    assert_same(torch, ours, theirs, params, tparams, dtype, f"{spec.name} {desc}")


def test_configs_set_no_implementation_flag(torch):
    assert CONFIGS, "no rule of ours is in torch's optim_db"
    for spec, desc, kwargs in CONFIGS:
        assert not set(kwargs) & set(IMPLEMENTATION_FLAGS), (spec.name, desc)


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("spec", TORCH_SPECS, ids=lambda s: s.name)
def test_special_values_match_torch(torch, spec, dtype):
    """NaN, inf and zero grads at the defaults: the same NaNs, infinities and values as torch."""
    rng = np.random.default_rng(1)
    params = [rng.standard_normal(11).astype(dtype)]
    tparams = [torch.tensor(params[0].copy(), requires_grad=True)]
    ours, theirs = spec.cls(params), getattr(torch.optim, spec.torch_name)(tparams)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):  # inf - inf, 0 * inf on purpose
        for step in range(3):
            grad = rng.standard_normal(11).astype(dtype)
            grad[[1, 4, 7]] = [0.0, -np.inf, np.nan] if step == 1 else [np.nan, np.inf, 0.0]
            step_both(torch, ours, theirs, tparams, [grad])
    pairs = [(params[0], tparams[0].detach().numpy(), "param")] + [
        (ours.state[0][key], value.numpy(), key) for key, value in theirs.state[tparams[0]].items() if key != "step"]
    for mine, their, what in pairs:
        np.testing.assert_array_equal(np.isnan(mine), np.isnan(their), err_msg=f"{spec.name} {what}")
        finite = np.isfinite(their)
        np.testing.assert_array_equal(mine[~finite & ~np.isnan(their)], their[~finite & ~np.isnan(their)])
        np.testing.assert_allclose(mine[finite], their[finite], **TOLERANCE[dtype], err_msg=f"{spec.name} {what}")


# ---- bad hyperparameters ---------------------------------------------------------------------

def _bad_values(spec):
    """(description, options) with one hyperparameter out of its bounds: each Real option and each
    part of a Pair, below its low end, at or above its high end, and NaN."""
    out = []
    for option in spec.rule.options:
        parts = option.parts if isinstance(option, Pair) else (option,)
        for k, part in enumerate(parts):
            if not hasattr(part, "low"):
                continue  # a Flag
            values = [math.nan]
            if math.isfinite(part.low):
                values.append(part.low if part.low_open else part.low - 0.5)
            if math.isfinite(part.high):
                values.append(part.high if part.high_open else part.high + 0.5)
            for value in values:
                if isinstance(option, Pair):
                    pair = list(option.default)
                    pair[k] = value
                    out.append((f"{part.name}={value}", {option.name: tuple(pair)}))
                else:
                    out.append((f"{part.name}={value}", {option.name: value}))
    return out


BAD = [(spec, desc, options) for spec in TORCH_SPECS for desc, options in _bad_values(spec)]


@pytest.mark.parametrize("spec, desc, options", BAD, ids=[f"{s.name}-{d}" for s, d, _ in BAD])
def test_bad_hyperparameter_gets_torchs_message(torch, spec, desc, options):
    """Where torch's constructor refuses a value, ours does with torch's words first
    ("Invalid beta parameter at index 0: ..."), then the argument and where it came from."""
    import fastoptim.torch as ft
    try:
        getattr(torch.optim, spec.torch_name)([torch.zeros(2, requires_grad=True)], **options)
    except ValueError as error:
        prefix = str(error).split(":")[0] + ": "
        for make in (lambda: spec.cls([np.zeros(2)], **options),
                     lambda: getattr(ft, spec.torch_name)([torch.zeros(2, requires_grad=True)], **options)):
            with pytest.raises(ValueError) as ours:
                make()
            assert str(ours.value).startswith(prefix), (str(ours.value), str(error))
