"""python -m fastoptim bench optim: fastoptim against NumPy and torch.optim, side by side.

Every contender steps the same problem (one param of n elements, or of a
shape such as 4096x4096 where a rule keeps factored state, a constant grad,
state already created) in interleaved rounds; the table reports medians.
Speedups are ratios of medians from the same run.  Effective bandwidth is the
step's memory traffic (param, grad and state read; param and state written)
over its time, beside the machine's in-place streaming bandwidth measured in
the same run (a = s * a + b over 512 MiB, all threads), and their ratio: the
share of the bandwidth-bound time the step reaches.
"""
import functools
import json
import platform
import statistics
import sys

import numpy as np

from .._config import get_simd_level, num_threads
from .._ext import runtime
from .._registry import BY_NAME
from .timing import (RATIO_SPREAD_LIMIT, add_selection_arguments, disagreeing, format_ratio, format_time,
                     machine_bandwidth, measure_rounds, parse_sizes, parse_threads, ratio_spread,
                     selected_optimizers, size_label)

QUICK_SIZES = (2**10, 2**16, 2**20, 2**24)
FULL_SIZES = tuple(2**k for k in range(10, 27, 2))


def add_arguments(parser):
    parser.add_argument("--quick", action="store_true", help="a short run (about a minute)")
    add_selection_arguments(parser)
    parser.add_argument("--sizes", default=None,
                        help="comma-separated element counts, e.g. 1024,2**20, or shapes, e.g. 4096x4096 "
                             "(default: 2^10..2^26)")
    parser.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    parser.add_argument("--json", metavar="PATH", help="write the results as JSON")
    parser.add_argument("--plot", metavar="PATH", help="write a PNG of the speedups (needs matplotlib)")
    parser.add_argument("--no-torch", action="store_true", help="leave torch out even if installed")
    parser.add_argument("--no-many", action="store_true",
                        help="skip the many-small-tensors table (1000 x 256 and 200 x 4096 elements)")


# ---- contenders ----------------------------------------------------------------

@functools.lru_cache(maxsize=4)
def _problem(size, dtype):
    """A param and a grad of `size` (an element count or a shape), drawn once per size
    (drawing 2^24 normals takes a while)."""
    shape = shape_of(size)
    rng = np.random.default_rng(elements(size))
    param, grad = rng.standard_normal(shape).astype(dtype), rng.standard_normal(shape).astype(dtype)
    param.flags.writeable = grad.flags.writeable = False
    return param, grad


def elements(size):
    """The element count of `size` (a count or a shape)."""
    return size if isinstance(size, int) else int(np.prod(size))


def shape_of(size):
    """The param shape of `size` (a count or a shape)."""
    return size if isinstance(size, tuple) else (size,)


def fastoptim_step(spec, options, n, dtype):
    param0, grad = _problem(n, dtype)
    param, grads = param0.copy(), [grad]
    opt = spec.cls([param], **options)
    opt.step(grads)
    return lambda: opt.step(grads)


def functional_step(spec, options, n, dtype, update):
    param0, grad = _problem(n, dtype)
    param = param0.copy()
    positional, keyword = spec.new_state(param, options)
    kwargs = dict(spec.functional_kwargs(options), **keyword)
    update(param, grad, *positional, step=1, **kwargs)
    return lambda: update(param, grad, *positional, step=2, **kwargs)


TORCH_VARIANTS = {"for-loop": dict(foreach=False), "foreach": dict(foreach=True), "fused": dict(fused=True)}


def torch_step(torch, variant, spec, options, n, dtype):
    """A step of torch.optim's `variant` implementation, or None where torch has none on the CPU."""
    param, grad = _problem(n, dtype)
    return torch_multi_step(torch, variant, spec, options, [param], [grad])


