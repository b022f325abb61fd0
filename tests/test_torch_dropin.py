"""fastoptim.torch as a drop-in for torch.optim (issue 15).

What the kernels cannot step (differentiable=True groups, strided views with gaps,
sparse grads, params on another device, 16-bit params, a param twice in a group)
takes torch.optim's own implementation for those params, with one FallbackWarning
and the same results; what they can (complex params as their view_as_real,
transposed and channels_last layouts) stays on the kernels.  Then torch's other
contracts: any value in `optimizer.state`, its errors (optim_db's error inputs,
from the installed torch), GradScaler's grad_scale/found_inf on fused optimizers,
and AdamW staying AdamW whatever checkpoint it loads.
"""
import copy
import pickle
import warnings

import pytest

from fastoptim.rules import VARIANTS

NAMES = ["SGD", "Adagrad", "RMSprop", "Adadelta", "Adam", "AdamW"]
# every class of ours that torch.optim has too (each is in optim_db), and the rules among
# them that take complex params (Muon and Adafactor refuse them, as torch's)
TORCH_NAMES = [variant.name for _, variant in VARIANTS if variant.torch_name is not None]
CLOSURE_RULES = {variant.name for rule, variant in VARIANTS if rule.closure}
COMPLEX_NAMES = [variant.name for rule, variant in VARIANTS
                 if variant.torch_name is not None and rule.takes_complex]
FUSED_ON_CPU = ["SGD", "Adagrad", "Adam", "AdamW"]
SPARSE = ["SGD", "Adagrad"]
STEPS = 4


@pytest.fixture(scope="module")
def ft(torch):
    import fastoptim.torch as ft
    return ft


@pytest.fixture(scope="module")
def optim_db(torch):
    common = pytest.importorskip("torch.testing._internal.common_optimizers")
    return {info.name: info for info in common.optim_db}


def twins(torch, make):
    """The same params twice: `make(generator)` builds a list of tensors."""
    return make(torch.Generator().manual_seed(0)), make(torch.Generator().manual_seed(0))


def step_both(torch, ours, theirs, steps=STEPS, grad=None):
    """Step both optimizers with the same grads (random, shaped and laid out like each param)."""
    gen = torch.Generator().manual_seed(1)
    ps = [p for g in ours.param_groups for p in g["params"]]
    qs = [q for g in theirs.param_groups for q in g["params"]]
    for _ in range(steps):
        for p, q in zip(ps, qs):
            g = grad(p, gen) if grad else torch.empty_like(p).copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype))
            p.grad, q.grad = g, g.clone()
        ours.step()
        theirs.step()


def assert_same(torch, ours, theirs, **tol):
    ps = [p for g in ours.param_groups for p in g["params"]]
    qs = [q for g in theirs.param_groups for q in g["params"]]
    for i, (p, q) in enumerate(zip(ps, qs)):
        torch.testing.assert_close(p.detach(), q.detach(), msg=lambda m: f"params[{i}]: {m}", **tol)
        mine, their = ours.state.get(p, {}), theirs.state.get(q, {})
        assert set(mine) == set(their), f"params[{i}]: state keys {set(mine)} vs torch's {set(their)}"
        for key, value in their.items():
            if isinstance(value, torch.Tensor):
                torch.testing.assert_close(mine[key], value, msg=lambda m: f"params[{i}] {key}: {m}", **tol)


def fallback_warnings(record, ft):
    return [w for w in record if issubclass(w.category, ft.FallbackWarning)]


# ---- optim_db's configs, params the kernels step (real, complex, transposed, channels_last) ----

