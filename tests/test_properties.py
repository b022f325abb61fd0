"""Property tests (hypothesis): every rule's kernel against its NumPy reference, bit for bit.

Driven by fastoptim.rules.RULES, so a new rule is covered with no code here: its
hyperparameters are drawn from its own option descriptions (Real bounds, flags,
pairs; extremes included), its state from its slots.  Each example draws a face of
the rule, a dtype, a shape (0-d to 4-D, sizes around every SIMD width and the
two-thread split), hyperparameters, the step, a grad scale, grads with NaN and
infinities, a thread count and a SIMD level; the functional form (the C kernels)
and the reference (plain NumPy) must give the same bits, NaN for NaN.

Examples per rule: FASTOPTIM_PROPERTY_EXAMPLES (default 1000); derandomized, so CI
runs the same examples every time (set FASTOPTIM_PROPERTY_SEED to explore others, and
FASTOPTIM_PROPERTY_SHRINK=1 to have a failure shrunk to a small example).
"""
import inspect
import math
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, assume, given, note, seed, settings
from hypothesis import strategies as st

from fastoptim import functional, reference
from fastoptim._ext import runtime
from fastoptim.rules import RULES, Flag, Pair, Real

EXAMPLES = int(os.environ.get("FASTOPTIM_PROPERTY_EXAMPLES", "1000"))
SEED = os.environ.get("FASTOPTIM_PROPERTY_SEED")

# No shrinking unless asked (FASTOPTIM_PROPERTY_SHRINK=1): a failure then reports the example
# as drawn at once, instead of spending minutes of CI on a smaller one.
PHASES = tuple(Phase) if os.environ.get("FASTOPTIM_PROPERTY_SHRINK") else (Phase.explicit, Phase.reuse,
                                                                            Phase.generate)
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, derandomize=SEED is None, database=None,
                    phases=PHASES, print_blob=False,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                           HealthCheck.data_too_large])

# 1-D sizes around the SIMD widths (4 doubles or 8 floats in AVX2, 8/16 in AVX-512, and
# the unrolled multiples of those) and around the two-thread split point.
EDGE_SIZES = sorted({0, 1, 2} | {k * w + d for w in (4, 8, 16) for k in (1, 2, 4) for d in (-1, 0, 1)}
                    | {127, 128, 129, 255, 256, 257})

TINY, HUGE = 5e-324, 1e300


@pytest.fixture(autouse=True, scope="module")
def _split_everything():
    """Split even the smallest step across threads, so split points fall everywhere."""
    old = runtime._set_parallel_min_elements(0)
    yield
    runtime._set_parallel_min_elements(old)


# ---- strategies from the rules' own descriptions ------------------------------------------

def real_values(option):
    """Valid values of a Real option: its edges and extremes, and anything in between."""
    low, high = option.low, option.high
    candidates = [low, high, math.nextafter(low, math.inf), math.nextafter(high, -math.inf),
                  TINY, 1e-300, 1e-8, 0.5, 1.0, 1.5, HUGE, 0.0]

    def valid(x):
        if not math.isfinite(x):
            return False
        above = x > low if option.low_open else x >= low
        below = x < high if option.high_open else x <= high
        return above and below

    edges = sorted({x for x in candidates if valid(x)})
    inside = st.floats(min_value=low if math.isfinite(low) else None,
                       max_value=high if math.isfinite(high) else None,
                       exclude_min=option.low_open and math.isfinite(low),
                       exclude_max=option.high_open and math.isfinite(high),
                       allow_nan=False, allow_infinity=False)
    values = st.one_of(st.sampled_from(edges), inside) if edges else inside
    return st.one_of(st.none(), values) if option.allow_none else values


def field_values(rule, variant):
    """(lr, maximize, {field: value}) strategies for one face: every kernel field, the face's fixed
    values kept."""
    strategies = {}
    for option in rule.options:
        parts = option.parts if isinstance(option, Pair) else (option,)
        for part in parts:
            if not part.kernel and not isinstance(option, Pair):
                continue
            if part.name in variant.fixed:
                strategies[part.name] = st.just(variant.fixed[part.name])
            elif isinstance(part, Flag):
                strategies[part.name] = st.booleans()
            elif isinstance(part, Real):
                strategies[part.name] = real_values(part)
    return st.fixed_dictionaries(strategies)


SHAPES = st.one_of(st.just(()),
                   st.tuples(st.one_of(st.sampled_from(EDGE_SIZES), st.integers(0, 300))),
                   *[st.tuples(*[st.integers(0, 7)] * ndim) for ndim in (2, 3, 4)])
STEPS = st.one_of(st.integers(1, 20), st.sampled_from([1000, 10**6, 2**31 - 1, 2**40]))
GRAD_SCALES = st.one_of(st.none(), st.sampled_from([TINY, 1e-30, 0.5, 3.0, 1e30, HUGE]), st.floats(1e-3, 1e3))
DTYPES = st.sampled_from([np.float32, np.float64])
THREADS = st.sampled_from([1, 2])


# How an array is made: a seed (which also places up to three of NaN, +-inf and +-0) and a
# magnitude.  Arrays are built from these with NumPy: drawing every element through
# hypothesis would cost more than the example itself.
SPECIALS = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0])
ARRAY_RECIPES = st.tuples(st.integers(0, 2**32 - 1), st.sampled_from([0.0, 1e-30, 1e-3, 1.0, 1e3, 1e30]))


def make_array(recipe, shape, dtype):
    seed, scale = recipe
    n = math.prod(shape)
    rng = np.random.default_rng(seed)
    with np.errstate(over="ignore"):
        a = (rng.standard_normal(n) * scale).astype(dtype)
    if n:
        count = rng.integers(0, 4)
        a[rng.integers(0, n, count)] = SPECIALS[rng.integers(0, len(SPECIALS), count)]
    return a.reshape(shape)


