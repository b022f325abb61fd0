"""python -m fastoptim distributed --simulate: asynchronous SGD with 1 to 256 workers,
simulated in this process (fastoptim.distributed.simulate), with and without
DC-ASGD's delay compensation: the qualitative result of Zheng et al. (2017).

The model and data are the distributed demo's (an MLP on scikit-learn's digits).
Every run makes the same server steps over the same minibatches (`--epochs`
passes of batches of `--batch-size`); only the staleness of the gradients
differs: n simulated workers with random (log-normal) gradient times each fetch
the params, compute a gradient and push it, so a gradient is on average n - 1
server steps old (fastoptim.distributed.random_delays).  The server steps SGD
(lr --lr) on

  ASGD        the stale gradient as it is;
  DC-ASGD-c   the gradient compensated with a constant lambda (--lambda-constant);
  DC-ASGD-a   the adaptive form, lambda0 / sqrt(mean square) (--lambda-adaptive).

Each point is the mean over --seeds delay sequences (the band their range).
The table and distributed_delays.png give the final train loss and test
accuracy against the number of workers.
"""
import os
import sys
import time

import numpy as np

METHODS = (("ASGD", None), ("DC-ASGD-c", "constant"), ("DC-ASGD-a", "adaptive"))


def add_arguments(parser):
    group = parser.add_argument_group("--simulate options (one process, no MPI launch)")
    group.add_argument("--simulate", action="store_true",
                       help="simulate asynchronous SGD with many workers instead of launching ranks")
    group.add_argument("--workers", default="1,4,16,64,256", help="simulated worker counts (default 1,4,16,64,256)")
    group.add_argument("--lr", type=float, default=0.2, help="the server's SGD lr (default 0.2)")
    group.add_argument("--lambda-constant", type=float, default=2.0, help="DC-ASGD-c's lambda (default 2)")
    group.add_argument("--lambda-adaptive", type=float, default=2.0, help="DC-ASGD-a's lambda0 (default 2)")
    group.add_argument("--seeds", type=int, default=3, help="delay sequences per point (default 3)")


def parse_workers(text):
    try:
        workers = [int(w) for w in text.split(",") if w.strip()]
    except ValueError:
        raise SystemExit(f"--workers must be comma-separated integers, got {text!r}") from None
    if not workers or min(workers) < 1:
        raise SystemExit(f"--workers must list counts >= 1, got {text!r}")
    return workers


def main(args, model, data, out=sys.stdout):
    """The sweep, its table and its plot; model and data are the distributed demo's
    (an MLP with loss_and_grad(params, X, y), loss and accuracy; digits, split)."""
    workers = parse_workers(args.workers)
    results = sweep(model, data, workers, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                    lambdas={"constant": args.lambda_constant, "adaptive": args.lambda_adaptive},
                    seeds=args.seeds, seed=args.seed, out=out)
    print_table(results, workers, out)
    if not args.no_plot:
        os.makedirs(args.out, exist_ok=True)
        png = os.path.join(args.out, "distributed_delays.png")
        plot(results, workers, png, args)
        print(f"wrote {png}", file=out)
    return 0


def sweep(model, data, workers, *, epochs, batch_size, lr, lambdas, seeds, seed, out=sys.stdout):
    """{method: {workers: [(train loss, test accuracy, mean staleness) per seed]}}."""
    import fastoptim
    import fastoptim.distributed as fd
    from .. import train
    X, y = data.X_train, data.y_train
    batches = [b for epoch in range(epochs)
               for b in train.minibatches(len(X), batch_size, seed=seed, epoch=epoch, drop_last=True)]
    steps = len(batches)
    print(f"simulating {steps} server steps (SGD, lr {lr:g}) of an MLP on digits for "
          f"{', '.join(map(str, workers))} workers x {seeds} delay sequences", file=out)
    results = {name: {} for name, _ in METHODS}
    start = time.perf_counter()
    for n in workers:
        for s in range(seeds):
            delays = fd.random_delays(n, steps, seed=1000 * n + s)
            for name, kind in METHODS:
                params = model.init_params(seed)
                order = iter(batches)

                def grad_fn(snapshot):
                    batch = next(order)
                    return model.loss_and_grad(snapshot, X[batch], y[batch])[1]
                stats = fd.simulate(grad_fn, params, lambda p: fastoptim.SGD(p, lr=lr), delays=delays,
                                    compensation=kind, compensation_lambda=lambdas.get(kind, 0.0))
                results[name].setdefault(n, []).append(
                    (model.loss(params, X, y), model.accuracy(params, data.X_test, data.y_test),
                     stats["staleness_mean"]))
    print(f"({time.perf_counter() - start:.1f} s)", file=out)
    return results


def print_table(results, workers, out=sys.stdout):
    header = f"{'workers':>8}{'staleness':>11}" + "".join(f"{name + ' loss':>17}{'acc':>7}" for name, _ in METHODS)
    print("\nfinal train loss and test accuracy (means over the delay sequences)", file=out)
    print(header + "\n" + "-" * len(header), file=out)
    for n in workers:
        runs = results[METHODS[0][0]][n]
        line = f"{n:>8}{np.mean([r[2] for r in runs]):>11.1f}"
        for name, _ in METHODS:
            runs = results[name][n]
            line += f"{np.mean([r[0] for r in runs]):>17.4f}{np.mean([r[1] for r in runs]):>7.3f}"
        print(line, file=out)


def plot(results, workers, path, args):
    from . import pyplot
    plt = pyplot()
    fig, (by_loss, by_accuracy) = plt.subplots(1, 2, figsize=(12, 4.6))
    for name, _ in METHODS:
        for ax, column in ((by_loss, 0), (by_accuracy, 1)):
            values = np.array([[r[column] for r in results[name][n]] for n in workers])
            line, = ax.plot(workers, values.mean(axis=1), marker="o", lw=1.6, label=name)
            ax.fill_between(workers, values.min(axis=1), values.max(axis=1), color=line.get_color(), alpha=0.15)
    by_loss.set_yscale("log")
    by_loss.set_ylabel("final train loss")
    by_accuracy.set_ylabel("test accuracy")
    for ax in (by_loss, by_accuracy):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("simulated workers (mean staleness = workers - 1)")
        ax.grid(alpha=0.3)
    by_loss.legend()
    fig.suptitle(f"Asynchronous SGD on digits (MLP, lr {args.lr:g}, {args.epochs} epochs of batches of "
                 f"{args.batch_size}): stale gradients with and without delay compensation")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
