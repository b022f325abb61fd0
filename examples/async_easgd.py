"""Asynchronous EASGD / EAMSGD on MPI ranks: rank 0 holds the center, the others are workers.

    mpiexec -n 4 python examples/async_easgd.py                   # EAMSGD: SGD with Nesterov momentum
    mpiexec -n 4 python examples/async_easgd.py --momentum 0      # EASGD

(As root, Open MPI's mpiexec needs OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1;
more ranks than cores need --oversubscribe.)
"""
import argparse

import numpy as np

import fastoptim
import fastoptim.distributed as fd

parser = argparse.ArgumentParser()
parser.add_argument("--period", type=int, default=4, help="local steps between elastic exchanges")
parser.add_argument("--momentum", type=float, default=0.9)
parser.add_argument("--steps", type=int, default=400, help="local steps per worker")
args = parser.parse_args()

rng = np.random.default_rng(0)
X = rng.standard_normal((6000, 20))
y = X @ rng.standard_normal(20) + 0.5 + 0.1 * rng.standard_normal(6000)
params = {"w": np.zeros(20), "b": np.zeros(())}


def local_optimizer(p):
    return fastoptim.SGD(p, lr=0.02, momentum=args.momentum, nesterov=args.momentum > 0)


ea = fd.AsyncElasticAveraging(params, local_optimizer, period=args.period)   # alpha = 0.9 / workers


def worker_fn(ea):
    rows = np.array_split(np.arange(len(X)), ea.n_workers)[ea.worker_index]   # this worker's data
    draw = np.random.default_rng(ea.worker_index)
    for _ in range(args.steps):
        batch = draw.choice(rows, 64)
        error = X[batch] @ params["w"] + params["b"] - y[batch]   # at this worker's own params
        ea.step({"w": X[batch].T @ error / 64, "b": error.mean()})


stats = ea.run(worker_fn)            # then every rank's params hold the center
if ea.rank == 0:
    loss = np.mean((X @ params["w"] + params["b"] - y) ** 2) / 2
    print(f"{stats['exchanges']} exchanges in {stats['seconds']:.2f} s, staleness mean "
          f"{stats['staleness_mean']:.2f} (max {stats['staleness_max']}), loss {loss:.5f}")
