"""MPI plumbing shared by every fastoptim.distributed algorithm: the communicator,
bounded waits, the abort-on-uncaught-exception hook and small object collectives.

Everything here is mpi4py; nothing is a home-made transport.  The rules the
algorithms follow (and issue 11's ParameterServer/AsyncElasticAveraging should too):

- Never call a blocking mpi4py collective or receive (``comm.Allreduce``,
  ``comm.recv``...) bare: it cannot time out.  Start the non-blocking form
  (``Iallreduce``, ``Irecv``...) and pass the request(s) to :func:`wait`, which
  raises :class:`CollectiveTimeout` after ``timeout`` seconds.  A collective
  cannot be cancelled, so after a timeout the communicator is unusable:
  :func:`wait` arranges for the job to abort (immediately if the exception is
  not caught, at interpreter exit otherwise), never to hang.
  Where the blocking form is much faster (Open MPI's blocking reductions use
  better algorithms than its non-blocking ones), call it through
  :func:`blocking`: a watchdog thread aborts the job if the call outlives its
  timeout (the rank cannot raise: it is inside MPI).
- :func:`install_excepthook` (run when ``fastoptim.distributed`` is imported)
  aborts the whole MPI job when an uncaught exception reaches the top of any
  rank of a job of several processes, as ``python -m mpi4py script.py`` does,
  so a failing rank never leaves the others waiting forever.
- Validate on every rank, before the first message of an operation: an error
  raised on one rank after its peers entered a collective is only rescued by
  the timeout.  Cross-rank agreement checks go through ``_consistency``.

API
---
``MPI``                                   mpi4py.MPI (import guarded by the package)
``DEFAULT_TIMEOUT``                       300.0 seconds
``resolve_comm(comm)``                    comm, or MPI.COMM_WORLD for None; an intracommunicator
``check_timeout(timeout)``                a float > 0 (or math.inf), else ValueError
``wait(requests, timeout, what, comm)``   wait for a request or a list of them, bounded
``wait_any(requests, timeout, what, comm)``  index of a completed request (MPI_Testany), bounded
``blocking(timeout, what, comm, call, *args)``  call(*args) (a blocking MPI call) under the watchdog
``CollectiveTimeout``                     TimeoutError subclass raised by wait()
``allgather_object(obj, comm, timeout, what)``  every rank's picklable obj, in rank order
``bcast_object(obj, comm, root, timeout, what)``  root's picklable obj on every rank
``mpi_datatype(dtype)``                   MPI.FLOAT / MPI.DOUBLE for a NumPy float dtype
``probe_any(comm, timeout, what, source, tag)``  (message, status) of the next matching message
                                          (MPI_Improbe), bounded; for serving loops
``ArraysBuffer(arrays)``                  the memory of several arrays as one message buffer (.spec),
                                          through a derived datatype: nothing packed or copied
``install_excepthook()``                  idempotent; done at package import
"""
import os
import pickle
import sys
import threading
import time
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any, NoReturn, Optional, TypeVar, Union

import numpy as np
import numpy.typing as npt
from mpi4py import MPI as MPI  # re-exported: the algorithms take it from here

DEFAULT_TIMEOUT = 300.0

_T = TypeVar("_T")
#: What mpi4py's buffer arguments take: [array, datatype], [MPI.BOTTOM, count, datatype]...
BufferSpec = list[Any]

# Spin on MPI_Test this long before yielding the core between tests: MPI only
# progresses inside MPI calls, and a collective's peer may need this core.
_SPIN_SECONDS = 2e-3
_YIELD_SECONDS = 0.1     # then sched_yield between tests; after this, sleep 1 ms between tests


class CollectiveTimeout(TimeoutError):
    """An MPI operation did not complete within its timeout; the job is being aborted.

    A pending collective cannot be cancelled, so the communicator is unusable
    afterwards: if this exception reaches the top of the program the excepthook
    aborts the job at once; if it is caught (to log, say) the job aborts when the
    interpreter exits instead of hanging in MPI_Finalize.

    Examples
    --------
    >>> from fastoptim.distributed import CollectiveTimeout
    >>> issubclass(CollectiveTimeout, TimeoutError)
    True
    """


