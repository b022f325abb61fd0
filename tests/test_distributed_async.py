"""Asynchronous distributed training: the simulator and its delay generators (in this
process), ParameterServer and AsyncElasticAveraging on 2, 3 and 4 ranks (4 with 2
servers), the abort when a worker raises or dies, a checkpoint that survives
kill -9 and resumes, and the demo's asynchronous algorithms and simulation."""
import os
import subprocess
import sys
import time

import numpy as np
import pytest

import dc_reference
import fastoptim
from mpi_harness import (HERE, assert_passed_on_every_rank, check_names, checks_fixture, kill_job, mpi_env, mpiexec,
                         no_mpi_init, require_mpi, run_mpi)

require_mpi()
no_mpi_init()
import fastoptim.distributed as fd  # noqa: E402

CHECKS_SCRIPT = os.path.join(HERE, "distributed_async_checks.py")
CHECKS = check_names(CHECKS_SCRIPT)


# ---- the simulator -----------------------------------------------------------------------

def quadratic_problem(dtype, seed=0):
    """0.5 |A x - b|^2 per param, grads at any snapshot."""
    rng = np.random.default_rng(seed)
    matrices = [(rng.standard_normal((n, n)) / np.sqrt(n)).astype(dtype) for n in (6, 3)]
    targets = [rng.standard_normal(n).astype(dtype) for n in (6, 3)]

    def grad_fn(snapshot):
        arrays = list(snapshot.values()) if isinstance(snapshot, dict) else snapshot
        return [m.T @ (m @ x - t) for m, x, t in zip(matrices, arrays, targets)]
    return grad_fn


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kind", [None, "constant", "adaptive"])
def test_simulate_equals_the_serial_formulas(dtype, kind):
    grad_fn = quadratic_problem(dtype)
    delays = np.random.default_rng(1).integers(0, 6, 40)
    make = lambda p: fastoptim.Adagrad(p, lr=0.3)  # noqa: E731
    params = [np.ones(6, dtype=dtype), np.zeros(3, dtype=dtype)]
    stats = fd.simulate(grad_fn, params, make, delays=delays, compensation=kind,
                        compensation_lambda=2.0, compensation_momentum=0.9)
    expected = dc_reference.simulate(grad_fn, [np.ones(6, dtype=dtype), np.zeros(3, dtype=dtype)], make,
                                     delays, kind, 2.0, 0.9)
    for got, want in zip(params, expected):
        np.testing.assert_array_equal(got, want)
    staleness = np.minimum(delays, np.arange(40))
    assert stats["updates"] == 40 and stats["staleness_max"] == staleness.max()
    assert stats["staleness_mean"] == pytest.approx(staleness.mean())


def test_simulate_keeps_a_ring_of_max_delay_plus_one_snapshots_in_the_params_structure():
    grad_fn = quadratic_problem(np.float64)
    seen = set()

    def spy(snapshot):
        assert isinstance(snapshot, dict) and list(snapshot) == ["a", "b"]
        seen.add(snapshot["a"].__array_interface__["data"][0])
        return dict(zip(snapshot, grad_fn(snapshot)))
    params = {"a": np.ones(6), "b": np.zeros(3)}
    delays = np.random.default_rng(0).integers(0, 4, 40)      # at most 3
    fd.simulate(spy, params, lambda p: fastoptim.SGD(p, lr=0.1), delays=delays, compensation="constant")
    assert len(seen) == 4                                     # snapshots live in 4 slots


def test_simulate_without_delays_is_plain_training():
    grad_fn = quadratic_problem(np.float64)
    params = [np.ones(6), np.zeros(3)]
    fd.simulate(grad_fn, params, lambda p: fastoptim.Adam(p, lr=0.1), delays=np.zeros(25, dtype=int),
                compensation="adaptive")
    reference = [np.ones(6), np.zeros(3)]
    optimizer = fastoptim.Adam(reference, lr=0.1)
    for _ in range(25):
        optimizer.step(grad_fn(reference))
    for got, want in zip(params, reference):
        np.testing.assert_array_equal(got, want)


