"""python -m fastoptim distributed: an MLP on scikit-learn's digits, trained on MPI ranks.

The parent process launches `--ranks` ranks with mpiexec (which run this module
with --worker) and trains the single-process baselines itself.  Every
algorithm trains the same MLP (64 -> hidden tanh -> 10, softmax cross-entropy)
from the same start, for the same epochs; a step takes a global batch of
ranks x batch-size samples (the same shuffled order on every rank), and rank r
computes the grads of its own slice of it:

  dp      DataParallel(Adam): the ranks' mean grad, one Adam step everywhere;
  zero    ZeroRedundancyOptimizer(Adam): the same result, state sharded;
  easgd   ElasticAveraging(SGD): each rank steps on its slice alone, with an
          elastic exchange with the center every `period` steps;
  eamsgd  ElasticAveraging(SGD with Nesterov momentum).

The asynchronous ones (rank 0 serves, the N - 1 others are workers; a step of
worker k takes its slice of a global batch of (N - 1) x batch-size samples, so
an epoch is one pass over the data, shared by the workers):

  downpour     ParameterServer with Adagrad (Downpour SGD's choice): every step
               pushes the grads and fetches the params;
  dcasgd       ParameterServer with SGD and DC-ASGD-a's delay compensation;
  easgd-async  AsyncElasticAveraging (SGD, exchanging every `period` steps).

Their curves follow worker 0's params (fetched from the server, or its local
ones for easgd-async) at its epochs; their table rows give the final params
(the server's, or the center), the mean and largest staleness seen, and the
bytes sent per worker step (grads and params, or the exchanges).

With --simulate nothing is launched: demos/delays.py simulates 1 to 256
asynchronous workers in this process and plots the final loss against them.

The baselines train one process on the whole global batch, with Adam (what
dp and zero compute) and with Nesterov SGD.  The table gives the final train
loss and test accuracy of the model each algorithm produces (the params; the
center for elastic averaging), the training wall time (evaluation excluded),
and the bytes each rank sends per step: 2 (N - 1) / N times the params' bytes
for a bandwidth-optimal reduction (reduce-scatter + all-gather), divided by the
period for elastic averaging.  The PNG plots train loss against wall time and
against epochs.
"""
import json
import os
import sys
import tempfile
import time

import numpy as np

ALGORITHMS = ("dp", "zero", "easgd", "eamsgd")
ASYNC_ALGORITHMS = ("downpour", "dcasgd", "easgd-async")
LABELS = {"dp": "DataParallel (Adam)", "zero": "ZeRO-1 (Adam)", "easgd": "EASGD (SGD)",
          "eamsgd": "EAMSGD (SGD, Nesterov)", "single-adam": "1 process (Adam)",
          "single-nesterov": "1 process (SGD, Nesterov)", "downpour": "Downpour (Adagrad)",
          "dcasgd": "DC-ASGD-a (SGD)", "easgd-async": "async EASGD (SGD)"}


def add_arguments(parser):
    parser.add_argument("--ranks", type=int, default=4, help="MPI ranks (default 4)")
    parser.add_argument("--algorithms", default=",".join(ALGORITHMS),
                        help=f"comma-separated, from {','.join(ALGORITHMS + ASYNC_ALGORITHMS)} "
                             f"(default: {','.join(ALGORITHMS)})")
    parser.add_argument("--epochs", type=int, default=30, help="epochs (default 30)")
    parser.add_argument("--batch-size", type=int, default=16, help="samples per rank per step (default 16)")
    parser.add_argument("--hidden", type=int, default=64, help="hidden units (default 64)")
    parser.add_argument("--period", type=int, default=4, help="elastic averaging: steps between exchanges")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=".", help="directory for distributed_digits.png (default .)")
    parser.add_argument("--no-plot", action="store_true", help="skip the PNG")
    from . import delays
    delays.add_arguments(parser)


def main(args):
    from .. import _mpiexec
    if args.simulate:
        from . import delays
        data = _data(args.seed)
        return delays.main(args, MLP(data.n_features, args.hidden, data.n_classes), data)
    algorithms = [a.strip() for a in args.algorithms.split(",") if a.strip()]
    unknown = [a for a in algorithms if a not in ALGORITHMS + ASYNC_ALGORITHMS]
    if unknown:
        raise SystemExit(f"unknown algorithms {unknown}; choose from {list(ALGORITHMS + ASYNC_ALGORITHMS)}")
    if args.ranks < 2 and set(algorithms) & set(ASYNC_ALGORITHMS):
        raise SystemExit("the asynchronous algorithms need --ranks >= 2 (a server and a worker)")
    if args.ranks < 1:
        raise SystemExit("--ranks must be >= 1")
    settings = {k: getattr(args, k) for k in ("epochs", "batch_size", "hidden", "period", "seed")}
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "results.json")
        worker_args = ["--worker", "--results", path, "--algorithms", ",".join(algorithms),
                       "--settings", json.dumps(settings)]
        env = dict(os.environ, OMP_NUM_THREADS="1")
        code = _mpiexec.run(args.ranks, "fastoptim.demos.distributed", worker_args, timeout=3600, env=env)
        if code != 0:
            raise SystemExit(f"the ranks failed (mpiexec exit code {code})")
        with open(path) as f:
            results = json.load(f)
    results += baselines(args.ranks, settings)
    print_table(results, args.ranks)
    if not args.no_plot:
        os.makedirs(args.out, exist_ok=True)
        png = os.path.join(args.out, "distributed_digits.png")
        plot(results, png, args.ranks)
        print(f"wrote {png}")
    return 0


