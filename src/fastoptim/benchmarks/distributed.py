"""python -m fastoptim bench --distributed: one data-parallel Adam step on MPI ranks.

Launches `--ranks` ranks (default 2) with mpiexec, each with `--threads` threads
(default 1).  Every rank holds the same float32 params and grads (so averaging
keeps the grads unchanged from step to step) and every contender steps its own
copy; a step is: reduce the grads over the ranks, average, one Adam step
(lr=1e-3, state already created).  Contenders, on 1 x 2^22 and 200 x 2^14 params:

  fastoptim DataParallel, grads written into its buckets (grad_buffers()), and
    with grads in their own arrays (copied into the buckets), and with
    average=False (the sum: the mean is a grad scale inside the fused step, so
    the two should cost the same), and, when --bucket-mib makes several buckets,
    with overlap=False (each bucket reduced, then stepped, instead of stepped in
    a thread while the next is reduced);
  fastoptim ZeroRedundancyOptimizer (ZeRO-1), grads in its buffers, and, with
    several params, also with the params allocated as views of one array (the
    all-gather then lands in them with no copy in or out);
  torch.distributed with gloo and torch.optim.Adam(fused=True): all_reduce of one
    flat bucket holding the grads (DDP's gradient_as_bucket_view), and
    all_reduce per tensor (asynchronous, then waited), each then grad.div_(N);
  mpi4py Allreduce per tensor and fastoptim.reference.adam (NumPy);
and, to show where the time goes, fastoptim's Adam step alone and MPI's
Allreduce alone (of all the grads as one flat buffer).

Timing: contenders take turns in rounds (the order rotating every round); in a
turn every rank runs `calls` steps between barriers and the turn's time is the
slowest rank's.  The table shows medians over rounds and ratios of medians.
Beside it: allreduce bandwidth (bytes reduced per second) of MPI's Allreduce
and of fastoptim's sharded sum (each shard reduced onto its rank, then
all-gathered: DataParallel's sum on 3 ranks or more; on 2 it is MPI's Allreduce), and
single-thread memcpy bandwidth at the same size and at 256 MiB (--memcpy-mib).

Then, in a launch of 3 ranks, the parameter server's updates per second and
GB/s with 1 and 2 workers, against DataParallel's steps per second at the
same size (benchmarks/parameter_server.py).
"""
import json
import os
import statistics
import sys
import tempfile
import time

import numpy as np

from .timing import measure_on_ranks, size_label

LR = 1e-3


def add_arguments(parser):
    group = parser.add_argument_group("distributed options")
    group.add_argument("--ranks", type=int, default=2, help="MPI ranks (default 2)")
    group.add_argument("--rank-threads", type=int, default=1, help="threads per rank (default 1)")
    group.add_argument("--rounds", type=int, default=9, help="rounds of turns; medians reported (default 9)")
    group.add_argument("--bucket-mib", type=float, default=None,
                       help="DataParallel bucket size in MiB (default: the library's)")
    group.add_argument("--shapes", default="1x2**22,200x2**14",
                       help="comma-separated COUNTxSIZE param shapes (default 1x2**22,200x2**14)")
    group.add_argument("--turn-seconds", type=float, default=0.25,
                       help="the least time of each contender's turn in a round (default 0.25)")
    group.add_argument("--memcpy-mib", type=int, default=256,
                       help="size of the large memcpy whose bandwidth is reported (default 256)")
    group.add_argument("--json", metavar="PATH", help="write the results as JSON")
    from . import parameter_server
    parameter_server.add_arguments(group)


def parse_shapes(text):
    """[(count, size)] from "1x2**22,200x2**14"."""
    shapes = []
    for part in text.split(","):
        count, _, size = part.strip().partition("x")
        base, _, exponent = size.partition("**")
        try:
            shapes.append((int(count), int(base) ** int(exponent) if exponent else int(base)))
        except ValueError:
            raise SystemExit(f"--shapes: {part!r} is not COUNTxSIZE (e.g. 200x2**14)") from None
    return shapes


