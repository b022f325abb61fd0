"""What a new user hit (issue 14): each item as tests, over every optimizer where it applies."""
import copy
import io
import pickle

import numpy as np
import pytest

import fastoptim
from fastoptim import schedules
from fastoptim._registry import SPECS

from conftest import assert_unchanged, snapshot

ALL = pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)


def _arrays(rng, shapes, dtype=np.float64):
    return [rng.standard_normal(s).astype(dtype) for s in shapes]


def _state_arrays(opt):
    return [v for s in opt.state.values() for v in s.values() if isinstance(v, np.ndarray)]


def _same_bits(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


# ---- 1. checkpoints of dict params match by name -------------------------------------------

@ALL
def test_dict_checkpoint_loads_by_name_whatever_the_order(spec):
    rng = np.random.default_rng(1)
    shapes = {"w": (3, 4), "b": (4,), "u": (2,)}
    params = {k: rng.standard_normal(s) for k, s in shapes.items()}
    opt = spec.cls(params, lr=0.01)
    for _ in range(3):
        opt.step({k: rng.standard_normal(s) for k, s in shapes.items()})
    saved = opt.state_dict()
    # The same names in another order, and each param's values elsewhere in memory.
    order = ["u", "w", "b"]
    params2 = {k: params[k].copy() for k in order}
    opt2 = spec.cls(params2, lr=0.01)
    opt2.load_state_dict(saved)
    grads = {k: rng.standard_normal(shapes[k]) for k in shapes}
    opt.step(grads)
    opt2.step(grads)
    for k in shapes:
        assert _same_bits(params[k], params2[k]), k
        assert opt2.state.get(order.index(k), {}).keys() == opt.state.get(list(shapes).index(k), {}).keys()


@pytest.mark.parametrize("names, message", [
    # unknown: saved names this optimizer lacks; missing: its names the checkpoint lacks
    (["w", "c"], r"unknown \['b'\]; missing \['c'\]"),        # a renamed param
    (["x", "w"], r"unknown \['b'\]; missing \['x'\]"),
    (["b", "w2"], r"unknown \['w'\]; missing \['w2'\]"),
])
def test_dict_checkpoint_with_other_names_is_refused_before_anything_changes(names, message):
    rng = np.random.default_rng(2)
    opt = fastoptim.Adam({"w": rng.standard_normal(3), "b": rng.standard_normal(3)}, lr=0.1)
    opt.step({"w": np.ones(3), "b": np.ones(3)})
    other = fastoptim.Adam({n: rng.standard_normal(3) for n in names}, lr=0.5)
    other.step({n: np.ones(3) for n in names})
    before = snapshot(_state_arrays(other))
    groups_before = copy.deepcopy([{k: v for k, v in g.items() if k != "params"} for g in other.param_groups])
    with pytest.raises(ValueError, match=message):
        other.load_state_dict(opt.state_dict())
    assert_unchanged(before, _state_arrays(other))
    assert [{k: v for k, v in g.items() if k != "params"} for g in other.param_groups] == groups_before


def test_dict_checkpoint_across_groups_matches_by_name_in_each_group():
    rng = np.random.default_rng(3)
    p = {n: rng.standard_normal(5) for n in "abcd"}
    opt = fastoptim.SGD([{"params": {"a": p["a"], "b": p["b"]}}, {"params": {"c": p["c"], "d": p["d"]}, "lr": 0.5}],
                        lr=0.1, momentum=0.9)
    opt.step([{"a": np.ones(5), "b": 2 * np.ones(5)}, {"c": 3 * np.ones(5), "d": 4 * np.ones(5)}])
    q = {n: v.copy() for n, v in p.items()}
    opt2 = fastoptim.SGD([{"params": {"b": q["b"], "a": q["a"]}}, {"params": {"d": q["d"], "c": q["c"]}, "lr": 0.5}],
                         lr=0.1, momentum=0.9)
    opt2.load_state_dict(opt.state_dict())
    assert opt2.param_groups[0]["param_names"] == ["b", "a"]  # this optimizer's own order stays
    np.testing.assert_array_equal(opt2.state["b"]["momentum_buffer"], 2 * np.ones(5))
    np.testing.assert_array_equal(opt2.state["c"]["momentum_buffer"], 3 * np.ones(5))


# ---- 2. pickle and deepcopy after steps -------------------------------------------------

@ALL
@pytest.mark.parametrize("how", ["pickle", "deepcopy", "copy_module_pickle_of_schedule"])
def test_optimizer_pickles_and_copies_after_steps_and_continues_bit_identically(spec, how):
    rng = np.random.default_rng(4)
    params = {"w": rng.standard_normal((4, 5)).astype(np.float32), "b": np.zeros((), np.float32)}
    lr = schedules.cosine(0.05, total_steps=20) if how.startswith("copy_module") else 0.01
    opt = spec.cls(params, lr=lr)
    grads = [{"w": rng.standard_normal((4, 5)).astype(np.float32), "b": np.float32(rng.standard_normal())}
             for _ in range(6)]
    for g in grads[:3]:
        opt.step(g)
    clone = copy.deepcopy(opt) if how == "deepcopy" else pickle.loads(pickle.dumps(opt))
    assert clone.step_count == opt.step_count
    for g in grads[3:]:
        opt.step(g)
        clone.step(g)
    for name in params:
        assert _same_bits(opt.param_groups[0]["params"][opt._keys.index(name)],
                          clone.param_groups[0]["params"][clone._keys.index(name)])
    for i in opt.state:
        for key, value in opt.state[i].items():
            assert _same_bits(value, clone.state[i][key]), (i, key)
    # The copy owns its arrays: stepping it leaves the original alone.
    before = snapshot(params.values())
    clone.step(grads[0])
    assert_unchanged(before, params.values())


# ---- 3. NumPy checkpoints into fastoptim.torch and back ---------------------------------------

@ALL
def test_numpy_state_dict_loads_into_fastoptim_torch_and_back(spec, torch):
    import fastoptim.torch as ftorch
    rng = np.random.default_rng(5)
    w0 = rng.standard_normal((3, 4))
    opt = spec.cls([w0.copy()], lr=0.01)
    for _ in range(3):
        opt.step([rng.standard_normal((3, 4))])
    t = torch.tensor(opt.param_groups[0]["params"][0].copy(), requires_grad=True)
    topt = getattr(ftorch, spec.variant.name)([t], lr=0.01)
    topt.load_state_dict(opt.state_dict())
    for value in topt.state[t].values():
        assert isinstance(value, torch.Tensor)
    g = rng.standard_normal((3, 4))
    t.grad = torch.tensor(g)
    topt.step()
    opt.step([g])
    if any(slot.scalar for slot in spec.rule.state):
        # torch's load_state_dict casts a per-tensor scalar (NAdam's float32 mu_product) to the
        # param's dtype, as fastoptim.torch does after it: the next steps round differently
        def same(a, b):
            np.testing.assert_allclose(a, b, rtol=1e-9)
            return True
    else:
        same = _same_bits
    assert same(t.detach().numpy(), opt.param_groups[0]["params"][0])
    # ... and back: a fastoptim.torch checkpoint into the NumPy class, arrays from tensors.
    back = spec.cls([t.detach().numpy().copy()], lr=0.01)
    back.load_state_dict(topt.state_dict())
    g = rng.standard_normal((3, 4))
    back.step([g])
    opt.step([g])
    assert same(back.param_groups[0]["params"][0], opt.param_groups[0]["params"][0])
    for entry in back.state.values():
        for value in entry.values():
            assert isinstance(value, (np.ndarray, int))


# ---- 4. a param resized in place ----------------------------------------------------------

@ALL
@pytest.mark.parametrize("new_shape", [(40,), (2,), (1000, 3)])
def test_param_resized_in_place_is_refused_not_stepped(spec, new_shape):
    w = np.ones(10)
    opt = spec.cls([w], lr=0.1)
    opt.step([np.ones(10)])
    w.resize(new_shape, refcheck=False)  # may move the data: the tables would point at freed memory
    state_before = snapshot(_state_arrays(opt))
    param_before = w.copy()
    with pytest.raises(ValueError, match=r"params\[0\] was resized or reallocated in place"):
        opt.step([np.ones(new_shape)])
    assert_unchanged([param_before] + state_before, [w] + _state_arrays(opt))


def test_state_array_resized_in_place_is_refused():
    w = np.ones(10)
    opt = fastoptim.Adam([w], lr=0.1)
    opt.step([np.ones(10)])
    opt.state[0]["exp_avg_sq"].resize((1000,), refcheck=False)
    with pytest.raises(ValueError, match=r"params\[0\] \(a state array of it\) was resized"):
        opt.step([np.ones(10)])


# ---- 5. thread counts ---------------------------------------------------------------------

@pytest.mark.parametrize("n", [200000, 10**9, fastoptim._config.max_threads() + 1])
def test_absurd_thread_count_is_an_error_and_changes_nothing(n):
    before = fastoptim.get_num_threads()
    with pytest.raises(ValueError, match=rf"n_threads={n} is more than fastoptim allows"):
        fastoptim.set_num_threads(n)
    with pytest.raises(ValueError, match="more than fastoptim allows"):
        with fastoptim.num_threads(n):
            pass
    assert fastoptim.get_num_threads() == before


def test_absurd_omp_num_threads_is_clamped_at_import():
    import os
    import subprocess
    import sys
    code = "import fastoptim; print(fastoptim.get_num_threads(), fastoptim._config.max_threads())"
    out = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, OMP_NUM_THREADS="200000"),
                         capture_output=True, text=True, timeout=120, check=True).stdout.split()
    assert out[0] == out[1]


