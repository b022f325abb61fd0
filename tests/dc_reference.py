"""The NumPy reference of DC-ASGD's formulas (Zheng et al. 2017) and of the
simulator, for the tests of the fused kernel, the simulator and the parameter
server.  Scalars take the arrays' dtype, as in the kernel."""
import numpy as np

EPS = 1e-7


def compensate(g, w, w_bak, kind, lam, momentum=0.95, mean_square=None):
    """(compensated g, new mean square): g + lambda g g (w - w_bak), with lambda = lam
    ("constant") or lam / (sqrt(ms) + 1e-7) after ms <- m ms + (1 - m) g g ("adaptive")."""
    if kind is None:
        return g, mean_square
    if kind == "adaptive":
        mean_square = momentum * mean_square + (1 - momentum) * g * g
        lam = lam / (np.sqrt(mean_square) + EPS)
    return g + lam * g * g * (w - w_bak), mean_square


def simulate(grad_fn, params, make_optimizer, delays, kind=None, lam=0.04, momentum=0.95):
    """Asynchronous SGD with these delays, keeping every snapshot: step t applies
    grad_fn(snapshot before step s), s = t - min(delays[t], t), compensated against
    that snapshot.  params: a list of arrays, updated in place."""
    optimizer = make_optimizer(params)
    snapshots = []
    mean_squares = [np.zeros_like(p) for p in params]
    for t, delay in enumerate(delays):
        snapshots.append([p.copy() for p in params])
        old = snapshots[t - min(int(delay), t)]
        grads = [np.array(g) for g in grad_fn([o.copy() for o in old])]
        for k, (g, p, b) in enumerate(zip(grads, params, old)):
            grads[k], mean_squares[k] = compensate(g, p, b, kind, lam, momentum, mean_squares[k])
        optimizer.step(grads)
    return params
