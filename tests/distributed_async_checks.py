"""Rank-side checks of ParameterServer and AsyncElasticAveraging, run under mpiexec
on 2, 3 and 4 ranks by test_distributed_async.py (see mpi_harness)."""
import os
import sys

import numpy as np
from mpi4py import MPI

import fastoptim
import fastoptim.distributed as fd
from dc_reference import compensate
from mpi_harness import check, main

COMM = MPI.COMM_WORLD
RANK, SIZE = COMM.Get_rank(), COMM.Get_size()
TIMEOUT = 60.0
OUT = sys.argv[sys.argv.index("--out") + 1] if "--out" in sys.argv else "."

# Least squares y ~ X w + b, plus an independent float32 quadratic in v.
_rng = np.random.default_rng(0)
X = _rng.standard_normal((96, 7))
Y = X @ _rng.standard_normal(7) + 0.5 + 0.1 * _rng.standard_normal(96)
V_TARGET = _rng.standard_normal((2, 3)).astype(np.float32)
A = np.column_stack([X, np.ones(len(X))])
OPTIMUM = np.linalg.lstsq(A, Y, rcond=None)[0]


def model(grouped=False):
    w, b, v = np.zeros(7), np.zeros(()), np.zeros((2, 3), dtype=np.float32)
    if grouped:
        return [{"params": {"w": w, "b": b}, "lr": 0.1}, {"params": {"v": v}, "lr": 0.05}]
    return {"w": w, "b": b, "v": v}


def arrays_of(params):
    if isinstance(params, dict):
        return list(params.values())
    return [a for group in params for a in group["params"].values()]


def structured(params, flat):
    """Grads in the params' structure: a dict by name, or per group."""
    if isinstance(params, dict):
        return dict(zip(params, flat))
    return [dict(zip(params[0]["params"], flat[:2])), dict(zip(params[1]["params"], flat[2:]))]


def rows(worker, t, batch=16):
    return np.random.default_rng(1000 * worker + t).integers(0, len(X), batch)


def gradient(arrays, rows):
    w, b, v = arrays
    error = X[rows] @ w + b - Y[rows]
    return [X[rows].T @ error / len(rows), np.array(error.mean()), v - V_TARGET]


def assert_close(got, want, atol=1e-12):
    for g, w in zip(got, want):
        assert g.dtype == w.dtype and g.shape == w.shape
        assert np.abs(g - w).max(initial=0.0) <= atol, (g, w)


def adam(params):
    return fastoptim.Adam(params, lr=0.05)


def expect_error(error, call, *fragments):
    try:
        call()
    except error as caught:
        for fragment in fragments:
            assert fragment in str(caught), f"{fragment!r} not in {str(caught)!r}"
        return
    raise AssertionError(f"no {error.__name__}")


# ---- ParameterServer ------------------------------------------------------------------

@check
def one_worker_is_sequential_training():
    """One worker (and SIZE - 1 servers) with fetch_every = push_every = 1 is the plain
    optimizer, with and without compensation (w - w_bak is then 0)."""
    steps = 12
    for grouped in (False, True):
        for kind in (None, "constant", "adaptive"):
            params = model(grouped)
            arrays = arrays_of(params)
            ps = fd.ParameterServer(params, adam, servers=SIZE - 1, compensation=kind, timeout=TIMEOUT)
            assert ps.n_workers == 1 and ps.worker_index == (0 if RANK == SIZE - 1 else None)

            def work(ps):
                for t in range(steps):
                    ps.step(structured(params, gradient(arrays, rows(0, t))))
            stats = ps.run(work)
            reference = model(grouped)
            optimizer = adam(reference)
            for t in range(steps):
                optimizer.step(structured(reference, gradient(arrays_of(reference), rows(0, t))))
            assert_close(arrays, arrays_of(reference))
            assert stats["updates"] == steps and stats["pushes"] == [steps]
            assert stats["staleness_max"] == 0 and stats["staleness_mean"] == 0.0


