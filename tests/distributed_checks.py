"""Rank-side checks of fastoptim.distributed, run under mpiexec by test_distributed.py
(one launch per rank count runs them all; see mpi_harness)."""
import numpy as np
from mpi4py import MPI

import fastoptim
import fastoptim.distributed as fd
from fastoptim import schedules
from fastoptim._registry import SPECS
from fastoptim.distributed import _mpi
from fastoptim.distributed.zero import _per_tensor
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


@check
def replica_sum_gives_every_rank_the_same_bits():
    """ReplicaSum: one MPI_Allreduce on 2 ranks (each element a + b, which is b + a), a
    ShardedSum (each element added up once, by its owner) on more; the same bits on every
    rank either way, also for signed zeros, subnormals, infinities and values whose sum
    depends on the order of additions."""
    from fastoptim.distributed._collectives import ReplicaSum
    for dtype in (np.float32, np.float64):
        rng = np.random.default_rng(RANK)
        tiny = np.finfo(dtype).smallest_subnormal
        special = np.array([0.0, -0.0, tiny, -tiny, 3 * tiny, np.inf, 1e30, -1e30, 1.0, 1e-8], dtype=dtype)
        # large values of alternating sign: their sum depends on the order of additions
        values = np.concatenate([special, (rng.standard_normal(100_003) * 10.0 ** rng.integers(-8, 9, 100_003))
                                 .astype(dtype)])
        mine = values.copy()
        total = ReplicaSum(mine, COMM)
        assert total.allreduce == (SIZE == 2) and (total.sharded is None) == (SIZE == 2)
        _mpi.blocking(TIMEOUT, "the test's sum", COMM, total.run)
        assert_identical_on_every_rank([mine], f"the {np.dtype(dtype).name} sum")
        everyone = _mpi.allgather_object(values, COMM, TIMEOUT, "the values")
        if SIZE == 2:  # exactly the IEEE sum, in either order
            np.testing.assert_array_equal(mine, everyone[0] + everyone[1])
            np.testing.assert_array_equal(mine, everyone[1] + everyone[0])
        else:
            finite = np.isfinite(mine)  # two roundings at most, each within eps of the sum of magnitudes
            exact = np.sum(everyone, axis=0, dtype=np.longdouble)[finite]
            bound = 2 * np.finfo(dtype).eps * np.sum(np.abs(everyone), axis=0, dtype=np.longdouble)[finite]
            assert (np.abs(mine[finite] - exact) <= bound).all()
            assert (mine[~finite] == np.inf).all() and (~finite).sum() == 1
        empty = np.zeros(0, dtype=dtype)
        _mpi.blocking(TIMEOUT, "an empty sum", COMM, ReplicaSum(empty, COMM).run)


# ---- a model trained on data sharded over the ranks ------------------------------------------

STEPS = 20           # steps per run: errors that grow with steps show up
BATCH = 4            # samples per rank per step


def make_params(kind, seed=0, dtype=np.float64, lr=None):
    """W (6, 4), b (4,), s () in one of three structures; seed sets their values."""
    rng = np.random.default_rng(seed)
    W, b, s = rng.standard_normal((6, 4)), rng.standard_normal(4), np.array(rng.standard_normal())
    W, b, s = W.astype(dtype), b.astype(dtype), s.astype(dtype)
    if kind == "dict":
        return {"W": W, "b": b, "s": s}
    if kind == "list":
        return [W, b, s]
    return [{"params": [W]}, {"params": [b, s], **({} if lr is None else {"lr": lr / 2})}]


def arrays_of(params):
    """The arrays of params (or of grads, or a center) in any structure, in flat order."""
    if isinstance(params, dict):
        return list(params.values())
    if isinstance(params[0], dict):
        return [a for g in params for a in arrays_of(g["params"] if "params" in g else g)]
    if isinstance(params[0], list):
        return [a for g in params for a in g]
    return list(params)


def shaped(kind, grads):
    return dict(zip("Wbs", grads)) if kind == "dict" else grads


def batch(t, ranks):
    """Step t's batch of ranks * BATCH samples (the same on every rank)."""
    rng = np.random.default_rng(1000 + t)
    return rng.standard_normal((ranks * BATCH, 6)), rng.standard_normal((ranks * BATCH, 4))