def test_thread_count_up_to_the_bound_is_accepted_and_steps():
    w = np.ones(100)
    with fastoptim.num_threads(fastoptim._config.max_threads()):
        fastoptim.SGD([w], lr=0.1).step([np.ones(100)])
    np.testing.assert_array_equal(w, 0.9)


# ---- 6. opt.state is live ------------------------------------------------------------------

@ALL
def test_state_clear_and_del_reset_state_as_in_torch(spec):
    rng = np.random.default_rng(6)
    p0 = [rng.standard_normal(7), rng.standard_normal(3)]
    grads = [[rng.standard_normal(7), rng.standard_normal(3)] for _ in range(4)]
    options = {"lr": 0.01, **({"momentum": 0.9} if "momentum" in spec.rule.by_name else {})}
    opt = spec.cls([p.copy() for p in p0], **options)
    for g in grads[:2]:
        opt.step(g)
    assert len(opt.state) == 2
    # After clear(), the next steps are those of a fresh optimizer from the current params.
    fresh = spec.cls([p.copy() for p in opt.param_groups[0]["params"]], **options)
    opt.state.clear()
    assert len(opt.state) == 0 and dict(opt.state) == {}
    for g in grads[2:]:
        opt.step(g)
        fresh.step(g)
    for a, b in zip(opt.param_groups[0]["params"], fresh.param_groups[0]["params"]):
        assert _same_bits(a, b)
    # del resets one param's state only.
    kept = {k: v.copy() if isinstance(v, np.ndarray) else v for k, v in opt.state[1].items()}
    del opt.state[0]
    assert list(opt.state) == [1] and 0 not in opt.state
    for k, v in kept.items():
        np.testing.assert_array_equal(opt.state[1][k], v)
    with pytest.raises(KeyError):
        del opt.state[0]
    taken = opt.state.pop(1)  # as from a dict: the state comes out whole
    assert len(opt.state) == 0 and taken.keys() == kept.keys()