def test_simulate_errors_name_the_argument():
    grad_fn = quadratic_problem(np.float64)
    make = lambda p: fastoptim.SGD(p, lr=0.1)  # noqa: E731
    params = [np.ones(6), np.zeros(3)]
    with pytest.raises(ValueError, match=r"delays must be >= 0; delays\[2\] is -1"):
        fd.simulate(grad_fn, params, make, delays=[0, 1, -1])
    with pytest.raises(TypeError, match="delays must be a sequence of integers"):
        fd.simulate(grad_fn, params, make, delays=[0.5])
    with pytest.raises(ValueError, match="compensation must be None, 'constant' or 'adaptive'"):
        fd.simulate(grad_fn, params, make, delays=[0], compensation="linear")
    with pytest.raises(ValueError, match="compensation_momentum must be a number in"):
        fd.simulate(grad_fn, params, make, delays=[0], compensation="adaptive", compensation_momentum=1.0)
    with pytest.raises(ValueError, match="compensation_lambda must be a finite number"):
        fd.simulate(grad_fn, params, make, delays=[0], compensation_lambda=float("nan"))
    with pytest.raises(TypeError, match="optimizer.params. must return a fastoptim optimizer"):
        fd.simulate(grad_fn, params, lambda p: None, delays=[0])
    with pytest.raises(ValueError, match="must build its optimizer over the params it is given"):
        fd.simulate(grad_fn, params, lambda p: fastoptim.SGD([np.zeros(6), np.zeros(3)], lr=0.1), delays=[0])
    with pytest.raises(ValueError, match=r"grads returned by grad_fn\[1\] has shape \(4,\)"):
        fd.simulate(lambda s: [np.zeros(6), np.zeros(4)], params, make, delays=[0])
    np.testing.assert_array_equal(params[0], np.ones(6))


def test_delay_generators():
    np.testing.assert_array_equal(fd.round_robin_delays(4, 7), [0, 1, 2, 3, 3, 3, 3])
    np.testing.assert_array_equal(fd.round_robin_delays(1, 3), [0, 0, 0])
    delays = fd.random_delays(16, 20000, seed=3)
    assert delays.dtype == np.int64 and (delays >= 0).all() and (delays <= np.arange(20000)).all()
    assert delays.mean() == pytest.approx(15, rel=0.05)      # one gradient in flight per worker
    assert delays.max() > 30                                  # random service times: a long tail
    np.testing.assert_array_equal(delays, fd.random_delays(16, 20000, seed=3))
    np.testing.assert_array_equal(fd.random_delays(1, 5), np.zeros(5))
    np.testing.assert_array_equal(fd.random_delays(3, 50, sigma=0.0)[3:], np.full(47, 2))
    with pytest.raises(ValueError, match="n_workers must be >= 1"):
        fd.round_robin_delays(0, 5)


def test_bad_options_are_named_before_any_message():
    params = [np.zeros(3)]
    for alpha in ("x", True, 0, 1.5, float("nan")):
        with pytest.raises(ValueError, match=r"alpha must be a number in \(0, 1\]"):
            fd.AsyncElasticAveraging(params, None, alpha=alpha)
    with pytest.raises(ValueError, match="period must be an integer >= 1, got 0"):
        fd.AsyncElasticAveraging(params, None, period=0)
    with pytest.raises(ValueError, match="servers must be an integer >= 1, got 0"):
        fd.ParameterServer(params, None, servers=0)
    with pytest.raises(ValueError, match="push_every must be an integer >= 1, got 2.0"):
        fd.ParameterServer(params, None, push_every=2.0)


# ---- on 2, 3 and 4 ranks ---------------------------------------------------------------

results = checks_fixture(CHECKS_SCRIPT, [2, 3, 4], timeout=150)


@pytest.mark.parametrize("name", CHECKS)
def test_on_every_rank(results, name):
    assert_passed_on_every_rank(results, name)


FAILING_WORKER = """
import os, sys
import numpy as np
import fastoptim
import fastoptim.distributed as fd
algorithm, how = sys.argv[1], sys.argv[2]
params = [np.zeros(1000)]
if algorithm == "ps":
    job = fd.ParameterServer(params, lambda p: fastoptim.SGD(p, lr=0.1), servers=2)   # timeout: 300 s
else:
    job = fd.AsyncElasticAveraging(params, lambda p: fastoptim.SGD(p, lr=0.1), period=2)
def work(job):
    for t in range(10 ** 9):
        if job.worker_index == job.n_workers - 1 and t == 50:
            if how == "raise":
                raise RuntimeError("the last worker fails")
            os._exit(0)                     # dies: no exception, no MPI_Finalize
        job.step([params[0] - 1.0])
job.run(work)
"""


@pytest.mark.parametrize("algorithm, how, ranks", [("ps", "raise", 3), ("ps", "exit", 4), ("easgd", "exit", 2)])
def test_a_worker_that_raises_or_dies_ends_the_job(algorithm, how, ranks):
    run = run_mpi(["-c", FAILING_WORKER, algorithm, how], ranks, timeout=60)
    assert run.returncode != 0, run.output()
    if how == "raise":
        assert "RuntimeError: the last worker fails" in run.stderr and "aborting the MPI job" in run.stderr
    assert run.seconds < 30, run.output()


