"""Rank-side checks of fastoptim.distributed's foundation, run under mpiexec by
test_distributed_foundation.py (see mpi_harness)."""
import numpy as np
from mpi4py import MPI

import fastoptim.distributed as fd
from fastoptim.distributed import _mpi
from mpi_harness import check, main

COMM = MPI.COMM_WORLD
RANK, SIZE = COMM.Get_rank(), COMM.Get_size()
TIMEOUT = 30.0


def expect_value_error(call, *fragments):
    try:
        call()
    except ValueError as error:
        message = str(error)
        for fragment in fragments:
            assert fragment in message, f"{fragment!r} not in {message!r}"
        return message
    raise AssertionError("no ValueError")


@check
def broadcast_list_and_dict_from_every_root():
    for root in range(SIZE):
        rng = np.random.default_rng(RANK)
        params = [rng.standard_normal((3, 4)), rng.standard_normal(5).astype(np.float32), np.zeros(0)]
        expected = [np.random.default_rng(root).standard_normal((3, 4)),
                    np.random.default_rng(root).standard_normal(17)[12:].astype(np.float32), np.zeros(0)]
        ids = [id(p) for p in params]
        assert fd.broadcast_params(params, root=root, timeout=TIMEOUT) is params
        assert [id(p) for p in params] == ids
        np.testing.assert_array_equal(params[0], expected[0])
        named = {"w": np.full(7, float(RANK)), "b": np.full((), float(RANK))}
        fd.broadcast_params(named, comm=COMM, root=root, timeout=TIMEOUT)
        assert (named["w"] == root).all() and named["b"] == root


@check
def broadcast_rejects_a_bad_root_on_every_rank():
    expect_value_error(lambda: fd.broadcast_params([np.zeros(2)], root=SIZE), "root must be a rank")


@check
def a_different_param_count_is_named_on_every_rank():
    params = [np.zeros(3)] * 2 + ([np.zeros(1)] if RANK == SIZE - 1 else [])
    params = [p.copy() for p in params]
    expect_value_error(lambda: fd.broadcast_params(params, timeout=TIMEOUT),
                       "model differs across ranks", f"rank 0 has 2 params but rank {SIZE - 1} has 3")


@check
def a_different_shape_is_named_on_every_rank():
    params = {"w": np.zeros((4, 1) if RANK == 1 else 4), "b": np.zeros(1)}
    expect_value_error(lambda: fd.broadcast_params(params, timeout=TIMEOUT),
                       "params['w'] has shape (4,) on rank 0 but (4, 1) on rank 1")


@check
def a_different_dtype_is_named_on_every_rank():
    params = [np.zeros(2), np.zeros(3, dtype=np.float32 if RANK == 1 else np.float64)]
    expect_value_error(lambda: fd.broadcast_params(params, timeout=TIMEOUT),
                       "params[1] has dtype float64 on rank 0 but float32 on rank 1")


@check
def different_names_are_named_on_every_rank():
    params = {"w" if RANK == 0 else "weight": np.zeros(2)}
    expect_value_error(lambda: fd.broadcast_params(params, timeout=TIMEOUT),
                       "param 'w' on rank 0 is 'weight' on rank 1")


@check
def object_collectives():
    everyone = _mpi.allgather_object({"rank": RANK, "blob": "x" * (1000 * RANK)}, COMM, TIMEOUT, "test")
    assert [e["rank"] for e in everyone] == list(range(SIZE))
    assert [len(e["blob"]) for e in everyone] == [1000 * r for r in range(SIZE)]
    got = _mpi.bcast_object(("from", RANK) if RANK == SIZE - 1 else None, COMM, SIZE - 1, TIMEOUT, "test")
    assert got == ("from", SIZE - 1)


@check
def wait_returns_for_completed_requests():
    buffer = np.full(10, float(RANK + 1))
    _mpi.wait(COMM.Iallreduce(MPI.IN_PLACE, buffer, op=MPI.SUM), TIMEOUT, "allreduce", COMM)
    assert (buffer == SIZE * (SIZE + 1) / 2).all()
    _mpi.wait([COMM.Ibarrier(), COMM.Ibarrier()], TIMEOUT, "two barriers", COMM)


@check
def wait_any_returns_the_completed_request():
    if RANK == 0:
        buffers = [np.zeros(1) for _ in range(SIZE - 1)]
        requests = [COMM.Irecv(b, source=r, tag=7) for b, r in zip(buffers, range(1, SIZE))]
        seen = set()
        for _ in range(SIZE - 1):
            index = _mpi.wait_any(requests, TIMEOUT, "a message from any worker", COMM)
            seen.add(index)
            assert buffers[index][0] == index + 1
        assert seen == set(range(SIZE - 1))
        assert _mpi.wait_any(requests, TIMEOUT, "nothing", COMM) == MPI.UNDEFINED
    else:
        _mpi.wait(COMM.Isend(np.full(1, float(RANK)), dest=0, tag=7), TIMEOUT, "a send", COMM)


@check
def arrays_buffer_and_probe_any():
    # A message straight from several arrays' memory into several others', probed by tag.
    def model(value):
        return [np.full(5, value), np.full(3, value, dtype=np.float32), np.zeros(0), np.full((2, 2), value)]
    if RANK == 0:
        got = {}
        for _ in range(SIZE - 1):
            message, status = _mpi.probe_any(COMM, TIMEOUT, "a message from any rank", tag=11)
            arrays = model(-1.0)
            buffer = _mpi.ArraysBuffer(arrays)
            assert status.Get_count(MPI.BYTE) == buffer.nbytes == 5 * 8 + 3 * 4 + 4 * 8
            _mpi.wait(message.Irecv(buffer.spec), TIMEOUT, "the probed message", COMM)
            buffer.free()
            got[status.Get_source()] = arrays
        for source, arrays in got.items():
            for a, b in zip(arrays, model(float(source))):
                np.testing.assert_array_equal(a, b)
                assert a.dtype == b.dtype
        single = _mpi.ArraysBuffer([np.zeros(0), np.arange(4.0)])
        assert single.spec[0] is single.arrays[0] and single.nbytes == 32
    else:
        buffer = _mpi.ArraysBuffer(model(float(RANK)))
        _mpi.wait(COMM.Isend(buffer.spec, dest=0, tag=11), TIMEOUT, "a send", COMM)
        buffer.free()


if __name__ == "__main__":
    main()
