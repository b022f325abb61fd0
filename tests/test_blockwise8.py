"""8-bit blockwise state (fastoptim.blockwise8; Adam8bit, AdamW8bit, SGD8bit, RMSprop8bit,
Adagrad8bit, Lion8bit in fastoptim and fastoptim.torch).

The kernels are checked bit for bit against a plain-NumPy reference that runs the rule's
NumPy reference block by block on dequantized state and requantizes with the brute-force
nearest search; the maps against bitsandbytes' own; one step against bitsandbytes'
Adam8bit (its CPU path rounds its own way, so codes may differ by one); checkpoints both
ways; and training accuracy against float32 Adam.
"""
import copy
import inspect
import pickle

from fractions import Fraction

import numpy as np
import pytest

import fastoptim
from fastoptim import blockwise8 as q8
from fastoptim._ext import runtime
from fastoptim.rules import RULES

RULE = {variant.name: rule for rule in RULES for variant in rule.variants}
FIXED = {variant.name: variant.fixed for rule in RULES for variant in rule.variants}

# (class, options): every 8-bit class, with options that use one, two and three states
CASES = [
    ("Adam8bit", dict(lr=1e-2)),
    ("Adam8bit", dict(lr=1e-2, weight_decay=0.1, amsgrad=True)),
    ("AdamW8bit", dict(lr=1e-2)),
    ("SGD8bit", dict(lr=1e-2, momentum=0.9)),
    ("SGD8bit", dict(lr=1e-2, momentum=0.9, nesterov=True, dampening=0.0, weight_decay=0.01)),
    ("RMSprop8bit", dict(lr=1e-3)),
    ("RMSprop8bit", dict(lr=1e-3, momentum=0.5, weight_decay=0.01)),
    ("Adagrad8bit", dict(lr=1e-2, initial_accumulator_value=0.1)),
    ("Lion8bit", dict(lr=1e-3, weight_decay=0.1)),
]
# one element, a SIMD tail, one block, one block and one element, several blocks and a tail
SIZES = [1, 13, 256, 257, 1000, 4099]


def _base_options(name, options):
    """The base class's rule and its full options: its defaults, `options`, its fixed ones."""
    base = name[:-len("8bit")]
    rule = RULE[base]
    names = {o.name for o in rule.options}
    merged = {pname: parameter.default for pname, parameter in inspect.signature(getattr(fastoptim, base)).parameters.items()
              if pname in names and parameter.default is not inspect.Parameter.empty}
    merged.update(options)
    merged.update(FIXED[base])
    return rule, merged


