"""Docstring blocks the public classes and functions of fastoptim.distributed share
(filled in by fastoptim._docstrings.fill)."""
from .._docstrings import fill

shared_docs = fill(
    comm="""
        comm : mpi4py.MPI.Intracomm or None, default None
            The communicator (None: ``MPI.COMM_WORLD``).""",
    timeout="""
        timeout : float, default 300.0
            Seconds any wait may take before the job aborts (CollectiveTimeout).""",
    mpi_example="""
        Lines marked ``+SKIP`` need several ranks (``mpiexec -n 2 python script.py``), so the
        doctests leave them out.

        >>> import numpy as np
        >>> import fastoptim""",
    grad_errors="""
        TypeError, ValueError
            A grad that does not match its param (checked before any message).""",
    workers_steps="""
        n_workers : int
            The number of workers, >= 1.
        steps : int
            The number of server steps, >= 0.""",
    # ends inside Raises: each function adds its ValueError
    delays_returns_raises="""
        Returns
        -------
        numpy.ndarray of int64
            One delay per server step, for simulate's `delays`.

        Raises
        ------
        TypeError
            A count that is not an integer.""",
    worker_step="""
        Parameters
        ----------
        grads : list, dict or list of lists/dicts
            This worker's grads, in the params' structure.

        Raises
        ------
        RuntimeError
            Called on a server (AsyncElasticAveraging's center) or outside run().
        TypeError, ValueError
            A grad that does not match its param.""",
)
