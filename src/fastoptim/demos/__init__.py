"""python -m fastoptim compare / trajectories: the optimizers side by side.

compare: softmax regression on iris or digits with each optimizer, a table
of final loss, test accuracy and wall time, and loss curves.
trajectories: each optimizer's path over the contours of the 2-D test
functions, and over x cos(pi x), where plain descent settles in a local
minimum.
"""
import os
import sys
from dataclasses import dataclass

import numpy as np

from .. import optim, problems, schedules, train

PLOT_HELP = "pip install 'fastoptim[plot]' (or matplotlib)"


@dataclass(frozen=True)
class Contender:
    """An optimizer of the comparison: its label, class and hyperparameters."""
    label: str
    cls: type
    options: dict

    def make(self, params, **overrides):
        return self.cls(params, **{**self.options, **overrides})

    def describe(self, **overrides):
        return ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                         for k, v in {**self.options, **overrides}.items())


# Hyperparameters that do well on standardized iris and digits within the
# default epochs.  Adadelta's eps is raised from torch's 1e-6: with it, the
# first steps are ~sqrt(eps) long and the short runs here never get going.
CONTENDERS = (
    Contender("SGD", optim.SGD, dict(lr=0.1)),
    Contender("Momentum", optim.SGD, dict(lr=0.05, momentum=0.9)),
    Contender("Nesterov", optim.SGD, dict(lr=0.05, momentum=0.9, nesterov=True)),
    Contender("Adagrad", optim.Adagrad, dict(lr=0.1)),
    Contender("RMSprop", optim.RMSprop, dict(lr=0.01)),
    Contender("Adadelta", optim.Adadelta, dict(lr=1.0, eps=1e-4)),
    Contender("Adam", optim.Adam, dict(lr=0.01)),
    Contender("AdamW", optim.AdamW, dict(lr=0.01, weight_decay=0.01)),
)

# Per data set: epochs, batch size, L2 penalty.
COMPARE_SETTINGS = {"iris": (60, 16, 1e-4), "digits": (20, 64, 1e-4)}


