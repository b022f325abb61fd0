"""python -m fastoptim compare: softmax regression on iris or digits with each
optimizer, a table of final loss, test accuracy and wall time, and loss curves."""
import os
import sys

import numpy as np

from .. import _validation, train
from . import problems
from .contenders import CONTENDERS, _colors, _output_dir, pyplot

# Per data set: epochs, batch size, L2 penalty.
COMPARE_SETTINGS = {"iris": (60, 16, 1e-4), "digits": (20, 64, 1e-4)}


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
    epochs = _validation.positive_int(default_epochs if epochs is None else epochs, "epochs")
    batch_size = _validation.positive_int(default_batch if batch_size is None else batch_size, "batch_size")
    plt = pyplot() if out is not None else None  # before training: a missing matplotlib fails fast
    file = file or sys.stdout
    data = problems.load_dataset(dataset, seed=seed)
    model = problems.SoftmaxRegression(data.n_features, data.n_classes, l2=l2)
    print(f"softmax regression on {dataset}: {len(data.X_train)} training and {len(data.X_test)} test "
          f"samples, {data.n_features} features, {data.n_classes} classes; {epochs} epochs of mini-batches "
          f"of {batch_size}, L2 {l2:g}, seed {seed}", file=file)
    results = []
    for contender in CONTENDERS:
        model_params = model.init_params()
        params, loss_and_grad = contender.problem(model_params, model.loss_and_grad)
        optimizer = contender.make(params)
        history = train.fit(params, loss_and_grad, (data.X_train, data.y_train), optimizer,
                            epochs=epochs, batch_size=batch_size, seed=seed, progress=False,
                            validation=lambda _: model.accuracy(model_params, data.X_test, data.y_test))
        results.append(dict(label=contender.label, hyperparameters=contender.describe(),
                            loss=model.loss(model_params, (data.X_train, data.y_train)),
                            accuracy=model.accuracy(model_params, data.X_test, data.y_test),
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