def _reference_step(name, options, param, grad, state, step, block):
    """One step of an 8-bit class in plain NumPy: per block, skip it if its grad is not
    finite, else dequantize, the rule's NumPy reference on the block, requantize."""
    rule, merged = _base_options(name, options)
    slots = rule.slots(merged)
    kept = q8.quantized_slots(rule, slots)
    kwargs = {"maximize": merged.get("maximize", False)}
    for option in rule.options:
        parts = getattr(option, "parts", None)
        if parts:  # a pair (betas): its parts are the kernel's fields
            kwargs.update((part.name, value) for part, value in zip(parts, merged[option.name]))
        elif option.name in rule.field_names:
            kwargs[option.name] = merged[option.name]
    flat_p, flat_g = param.reshape(-1), grad.reshape(-1)
    skipped = 0
    for b in range(-(-flat_p.size // block)):
        part = slice(b * block, (b + 1) * block)
        if not np.all(np.isfinite(flat_g[part])):
            skipped += 1
            continue
        values = {}
        for j, (_, slot_name, _) in enumerate(kept, start=1):
            codes = state[f"state{j}"].reshape(-1)[part]
            values[slot_name] = q8.dequantize_blockwise(codes, state[f"absmax{j}"][b:b + 1], state[f"qmap{j}"],
                                                        block)
        for slot_name in slots:
            if slot_name is not None and slot_name not in values:
                values[slot_name] = state[slot_name].reshape(-1)[part].copy()
        p_block = flat_p[part].copy()
        with np.errstate(over="ignore", invalid="ignore"):
            rule.reference(p_block, flat_g[part], values, step=step, grad_scale=1.0, lr=merged["lr"], **kwargs)
        if not all(np.all(np.isfinite(values[name])) for _, name, _ in kept):
            skipped += 1
            continue
        flat_p[part] = p_block
        for slot_name in slots:  # a float32 third state: its block was updated in a copy
            if slot_name is not None and slot_name not in {name for _, name, _ in kept}:
                state[slot_name].reshape(-1)[part] = values[slot_name]
        for j, (_, slot_name, _) in enumerate(kept, start=1):
            codes, absmax = q8.quantize_blockwise(values[slot_name], state[f"qmap{j}"], block)
            state[f"state{j}"].reshape(-1)[part] = codes
            state[f"absmax{j}"][b] = absmax[0]
    return skipped


def _grads(rng, shape, steps):
    return [rng.standard_normal(shape).astype(np.float32) * np.float32(10.0 ** rng.uniform(-3, 1))
            for _ in range(steps)]


# ---- maps and quantization ---------------------------------------------------------

def _nearest_codes(values, qmap):
    """The index of the map entry nearest to each value, the lower one of two at the same
    distance: the definition, in exact arithmetic (a double's difference of two float32s is
    rounded when their magnitudes are far apart) over the two entries around each value."""
    codes = np.empty(values.size, np.uint8)
    entries = [Fraction(float(q)) for q in qmap]
    for k, v in enumerate(values.reshape(-1)):
        above = min(int(np.searchsorted(qmap, v, side="left")), qmap.size - 1)
        below = max(above - 1, 0)
        exact = Fraction(float(v))
        codes[k] = below if abs(exact - entries[below]) <= abs(entries[above] - exact) else above
    return codes


def _kernel_codes(values, qmap):
    """The kernel's codes on qmap of values of magnitude at most 1 (each 4096-block also holds
    a 1.0, so absmax = 1): SGD8bit's momentum buffer after a step from zero is the grad itself."""
    blocks = -(-values.size // 4095)
    padded = np.zeros(blocks * 4095, np.float32)
    padded[:values.size] = values
    grad = np.concatenate([np.ones((blocks, 1), np.float32), padded.reshape(blocks, 4095)], axis=1)
    param = np.zeros(grad.size, np.float32)
    opt = fastoptim.SGD8bit([param], lr=0.0, momentum=0.9, block_size=4096, min_8bit_size=0)
    opt.step([np.zeros_like(param)])  # a momentum buffer of zeros (absmax 0), then on qmap:
    state = opt.state_dict()
    state["state"][0]["qmap1"] = qmap.copy()
    opt.load_state_dict(state)
    opt.step([grad.reshape(-1)])      # 0.9 * 0 + grad
    assert (opt.state[0]["absmax1"] == 1).all()
    return opt.state[0]["state1"].reshape(blocks, 4096)[:, 1:].reshape(-1)[:values.size]


def test_dynamic_maps_are_bitsandbytes_maps():
    bnb_functional = pytest.importorskip("bitsandbytes.functional")
    for signed in (True, False):
        ours = q8.create_dynamic_map(signed)
        theirs = bnb_functional.create_dynamic_map(signed=signed).numpy()
        assert ours.dtype == np.float32 and ours.shape == (256,)
        np.testing.assert_array_equal(ours.view(np.uint32), theirs.view(np.uint32))


def test_dynamic_maps_published_values():
    signed, unsigned = q8.create_dynamic_map(True), q8.create_dynamic_map(False)
    # bitsandbytes' maps (functional.create_dynamic_map, 7 exponent bits): 0 and 1 are in both,
    # -1 is not; the signed map's smallest magnitude is 0.55e-6, the unsigned one's 0.325e-6
    assert signed[-1] == 1.0 and unsigned[-1] == 1.0 and unsigned[0] == 0.0 and 0.0 in signed
    assert np.all(np.diff(signed) > 0) and np.all(np.diff(unsigned) > 0)
    assert np.isclose(signed[0], -0.99296875) and np.isclose(unsigned[1], 3.25e-07)
    assert np.isclose(np.min(signed[signed > 0]), 5.5e-07)
    assert np.sum(signed < 0) == 127 and np.sum(unsigned > 0) == 255


@pytest.mark.parametrize("signed", [True, False])
def test_search_tables_give_the_nearest_code(signed):
    """The kernels' thresholds and key table against the brute-force nearest search: every
    map entry, every midpoint and the floats beside it, and random values."""
    qmap = q8.create_dynamic_map(signed)
    table = q8.quant_table(qmap)
    middles = ((qmap[:-1].astype(np.float64) + qmap[1:]) / 2).astype(np.float32)
    probes = [qmap, middles, np.nextafter(middles, np.float32(-2)), np.nextafter(middles, np.float32(2)),
              np.random.default_rng(0).uniform(-1 if signed else 0, 1, 20000).astype(np.float32),
              np.array([0.0, -0.0, 1e-30, -1e-30, 1.0, -1.0], np.float32)]
    values = np.concatenate(probes).astype(np.float32)
    expected = _nearest_codes(values, qmap)
    np.testing.assert_array_equal(q8.quantize_blockwise(values, np.float32(1) * qmap, values.size)[0],
                                  _nearest_codes(values / np.max(np.abs(values)), qmap))
    # the code is the count of thresholds at or below the value (the kernels' search) ...
    np.testing.assert_array_equal(np.searchsorted(table.threshold, values, side="right"), expected)
    # ... which the standard maps' buckets give in one lookup, in the kernel
    assert table.bucket is not None and table.bucket.size == 2 * table.per_sign
    np.testing.assert_array_equal(_kernel_codes(values, qmap), expected)


def test_neighbours_far_apart_get_the_exact_nearest_code():
    """A midpoint a double cannot hold (neighbours 2^100 apart): 0.5 is nearer to 1.0 than to
    -2^-100 by 2^-100, so its code is 1.0's."""
    qmap = np.concatenate([np.linspace(-1, -0.5, 254), [-2.0 ** -100, 1.0]]).astype(np.float32)
    values = np.array([0.5, np.nextafter(np.float32(0.5), np.float32(0)), 0.0, -2.0 ** -101, -0.75],
                      np.float32)
    expected = _nearest_codes(values, qmap)
    assert expected.tolist()[:2] == [255, 254]
    assert q8.quant_table(qmap).threshold[254] == np.float32(0.5)
    np.testing.assert_array_equal(q8.quantize_blockwise(values, qmap, values.size)[0],
                                  _nearest_codes(values / np.float32(0.75), qmap))
    np.testing.assert_array_equal(_kernel_codes(values, qmap), expected)


def _crowded_map():
    """A map the buckets cannot serve: two thresholds within one bucket near 0.57, and one
    just above 0 (a linear map of 256 entries has none at 0)."""
    qmap = np.linspace(-1, 1, 256, dtype=np.float32)
    qmap[201:203] = qmap[200] + np.float32(1e-4) * np.arange(1, 3, dtype=np.float32)
    return qmap


def _crowded_standard_map():
    """The standard signed map with two thresholds in one bucket (and none near 0)."""
    qmap = q8.create_dynamic_map(True).copy()
    qmap[201:203] = qmap[200] + np.float32(1e-4) * np.arange(1, 3, dtype=np.float32)
    return qmap


@pytest.mark.parametrize("crowded", [_crowded_map, _crowded_standard_map])
def test_a_map_the_buckets_cannot_serve_is_searched(crowded, simd_level, split_everything):
    """The kernels' binary search of the thresholds, where the buckets do not apply, against
    the reference at 1 and 2 threads, and the exact nearest codes."""
    qmap = crowded()
    assert q8.quant_table(qmap).bucket is None
    values = np.concatenate([qmap, q8.quant_table(qmap).threshold[:-1],
                             np.nextafter(q8.quant_table(qmap).threshold[:-1], np.float32(-2)),
                             np.random.default_rng(3).uniform(-1, 1, 5000)]).astype(np.float32)
    np.testing.assert_array_equal(_kernel_codes(values, qmap), _nearest_codes(values, qmap))
    rng = np.random.default_rng(7)
    for threads in (1, 2):
        param = rng.standard_normal(4099).astype(np.float32)
        opt = fastoptim.Adam8bit([param], lr=1e-2, min_8bit_size=0)
        with fastoptim.num_threads(threads):
            opt.step([rng.standard_normal(param.shape).astype(np.float32)])
            saved = opt.state_dict()
            saved["state"][0]["qmap1"] = qmap.copy()
            opt.load_state_dict(saved)
            start = {k: np.array(v, copy=True) for k, v in opt.state[0].items() if k != "step"}
            expected = param.copy()
            for t, g in enumerate(_grads(rng, param.shape, 3), start=2):
                opt.step([g])
                _reference_step("Adam8bit", dict(lr=1e-2), expected, g, start, t, 256)
            np.testing.assert_array_equal(param, expected)
            for key in ("state1", "absmax1", "state2", "absmax2"):
                np.testing.assert_array_equal(opt.state[0][key], start[key], err_msg=f"{key} threads={threads}")


def test_quantize_roundtrip_error_is_small():
    rng = np.random.default_rng(1)
    values = rng.standard_normal(4096).astype(np.float32)
    qmap = q8.create_dynamic_map(True)
    codes, absmax = q8.quantize_blockwise(values, qmap)
    back = q8.dequantize_blockwise(codes, absmax, qmap)
    assert absmax.shape == (16,)
    assert np.max(np.abs(back - values) / np.repeat(absmax, 256)) < 0.02


# ---- the kernels against the reference ---------------------------------------------------

@pytest.mark.parametrize("name,options", CASES)
def test_8bit_step_matches_reference(name, options, simd_level, split_everything):
    rng = np.random.default_rng(abs(hash((name, str(options)))) % 2**32)
    for size in SIZES:
        for threads in (1, 2):
            p0 = rng.standard_normal(size).astype(np.float32)
            param, expected_param = p0.copy(), p0.copy()
            opt = getattr(fastoptim, name)([param], min_8bit_size=0, **options)
            with fastoptim.num_threads(threads):
                grads = _grads(rng, (size,), 4)
                opt.step([grads[0]])
                state = {k: np.array(v, copy=True) for k, v in opt.state[0].items()}
                # the reference from the state as it began: bitsandbytes' zeros (or the fill)
                start = {}
                rule, merged = _base_options(name, options)
                for j, (_, slot_name, signed) in enumerate(q8.quantized_slots(rule, rule.slots(merged)), start=1):
                    fill = float(rule.start_value(rule.slot(slot_name), merged))
                    start[f"state{j}"], start[f"absmax{j}"], start[f"qmap{j}"] = q8.new_state(p0, fill, 256, signed)
                for slot_name in rule.slots(merged)[2:]:
                    if slot_name is not None:
                        start[slot_name] = np.zeros_like(p0)
                where = f"{name} {options} size={size} threads={threads} level={simd_level}"
                _reference_step(name, options, expected_param, grads[0], start, 1, 256)
                np.testing.assert_array_equal(param, expected_param, err_msg=where)
                for key in start:
                    np.testing.assert_array_equal(state[key], start[key], err_msg=f"{where} {key}")
                for t, g in enumerate(grads[1:], start=2):
                    opt.step([g])
                    _reference_step(name, options, expected_param, g, start, t, 256)
                np.testing.assert_array_equal(param, expected_param, err_msg=where)
                for key in start:
                    np.testing.assert_array_equal(opt.state[0][key], start[key], err_msg=f"{where} {key}")


def test_every_code_of_both_maps_dequantizes_as_the_reference(simd_level):
    """Each of the 256 codes of both maps, in many lane positions and with a tail: the AVX-512
    level looks codes up by two-table permutes and blends on their bits 5, 6 and 7."""
    rng = np.random.default_rng(11)
    size = 4 * 256 + 13
    param = rng.standard_normal(size).astype(np.float32)
    opt = fastoptim.Adam8bit([param], lr=1e-2, min_8bit_size=0)
    opt.step([rng.standard_normal(size).astype(np.float32)])
    state = opt.state[0]
    for j in (1, 2):
        state[f"state{j}"][...] = rng.permutation(np.resize(np.arange(256, dtype=np.uint8), size))
        state[f"absmax{j}"][...] = rng.uniform(0.5, 2.0, state[f"absmax{j}"].shape)
    expected = {key: np.array(value, copy=True) for key, value in state.items()}
    expected_param = param.copy()
    grad = rng.standard_normal(size).astype(np.float32)
    opt.step([grad])
    _reference_step("Adam8bit", dict(lr=1e-2), expected_param, grad, expected, 2, 256)
    np.testing.assert_array_equal(param, expected_param)
    for key in ("state1", "absmax1", "state2", "absmax2"):
        np.testing.assert_array_equal(state[key], expected[key], err_msg=key)


def test_threads_and_levels_give_the_same_bits():
    rng = np.random.default_rng(3)
    p0 = rng.standard_normal((100, 1000)).astype(np.float32)
    grads = _grads(rng, p0.shape, 5)
    results = []
    for level in runtime.supported_simd_levels():
        old = runtime.set_simd_level(level)
        try:
            for threads in (1, 2, 3):
                param = p0.copy()
                opt = fastoptim.Adam8bit([param], lr=1e-2)
                with fastoptim.num_threads(threads):
                    for g in grads:
                        opt.step([g])
                results.append((param, opt.state[0]["state1"], opt.state[0]["absmax2"]))
        finally:
            runtime.set_simd_level(old)
    for other in results[1:]:
        for a, b in zip(results[0], other):
            np.testing.assert_array_equal(a, b)


def test_block_size_option():
    rng = np.random.default_rng(4)
    param = rng.standard_normal(5000).astype(np.float32)
    expected = param.copy()
    opt = fastoptim.Adam8bit([param], lr=1e-2, block_size=64, min_8bit_size=0)
    g = rng.standard_normal(5000).astype(np.float32)
    opt.step([g])
    assert opt.state[0]["absmax1"].shape == (-(-5000 // 64),)
    start = {}
    for j, signed in ((1, True), (2, False)):
        start[f"state{j}"], start[f"absmax{j}"], start[f"qmap{j}"] = q8.new_state(expected, 0.0, 64, signed)
    _reference_step("Adam8bit", dict(lr=1e-2), expected, g, start, 1, 64)
    np.testing.assert_array_equal(param, expected)
    np.testing.assert_array_equal(opt.state[0]["state2"], start["state2"])


@pytest.mark.parametrize("name,options", [("Adam8bit", dict(lr=1e-2)), ("Lion8bit", dict(lr=1e-3))])
def test_block_sizes_tails_skips_and_zero_blocks_match_reference(name, options, simd_level):
    """The vector code's edges at every level and thread count: blocks of fewer elements than a
    vector iteration (8 dequantized, 32 requantized at a time) or not a multiple of it (the
    last, partial block), blocks skipped for a NaN or inf grad, and blocks of zeros (absmax 0)."""
    rng = np.random.default_rng(9)
    for block in (1, 4, 8, 16, 32, 64, 128, 4096):
        for size in (block * 3 + 7, block * 5 + 33):
            for threads in (1, 2):
                where = f"{name} block={block} size={size} threads={threads} level={simd_level}"
                p0 = rng.standard_normal(size).astype(np.float32)
                param, expected = p0.copy(), p0.copy()
                opt = getattr(fastoptim, name)([param], block_size=block, min_8bit_size=0, **options)
                rule, merged = _base_options(name, options)
                start = {}
                for j, (_, slot_name, signed) in enumerate(q8.quantized_slots(rule, rule.slots(merged)), start=1):
                    start[f"state{j}"], start[f"absmax{j}"], start[f"qmap{j}"] = q8.new_state(p0, 0.0, block, signed)
                skipped = 0
                with fastoptim.num_threads(threads):
                    for t, g in enumerate(_grads(rng, (size,), 3), start=1):
                        g[:min(block, size)] = 0.0  # the first block's state stays zero
                        if t == 2:
                            g[size // 2] = np.nan
                            g[-1] = np.inf
                        opt.step([g])
                        skipped += _reference_step(name, options, expected, g, start, t, block)
                np.testing.assert_array_equal(param, expected, err_msg=where)
                for key in start:
                    np.testing.assert_array_equal(opt.state[0][key], start[key], err_msg=f"{where} {key}")
                assert opt.skipped == skipped > 0, where


# ---- state: names, sizes, small params --------------------------------------------------

def test_state_keys_bytes_and_small_params():
    big, small = np.ones(10240, np.float32), np.ones(100, np.float32)
    opt = fastoptim.Adam8bit([big, small], lr=1e-3)
    opt.step([np.full(10240, 0.1, np.float32), np.full(100, 0.1, np.float32)])
    assert sorted(opt.state[0]) == sorted(["step", "state1", "absmax1", "qmap1", "state2", "absmax2", "qmap2"])
    assert opt.state[0]["state1"].dtype == np.uint8 and opt.state[0]["absmax1"].shape == (40,)
    assert sorted(opt.state[1]) == ["exp_avg", "exp_avg_sq", "step"]  # below min_8bit_size: float32 state
    per_element = sum(opt.state[0][k].nbytes for k in ("state1", "absmax1", "state2", "absmax2")) / 10240
    assert per_element == pytest.approx(2 + 8 / 256)


def test_one_state_classes_keep_state1_only():
    for name, options in (("SGD8bit", dict(lr=0.1, momentum=0.9)), ("Lion8bit", dict(lr=1e-4)),
                          ("Adagrad8bit", dict(lr=0.1)), ("RMSprop8bit", dict(lr=0.01))):
        param = np.ones(5000, np.float32)
        opt = getattr(fastoptim, name)([param], **options)
        opt.step([np.full(5000, 0.5, np.float32)])
        assert {k for k in opt.state[0] if k != "step"} == {"state1", "absmax1", "qmap1"}, name
        np.testing.assert_array_equal(opt.state[0]["qmap1"], q8.create_dynamic_map(True))


def test_rmsprop_momentum_keeps_a_signed_second_state():
    opt = fastoptim.RMSprop8bit([np.ones(5000, np.float32)], lr=0.01, momentum=0.9)
    opt.step([np.full(5000, 0.5, np.float32)])
    np.testing.assert_array_equal(opt.state[0]["qmap2"], q8.create_dynamic_map(True))
    opt = fastoptim.Adam8bit([np.ones(5000, np.float32)], lr=0.01, amsgrad=True)
    opt.step([np.full(5000, 0.5, np.float32)])
    np.testing.assert_array_equal(opt.state[0]["qmap2"], q8.create_dynamic_map(False))
    assert opt.state[0]["max_exp_avg_sq"].dtype == np.float32  # a third state stays float32


# ---- non-finite grads --------------------------------------------------------------------

@pytest.mark.parametrize("name,options", CASES)
def test_nonfinite_grad_leaves_its_block_untouched_and_is_counted(name, options):
    rng = np.random.default_rng(5)
    param = rng.standard_normal(1024).astype(np.float32)
    opt = getattr(fastoptim, name)([param], min_8bit_size=0, **options)
    opt.step([rng.standard_normal(1024).astype(np.float32)])
    before = {k: np.array(v, copy=True) for k, v in opt.state[0].items()}
    p_before = param.copy()
    g = rng.standard_normal(1024).astype(np.float32)
    g[300] = np.nan
    g[1000] = -np.inf
    opt.step([g])
    assert opt.skipped == 2
    for lo, hi in ((256, 512), (768, 1024)):
        np.testing.assert_array_equal(param[lo:hi], p_before[lo:hi])
        for j in [j for j in (1, 2) if f"state{j}" in before]:
            np.testing.assert_array_equal(opt.state[0][f"state{j}"][lo:hi], before[f"state{j}"][lo:hi])
            np.testing.assert_array_equal(opt.state[0][f"absmax{j}"][lo // 256], before[f"absmax{j}"][lo // 256])
    assert not np.array_equal(param[:256], p_before[:256]) and not np.array_equal(param[512:768], p_before[512:768])
    assert np.all(np.isfinite(param))


# ---- errors ------------------------------------------------------------------------------

def test_bad_input_is_refused_before_anything_is_written():
    with pytest.raises(ValueError, match="centered=True"):
        fastoptim.RMSprop8bit([np.ones(5000, np.float32)], centered=True)
    with pytest.raises(TypeError, match="float32 params.*float64"):
        fastoptim.Adam8bit([np.ones(5000)], lr=1e-3)
    fastoptim.Adam8bit([np.ones(10)], lr=1e-3)  # small float64 params keep Adam's state
    with pytest.raises(ValueError, match="block_size"):
        fastoptim.Adam8bit([np.ones(5000, np.float32)], block_size=0)
    with pytest.raises(ValueError, match="block_size"):
        fastoptim.Adam8bit([np.ones(5000, np.float32)], block_size=100000)
    with pytest.raises(ValueError, match="min_8bit_size"):
        fastoptim.Adam8bit([np.ones(5000, np.float32)], min_8bit_size=-1)
    param = np.ones(5000, np.float32)
    opt = fastoptim.Adam8bit([param], lr=1e-3)
    opt.step([np.ones(5000, np.float32)])
    saved = opt.state_dict()
    bad = copy.deepcopy(saved)
    bad["state"][0]["qmap1"] = bad["state"][0]["qmap1"][::-1].copy()
    with pytest.raises(ValueError, match="qmap1.*increasing"):
        opt.load_state_dict(bad)
    for key, value in (("absmax2", np.zeros(3, np.float32)), ("state1", np.zeros(10, np.uint8))):
        bad = copy.deepcopy(saved)
        bad["state"][0][key] = value
        p_before = param.copy()
        state_before = {k: np.array(v, copy=True) for k, v in opt.state[0].items()}
        with pytest.raises(ValueError, match=f"{key}.*(float32 of shape \\(20,\\)|shaped like the param)"):
            opt.load_state_dict(bad)
        np.testing.assert_array_equal(param, p_before)
        assert sorted(opt.state[0]) == sorted(state_before)
        for k, v in state_before.items():
            np.testing.assert_array_equal(opt.state[0][k], v)
        opt.step([np.ones(5000, np.float32)])  # and it steps on


def test_block_sizes_are_powers_of_two_so_a_checkpoint_says_its_own():
    for bad in (3, 100, 257, 8192):
        with pytest.raises(ValueError, match="power of two"):
            fastoptim.Adam8bit([np.ones(5000, np.float32)], block_size=bad)
    opt = fastoptim.Adam8bit([np.ones(4096, np.float32)], block_size=256)
    opt.step([np.ones(4096, np.float32)])
    opt.param_groups[0]["block_size"] = 512  # the state has 16 absmax values: blocks of 256
    with pytest.raises(ValueError, match="absmax1.*one per block of 512"):
        opt.step([np.ones(4096, np.float32)])


def test_a_state_overflow_leaves_its_block_untouched_and_is_counted():
    """A grad so large its square overflows float32: the block's exp_avg_sq would be inf, and its
    absmax with it (every value then 0 * inf = NaN at the next step); the block is skipped."""
    rng = np.random.default_rng(11)
    param = rng.standard_normal(512).astype(np.float32)
    opt = fastoptim.Adam8bit([param], lr=1e-2, min_8bit_size=0, amsgrad=True)
    opt.step([rng.standard_normal(512).astype(np.float32)])
    before = param.copy()
    state_before = {k: np.array(v, copy=True) for k, v in opt.state[0].items()}
    g = rng.standard_normal(512).astype(np.float32)
    g[5] = 1e30
    opt.step([g])
    assert opt.skipped == 1
    np.testing.assert_array_equal(param[:256], before[:256])
    np.testing.assert_array_equal(opt.state[0]["max_exp_avg_sq"][:256], state_before["max_exp_avg_sq"][:256])
    assert not np.array_equal(param[256:], before[256:])
    for _ in range(2):
        opt.step([rng.standard_normal(512).astype(np.float32)])
    assert np.all(np.isfinite(param)) and np.all(np.isfinite(opt.state[0]["absmax2"]))


# ---- checkpoints, pickling --------------------------------------------------------------------

@pytest.mark.parametrize("name,options", CASES)
def test_state_dict_round_trip_pickle_and_deepcopy_continue_bit_identically(name, options):
    rng = np.random.default_rng(6)
    param = rng.standard_normal(6000).astype(np.float32)
    opt = getattr(fastoptim, name)([param], **options)
    grads = _grads(rng, (6000,), 6)
    for g in grads[:3]:
        opt.step([g])
    copies = []
    for make in (lambda: pickle.loads(pickle.dumps((opt, param))), lambda: copy.deepcopy((opt, param))):
        copies.append(make())
    loaded_param = param.copy()
    loaded = getattr(fastoptim, name)([loaded_param], **options)
    loaded.load_state_dict(pickle.loads(pickle.dumps(opt.state_dict())))
    copies.append((loaded, loaded_param))
    for g in grads[3:]:
        opt.step([g])
        for other, _ in copies:
            other.step([g])
    for other, other_param in copies:
        np.testing.assert_array_equal(other_param, param)
        for k, v in opt.state[0].items():
            np.testing.assert_array_equal(other.state[0][k], v)


# ---- fastoptim.torch ----------------------------------------------------------------------

torch = pytest.importorskip("torch")
import fastoptim.torch as ftorch  # noqa: E402


@pytest.mark.parametrize("name,options", CASES)
def test_torch_face_matches_numpy_face(name, options):
    rng = np.random.default_rng(7)
    p0 = rng.standard_normal((70, 90)).astype(np.float32)
    param = p0.copy()
    opt = getattr(fastoptim, name)([param], **options)
    tparam = torch.nn.Parameter(torch.from_numpy(p0.copy()))
    topt = getattr(ftorch, name)([tparam], **options)
    for g in _grads(rng, p0.shape, 4):
        opt.step([g])
        tparam.grad = torch.from_numpy(g.copy())
        topt.step()
    np.testing.assert_array_equal(tparam.detach().numpy(), param)
    for k, v in opt.state[0].items():
        theirs = topt.state[tparam][k]
        np.testing.assert_array_equal(theirs.numpy() if hasattr(theirs, "numpy") else theirs, v)


def test_torch_and_numpy_checkpoints_load_both_ways():
    rng = np.random.default_rng(8)
    p0 = rng.standard_normal(5000).astype(np.float32)
    param = p0.copy()
    opt = fastoptim.Adam8bit([param], lr=1e-2)
    grads = _grads(rng, p0.shape, 4)
    for g in grads[:2]:
        opt.step([g])
    tparam = torch.nn.Parameter(torch.from_numpy(param.copy()))
    topt = ftorch.Adam8bit([tparam], lr=1e-2)
    topt.load_state_dict(opt.state_dict())
    assert topt.state[tparam]["state1"].dtype == torch.uint8
    back_param = param.copy()
    back = fastoptim.Adam8bit([back_param], lr=1e-2)
    back.load_state_dict(topt.state_dict())
    for g in grads[2:]:
        opt.step([g])
        back.step([g])
        tparam.grad = torch.from_numpy(g.copy())
        topt.step()
    np.testing.assert_array_equal(tparam.detach().numpy(), param)
    np.testing.assert_array_equal(back_param, param)


def test_torch_16bit_and_noncontiguous_params_are_refused_clearly():
    with pytest.raises(TypeError, match="float32 params"):
        ftorch.Adam8bit([torch.nn.Parameter(torch.ones(5000, dtype=torch.bfloat16))])
    weight = torch.nn.Parameter(torch.ones(64, 16, 3, 3).to(memory_format=torch.channels_last))
    with pytest.raises(ValueError, match="not C-contiguous"):
        ftorch.Adam8bit([weight])
    with pytest.raises(ValueError, match="not C-contiguous"):
        fastoptim.Adam8bit([np.ones((100, 100), np.float32).T])
    ftorch.Adam8bit([weight], min_8bit_size=10**6)  # a small param keeps Adam's state in any layout


# ---- bitsandbytes, the peer ---------------------------------------------------------------------

def _bnb():
    bnb = pytest.importorskip("bitsandbytes")
    return bnb


def test_one_step_agrees_with_bitsandbytes_adam8bit():
    bnb = _bnb()
    rng = np.random.default_rng(9)
    p0 = rng.standard_normal((64, 128)).astype(np.float32)
    g = rng.standard_normal(p0.shape).astype(np.float32)
    ours = torch.nn.Parameter(torch.from_numpy(p0.copy()))
    theirs = torch.nn.Parameter(torch.from_numpy(p0.copy()))
    opt = ftorch.Adam8bit([ours], lr=1e-3, min_8bit_size=0)
    peer = bnb.optim.Adam8bit([theirs], lr=1e-3, min_8bit_size=0)
    for p, o in ((ours, opt), (theirs, peer)):
        p.grad = torch.from_numpy(g.copy())
        o.step()
    np.testing.assert_allclose(ours.detach().numpy(), theirs.detach().numpy(), rtol=0, atol=1e-6)
    for j in (1, 2):
        # bitsandbytes' CPU quantizer is not exactly nearest: a few codes are one map step away
        ours_state = [opt.state[ours][f"{k}{j}"].numpy() for k in ("state", "absmax", "qmap")]
        peer_state = [peer.state[theirs][f"{k}{j}"].numpy() for k in ("state", "absmax", "qmap")]
        np.testing.assert_array_equal(ours_state[1], peer_state[1])
        np.testing.assert_array_equal(ours_state[2], peer_state[2])
        assert np.mean(ours_state[0] == peer_state[0]) > 0.95
        a, b = q8.dequantize_blockwise(*ours_state), q8.dequantize_blockwise(*peer_state)
        assert np.max(np.abs(a - b) / np.repeat(ours_state[1], 256).reshape(a.shape)) < 0.015


def test_checkpoints_move_to_bitsandbytes_and_back():
    bnb = _bnb()
    rng = np.random.default_rng(10)
    p0 = rng.standard_normal((64, 128)).astype(np.float32)
    grads = _grads(rng, p0.shape, 4)
    ours = torch.nn.Parameter(torch.from_numpy(p0.copy()))
    opt = ftorch.Adam8bit([ours], lr=1e-3)
    for g in grads[:2]:
        ours.grad = torch.from_numpy(g.copy())
        opt.step()
    theirs = torch.nn.Parameter(ours.detach().clone())
    peer = bnb.optim.Adam8bit([theirs], lr=1e-3)
    peer.load_state_dict(opt.state_dict())
    for key in ("state1", "state2", "absmax1", "absmax2", "qmap1", "qmap2"):
        assert torch.equal(peer.state[theirs][key], opt.state[ours][key])
    # and back: bitsandbytes' state_dict loads into ours, which continues from it
    back = torch.nn.Parameter(theirs.detach().clone())
    resumed = ftorch.Adam8bit([back], lr=1e-3)
    resumed.load_state_dict(peer.state_dict())
    for g in grads[2:]:
        for p, o in ((ours, opt), (back, resumed)):
            p.grad = torch.from_numpy(g.copy())
            o.step()
    assert torch.equal(back, ours)


# ---- accuracy ------------------------------------------------------------------------------------

def test_adam8bit_trains_an_mlp_on_digits_as_well_as_adam():
    pytest.importorskip("sklearn")
    from fastoptim.demos.distributed import MLP, _data
    data = _data(0)
    model = MLP(data.n_features, 64, data.n_classes)
    accuracy = {}
    for name in ("Adam", "Adam8bit"):
        params = {k: v.astype(np.float32) for k, v in model.init_params(0).items()}
        options = dict(lr=3e-3) if name == "Adam" else dict(lr=3e-3, min_8bit_size=0)
        opt = getattr(fastoptim, name)(params, **options)
        rng = np.random.default_rng(0)
        X = data.X_train.astype(np.float32)
        for _ in range(30):
            order = rng.permutation(len(X))
            for start in range(0, len(order), 32):
                batch = order[start:start + 32]
                _, grads = model.loss_and_grad(params, X[batch], data.y_train[batch])
                opt.step({k: g.astype(np.float32) for k, g in grads.items()})
        if name == "Adam8bit":
            assert opt.state["W1"]["state1"].dtype == np.uint8 and opt.state["b2"]["state2"].dtype == np.uint8
        accuracy[name] = model.accuracy(params, data.X_test.astype(np.float32), data.y_test)
    assert accuracy["Adam"] > 0.9
    assert accuracy["Adam8bit"] >= accuracy["Adam"] - 0.01, accuracy


def test_a_bitsandbytes_checkpoint_with_small_params_loads_and_steps():
    """bitsandbytes' own state_dict (fresh groups without our options; a bias below
    min_8bit_size with float32 state1/state2) loads into ours and keeps training alike."""
    bnb = _bnb()
    rng = np.random.default_rng(12)
    w0, b0 = rng.standard_normal((64, 128)).astype(np.float32), rng.standard_normal(10).astype(np.float32)
    theirs = [torch.nn.Parameter(torch.from_numpy(a.copy())) for a in (w0, b0)]
    peer = bnb.optim.Adam8bit(theirs, lr=1e-3)
    grads = [[rng.standard_normal(a.shape).astype(np.float32) for a in (w0, b0)] for _ in range(3)]
    for p, g in zip(theirs, grads[0]):
        p.grad = torch.from_numpy(g.copy())
    peer.step()
    ours = [torch.nn.Parameter(p.detach().clone()) for p in theirs]
    opt = ftorch.Adam8bit(ours, lr=1e-3)
    opt.load_state_dict(peer.state_dict())
    assert sorted(opt.state[ours[1]]) == ["exp_avg", "exp_avg_sq", "step"]
    assert opt.param_groups[0]["block_size"] == 256 and opt.param_groups[0]["min_8bit_size"] == 4096
    for step_grads in grads[1:]:
        for params, o in ((ours, opt), (theirs, peer)):
            for p, g in zip(params, step_grads):
                p.grad = torch.from_numpy(g.copy())
            o.step()
    for a, b in zip(ours, theirs):  # bitsandbytes' quantizer puts a few codes one map entry away: a
        np.testing.assert_allclose(a.detach().numpy(), b.detach().numpy(), rtol=0, atol=1e-4)  # % of lr