def torch_multi_step(torch, variant, spec, options, params, grads):
    """A step of torch.optim's `variant` over copies of params (NumPy arrays) with grads set,
    state already created; None where torch has no such optimizer or implementation on the CPU."""
    theirs = spec.torch_optim(torch)
    if theirs is None:
        return None
    tparams = [torch.tensor(p, requires_grad=True) for p in params]
    for t, g in zip(tparams, grads):
        t.grad = torch.tensor(g)
    try:
        opt = theirs(tparams, **options, **TORCH_VARIANTS[variant])
        opt.step()
    except (RuntimeError, TypeError, ValueError):
        return None
    return opt.step


def make_contenders(spec, n, dtype, torch=None):
    """name -> zero-argument step of one n-element param, state already created."""
    options = spec.bench_options()
    contenders = {
        "fastoptim": fastoptim_step(spec, options, n, dtype),
        "fastoptim.functional": functional_step(spec, options, n, dtype, spec.functional),
        "numpy": functional_step(spec, options, n, dtype, spec.reference),
    }
    contenders.update(torch_contenders(torch, lambda variant: torch_step(torch, variant, spec, options, n, dtype)))
    return contenders


def torch_contenders(torch, build):
    """"torch <variant>" -> build(variant) for each variant that builds (none without torch)."""
    if torch is None:
        return {}
    steps = {f"torch {variant}": build(variant) for variant in TORCH_VARIANTS}
    return {name: step for name, step in steps.items() if step is not None}


def torch_rounds(samples):
    """Per round, the fastest torch variant's time (None without torch)."""
    torch_samples = [s for name, s in samples.items() if name.startswith("torch")]
    return [min(r) for r in zip(*torch_samples)] if torch_samples else None


def speedup(samples, baseline):
    """(median, lowest, highest) per-round speedup of fastoptim over `baseline`'s samples, or None."""
    return None if baseline is None else ratio_spread(baseline, samples["fastoptim"])


def run(optimizers, sizes, threads_list, dtype, use_torch=True, rounds=5, min_seconds=0.02, many=True,
        out=sys.stdout):
    torch = None
    if use_torch:
        try:
            import torch
        except ImportError:
            print("torch is not installed: comparing with NumPy only (pip install torch==2.13.0)", file=out)
    results = {"machine": {"python": platform.python_version(), "numpy": np.__version__,
                           "simd_level": get_simd_level(), "cores": runtime.usable_cores(),
                           "torch": getattr(torch, "__version__", None)},
               "dtype": np.dtype(dtype).name, "runs": []}
    itemsize = np.dtype(dtype).itemsize
    for threads in threads_list:
        if torch is not None:
            torch.set_num_threads(threads)
        with num_threads(threads):
            bandwidth = machine_bandwidth(threads)
            print(f"\n{np.dtype(dtype).name}, {threads} thread(s), SIMD {get_simd_level()}: "
                  f"machine bandwidth {bandwidth / 1e9:.1f} GB/s (a = s*a + b in place)", file=out)
            rows = {}
            for name in optimizers:
                spec = BY_NAME[name]
                for n in sizes:
                    contenders = make_contenders(spec, n, dtype, torch)
                    samples = measure_rounds(contenders, rounds, min_seconds)
                    times = {k: statistics.median(v) for k, v in samples.items()}
                    numpy_spread = speedup(samples, samples["numpy"])
                    torch_spread = speedup(samples, torch_rounds(samples))
                    record = {
                        "optimizer": name, "size": elements(n), "shape": list(shape_of(n)),
                        "threads": threads, "times": times,
                        "speedup_numpy": numpy_spread[0], "speedup_numpy_spread": numpy_spread,
                        "speedup_torch": torch_spread[0] if torch_spread else None,
                        "speedup_torch_spread": torch_spread,
                        "torch_best": min((k for k in times if k.startswith("torch")), key=times.get,
                                          default=None),
                        "gb_per_s": spec.bytes_per_element(itemsize, len(shape_of(n)))
                        * elements(n) / times["fastoptim"] / 1e9,
                        "machine_gb_per_s": bandwidth / 1e9,
                    }
                    results["runs"].append(record)
                    rows[(name, n)] = record
            _print_table(rows, optimizers, sizes, bandwidth, rounds, out)
            if many:
                results["many"] = results.get("many", []) + run_many(
                    optimizers, dtype, threads, torch, rounds, min_seconds, out)
    _print_scaling(results["runs"], optimizers, sizes, out)
    return results


