"""fastoptim.distributed's foundation: the import guard, flat spaces, buckets and
shards (in this process, without MPI_Init), and under mpiexec the abort on an
uncaught exception and the collective timeout.  The checks that run on 2 and 3
ranks are in distributed_checks.py, run by test_distributed.py."""
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from mpi_harness import no_mpi_init, require_mpi, run_mpi

require_mpi()
no_mpi_init()
from fastoptim.distributed import _buckets, _consistency  # noqa: E402



# ---- import guard -----------------------------------------------------------------

def test_fastoptim_imports_without_mpi4py_and_distributed_names_the_extra():
    code = """
import sys
sys.modules["mpi4py"] = None          # as if mpi4py were not installed
import fastoptim
fastoptim.Adam([__import__("numpy").zeros(2)])
try:
    import fastoptim.distributed
except ImportError as error:
    print(error)
else:
    raise SystemExit("imported")
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/")
    assert result.returncode == 0, result.stderr
    assert 'pip install "fastoptim[mpi]"' in result.stdout and "mpi4py" in result.stdout


# ---- flat spaces, shards and buckets ---------------------------------------------------

def model(named=False):
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal((3, 5)), rng.standard_normal(7).astype(np.float32), np.zeros(0),
              rng.standard_normal(()), rng.standard_normal(11), rng.standard_normal((2, 2)).astype(np.float32)]
    return {f"p{i}": a for i, a in enumerate(arrays)} if named else arrays


def test_param_set_keeps_order_structure_and_dtype_spaces():
    for named in (False, True):
        ps = _buckets.ParamSet(model(named))
        assert ps.structure == ("dict" if named else "list") and len(ps) == 6
        assert ps.keys == ([f"p{i}" for i in range(6)] if named else list(range(6)))
        f64, f32 = ps.spaces
        assert f64.dtype == np.float64 and f64.indices == [0, 2, 3, 4] and f64.size == 15 + 0 + 1 + 11
        assert f32.dtype == np.float32 and f32.indices == [1, 5] and f32.size == 11
        assert ps.describe()[1] == (ps.keys[1], (7,), "float32")


def test_param_groups_flatten_and_unflatten():
    a, b, c = np.zeros(2), np.zeros(3), np.zeros(4)
    ps = _buckets.ParamSet([{"params": [a, b], "lr": 0.1}, {"params": [c]}])
    assert ps.structure == "groups" and ps.group_sizes == [2, 1] and ps.group_options[0] == {"lr": 0.1}
    grads = [np.ones(2), np.ones(3), np.ones(4)]
    assert ps.flatten(grads) == grads
    assert ps.flatten([grads[:2], grads[2:]]) == grads
    assert ps.unflatten(grads) == [grads[:2], grads[2:]]
    named = _buckets.ParamSet([{"params": {"a": a, "b": b}}, {"params": {"c": c}}])
    assert named.unflatten([1, 2, 3]) == [{"a": 1, "b": 2}, {"c": 3}]
    assert named.flatten({"c": grads[2], "a": grads[0], "b": grads[1]}) == grads


def test_from_optimizer_reads_the_optimizers_structure():
    import fastoptim
    params = model(named=True)
    ps = _buckets.ParamSet.from_optimizer(fastoptim.Adam(params))
    assert ps.structure == "dict" and ps.keys == list(params)
    assert all(x is y for x, y in zip(ps.arrays, params.values()))
    grouped = fastoptim.SGD([{"params": [np.zeros(2)]}, {"params": [np.zeros(3)], "lr": 0.5}])
    ps = _buckets.ParamSet.from_optimizer(grouped)
    assert ps.structure == "groups" and ps.group_sizes == [1, 1]
    assert ps.for_optimizer([1, 2]) == [1, 2]


@pytest.mark.parametrize("bad, error, message", [
    ([np.zeros(2)], ValueError, "got 1 grads for 6 params"),
    ({"p0": 1}, TypeError, "must be a list of 6 arrays"),
    (lambda g: g[:3] + [np.zeros((11, 1))] + g[4:], ValueError, "grads[3] has shape (11, 1) but params[3] has shape ()"),
    (lambda g: g[:1] + [g[1].astype(np.float64)] + g[2:], TypeError, "grads[1] has dtype float64"),
    (lambda g: g[:1] + [None] + g[2:], TypeError, "every rank must give every grad"),
])
def test_flatten_names_the_bad_grad(bad, error, message):
    ps = _buckets.ParamSet(model())
    grads = [np.zeros_like(p) for p in ps.arrays]
    with pytest.raises(error) as info:
        ps.flatten(bad(grads) if callable(bad) else bad)
    assert message in str(info.value)


def test_flatten_takes_a_numpy_scalar_of_its_dtype_for_a_0d_param():
    ps = _buckets.ParamSet(model())
    grads = [np.zeros_like(p) for p in ps.arrays]
    given = grads[:3] + [np.float64(2.5)] + grads[4:]
    flat = ps.flatten(given)
    assert isinstance(flat[3], np.ndarray) and flat[3].shape == () and flat[3] == 2.5
    assert isinstance(given[3], np.float64)                     # the caller's list is left alone
    with pytest.raises(TypeError, match=r"grads\[3\] must be a numpy array like params\[3\], got float32"):
        ps.flatten(grads[:3] + [np.float32(2.5)] + grads[4:])


def test_flatten_by_name_names_missing_and_unknown():
    ps = _buckets.ParamSet(model(named=True))
    with pytest.raises(ValueError, match=r"missing \['p5'\]; unknown \['q'\]"):
        ps.flatten({**{f"p{i}": np.zeros_like(ps.arrays[i]) for i in range(5)}, "q": None})


def test_params_are_checked_like_the_optimizers_do():
    with pytest.raises(ValueError, match="not C-contiguous"):
        _buckets.ParamSet([np.zeros((4, 4))[:, :2]])
    with pytest.raises(ValueError, match="empty"):
        _buckets.ParamSet([])
    with pytest.raises(TypeError, match="list of arrays"):
        _buckets.ParamSet(np.zeros(3))


@pytest.mark.parametrize("size", [0, 1, 2, 3, 10, 1001])
@pytest.mark.parametrize("n_shards", [1, 2, 3, 7])
def test_shards_are_contiguous_and_equal_within_one_element(size, n_shards):
    bounds = _buckets.shard_bounds(size, n_shards)
    sizes = np.diff(bounds)
    assert bounds[0] == 0 and bounds[-1] == size and len(sizes) == n_shards
    assert (sizes >= 0).all() and sizes.max() - sizes.min() <= 1


def test_pieces_cover_every_shard_with_views_into_the_params():
    ps = _buckets.ParamSet(model())
    for space in ps.spaces:
        bounds = _buckets.shard_bounds(space.size, 3)
        covered = []
        for r in range(3):
            pieces = space.pieces(bounds[r], bounds[r + 1])
            views = _buckets.piece_views(ps.arrays, pieces)
            assert sum(v.size for v in views) == bounds[r + 1] - bounds[r]
            for (i, lo, hi), v in zip(pieces, views):
                assert np.shares_memory(v, ps.arrays[i]) and v.flags.c_contiguous and v.ndim == 1
                covered.append(np.array(v))
        flat = np.concatenate([ps.arrays[i].reshape(-1) for i in space.indices])
        np.testing.assert_array_equal(np.concatenate(covered), flat)


def test_shard_param_groups_mirror_the_models_groups():
    a, b, c = np.arange(4.0), np.arange(4.0, 6.0), np.arange(6.0, 9.0)
    ps = _buckets.ParamSet([{"params": [a, b], "lr": 0.1}, {"params": [c], "lr": 0.2}])
    shards = [_buckets.Shard(ps, r, 3) for r in range(3)]
    assert [s.size for s in shards] == [3, 3, 3]
    assert shards[1].pieces == [[(0, 3, 4), (1, 0, 2)]]
    groups = shards[1].param_groups()
    assert [g["lr"] for g in groups] == [0.1, 0.2]
    assert [list(v) for v in groups[0]["params"]] == [[3.0], [4.0, 5.0]]
    assert [v.size for v in groups[1]["params"]] == [0]           # no element of c in shard 1
    assert [list(v) for v in shards[2].param_groups()[1]["params"]] == [[6.0, 7.0, 8.0]]
    with pytest.raises(ValueError, match="shard index 3"):
        _buckets.Shard(ps, 3, 3)


def test_params_laid_end_to_end_are_seen_as_one_flat_view():
    arena = np.arange(20.0)
    end_to_end = [arena[0:6].reshape(2, 3), arena[6:6], arena[6:7].reshape(()), arena[7:19]]
    space = _buckets.ParamSet(end_to_end).spaces[0]
    flat = _buckets.laid_end_to_end(end_to_end, space)
    assert flat is not None and flat.size == 19 and np.shares_memory(flat, arena)
    flat[:] = -np.arange(19.0)
    assert end_to_end[0][1, 2] == -5.0 and end_to_end[2] == -6.0 and end_to_end[3][-1] == -18.0
    assert arena[19] == 19.0  # nothing past the params is written
    # a gap, another order, a second buffer, or a read-only base: no flat view
    for arrays in ([arena[0:6], arena[7:19]], [arena[6:12], arena[0:6]], [arena[0:6], np.zeros(3)]):
        assert _buckets.laid_end_to_end(arrays, _buckets.ParamSet(arrays).spaces[0]) is None
    frozen = np.zeros(8)
    parts = [frozen[:4], frozen[4:]]
    frozen.flags.writeable = False
    assert parts[0].flags.writeable and _buckets.laid_end_to_end(parts, _buckets.ParamSet(parts).spaces[0]) is None
    # one param is its own flat view; each dtype space on its own, also in one byte arena
    mixed = [np.zeros(3, np.float32), arena[0:2], arena[2:5]]
    spaces = _buckets.ParamSet(mixed).spaces
    assert [_buckets.laid_end_to_end(mixed, s).size for s in spaces] == [3, 5]
    raw = np.zeros(64, np.uint8)
    two = [raw[0:16].view(np.float64), raw[16:24].view(np.float32), raw[24:40].view(np.float64)]
    assert [_buckets.laid_end_to_end(two, s) for s in _buckets.ParamSet(two).spaces][0] is None  # a gap
    two = [raw[0:16].view(np.float64), raw[16:32].view(np.float64), raw[32:40].view(np.float32)]
    assert [_buckets.laid_end_to_end(two, s).size for s in _buckets.ParamSet(two).spaces] == [4, 2]
    # an empty param anywhere (allocated elsewhere), and a Fortran-order root's columns
    with_empty = [np.zeros(0), arena[0:6], np.zeros(0), arena[6:10]]
    assert np.shares_memory(_buckets.laid_end_to_end(with_empty, _buckets.ParamSet(with_empty).spaces[0]), arena)
    fortran = np.zeros((4, 5), order="F")
    columns = [fortran[:, 0], fortran[:, 1]]
    flat = _buckets.laid_end_to_end(columns, _buckets.ParamSet(columns).spaces[0])
    flat[:] = np.arange(8.0)
    assert fortran[:, 1].tolist() == [4.0, 5.0, 6.0, 7.0] and not fortran[:, 2:].any()


def test_buckets_at_param_boundaries_and_at_element_counts():
    arrays = [np.zeros(n) for n in (5, 3, 10, 1, 1, 6)]
    space = _buckets.ParamSet(arrays).spaces[0]
    buckets = _buckets.make_buckets(space, 6)
    assert [(b.start, b.stop) for b in buckets] == [(0, 8), (8, 18), (18, 26)]
    assert [[i for i, _, _ in b.pieces] for b in buckets] == [[0, 1], [2], [3, 4, 5]]
    views = buckets[0].views(arrays)
    assert [v.shape for v in views] == [(5,), (3,)] and np.shares_memory(views[1], buckets[0].buffer)
    exact = _buckets.make_buckets(space, 6, whole_params=False)
    assert [(b.start, b.stop) for b in exact] == [(0, 6), (6, 12), (12, 18), (18, 24), (24, 26)]
    assert exact[1].pieces == [(1, 1, 3), (2, 0, 4)]
    assert [v.shape for v in exact[1].views(arrays)] == [(2,), (4,)]
    assert [b.buffer.size for b in _buckets.make_buckets(_buckets.ParamSet([np.zeros(0)]).spaces[0], 4)] == [0]


def test_differences_name_each_rank_and_param():
    ref = {"params": [("w", (3,), "float64"), ("b", (), "float64")], "extra": {"optimizer": "Adam"}}
    other = {"params": [("w", (3, 1), "float64"), ("b", (), "float32")], "extra": {"optimizer": "SGD"}}
    problems = _consistency.differences([ref, ref, other])
    assert problems == ["optimizer is 'Adam' on rank 0 but 'SGD' on rank 2",
                        "params['w'] has shape (3,) on rank 0 but (3, 1) on rank 2",
                        "params['b'] has dtype float64 on rank 0 but float32 on rank 2"]
    assert _consistency.differences([ref, ref]) == []


# ---- ending a job that fails ---------------------------------------------------------------

ABORT = """
import numpy as np
import fastoptim
import fastoptim.distributed as fd
from mpi4py import MPI
dp = fd.DataParallel(fastoptim.Adam([np.zeros(3)]))
if MPI.COMM_WORLD.Get_rank() == 1:
    raise RuntimeError("rank 1 fails")
