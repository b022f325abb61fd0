"""python -m fastoptim {info,bench,compare,trajectories,distributed}."""
import argparse
import sys

from . import benchmarks, demos


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(prog="python -m fastoptim", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("info", help="print versions, compiler, OpenMP, threads and SIMD level")
    benchmarks.add_arguments(commands.add_parser(
        "bench", help="benchmarks: bench optim|torch|hogwild|distributed (no subcommand: optim)"))
    demos.add_compare_arguments(commands.add_parser(
        "compare", help="train softmax regression on iris or digits with every optimizer; table and loss curves"))
    demos.add_trajectories_arguments(commands.add_parser(
        "trajectories", help="plot each optimizer's path over the 2-D test functions and x cos(pi x)"))
    demos.add_distributed_arguments(commands.add_parser(
        "distributed", help="train an MLP on digits on MPI ranks (launches mpiexec) with DataParallel, ZeRO-1, "
                            "EASGD and EAMSGD; table and loss curves (needs the mpi extra)"))
    args = parser.parse_args(benchmarks.subcommand_argv(argv))
    if args.command == "info":
        from . import show_config
        show_config()
        return 0
    if args.command in ("compare", "trajectories", "distributed"):
        return demos.main(args)
    return benchmarks.main(args)


if __name__ == "__main__":
    sys.exit(main())