def loss_grads(arrays, X, Y):
    """Grads of the mean over the samples of 0.5 |X W + b - Y|^2 + 0.5 s^2 (1 + |err|^2 / 4):
    means of per-sample terms, so the mean over equal shards is the whole batch's."""
    W, b, s = arrays
    err = X @ W + b - Y
    return [(X.T @ err / len(X)).astype(W.dtype), err.mean(axis=0).astype(b.dtype),
            np.asarray(s * (1 + (err ** 2).sum(axis=1).mean() / 4), dtype=s.dtype)]


def local_rows(X, rank=RANK):
    return X[rank * BATCH:(rank + 1) * BATCH]


def assert_close(ours, reference, tol=1e-12, what="params"):
    for k, (a, b) in enumerate(zip(ours, reference)):
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol, err_msg=f"{what}[{k}]")


def assert_identical_on_every_rank(arrays, what="params"):
    everyone = _mpi.allgather_object([np.array(a) for a in arrays], COMM, TIMEOUT, what)
    for rank, theirs in enumerate(everyone):
        for k, (a, b) in enumerate(zip(everyone[0], theirs)):
            assert np.array_equal(a, b), f"{what}[{k}] on rank {rank} differs from rank 0's"


def option_groups(spec, seed, named):
    """One param group (W, b, s) per option set of `spec`, so one optimizer runs them all
    (and ZeRO's shards cut across groups with different options and state slots)."""
    groups = []
    for k, options in enumerate(spec.option_sets()):
        arrays = arrays_of(make_params("list", seed=1000 * seed + k))
        groups.append({**options, "params": dict(zip((f"W{k}", f"b{k}", f"s{k}"), arrays)) if named else arrays})
    return groups


def group_grads(groups, X, Y):
    return [g for group in groups for g in loss_grads(arrays_of(group["params"]), X, Y)]


def train_every_option_set(spec, named, wrap):
    """One process on whole batches, and this rank (wrapped) on its shard of them."""
    ref_params = option_groups(spec, 0, named)
    ref = spec.cls(ref_params)
    params = option_groups(spec, RANK, named)  # the wrapper copies rank 0's
    wrapped = wrap(params)
    for t in range(STEPS):
        X, Y = batch(t, SIZE)
        wrapped.step(group_grads(params, local_rows(X), local_rows(Y)))
        ref.step(group_grads(ref_params, X, Y))
    return ref, arrays_of(ref_params), wrapped, arrays_of(params)


def train_pair(spec, options, kind, wrap, steps=STEPS, start=0):
    """Train one process on whole batches and this rank, wrapped, on its shard of them."""
    ref_params = make_params(kind, seed=0, lr=options.get("lr"))
    ref = spec.cls(ref_params, **options)
    params = make_params(kind, seed=RANK, lr=options.get("lr"))  # the wrapper copies rank 0's
    wrapped = wrap(params, options)
    run(ref, ref_params, wrapped, params, kind, steps, start)
    return ref, ref_params, wrapped, params


def run(ref, ref_params, wrapped, params, kind, steps, start=0):
    for t in range(start, start + steps):
        X, Y = batch(t, SIZE)
        wrapped.step(shaped(kind, loss_grads(arrays_of(params), local_rows(X), local_rows(Y))))
        if ref is not None:
            ref.step(shaped(kind, loss_grads(arrays_of(ref_params), X, Y)))


@check
def data_parallel_equals_one_process_for_every_optimizer_and_replicas_are_identical():
    for n, spec in enumerate(SPECS):
        bucket_bytes = (1024, 1 << 20)[n % 2]  # a few buckets (each its own step), or one
        ref, ref_arrays, dp, arrays = train_every_option_set(
            spec, n % 2 == 0, lambda p: fd.DataParallel(spec.cls(p), timeout=TIMEOUT, bucket_bytes=bucket_bytes))
        assert len(dp.buckets) > 1 if bucket_bytes == 1024 else len(dp.buckets) == 1
        assert_close(arrays, ref_arrays, what=spec.name)
        assert_identical_on_every_rank(arrays)