@check
def run_again_continues_training_and_counts_each_run():
    params = model()
    arrays = arrays_of(params)
    reference = model()
    optimizer = adam(reference)
    ps = fd.ParameterServer(params, adam, servers=SIZE - 1, timeout=TIMEOUT)
    ea = fd.AsyncElasticAveraging(model(), adam, period=2, timeout=TIMEOUT)
    for run, steps in enumerate((5, 3)):
        first = 5 * run

        def work(ps):
            for t in range(first, first + steps):
                ps.step(structured(params, gradient(arrays, rows(0, t))))
        stats = ps.run(work)
        for t in range(first, first + steps):
            optimizer.step(structured(reference, gradient(arrays_of(reference), rows(0, t))))
        assert_close(arrays, arrays_of(reference))
        assert stats["updates"] == first + steps and stats["pushes"] == [steps]
        # 88 bytes of grads per push, 88 bytes of params per fetch (and the first fetch of the run)
        assert stats["bytes_sent"] == steps * 88 + (steps + 1) * 88
        elastic = ea.run(lambda ea: [ea.step(structured(ea.params, [np.ones(7), np.ones(()),
                                                                    np.ones((2, 3), np.float32)]))
                                     for _ in range(steps)])
        exchanges = len([t for t in range(first, first + steps) if t % 2 == 0])   # local steps run on
        assert elastic["steps"] == [steps] * (SIZE - 1) and elastic["exchanges"] == exchanges * (SIZE - 1)
        assert elastic["bytes_sent"] == 2 * 88 * elastic["exchanges"]


@check
def one_stale_worker_is_the_serial_dc_asgd_formulas():
    """One worker pushing every 2 calls and fetching every 3: gradients at stale params,
    compensated against the params it fetched.  Equal to a serial NumPy run of the
    formulas; 11 calls leave one grad to push when worker_fn returns."""
    calls, push_every, fetch_every = 11, 2, 3
    for kind in (None, "constant", "adaptive"):
        params = model()
        arrays = arrays_of(params)
        ps = fd.ParameterServer(params, adam, servers=SIZE - 1, fetch_every=fetch_every, push_every=push_every,
                                compensation=kind, compensation_lambda=0.5, compensation_momentum=0.9,
                                timeout=TIMEOUT)

        def work(ps):
            for t in range(calls):
                ps.step(structured(params, gradient(arrays, rows(0, t))))
        stats = ps.run(work)

        server = arrays_of(model())
        optimizer = adam(server)
        local = [a.copy() for a in server]
        mean_squares = [np.zeros_like(a) for a in server]
        accumulated, pending = None, 0
        for call in range(1, calls + 2):
            if call <= calls:
                g = gradient(local, rows(0, call - 1))
                accumulated = [x.copy() for x in g] if pending == 0 else [a + x for a, x in zip(accumulated, g)]
                pending += 1
            if (call <= calls and call % push_every == 0) or (call > calls and pending):
                mean = [a / pending for a in accumulated] if pending > 1 else accumulated
                for k in range(3):
                    mean[k], mean_squares[k] = compensate(mean[k], server[k], local[k], kind, 0.5, 0.9,
                                                          mean_squares[k])
                optimizer.step(mean)
                pending = 0
            if call <= calls and call % fetch_every == 0:
                local = [a.copy() for a in server]
        assert_close(arrays, server)
        assert stats["pushes"] == [6] and stats["updates"] == 6
        # Pushes at calls 2, 4, 6, 8, 10 and the leftover, fetches at 3, 6 (after its push) and 9:
        # the pushes are 0, 0, 1, 0, 0 and 1 updates old.
        assert stats["staleness_max"] == 1 and stats["staleness_mean"] == 2 / 6


@check
def workers_converge_to_the_least_squares_optimum_with_staleness():
    """Several workers on their own rows of the data (SIZE 3: 1 server, 2 workers;
    SIZE 4: 2 servers, 2 workers), fetching every other push."""
    if SIZE < 3:
        return
    servers = 1 if SIZE == 3 else 2
    steps = 300
    for kind in (None, "adaptive"):
        params = {"w": np.zeros(7), "b": np.zeros(())}
        ps = fd.ParameterServer(params, lambda p: fastoptim.Adagrad(p, lr=0.3), servers=servers,
                                fetch_every=2, compensation=kind, timeout=TIMEOUT)
        mine = None if ps.is_server else np.array_split(np.arange(len(X)), ps.n_workers)[ps.worker_index]

        def work(ps):
            rng = np.random.default_rng(ps.worker_index)
            for _ in range(steps):
                batch = rng.choice(mine, 16)
                error = X[batch] @ params["w"] + params["b"] - Y[batch]
                ps.step({"w": X[batch].T @ error / 16, "b": np.array(error.mean())})
        stats = ps.run(work)
        assert stats["updates"] == sum(stats["pushes"]) == steps * ps.n_workers
        assert stats["pushes"] == [steps] * ps.n_workers
        assert stats["staleness_max"] >= 1 and stats["staleness_mean"] > 0
        found = np.append(params["w"], params["b"])
        loss, best = np.mean((A @ found - Y) ** 2), np.mean((A @ OPTIMUM - Y) ** 2)
        assert loss < 1.2 * best, (kind, loss, best, stats)
        assert np.abs(found - OPTIMUM).max() < 0.05, (kind, found - OPTIMUM, stats)