@pytest.mark.parametrize("name", NAMES)
def test_optim_db_configs_match_torch_on_kernel_layouts(torch, ft, optim_db, name):
    """Every optim_db config, on params the kernels take without a fallback: float32,
    complex64 (as torch: stepped as view_as_real), a transpose and a channels_last tensor."""
    def make(gen):
        return [torch.randn(3, 4, generator=gen).requires_grad_(),
                torch.randn(5, 3, generator=gen, dtype=torch.complex64).requires_grad_(),
                torch.randn(4, 6, generator=gen).t().requires_grad_(),
                torch.randn(2, 3, 4, 5, generator=gen).to(memory_format=torch.channels_last).requires_grad_()]
    for optim_input in optim_db[name].optim_inputs_func(device="cpu"):
        kwargs = optim_input.kwargs
        ps, qs = twins(torch, make)
        with warnings.catch_warnings():
            warnings.simplefilter("error", ft.FallbackWarning)
            ours = getattr(ft, name)(ps, **kwargs)
            theirs = getattr(torch.optim, name)(qs, **kwargs)
            step_both(torch, ours, theirs)
        assert ours.fallbacks == {}, optim_input.desc
        assert_same(torch, ours, theirs, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_complex_matches_real_view(torch, ft, name):
    """A complex param steps as its view_as_real, state complex and shaped like it (torch's contract)."""
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(7, generator=gen, dtype=torch.complex128).requires_grad_()
    r = torch.view_as_real(z.detach()).clone().requires_grad_()
    kwargs = dict(weight_decay=0.1) | (dict(momentum=0.9) if name == "SGD" else {})
    ours, real = getattr(ft, name)([z], **kwargs), getattr(ft, name)([r], **kwargs)
    for _ in range(STEPS):
        g = torch.randn(7, generator=gen, dtype=torch.complex128)
        z.grad, r.grad = g, torch.view_as_real(g).clone()
        ours.step()
        real.step()
    torch.testing.assert_close(torch.view_as_real(z.detach()), r.detach(), rtol=1e-13, atol=1e-13)
    for key, value in ours.state[z].items():
        if key != "step":
            assert value.dtype == torch.complex128 and value.shape == z.shape, key


def _quadratic_closure(torch, opt, params, targets):
    """loss = sum of squared distances of each param (a complex one as its view_as_real) to its
    target, with its grads; the closure torch's LBFGS evaluates."""
    def closure():
        opt.zero_grad()
        loss = sum(((torch.view_as_real(p) if p.is_complex() else p) - t).pow(2).sum()
                   for p, t in zip(params, targets))
        loss.backward()
        return loss
    return closure


@pytest.mark.parametrize("name", COMPLEX_NAMES)
def test_optim_db_configs_step_complex_params_as_their_real_view(torch, ft, optim_db, name):
    """torch's contract (its test_complex): under every optim_db config, complex params, mixed with
    a real one, step exactly as their view_as_real would, and as torch's own class steps them;
    the closure-driven LBFGS too."""
    for optim_input in optim_db[name].optim_inputs_func(device="cpu"):
        gen = torch.Generator().manual_seed(0)
        complex_params = [torch.randn(4, 3, generator=gen, dtype=torch.complex128),
                          torch.randn(5, generator=gen, dtype=torch.complex128),
                          torch.randn(3, 2, generator=gen, dtype=torch.float64)]
        targets = [torch.randn(torch.view_as_real(p).shape if p.is_complex() else p.shape, generator=gen,
                               dtype=torch.float64) for p in complex_params]
        runs = []
        for cls, as_real in ((getattr(ft, name), False), (getattr(ft, name), True),
                             (getattr(torch.optim, name), False)):
            params = [(torch.view_as_real(p) if as_real and p.is_complex() else p).clone().requires_grad_()
                      for p in complex_params]
            opt = cls(params, **optim_input.kwargs)
            closure = _quadratic_closure(torch, opt, params, targets)
            for _ in range(3):
                if name in CLOSURE_RULES:
                    opt.step(closure)
                else:
                    closure()
                    opt.step()
            runs.append([torch.view_as_real(p.detach()) if p.is_complex() else p.detach() for p in params])
        where = f"{name} {optim_input.desc}"
        for ours, real_view, theirs in zip(*runs):
            torch.testing.assert_close(ours, real_view, rtol=1e-13, atol=1e-13, msg=lambda m: f"{where}: {m}")
            torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-10, msg=lambda m: f"{where} vs torch: {m}")


# ---- fallbacks: torch's implementation for what the kernels cannot step --------------

