"""The stateful API: structures of params and grads, None grads, param groups,
threads, state_dict round trips and resumes, lazily created state."""
import pickle

import numpy as np
import pytest

import fastoptim
from fastoptim import Adagrad, Adam, AdamW, RMSprop, SGD, functional
from fastoptim._registry import SPECS


def arrays(rng, shapes, dtype=np.float64):
    return [rng.standard_normal(s).astype(dtype) for s in shapes]


def all_state_arrays(opt):
    return [v for s in opt.state.values() for v in s.values() if isinstance(v, np.ndarray) and v.ndim >= 0]


def test_list_dict_and_group_structures_give_the_same_result():
    rng = np.random.default_rng(0)
    p0 = arrays(rng, [(4,), (2, 3)])
    grads = [arrays(rng, [(4,), (2, 3)]) for _ in range(5)]
    a, b, c = [x.copy() for x in p0], [x.copy() for x in p0], [x.copy() for x in p0]
    opt_list = Adam(a, lr=0.1)
    opt_dict = Adam({"w": b[0], "v": b[1]}, lr=0.1)
    opt_groups = Adam([{"params": [c[0]]}, {"params": [c[1]]}], lr=0.1)
    for g in grads:
        opt_list.step(g)
        opt_dict.step({"v": g[1], "w": g[0]})
        opt_groups.step([[g[0]], [g[1]]])
    for x, y, z in zip(a, b, c):
        np.testing.assert_array_equal(x, y)
        np.testing.assert_array_equal(x, z)
    # a group list also takes a flat list of grads
    opt_groups.step(grads[0])


def test_named_params_appear_in_state_dict_and_errors():
    w, v = np.zeros(3), np.zeros(2)
    opt = SGD({"w": w, "v": v}, lr=0.1, momentum=0.9)
    opt.step({"w": np.ones(3), "v": np.ones(2)})
    sd = opt.state_dict()
    assert sd["param_groups"][0]["param_names"] == ["w", "v"]
    assert sd["param_groups"][0]["params"] == [0, 1]
    with pytest.raises(ValueError, match=r"grads\['v'\] has shape \(3,\) but params\['v'\] has shape \(2,\)"):
        opt.step({"w": np.ones(3), "v": np.ones(3)})


def test_none_grad_skips_param_and_its_state():
    rng = np.random.default_rng(1)
    p = arrays(rng, [(5,), (5,)])
    opt = Adam(p, lr=0.1)
    opt.step([np.ones(5), None])
    assert 1 not in opt.state  # never had a grad: no state, as torch
    before = p[1].copy()
    opt.step([np.ones(5), None])
    np.testing.assert_array_equal(p[1], before)
    opt.step([np.ones(5), np.ones(5)])
    assert int(opt.state[0]["step"]) == 3 and int(opt.state[1]["step"]) == 1
    m1 = opt.state[1]["exp_avg"].copy()
    opt.step([np.ones(5), None])
    np.testing.assert_array_equal(opt.state[1]["exp_avg"], m1)
    assert int(opt.state[1]["step"]) == 1


def test_lr_can_change_between_steps():
    p, q = np.ones(4), np.ones(4)
    opt = SGD([p], lr=0.1)
    for lr in (0.1, 0.5, 0.01):
        opt.param_groups[0]["lr"] = lr
        opt.step([np.full(4, 2.0)])
        functional.sgd(q, np.full(4, 2.0), step=1, lr=lr)
    np.testing.assert_array_equal(p, q)


def test_param_groups_override_defaults():
    a, b = np.zeros(2), np.zeros(2)
    opt = Adam([{"params": [a], "lr": 0.5}, {"params": [b]}], lr=0.1, betas=(0.8, 0.9))
    assert opt.param_groups[0]["lr"] == 0.5 and opt.param_groups[1]["lr"] == 0.1
    assert opt.param_groups[1]["betas"] == (0.8, 0.9)
    assert opt.param_groups[0]["params"][0] is a


def test_add_param_group_and_replace_params():
    a, b = np.zeros(3), np.zeros(3)
    opt = Adam([a], lr=0.1)
    opt.step([np.ones(3)])
    opt.add_param_group({"params": [b], "lr": 0.2})
    opt.step([np.ones(3), np.ones(3)])
    assert int(opt.state[0]["step"]) == 2 and int(opt.state[1]["step"]) == 1
    c = np.zeros(3)
    opt.param_groups[1]["params"][0] = c  # swapping an array in is noticed
    opt.step([None, np.ones(3)])
    assert c[0] != 0 and b[0] == b[0]


def test_mixed_dtypes_in_one_optimizer():
    a, b = np.zeros(5, np.float32), np.zeros(5, np.float64)
    opt = Adam([a, b], lr=0.1)
    opt.step([np.ones(5, np.float32), np.ones(5, np.float64)])
    assert opt.state[0]["exp_avg"].dtype == np.float32 and opt.state[1]["exp_avg"].dtype == np.float64
    np.testing.assert_allclose(a, b, rtol=1e-6)