@check
def data_parallel_overlap_gives_the_bits_of_bucket_after_bucket():
    """overlap=True (bucket k steps in a thread while bucket k + 1 is reduced) and
    overlap=False (reduce, step, bucket after bucket): the same params and state, bit for
    bit, for every optimizer, with a schedule and with grads copied in or in the buckets."""
    for n, spec in enumerate(SPECS):
        runs = []
        for overlap in (True, False):
            wrapped = []

            def wrap(p, overlap=overlap):
                wrapped.append(fd.DataParallel(spec.cls(p), timeout=TIMEOUT, bucket_bytes=200, overlap=overlap))
                return wrapped[-1]
            _, _, dp, arrays = train_every_option_set(spec, n % 2 == 0, wrap)
            assert len(dp.buckets) > 2 and dp.overlap is overlap
            assert (dp._stepper is not None) is overlap  # the pipelined path ran
            runs.append((arrays, dp.state_dict()))
        (ours, state), (theirs, expected) = runs
        for k, (a, b) in enumerate(zip(ours, theirs)):
            assert np.array_equal(a, b), f"{spec.name}: params[{k}] differ with overlap"
        for i, entry in expected["state"].items():
            for name, value in entry.items():
                assert np.array_equal(np.asarray(state["state"][i][name]), np.asarray(value)), (spec.name, i, name)
        assert_identical_on_every_rank(ours)
    params = {"w": np.zeros(300), "b": np.zeros(3)}
    dp = fd.DataParallel(fastoptim.SGD(params, lr=schedules.cosine(0.1, total_steps=10)), timeout=TIMEOUT,
                         bucket_bytes=64)
    plain = {"w": np.zeros(300), "b": np.zeros(3)}
    ref = fastoptim.SGD(plain, lr=schedules.cosine(0.1, total_steps=10))
    buffers = dp.grad_buffers()
    mean_rank = (SIZE - 1) / 2
    for t in range(5):
        buffers["w"][...], buffers["b"][...] = RANK + t + 1.0, -RANK - 1.0
        dp.step(buffers)
        ref.step({"w": np.full(300, mean_rank + t + 1.0), "b": np.full(3, -mean_rank - 1.0)})
    assert dp.optimizer.step_count == 5 and dp._stepper is not None
    for k in params:
        np.testing.assert_allclose(params[k], plain[k], rtol=1e-15, atol=0)


@check
def data_parallel_overlap_passes_a_step_error_on_after_the_reduction():
    """A step that raises in the stepping thread raises on the calling thread, after the
    reduction it overlapped (so no rank is left inside a collective), and the next step works."""
    params = [np.zeros(100), np.zeros(100)]
    dp = fd.DataParallel(fastoptim.Adam(params, lr=0.1), timeout=TIMEOUT, bucket_bytes=8)
    assert len(dp.buckets) == 2
    dp.param_groups[0]["lr"] = -1.0
    expect_value_error(lambda: dp.step([np.ones(100), np.ones(100)]), "lr")
    dp.param_groups[0]["lr"] = 0.1
    dp.step([np.ones(100), np.ones(100)])
    assert_identical_on_every_rank(params)
    assert (params[0] < 0).all() and (params[1] < 0).all()


