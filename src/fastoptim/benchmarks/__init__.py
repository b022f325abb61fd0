"""python -m fastoptim bench {optim,torch,hogwild,distributed,python,precision}: fastoptim's benchmarks.

  optim        every optimizer against NumPy and torch.optim, by size and thread count
  torch        fastoptim.torch against torch.optim on two models
  hogwild      Hogwild! SGD against scikit-learn's SGDClassifier
  distributed  data-parallel steps on MPI ranks against torch.distributed and mpi4py + NumPy
  python       the rules at the Python level (Muon, LBFGS) against torch.optim
  precision    Adam in each storage mode (float32, 8-bit, bfloat16) against torch and bitsandbytes

Each subcommand is a module of this package with add_arguments(parser) and
main(args); timing.py is how all of them time.  `bench` with no subcommand is
`bench optim`, and the spellings `bench --torch ...`, `bench --hogwild ...`
and `bench --distributed ...` work too (see subcommand_argv).
"""
import importlib

# subcommand -> (module, help)
SUBCOMMANDS = {
    "optim": ("optim", "time the optimizers against NumPy and torch.optim"),
    "torch": ("torch", "fastoptim.torch against torch.optim: one step over a ~10M-parameter MLP "
                       "and over 1000 small tensors"),
    "hogwild": ("hogwild", "Hogwild! SGD against scikit-learn's SGDClassifier"),
    "distributed": ("distributed", "a data-parallel Adam step on MPI ranks against torch.distributed (gloo) "
                                   "and mpi4py + NumPy (launches mpiexec; needs the mpi extra)"),
    "python": ("python_rules", "the rules at the Python level (Muon, LBFGS) against torch.optim"),
    "precision": ("precision", "Adam in each storage mode (float32, 8-bit, bfloat16, master weights) against "
                               "torch.optim fused and bitsandbytes, with state bytes per param"),
}


def module(subcommand):
    return importlib.import_module(f"{__name__}.{SUBCOMMANDS[subcommand][0]}")


def add_arguments(parser):
    """The bench parser: one subparser per benchmark."""
    commands = parser.add_subparsers(dest="benchmark", required=True, metavar="{" + ",".join(SUBCOMMANDS) + "}")
    for name, (_, help_text) in SUBCOMMANDS.items():
        module(name).add_arguments(commands.add_parser(name, help=help_text, description=help_text))


def subcommand_argv(argv):
    """argv with `bench [options]` spelled as `bench <subcommand> [options]`: no subcommand is
    `optim`, and the flags --torch, --hogwild and --distributed pick those benchmarks."""
    if not argv or argv[0] != "bench" or (len(argv) > 1 and argv[1] in SUBCOMMANDS) \
            or any(a in ("-h", "--help") for a in argv[1:2]):
        return argv
    rest = argv[1:]
    for flag, name in (("--torch", "torch"), ("--hogwild", "hogwild"), ("--distributed", "distributed")):
        if flag in rest:
            return ["bench", name] + [a for a in rest if a != flag]
    return ["bench", "optim"] + rest


def main(args):
    return module(args.benchmark).main(args)
