"""Collectives over a model's params.

API
---
``broadcast_params(params, comm=None, root=0, timeout=300.0)``
    public; see its docstring.
"""
import numpy as np

from ._buckets import ParamSet
from ._consistency import check_same_model
from ._mpi import DEFAULT_TIMEOUT, check_timeout, mpi_datatype, resolve_comm, wait


def broadcast_params(params, comm=None, root=0, timeout=DEFAULT_TIMEOUT):
    """Copy root's params into every rank's params, in place.

    params: a list or dict of arrays (or param groups), as optimizers take;
    every rank passes its own arrays of the same model.  A model that differs
    across ranks raises ValueError on every rank.  Returns `params`.
    """
    comm = resolve_comm(comm)
    timeout = check_timeout(timeout)
    size = comm.Get_size()
    if isinstance(root, bool) or not isinstance(root, (int, np.integer)) or not 0 <= root < size:
        raise ValueError(f"root must be a rank of comm (0..{size - 1}), got {root!r}")
    model = ParamSet(params)
    check_same_model(model, comm, timeout, "broadcast_params")
    requests = [comm.Ibcast([a, mpi_datatype(a.dtype)], root=int(root)) for a in model.arrays if a.size]
    wait(requests, timeout, f"broadcast_params from rank {root}", comm)
    return params