dp.step([np.ones(3)])                   # the others wait here (default timeout: 300 s)
"""

WAIT_TIMEOUT = """
import sys, time
import numpy as np
import fastoptim.distributed as fd
from mpi4py import MPI
if MPI.COMM_WORLD.Get_rank() == 1:
    time.sleep(60)                      # never joins
    sys.exit(0)
try:
    fd.broadcast_params([np.zeros(3)], timeout=1.0)
except fd.CollectiveTimeout as error:
    print("caught:", error, flush=True)
    if sys.argv[1] == "reraise":
        raise
sys.exit(0)                             # caught: the job must still end, and not with 0
"""

STEP_TIMEOUT = """
import sys, time
import numpy as np
import fastoptim
import fastoptim.distributed as fd
from mpi4py import MPI
dp = fd.DataParallel(fastoptim.Adam([np.zeros(3)]), timeout=1.0)
if MPI.COMM_WORLD.Get_rank() == 1:
    time.sleep(60)                      # never steps
dp.step([np.ones(3)])                   # the others: blocked inside MPI until the watchdog aborts the job
print("stepped", flush=True)
"""


@pytest.mark.parametrize("ranks", [2, 3])
def test_an_uncaught_exception_on_one_rank_aborts_the_job_within_seconds(ranks):
    run = run_mpi(["-c", ABORT], ranks, timeout=60)
    assert run.returncode != 0, run.output()
    assert "RuntimeError: rank 1 fails" in run.stderr and "aborting the MPI job" in run.stderr
    assert run.seconds < 20, run.output()


@pytest.mark.parametrize("mode", ["reraise", "catch"])
def test_a_wait_that_times_out_raises_and_the_job_aborts(mode):
    run = run_mpi(["-c", WAIT_TIMEOUT, mode], 2, timeout=60)
    assert run.returncode != 0, run.output()
    assert "caught: rank 0 of 2 waited 1 s for the sizes of the model descriptions (broadcast_params)" \
        in run.stdout, run.output()
    if mode == "reraise":
        assert "CollectiveTimeout" in run.stderr
    assert run.seconds < 20, run.output()


@pytest.mark.parametrize("ranks", [2, 3])
def test_a_blocking_collective_that_times_out_aborts_the_job(ranks):
    run = run_mpi(["-c", STEP_TIMEOUT], ranks, timeout=60)
    assert run.returncode != 0 and "stepped" not in run.stdout, run.output()
    waiting = "0" if ranks == 2 else "[02]"  # with 3 ranks, ranks 0 and 2 both wait: either may fire first
    assert re.search(f"fastoptim.distributed.CollectiveTimeout: rank {waiting} of {ranks} waited 1 s for the "
                     f"reduction of bucket 0 in DataParallel.step", run.stderr), run.output()
    assert run.seconds < 20, run.output()


def test_a_launch_that_outlives_its_timeout_is_killed_with_every_rank():
    # The demo and the benchmark launch mpiexec through _mpiexec.run: after its timeout,
    # mpiexec and every rank (each in a process group of its own) must be gone.
    import uuid

    from fastoptim import _mpiexec
    from mpi_harness import mpi_env
    marker = f"sleeping rank {uuid.uuid4().hex}"
    with pytest.raises(SystemExit, match="did not finish within 3 s; killed it and its ranks"):
        _mpiexec.run(2, "timeit", ["-n", "1", f"import time; time.sleep(120)  # {marker}"], timeout=3,
                     env=mpi_env())
    left = []
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                if marker.encode() in f.read():
                    left.append(entry)
        except OSError:
            pass
    assert not left, f"processes left running: {left}"