def resolve_comm(comm: Optional[MPI.Intracomm]) -> MPI.Intracomm:
    """`comm`, or MPI.COMM_WORLD for None; it must be an mpi4py intracommunicator."""
    if comm is None:
        return MPI.COMM_WORLD
    if not isinstance(comm, MPI.Intracomm):
        raise TypeError(f"comm must be an mpi4py intracommunicator (MPI.COMM_WORLD or one split "
                        f"from it), got {type(comm).__module__}.{type(comm).__qualname__}")
    if comm == MPI.COMM_NULL:
        raise ValueError("comm is MPI.COMM_NULL")
    return comm


def check_timeout(timeout: float) -> float:
    """A timeout in seconds: a number > 0 (math.inf waits forever)."""
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float, np.integer, np.floating)) \
            or not timeout > 0:
        raise ValueError(f"timeout must be a number of seconds > 0, got {timeout!r}")
    return float(timeout)


def wait(requests: Union[MPI.Request, Sequence[MPI.Request]], timeout: float, what: str,
         comm: Optional[MPI.Comm] = None) -> None:
    """Wait for an MPI request (or a list of them) to complete, for at most `timeout` seconds.

    `what` names the operation for the message ("allreduce of bucket 2 in
    DataParallel.step").  On timeout raises CollectiveTimeout and marks the job
    for abort (see the class).  The first test is immediate, so a request that
    is already complete costs one MPI_Testall.
    """
    pending = [requests] if isinstance(requests, MPI.Request) else list(requests)
    test_all = MPI.Request.Testall
    if not test_all(pending):
        _poll(lambda: (test_all(pending), None), timeout, what, comm)


def wait_any(requests: Sequence[MPI.Request], timeout: float, what: str, comm: Optional[MPI.Comm] = None) -> int:
    """Wait until one of `requests` completes, for at most `timeout` seconds; its index.

    For serving loops (a parameter server waiting for whichever worker pushes
    first).  Inactive requests (MPI.REQUEST_NULL) are ignored; if every request is
    inactive, returns MPI.UNDEFINED at once.  Timeouts as in wait().
    """
    test_any = MPI.Request.Testany
    pending = list(requests)
    index, done = test_any(pending)
    if done:
        return index

    def test() -> tuple[bool, int]:
        index, done = test_any(pending)
        return done, index
    return _poll(test, timeout, what, comm)


def _poll(test: Callable[[], tuple[bool, _T]], timeout: float, what: str, comm: Optional[MPI.Comm]) -> _T:
    """Call test() -> (done, value) until done (then return value), for at most `timeout` s."""
    start = time.monotonic()
    while True:
        done, value = test()
        if done:
            return value
        waited = time.monotonic() - start
        if waited > timeout:
            _timed_out(what, timeout, comm)
        if waited > _YIELD_SECONDS:
            time.sleep(1e-3)
        elif waited > _SPIN_SECONDS:
            os.sched_yield()


def _timed_out(what: str, timeout: float, comm: Optional[MPI.Comm]) -> NoReturn:
    _abort_at_exit(1)
    raise CollectiveTimeout(_timeout_message(what, timeout, comm))


def _timeout_message(what: str, timeout: float, comm: Optional[MPI.Comm]) -> str:
    comm = MPI.COMM_WORLD if comm is None else comm
    return (f"rank {comm.Get_rank()} of {comm.Get_size()} waited {timeout:g} s for {what}: another "
            f"rank is stuck, has died or runs different code; aborting the MPI job "
            f"(a pending collective cannot be cancelled)")


