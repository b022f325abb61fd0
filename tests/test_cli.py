"""python -m fastoptim's command line: bench's subcommands and the older flags that still pick them."""
import argparse

import pytest

from fastoptim import benchmarks


@pytest.mark.parametrize("argv, expected", [
    (["bench"], ["bench", "optim"]),
    (["bench", "--quick", "--sizes", "1024"], ["bench", "optim", "--quick", "--sizes", "1024"]),
    (["bench", "--torch", "--quick"], ["bench", "torch", "--quick"]),
    (["bench", "--hogwild", "--n-samples", "10"], ["bench", "hogwild", "--n-samples", "10"]),
    (["bench", "hogwild", "--epochs", "2"], ["bench", "hogwild", "--epochs", "2"]),
    (["compare", "--epochs", "2"], ["compare", "--epochs", "2"]),
])
def test_older_bench_spellings_pick_a_subcommand(argv, expected):
    assert benchmarks.subcommand_argv(argv) == expected


def test_every_flag_of_each_benchmark_parses():
    parser = argparse.ArgumentParser()
    commands = parser.add_subparsers(dest="command")
    benchmarks.add_arguments(commands.add_parser("bench"))
    args = parser.parse_args(benchmarks.subcommand_argv(
        ["bench", "--optimizers", "adam", "--sizes", "2**10", "--threads", "1", "--dtype", "float64", "--json", "x",
         "--plot", "y", "--no-torch", "--no-many", "--quick"]))
    assert (args.benchmark, args.optimizers, args.dtype, args.no_many) == ("optim", "adam", "float64", True)
    args = parser.parse_args(benchmarks.subcommand_argv(["bench", "--torch", "--optimizers", "sgd", "--threads",
                                                         "1,2", "--json", "x", "--quick"]))
    assert (args.benchmark, args.optimizers, args.threads) == ("torch", "sgd", "1,2")
    args = parser.parse_args(benchmarks.subcommand_argv(
        ["bench", "--hogwild", "--n-samples", "10", "--n-features", "5", "--nnz", "2", "--label-noise", "0.1",
         "--loss", "log_loss", "--alpha", "1e-4", "--epochs", "2", "--repeats", "1", "--hogwild-threads", "1",
         "--hogwild-dtype", "float32", "--json", "x"]))
    assert (args.benchmark, args.n_samples, args.loss, args.hogwild_dtype) == ("hogwild", 10, "log_loss", "float32")


def test_bench_python_parses_and_runs_on_tiny_problems(torch):
    import io
    from fastoptim.benchmarks import python_rules
    parser = argparse.ArgumentParser()
    commands = parser.add_subparsers(dest="command")
    benchmarks.add_arguments(commands.add_parser("bench"))
    args = parser.parse_args(["bench", "python", "--size", "8", "--samples", "40", "--features", "3", "--threads",
                              "1", "--quick", "--json", "x"])
    assert (args.benchmark, args.size, args.samples, args.features) == ("python", 8, 40, 3)
    out = io.StringIO()
    results = python_rules.run(8, 40, 3, (1,), rounds=1, min_seconds=0.0, out=out)
    assert {r["rule"] for r in results} == {"muon", "lbfgs"}
    for r in results:  # every contender timed; LBFGS's forms evaluated the closure as often as torch's
        assert all(seconds > 0 for seconds in r["times"].values()), r
        if "evaluations" in r:
            assert len(set(r["evaluations"].values())) == 1, r
    assert "torch.optim.Muon" in out.getvalue() and "torch.optim.LBFGS" in out.getvalue()


def test_bench_precision_parses_and_runs_on_a_tiny_size(torch):
    import io
    from fastoptim.benchmarks import precision
    parser = argparse.ArgumentParser()
    commands = parser.add_subparsers(dest="command")
    benchmarks.add_arguments(commands.add_parser("bench"))
    args = parser.parse_args(["bench", "precision", "--log2-size", "12", "--threads", "1,2", "--rounds", "2"])
    assert (args.benchmark, args.log2_size, args.threads, args.rounds) == ("precision", 12, (1, 2), 2)
    out = io.StringIO()
    results = precision.run(12, [1], rounds=1, min_seconds=0.0, out=out)
    state_bytes = {r["contender"]: r["state_bytes"] for r in results}
    assert state_bytes[precision.BASELINE] == 8
    assert state_bytes["fastoptim Adam8bit, 8-bit state"] == 2 + 8 / 256 + 2 * 1024 / 4096  # codes, absmax, maps
    assert state_bytes["fastoptim.torch Adam, bf16 params+state"] == 4
    assert state_bytes["fastoptim.torch Adam, bf16, master weights"] == 8
    assert all(r["seconds"] > 0 for r in results)
    assert "state bytes/param" in out.getvalue()


def test_bench_many_tensors_widens_its_columns_for_a_flagged_range(monkeypatch):
    """A ratio whose rounds disagree carries its range in brackets: the columns widen for it
    instead of gluing it to the next column."""
    import io
    from fastoptim.benchmarks import optim as bench_optim

    def noisy_rounds(contenders, rounds, min_seconds):  # torch fused 1000x slower in one round only
        return {"fastoptim": [1e-6, 1e-6, 1e-6], "torch fused": [1e-6, 2e-6, 1e-3],
                "torch foreach": [1e-6, 2e-6, 1e-3]}

    monkeypatch.setattr(bench_optim, "measure_rounds", noisy_rounds)
    monkeypatch.setattr(bench_optim, "many_tensor_contenders", lambda *args: {})
    out = io.StringIO()
    bench_optim.run_many(["adam", "sgd"], "float32", 1, None, 3, 0.0, out)
    lines = out.getvalue().splitlines()
    table = [line for line in lines if line.startswith(("adam", "sgd"))]
    header = next(line for line in lines if line.strip().startswith("1000 x"))
    assert len(table) == 2 and all("!" in line for line in table)
    assert all(len(line) == len(header) for line in table), "\n".join([header] + table)
    for line in table:  # each cell ends at its column's right edge, with room before the next
        first = line[:10 + (len(header) - 10) // 2]
        assert first.endswith("!") and "!  " in line, line


def test_bench_optim_runs_a_matrix_shape_with_its_factored_traffic():
    """--sizes takes shapes: Adafactor's 2-D param runs its factored path, counted with its own traffic."""
    import io

    import numpy as np

    from fastoptim._registry import BY_NAME
    from fastoptim.benchmarks import optim, timing
    assert timing.parse_sizes("1024,2**20,64x2**5") == (1024, 2**20, (64, 32))
    assert timing.size_label((64, 32)) == "64x32" and timing.size_label(2**20) == "2^20"
    adafactor = BY_NAME["adafactor"]
    assert (adafactor.bytes_per_element(4, 1), adafactor.bytes_per_element(4, 2)) == (32, 24)
    assert BY_NAME["adam"].bytes_per_element(4, 2) == BY_NAME["adam"].bytes_per_element(4, 1) == 28
    out = io.StringIO()
    results = optim.run(["adafactor"], [(64, 32), 2048], [1], np.float32, use_torch=False, rounds=1,
                        min_seconds=0.0, many=False, out=out)
    shapes = [tuple(r["shape"]) for r in results["runs"]]
    assert shapes == [(64, 32), (2048,)] and results["runs"][0]["size"] == 2048
    assert "64x32" in out.getvalue()