@check
def zero_equals_one_process_for_every_optimizer_and_shards_its_state():
    refused = set()
    for n, spec in enumerate(SPECS):
        reason = _per_tensor(spec.cls, step_scalars=True)
        if reason:
            # ZeRO's shards cut tensors: it refuses a per-tensor rule (DataParallel runs it, above)
            refused.add(spec.cls.__name__)
            try:
                fd.ZeroRedundancyOptimizer(make_params("list"), spec.cls, timeout=TIMEOUT)
            except ValueError as error:
                assert f"{spec.cls.__name__}'s is per tensor ({reason}): use DataParallel" in str(error)
            else:
                raise AssertionError(f"ZeroRedundancyOptimizer took {spec.cls.__name__} ({reason})")
            continue
        ref, ref_arrays, zero, arrays = train_every_option_set(
            spec, n % 2 == 1, lambda p: fd.ZeroRedundancyOptimizer(p, spec.cls, timeout=TIMEOUT))
        assert_close(arrays, ref_arrays, what=spec.name)
        assert_identical_on_every_rank(arrays)
        full, expected = zero.state_dict(), ref.state_dict()
        assert full["step_count"] == expected["step_count"] == STEPS
        assert full["param_groups"] == expected["param_groups"], spec.name
        assert full["state"].keys() == expected["state"].keys(), spec.name
        for i, entry in expected["state"].items():
            assert full["state"][i].keys() == entry.keys(), (spec.name, i)
            for name, value in entry.items():
                if name == "step":
                    assert full["state"][i][name] == value
                else:
                    assert_close([full["state"][i][name]], [value], what=f"{spec.name} state[{i}][{name!r}]")
        per_rank = _mpi.allgather_object(zero.local_state_nbytes(), COMM, TIMEOUT, "state bytes")
        scalars = {slot.name for slot in getattr(spec.cls, "rule").state if slot.scalar}  # copied into every piece
        total = sum(v.nbytes for s in ref.state.values() for k, v in s.items() if k != "step" and k not in scalars)
        assert sum(per_rank) == total, (per_rank, total)
    # the per-tensor rules of the registry today; NAdam's and ASGD's scalars follow from the step alone
    assert "LAMB" in refused and not {"NAdam", "ASGD"} & refused, refused


@check
def zero_equals_data_parallel_with_lr_schedules_and_mixed_dtypes():
    """float64 and float32 params (two flat spaces), a schedule on one group."""
    def model(seed):
        rng = np.random.default_rng(seed)
        return [{"params": [rng.standard_normal((7, 5)), rng.standard_normal(9).astype(np.float32)],
                 "lr": schedules.cosine(0.05, total_steps=30)},
                {"params": [rng.standard_normal(3).astype(np.float32), rng.standard_normal(())]}]
    zp, dp_params = model(RANK), model(RANK + 7)
    zero = fd.ZeroRedundancyOptimizer(zp, fastoptim.AdamW, timeout=TIMEOUT, lr=0.01, weight_decay=0.1)
    dp = fd.DataParallel(fastoptim.AdamW(dp_params, lr=0.01, weight_decay=0.1), timeout=TIMEOUT, bucket_bytes=40)
    assert len(dp.buckets) > 2
    np.testing.assert_array_equal(arrays_of(dp_params)[0], np.random.default_rng(7).standard_normal((7, 5)))
    for a, b in zip(arrays_of(dp_params), arrays_of(model(0))):
        np.copyto(a, b)  # the same start as ZeRO's (rank 0's model(0))
    for a, b in zip(arrays_of(zp), arrays_of(model(0))):
        np.testing.assert_array_equal(a, b)
    for t in range(STEPS):
        grads = [np.random.default_rng(100 * t + RANK).standard_normal(a.shape).astype(a.dtype)
                 for a in arrays_of(zp)]
        zero.step(grads)
        dp.step([g.copy() for g in grads])
    assert dp.optimizer.step_count == zero.optimizer.step_count == STEPS
    assert dp.param_groups[0]["lr"] == zero.param_groups[0]["lr"] == schedules.cosine(0.05, total_steps=30)(STEPS - 1)
    assert_identical_on_every_rank(arrays_of(zp))
    for a, b in zip(arrays_of(zp), arrays_of(dp_params)):
        tol = 1e-12 if a.dtype == np.float64 else 1e-6
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol)


@check
def zero_gathers_straight_into_params_laid_end_to_end():
    """A model allocated as views of one array: the all-gather lands in the params
    (no copy in or out) with the same bits as separate arrays."""
    shapes = [(7, 5), (0,), (), (9,), (3, 4)]
    sizes = [int(np.prod(s)) for s in shapes]
    arena = np.random.default_rng(0).standard_normal(sum(sizes) + 1)
    bounds = np.cumsum([0] + sizes)
    end_to_end = [arena[a:b].reshape(s) for a, b, s in zip(bounds[:-1], bounds[1:], shapes)]
    separate = [p.copy() for p in end_to_end]
    zeros = [fd.ZeroRedundancyOptimizer(p, fastoptim.Adam, timeout=TIMEOUT, lr=0.01) for p in (end_to_end, separate)]
    gather_of = [z._gathers[0] for z in zeros] if SIZE > 1 else []
    if gather_of:
        assert not gather_of[0].own and not gather_of[0].others and np.shares_memory(gather_of[0].flat, arena)
        assert gather_of[1].own or gather_of[1].others
    for t in range(5):
        grads = [np.random.default_rng(10 * t + RANK).standard_normal(s) for s in shapes]
        for z in zeros:
            z.step(grads)
    for a, b in zip(end_to_end, separate):
        np.testing.assert_array_equal(a, b)
    assert_identical_on_every_rank(end_to_end)
    assert arena[-1] == np.random.default_rng(0).standard_normal(sum(sizes) + 1)[-1]