@pytest.mark.parametrize("name", NAMES)
def test_differentiable_group_takes_torch_path(torch, ft, name):
    """differentiable=True: torch's single-tensor update, autograd through it, one warning;
    the other group stays on the kernels."""
    def make(gen):
        return [torch.randn(4, generator=gen, dtype=torch.float64).requires_grad_() for _ in range(2)]
    ps, qs = twins(torch, make)
    ours = getattr(ft, name)([{"params": [ps[0]], "differentiable": True}, {"params": [ps[1]]}], lr=0.1)
    theirs = getattr(torch.optim, name)([{"params": [qs[0]], "differentiable": True}, {"params": [qs[1]]}], lr=0.1)
    assert "differentiable: True" in repr(ours)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        step_both(torch, ours, theirs)
    (warning,) = fallback_warnings(record, ft)
    assert warning.filename == __file__  # points at the user's step(), not at fastoptim or torch
    assert "param_groups[0]['params'][0]" in str(warning.message) and "differentiable" in str(warning.message)
    assert list(ours.fallbacks) == ["param_groups[0]['params'][0]"]
    assert_same(torch, ours, theirs, rtol=1e-12, atol=1e-12)

    # autograd sees through the update: d(new param)/d(lr-scaled grad) exists
    x = torch.randn(4, dtype=torch.float64, requires_grad=True)
    p = x.clone()  # a non-leaf param, as torch's differentiable tests use
    p.grad = torch.randn(4, dtype=torch.float64, requires_grad=True)
    opt = getattr(ft, name)([p], lr=0.1, differentiable=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ft.FallbackWarning)
        opt.step()
    p.sum().backward()
    assert x.grad is not None