# ---- the model ---------------------------------------------------------------------------------

class MLP:
    """64 -> hidden (tanh) -> 10, mean softmax cross-entropy; params a dict of arrays."""

    def __init__(self, n_features, hidden, n_classes):
        self.sizes = (n_features, hidden, n_classes)

    def init_params(self, seed):
        rng = np.random.default_rng(seed)
        n_in, hidden, n_out = self.sizes
        return {"W1": rng.standard_normal((n_in, hidden)) / np.sqrt(n_in), "b1": np.zeros(hidden),
                "W2": rng.standard_normal((hidden, n_out)) / np.sqrt(hidden), "b2": np.zeros(n_out)}

    def _forward(self, params, X):
        h = np.tanh(X @ params["W1"] + params["b1"])
        z = h @ params["W2"] + params["b2"]
        z -= z.max(axis=1, keepdims=True)
        log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        return h, log_p

    def loss(self, params, X, y):
        return -float(self._forward(params, X)[1][np.arange(len(X)), y].mean())

    def accuracy(self, params, X, y):
        return float(np.mean(np.argmax(self._forward(params, X)[1], axis=1) == y))

    def loss_and_grad(self, params, X, y):
        h, log_p = self._forward(params, X)
        rows = np.arange(len(X))
        error = np.exp(log_p)
        error[rows, y] -= 1.0
        error /= len(X)
        dh = (error @ params["W2"].T) * (1 - h * h)
        return -float(log_p[rows, y].mean()), {"W1": X.T @ dh, "b1": dh.sum(axis=0),
                                               "W2": h.T @ error, "b2": error.sum(axis=0)}


def _data(seed):
    from . import problems
    return problems.load_dataset("digits", seed=seed)


def _global_batches(n_samples, global_batch, seed, epoch):
    from .. import train
    return train.minibatches(n_samples, global_batch, seed=seed, epoch=epoch, drop_last=True)


def train_run(name, ranks, rank, settings, make_step, evaluate_params, data, model, params, barrier=None):
    """Train; per epoch the wall time so far and the train loss of evaluate_params()."""
    B = settings["batch_size"]
    X, y = data.X_train, data.y_train
    history = {"epoch": [0], "seconds": [0.0], "loss": [model.loss(evaluate_params(), X, y)]}
    elapsed = 0.0
    for epoch in range(settings["epochs"]):
        if barrier is not None:
            barrier()
        start = time.perf_counter()
        for batch in _global_batches(len(X), ranks * B, settings["seed"], epoch):
            mine = batch[rank * B:(rank + 1) * B]
            _, grads = model.loss_and_grad(params, X[mine], y[mine])
            make_step(grads)
        if barrier is not None:
            barrier()
        elapsed += time.perf_counter() - start
        history["epoch"].append(epoch + 1)
        history["seconds"].append(elapsed)
        history["loss"].append(model.loss(evaluate_params(), X, y))
    final = evaluate_params()
    return {"algorithm": name, "label": LABELS[name], "ranks": ranks, "history": history,
            "loss": history["loss"][-1], "accuracy": model.accuracy(final, data.X_test, data.y_test),
            "seconds": elapsed}


def _optimizer(kind, params):
    import fastoptim
    if kind == "adam":
        return fastoptim.Adam(params, lr=3e-3)
    if kind == "sgd":
        return fastoptim.SGD(params, lr=0.05)
    return fastoptim.SGD(params, lr=0.05, momentum=0.9, nesterov=True)


def _param_bytes(params):
    return sum(p.nbytes for p in params.values())


def baselines(ranks, settings):
    """The single-process runs: one process on the whole global batch."""
    data = _data(settings["seed"])
    model = MLP(data.n_features, settings["hidden"], data.n_classes)
    results = []
    for name, kind in (("single-adam", "adam"), ("single-nesterov", "nesterov")):
        params = model.init_params(settings["seed"])
        opt = _optimizer(kind, params)
        whole = dict(settings, batch_size=ranks * settings["batch_size"])
        run = train_run(name, 1, 0, whole, opt.step, lambda: params, data, model, params)
        run.update(ranks=1, bytes_per_step=0)
        results.append(run)
    return results


