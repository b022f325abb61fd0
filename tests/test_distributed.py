"""fastoptim.distributed on 2 and 3 ranks: every check of distributed_checks.py
(broadcast, mismatch errors on every rank, DataParallel and ZeRO-1 against one
process for every optimizer, bit-identical replicas, sharded state, checkpoints,
EASGD/EAMSGD against a serial simulation), each rank count in one mpiexec launch;
and the demo and the benchmark, which launch mpiexec themselves."""
import json
import os
import sys

import pytest

from mpi_harness import HERE, assert_passed_on_every_rank, check_names, checks_fixture, require_mpi

require_mpi()

SCRIPT = os.path.join(HERE, "distributed_checks.py")
CHECKS = check_names(SCRIPT)


results = checks_fixture(SCRIPT, [2, 3], timeout=240)


@pytest.mark.parametrize("name", CHECKS)
def test_on_every_rank(results, name):
    assert_passed_on_every_rank(results, name)


def test_demo_trains_on_mpi_ranks_and_writes_its_table_and_plot(tmp_path):
    from mpi_harness import mpi_env, run_command
    from test_demos import assert_png
    # The synchronous and the asynchronous algorithms in one launch (issue 11's are the last three).
    run = run_command([sys.executable, "-m", "fastoptim", "distributed", "--ranks", "2", "--epochs", "2",
                       "--algorithms", "dp,zero,easgd,eamsgd,downpour,dcasgd,easgd-async",
                       "--out", str(tmp_path)], timeout=240, env=mpi_env(), cwd=tmp_path)
    assert run.returncode == 0, run.output()
    lines = run.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("algorithm"))
    for column in ("ranks", "train loss", "test acc", "wall (s)", "staleness", "sent per rank per step"):
        assert column in lines[header]
    rows = {line[:28].strip(): line[28:].split() for line in lines[header + 2:header + 11]}
    assert set(rows) == {"DataParallel (Adam)", "ZeRO-1 (Adam)", "EASGD (SGD)", "EAMSGD (SGD, Nesterov)",
                         "Downpour (Adagrad)", "DC-ASGD-a (SGD)", "async EASGD (SGD)",
                         "1 process (Adam)", "1 process (SGD, Nesterov)"}
    # DataParallel and ZeRO compute what one process computes on the whole batch
    assert rows["DataParallel (Adam)"][1] == rows["ZeRO-1 (Adam)"][1] == rows["1 process (Adam)"][1]
    for name, cells in rows.items():
        assert float(cells[2]) > 0.6, (name, cells)          # test accuracy after 2 epochs
    # 2 (N - 1) / N x 4810 float64 params, every step; EASGD every 4th step
    assert rows["DataParallel (Adam)"][-2:] == ["38.5", "kB"] and rows["EASGD (SGD)"][-2:] == ["9.6", "kB"]
    # Asynchronous rows: mean/largest staleness (1 worker here), and the bytes of a worker step:
    # the grads pushed and the params fetched (and a first fetch)
    for name in ("Downpour (Adagrad)", "DC-ASGD-a (SGD)", "async EASGD (SGD)"):
        assert rows[name][0] == "2" and rows[name][4] == "0.0/0", rows[name]
    assert rows["DataParallel (Adam)"][4] == "-"
    assert rows["Downpour (Adagrad)"][-1] == "kB" and 77.0 <= float(rows["Downpour (Adagrad)"][-2]) < 78
    assert_png(tmp_path / "distributed_digits.png")


def test_benchmark_runs_and_prints_its_ratios(tmp_path):
    from mpi_harness import mpi_env, run_command
    run = run_command([sys.executable, "-m", "fastoptim", "bench", "--distributed", "--rounds", "1",
                       "--shapes", "1x4096,3x1000", "--turn-seconds", "0.01", "--memcpy-mib", "4",
                 "--bucket-mib", "0.005",  # 5 KiB: the 3 x 1000 params in 2 buckets, overlapped or not
                       "--server-size", "4096", "--json", str(tmp_path / "b.json")],
                      timeout=240, env=mpi_env(), cwd=tmp_path)
    assert run.returncode == 0, run.output()
    for text in ("fastoptim DataParallel, grads in its buckets", "fastoptim ZeRO-1", "torch gloo, one flat bucket",
                 "torch gloo, per tensor", "mpi4py per tensor + NumPy Adam", "speedup over torch gloo",
                 "ZeRO-1 / DataParallel", "ZeRO-1, params in one array / DataParallel", "MPI Allreduce", "memcpy",
                 "Parameter server, 4096 float32 params", "ParameterServer, 1 worker", "ParameterServer, 2 workers",
                 "ParameterServer + DC-ASGD-a, 2 workers", "/ DataParallel steps/s",
                 "fastoptim DataParallel, overlap=False"):
        assert text in run.stdout, run.output()
    overlap = next(line for line in run.stdout.splitlines() if line.startswith("DataParallel, overlap=False /"))
    assert overlap.split()[-2] == "-" and overlap.split()[-1].endswith("x"), overlap  # 1 x 4096: one bucket
    figures = json.loads((tmp_path / "b.json").read_text())
    rates = figures["parameter_server"]["rates"]
    assert all(rate > 0 for rate, _ in rates.values()) and rates["ParameterServer, 2 workers"][1] > 0
    assert [s["shape"] for s in figures["shapes"]] == [[1, 4096], [3, 1000]]