def pyplot():
    """matplotlib.pyplot on the Agg backend, or a SystemExit saying how to get it."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SystemExit(f"the plots need matplotlib, which is not installed: {PLOT_HELP}") from None
    return plt


def _output_dir(out):
    os.makedirs(out, exist_ok=True)
    return out


# ---- compare --------------------------------------------------------------------------

def compare(dataset="iris", *, epochs=None, batch_size=None, seed=0, out=None, file=None):
    """Train softmax regression on `dataset` with every contender; print the table, plot to `out`.

    Returns one dict per contender: label, hyperparameters, loss (final
    training loss over the whole training set), accuracy (test set), time
    (seconds of training) and the History.
    """
    if dataset not in COMPARE_SETTINGS:
        raise ValueError(f"dataset must be one of {tuple(COMPARE_SETTINGS)}, got {dataset!r}")
    default_epochs, default_batch, l2 = COMPARE_SETTINGS[dataset]
    epochs = train._positive_int(default_epochs if epochs is None else epochs, "epochs")
    batch_size = train._positive_int(default_batch if batch_size is None else batch_size, "batch_size")
    plt = pyplot() if out is not None else None  # before training: a missing matplotlib fails fast
    file = file or sys.stdout
    data = problems.load_dataset(dataset, seed=seed)
    model = problems.SoftmaxRegression(data.n_features, data.n_classes, l2=l2)
    print(f"softmax regression on {dataset}: {len(data.X_train)} training and {len(data.X_test)} test "
          f"samples, {data.n_features} features, {data.n_classes} classes; {epochs} epochs of mini-batches "
          f"of {batch_size}, L2 {l2:g}, seed {seed}", file=file)
    results = []
    for contender in CONTENDERS:
        params = model.init_params()
        optimizer = contender.make(params)
        history = train.fit(params, model.loss_and_grad, (data.X_train, data.y_train), optimizer,
                            epochs=epochs, batch_size=batch_size, seed=seed, progress=False,
                            validation=lambda p: model.accuracy(p, data.X_test, data.y_test))
        results.append(dict(label=contender.label, hyperparameters=contender.describe(),
                            loss=model.loss(params, (data.X_train, data.y_train)),
                            accuracy=model.accuracy(params, data.X_test, data.y_test),
                            time=sum(history.time), history=history))
    _print_table(results, file)
    if plt is not None:
        for path in plot_comparison(plt, results, dataset, _output_dir(out)):
            print(f"wrote {path}", file=file)
    return results


def _print_table(results, file):
    width = max(len(r["hyperparameters"]) for r in results)
    header = f"{'optimizer':10} {'hyperparameters':{width}} {'train loss':>10} {'test acc':>9} {'time (s)':>9}"
    print(header, file=file)
    print("-" * len(header), file=file)
    for r in results:
        print(f"{r['label']:10} {r['hyperparameters']:{width}} {r['loss']:10.4f} {r['accuracy']:9.3f} "
              f"{r['time']:9.3f}", file=file)


def _colors(plt, n):
    return [plt.get_cmap("tab10")(i % 10) for i in range(n)]


def plot_comparison(plt, results, dataset, out):
    """Loss per epoch and per second of training, and test accuracy per epoch; returns the paths written."""
    colors = _colors(plt, len(results))
    fig, (by_epoch, by_time) = plt.subplots(1, 2, figsize=(13, 5))
    for r, color in zip(results, colors):
        h = r["history"]
        epochs = np.arange(1, len(h.loss) + 1)
        by_epoch.plot(epochs, h.loss, color=color, label=r["label"], lw=1.8)
        by_time.plot(np.cumsum(h.time) * 1e3, h.loss, color=color, label=r["label"], lw=1.8)
    for ax, xlabel in ((by_epoch, "epoch"), (by_time, "training time (ms)")):
        ax.set_yscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("mean training loss of the epoch (cross-entropy)")
        ax.grid(alpha=0.3, which="both")
    by_epoch.xaxis.set_major_locator(plt.MaxNLocator(integer=True))
    by_epoch.set_title("loss per epoch")
    by_time.set_title("loss against wall time")
    by_epoch.legend(ncol=2)
    fig.suptitle(f"softmax regression on {dataset}: training loss")
    fig.tight_layout()
    loss_path = os.path.join(out, f"compare_{dataset}_loss.png")
    fig.savefig(loss_path, dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(8, 5))
    for r, color in zip(results, colors):
        h = r["history"]
        ax.plot(np.arange(1, len(h.val) + 1), h.val, color=color, lw=1.8,
                label=f"{r['label']} ({r['accuracy']:.3f})")
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(plt.MaxNLocator(integer=True))
    ax.set_ylabel("test accuracy")
    ax.set_ylim(min(0.5, min(min(r["history"].val) for r in results)) - 0.02, 1.01)
    ax.grid(alpha=0.3)
    ax.legend(title="optimizer (final)", loc="lower right", ncol=2)
    ax.set_title(f"softmax regression on {dataset}: test accuracy")
    fig.tight_layout()
    accuracy_path = os.path.join(out, f"compare_{dataset}_accuracy.png")
    fig.savefig(accuracy_path, dpi=110)
    plt.close(fig)
    return [loss_path, accuracy_path]


# ---- trajectories ------------------------------------------------------------------------

# Per function: steps, and each contender's learning rate (or a dict of
# options) overriding the comparison's.  Chosen so that each path shows the
# method's character within the plotted box.  Adadelta gets a larger eps on
# the quadratics so that it moves visibly within the steps shown.
TRAJECTORY_SETTINGS = {
    "quadratic": (40, {"SGD": 0.1, "Momentum": 0.05, "Nesterov": 0.05, "Adagrad": 1.0, "RMSprop": 0.1,
                       "Adadelta": {"lr": 1.0, "eps": 1e-2}, "Adam": 0.5, "AdamW": 0.5}),
    "ill_conditioned": (40, {"SGD": 0.4, "Momentum": 0.1, "Nesterov": 0.1, "Adagrad": 1.0, "RMSprop": 0.1,
                             "Adadelta": {"lr": 1.0, "eps": 1e-2}, "Adam": 0.5, "AdamW": 0.5}),
    "saddle": (40, {"SGD": 0.1, "Momentum": 0.05, "Nesterov": 0.05, "Adagrad": 0.5, "RMSprop": 0.05,
                    "Adadelta": {"lr": 1.0, "eps": 1e-2}, "Adam": 0.1, "AdamW": 0.1}),
    "rosenbrock": (1000, {"SGD": 1e-3, "Momentum": 2e-4, "Nesterov": 2e-4, "Adagrad": 0.3, "RMSprop": 0.01,
                          "Adadelta": 1.0, "Adam": 0.05, "AdamW": 0.05}),
    "x_cos_pi_x": (60, {"SGD": 0.05, "Momentum": 0.05, "Nesterov": 0.05, "Adagrad": 0.5, "RMSprop": 0.05,
                        "Adadelta": 1.0, "Adam": 0.2, "AdamW": 0.2}),
}


def descend(fn, contender, options, steps):
    """The points visited by `contender` (with `options` overridden) from fn.start: shape (steps + 1, fn.dim)."""
    x = np.array(fn.start, dtype=np.float64)
    optimizer = contender.make([x], **options)
    path = np.empty((steps + 1, fn.dim))
    path[0] = x
    for t in range(steps):
        _, grads = fn.loss_and_grad([x])
        optimizer.step(grads)
        path[t + 1] = x
    return path


def trajectories(out=".", *, file=None, step_scale=1.0):
    """Write one PNG per 2-D function and one for x cos(pi x); returns the paths written.

    step_scale multiplies every run's number of steps (a quick look: 0.2).
    """
    plt = pyplot()
    file = file or sys.stdout
    out = _output_dir(out)
    written = []
    for fn in problems.FUNCTIONS_2D:
        written.append(_plot_2d(plt, fn, out, step_scale))
    written.append(_plot_1d(plt, problems.x_cos_pi_x, out, step_scale))
    written.append(schedules.plot(example_schedules(SCHEDULE_STEPS), SCHEDULE_STEPS,
                                  os.path.join(out, "schedules.png"),
                                  title=f"Every learning-rate schedule, over {SCHEDULE_STEPS} steps"))
    for path in written:
        print(f"wrote {path}", file=file)
    return written


SCHEDULE_STEPS = 200


def example_schedules(total_steps):
    """One example of every schedule in fastoptim.schedules, over `total_steps` steps."""
    T = total_steps
    plateau = schedules.ReduceLROnPlateau(0.1, factor=0.5, patience=5)
    # A loss that improves, then stalls: the plateau schedule halves the lr at each stall.
    losses = [1.0 / (1 + t) if t < T // 3 else 1.0 / (1 + T // 3) for t in range(T)]
    plateau_values = []
    for loss in losses:
        plateau_values.append(plateau(0))
        plateau.step(loss)
    return {
        "constant(0.1)": schedules.constant(0.1),
        "piecewise_constant": schedules.piecewise_constant([T // 4, T // 2], [0.1, 0.05, 0.01]),
        "exponential(gamma=0.98)": schedules.exponential(0.1, 0.98, min_lr=0.005),
        "polynomial(alpha=0.5)": schedules.polynomial(0.1, 0.5, beta=0.1),
        "polynomial_decay(power=2)": schedules.polynomial_decay(0.1, 0.001, T, power=2.0),
        "sqrt": schedules.sqrt(0.1),
        "factor(0.99)": schedules.factor(0.1, 0.99, min_lr=0.01),
        "multi_factor": schedules.multi_factor(0.1, [T // 3, 2 * T // 3], 0.3),
        "cosine (warm-up)": schedules.cosine(0.1, T, final_lr=0.001, warmup_steps=T // 10),
        "warmup(exponential)": schedules.warmup(schedules.exponential(0.1, 0.99), T // 8),
        "one_cycle": schedules.one_cycle(0.1, T),
        "join(constant, cosine)": schedules.join([schedules.constant(0.05),
                                                  schedules.cosine(0.1, T // 2)], [T // 2]),
        "ReduceLROnPlateau": lambda t: plateau_values[t],
    }


def _runs(fn, step_scale):
    steps, overrides = TRAJECTORY_SETTINGS[fn.name]
    steps = max(1, int(round(steps * step_scale)))
    runs = []
    for c in CONTENDERS:
        options = overrides[c.label] if isinstance(overrides[c.label], dict) else {"lr": overrides[c.label]}
        runs.append((c, c.describe(**options), descend(fn, c, options, steps)))
    return steps, runs


def _plot_2d(plt, fn, out, step_scale):
    steps, runs = _runs(fn, step_scale)
    (x_lo, x_hi), (y_lo, y_hi) = fn.box
    grid_x, grid_y = np.meshgrid(np.linspace(x_lo, x_hi, 200), np.linspace(y_lo, y_hi, 200))
    values = fn(np.stack([grid_x, grid_y]))
    if fn.name == "rosenbrock":  # a narrow curved valley: levels spaced in log
        levels = np.geomspace(0.05, values.max(), 18)
        shade = np.log(values + 0.05)
    else:
        levels = np.linspace(values.min(), values.max(), 22)
        shade = values
    fig, axes = plt.subplots(2, 4, figsize=(17, 8.2), sharex=True, sharey=True)
    for ax, (contender, options, path), color in zip(axes.flat, runs, _colors(plt, len(runs))):
        # A raster shade (cheap to draw) under the contour lines.
        ax.imshow(shade, extent=(x_lo, x_hi, y_lo, y_hi), origin="lower", cmap="Greys", alpha=0.35,
                  aspect="auto", interpolation="bilinear")
        ax.contour(grid_x, grid_y, values, levels=levels, colors="grey", linewidths=0.5)
        mark_every = max(1, steps // 40)
        ax.plot(path[:, 0], path[:, 1], "-", color=color, lw=1.5)
        ax.plot(path[::mark_every, 0], path[::mark_every, 1], "o", color=color, ms=3)
        ax.plot(*path[0], "s", color="black", ms=6, label="start")
        ax.plot(*path[-1], "o", color=color, mec="black", ms=8, label="end")
        for minimum in fn.minima:
            ax.plot(*minimum, "*", color="gold", mec="black", ms=14, label="minimum")
        if fn.name == "saddle":
            ax.plot(0, 0, "X", color="red", mec="black", ms=10, label="saddle point")
        ax.set_xlim(x_lo, x_hi)
        ax.set_ylim(y_lo, y_hi)
        final = float(fn(path[-1]))
        ax.set_title(f"{contender.label} ({options})\nf = {final:.3g} at ({path[-1, 0]:.2f}, {path[-1, 1]:.2f})",
                     fontsize=10)
        ax.grid(alpha=0.2)
    return _save_grid(plt, fig, axes, ("$x_1$", "$x_2$"),
                      f"{fn.formula}: {steps} steps from ({fn.start[0]:g}, {fn.start[1]:g})",
                      os.path.join(out, f"trajectories_{fn.name}.png"))


def _plot_1d(plt, fn, out, step_scale):
    steps, runs = _runs(fn, step_scale)
    (lo, hi), = fn.box
    xs = np.linspace(lo, hi, 400)
    fs = fn(xs[None])
    (local,), (best,) = fn.minima
    fig, axes = plt.subplots(2, 4, figsize=(17, 7.5), sharex=True, sharey=True)
    for ax, (contender, options, path), color in zip(axes.flat, runs, _colors(plt, len(runs))):
        ax.plot(xs, fs, color="grey", lw=1.5, label="f(x)")
        points = path[:, 0]
        ax.scatter(points, fn(points[None]), c=np.arange(len(points)), cmap="viridis", s=18, zorder=3,
                   label="iterates (dark to light)")
        ax.plot(points[0], fn(points[:1][None])[0], "s", color="black", ms=7, label="start")
        ax.plot(local, fn(np.array([[local]]))[0], "v", color="red", ms=9, label="local minimum")
        ax.plot(best, fn(np.array([[best]]))[0], "*", color="gold", mec="black", ms=14, label="global minimum")
        where = "global" if abs(points[-1] - best) < 0.05 else "local" if abs(points[-1] - local) < 0.05 else "no"
        ax.set_title(f"{contender.label} ({options})\nends at x = {points[-1]:.3f} ({where} minimum)", fontsize=10)
        ax.set_xlim(lo, hi)
        ax.grid(alpha=0.3)
    return _save_grid(plt, fig, axes, ("x", "f(x)"), f"{fn.formula}: {steps} steps from x = {fn.start[0]:g}",
                      os.path.join(out, f"trajectories_{fn.name}.png"))


def _save_grid(plt, fig, axes, axis_labels, title, path):
    """Label the outer axes of a 2 x 4 grid, add one legend and the title, write the PNG."""
    for ax in axes[-1]:
        ax.set_xlabel(axis_labels[0])
    for ax in axes[:, 0]:
        ax.set_ylabel(axis_labels[1])
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), frameon=False)
    fig.suptitle(title, fontsize=14)
    fig.tight_layout(rect=(0, 0.04, 1, 0.97))
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


# ---- command line ----------------------------------------------------------------------------

def add_compare_arguments(parser):
    parser.add_argument("--dataset", choices=tuple(COMPARE_SETTINGS), default="iris")
    parser.add_argument("--epochs", type=int, default=None,
                        help="passes over the training set (default: iris 60, digits 20)")
    parser.add_argument("--batch-size", type=int, default=None, help="default: iris 16, digits 64")
    parser.add_argument("--seed", type=int, default=0, help="the split, the shuffling")
    parser.add_argument("--out", metavar="DIR", default=None,
                        help="write loss and accuracy curves (PNG) to DIR (needs matplotlib)")


def add_trajectories_arguments(parser):
    parser.add_argument("--out", metavar="DIR", default=".", help="where to write the PNGs (default: .)")
    parser.add_argument("--quick", action="store_true", help="a fifth of the steps")


def main(args):
    try:
        if args.command == "compare":
            compare(args.dataset, epochs=args.epochs, batch_size=args.batch_size, seed=args.seed, out=args.out)
        else:
            trajectories(args.out, step_scale=0.2 if args.quick else 1.0)
    except (ValueError, TypeError) as error:
        raise SystemExit(f"python -m fastoptim {args.command}: {error}") from None
    return 0