def worker(argv):
    import argparse
    parser = argparse.ArgumentParser()
    parser.add_argument("--worker", action="store_true")
    parser.add_argument("--results", required=True)
    parser.add_argument("--algorithms", required=True)
    parser.add_argument("--settings", required=True)
    args = parser.parse_args(argv)
    settings = json.loads(args.settings)

    from mpi4py import MPI

    import fastoptim
    import fastoptim.distributed as fd
    from fastoptim.distributed import _mpi
    fastoptim.set_num_threads(1)
    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    data = _data(settings["seed"])
    model = MLP(data.n_features, settings["hidden"], data.n_classes)

    def barrier():
        _mpi.wait(comm.Ibarrier(), 300, "an epoch's barrier", comm)

    results = []
    for name in args.algorithms.split(","):
        if name in ASYNC_ALGORITHMS:
            results.append(async_run(name, comm, settings, data, model))
            continue
        params = model.init_params(settings["seed"])
        full_volume = 2 * (size - 1) / size * _param_bytes(params)
        evaluate = lambda: params  # noqa: E731  (the replicas: the same on every rank)
        if name == "dp":
            wrapper = fd.DataParallel(_optimizer("adam", params))
            volume = full_volume
        elif name == "zero":
            wrapper = fd.ZeroRedundancyOptimizer(params, fastoptim.Adam, lr=3e-3)
            volume = full_volume
        else:
            wrapper = fd.ElasticAveraging(_optimizer("sgd" if name == "easgd" else "nesterov", params),
                                          period=settings["period"])
            volume = full_volume / settings["period"]
            evaluate = lambda w=wrapper: w.center  # noqa: E731
        run = train_run(name, size, rank, settings, wrapper.step, evaluate, data, model, params, barrier)
        run["bytes_per_step"] = volume
        results.append(run)
    if rank == 0:
        with open(args.results, "w") as f:
            json.dump(results, f)
    barrier()


def async_run(name, comm, settings, data, model):
    """One asynchronous algorithm: rank 0 serves, the others train (see the module docstring)."""
    import fastoptim
    import fastoptim.distributed as fd
    from fastoptim.distributed import _mpi
    params = model.init_params(settings["seed"])
    if name == "easgd-async":
        job = fd.AsyncElasticAveraging(params, lambda p: _optimizer("sgd", p), period=settings["period"])
    elif name == "downpour":
        job = fd.ParameterServer(params, lambda p: fastoptim.Adagrad(p, lr=0.03))
    else:
        job = fd.ParameterServer(params, lambda p: _optimizer("sgd", p), compensation="adaptive",
                                 compensation_lambda=2.0)
    mine = {}

    def work(job):
        mine["run"] = train_run(name, job.n_workers, job.worker_index, settings, job.step, lambda: params,
                                data, model, params)
    stats = job.run(work)
    runs = _mpi.allgather_object(mine.get("run") if job.worker_index == 0 else None, comm, 300,
                                 "worker 0's history")
    run = next(r for r in runs if r is not None)
    steps = sum(stats["pushes"] if "pushes" in stats else stats["steps"])
    run.update(ranks=comm.Get_size(), loss=model.loss(params, data.X_train, data.y_train),
               accuracy=model.accuracy(params, data.X_test, data.y_test),
               staleness=[stats["staleness_mean"], stats["staleness_max"]],
               bytes_per_step=stats["bytes_sent"] / max(steps, 1))
    return run


def print_table(results, ranks, out=sys.stdout):
    print(f"\nMLP on digits, {ranks} ranks x 1 thread; a step takes {ranks} x batch-size samples", file=out)
    header = (f"{'algorithm':28}{'ranks':>6}{'train loss':>12}{'test acc':>10}{'wall (s)':>10}"
              f"{'staleness':>11}{'sent per rank per step':>24}")
    print(header + "\n" + "-" * len(header), file=out)
    for r in results:
        staleness = f"{r['staleness'][0]:.1f}/{r['staleness'][1]}" if "staleness" in r else "-"
        print(f"{r['label']:28}{r['ranks']:>6}{r['loss']:>12.4f}{r['accuracy']:>10.3f}{r['seconds']:>10.2f}"
              f"{staleness:>11}{_bytes(r['bytes_per_step']):>24}", file=out)
    if any("staleness" in r for r in results):
        print("staleness: mean/largest number of server updates between a worker's fetch and its push "
              "(exchanges of others, for easgd-async); asynchronous rows send per worker step", file=out)


def _bytes(n):
    for unit, scale in (("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n:.0f} B"


def plot(results, path, ranks):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SystemExit("the plot needs matplotlib: pip install 'fastoptim[plot]' (or --no-plot)") from None
    fig, (by_time, by_epoch) = plt.subplots(1, 2, figsize=(13, 4.8))
    for r in results:
        h = r["history"]
        style = dict(ls="--" if r["ranks"] == 1 else "-", lw=1.6, label=r["label"])
        by_time.plot(h["seconds"], h["loss"], **style)
        by_epoch.plot(h["epoch"], h["loss"], **style)
    for ax, xlabel in ((by_time, "wall time (s)"), (by_epoch, "epoch")):
        ax.set_yscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("train loss (whole training set)")
        ax.grid(alpha=0.3)
    by_epoch.legend()
    fig.suptitle(f"MLP on scikit-learn's digits: {ranks} MPI ranks against one process")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    worker(sys.argv[1:])
