"""16-bit params (bfloat16, float16) for every rule and API form: the kernels
against fastoptim._lowp_reference bit for bit (every option set, SIMD level,
thread split, chunk tail; state in 16 bits or float32; master weights;
stochastic rounding), the issue's rounding check, and fastoptim.torch against
torch.optim's fused kernels within one unit in the last place."""
import subprocess
import sys
import warnings

import numpy as np
import pytest

import fastoptim
from fastoptim import _lowp_reference as lowp
from fastoptim._registry import PYTHON_SPECS, SPECS
from fastoptim.rules import half_refusal

ml_dtypes = pytest.importorskip("ml_dtypes")
HALF = (ml_dtypes.bfloat16, np.float16)
# The rules the staged drivers run; the others refuse 16-bit params (rules.half_refusal).
STAGED = tuple(spec for spec in SPECS if half_refusal(spec.rule) is None)
REFUSED = tuple(spec for spec in SPECS + PYTHON_SPECS if half_refusal(spec.rule) is not None)
# Option sets per rule in the functional test: the grids grow with the rules, so at most this
# many, spread over the grid (its first and last included).
MAX_OPTION_SETS = 4
# one element; a SIMD tail; a chunk (256) and a tail; several chunks and Philox groups (64) and a tail
SIZES = (1, 17, 273, 2113)
STEPS = 2


def half_id(dtype):
    return np.dtype(dtype).name


def bits(a):
    return np.ascontiguousarray(a).view(np.uint16 if a.dtype.itemsize == 2 else np.uint32)


def assert_same_bits(got, want, where):
    np.testing.assert_array_equal(bits(got), bits(want), err_msg=where)


def random_half(rng, size, dtype, scale=1.0):
    return (scale * rng.standard_normal(size)).astype(np.float32).astype(dtype)


def reference_steps(spec, options, param, grads, state, *, rounding="nearest", master=None, seed=0,
                    param_index=0, first_step=1):
    """STEPS steps of lowp.step_16bit with the face's float32 reference; state: (positional, keyword)."""
    positional, keyword = state
    names = dict(zip(spec.state, positional)) | keyword
    for step, grad in enumerate(grads, start=first_step):
        lowp.step_16bit(spec.reference, param, grad, names, step=step, rounding=rounding, master_param=master,
                        seed=seed, param_index=param_index, **spec.functional_kwargs(options))


def new_state(spec, param, options, float32_state):
    """State as the classes start it: in the param's dtype, or float32 (a start value such as
    Adagrad's initial_accumulator_value then is float32's, not the 16-bit one)."""
    return spec.new_state(param.astype(np.float32) if float32_state else param, options)


def all_state(state):
    return list(state[0]) + list(state[1].values())


def some_option_sets(spec):
    """At most MAX_OPTION_SETS of the face's option sets, evenly spread, first and last included."""
    sets = list(spec.option_sets())
    if len(sets) <= MAX_OPTION_SETS:
        return sets
    picks = sorted({round(k * (len(sets) - 1) / (MAX_OPTION_SETS - 1)) for k in range(MAX_OPTION_SETS)})
    return [sets[k] for k in picks]


# ---- fastoptim.functional: every rule, option set, level, split ----------------------------------

@pytest.mark.parametrize("float32_state", [False, True], ids=["state16", "state32"])
@pytest.mark.parametrize("dtype", HALF, ids=half_id)
@pytest.mark.parametrize("spec", STAGED, ids=lambda s: s.name)
def test_functional_16bit_matches_reference(spec, dtype, float32_state, simd_level, split_everything):
    for size in SIZES:
        rng = np.random.default_rng(size)
        param0 = random_half(rng, size, dtype)
        grads = [random_half(rng, size, dtype) for _ in range(STEPS)]
        for options in some_option_sets(spec):
            expected = param0.copy()
            expected_state = new_state(spec, expected, options, float32_state)
            reference_steps(spec, options, expected, grads, expected_state)
            for threads in (1, 2):
                param = param0.copy()
                state = new_state(spec, param, options, float32_state)
                positional, keyword = state
                with fastoptim.num_threads(threads):
                    for step, grad in enumerate(grads, start=1):
                        spec.functional(param, grad, *positional, step=step, **spec.functional_kwargs(options),
                                        **keyword)
                where = f"{spec.name} {options} size={size} threads={threads} level={simd_level}"
                assert_same_bits(param, expected, where)
                for got, want in zip(all_state(state), all_state(expected_state)):
                    assert got.dtype == want.dtype
                    assert_same_bits(got, want, where)