def test_state_by_name_and_assignment():
    opt = fastoptim.SGD({"w": np.ones(3)}, lr=0.1, momentum=0.9)
    opt.step({"w": np.ones(3)})
    assert opt.state["w"] is opt.state[0]
    opt.state["w"] = {"momentum_buffer": np.full(3, 10.0)}
    opt.step({"w": np.zeros(3)})
    np.testing.assert_allclose(opt.param_groups[0]["params"][0], (1 - 0.1) - 0.1 * 9.0)  # buffer 0.9 * 10


# ---- 7. scalars -----------------------------------------------------------------------------

@ALL
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("grad", [0.5, -2, 3])
def test_0d_param_takes_a_python_number_grad(spec, dtype, grad):
    p, q = np.array(1.5, dtype), np.array(1.5, dtype)
    spec.cls([p], lr=0.1).step([grad])
    spec.cls([q], lr=0.1).step([np.array(grad, dtype)])
    assert _same_bits(p, q)
    p, q = np.array(1.5, dtype), np.array(1.5, dtype)
    positional, keyword = spec.new_state(p, {})
    spec.functional(p, grad, *positional, step=1, **keyword)
    positional, keyword = spec.new_state(q, {})
    spec.functional(q, np.array(grad, dtype), *positional, step=1, **keyword)
    assert _same_bits(p, q)