@check
def grad_buffers_are_used_in_place():
    for reduced_in_place, wrap in (
            (True, lambda p: fd.DataParallel(fastoptim.Adam(p, lr=0.1), timeout=TIMEOUT, bucket_bytes=100)),
            (False, lambda p: fd.ZeroRedundancyOptimizer(p, fastoptim.Adam, timeout=TIMEOUT, lr=0.1))):
        params, copied = make_params("dict"), make_params("dict")
        a, b = wrap(params), wrap(copied)
        buffers = a.grad_buffers()
        assert list(buffers) == ["W", "b", "s"] and all(buffers[k].shape == params[k].shape for k in buffers)
        for t in range(5):
            X, Y = batch(t, SIZE)
            grads = loss_grads(arrays_of(params), local_rows(X), local_rows(Y))
            for k, g in zip("Wbs", grads):
                buffers[k][...] = g
            a.step(buffers)
            b.step(dict(zip("Wbs", grads)))
            for k in "Wbs":
                np.testing.assert_array_equal(params[k], copied[k])
        if reduced_in_place:  # DataParallel leaves the sum of the ranks' grads in its buckets (the kernel divides)
            everyones = _mpi.allgather_object(grads, COMM, TIMEOUT, "grads")
            np.testing.assert_allclose(buffers["b"], np.sum([g[1] for g in everyones], axis=0), rtol=1e-14)


@check
def sum_instead_of_mean():
    params = [np.zeros(5)]
    dp = fd.DataParallel(fastoptim.SGD(params, lr=1.0), average=False, timeout=TIMEOUT)
    dp.step([np.full(5, RANK + 1.0)])
    np.testing.assert_array_equal(params[0], -SIZE * (SIZE + 1) / 2)
    zp = [np.zeros(5)]
    zero = fd.ZeroRedundancyOptimizer(zp, fastoptim.SGD, average=False, timeout=TIMEOUT, lr=1.0)
    zero.step([np.full(5, RANK + 1.0)])
    np.testing.assert_array_equal(zp[0], -SIZE * (SIZE + 1) / 2)


@check
def wrappers_work_on_a_split_communicator():
    sub = COMM.Split(color=RANK % 2, key=RANK)   # even and odd ranks train apart
    members = list(range(RANK % 2, SIZE, 2))
    params, zp, ep = [np.zeros(4)], [np.zeros(4)], [np.zeros(4)]
    dp = fd.DataParallel(fastoptim.SGD(params, lr=1.0), comm=sub, timeout=TIMEOUT)
    zero = fd.ZeroRedundancyOptimizer(zp, fastoptim.SGD, comm=sub, timeout=TIMEOUT, lr=1.0)
    ea = fd.ElasticAveraging(fastoptim.SGD(ep, lr=1.0), comm=sub, period=1, alpha=0.5, timeout=TIMEOUT)
    grad = np.full(4, RANK + 1.0)
    dp.step([grad.copy()])
    zero.step([grad.copy()])
    ea.step([grad.copy()])                   # the center moves by nothing: every worker is at 0
    mean = np.mean([r + 1.0 for r in members])
    np.testing.assert_array_equal(params[0], -mean)
    np.testing.assert_array_equal(zp[0], -mean)
    np.testing.assert_array_equal(ep[0], -(RANK + 1.0))
    assert fd.broadcast_params([np.full(2, float(RANK))], comm=sub, root=len(members) - 1)[0][0] == members[-1]
    sub.Free()