@check
def checkpoints_reassemble_and_resume_exactly():
    """SIZE - 1 servers write their shards every 5 updates and at the end; the reassembled
    checkpoint loads into a plain optimizer, and a resumed job continues the count and
    the training exactly."""
    path = os.path.join(OUT, "ps.ckpt")
    for grouped in (False, True):
        params = model(grouped)
        arrays = arrays_of(params)
        ps = fd.ParameterServer(params, adam, servers=SIZE - 1, checkpoint=path, checkpoint_every=5,
                                compensation="adaptive", timeout=TIMEOUT)

        def first(ps):
            for t in range(12):
                ps.step(structured(params, gradient(arrays, rows(0, t))))
        assert ps.run(first)["updates"] == 12
        saved = fd.ParameterServer.load_checkpoint(path)
        assert saved["updates"] == 12
        assert_close(saved["params"], arrays, atol=0)
        assert all(m is not None and m.shape == a.shape for m, a in zip(saved["mean_square"], arrays))
        # The reassembled optimizer state is the plain optimizer's after the same 12 steps.
        reference = model(grouped)
        optimizer = adam(reference)
        for t in range(12):
            optimizer.step(structured(reference, gradient(arrays_of(reference), rows(0, t))))
        plain = adam(model(grouped))
        plain.load_state_dict(saved["optimizer"])
        for i, state in optimizer.state.items():
            for name in ("exp_avg", "exp_avg_sq"):
                np.testing.assert_array_equal(plain.state[i][name], state[name])
            assert int(plain.state[i]["step"]) == int(state["step"]) == 12

        fresh = model(grouped)
        resumed = fd.ParameterServer(fresh, adam, servers=SIZE - 1, resume=path, compensation="adaptive",
                                     timeout=TIMEOUT)
        fresh_arrays = arrays_of(fresh)

        def more(ps):
            for t in range(12, 20):
                ps.step(structured(fresh, gradient(fresh_arrays, rows(0, t))))
        stats = resumed.run(more)
        for t in range(12, 20):
            optimizer.step(structured(reference, gradient(arrays_of(reference), rows(0, t))))
        assert stats["updates"] == 20 and stats["pushes"] == [8]
        assert_close(fresh_arrays, arrays_of(reference))
        COMM.Barrier()
        if RANK == 0:
            for name in os.listdir(OUT):
                if name.startswith("ps.ckpt"):
                    os.remove(os.path.join(OUT, name))
        COMM.Barrier()