def test_python_number_grad_for_a_shaped_param_is_still_an_error():
    with pytest.raises(TypeError, match=r"grads\[0\] must be a numpy.ndarray"):
        fastoptim.SGD([np.ones(3)], lr=0.1).step([1.0])


@ALL
@pytest.mark.parametrize("form", ["0-d array", "0-d float32 array", "schedule of 0-d arrays"])
def test_lr_as_0d_array_and_schedules_returning_0d_arrays(spec, form):
    value = {"0-d array": np.array(0.05), "0-d float32 array": np.array(0.05, np.float32),
             "schedule of 0-d arrays": lambda t: np.array(0.05 / (1 + t))}[form]
    plain = 0.05 if not callable(value) else (lambda t: 0.05 / (1 + t))
    if form == "0-d float32 array":
        plain = float(np.float32(0.05))
    rng = np.random.default_rng(7)
    w0 = rng.standard_normal(9)
    a, b = spec.cls([w0.copy()], lr=value), spec.cls([w0.copy()], lr=plain)
    for _ in range(3):
        g = rng.standard_normal(9)
        a.step([g])
        b.step([g])
    assert _same_bits(a.param_groups[0]["params"][0], b.param_groups[0]["params"][0])
    p, q = w0.copy(), w0.copy()
    positional, keyword = spec.new_state(p, {})
    spec.functional(p, w0, *positional, step=1, lr=np.array(0.05), **keyword)
    positional, keyword = spec.new_state(q, {})
    spec.functional(q, w0, *positional, step=1, lr=0.05, **keyword)
    assert _same_bits(p, q)


def test_0d_array_hyperparameters_are_checked_like_numbers():
    with pytest.raises(ValueError, match="Invalid learning rate"):
        fastoptim.SGD([np.ones(2)], lr=np.array(-1.0))
    with pytest.raises(TypeError, match="Invalid learning rate"):
        fastoptim.SGD([np.ones(2)], lr=np.array([0.1, 0.2]))
    opt = fastoptim.Adam([np.ones(2)], betas=(np.array(0.8), np.array(0.99)), amsgrad=np.array(True))
    opt.step([np.ones(2)])
    assert "max_exp_avg_sq" in opt.state[0]