CHECKPOINTED = """
import sys
import numpy as np
import fastoptim
import fastoptim.distributed as fd
path, steps = sys.argv[1], int(sys.argv[2])
target = np.linspace(-1.0, 1.0, 1 << 16)
params = [np.zeros(1 << 16), np.zeros(1 << 16, dtype=np.float32)]
ps = fd.ParameterServer(params, lambda p: fastoptim.Adagrad(p, lr=0.1), servers=2, checkpoint=path,
                        checkpoint_every=1, resume=None if steps > 10 ** 6 else path, timeout=60)
def work(ps):
    for _ in range(steps):
        ps.step([params[0] - target, params[1] - target.astype(np.float32)])
stats = ps.run(work)
if ps.rank == 0:
    print("updates", stats["updates"], "pushes", sum(stats["pushes"]), flush=True)
"""


def test_a_checkpoint_survives_kill_9_and_resumes(tmp_path):
    path = str(tmp_path / "downpour.ckpt")
    command = [mpiexec(), "--oversubscribe", "-n", "4", sys.executable, "-c", CHECKPOINTED, path, str(10 ** 9)]
    job = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=mpi_env(),
                           start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        saved = None
        while time.monotonic() < deadline and job.poll() is None:
            try:
                saved = fd.ParameterServer.load_checkpoint(path)
            except (FileNotFoundError, ValueError):   # not every shard written yet
                saved = None
            if saved is not None and saved["updates"] >= 15:
                break
            time.sleep(0.05)
        assert job.poll() is None, job.communicate()
        assert saved is not None, "no checkpoint within 60 s"
    finally:
        kill_job(job)                                 # mpiexec and every rank, mid-run (mid-write, often)
        job.communicate()
    saved = fd.ParameterServer.load_checkpoint(path)  # the last complete shard files, never torn ones
    assert saved["updates"] >= 15
    target = np.linspace(-1.0, 1.0, 1 << 16)
    distance = np.abs(saved["params"][0] - target).max()
    assert 0 < distance < 1 and saved["params"][1].dtype == np.float32
    assert set(saved["optimizer"]["state"]) == {0, 1}

    run = run_mpi(["-c", CHECKPOINTED, path, "5"], 4, timeout=60)
    assert run.returncode == 0, run.output()
    assert f"updates {saved['updates'] + 10} pushes 10" in run.stdout, run.output()
    resumed = fd.ParameterServer.load_checkpoint(path)
    assert resumed["updates"] == saved["updates"] + 10
    assert np.abs(resumed["params"][0] - target).max() < distance


# ---- the demo (the MPI demo's asynchronous rows are tested with its synchronous ones, in
# test_distributed.py) -------------------------------------------------------------------------

def test_demo_simulates_many_workers_and_plots_the_final_loss(tmp_path, capsys):
    from fastoptim.__main__ import main
    from test_demos import assert_png
    assert main(["distributed", "--simulate", "--workers", "1,8", "--epochs", "1", "--seeds", "1",
                 "--out", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.strip().startswith("workers"))
    assert lines[header].split() == ["workers", "staleness", "ASGD", "loss", "acc", "DC-ASGD-c", "loss", "acc",
                                     "DC-ASGD-a", "loss", "acc"]
    one, eight = (line.split() for line in lines[header + 2:header + 4])
    assert one[:2] == ["1", "0.0"] and eight[0] == "8" and float(eight[1]) > 5
    assert one[2] == one[4] == one[6]           # no staleness: compensation changes nothing
    assert_png(tmp_path / "distributed_delays.png")


EXAMPLES = os.path.join(os.path.dirname(HERE), "examples")


def test_the_readme_examples_train():
    run = run_mpi([os.path.join(EXAMPLES, "downpour.py"), "--servers", "2", "--compensation", "adaptive",
                   "--steps", "100"], 3, timeout=60)
    assert run.returncode == 0, run.output()
    updates, loss = run.stdout.split()[0], float(run.stdout.split()[-1])
    assert updates == "100" and loss < 0.01, run.output()          # the noise's floor is 0.005
    run = run_mpi([os.path.join(EXAMPLES, "async_easgd.py"), "--steps", "200"], 3, timeout=60)
    assert run.returncode == 0, run.output()
    exchanges, loss = run.stdout.split()[0], float(run.stdout.split()[-1])
    assert exchanges == "100" and loss < 0.01, run.output()