MANY_TENSORS = ((1000, 256), (200, 4096))


def many_tensor_contenders(spec, count, n, dtype, rng, torch=None):
    """One step over `count` params of `n` elements each: fastoptim and torch's variants."""
    options = spec.bench_options()
    params = [rng.standard_normal(n).astype(dtype) for _ in range(count)]
    grads = [rng.standard_normal(n).astype(dtype) for _ in range(count)]
    opt = spec.cls(params, **options)
    opt.step(grads)
    contenders = {"fastoptim": lambda: opt.step(grads)}
    contenders.update(torch_contenders(
        torch, lambda variant: torch_multi_step(torch, variant, spec, options, params, grads)))
    return contenders


def run_many(optimizers, dtype, threads, torch, rounds, min_seconds, out):
    """Per-tensor overhead: many small params in one step."""
    rng = np.random.default_rng(1)
    records = []
    print(f"\nmany small tensors, {np.dtype(dtype).name}, {threads} thread(s): "
          f"time per step, and speedup over torch's fused / fastest", file=out)
    table = []
    for name in optimizers:
        cells = []
        for count, n in MANY_TENSORS:
            samples = measure_rounds(many_tensor_contenders(BY_NAME[name], count, n, dtype, rng, torch),
                                     rounds, min_seconds)
            times = {k: statistics.median(v) for k, v in samples.items()}
            fused = speedup(samples, samples.get("torch fused"))
            fastest = speedup(samples, torch_rounds(samples))
            records.append({"optimizer": name, "tensors": count, "size": n, "threads": threads,
                            "times": times,
                            "speedup_torch_fused": fused[0] if fused else None, "speedup_torch_fused_spread": fused,
                            "speedup_torch": fastest[0] if fastest else None, "speedup_torch_spread": fastest})
            cell = format_time(times["fastoptim"])
            cell += f"  {format_ratio(fused)}" if fused else "     -"
            cell += f" / {format_ratio(fastest)}" if fastest else ""
            cells.append(cell)
        table.append((name, cells))
    # The table once every cell is known: a flagged ratio's range (in brackets) widens its
    # cell, and the columns widen with it instead of running into the next one.
    width = max([34] + [len(c) + 2 for _, cells in table for c in cells])
    print(f"{'':10}" + "".join(f"{f'{c} x {n}':>{width}}" for c, n in MANY_TENSORS), file=out)
    for name, cells in table:
        print(f"{name:10}" + "".join(f"{c:>{width}}" for c in cells), file=out)
    _print_spread_note([s for r in records for s in (r["speedup_torch_fused_spread"], r["speedup_torch_spread"])],
                       rounds, out)
    return records


def _print_spread_note(spreads, rounds, out):
    """Say what a '!' means, if any ratio above got one."""
    if any(s is not None and disagreeing(s) for s in spreads):
        print(f"! = the {rounds} rounds' ratios (range in brackets) disagree by more than "
              f"{RATIO_SPREAD_LIMIT:g}x: the machine was busy (or a contender oversubscribed it); "
              f"do not trust that figure, re-run when the load is low", file=out)


def _print_scaling(runs, optimizers, sizes, out):
    """Speedup of each thread count over one thread, where both were measured."""
    by_key = {(r["optimizer"], tuple(r["shape"]), r["threads"]): r["times"]["fastoptim"] for r in runs}
    counts = sorted({r["threads"] for r in runs})
    if 1 not in counts or len(counts) < 2:
        return
    header = "".join(f"{size_label(n):>12}" for n in sizes)
    for threads in counts[1:]:
        print(f"\nspeedup of {threads} threads over 1\n{'':10}{header}", file=out)
        for name in optimizers:
            print(f"{name:10}" + "".join(
                f"{by_key[(name, shape_of(n), 1)] / by_key[(name, shape_of(n), threads)]:>11.2f}x" for n in sizes),
                file=out)


