"""The rules are described once: the C field tables agree with the Python Rules, every
generated face has the signature it should, and the grad scale (torch's fused
semantics: the grad divided inside the kernel) equals the reference bit for bit."""
import inspect
import math

import numpy as np
import pytest

import fastoptim
from fastoptim import functional, reference
from fastoptim._ext import runtime
from fastoptim._registry import PYTHON_SPECS, SPECS, TORCH_SPECS
from fastoptim.rules import RULES, TORCH_ONLY_DEFAULTS, VARIANTS

from conftest import DTYPES, assert_unchanged, snapshot

SCALES = (3.0, 0.7, 1024.0)


def test_python_rules_and_c_rules_name_the_same_fields():
    compiled = runtime.rule_fields()
    assert set(compiled) == {rule.kernel for rule in RULES if rule.python is None}
    for rule in RULES:
        if rule.python is not None:
            continue
        assert compiled[rule.kernel][1] == rule.field_names, rule.kernel


def test_every_face_is_generated_everywhere():
    for rule, variant in VARIANTS:
        assert getattr(fastoptim, variant.name).rule is rule
        assert getattr(fastoptim.optim, variant.name) is getattr(fastoptim, variant.name)
        assert callable(getattr(functional, variant.function))
        assert callable(getattr(reference, variant.function))
    assert {s.name for s in SPECS + PYTHON_SPECS} == {v.function for _, v in VARIANTS}


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_functional_and_reference_share_their_signature(spec):
    assert inspect.signature(spec.functional) == inspect.signature(spec.reference)


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_class_signature_is_the_rules(spec):
    parameters = list(inspect.signature(spec.cls).parameters.values())[1:]
    layout = [(name, kw) for name, kw in spec.rule.layout() if name not in spec.variant.fixed]
    assert [(p.name, p.kind == p.KEYWORD_ONLY) for p in parameters] == layout
    defaults = {o.name: o.default for o in spec.rule.options} | spec.variant.defaults
    assert {p.name: p.default for p in parameters} == {name: defaults[name] for name, _ in layout}


@pytest.mark.parametrize("spec", TORCH_SPECS, ids=lambda s: s.name)
def test_torch_class_signature_is_torchs(torch, spec):
    """fastoptim.torch's constructors take torch.optim's arguments, in torch's order and kinds."""
    import fastoptim.torch as ft
    ours = list(inspect.signature(getattr(ft, spec.torch_name)).parameters.values())
    theirs = list(inspect.signature(getattr(torch.optim, spec.torch_name)).parameters.values())
    def layout(parameters):  # the order of keyword-only arguments does not matter
        return ([(p.name, p.kind) for p in parameters if p.kind != p.KEYWORD_ONLY],
                {p.name for p in parameters if p.kind == p.KEYWORD_ONLY})
    assert layout(ours) == layout(theirs)
    theirs = {p.name: p for p in theirs}
    for p, q in ((p, theirs[p.name]) for p in ours[1:]):
        if p.name in TORCH_ONLY_DEFAULTS:
            assert p.default == q.default, p.name
        else:
            assert p.default == pytest.approx(q.default), p.name  # torch writes 0 where we write 0.0


def test_functional_forms_have_the_class_defaults():
    rng = np.random.default_rng(0)
    p0, g = rng.standard_normal(7), rng.standard_normal(7)
    p, m, v = p0.copy(), np.zeros(7), np.zeros(7)
    functional.adam(p, g, m, v, step=1, lr=1e-3)
    q = p0.copy()
    fastoptim.Adam([q]).step([g])
    np.testing.assert_array_equal(p, q)
    r = p0.copy()
    functional.adamw(r, g, np.zeros(7), np.zeros(7), step=1)
    s = p0.copy()
    fastoptim.AdamW([s]).step([g])
    np.testing.assert_array_equal(r, s)


# ---- the grad scale -----------------------------------------------------------------

def run(update, param, grads, state, options, spec, scale):
    positional, keyword = state
    for step, grad in enumerate(grads, start=1):
        update(param, grad, *positional, step=step, grad_scale=scale, **spec.functional_kwargs(options), **keyword)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_grad_scale_matches_reference(spec, dtype, simd_level, split_everything):
    rng = np.random.default_rng(4)
    for size in (0, 1, 17, 4097):
        param0 = rng.standard_normal(size).astype(dtype)
        grads = [rng.standard_normal(size).astype(dtype) * 100 for _ in range(3)]
        for options in list(spec.option_sets())[::3]:
            for scale in SCALES:
                expected = param0.copy()
                expected_state = spec.new_state(expected, options)
                run(spec.reference, expected, grads, expected_state, options, spec, scale)
                for threads in (1, 2):
                    param = param0.copy()
                    state = spec.new_state(param, options)
                    with fastoptim.num_threads(threads):
                        run(spec.functional, param, grads, state, options, spec, scale)
                    where = f"{spec.name} {options} scale={scale} threads={threads} level={simd_level}"
                    np.testing.assert_array_equal(param, expected, err_msg=where)
                    for got, want in zip(state[0] + list(state[1].values()),
                                         expected_state[0] + list(expected_state[1].values())):
                        np.testing.assert_array_equal(got, want, err_msg=where)


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_stateful_grad_scale_matches_reference(spec):
    rng = np.random.default_rng(5)
    options = list(spec.option_sets())[-1]
    params = [rng.standard_normal(s) for s in [(33,), (), (2, 3)]]
    grads = [[rng.standard_normal(p.shape) * 8 for p in params] for _ in range(4)]
    ours = [p.copy() for p in params]
    opt = spec.cls(ours, **options)
    for step, g in enumerate(grads, start=1):
        opt.step(g, grad_scale=8.0)
    for i, p in enumerate(params):
        expected = p.copy()
        positional, keyword = spec.new_state(expected, options)
        run(spec.reference, expected, [g[i] for g in grads], (positional, keyword), options, spec, 8.0)
        np.testing.assert_array_equal(ours[i], expected)


@pytest.mark.parametrize("bad, error", [(0.0, ValueError), (-2.0, ValueError), (math.nan, ValueError),
                                        (math.inf, ValueError), ("2", TypeError), (True, TypeError)])
def test_bad_grad_scale_changes_nothing(bad, error):
    p = [np.ones(3), np.ones(2)]
    opt = fastoptim.Adam(p)
    with pytest.raises(error, match="grad_scale"):
        opt.step([np.ones(3), np.ones(2)], grad_scale=bad)
    assert opt.state == {} and opt.step_count == 0  # not even the first step's state was created
    opt.step([np.ones(3), np.ones(2)])
    before = snapshot([*p, *opt.state[0].values(), *opt.state[1].values()])
    with pytest.raises(error, match="grad_scale"):
        opt.step([np.ones(3), np.ones(2)], grad_scale=bad)
    assert_unchanged(before, [*p, *opt.state[0].values(), *opt.state[1].values()])
    q, m, v = np.ones(3), np.zeros(3), np.zeros(3)
    with pytest.raises(error, match="grad_scale"):
        functional.adam(q, np.ones(3), m, v, step=1, grad_scale=bad)
    assert_unchanged([np.ones(3), np.zeros(3), np.zeros(3)], [q, m, v])


def test_grad_scale_of_one_is_no_scale():
    rng = np.random.default_rng(6)
    p0, g = rng.standard_normal(100), rng.standard_normal(100)
    a, b = p0.copy(), p0.copy()
    fastoptim.Adam([a]).step([g], grad_scale=1.0)
    fastoptim.Adam([b]).step([g])
    np.testing.assert_array_equal(a, b)
