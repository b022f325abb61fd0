"""python -m fastoptim bench python: the rules at the Python level against torch.optim, side by side.

Every face of fastoptim._registry.PYTHON_SPECS, on a problem its kind needs:
  a per-tensor rule (Muon): one step over a square float32 matrix (--size, default 1024),
    grad set and state created;
  a closure-driven rule (LBFGS): one step(closure) from the same start, every call, on a
    logistic regression (--samples x --features float64, labels from a known model), with a
    fixed step and with the strong-Wolfe line search.
Contenders: fastoptim.<Class> (NumPy arrays; the closure in NumPy), fastoptim.torch.<Class> and
torch.optim.<Class> (the same torch closure).  Median times of interleaved rounds and ratios
from the same run; the closure alone is timed too, since it is most of LBFGS's step.
"""
import contextlib
import json
import sys

import numpy as np

from .._config import get_num_threads, num_threads
from .._registry import PYTHON_SPECS
from .timing import format_time, measure, parse_threads


def _matrix_contenders(torch, spec, size):
    import fastoptim
    import fastoptim.torch as ft
    rng = np.random.default_rng(0)
    start, grad = rng.standard_normal((size, size), np.float32), rng.standard_normal((size, size), np.float32)
    steps = {}
    param = start.copy()
    ours = getattr(fastoptim, spec.variant.name)([param])
    steps[f"fastoptim.{spec.variant.name}"] = lambda: ours.step([grad])
    for label, cls in ((f"fastoptim.torch.{spec.torch_name}", getattr(ft, spec.torch_name)),
                       (f"torch.optim.{spec.torch_name}", getattr(torch.optim, spec.torch_name))):
        tensor = torch.tensor(start, requires_grad=True)
        tensor.grad = torch.from_numpy(grad.copy())
        steps[label] = cls([tensor]).step
    for step in steps.values():
        step()  # state created
    return steps


def logistic_regression(samples, features, seed=0):
    """(X, y, NumPy objective(w) -> (loss, grad)) of a mean logistic loss with labels in {0, 1}."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((samples, features))
    y = (x @ rng.standard_normal(features) + 0.5 * rng.standard_normal(samples) > 0).astype(np.float64)

    def objective(w):
        z = x @ w
        loss = float(np.mean(np.logaddexp(0.0, z) - y * z))
        return loss, x.T @ (0.5 * (1.0 + np.tanh(0.5 * z)) - y) / samples
    return x, y, objective


def _closure_contenders(torch, spec, samples, features, options):
    import fastoptim
    import fastoptim.torch as ft
    x, y, objective = logistic_regression(samples, features)
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)
    start = np.zeros(features)

    def torch_closure(w):
        def closure():  # the same loss and grad as the NumPy objective, in torch ops
            z = tx @ w.detach()
            w.grad = tx.T @ (torch.sigmoid(z) - ty) / samples
            return torch.mean(torch.nn.functional.softplus(z) - ty * z)
        return closure

    def ours():
        w = start.copy()
        opt = getattr(fastoptim, spec.variant.name)([w], **options)
        opt.step(lambda: (lambda loss, g: (loss, [g]))(*objective(w)))
        return opt.state[0]["func_evals"]

    def with_torch(cls):
        def step():
            w = torch.tensor(start, requires_grad=True)
            opt = cls([w], **options)
            opt.step(torch_closure(w))
            return opt.state[w]["func_evals"]
        return step

    w = torch.tensor(start, requires_grad=True)
    steps = {f"fastoptim.{spec.variant.name}": ours,
             f"fastoptim.torch.{spec.torch_name}": with_torch(getattr(ft, spec.torch_name)),
             f"torch.optim.{spec.torch_name}": with_torch(getattr(torch.optim, spec.torch_name)),
             "NumPy closure alone": lambda: objective(start),
             "torch closure alone": torch_closure(w)}
    evaluations = {label: steps[label]() for label in list(steps)[:3]}
    return steps, evaluations


def _report(title, times, out, reference_label):
    print(f"\n{title}", file=out)
    base = times[reference_label]
    for label, seconds in times.items():
        ratio = f"{base / seconds:.2f}x" if "alone" not in label else ""
        print(f"  {label:34}{format_time(seconds):>12}{ratio:>10}", file=out)


def _blas_threads(threads):
    """NumPy's BLAS limited to `threads` (threadpoolctl, when installed): Muon's products run there, and
    OpenBLAS threads left spinning on a busy machine cost more than they compute."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(threads, user_api="blas")


def run(size, samples, features, threads_list, rounds, min_seconds, out=sys.stdout):
    import torch
    results = []
    torch_threads = torch.get_num_threads()
    try:
        for threads in threads_list:
            torch.set_num_threads(threads)
            with num_threads(threads), _blas_threads(threads):
                print(f"\n{threads} thread(s) (torch, fastoptim and NumPy's BLAS); ratios: torch.optim's time / the row's "
                      f"(> 1: faster than torch); median of {rounds} interleaved rounds", file=out)
                for spec in PYTHON_SPECS:
                    if spec.rule.closure:
                        for options in ({}, {"line_search_fn": "strong_wolfe"}):
                            steps, evaluations = _closure_contenders(torch, spec, samples, features, options)
                            times = measure(steps, rounds, min_seconds)
                            title = (f"{spec.torch_name} {options or 'fixed step'}, one step(closure) from the start: "
                                     f"logistic regression {samples} x {features} float64; closure evaluations "
                                     f"{evaluations}")
                            _report(title, times, out, f"torch.optim.{spec.torch_name}")
                            results.append({"rule": spec.name, "options": options, "threads": threads,
                                            "times": times, "evaluations": evaluations})
                    else:
                        times = measure(_matrix_contenders(torch, spec, size), rounds, min_seconds)
                        _report(f"{spec.torch_name}: one step, {size} x {size} float32", times, out,
                                f"torch.optim.{spec.torch_name}")
                        results.append({"rule": spec.name, "size": size, "threads": threads, "times": times})
    finally:
        torch.set_num_threads(torch_threads)
    return results


def add_arguments(parser):
    parser.add_argument("--size", type=int, default=1024, help="rows and columns of a per-tensor rule's matrix")
    parser.add_argument("--samples", type=int, default=20000, help="logistic regression samples (LBFGS)")
    parser.add_argument("--features", type=int, default=200, help="logistic regression features (LBFGS)")
    parser.add_argument("--threads", default=None, help="comma-separated thread counts (default: current)")
    parser.add_argument("--quick", action="store_true", help="fewer rounds")
    parser.add_argument("--json", metavar="PATH", help="write the results as JSON")


def main(args):
    try:
        import torch  # noqa: F401
    except ImportError:
        raise SystemExit("bench python needs PyTorch: pip install 'fastoptim[torch]'") from None
    threads = parse_threads(args.threads) if args.threads else (get_num_threads(),)
    rounds, min_seconds = (3, 0.05) if args.quick else (7, 0.3)
    results = run(args.size, args.samples, args.features, threads, rounds, min_seconds)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0