def test_importing_fastoptim_leaves_ml_dtypes_alone_and_bfloat16_works_once_imported():
    """ml_dtypes takes about a second to import: fastoptim looks for its bfloat16 only once
    the user has imported it, at the first array of a type fastoptim does not know."""
    code = ("import sys, numpy as np, fastoptim\n"
            "assert 'ml_dtypes' not in sys.modules\n"
            "fastoptim.SGD([np.zeros(3, np.float32)], lr=0.5).step([np.ones(3, np.float32)])\n"
            "import ml_dtypes\n"
            "p = np.ones(3, ml_dtypes.bfloat16)\n"
            "fastoptim.SGD([p], lr=0.5).step([np.ones(3, ml_dtypes.bfloat16)])\n"
            "print(p.astype(np.float32).tolist())")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[0.5, 0.5, 0.5]"


def test_functional_refuses_a_grad_of_another_dtype():
    p = np.zeros(3, ml_dtypes.bfloat16)
    with pytest.raises(TypeError, match="grad has dtype float16 but param has dtype bfloat16"):
        fastoptim.functional.sgd(p, np.zeros(3, np.float16), step=1, lr=0.1)
    with pytest.raises(TypeError, match="float32, float64, float16 or bfloat16"):
        fastoptim.functional.sgd(np.zeros(3, np.int16), np.zeros(3, np.int16), step=1, lr=0.1)


# ---- rules the staged drivers cannot run yet: refused in every API form ---------------------------

def test_the_refused_rules_are_the_expected_ones():
    """A rule that starts refusing (or taking) 16-bit params is a decision: update this list."""
    assert sorted(spec.name for spec in REFUSED) == ["adafactor", "asgd", "lamb", "lbfgs", "muon", "nadam"]


@pytest.mark.parametrize("dtype", HALF, ids=half_id)
@pytest.mark.parametrize("spec", REFUSED, ids=lambda s: s.name)
def test_refused_rules_name_the_rule_and_dtype_before_writing(spec, dtype):
    """The class (any precision option) and the functional form refuse a 16-bit param with an
    error naming the rule and the dtype; nothing is written."""
    dtype_name = np.dtype(dtype).name
    shape = (4, 3)  # 2-D: Muon takes matrices only
    rule_name = spec.variant.name
    match = f"{rule_name} does not take {dtype_name} params"
    for precision in MODES.values():  # refused when the optimizer is made (its pointer tables)
        p = np.ones(shape, dtype)
        with pytest.raises(TypeError, match=match):
            spec.cls([p], **precision)
        assert (p == 1).all()
    if spec.rule.closure:
        return  # its functional form takes a closure and a list of params: checked above as LBFGS's
    param, grad = np.ones(shape, dtype), np.ones(shape, dtype)
    positional, keyword = spec.new_state(param, {})
    state = [a for a in positional + list(keyword.values()) if a is not None]  # Adafactor's unused slot: None
    before = [a.copy() for a in state]
    with pytest.raises(TypeError, match=f"{dtype_name}"):
        spec.functional(param, grad, *positional, step=1, **keyword)
    assert (param == 1).all()
    for a, b in zip(state, before):
        assert_same_bits(a, b, spec.name)