def main(args):
    from .. import _mpiexec
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "results.json")
        parse_shapes(args.shapes)  # checked here, before the ranks start
        worker_args = ["--out", path, "--threads", str(args.rank_threads), "--rounds", str(args.rounds),
                       "--shapes", args.shapes, "--turn-seconds", str(args.turn_seconds),
                       "--memcpy-mib", str(args.memcpy_mib)]
        if args.bucket_mib:
            worker_args += ["--bucket-mib", str(args.bucket_mib)]
        env = dict(os.environ, OMP_NUM_THREADS=str(args.rank_threads))
        load_before = os.getloadavg()
        code = _mpiexec.run(args.ranks, "fastoptim.benchmarks.distributed", worker_args, timeout=1800, env=env)
        if code != 0:
            raise SystemExit(f"the benchmark's ranks failed (exit code {code})")
        with open(path) as f:
            results = json.load(f)
    results["load_before"], results["load_after"] = load_before, os.getloadavg()
    print_table(results)
    from . import parameter_server
    results["parameter_server"] = parameter_server.main(args)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


def print_table(results, out=sys.stdout):
    label = {tuple(s["shape"]): f"{s['shape'][0]} x " + size_label(s["shape"][1]) for s in results["shapes"]}
    shapes = [tuple(s["shape"]) for s in results["shapes"]]
    times = {tuple(s["shape"]): s["times"] for s in results["shapes"]}
    print(f"\nData-parallel Adam step, float32, {results['ranks']} ranks x {results['threads']} thread(s), "
          f"median of {results['rounds']} rounds (load average before {results['load_before'][0]:.2f}, "
          f"after {results['load_after'][0]:.2f}; {results['cores']} cores)", file=out)
    print(f"{'':48}" + "".join(f"{label[s]:>16}" for s in shapes), file=out)
    names = list(dict.fromkeys(name for s in shapes for name in times[s]))
    for name in names:
        print(f"{name:48}" + "".join(f"{_ms(times[s][name]) if name in times[s] else '-':>16}" for s in shapes),
              file=out)
    ratios = [
        ("speedup over torch gloo + Adam(fused), best of two", lambda t: _best_torch(t) / t[OURS]),
        ("speedup over mpi4py per tensor + NumPy Adam", lambda t: t["mpi4py per tensor + NumPy Adam"] / t[OURS]),
        ("ZeRO-1 / DataParallel", lambda t: t[ZERO] / t[OURS]),
        ("ZeRO-1, params in one array / DataParallel", lambda t: t[ZERO_ONE_ARRAY] / t[OURS]),
        ("DataParallel, grads copied in / in its buckets", lambda t: t[COPIED] / t[OURS]),
    ]
    if any(SEQUENTIAL in times[s] for s in shapes):  # a shape with one bucket has no such contender: '-'
        ratios.append(("DataParallel, overlap=False / overlap=True", lambda t: t[SEQUENTIAL] / t[OURS]))
    print("", file=out)
    for title, ratio in ratios:
        print(f"{title:48}" + "".join(_ratio_cell(ratio, times[s]) for s in shapes), file=out)
    bw = results["bandwidth"]
    print(f"\nallreduce of {bw['bytes'] / 2**20:.3g} MiB float32 over {results['ranks']} ranks: "
          f"MPI Allreduce {bw['mpi_allreduce'] / 1e9:.2f} GB/s (DataParallel's sum on 2 ranks), fastoptim's sharded "
          f"sum (MPI_Reduce of each shard onto its rank, then MPI_Allgatherv; DataParallel's on 3+ ranks) "
          f"{bw['identical_allreduce'] / 1e9:.2f} GB/s (bytes reduced per second); "
          f"memcpy, one thread: {bw['memcpy_same_size'] / 1e9:.1f} GB/s at {bw['bytes'] / 2**20:.3g} MiB, "
          f"{bw['memcpy_large'] / 1e9:.1f} GB/s at {bw['memcpy_large_bytes'] / 2**20:.0f} MiB", file=out)


OURS = "fastoptim DataParallel, grads in its buckets"
SUMMED = "fastoptim DataParallel, sum (average=False)"
COPIED = "fastoptim DataParallel, grads copied in"
SEQUENTIAL = "fastoptim DataParallel, overlap=False"
ZERO = "fastoptim ZeRO-1, grads in its buffers"
ZERO_ONE_ARRAY = "fastoptim ZeRO-1, params in one array"


def _ratio_cell(ratio, times):
    try:
        return f"{ratio(times):>15.2f}x"
    except KeyError:
        return f"{'-':>16}"


def _best_torch(times):
    return min(t for name, t in times.items() if name.startswith("torch"))


def _ms(seconds):
    return f"{seconds * 1e3:.2f} ms"


# ---- the ranks' side ---------------------------------------------------------------------