class _Watchdog(threading.Thread):
    """Aborts the MPI job when the blocking call armed in it outlives its deadline.

    Arming is one attribute write (no lock, no wake-up); the thread looks every
    50 ms while armed and every 0.5 s otherwise, so it costs nothing measurable
    and fires within about half a second of the deadline.
    """

    def __init__(self) -> None:
        super().__init__(name="fastoptim.distributed watchdog", daemon=True)
        self.armed: Optional[tuple[float, float, str, Optional[MPI.Comm]]] = None  # (deadline, timeout, what, comm) of the blocking call in progress

    def run(self) -> None:
        while True:
            armed = self.armed
            if armed is not None and time.monotonic() > armed[0]:
                _, timeout, what, comm = armed
                sys.stderr.write(f"fastoptim.distributed.CollectiveTimeout: "
                                 f"{_timeout_message(what, timeout, comm)}\n")
                sys.stderr.flush()
                _abort_at_exit(1)
                MPI.COMM_WORLD.Abort(1)
            time.sleep(0.05 if armed is not None else 0.5)


_watchdog: Optional[_Watchdog] = None


def blocking(timeout: float, what: str, comm: Optional[MPI.Comm], call: Callable[..., _T], *args: Any) -> _T:
    """call(*args), a blocking MPI call, aborting the job if it outlives `timeout` seconds."""
    global _watchdog
    watchdog = _watchdog
    if watchdog is None:
        watchdog = _watchdog = _Watchdog()
        watchdog.start()
    watchdog.armed = (time.monotonic() + timeout, timeout, what, comm)
    try:
        return call(*args)
    finally:
        watchdog.armed = None


def _abort_at_exit(status: int) -> None:
    """Make mpi4py call MPI_Abort(status) instead of MPI_Finalize when the interpreter exits."""
    try:
        from mpi4py import run
        run.set_abort_status(status)
    except Exception:  # pragma: no cover - an older mpi4py: the excepthook still aborts
        pass


def mpi_datatype(dtype: npt.DTypeLike) -> MPI.Datatype:
    """The MPI datatype of a NumPy float32/float64 dtype."""
    dtype = np.dtype(dtype)
    if dtype == np.float32:
        return MPI.FLOAT
    if dtype == np.float64:
        return MPI.DOUBLE
    raise TypeError(f"no MPI datatype for {dtype}; fastoptim.distributed moves float32 and float64")


def probe_any(comm: MPI.Comm, timeout: float, what: str, source: int = MPI.ANY_SOURCE,
              tag: int = MPI.ANY_TAG) -> tuple[MPI.Message, MPI.Status]:
    """The next message matching (source, tag), as (MPI.Message, MPI.Status), for at most
    `timeout` seconds (a matched probe, MPI_Improbe: receive it with message.Irecv).

    For serving loops that take whichever peer sends first: messages of one
    sender are probed in the order it sent them, whatever their tags.
    """
    status = MPI.Status()
    message = comm.Improbe(source, tag, status)
    if message is None:
        def test() -> tuple[bool, Optional[MPI.Message]]:
            probed = comm.Improbe(source, tag, status)
            return probed is not None, probed
        message = _poll(test, timeout, what, comm)
    assert message is not None
    return message, status


class ArraysBuffer:
    """The memory of several C-contiguous float arrays as one MPI message buffer.

    ``spec`` is what mpi4py's Send/Recv/Isend/Irecv/Ibcast take: the array
    itself when there is one, else MPI.BOTTOM with a struct datatype of the
    arrays' absolute addresses, so one message reads or writes the arrays in
    place (a shard's pieces of several params, say) and nothing is packed by
    us.  Empty arrays are left out.  Keep the object (it keeps the arrays)
    while a message uses it; free() releases the datatype.
    """

    def __init__(self, arrays: Sequence[npt.NDArray[Any]]) -> None:
        self.arrays = [a for a in arrays if a.size]
        self.nbytes = sum(a.nbytes for a in self.arrays)
        self._datatype: Optional[MPI.Datatype] = None
        self.spec: BufferSpec
        if not self.arrays:
            self.spec = [np.empty(0), MPI.DOUBLE]
        elif len(self.arrays) == 1:
            self.spec = [self.arrays[0], mpi_datatype(self.arrays[0].dtype)]
        else:
            self._datatype = MPI.Datatype.Create_struct(
                [a.size for a in self.arrays], [MPI.Get_address(a) for a in self.arrays],
                [mpi_datatype(a.dtype) for a in self.arrays]).Commit()
            self.spec = [MPI.BOTTOM, 1, self._datatype]

    def free(self) -> None:
        """Release the derived datatype (a no-op without one, or once MPI is finalized)."""
        if self._datatype is not None and not MPI.Is_finalized():
            self._datatype.Free()
        self._datatype = None


