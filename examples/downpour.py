"""Downpour SGD on MPI ranks: least squares, the data split across the workers.

    mpiexec -n 4 python examples/downpour.py                          # 1 server, 3 workers
    mpiexec -n 4 python examples/downpour.py --servers 2 --compensation adaptive
    mpiexec -n 3 python examples/downpour.py --checkpoint run.ckpt    # run again: --resume run.ckpt

(As root, Open MPI's mpiexec needs OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1;
more ranks than cores need --oversubscribe.)
"""
import argparse

import numpy as np

import fastoptim
import fastoptim.distributed as fd

parser = argparse.ArgumentParser()
parser.add_argument("--servers", type=int, default=1)
parser.add_argument("--compensation", choices=("constant", "adaptive"), default=None)
parser.add_argument("--steps", type=int, default=300, help="steps per worker")
parser.add_argument("--checkpoint", default=None)
parser.add_argument("--resume", default=None)
args = parser.parse_args()

rng = np.random.default_rng(0)
X = rng.standard_normal((6000, 20))
y = X @ rng.standard_normal(20) + 0.5 + 0.1 * rng.standard_normal(6000)
params = {"w": np.zeros(20), "b": np.zeros(())}

ps = fd.ParameterServer(params, lambda p: fastoptim.Adagrad(p, lr=0.3), servers=args.servers,
                        compensation=args.compensation, checkpoint=args.checkpoint,
                        checkpoint_every=100 if args.checkpoint else 0, resume=args.resume)


def worker_fn(ps):
    rows = np.array_split(np.arange(len(X)), ps.n_workers)[ps.worker_index]   # this worker's data
    draw = np.random.default_rng(ps.worker_index)
    for _ in range(args.steps):
        batch = draw.choice(rows, 64)
        error = X[batch] @ params["w"] + params["b"] - y[batch]   # at the params last fetched
        ps.step({"w": X[batch].T @ error / 64, "b": error.mean()})


stats = ps.run(worker_fn)            # servers serve, workers call worker_fn; then every rank has the result
if ps.rank == 0:
    loss = np.mean((X @ params["w"] + params["b"] - y) ** 2) / 2
    print(f"{stats['updates']} updates in {stats['seconds']:.2f} s, staleness mean "
          f"{stats['staleness_mean']:.2f} (max {stats['staleness_max']}), loss {loss:.5f}")