def worker(argv):
    import argparse
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--bucket-mib", type=float, default=None)
    parser.add_argument("--shapes", default="1x2**22,200x2**14")
    parser.add_argument("--turn-seconds", type=float, default=0.25)
    parser.add_argument("--memcpy-mib", type=int, default=256)
    args = parser.parse_args(argv)

    from mpi4py import MPI

    import fastoptim
    from fastoptim.distributed import _mpi
    comm = MPI.COMM_WORLD
    fastoptim.set_num_threads(args.threads)
    torch, dist = _torch_gloo(comm, args.threads)
    results = {"ranks": comm.Get_size(), "threads": args.threads, "rounds": args.rounds,
               "cores": os.cpu_count(), "shapes": []}
    shapes = parse_shapes(args.shapes)
    for count, n in shapes:
        contenders = make_contenders(comm, count, n, torch, dist, args.bucket_mib)
        times = measure(comm, contenders, args.rounds, args.turn_seconds)
        results["shapes"].append({"shape": [count, n], "times": times})
        del contenders
    results["bandwidth"] = bandwidths(comm, max(count * n for count, n in shapes), args.memcpy_mib)
    if comm.Get_rank() == 0:
        with open(args.out, "w") as f:
            json.dump(results, f)
    _mpi.wait(comm.Ibarrier(), 60, "the end of the benchmark", comm)
    if dist is not None:
        dist.destroy_process_group()


def _torch_gloo(comm, threads):
    """torch and torch.distributed with a gloo group over the same ranks, or (None, None)."""
    from fastoptim.distributed import _mpi
    try:
        import torch
        import torch.distributed as dist
    except ImportError:
        return None, None
    torch.set_num_threads(threads)
    port = None
    if comm.Get_rank() == 0:
        import socket
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
    port = _mpi.bcast_object(port, comm, 0, 60, "the gloo port")
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}",
                            rank=comm.Get_rank(), world_size=comm.Get_size())
    return torch, dist


def make_contenders(comm, count, n, torch, dist, bucket_mib):
    """name -> zero-argument step; every contender on its own params, state created."""
    from mpi4py import MPI

    import fastoptim
    import fastoptim.distributed as fd
    from fastoptim import reference
    size = comm.Get_size()
    rng = np.random.default_rng(count)
    params0 = [rng.standard_normal(n).astype(np.float32) for _ in range(count)]
    grads0 = [rng.standard_normal(n).astype(np.float32) for _ in range(count)]
    contenders = {}
    options = {} if bucket_mib is None else {"bucket_bytes": int(bucket_mib * 2**20)}
    buckets = []

    def data_parallel(in_buckets, average=True, overlap=True):
        params = [p.copy() for p in params0]
        dp = fd.DataParallel(fastoptim.Adam(params, lr=LR), average=average, overlap=overlap, **options)
        buckets.append(len(dp.buckets))
        grads = dp.grad_buffers() if in_buckets else [g.copy() for g in grads0]
        for g, g0 in zip(grads, grads0):
            # The mean of equal grads is the grad itself, so the buckets keep their values step
            # after step; a sum would grow by N every step, so the summing contender sums zeros.
            np.copyto(g, g0 if average else 0)
        return lambda: dp.step(grads)
    contenders[OURS] = data_parallel(True)
    contenders[COPIED] = data_parallel(False)
    contenders[SUMMED] = data_parallel(True, average=False)
    if buckets[0] > 1:  # bucket k steps while bucket k + 1 is reduced, or one after the other
        contenders[SEQUENTIAL] = data_parallel(True, overlap=False)

    def zero_redundancy(zparams):
        zero = fd.ZeroRedundancyOptimizer(zparams, fastoptim.Adam, lr=LR)
        zgrads = zero.grad_buffers()
        for g, g0 in zip(zgrads, grads0):
            np.copyto(g, g0)
        return lambda: zero.step(zgrads)
    contenders[ZERO] = zero_redundancy([p.copy() for p in params0])
    if count > 1:
        arena = np.concatenate(params0)
        contenders[ZERO_ONE_ARRAY] = zero_redundancy([arena[k * n:(k + 1) * n] for k in range(count)])

    if torch is not None:
        contenders.update(_torch_contenders(torch, dist, params0, grads0, size))

    nparams = [p.copy() for p in params0]
    ngrads = [g.copy() for g in grads0]
    moments = [(np.zeros_like(p), np.zeros_like(p)) for p in nparams]
    numpy_step = [0]

    def numpy_adam():
        numpy_step[0] += 1
        for g in ngrads:
            comm.Allreduce(MPI.IN_PLACE, g)
            g /= size
        for p, g, (m, v) in zip(nparams, ngrads, moments):
            reference.adam(p, g, m, v, step=numpy_step[0], lr=LR, beta1=0.9, beta2=0.999, eps=1e-8)
    contenders["mpi4py per tensor + NumPy Adam"] = numpy_adam

    aparams = [p.copy() for p in params0]
    agrads = [g.copy() for g in grads0]
    alone = fastoptim.Adam(aparams, lr=LR)
    contenders["(fastoptim Adam step alone, no communication)"] = lambda: alone.step(agrads)
    flat = np.concatenate(grads0)
    contenders["(MPI Allreduce alone, all grads as one buffer)"] = lambda: comm.Allreduce(MPI.IN_PLACE, flat)
    for step in contenders.values():
        step()  # state created, buffers touched
    return contenders


