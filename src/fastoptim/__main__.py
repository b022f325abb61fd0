"""python -m fastoptim {info,bench}."""
import argparse
import sys


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m fastoptim", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("info", help="print versions, compiler, OpenMP, threads and SIMD level")
    from . import bench
    bench.add_arguments(commands.add_parser("bench", help="time the optimizers against NumPy and torch"))
    args = parser.parse_args(argv)
    if args.command == "info":
        from . import show_config
        show_config()
        return 0
    return bench.main(args)


if __name__ == "__main__":
    sys.exit(main())