@pytest.mark.parametrize("name", NAMES)
def test_strided_view_with_gaps_takes_torch_path(torch, ft, name):
    """A view with gaps (torch's contiguous=False params) falls back; the dense ones next to
    it stay on the kernels.  Updated in place either way, never through a copy."""
    def make(gen):
        return [torch.randn(10, 5, 2, generator=gen)[..., 0].requires_grad_(),
                torch.randn(10, 2, generator=gen)[..., 0].requires_grad_(),
                torch.randn(5, 10, generator=gen).t().requires_grad_()]
    ps, qs = twins(torch, make)
    pointers = [p.data_ptr() for p in ps]
    ours, theirs = getattr(ft, name)(ps, lr=0.1), getattr(torch.optim, name)(qs, lr=0.1, foreach=False)
    with pytest.warns(ft.FallbackWarning, match="strided view with gaps"):
        step_both(torch, ours, theirs)
    assert sorted(ours.fallbacks) == ["param_groups[0]['params'][0]", "param_groups[0]['params'][1]"]
    assert [p.data_ptr() for p in ps] == pointers
    assert_same(torch, ours, theirs, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", SPARSE)
def test_sparse_grads_take_torch_path(torch, ft, name):
    """A sparse embedding (uncoalesced grads) next to a dense layer: the embedding takes torch's
    sparse path from its first sparse grad on, the dense layer stays on the kernels."""
    def make(gen):
        return [torch.randn(10, 3, generator=gen, dtype=torch.float64).requires_grad_(),
                torch.randn(3, generator=gen, dtype=torch.float64).requires_grad_()]
    ps, qs = twins(torch, make)
    ours, theirs = getattr(ft, name)(ps, lr=0.1), getattr(torch.optim, name)(qs, lr=0.1)

    def grad(p, gen):
        if p.dim() == 1:
            return torch.randn(3, generator=gen, dtype=torch.float64)
        index = torch.tensor([[1, 4, 1]])  # index 1 twice: uncoalesced
        return torch.sparse_coo_tensor(index, torch.randn(3, 3, generator=gen, dtype=torch.float64), (10, 3))
    with pytest.warns(ft.FallbackWarning, match="sparse"):
        step_both(torch, ours, theirs, grad=grad)
    assert list(ours.fallbacks) == ["param_groups[0]['params'][0]"]
    assert_same(torch, ours, theirs, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", FUSED_ON_CPU)
def test_meta_params_are_checked_at_step(torch, ft, name):
    """torch's deferred init builds the optimizer on a meta model: construction works, a fused
    step on meta params raises torch's RuntimeError, and after model.to_empty() (new CPU
    Parameters; the optimizer's meta ones get no grads) a step is a no-op, as in torch."""
    with torch.device("meta"):
        model = torch.nn.Linear(3, 2)
    opt = getattr(ft, name)(model.parameters(), fused=True)
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ft.FallbackWarning)
        with pytest.raises(RuntimeError, match="`fused=True` requires all the params to be floating point Tensors"):
            opt.step()
        opt.zero_grad(set_to_none=True)
        model.to_empty(device="cpu")
        for p in model.parameters():
            p.grad = torch.ones_like(p)
        opt.step()


def test_param_back_on_the_kernels_when_its_layout_allows(torch, ft):
    """A param on torch's path for its layout returns to the kernels once p.data is dense."""
    def make(gen):
        return [torch.nn.Parameter(torch.randn(6, generator=gen, dtype=torch.float64)[::2])]
    ps, qs = twins(torch, make)
    ours, theirs = ft.Adam(ps, lr=0.1), torch.optim.Adam(qs, lr=0.1)
    with pytest.warns(ft.FallbackWarning, match="gaps"):
        step_both(torch, ours, theirs, steps=2)
    for p in ps + qs:
        p.data = p.data.clone()
    step_both(torch, ours, theirs, steps=2)
    assert ours.fallbacks == {}
    assert_same(torch, ours, theirs, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", ["SGD", "Adam", "NAdam"])
def test_half_params_take_the_kernels_or_torchs_path(torch, ft, name):
    """16-bit params go to the kernels (tests/test_lowp.py checks their bits); those of a rule
    whose kernels refuse them (NAdam) take torch's path, with torch's results."""
    def make(gen):
        return [torch.randn(5, generator=gen).to(dtype).requires_grad_() for dtype in (torch.bfloat16, torch.float16)]
    # the kernels' 16-bit defaults are torch's fused kernels' (NAdam has no fused form)
    for options in ({"fused": True},) if name != "NAdam" else ({},):
        ps, qs = twins(torch, make)
        ours, theirs = getattr(ft, name)(ps, lr=0.1, **options), getattr(torch.optim, name)(qs, lr=0.1, **options)
        if name == "NAdam":
            with pytest.warns(ft.FallbackWarning, match="torch.bfloat16 param"):
                step_both(torch, ours, theirs)
            assert_same(torch, ours, theirs, rtol=0, atol=0)
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("error", ft.FallbackWarning)
            step_both(torch, ours, theirs)
        assert ours.fallbacks == {}
        for p, q in zip(ps, qs):  # within a unit in the last place (5 elements: torch's fused SGD is right on them)
            torch.testing.assert_close(p.detach(), q.detach(), rtol=torch.finfo(p.dtype).eps, atol=1e-5)


def test_duplicate_param_warns_and_steps_twice_as_torch(torch, ft):
    def make(gen):
        return [torch.randn(4, generator=gen, dtype=torch.float64).requires_grad_()]
    (p,), (q,) = twins(torch, make)
    with pytest.warns(UserWarning, match="a parameter group with duplicate parameters"):
        ours = ft.SGD([p, p], lr=0.1, momentum=0.5)
    with pytest.warns(UserWarning, match="a parameter group with duplicate parameters"):
        theirs = torch.optim.SGD([q, q], lr=0.1, momentum=0.5)
    with pytest.warns(ft.FallbackWarning, match="shares memory"):
        step_both(torch, ours, theirs)
    torch.testing.assert_close(p.detach(), q.detach(), rtol=1e-12, atol=1e-12)


def test_param_changes_route_when_its_grad_becomes_dense(torch, ft):
    """State is torch's layout on both paths, so a param moves between them mid-training."""
    def make(gen):
        return [torch.randn(6, 2, generator=gen, dtype=torch.float64).requires_grad_()]
    ps, qs = twins(torch, make)
    ours, theirs = ft.Adagrad(ps, lr=0.1), torch.optim.Adagrad(qs, lr=0.1)
    with pytest.warns(ft.FallbackWarning):
        step_both(torch, ours, theirs, grad=lambda p, gen: torch.randn(6, 2, generator=gen, dtype=p.dtype).to_sparse())
    # from its first sparse grad on, the param stays on torch's path (dense grads included)
    step_both(torch, ours, theirs)
    assert_same(torch, ours, theirs, rtol=1e-12, atol=1e-12)
    assert ours.state[ps[0]]["step"].dtype == theirs.state[qs[0]]["step"].dtype


# ---- torch's state, errors, AMP and checkpoint contracts ----------------------------------

def test_state_holds_any_value(torch, ft):
    p = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    opt = ft.Adam([p], lr=0.1)
    opt.state["note"] = 1
    opt.state["flags"] = [True]
    p.grad = torch.ones_like(p)
    opt.step()
    sd = opt.state_dict()
    assert sd["state"]["note"] == 1 and sd["state"]["flags"] == [True]
    again = ft.Adam([torch.zeros(3, dtype=torch.float64, requires_grad=True)], lr=0.1)
    again.load_state_dict(sd)
    assert again.state["note"] == 1
    assert copy.deepcopy(opt).state["flags"] == [True]
    assert pickle.loads(pickle.dumps(opt.state_dict()))["state"]["note"] == 1
    del opt.state["note"]
    opt.step()
    assert int(opt.state[p]["step"]) == 2


@pytest.mark.parametrize("name", TORCH_NAMES)
def test_optim_db_error_inputs(torch, ft, optim_db, name):
    """Every error input of optim_db: torch's exception (or warning) type, its text, raised
    where torch raises it (constructor or step).  Runs each input on its own."""
    common = pytest.importorskip("torch.testing._internal.common_optimizers")
    info = optim_db[name]
    for err in info.optim_error_inputs_func(device="cpu", dtype=torch.float32):
        params, kwargs = err.optimizer_error_input.params, err.optimizer_error_input.kwargs
        expect = pytest.warns if issubclass(err.error_type, Warning) else pytest.raises
        try:
            if err.error_on == common.OptimizerErrorEnum.CONSTRUCTION_ERROR:
                with expect(err.error_type, match=err.error_regex):
                    getattr(ft, name)(params, **kwargs)
            else:
                opt = getattr(ft, name)(params, **kwargs)
                with expect(err.error_type, match=err.error_regex):
                    opt.step()
        except BaseException as failure:  # pytest's Failed too: say which input
            raise AssertionError(f"{name}: error input {err.optimizer_error_input.desc!r}") from failure


@pytest.mark.parametrize("name", FUSED_ON_CPU)
def test_fused_honours_grad_scale_and_found_inf(torch, ft, name):
    """As torch's fused kernels (what torch.amp.GradScaler relies on): grads divided by
    grad_scale inside the step and never written; a nonzero found_inf skips the whole step,
    the step count included, which stays torch's float32 tensor."""
    def make(gen):
        return [torch.randn(5, generator=gen).requires_grad_() for _ in range(2)]
    ps, qs = twins(torch, make)
    ours, theirs = getattr(ft, name)(ps, lr=0.1, fused=True), getattr(torch.optim, name)(qs, lr=0.1, fused=True)
    assert ours._step_supports_amp_scaling
    before = [p.detach().clone() for p in ps]
    for opt in (ours, theirs):
        opt.grad_scale, opt.found_inf = torch.full((), 4.0), torch.ones(())
    step_both(torch, ours, theirs, steps=1)
    torch.testing.assert_close([p.detach() for p in ps], before, rtol=0, atol=0)
    assert_same(torch, ours, theirs, rtol=0, atol=0)
    for opt in (ours, theirs):
        opt.found_inf = torch.zeros(())
    grads = []
    step_both(torch, ours, theirs, grad=lambda p, gen: grads.append(torch.randn(5, generator=gen) * 4) or grads[-1])
    assert all(torch.equal(p.grad, g) for p, g in zip(ps, grads[-2:]))  # never written
    assert_same(torch, ours, theirs, rtol=1e-6, atol=1e-6)
    assert all(ours.state[p]["step"].dtype == torch.float32 for p in ps if "step" in theirs.state[qs[0]])


def test_grad_scaler_trains_like_torch(torch, ft):
    def make(gen):
        return [torch.randn(4, 3, generator=gen).requires_grad_()]
    ps, qs = twins(torch, make)
    x = torch.randn(8, 4, generator=torch.Generator().manual_seed(2))
    for params, module in ((ps, ft), (qs, torch.optim)):
        opt = module.Adam(params, lr=0.01, fused=True)
        scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 10)
        for k in range(3):
            opt.zero_grad()
            loss = (x @ params[0]).pow(2).sum() * (float("inf") if k == 1 else 1.0)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
    torch.testing.assert_close(ps[0].detach(), qs[0].detach(), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("loaded_from", ["Adam", "AdamW"])
def test_adamw_stays_adamw_after_loading(torch, ft, loaded_from):
    """The class decides the rule, not the loaded group: one zero-grad AdamW step from 1 with
    lr=0.1, weight_decay=0.5 decays to 1 - 0.1 * 0.5 = 0.95 (coupled, Adam's, would give 0.90).
    (The NumPy face: test_optimizer.py.)"""
    p, q = torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(3))
    w = ft.AdamW([p], lr=0.1, weight_decay=0.5)
    w.load_state_dict(getattr(ft, loaded_from)([q], lr=0.1, weight_decay=0.5).state_dict())
    p.grad = torch.zeros_like(p)
    w.step()
    assert w.param_groups[0]["decoupled_weight_decay"] is True
    torch.testing.assert_close(p.detach(), torch.full((3,), 0.95), rtol=0, atol=1e-6)


def test_loaded_integer_state_keeps_its_dtype(torch, ft):
    """Integer and bool state that is not the rule's (a user's counter and flag) loads with its
    dtype and values (torch.optim's loader would cast it to float32), as a copy; the rule's
    own state is cast to the param's dtype as torch does."""
    p = torch.nn.Parameter(torch.ones(3))
    opt = ft.Adam([p], lr=0.1)
    p.grad = torch.ones(3)
    opt.step()
    saved = opt.state_dict()
    counter = torch.tensor([1, 2, 2**40], dtype=torch.int64)
    saved["state"][0]["visits"] = counter
    saved["state"][0]["seen"] = torch.tensor([True, False, True])
    saved["state"][0]["exp_avg"] = saved["state"][0]["exp_avg"].double()
    other = ft.Adam([torch.nn.Parameter(torch.ones(3))], lr=0.1)
    other.load_state_dict(saved)
    state = next(iter(other.state.values()))
    assert state["visits"].dtype == torch.int64 and state["visits"].tolist() == [1, 2, 2**40]
    assert state["seen"].dtype == torch.bool and state["seen"].tolist() == [True, False, True]
    assert state["visits"].data_ptr() != counter.data_ptr()
    assert state["exp_avg"].dtype == torch.float32


def test_grad_laid_out_unlike_param_takes_torch_path(torch, ft):
    """A transposed grad for a contiguous param: the kernels walk memory, so torch's path steps it."""
    def make(gen):
        return [torch.randn(4, 3, generator=gen, dtype=torch.float64).requires_grad_()]
    ps, qs = twins(torch, make)
    ours, theirs = ft.RMSprop(ps, lr=0.01), torch.optim.RMSprop(qs, lr=0.01)
    with pytest.warns(ft.FallbackWarning, match="its grad has strides"):
        step_both(torch, ours, theirs, grad=lambda p, gen: torch.randn(3, 4, generator=gen, dtype=p.dtype).t())
    assert_same(torch, ours, theirs, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", TORCH_NAMES)
def test_loading_a_checkpoint_keeps_the_groups_options(torch, ft, name):
    """A checkpoint loaded (twice) into a new optimizer gives the groups it saved.  torch's loader
    adds 'differentiable' to the defaults of every optimizer; the classes without that option
    (LBFGS and Muon, as torch's) must not grow it in their groups."""
    cls = getattr(ft, name)
    p = torch.randn(2, 3, requires_grad=True)
    saved = cls([p]).state_dict()
    other = cls([p.detach().clone().requires_grad_()])
    for _ in range(2):  # the second time, the defaults already hold what the first load added
        other.load_state_dict(copy.deepcopy(saved))
        assert other.state_dict()["param_groups"] == saved["param_groups"]
    torch_group = getattr(torch.optim, name)([p]).param_groups[0]
    assert ("differentiable" in other.param_groups[0]) == ("differentiable" in torch_group)