def _print_table(rows, optimizers, sizes, bandwidth, rounds, out):
    blocks = [
        ("time per step (fastoptim optimizer)", lambda r: format_time(r["times"]["fastoptim"])),
        ("time per step (fastoptim.functional)", lambda r: format_time(r["times"]["fastoptim.functional"])),
        ("speedup over NumPy (median of per-round ratios)", lambda r: format_ratio(r["speedup_numpy_spread"])),
        ("speedup over torch's fastest", lambda r: "-" if r["speedup_torch"] is None
         else format_ratio(r["speedup_torch_spread"])),
        (f"effective GB/s (machine: {bandwidth / 1e9:.1f}) and its share of the machine's",
         lambda r: f"{r['gb_per_s']:.1f} {r['gb_per_s'] / r['machine_gb_per_s']:4.0%}"),
    ]
    for title, cell in blocks:
        cells = {(name, n): cell(rows[(name, n)]) for name in optimizers for n in sizes}
        width = max([12] + [len(c) + 2 for c in cells.values()])  # a flagged ratio's range widens it
        print(f"\n{title}\n{'':10}" + "".join(f"{size_label(n):>{width}}" for n in sizes), file=out)
        for name in optimizers:
            print(f"{name:10}" + "".join(f"{cells[(name, n)]:>{width}}" for n in sizes), file=out)
    _print_spread_note([s for r in rows.values() for s in (r["speedup_numpy_spread"], r["speedup_torch_spread"])],
                       rounds, out)


def plot(results, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SystemExit("--plot needs matplotlib: pip install 'fastoptim[plot]'") from None
    threads = max(r["threads"] for r in results["runs"])
    runs = [r for r in results["runs"] if r["threads"] == threads]
    names = list(dict.fromkeys(r["optimizer"] for r in runs))
    has_torch = any(r["speedup_torch"] for r in runs)
    fig, axes = plt.subplots(1, 3 if has_torch else 2, figsize=(15 if has_torch else 10, 4.5))
    panels = [("speedup_numpy", "speedup over NumPy (x)"), ("gb_per_s", "effective bandwidth (GB/s)")]
    if has_torch:
        panels.insert(1, ("speedup_torch", "speedup over torch's fastest (x)"))
    for ax, (key, label) in zip(axes, panels):
        for name in names:
            pts = [(r["size"], r[key]) for r in runs if r["optimizer"] == name and r[key]]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=name)
        if key == "gb_per_s":
            ax.axhline(runs[0]["machine_gb_per_s"], color="k", ls="--", lw=1, label="machine")
        else:  # ratios span 1x to 100x
            ax.set_yscale("log")
            ax.axhline(1.0, color="k", ls=":", lw=1)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("elements per param")
        ax.set_title(label)
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.suptitle(f"fastoptim, {results['dtype']}, {threads} thread(s), SIMD {results['machine']['simd_level']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(args):
    optimizers = selected_optimizers(args.optimizers)
    sizes = parse_sizes(args.sizes) if args.sizes else (QUICK_SIZES if args.quick else FULL_SIZES)
    threads = parse_threads(args.threads)
    # Odd counts, so a median is one round's value; enough rounds that one descheduled
    # round cannot move it, and a spread that shows when the rounds disagree.
    rounds, min_seconds = (9, 0.005) if args.quick else (11, 0.02)
    dtype = np.dtype(args.dtype).type
    results = run(optimizers, sizes, threads, dtype, use_torch=not args.no_torch, rounds=rounds,
                  min_seconds=min_seconds, many=not args.no_many)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    if args.plot:
        plot(results, args.plot)
        print(f"\nwrote {args.plot}")
    return 0