@pytest.mark.parametrize("dtype", HALF, ids=half_id)
@pytest.mark.parametrize("spec", REFUSED, ids=lambda s: s.name)
def test_refused_rules_take_torchs_path_in_fastoptim_torch(spec, dtype, torch):
    """fastoptim.torch steps a refused rule's 16-bit params with torch.optim's own implementation
    (a FallbackWarning naming the param and the dtype; torch's bits), or, where torch.optim has no
    such class (LAMB), raises a TypeError naming the class and the dtype; asking such a param for
    an option torch's implementation lacks is a TypeError. Nothing is written by an error."""
    import fastoptim.torch as ft
    torch_dtype = getattr(torch, np.dtype(dtype).name)
    rule_name = spec.variant.name
    start = torch.linspace(-1, 1, 12).reshape(4, 3).to(torch_dtype)  # 2-D: Muon takes matrices only

    def closure_for(t):
        def closure():
            t.grad = torch.full_like(t, 0.5) + t.detach()
            return float((t.detach().float() ** 2).sum())
        return closure

    ours = start.clone().requires_grad_()
    opt = getattr(ft, rule_name)([ours])
    if spec.variant.torch_name is None:
        with pytest.raises(TypeError, match=rf"fastoptim.torch.{rule_name} cannot step .*{torch_dtype}"):
            opt.step(closure_for(ours))
        assert torch.equal(ours.detach(), start)
        return
    with pytest.warns(ft.FallbackWarning, match=rf"{torch_dtype} param"):
        opt.step(closure_for(ours))
    theirs = start.clone().requires_grad_()
    getattr(torch.optim, spec.variant.torch_name)([theirs]).step(closure_for(theirs))
    assert torch.equal(ours.detach(), theirs.detach())
    for precision in ({"master_weights": True}, {"stochastic_rounding": True}, {"state_dtype": "float32"}):
        t = start.clone().requires_grad_()
        opt = getattr(ft, rule_name)([t], **precision)
        with pytest.raises(TypeError, match=f"has no {next(iter(precision))}"):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ft.FallbackWarning)
                opt.step(closure_for(t))
        assert torch.equal(t.detach(), start)


# ---- optimizers: master weights, stochastic rounding, state_dtype --------------------------------

MODES = {
    "nearest": {},
    "state32": {"state_dtype": "float32"},
    "master": {"master_weights": True},
    "stochastic": {"stochastic_rounding": True, "seed": 12345},
    "stochastic_state32": {"stochastic_rounding": True, "seed": 2**40 + 7, "state_dtype": "float32"},
}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", HALF, ids=half_id)
@pytest.mark.parametrize("spec", STAGED, ids=lambda s: s.name)
def test_optimizer_16bit_modes_match_reference(spec, dtype, mode, simd_level, split_everything):
    """Two params (the second one's stochastic bits are keyed by its index 1); the functional test
    covers every option set in round to nearest."""
    precision = MODES[mode]
    rng = np.random.default_rng(7)
    sizes = (273, 2113)
    params0 = [random_half(rng, n, dtype) for n in sizes]
    grads = [[random_half(rng, n, dtype) for n in sizes] for _ in range(STEPS)]
    rounding = "stochastic" if precision.get("stochastic_rounding") else "nearest"
    option_sets = list(spec.option_sets())  # the modes do not touch the rule's options: first and last
    for options in option_sets[:1] + option_sets[-1:]:
        for threads in (1, 2):
            params = [p.copy() for p in params0]
            opt = spec.cls(params, **options, **precision)
            with fastoptim.num_threads(threads):
                for g in grads:
                    opt.step(g)
            for index, p0 in enumerate(params0):
                expected = p0.copy()
                state = new_state(spec, expected, options, precision.get("state_dtype") == "float32")
                master = expected.astype(np.float32) if precision.get("master_weights") else None
                reference_steps(spec, options, expected, [g[index] for g in grads], state, rounding=rounding,
                                master=master, seed=precision.get("seed", 0), param_index=index)
                where = f"{spec.name} {options} {mode} param {index} threads={threads} level={simd_level}"
                assert_same_bits(params[index], expected, where)
                ours = opt.state.get(index, {})
                by_arg = dict(zip(spec.state, state[0])) | state[1]
                for slot, used in zip(spec.rule.state, spec.rule.slots(opt.param_groups[0])):
                    if used is not None:
                        assert_same_bits(ours[used], by_arg[slot.arg], where + f" {used}")
                if master is not None:
                    assert ours["master_param"].dtype == np.float32
                    assert_same_bits(ours["master_param"], master, where + " master_param")
                else:
                    assert "master_param" not in ours