def test_state_only_where_options_need_it():
    p = [np.zeros(3)]
    g = [np.ones(3)]
    opt = Adam(p)
    opt.step(g)
    assert set(opt.state[0]) == {"step", "exp_avg", "exp_avg_sq"}
    opt = SGD(p, lr=0.1)
    opt.step(g)
    assert opt.state == {}
    opt = RMSprop(p)
    opt.step(g)
    assert set(opt.state[0]) == {"step", "square_avg"}
    opt = RMSprop(p, momentum=0.9, centered=True)
    opt.step(g)
    assert set(opt.state[0]) == {"step", "square_avg", "momentum_buffer", "grad_avg"}


def test_turning_amsgrad_on_later_creates_its_state():
    p = [np.zeros(3)]
    opt = Adam(p)
    opt.step([np.ones(3)])
    opt.param_groups[0]["amsgrad"] = True
    opt.step([np.ones(3)])
    assert "max_exp_avg_sq" in opt.state[0]


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_one_and_two_threads_bit_identical(spec, split_everything):
    rng = np.random.default_rng(2)
    shapes = [(1000,), (17,), (), (3, 33), (4097,)]
    start = arrays(rng, shapes, np.float32)
    grads = [arrays(rng, shapes, np.float32) for _ in range(4)]
    for options in spec.option_sets():
        results = []
        for threads in (1, 2):
            params = [p.copy() for p in start]
            opt = spec.cls(params, **options)
            with fastoptim.num_threads(threads):
                for g in grads:
                    opt.step(g)
            results.append(params + all_state_arrays(opt))
        for x, y in zip(*results):
            np.testing.assert_array_equal(x, y, err_msg=f"{spec.name} {options}")


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_state_dict_resume_is_bit_identical(spec):
    rng = np.random.default_rng(3)
    shapes = [(6,), (2, 2), ()]
    for options in spec.option_sets():
        start = arrays(rng, shapes)
        grads = [arrays(rng, shapes) for _ in range(12)]
        for g in grads[::4]:
            g[1] = None
        straight = [p.copy() for p in start]
        opt = spec.cls(straight, **options)
        for g in grads:
            opt.step(g)

        first = [p.copy() for p in start]
        opt1 = spec.cls(first, **options)
        for g in grads[:6]:
            opt1.step(g)
        checkpoint = pickle.loads(pickle.dumps(opt1.state_dict()))
        resumed = [p.copy() for p in first]
        opt1.step(grads[6])  # the checkpoint holds copies: later steps do not reach it
        opt2 = spec.cls(resumed, lr=123.0) if "lr" in options else spec.cls(resumed)
        opt2.load_state_dict(checkpoint)
        assert opt2.param_groups[0]["lr"] == options["lr"]
        for g in grads[6:]:
            opt2.step(g)
        for x, y in zip(straight, resumed):
            np.testing.assert_array_equal(x, y, err_msg=f"{spec.name} {options}")
        for x, y in zip(all_state_arrays(opt), all_state_arrays(opt2)):
            np.testing.assert_array_equal(x, y, err_msg=f"{spec.name} {options}")


def test_state_dict_layout_mirrors_torch():
    p = [np.zeros(3), np.zeros(2)]
    opt = AdamW(p, amsgrad=True)
    opt.step([np.ones(3), np.ones(2)])
    sd = opt.state_dict()
    assert set(sd) == {"state", "param_groups", "step_count"}  # step_count: for schedules; torch ignores it
    assert sd["step_count"] == 1
    assert set(sd["state"][0]) == {"step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"}
    assert sd["state"][0]["step"] == 1
    assert sd["param_groups"][0]["params"] == [0, 1]
    assert sd["param_groups"][0]["weight_decay"] == 1e-2
    assert sd["param_groups"][0]["decoupled_weight_decay"] is True
    opt2 = Adagrad(p)
    assert set(opt2.state_dict()["state"][0]) == {"step", "sum"}  # Adagrad's state starts at construction


@pytest.mark.parametrize("loaded_from", [Adam, AdamW])
def test_adamw_stays_adamw_after_loading(loaded_from):
    """The class decides the rule, not the loaded group (issue 15): one zero-grad AdamW step
    from 1 with lr=0.1, weight_decay=0.5 decays to 1 - 0.1 * 0.5 = 0.95; Adam's coupled
    decay would give 0.90."""
    p = np.ones(3)
    w = AdamW([p], lr=0.1, weight_decay=0.5)
    w.load_state_dict(loaded_from([np.ones(3)], lr=0.1, weight_decay=0.5).state_dict())
    w.step([np.zeros(3)])
    assert w.param_groups[0]["decoupled_weight_decay"] is True
    np.testing.assert_allclose(p, 0.95, rtol=0, atol=1e-12)


