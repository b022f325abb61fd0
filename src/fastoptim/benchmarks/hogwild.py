"""python -m fastoptim bench hogwild: Hogwild! SGD against scikit-learn's SGDClassifier.

The problem (make_problem) is a sparse synthetic classification task:
  * X: n_samples x n_features CSR, `nnz` nonzeros per row at feature indices drawn
    uniformly (with replacement), values standard normal / sqrt(nnz), so rows
    have unit norm on average;
  * a sparse ground truth w*: `support` (10%) of the features carry standard
    normal weights, the rest zero;
  * labels y = sign(x . w*), then a fraction `label_noise` of them flipped.
Train and test rows are drawn the same way (test: n_samples // 10 rows).

Every contender fits the same training set with the same loss, alpha and number
of epochs (tol=None, so exactly `epochs` epochs, shuffled, same random_state):
SGDClassifier, then HogwildSGDClassifier with each thread count.  Fits are
interleaved in rounds, each round taking the contenders in another order, so
that over a cycle of rounds each contender follows each other equally often
(balanced_orders): a fit runs measurably slower right after SGDClassifier's, so
a fixed order would favour whoever follows someone else.  The table shows the
median time per fit of `repeats` rounds, the speedups as ratios of medians, test
accuracy, and the median CPU
time over wall time of the fits: about 2 for two threads that really ran on two
cores, lower when other processes took a core (the ratios then understate).

Before and after each fit the benchmark also times a cache line bouncing between two threads
(hogwild._kernel.round_trips; the 10th percentile of 500 batches, so preemption
hardly counts): the threads of Hogwild! share the weights' cache lines, so how far
apart the two cores are sets how well two threads scale.  On a VM that is the
host's choice and can change from one second to the next (on the 2-vCPU VM of the
figures in docs/performance.md: about 90 ns between near cores, 400-500 ns between
far ones, where two threads ran the epoch loop only about 1.1x faster than one).
The report splits the two-thread fits by it (the larger of the two probes).
"""
import os
import platform
import statistics
import sys
import time

import numpy as np

from .._ext import runtime


def add_arguments(parser):
    group = parser.add_argument_group("Hogwild! options")
    group.add_argument("--n-samples", type=int, default=500_000, help="training rows (default 500000)")
    group.add_argument("--n-features", type=int, default=100_000, help="columns (default 100000)")
    group.add_argument("--nnz", type=int, default=50, help="nonzeros per row (default 50)")
    group.add_argument("--label-noise", type=float, default=0.05, help="fraction of flipped labels")
    group.add_argument("--loss", default="hinge", help="loss of both classifiers (default hinge)")
    group.add_argument("--alpha", type=float, default=1e-6, help="L2 strength (default 1e-6)")
    group.add_argument("--epochs", type=int, default=5, help="epochs per fit (default 5)")
    group.add_argument("--repeats", type=int, default=6,
                       help="fits per contender, medians reported (default 6: a whole cycle of orders for "
                            "three contenders, see balanced_orders)")
    group.add_argument("--hogwild-threads", default="1,2", help="thread counts of Hogwild! (default 1,2)")
    group.add_argument("--hogwild-dtype", default="float64", choices=("float32", "float64"),
                       help="dtype of X (SGDClassifier always computes in float64)")
    parser.add_argument("--json", metavar="PATH", help="write the results as JSON")