@ALL
def test_documented_checkpoint_recipe_round_trips(spec, tmp_path):
    # README "Checkpoints": pickle the state_dict (np.savez cannot hold its nested dicts).
    rng = np.random.default_rng(8)
    params = {"w": rng.standard_normal((2, 3)), "b": np.zeros(())}
    opt = spec.cls(params, lr=schedules.exponential(0.05, 0.9))
    grads = [{"w": rng.standard_normal((2, 3)), "b": float(rng.standard_normal())} for _ in range(5)]
    for g in grads[:2]:
        opt.step(g)
    path = tmp_path / "opt.pkl"
    with open(path, "wb") as f:
        pickle.dump({"params": params, "optimizer": opt.state_dict()}, f)
    with open(path, "rb") as f:
        checkpoint = pickle.load(f)
    resumed = spec.cls(checkpoint["params"], lr=0.5)
    resumed.load_state_dict(checkpoint["optimizer"])
    for g in grads[2:]:
        opt.step(g)
        resumed.step(g)
    for name in params:
        assert _same_bits(params[name], checkpoint["params"][name])
    assert resumed.step_count == opt.step_count and resumed.param_groups[0]["lr"] == opt.param_groups[0]["lr"]


def test_savez_of_a_state_dict_is_what_the_readme_says_not_to_do():
    opt = fastoptim.Adam([np.ones(2)])
    opt.step([np.ones(2)])
    buffer = io.BytesIO()
    np.savez(buffer, **opt.state_dict())  # nested dicts become object arrays
    buffer.seek(0)
    with pytest.raises(ValueError, match="allow_pickle"):
        dict(np.load(buffer))


# ---- 8. functional defaults ---------------------------------------------------------------

@ALL
def test_functional_forms_have_the_class_defaults(spec):
    rng = np.random.default_rng(9)
    w0, g = rng.standard_normal(6), rng.standard_normal(6)
    p, q = w0.copy(), w0.copy()
    positional, keyword = spec.new_state(p, {})
    spec.functional(p, g, *positional, step=1, **keyword)  # every hyperparameter defaulted
    opt = spec.cls([q])
    opt.step([g])
    assert _same_bits(p, q)
    r = w0.copy()
    positional, keyword = spec.new_state(r, {})
    spec.reference(r, g, *positional, step=1, **keyword)
    assert _same_bits(p, r)


def test_functional_adam_with_only_step_and_lr():
    p, g, m, v = np.ones(3), np.ones(3), np.zeros(3), np.zeros(3)
    fastoptim.functional.adam(p, g, m, v, step=1, lr=1e-3)
    np.testing.assert_allclose(p, 1 - 1e-3, rtol=1e-6)


# ---- 9. per-group grads after add_param_group ----------------------------------------------

@pytest.mark.parametrize("built_from", ["list", "dict", "groups"])
def test_per_group_grads_after_add_param_group(built_from):
    a, b, c = np.ones(3), np.ones(2), np.ones(4)
    first = {"list": [a, b], "dict": {"a": a, "b": b}, "groups": [{"params": [a, b]}]}[built_from]
    opt = fastoptim.SGD(first, lr=0.1)
    opt.add_param_group({"params": {"c": c} if built_from == "dict" else [c], "lr": 0.5})
    first_grads = {"a": np.ones(3), "b": np.ones(2)} if built_from == "dict" else [np.ones(3), np.ones(2)]
    opt.step([first_grads, {"c": np.ones(4)} if built_from == "dict" else [np.ones(4)]])
    np.testing.assert_allclose(a, 0.9)
    np.testing.assert_allclose(c, 0.5)
    with pytest.raises(ValueError, match=r"grads\[1\] must hold the 1 grads of param_groups\[1\]"):
        opt.step([first_grads, [np.ones(4), np.ones(4)]])
    with pytest.raises(ValueError, match=r"got grads for 3 groups .* there are 2 param groups"):
        opt.step([first_grads, [np.ones(4)], [np.ones(4)]])
    np.testing.assert_allclose(c, 0.5)


def test_flat_grads_after_add_param_group_still_work():
    a, c = np.ones(3), np.ones(4)
    opt = fastoptim.SGD([a], lr=0.1)
    opt.add_param_group({"params": [c], "lr": 0.5})
    opt.step([np.ones(3), np.ones(4)])
    np.testing.assert_allclose(c, 0.5)


# ---- 11. checkpoints with a schedule, through torch.save / torch.load ------------------------

