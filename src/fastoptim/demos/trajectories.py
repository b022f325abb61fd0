"""python -m fastoptim trajectories: each optimizer's path over the contours of
the 2-D test functions, and over x cos(pi x), where plain descent settles in a
local minimum; and every learning-rate schedule."""
import os
import sys

import numpy as np

from .. import schedules
from . import problems
from .contenders import CONTENDERS, TRAJECTORY_OPTIONS, _colors, _output_dir, pyplot

# ---- trajectories ------------------------------------------------------------------------

# Steps per test function; each contender's lr (or options) there comes from its
# rule's demo settings (fastoptim.rules), chosen so that each path shows the
# method's character within the plotted box.
TRAJECTORY_STEPS = {"quadratic": 40, "ill_conditioned": 40, "saddle": 40, "rosenbrock": 1000, "x_cos_pi_x": 60}
TRAJECTORY_SETTINGS = {name: (steps, {c.label: TRAJECTORY_OPTIONS[c.label][name] for c in CONTENDERS})
                       for name, steps in TRAJECTORY_STEPS.items()}


def descend(fn, contender, options, steps):
    """The points visited by `contender` (with `options` overridden) from fn.start: shape (steps + 1, fn.dim)."""
    x = np.array(fn.start, dtype=np.float64)
    params, loss_and_grad = contender.problem([x], fn.loss_and_grad)
    optimizer = contender.make(params, **options)
    path = np.empty((steps + 1, fn.dim))
    path[0] = x
    for t in range(steps):
        contender.step(optimizer, params, loss_and_grad)
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
    fig, axes = _grid(plt, len(runs), height=4.1)
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
    fig, axes = _grid(plt, len(runs), height=3.75)
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


COLUMNS = 4


def _grid(plt, n, height):
    """A grid of COLUMNS panels per row for n runs; panels past the n-th are hidden."""
    rows = max(1, -(-n // COLUMNS))
    fig, axes = plt.subplots(rows, COLUMNS, figsize=(17, height * rows), sharex=True, sharey=True, squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, axes


def _save_grid(plt, fig, axes, axis_labels, title, path):
    """Label the outer axes of the grid, add one legend and the title, write the PNG."""
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