def balanced_orders(n):
    """Orders of n contenders in which each one directly follows each other equally often.

    Williams' balanced Latin square: rows 0, 1, n-1, 2, n-2, ... shifted by each r,
    and for odd n their reverses too (2n orders; n orders for even n).
    """
    first = [0]
    for k in range(1, n):
        first.append((k + 1) // 2 if k % 2 else n - k // 2)
    orders = [[(item + shift) % n for item in first] for shift in range(n)]
    return orders + [order[::-1] for order in orders] if n % 2 else orders


def make_problem(n_samples, n_features, nnz, label_noise, dtype=np.float64, seed=0):
    """(X_train, y_train, X_test, y_test) as described in the module docstring."""
    import scipy.sparse as sp
    rng = np.random.default_rng(seed)
    n_test = max(n_samples // 10, 1)
    truth = np.zeros(n_features)
    support = rng.choice(n_features, size=max(n_features // 10, 1), replace=False)
    truth[support] = rng.standard_normal(len(support))

    def draw(n):
        indices = rng.integers(0, n_features, size=(n, nnz), dtype=np.int32)
        indices.sort(axis=1)
        data = (rng.standard_normal((n, nnz)) / np.sqrt(nnz)).astype(dtype)
        indptr = np.arange(0, n * nnz + 1, nnz, dtype=np.int32 if n * nnz < 2**31 else np.int64)
        X = sp.csr_matrix((data.ravel(), indices.ravel(), indptr), shape=(n, n_features))
        y = np.where(X @ truth > 0, 1, -1)
        flip = rng.random(n) < label_noise
        y[flip] = -y[flip]
        return X, y

    X_train, y_train = draw(n_samples)
    X_test, y_test = draw(n_test)
    return X_train, y_train, X_test, y_test


def run(args, out=sys.stdout):
    from sklearn.linear_model import SGDClassifier

    from ..hogwild import HogwildSGDClassifier

    threads = [int(t) for t in args.hogwild_threads.split(",")]
    dtype = np.dtype(args.hogwild_dtype).type
    start = time.perf_counter()
    X, y, X_test, y_test = make_problem(args.n_samples, args.n_features, args.nnz, args.label_noise, dtype)
    print(f"Hogwild! benchmark: X {X.shape[0]} x {X.shape[1]} CSR {np.dtype(dtype).name}, {args.nnz} "
          f"nonzeros/row, label noise {args.label_noise:.0%}, test {X_test.shape[0]} rows "
          f"(generated in {time.perf_counter() - start:.1f} s)", file=out)
    print(f"loss={args.loss}, alpha={args.alpha:g}, {args.epochs} epochs, tol=None, random_state=0; "
          f"{runtime.usable_cores()} usable cores, Python {platform.python_version()}; "
          f"median of {args.repeats} interleaved fits", file=out)
    common = dict(loss=args.loss, alpha=args.alpha, max_iter=args.epochs, tol=None, random_state=0)
    contenders = {"SGDClassifier": lambda: SGDClassifier(**common)}
    for n in threads:
        contenders[f"Hogwild! {n} thread{'s' if n > 1 else ''}"] = (lambda n=n: HogwildSGDClassifier(
            **common, n_threads=n))
    times = {name: [] for name in contenders}
    cpu_use = {name: [] for name in contenders}
    round_trip = {name: [] for name in contenders}
    accuracy = {}
    orders = [[list(contenders)[k] for k in order] for order in balanced_orders(len(contenders))]
    for round_ in range(args.repeats):
        for name in orders[round_ % len(orders)]:
            model = contenders[name]()
            before = core_to_core_ns()
            cpu_start, start = os.times(), time.perf_counter()
            model.fit(X, y)
            elapsed, cpu_end = time.perf_counter() - start, os.times()
            after = core_to_core_ns()
            round_trip[name].append(None if before is None else max(before, after))
            times[name].append(elapsed)
            cpu_use[name].append((cpu_end.user + cpu_end.system - cpu_start.user - cpu_start.system) / elapsed)
            accuracy[name] = model.score(X_test, y_test)
    median = {name: statistics.median(t) for name, t in times.items()}
    base = median["SGDClassifier"]
    one = next((name for name in contenders if name.startswith("Hogwild! 1 ")), None)
    print(f"\n{'':20}{'time/fit':>10}{'min':>9}{'max':>9}{'vs SGDClassifier':>18}"
          f"{'vs 1 thread':>13}{'test acc.':>11}{'CPU/wall':>10}", file=out)
    rows = []
    for name in contenders:
        speedup = base / median[name]
        vs_one = median[one] / median[name] if one and name.startswith("Hogwild!") else None
        rows.append({"contender": name, "seconds": median[name], "all_seconds": times[name],
                     "speedup_sgdclassifier": speedup, "speedup_one_thread": vs_one,
                     "test_accuracy": accuracy[name], "cpu_per_wall": statistics.median(cpu_use[name])})
        print(f"{name:20}{median[name]:>9.3f}s{min(times[name]):>8.3f}s{max(times[name]):>8.3f}s"
              f"{speedup:>17.2f}x{'-' if vs_one is None else f'{vs_one:.2f}x':>13}"
              f"{accuracy[name]:>11.4f}{statistics.median(cpu_use[name]):>10.2f}", file=out)
    gap = max(abs(accuracy[name] - accuracy["SGDClassifier"]) for name in contenders)
    print(f"\nlargest test-accuracy gap to SGDClassifier: {100 * gap:.2f} points", file=out)
    placement = report_placement(times, round_trip, one, out)
    return {"problem": {k: getattr(args, k) for k in ("n_samples", "n_features", "nnz", "label_noise",
                                                       "loss", "alpha", "epochs", "repeats")},
            "rows": rows, "round_trip_ns": round_trip, "placement": placement}


def core_to_core_ns():
    """10th percentile of the round trips of a cache line between two threads (ns), None without two threads."""
    from ..hogwild import _kernel
    batches = _kernel.round_trips()
    return None if batches is None else float(np.percentile(batches, 10))


def report_placement(times, round_trip, one, out):
    """Print the round trips around the fits and, for each multi-thread contender, its fits with
    their round trips; when the round trips spread over more than 2x, also its median over the
    fits on near cores (within twice the run's best round trip) and over the others."""
    seen = [ns for values in round_trip.values() for ns in values if ns is not None]
    if not seen:
        return None
    near_limit = 2 * min(seen)
    split_fits = max(seen) >= near_limit
    print(f"core-to-core round trip around each fit: {min(seen):.0f}-{max(seen):.0f} ns"
          + (f" (near cores: below {near_limit:.0f} ns, twice the best)" if split_fits else
             " (no fit ran on cores nearer than the others)"), file=out)
    placement = {}
    for name, values in times.items():
        if not name.startswith("Hogwild!") or name == one:
            continue
        pairs = sorted(zip(round_trip[name], values), key=lambda pair: pair[0] or 0.0)
        print(f"{name}, fits (s @ round trip ns): "
              + ", ".join(f"{t:.2f} @ {ns:.0f}" if ns is not None else f"{t:.2f}" for ns, t in pairs), file=out)
        if not split_fits:
            continue
        split = {"near": [t for ns, t in pairs if ns is not None and ns < near_limit],
                 "far": [t for ns, t in pairs if ns is None or ns >= near_limit]}
        placement[name] = split
        parts = []
        for where, fits in split.items():
            if fits:
                med = statistics.median(fits)
                vs_one = f", {statistics.median(times[one]) / med:.2f}x vs 1 thread" if one else ""
                parts.append(f"{where} cores {len(fits)} fits, median {med:.3f} s{vs_one}")
        print(f"{name}: " + "; ".join(parts), file=out)
    return placement


def main(args):
    results = run(args)
    if getattr(args, "json", None):
        import json
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0