def test_master_weights_and_step_are_in_the_state_dict_and_load_back():
    spec = next(s for s in SPECS if s.name == "sgd")
    rng = np.random.default_rng(3)
    p = random_half(rng, 100, ml_dtypes.bfloat16)
    opt = spec.cls([p], lr=0.1, momentum=0.9, master_weights=True)
    opt.step([random_half(rng, 100, ml_dtypes.bfloat16)])
    sd = opt.state_dict()
    assert sd["state"][0]["master_param"].dtype == np.float32
    assert sd["param_groups"][0]["master_weights"] is True
    q = p.copy()
    other = spec.cls([q], lr=0.1, momentum=0.9, master_weights=True)
    other.load_state_dict(sd)
    assert other.state[0]["master_param"].dtype == np.float32
    g = random_half(rng, 100, ml_dtypes.bfloat16)
    opt.step([g])
    other.step([g.copy()])
    assert_same_bits(q, p, "after loading")
    assert_same_bits(other.state[0]["master_param"], opt.state[0]["master_param"], "master after loading")


def test_stochastic_rounding_step_is_kept_for_rules_without_a_step():
    spec = next(s for s in SPECS if s.name == "sgd")
    p = np.ones(64, ml_dtypes.bfloat16)
    opt = spec.cls([p], lr=1e-3, stochastic_rounding=True)
    for _ in range(3):
        opt.step([np.ones(64, ml_dtypes.bfloat16)])
    assert int(opt.state[0]["step"]) == 3
    assert opt.state_dict()["state"][0]["step"] == 3


@pytest.mark.parametrize("dtype", HALF, ids=half_id)
def test_issue_rounding_check(dtype):
    """100 SGD steps of lr=1e-4 on ones with grad 1: round to nearest stays at 1.0, stochastic
    rounding averages 0.99, master weights hold 0.99 in the master copy."""
    spec = next(s for s in SPECS if s.name == "sgd")
    results = {}
    for mode, precision in (("nearest", {}), ("stochastic", {"stochastic_rounding": True}),
                            ("master", {"master_weights": True})):
        p = np.ones(4096, dtype)
        opt = spec.cls([p], lr=1e-4, **precision)
        for _ in range(100):
            opt.step([np.ones(4096, dtype)])
        results[mode] = (p.astype(np.float64), opt.state.get(0, {}).get("master_param"))
    assert (results["nearest"][0] == 1.0).all()
    assert abs(results["stochastic"][0].mean() - 0.99) < 2e-3
    assert abs(results["master"][1].astype(np.float64).mean() - 0.99) < 2e-6
    assert_same_bits(results["master"][0].astype(dtype), lowp.round_rne(results["master"][1], dtype), "master")