@check
def checkpoints_round_trip_between_wrappers_and_plain_optimizers():
    # NAdam's mu_product and ASGD's eta and mu: per-tensor scalars every piece keeps a copy of
    for name, options in (("adam", dict(lr=0.05, amsgrad=True)),
                          ("nadam", dict(lr=0.05, weight_decay=0.1, decoupled_weight_decay=True)),
                          ("asgd", dict(lr=0.05, t0=5.0))):
        wrappers = checkpoint_round_trip(next(s for s in SPECS if s.name == name), options)
        if name == "adam":
            zero2, ref = wrappers
    # A load that does not fit changes nothing.
    before = zero2.optimizer.state_dict()
    bad = ref.state_dict()
    bad["state"][0]["exp_avg"] = np.zeros((2, 2))
    expect_value_error(lambda: zero2.load_state_dict(bad), "loaded state['W']['exp_avg'] has shape (2, 2)")
    after = zero2.optimizer.state_dict()
    for i in before["state"]:
        np.testing.assert_array_equal(before["state"][i]["exp_avg"], after["state"][i]["exp_avg"])


def checkpoint_round_trip(spec, options):
    # The uninterrupted reference: one process, 2 * STEPS steps.
    ref, ref_params, zero, params = train_pair(
        spec, options, "dict", lambda p, o: fd.ZeroRedundancyOptimizer(p, spec.cls, timeout=TIMEOUT, **o))
    saved = zero.state_dict()
    for i, entry in ref.state_dict()["state"].items():
        for name, value in entry.items():  # a per-tensor scalar: the same value and dtype as one process's
            if np.ndim(value) == 0 and name != "step":
                assert saved["state"][i][name].dtype == value.dtype, (spec.name, name)
                assert_close([saved["state"][i][name]], [value], what=f"{spec.name} state[{i}][{name!r}]")
    per_rank = _mpi.allgather_object(zero.local_state_nbytes(), COMM, TIMEOUT, "state bytes")
    assert max(per_rank) - min(per_rank) <= 3 * 8, per_rank  # 3 slots; shards differ by one element at most
    # ZeRO -> plain optimizer (one process on whole batches) continues like the reference
    plain_params = {k: v.copy() for k, v in params.items()}
    plain = spec.cls(plain_params, **options)
    plain.load_state_dict(saved)
    # plain -> ZeRO (fresh wrapper) and plain -> DataParallel continue like it too
    zero2_params = {k: v.copy() for k, v in params.items()}
    zero2 = fd.ZeroRedundancyOptimizer(zero2_params, spec.cls, timeout=TIMEOUT, **options)
    zero2.load_state_dict(ref.state_dict())
    dp_params = {k: v.copy() for k, v in params.items()}
    dp = fd.DataParallel(spec.cls(dp_params, **options), timeout=TIMEOUT)
    dp.load_state_dict(saved)
    assert dp.state_dict()["step_count"] == STEPS
    for t in range(STEPS, 2 * STEPS):
        X, Y = batch(t, SIZE)
        for wrapper, p in ((zero, params), (zero2, zero2_params), (dp, dp_params)):
            wrapper.step(shaped("dict", loss_grads(arrays_of(p), local_rows(X), local_rows(Y))))
        ref.step(shaped("dict", loss_grads(arrays_of(ref_params), X, Y)))
        plain.step(shaped("dict", loss_grads(arrays_of(plain_params), X, Y)))
    for p in (params, zero2_params, dp_params, plain_params):
        assert_close(arrays_of(p), arrays_of(ref_params))
    return zero2, ref


