"""python -m fastoptim {info,bench,compare,trajectories,distributed}."""
import argparse
import sys


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m fastoptim", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("info", help="print versions, compiler, OpenMP, threads and SIMD level")
    from . import bench, demos
    bench.add_arguments(commands.add_parser("bench", help="time the optimizers against NumPy and torch"))
    demos.add_compare_arguments(commands.add_parser(
        "compare", help="train softmax regression on iris or digits with every optimizer; table and loss curves"))
    demos.add_trajectories_arguments(commands.add_parser(
        "trajectories", help="plot each optimizer's path over the 2-D test functions and x cos(pi x)"))
    from .demos import distributed as distributed_demo
    distributed_demo.add_arguments(commands.add_parser(
        "distributed", help="train an MLP on digits on MPI ranks (launches mpiexec) with DataParallel, ZeRO-1, "
                            "EASGD and EAMSGD; table and loss curves (needs the mpi extra)"))
    args = parser.parse_args(argv)
    if args.command == "info":
        from . import show_config
        show_config()
        return 0
    if args.command == "distributed":
        return distributed_demo.main(args)
    if args.command in ("compare", "trajectories"):
        return demos.main(args)
    return bench.main(args)


if __name__ == "__main__":
    sys.exit(main())