@pytest.mark.parametrize("dtype", HALF, ids=half_id)
def test_kernels_round_every_kind_of_float32_as_the_reference(dtype, simd_level, split_everything):
    """The staged drivers' rounding (vectorised per SIMD level) on every rounding decision, NaN and
    infinity included: master weights set to the patterns, one SGD step that leaves them as they
    are, the param then holds the master copy rounded to nearest even."""
    from test_lowp_reference import float32_patterns
    patterns = float32_patterns()
    spec = next(s for s in SPECS if s.name == "sgd")
    for threads in (1, 2):
        p = np.zeros(patterns.size, dtype)
        opt = spec.cls([p], lr=0.0, master_weights=True)
        zeros = np.zeros_like(p)
        opt.step([zeros])
        opt.state[0]["master_param"][...] = patterns
        with fastoptim.num_threads(threads):
            opt.step([zeros])
        master = opt.state[0]["master_param"]
        assert_same_bits(master[~np.isnan(patterns)], patterns[~np.isnan(patterns)], "lr=0 keeps the master")
        assert_same_bits(p, lowp.round_rne(master, dtype), f"threads={threads} level={simd_level}")
        # and widening: every 16-bit value through a step that keeps it (NaN made quiet)
        every = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(dtype)
        q = every.copy()
        with fastoptim.num_threads(threads):
            spec.cls([q], lr=0.0).step([np.zeros_like(q)])
        assert_same_bits(q, lowp.round_rne(lowp.to_f32(every), dtype), f"threads={threads} level={simd_level}")

@pytest.mark.parametrize("bad, message", [
    ({"state_dtype": "float16"}, "Invalid state_dtype"),
    ({"master_weights": "yes"}, "master_weights"),
    ({"master_weights": True, "stochastic_rounding": True}, "choose one"),
    ({"seed": -1}, "Invalid seed"),
    ({"seed": 1.5}, "Invalid seed"),
])
def test_bad_precision_options_are_refused_before_anything_is_written(bad, message):
    spec = next(s for s in SPECS if s.name == "adam")
    with pytest.raises((TypeError, ValueError), match=message):
        spec.cls([np.ones(3, ml_dtypes.bfloat16)], **bad)
    p = np.ones(3, ml_dtypes.bfloat16)
    opt = spec.cls([p], lr=0.1)
    opt.param_groups[0].update(bad)
    with pytest.raises((TypeError, ValueError), match=message):
        opt.step([np.ones(3, ml_dtypes.bfloat16)])
    assert (p == 1).all() and not opt.state


# ---- fastoptim.torch ---------------------------------------------------------------------

def ulps(a, b):
    """|a - b| in units in the last place of a 16-bit dtype, per element (on the ordered bit patterns)."""
    def ordered(x):
        u = x.view(np.int16).astype(np.int64)
        return np.where(u < 0, -(u & 0x7FFF), u)
    return np.abs(ordered(a) - ordered(b))


TORCH_CASES = [  # (torch name, options, whole tensor comparable: torch 2.13's fused SGD/Adagrad are not)
    ("Adam", {"lr": 1e-2}, True),
    ("Adam", {"lr": 1e-2, "weight_decay": 0.1, "amsgrad": True}, True),
    ("AdamW", {"lr": 1e-2, "weight_decay": 0.1}, True),
    ("SGD", {"lr": 1e-2, "momentum": 0.9, "weight_decay": 0.01}, False),
    ("SGD", {"lr": 1e-2, "momentum": 0.9, "nesterov": True}, False),
    ("Adagrad", {"lr": 1e-2, "weight_decay": 0.01}, False),
]


@pytest.mark.parametrize("dtype_name", ["bfloat16", "float16"])
@pytest.mark.parametrize("name, options, whole", TORCH_CASES, ids=lambda x: str(x))
def test_torch_16bit_is_within_one_ulp_of_torch_fused(torch, name, options, whole, dtype_name):
    """20 steps on 4111 elements; torch's fused kernel's vector body covers all but the last
    numel % 16 elements, where 2.13's SGD writes nothing and Adagrad rounds its constants to
    16 bits: those two are compared on the tail (docs/lowp_notes.md, section 3)."""
    import fastoptim.torch as ft
    dtype = getattr(torch, dtype_name)
    gen = torch.Generator().manual_seed(0)
    n = 4111
    init = torch.randn(n, generator=gen).to(dtype)
    grads = [torch.randn(n, generator=gen).to(dtype) for _ in range(20)]
    ours, theirs = init.clone().requires_grad_(), init.clone().requires_grad_()
    opt_ours = getattr(ft, name)([ours], **options)
    opt_theirs = getattr(torch.optim, name)([theirs], fused=True, **options)
    for g in grads:
        ours.grad, theirs.grad = g.clone(), g.clone()
        opt_ours.step()
        opt_theirs.step()
    view = slice(None) if whole else slice(n - n % 16, n)
    np_dtype = np.float16 if dtype_name == "float16" else ml_dtypes.bfloat16
    a = ours.detach().view(torch.int16).numpy().view(np_dtype)[view]
    b = theirs.detach().view(torch.int16).numpy().view(np_dtype)[view]
    assert ulps(a, b).max() <= 1
    assert ours.dtype == dtype
    for key, value in opt_ours.state[ours].items():
        if key != "step":
            assert value.dtype == dtype, key