def _same_bits_or_both_nan(a, b):
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    same = a.view(f"u{a.itemsize}") == b.view(f"u{b.itemsize}")
    return bool(np.all(same | (np.isnan(a) & np.isnan(b))))


# ---- the property ---------------------------------------------------------------------------

def _faces(rule):
    return [(variant, getattr(functional, variant.function), getattr(reference, variant.function))
            for variant in rule.variants]


# Rules with a C kernel.  A rule at the Python level (Muon, LBFGS) has no kernel: its functional
# and reference forms run the same Python step (tests/test_muon.py, tests/test_lbfgs.py).
KERNEL_RULES = [rule for rule in RULES if rule.python is None]
SCALAR_STATE = st.tuples(st.sampled_from([np.float32, np.float64]), st.floats(1e-6, 1.0))


def make_state(slot, recipe, scalar, shape, dtype):
    """A state array: like the param, of the slot's own shape (Adafactor's row_var), or a per-tensor
    0-d scalar (NAdam's mu_product, ASGD's eta and mu: float32 as torch keeps them, or float64)."""
    if slot.scalar:
        scalar_dtype, value = scalar
        return np.array(value, scalar_dtype)
    return make_array(recipe, slot.shape(shape), dtype)


@pytest.mark.parametrize("rule", KERNEL_RULES, ids=lambda r: r.kernel)
def test_kernel_equals_reference_bit_for_bit(rule):
    # Strategies are built once: hypothesis inspects each new one, which costs more than an example.
    faces = st.one_of(*[st.tuples(st.just(face), field_values(rule, face[0])) for face in _faces(rule)])
    lrs = real_values(rule.by_name["lr"])
    levels = st.sampled_from(runtime.supported_simd_levels())
    slot_recipes = st.tuples(*[ARRAY_RECIPES] * len(rule.state))

    @SETTINGS
    @given(data=st.data())
    def check(data):
        (variant, kernel_form, reference_form), fields = data.draw(faces, label="face, fields")
        lr = data.draw(lrs, label="lr")
        maximize = data.draw(st.booleans(), label="maximize")
        values = dict(fields, lr=lr, maximize=maximize)
        try:  # the rule's cross-field checks (say, nesterov needs momentum): draw again if they refuse
            rule.check(lr, maximize, *[values[name] for name in rule.field_names], "")
        except (ValueError, TypeError):
            assume(False)
        dtype = data.draw(DTYPES, label="dtype")
        shape = data.draw(SHAPES, label="shape")
        step = data.draw(STEPS, label="step")
        grad_scale = data.draw(GRAD_SCALES, label="grad_scale")
        param = make_array(data.draw(ARRAY_RECIPES, label="param"), shape, dtype)
        grad = make_array(data.draw(ARRAY_RECIPES, label="grad"), shape, dtype)
        recipes = data.draw(slot_recipes, label="state")
        scalar = data.draw(SCALAR_STATE, label="scalar state") if any(s.scalar for s in rule.state) else None
        state = {slot.arg: make_state(slot, recipe, scalar, shape, dtype)
                 for slot, recipe in zip(rule.state, recipes)
                 if slot.used(values.__getitem__) and slot.serves(len(shape))}
        threads = data.draw(THREADS, label="threads")
        level = data.draw(levels, label="simd")
        kwargs = {name: values[name] for name in ("lr", *rule.field_names, "maximize") if name not in variant.fixed}

        ours = {"param": param.copy(), **{k: v.copy() for k, v in state.items()}}
        theirs = {"param": param.copy(), **{k: v.copy() for k, v in state.items()}}
        previous_threads, previous_level = runtime.get_num_threads(), runtime.set_simd_level(level)
        runtime._set_num_threads(threads)
        try:
            kernel_form(ours["param"], grad, step=step, grad_scale=grad_scale, **kwargs,
                        **{k: v for k, v in ours.items() if k != "param"})
        finally:
            runtime._set_num_threads(previous_threads)
            runtime.set_simd_level(previous_level)
        with np.errstate(all="ignore"):
            reference_form(theirs["param"], grad, step=step, grad_scale=grad_scale, **kwargs,
                           **{k: v for k, v in theirs.items() if k != "param"})
        for name in ours:
            if not _same_bits_or_both_nan(ours[name], theirs[name]):
                bad = np.flatnonzero(~((ours[name] == theirs[name]) | (np.isnan(ours[name]) & np.isnan(theirs[name]))))
                note(f"{name} differs at {bad[:5]}: kernel {ours[name].ravel()[bad[:5]]!r}, "
                     f"reference {theirs[name].ravel()[bad[:5]]!r}; param {param.ravel()[bad[:5]]!r}, "
                     f"grad {grad.ravel()[bad[:5]]!r}, state {[v.ravel()[bad[:5]] for v in state.values()]!r}")
                raise AssertionError(f"{variant.function}: {name} differs from the reference")

    if SEED is not None:
        check = seed(int(SEED))(check)
    check()


def test_every_rule_face_takes_its_arguments_by_keyword():
    """The property test passes state and hyperparameters by name: the faces must take them so."""
    for rule in KERNEL_RULES:
        for variant, kernel_form, reference_form in _faces(rule):
            names = set(inspect.signature(kernel_form).parameters)
            assert names == set(inspect.signature(reference_form).parameters)
            assert {s.arg for s in rule.state} <= names
            assert {"lr", "maximize", "step", "grad_scale"} <= names