def test_load_state_dict_rejects_mismatches_and_changes_nothing():
    p = [np.zeros(3)]
    opt = Adam(p, lr=0.1)
    opt.step([np.ones(3)])
    sd = opt.state_dict()
    bad = pickle.loads(pickle.dumps(sd))
    bad["state"][0]["exp_avg"] = np.zeros(4)
    before = opt.state_dict()
    with pytest.raises(ValueError, match=r"exp_avg.*shape \(4,\).*shape \(3,\)"):
        opt.load_state_dict(bad)
    bad = pickle.loads(pickle.dumps(sd))
    bad["param_groups"][0]["lr"] = -1.0
    with pytest.raises(ValueError, match="learning rate"):
        opt.load_state_dict(bad)
    bad = pickle.loads(pickle.dumps(sd))
    bad["param_groups"].append(bad["param_groups"][0])
    with pytest.raises(ValueError, match="param groups"):
        opt.load_state_dict(bad)
    after = opt.state_dict()
    assert after["param_groups"] == before["param_groups"]
    np.testing.assert_array_equal(after["state"][0]["exp_avg"], before["state"][0]["exp_avg"])


def test_step_in_state_is_live_and_writable():
    p = [np.zeros(3)]
    opt = Adam(p, lr=0.1)
    opt.step([np.ones(3)])
    assert int(opt.state[0]["step"]) == 1
    opt.step([np.ones(3)])
    assert int(opt.state[0]["step"]) == 2
    opt.state[0]["step"] = 10  # rewinding or advancing the count is honoured
    q = p[0].copy()
    opt.step([np.ones(3)])
    assert int(opt.state[0]["step"]) == 11
    assert not np.array_equal(q, p[0])


def test_repr_lists_groups():
    text = repr(Adam([np.zeros(1)], lr=0.5))
    assert "Adam (" in text and "lr: 0.5" in text


def test_numpy_scalar_grad_for_a_0d_param():
    """err.mean() is the gradient of a scalar bias: a NumPy scalar of the param's dtype is taken."""
    b, c = np.zeros(()), np.zeros(())
    opt = Adam({"b": b}, lr=0.1)
    opt.step({"b": np.float64(2.0)})
    functional.adam(c, np.float64(2.0), np.zeros(()), np.zeros(()), step=1, lr=0.1, beta1=0.9,
                    beta2=0.999, eps=1e-8)
    assert b == c and abs(b + 0.1) < 1e-6
    with pytest.raises(TypeError, match=r"grads\['b'\] must be a numpy.ndarray.*numpy.float32"):
        opt.step({"b": np.float32(2.0)})  # another dtype would be rounded on the way in: refused
    before = b.copy()
    opt.step({"b": 2.0})  # a Python number has no dtype of its own: taken in the param's (issue 14)
    assert b != before
    with pytest.raises(TypeError, match=r"grads\[0\] must be a numpy.ndarray"):
        Adam([np.zeros(3)]).step([np.float64(1.0)])  # only 0-d params take scalars


def test_options_changed_between_steps_take_effect():
    """The step skips re-checking options that are the very objects of the last step;
    anything reassigned or mutated in place must still be seen."""
    p, q = np.ones(4), np.ones(4)
    opt = Adam([p], lr=0.1, betas=[0.9, 0.999])  # a list: mutable, so never taken from the cache
    ref_m, ref_v = np.zeros(4), np.zeros(4)
    g = np.full(4, 2.0)
    for step, (lr, beta1) in enumerate([(0.1, 0.9), (0.1, 0.9), (0.05, 0.9), (0.05, 0.5)], start=1):
        opt.param_groups[0]["lr"] = lr
        opt.param_groups[0]["betas"][0] = beta1  # in place
        opt.step([g])
        functional.adam(q, g, ref_m, ref_v, step=step, lr=lr, beta1=beta1, beta2=0.999, eps=1e-8)
        np.testing.assert_array_equal(p, q)
    opt.param_groups[0]["lr"] = -1.0
    with pytest.raises(ValueError, match="learning rate"):
        opt.step([g])


def test_fast_path_still_checks_grads_and_plan():
    p = [np.zeros(3), np.zeros(3)]
    opt = SGD(p, lr=0.1, momentum=0.9)
    for _ in range(3):
        opt.step([np.ones(3), np.ones(3)])
    with pytest.raises(ValueError, match=r"grads\[1\] has shape"):
        opt.step([np.ones(3), np.ones(2)])
    replacement, old = np.zeros(3), p[1].copy()
    opt.param_groups[0]["params"][1] = replacement
    opt.step([None, np.ones(3)])
    assert replacement[0] < 0  # the swapped-in array is the one updated (state stays with position 1)
    np.testing.assert_array_equal(p[1], old)


def test_an_empty_param_takes_empty_state_of_any_strides():
    """An empty array has no layout to pair (numpy gives some empty views stride 0, as ZeRO's
    empty shard pieces have): the step goes on and steps the other params."""
    params = [np.zeros(0), np.ones(3)]
    opt = fastoptim.Adam(params, lr=0.1)
    opt.step([np.zeros(0), np.ones(3)])
    opt.state[0]["exp_avg"] = np.lib.stride_tricks.as_strided(np.zeros(1), shape=(0,), strides=(0,))
    opt.step([np.zeros(0), np.ones(3)])
    reference = [np.ones(3)]
    ref = fastoptim.Adam(reference, lr=0.1)
    ref.step([np.ones(3)])
    ref.step([np.ones(3)])
    np.testing.assert_array_equal(params[1], reference[0])
