"""python -m fastoptim bench --distributed, part 2: the parameter server's throughput.

Launches 3 ranks with mpiexec (1 thread each).  The model is one float32 array
of `--server-size` params (default 2^20); the server steps Adam (lr 1e-3).
Contenders, taking turns in rounds (the order rotating every round):

  ParameterServer, 1 worker            ranks 0 (server) and 1; rank 2 waits;
  ParameterServer, 2 workers           rank 0 serves ranks 1 and 2;
  ParameterServer + DC-ASGD-a, 2 workers   the same with the fused compensation;
  DataParallel, 2 ranks                ranks 0 and 1, grads in its buckets.

In a parameter-server turn every worker calls step() `calls` times with
fetch_every = push_every = 1: each call pushes the grads (received by the
server into its preallocated buffer) and fetches the params (sent from the
server's params' own memory straight into the worker's).  Updates per second
are the server's updates over the turn's time (the slowest rank's, run() and
its set-up and final broadcast included); GB/s are the bytes of those messages
(grads in, params out) per second.  The ratio compares updates per second with
DataParallel's steps per second at the same size.
"""
import json
import os
import statistics
import sys
import tempfile

import numpy as np

from .timing import measure_on_ranks

LR = 1e-3
RANKS = 3
PS_ONE = "ParameterServer, 1 worker"
PS_TWO = "ParameterServer, 2 workers"
PS_DC = "ParameterServer + DC-ASGD-a, 2 workers"
DP = "DataParallel, 2 ranks (steps/s)"


def add_arguments(group):
    group.add_argument("--server-size", type=int, default=2 ** 20,
                       help="float32 params of the parameter-server benchmark (default 2^20)")


def main(args, out=sys.stdout):
    from .. import _mpiexec
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "server.json")
        worker_args = ["--out", path, "--size", str(args.server_size), "--rounds", str(args.rounds),
                       "--turn-seconds", str(args.turn_seconds)]
        env = dict(os.environ, OMP_NUM_THREADS="1")
        load_before = os.getloadavg()
        code = _mpiexec.run(RANKS, "fastoptim.benchmarks.parameter_server", worker_args, timeout=1800, env=env)
        if code != 0:
            raise SystemExit(f"the parameter-server benchmark's ranks failed (exit code {code})")
        with open(path) as f:
            results = json.load(f)
    results["load_before"], results["load_after"] = load_before, os.getloadavg()
    print_table(results, out)
    return results


def print_table(results, out=sys.stdout):
    size = results["size"]
    print(f"\nParameter server, {size} float32 params ({size * 4 / 2**20:.3g} MiB), Adam on the server, "
          f"{RANKS} ranks x 1 thread, median of {results['rounds']} rounds (load average before "
          f"{results['load_before'][0]:.2f}, after {results['load_after'][0]:.2f}; {results['cores']} cores)",
          file=out)
    header = f"{'':42}{'updates/s':>12}{'GB/s sent':>12}{'/ DataParallel steps/s':>24}"
    print(header + "\n" + "-" * len(header), file=out)
    rates = results["rates"]
    for name in (PS_ONE, PS_TWO, PS_DC, DP):
        rate, bandwidth = rates[name]
        gigabytes = f"{bandwidth / 1e9:.2f}" if name != DP else "-"
        print(f"{name:42}{rate:>12.1f}{gigabytes:>12}{rate / rates[DP][0]:>23.2f}x", file=out)
    print("GB/s sent: the pushed grads and the fetched params, all workers together", file=out)


# ---- the ranks' side ---------------------------------------------------------------------

def worker(argv):
    import argparse
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--size", type=int, default=2 ** 20)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--turn-seconds", type=float, default=0.25)
    args = parser.parse_args(argv)

    from mpi4py import MPI

    import fastoptim
    from fastoptim.distributed import _mpi
    fastoptim.set_num_threads(1)
    world = MPI.COMM_WORLD
    if world.Get_size() != RANKS:
        raise SystemExit(f"the parameter-server benchmark runs on {RANKS} ranks")
    pair = world.Split(0 if world.Get_rank() < 2 else MPI.UNDEFINED)   # ranks 0 and 1
    contenders = make_contenders(world, pair, args.size)
    rates = measure(world, contenders, args.rounds, args.turn_seconds)
    if world.Get_rank() == 0:
        with open(args.out, "w") as f:
            json.dump({"size": args.size, "rounds": args.rounds, "cores": os.cpu_count(), "rates": rates}, f)
    _mpi.wait(world.Ibarrier(), 60, "the end of the benchmark", world)


def make_contenders(world, pair, size):
    """name -> turn(calls) -> (units of work done, bytes sent) on this rank's part."""
    import fastoptim
    import fastoptim.distributed as fd
    rng = np.random.default_rng(0)
    grad = rng.standard_normal(size).astype(np.float32)

    def server(comm, **options):
        if comm == fd._mpi.MPI.COMM_NULL:
            return lambda calls: (0, 0)
        params = [rng.standard_normal(size).astype(np.float32)]
        ps = fd.ParameterServer(params, lambda p: fastoptim.Adam(p, lr=LR), comm=comm, **options)
        mine = [grad.copy()]

        def work(ps, calls):
            for _ in range(calls):
                ps.step(mine)

        def turn(calls):
            stats = ps.run(lambda ps: work(ps, calls))
            return sum(stats["pushes"]), stats["bytes_sent"]
        return turn

    def data_parallel():
        if pair == fd._mpi.MPI.COMM_NULL:
            return lambda calls: (0, 0)
        params = [rng.standard_normal(size).astype(np.float32)]
        dp = fd.DataParallel(fastoptim.Adam(params, lr=LR), comm=pair)
        grads = dp.grad_buffers()
        for g in grads:
            np.copyto(g, grad)

        def turn(calls):
            for _ in range(calls):
                dp.step(grads)
            return calls, 0
        return turn
    return {PS_ONE: server(pair), PS_TWO: server(world), PS_DC: server(world, compensation="adaptive"),
            DP: data_parallel()}


def measure(world, contenders, rounds, min_seconds):
    """name -> (median units per second, median bytes per second) over rounds of turns."""
    samples = measure_on_ranks(world, contenders, rounds, min_seconds, probe_calls=3)
    return {name: (statistics.median(done / elapsed for elapsed, done, _ in rounds_of),
                   statistics.median(sent / elapsed for elapsed, _, sent in rounds_of))
            for name, rounds_of in samples.items()}


if __name__ == "__main__":
    worker(sys.argv[1:])