def allgather_object(obj: Any, comm: MPI.Comm, timeout: float, what: str) -> list[Any]:
    """Every rank's picklable `obj`, in rank order, through non-blocking collectives
    (byte counts, then the pickles), so a missing rank times out instead of hanging."""
    data = np.frombuffer(pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL), dtype=np.uint8)
    size = comm.Get_size()
    counts = np.zeros(size, dtype=np.int64)
    wait(comm.Iallgather(np.array([data.size], dtype=np.int64), counts), timeout,
         f"the sizes of {what}", comm)
    displs = np.zeros(size, dtype=np.int64)
    np.cumsum(counts[:-1], out=displs[1:])
    everything = np.empty(int(counts.sum()), dtype=np.uint8)
    wait(comm.Iallgatherv(data, [everything, counts, displs, MPI.BYTE]), timeout, what, comm)
    return [pickle.loads(everything[d:d + c].tobytes()) for d, c in zip(displs, counts)]


def bcast_object(obj: _T, comm: MPI.Comm, root: int, timeout: float, what: str) -> _T:
    """Root's picklable `obj` on every rank, through non-blocking collectives."""
    rank = comm.Get_rank()
    data = np.frombuffer(pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL), dtype=np.uint8) \
        if rank == root else None
    count = np.array([0 if data is None else data.size], dtype=np.int64)
    wait(comm.Ibcast(count, root=root), timeout, f"the size of {what}", comm)
    if rank != root:
        data = np.empty(int(count[0]), dtype=np.uint8)
    assert data is not None
    wait(comm.Ibcast(data, root=root), timeout, what, comm)
    return obj if rank == root else pickle.loads(data.tobytes())


# ---- abort the job on an uncaught exception --------------------------------------

_previous_excepthook: Callable[[type[BaseException], BaseException, Optional[TracebackType]], Any] = sys.excepthook


def _abort_excepthook(exc_type: type[BaseException], exc: BaseException, tb: Optional[TracebackType]) -> None:
    """Print the traceback as usual, then abort every rank of the job (MPI_Abort)."""
    _previous_excepthook(exc_type, exc, tb)
    if not MPI.Is_initialized() or MPI.Is_finalized() or MPI.COMM_WORLD.Get_size() == 1:
        return  # a lone process has no peer to leave hanging: exit as Python would
    status = 130 if issubclass(exc_type, KeyboardInterrupt) else 1
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
    sys.stderr.write(f"fastoptim.distributed: uncaught {exc_type.__name__} on rank "
                     f"{MPI.COMM_WORLD.Get_rank()}; aborting the MPI job\n")
    sys.stderr.flush()
    _abort_at_exit(status)
    MPI.COMM_WORLD.Abort(status)


def install_excepthook() -> None:
    """Make an uncaught exception on any rank abort the whole MPI job (idempotent).

    This is what ``python -m mpi4py script.py`` does; without it, a rank that
    dies with an exception leaves its peers waiting in their next collective.
    The previous hook (the traceback printer) still runs first.
    """
    global _previous_excepthook
    if sys.excepthook is _abort_excepthook:
        return
    _previous_excepthook = sys.excepthook
    sys.excepthook = _abort_excepthook