@pytest.mark.parametrize("schedule", [schedules.cosine(0.1, total_steps=10, warmup_steps=2),
                                      schedules.join([schedules.constant(0.1), schedules.exponential(0.1, 0.5)],
                                                     [3]),
                                      schedules.ReduceLROnPlateau(0.1, patience=0)])
def test_schedule_checkpoint_loads_with_torch_default_loader(torch, tmp_path, schedule):
    import fastoptim.torch as ftorch
    t = torch.ones(3, requires_grad=True)
    opt = ftorch.SGD([t], lr=schedule, momentum=0.9)
    t.grad = torch.ones(3)
    opt.step()
    path = tmp_path / "ckpt.pt"
    torch.save(opt.state_dict(), path)
    loaded = torch.load(path)  # weights_only=True, torch's default
    assert loaded["lr_schedules"][0] == schedule
    u = torch.ones(3, requires_grad=True)
    again = ftorch.SGD([u], lr=0.7, momentum=0.9)
    again.load_state_dict(loaded)
    assert again.param_groups[0]["lr_schedule"] == schedule and again.step_count == 1
    # torch.optim takes the same checkpoint and keeps no 'lr_schedule' in its groups
    theirs = torch.optim.SGD([torch.ones(3, requires_grad=True)], lr=0.7, momentum=0.9)
    theirs.load_state_dict(loaded)
    assert all("lr_schedule" not in g for g in theirs.param_groups)
    assert theirs.param_groups[0]["lr"] == opt.param_groups[0]["lr"]


def test_numpy_checkpoint_with_schedule_keeps_it_out_of_the_groups():
    plateau = schedules.ReduceLROnPlateau(0.1)
    opt = fastoptim.SGD([{"params": [np.ones(2)]}, {"params": [np.ones(2)], "lr": 0.3}], lr=plateau)
    sd = opt.state_dict()
    assert all("lr_schedule" not in g for g in sd["param_groups"]) and list(sd["lr_schedules"]) == [0]
    opt2 = fastoptim.SGD([{"params": [np.ones(2)]}, {"params": [np.ones(2)], "lr": 0.3}], lr=0.5)
    opt2.load_state_dict(sd)
    assert opt2.param_groups[0]["lr_schedule"] == plateau and "lr_schedule" not in opt2.param_groups[1]
    with pytest.raises(ValueError, match="lr_schedules"):
        opt2.load_state_dict(dict(sd, lr_schedules={5: plateau}))


# ---- 12. bench --quick: spread and flags --------------------------------------------------

def test_ratio_spread_flags_rounds_that_disagree():
    from fastoptim.benchmarks.timing import disagreeing, format_ratio, ratio_spread
    steady = ratio_spread([2.0, 2.1, 1.9, 2.0, 2.05], [1.0, 1.0, 1.0, 1.0, 1.0])
    assert not disagreeing(steady) and format_ratio(steady) == "2x"
    # torch descheduled in two rounds out of five: the median is robust, the flag says why not to trust it
    busy = ratio_spread([2.0, 2190.0, 2.1, 900.0, 1.9], [1.0] * 5)
    assert busy[0] == 2.1 and disagreeing(busy)
    assert format_ratio(busy).endswith("!") and "1.9-2.2e+03x" in format_ratio(busy)


def test_bench_quick_prints_spread_flags(monkeypatch):
    from fastoptim.benchmarks import optim as bench
    # A contender whose rounds disagree wildly is flagged in the table and explained below it.
    times = iter([1e-3, 1e-6] * 1000)
    out = io.StringIO()
    real = bench.measure_rounds

    def rigged(contenders, rounds, min_seconds):
        samples = real(contenders, rounds, min_seconds)
        samples["numpy"] = [next(times) for _ in range(rounds)]
        return samples
    monkeypatch.setattr(bench, "measure_rounds", rigged)
    bench.run(["sgd"], (64,), (1,), np.float32, use_torch=False, rounds=5, min_seconds=1e-4, many=False, out=out)
    text = out.getvalue()
    assert ")!" in text and "disagree by more than 2x" in text