@check
def zero_refuses_per_tensor_rules_and_non_optimizers():
    class PerTensorAdam(fastoptim.Adam):
        elementwise = False
    try:
        fd.ZeroRedundancyOptimizer([np.zeros(3)], PerTensorAdam, timeout=TIMEOUT)
    except ValueError as error:
        assert "PerTensorAdam's is per tensor (elementwise = False): use DataParallel" in str(error)
    else:
        raise AssertionError("no ValueError")
    try:  # 8-bit blocks would straddle the shards
        fd.ZeroRedundancyOptimizer([np.zeros(5000, np.float32)], fastoptim.Adam8bit, timeout=TIMEOUT)
    except ValueError as error:
        assert "Adam8bit's 8-bit blocks would straddle them" in str(error)
    else:
        raise AssertionError("ZeroRedundancyOptimizer took Adam8bit")
    for python_level in (fastoptim.Muon, fastoptim.LBFGS):
        try:
            fd.ZeroRedundancyOptimizer([np.zeros((3, 2))], python_level, timeout=TIMEOUT)
        except ValueError as error:
            assert "it steps whole tensors at the Python level): use DataParallel" in str(error)
        else:
            raise AssertionError(f"ZeroRedundancyOptimizer took {python_level.__name__}")
    try:
        fd.DataParallel(fastoptim.LBFGS([np.zeros(3)]), timeout=TIMEOUT)
    except TypeError as error:
        assert "LBFGS steps with a closure" in str(error)
    else:
        raise AssertionError("DataParallel took LBFGS")
    try:
        fd.ZeroRedundancyOptimizer([np.zeros(3)], "Adam", timeout=TIMEOUT)
    except TypeError as error:
        assert "fastoptim optimizer class" in str(error)
    else:
        raise AssertionError("no TypeError")


@check
def zero_with_more_ranks_than_elements():
    params = [np.arange(2.0) + RANK]   # shard of rank 2 (with 3 ranks) is empty
    zero = fd.ZeroRedundancyOptimizer(params, fastoptim.Adam, timeout=TIMEOUT, lr=0.1)
    for _ in range(3):
        zero.step([np.ones(2)])
    ref_params = [np.arange(2.0)]
    ref = fastoptim.Adam(ref_params, lr=0.1)
    for _ in range(3):
        ref.step([np.ones(2)])
    np.testing.assert_array_equal(params[0], ref_params[0])
    assert zero.local_state_nbytes() == 2 * 8 * zero.shard.size  # exp_avg and exp_avg_sq
    full = zero.state_dict()
    np.testing.assert_array_equal(full["state"][0]["exp_avg"], ref.state[0]["exp_avg"])


@check
def every_wrapper_names_a_model_mismatch_on_every_rank():
    def model():
        return {"w": np.zeros(4 if RANK == 0 else 5), "b": np.zeros(2)}
    for make in (lambda: fd.DataParallel(fastoptim.Adam(model()), timeout=TIMEOUT),
                 lambda: fd.ZeroRedundancyOptimizer(model(), fastoptim.Adam, timeout=TIMEOUT),
                 lambda: fd.ElasticAveraging(fastoptim.SGD(model(), lr=0.1), timeout=TIMEOUT)):
        expect_value_error(make, "the model differs across ranks", "params['w'] has shape (4,) on rank 0 but (5,)")
    cls = fastoptim.Adam if RANK == 0 else fastoptim.AdamW
    expect_value_error(lambda: fd.DataParallel(cls([np.zeros(2)]), timeout=TIMEOUT),
                       "optimizer is 'Adam' on rank 0 but 'AdamW' on rank 1")
    expect_value_error(lambda: fd.ElasticAveraging(fastoptim.SGD([np.zeros(2)]), period=3 + (RANK > 0),
                                                   timeout=TIMEOUT), "period is 3 on rank 0 but 4 on rank 1")


@check
def wrappers_check_their_arguments():
    opt = fastoptim.SGD([np.zeros(2)])
    for call, error in ((lambda: fd.DataParallel(opt, average=1), "average must be True"),
                        (lambda: fd.DataParallel(opt, timeout=0), "timeout must be"),
                        (lambda: fd.DataParallel(opt, bucket_bytes=0), "bucket_bytes must be"),
                        (lambda: fd.ElasticAveraging(opt, period=0), "period must be"),
                        (lambda: fd.ElasticAveraging(opt, alpha=1.5), "alpha must be"),
                        (lambda: fd.DataParallel(opt, comm="world"), "comm must be an mpi4py")):
        try:
            call()
        except (TypeError, ValueError) as e:
            assert error in str(e), str(e)
        else:
            raise AssertionError(f"no error for {error}")
    dp = fd.DataParallel(fastoptim.SGD({"w": np.zeros(2)}, lr=0.1), timeout=TIMEOUT)
    for grads, message in (({"w": np.zeros(3)}, "grads['w'] has shape (3,)"), ({"w": None}, "every rank must give"),
                           ([np.zeros(2)], "must be a dict")):
        try:
            dp.step(grads)
        except (TypeError, ValueError) as e:
            assert message in str(e), str(e)
        else:
            raise AssertionError(f"no error for {message}")


