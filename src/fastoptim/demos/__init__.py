"""python -m fastoptim compare / trajectories / distributed: the optimizers side by side.

compare: softmax regression on iris or digits with each optimizer, a table
of final loss, test accuracy and wall time, and loss curves.
trajectories: each optimizer's path over the contours of the 2-D test
functions, and over x cos(pi x), where plain descent settles in a local
minimum.  problems: the test functions and models they use.
distributed: an MLP on digits trained on MPI ranks (the module
demos.distributed, imported only when run: it launches mpiexec).

The contenders are every face of every rule in fastoptim.rules, with the
settings of its Variant's demos.
"""
from . import problems
from .compare import COMPARE_SETTINGS, compare, plot_comparison
from .contenders import CONTENDERS, PLOT_HELP, TRAJECTORY_OPTIONS, Contender, pyplot
from .trajectories import (SCHEDULE_STEPS, TRAJECTORY_SETTINGS, _runs, descend, example_schedules,
                           trajectories)

__all__ = ["problems", "compare", "trajectories", "descend", "example_schedules", "CONTENDERS", "Contender",
           "COMPARE_SETTINGS", "TRAJECTORY_SETTINGS"]


# ---- command line ----------------------------------------------------------------------------

def add_compare_arguments(parser):
    parser.add_argument("--dataset", choices=tuple(COMPARE_SETTINGS), default="iris")
    parser.add_argument("--epochs", type=int, default=None,
                        help="passes over the training set (default: iris 60, digits 20)")
    parser.add_argument("--batch-size", type=int, default=None, help="default: iris 16, digits 64")
    parser.add_argument("--seed", type=int, default=0, help="the split, the shuffling")
    parser.add_argument("--out", metavar="DIR", default=None,
                        help="write loss and accuracy curves (PNG) to DIR (needs matplotlib)")


def add_trajectories_arguments(parser):
    parser.add_argument("--out", metavar="DIR", default=".", help="where to write the PNGs (default: .)")
    parser.add_argument("--quick", action="store_true", help="a fifth of the steps")


def add_distributed_arguments(parser):
    from . import distributed
    distributed.add_arguments(parser)


def main(args):
    if args.command == "distributed":
        from . import distributed
        return distributed.main(args)
    try:
        if args.command == "compare":
            compare(args.dataset, epochs=args.epochs, batch_size=args.batch_size, seed=args.seed, out=args.out)
        else:
            trajectories(args.out, step_scale=0.2 if args.quick else 1.0)
    except (ValueError, TypeError) as error:
        raise SystemExit(f"python -m fastoptim {args.command}: {error}") from None
    return 0
