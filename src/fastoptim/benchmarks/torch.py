"""python -m fastoptim bench torch: fastoptim.torch against torch.optim, one step.

Two models' parameters (float32, grads set, state already created):
  large: an MLP 2048-2048-2048-1024 (3 weights + 3 biases, ~10.5M parameters);
  many:  500 Linear(16, 16) layers (1000 tensors of 256 or 16 elements).
Every contender (fastoptim.torch, torch.optim fused, foreach and for-loop where
torch has them on the CPU) steps its own copy, in interleaved rounds; the table
reports median times and speedups from the same run.
"""
import json
import platform
import sys

import numpy as np

from .._config import get_num_threads, get_simd_level, num_threads
from .._ext import runtime
from .._registry import BY_NAME
from .optim import TORCH_VARIANTS
from .timing import add_selection_arguments, format_time, measure, parse_threads, selected_optimizers

MODELS = {
    "large": "MLP 2048-2048-2048-1024 (6 tensors)",
    "many": "500 x Linear(16, 16) (1000 tensors)",
}


def make_model(torch, name):
    torch.manual_seed(0)
    if name == "large":
        return torch.nn.Sequential(torch.nn.Linear(2048, 2048), torch.nn.ReLU(), torch.nn.Linear(2048, 2048),
                                   torch.nn.ReLU(), torch.nn.Linear(2048, 1024))
    return torch.nn.ModuleList([torch.nn.Linear(16, 16) for _ in range(500)])


def model_with_grads(torch, name):
    model = make_model(torch, name)
    generator = torch.Generator().manual_seed(1)
    for p in model.parameters():
        p.grad = torch.randn(p.shape, generator=generator)
    return model


def contenders(torch, spec, model_name, variants):
    """name -> zero-argument step over its own copy of the model's params, state created."""
    import fastoptim.torch as ft
    options = spec.bench_options()
    steps = {}
    candidates = [("fastoptim.torch", getattr(ft, spec.torch_name), {})]
    theirs = spec.torch_optim(torch)
    candidates += [(f"torch {v}", theirs, TORCH_VARIANTS[v]) for v in variants if theirs is not None]
    for label, cls, extra in candidates:
        params = list(model_with_grads(torch, model_name).parameters())
        try:
            opt = cls(params, **options, **extra)
            opt.step()
        except (RuntimeError, TypeError, ValueError):  # torch has no such variant for this optimizer
            continue
        steps[label] = opt.step
    return steps


def run(optimizers, threads_list, variants, rounds, min_seconds, out=sys.stdout):
    import torch
    results = {"machine": {"python": platform.python_version(), "numpy": np.__version__,
                           "torch": torch.__version__, "simd_level": get_simd_level(),
                           "cores": runtime.usable_cores()},
               "dtype": "float32", "runs": []}
    torch_threads = torch.get_num_threads()
    try:
        for threads in threads_list:
            torch.set_num_threads(threads)
            with num_threads(threads):
                _run_threads(torch, optimizers, threads, variants, rounds, min_seconds, results, out)
    finally:
        torch.set_num_threads(torch_threads)
    return results


def _run_threads(torch, optimizers, threads, variants, rounds, min_seconds, results, out):
    """One table per model: every optimizer, every contender, at `threads` threads."""
    print(f"\nfloat32, {threads} thread(s) (torch and fastoptim), SIMD {get_simd_level()}; "
          f"one step, median of {rounds} interleaved rounds", file=out)
    for model_name, description in MODELS.items():
        n = sum(p.numel() for p in make_model(torch, model_name).parameters())
        print(f"\n{model_name}: {description}, {n / 1e6:.2f}M parameters", file=out)
        header = f"{'':10}{'fastoptim.torch':>16}" + "".join(f"{'torch ' + v:>16}" for v in variants)
        print(header + "".join(f"{'vs ' + v:>12}" for v in variants), file=out)
        for name in optimizers:
            spec = BY_NAME[name]
            times = measure(contenders(torch, spec, model_name, variants), rounds, min_seconds)
            ours = times["fastoptim.torch"]
            speedups = {v: times[f"torch {v}"] / ours for v in variants if f"torch {v}" in times}
            results["runs"].append({"optimizer": name, "model": model_name, "parameters": n,
                                    "threads": threads, "times": times, "speedups": speedups})
            cells = [format_time(times[f"torch {v}"]) if f"torch {v}" in times else "-" for v in variants]
            ratios = [f"{speedups[v]:.2f}x" if v in speedups else "-" for v in variants]
            print(f"{name:10}{format_time(ours):>16}" + "".join(f"{c:>16}" for c in cells)
                  + "".join(f"{r:>12}" for r in ratios), file=out)


def add_arguments(parser):
    parser.add_argument("--quick", action="store_true", help="fused and foreach only, fewer rounds")
    add_selection_arguments(parser)
    parser.add_argument("--json", metavar="PATH", help="write the results as JSON")


def main(args):
    try:
        import torch  # noqa: F401
    except ImportError:
        raise SystemExit("bench torch needs PyTorch: pip install 'fastoptim[torch]'") from None
    optimizers = selected_optimizers(args.optimizers)
    threads = parse_threads(args.threads) if args.threads else (get_num_threads(),)
    variants = ["fused", "foreach"] if args.quick else list(TORCH_VARIANTS)
    rounds, min_seconds = (5, 0.05) if args.quick else (9, 0.2)
    results = run(optimizers, threads, variants, rounds, min_seconds)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0