@pytest.mark.parametrize("dtype_name", ["bfloat16", "float16"])
def test_torch_16bit_modes_match_the_numpy_optimizer(torch, dtype_name):
    """fastoptim.torch steps the same kernels as fastoptim.optim: same bits in every mode, and
    the float32 state and master copy are float32 tensors, kept so by state_dict/load_state_dict."""
    import fastoptim.torch as ft
    from fastoptim.optim import Adam
    dtype = getattr(torch, dtype_name)
    np_dtype = np.float16 if dtype_name == "float16" else ml_dtypes.bfloat16
    gen = torch.Generator().manual_seed(1)
    for precision in MODES.values():
        init = [torch.randn(n, generator=gen).to(dtype) for n in (300, 70)]
        grads = [[torch.randn(t.numel(), generator=gen).to(dtype) for t in init] for _ in range(3)]
        tensors = [t.clone().requires_grad_() for t in init]
        arrays = [t.view(torch.int16).numpy().view(np_dtype).copy() for t in init]
        opt_t = ft.Adam(tensors, lr=1e-2, **precision)
        opt_n = Adam(arrays, lr=1e-2, **precision)
        for step_grads in grads:
            for t, g in zip(tensors, step_grads):
                t.grad = g.clone()
            opt_t.step()
            opt_n.step([g.view(torch.int16).numpy().view(np_dtype).copy() for g in step_grads])
        for t, a in zip(tensors, arrays):
            assert_same_bits(t.detach().view(torch.int16).numpy().view(np_dtype), a, str(precision))
        state = opt_t.state[tensors[0]]
        if precision.get("master_weights"):
            assert state["master_param"].dtype == torch.float32
        if precision.get("state_dtype") == "float32":
            assert state["exp_avg"].dtype == torch.float32
        sd = opt_t.state_dict()
        again = [t.detach().clone().requires_grad_() for t in tensors]
        opt_again = ft.Adam(again, lr=1e-2, **precision)
        opt_again.load_state_dict(sd)
        for key, value in opt_t.state[tensors[0]].items():
            loaded = opt_again.state[again[0]][key]
            assert loaded.dtype == value.dtype, key
        for t, u in zip(tensors, again):
            t.grad = torch.ones_like(t)
            u.grad = torch.ones_like(u)
        opt_t.step()
        opt_again.step()
        for t, u in zip(tensors, again):
            assert torch.equal(t.view(torch.int16), u.view(torch.int16)), precision


def test_torch_issue_rounding_check(torch):
    import fastoptim.torch as ft
    results = {}
    for mode, precision in (("nearest", {}), ("stochastic", {"stochastic_rounding": True}),
                            ("master", {"master_weights": True})):
        p = torch.ones(4096, dtype=torch.bfloat16, requires_grad=True)
        opt = ft.SGD([p], lr=1e-4, **precision)
        for _ in range(100):
            p.grad = torch.ones_like(p)
            opt.step()
        results[mode] = (p.detach().double(), opt.state[p].get("master_param"))
    assert (results["nearest"][0] == 1.0).all()
    assert abs(results["stochastic"][0].mean().item() - 0.99) < 2e-3
    assert abs(results["master"][1].double().mean().item() - 0.99) < 2e-6