@check
def parameter_server_errors_on_every_rank():
    expect_error(ValueError, lambda: fd.ParameterServer(model(), adam, servers=SIZE, timeout=TIMEOUT),
                 f"needs at least {SIZE + 1} ranks")
    expect_error(ValueError, lambda: fd.ParameterServer(model(), adam, compensation="linear"),
                 "compensation must be None, 'constant' or 'adaptive'")
    expect_error(ValueError, lambda: fd.ParameterServer(model(), adam, fetch_every=0), "fetch_every must be")
    expect_error(ValueError, lambda: fd.ParameterServer(model(), adam, checkpoint_every=3),
                 "checkpoint_every=3 needs a checkpoint path")
    shapes = {"w": np.zeros(7 if RANK == 0 else 8), "b": np.zeros(())}
    expect_error(ValueError, lambda: fd.ParameterServer(shapes, adam, timeout=TIMEOUT),
                 "params['w'] has shape (7,) on rank 0 but (8,) on rank 1")
    expect_error(ValueError, lambda: fd.ParameterServer(model(), adam, push_every=1 + (RANK == 1),
                                                        timeout=TIMEOUT),
                 "push_every is 1 on rank 0 but 2 on rank 1")
    # The optimizer is built on servers only; its failure is named on every rank.
    expect_error(ValueError, lambda: fd.ParameterServer(model(), lambda p: fastoptim.LAMB(p), timeout=TIMEOUT),
                 "LAMB's is per tensor (2 passes over each tensor)")
    expect_error(ValueError, lambda: fd.ParameterServer(model(), lambda p: "not an optimizer", timeout=TIMEOUT),
                 "ParameterServer could not start: on rank 0: TypeError: ParameterServer: optimizer(params) "
                 "must return a fastoptim optimizer, got builtins.str")
    expect_error(ValueError, lambda: fd.ParameterServer(model(), adam, resume=os.path.join(OUT, "missing"),
                                                        timeout=TIMEOUT),
                 "on rank 0: FileNotFoundError: no checkpoint at")
    params = model()
    ps = fd.ParameterServer(params, adam, timeout=TIMEOUT)
    expect_error(RuntimeError, lambda: ps.step(structured(params, gradient(arrays_of(params), rows(0, 0)))),
                 "ParameterServer.step() is for workers" if RANK == 0 else "inside run()")
    bad = []

    def work(ps):
        try:
            ps.step({"w": np.zeros(3), "b": np.zeros(()), "v": np.zeros((2, 3), np.float32)})
        except ValueError as error:
            bad.append(str(error))
    stats = ps.run(work)
    assert stats["updates"] == 0
    assert bad == ([] if ps.is_server else ["grads['w'] has shape (3,) but params['w'] has shape (7,)"])


# ---- AsyncElasticAveraging -------------------------------------------------------------

@check
def async_easgd_one_worker_is_the_serial_algorithm():
    """With one worker (2 ranks): Algorithm 1 run serially, exactly; EAMSGD's local optimizer."""
    if SIZE != 2:
        return
    steps, period, alpha = 23, 4, 0.3
    params = model()
    arrays = arrays_of(params)
    if RANK == 1:
        for a in arrays:
            a += 5.0                              # overwritten by the center's start
    eamsgd = lambda p: fastoptim.SGD(p, lr=0.05, momentum=0.9, nesterov=True)  # noqa: E731
    ea = fd.AsyncElasticAveraging(params, eamsgd, period=period, alpha=alpha, timeout=TIMEOUT)
    assert ea.alpha == alpha and ea.n_workers == 1
    assert_close(arrays, arrays_of(model()), atol=0)

    def work(ea):
        for t in range(steps):
            ea.step(structured(params, gradient(arrays, rows(0, t))))
    stats = ea.run(work)
    center, local = arrays_of(model()), arrays_of(model())
    optimizer = eamsgd(local)
    for t in range(steps):
        g = gradient(local, rows(0, t))
        if t % period == 0:
            for x, c in zip(local, center):
                d = (x - c) * alpha
                c += d
                x -= d
        optimizer.step(g)
    assert_close(arrays, center)
    assert stats["exchanges"] == 6 and stats["steps"] == [steps] and stats["staleness_max"] == 0


@check
def async_easgd_workers_converge():
    if SIZE < 3:
        return
    params = {"w": np.zeros(7), "b": np.zeros(())}
    ea = fd.AsyncElasticAveraging(params, lambda p: fastoptim.SGD(p, lr=0.02, momentum=0.9, nesterov=True),
                                  period=4, timeout=TIMEOUT)
    assert ea.alpha == 0.9 / (SIZE - 1)
    steps = 600

    def work(ea):
        rng = np.random.default_rng(ea.worker_index)
        for _ in range(steps):
            batch = rng.integers(0, len(X), 16)
            error = X[batch] @ params["w"] + params["b"] - Y[batch]
            ea.step({"w": X[batch].T @ error / 16, "b": np.array(error.mean())})
    stats = ea.run(work)
    assert stats["exchanges"] == (SIZE - 1) * steps // 4 and stats["steps"] == [steps] * (SIZE - 1)
    found = np.append(params["w"], params["b"])
    assert np.abs(found - OPTIMUM).max() < 0.05, (found - OPTIMUM, stats)


if __name__ == "__main__":
    main()