# ---- elastic averaging -------------------------------------------------------------------------

def easgd_simulation(make_optimizer, n_workers, period, alpha, steps, kind):
    """N workers and a center in one process, by the formulas (the reference)."""
    workers = [make_params(kind, seed=0) for _ in range(n_workers)]
    optimizers = [make_optimizer(w) for w in workers]
    center = [a.copy() for a in arrays_of(workers[0])]
    for t in range(steps):
        X, Y = batch(t, n_workers)
        grads = [loss_grads(arrays_of(w), local_rows(X, i), local_rows(Y, i)) for i, w in enumerate(workers)]
        if t % period == 0:
            diffs = [[alpha * (x - c) for x, c in zip(arrays_of(w), center)] for w in workers]
            for k, c in enumerate(center):
                c += sum(d[k] for d in diffs)
            for w, d in zip(workers, diffs):
                for x, dk in zip(arrays_of(w), d):
                    x -= dk
        for opt, g in zip(optimizers, grads):
            opt.step(shaped(kind, g))
    return workers, center


@check
def elastic_averaging_equals_a_serial_simulation_of_n_workers():
    cases = [(lambda p: fastoptim.SGD(p, lr=0.05), 3, None, "dict"),                            # EASGD
             (lambda p: fastoptim.SGD(p, lr=0.05, momentum=0.9, nesterov=True), 4, None, "list"),  # EAMSGD
             (lambda p: fastoptim.Adam(p, lr=0.02), 1, 0.3, "groups"),
             (lambda p: fastoptim.RMSprop(p, lr=0.01), 5, 0.1, "dict")]
    for make_optimizer, period, alpha, kind in cases:
        params = make_params(kind, seed=RANK)
        ea = fd.ElasticAveraging(make_optimizer(params), period=period, alpha=alpha, timeout=TIMEOUT)
        assert ea.alpha == (0.9 / SIZE if alpha is None else alpha)
        for t in range(STEPS):
            X, Y = batch(t, SIZE)
            ea.step(shaped(kind, loss_grads(arrays_of(params), local_rows(X), local_rows(Y))))
        workers, center = easgd_simulation(make_optimizer, SIZE, period, ea.alpha, STEPS, kind)
        assert_close(arrays_of(params), arrays_of(workers[RANK]), what=f"worker {RANK}")
        assert_close(arrays_of(ea.center), center, what="center")
        assert_identical_on_every_rank(arrays_of(ea.center), "center")
        assert ea.step_count == STEPS
        workers_differ = _mpi.allgather_object(arrays_of(params)[0], COMM, TIMEOUT, "worker params")
        assert not np.array_equal(workers_differ[0], workers_differ[-1])


@check
def elastic_averaging_checkpoint_round_trip():
    def make(p):
        return fastoptim.SGD(p, lr=0.05, momentum=0.9, nesterov=True)
    params = make_params("list", seed=RANK)
    ea = fd.ElasticAveraging(make(params), period=4, timeout=TIMEOUT)
    run(None, None, ea, params, "list", 10)
    saved, saved_params = ea.state_dict(), [a.copy() for a in arrays_of(params)]
    run(None, None, ea, params, "list", 10, start=10)
    other = [a.copy() for a in saved_params]
    ea2 = fd.ElasticAveraging(make(other), period=4, timeout=TIMEOUT)
    for a, b in zip(other, saved_params):
        np.copyto(a, b)   # construction copied rank 0's params; resume from this rank's own
    ea2.load_state_dict(saved)
    run(None, None, ea2, other, "list", 10, start=10)
    for a, b in zip(other, arrays_of(params)):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(ea2.center, ea.center):
        np.testing.assert_array_equal(a, b)
    assert ea2.step_count == 20


if __name__ == "__main__":
    main()