def _torch_contenders(torch, dist, params0, grads0, size):
    contenders = {}
    # One flat bucket whose views are the grads (DDP's gradient_as_bucket_view=True): no copies.
    tparams = [torch.tensor(p, requires_grad=True) for p in params0]
    bucket = torch.tensor(np.concatenate(grads0))
    offset = 0
    for t in tparams:
        t.grad = bucket[offset:offset + t.numel()].view_as(t)
        offset += t.numel()
    flat_opt = torch.optim.Adam(tparams, lr=LR, fused=True)

    def flat_step():
        dist.all_reduce(bucket)
        bucket.div_(size)
        flat_opt.step()
    contenders["torch gloo, one flat bucket + Adam(fused)"] = flat_step

    # Per tensor: every all_reduce started asynchronously, then all waited.
    pparams = [torch.tensor(p, requires_grad=True) for p in params0]
    for t, g in zip(pparams, grads0):
        t.grad = torch.tensor(g)
    per_opt = torch.optim.Adam(pparams, lr=LR, fused=True)

    def per_tensor_step():
        works = [dist.all_reduce(t.grad, async_op=True) for t in pparams]
        for w in works:
            w.wait()
        for t in pparams:
            t.grad.div_(size)
        per_opt.step()
    if len(params0) > 1:
        contenders["torch gloo, per tensor + Adam(fused)"] = per_tensor_step
    return contenders


def measure(comm, contenders, rounds, min_seconds):
    """Median seconds per step of each contender: turns in rotating order, the slowest rank's time."""
    def turn(step):
        def run(calls):
            for _ in range(calls):
                step()
            return (calls,)
        return run
    samples = measure_on_ranks(comm, {name: turn(step) for name, step in contenders.items()}, rounds, min_seconds)
    return {name: statistics.median(elapsed / calls for elapsed, calls in samples[name]) for name in samples}


def bandwidths(comm, n, memcpy_mib):
    """Allreduce and memcpy bandwidths in bytes per second (medians of timed repeats)."""
    from mpi4py import MPI

    from fastoptim.distributed._buckets import shard_bounds
    from fastoptim.distributed._collectives import ShardedSum
    buffer = np.ones(n, dtype=np.float32)
    sharded = ShardedSum(buffer, shard_bounds(n, comm.Get_size()), comm)

    def sharded_sum():
        sharded.reduce()
        sharded.gather()
    dst = np.empty_like(buffer)
    big_src = np.ones(memcpy_mib << 18, dtype=np.float32)
    big_dst = np.empty_like(big_src)

    def timed(fn, repeats=15):
        fn()
        out = []
        for _ in range(repeats):
            comm.Barrier()
            start = time.perf_counter()
            fn()
            out.append(comm.allreduce(time.perf_counter() - start, op=MPI.MAX))
        return statistics.median(out)
    return {
        "bytes": buffer.nbytes,
        "mpi_allreduce": buffer.nbytes / timed(lambda: comm.Allreduce(MPI.IN_PLACE, buffer)),
        "identical_allreduce": buffer.nbytes / timed(sharded_sum),
        "memcpy_same_size": buffer.nbytes / timed(lambda: np.copyto(dst, buffer)),
        "memcpy_large": big_src.nbytes / timed(lambda: np.copyto(big_dst, big_src), repeats=5),
        "memcpy_large_bytes": big_src.nbytes,
    }


if __name__ == "__main__":
    worker(sys.argv[1:])
