"""Batch normalization lets a network train at a learning rate where the same
network without it diverges.

Two copies of a 6-layer leaky-ReLU MLP learn scikit-learn's digits with the same
fastoptim.torch.SGD (momentum 0.9) at the same, large learning rate; the only
difference is a BatchNorm1d after each hidden linear layer.  Without it the
loss blows up within a few dozen steps; with it, training converges.  The two
loss curves go to a PNG.

    python examples/batchnorm.py [--lr 0.3] [--epochs 10] [--out batchnorm.png]
"""
import argparse
import math

import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

import fastoptim.torch as ft


def mlp(batch_norm, width=128, depth=6, seed=0):
    torch.manual_seed(seed)  # both networks start from the same linear weights
    layers, n_in = [], 64
    for _ in range(depth - 1):
        layers.append(torch.nn.Linear(n_in, width))
        if batch_norm:
            layers.append(torch.nn.BatchNorm1d(width))
        layers.append(torch.nn.LeakyReLU(0.1))
        n_in = width
    layers.append(torch.nn.Linear(n_in, 10))
    return torch.nn.Sequential(*layers)


def train(model, data, lr, epochs, batch_size=64, seed=0):
    """Per-step training losses (inf once the loss is no longer finite) and the test accuracy."""
    X_train, y_train, X_test, y_test = data
    opt = ft.SGD(model.parameters(), lr=lr, momentum=0.9)
    generator = torch.Generator().manual_seed(seed)
    losses = []
    for _ in range(epochs):
        model.train()
        for idx in torch.randperm(len(X_train), generator=generator).split(batch_size):
            if len(idx) < batch_size:  # batch statistics of a few samples are noise
                continue
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(X_train[idx]), y_train[idx])
            if not math.isfinite(loss.item()):
                losses.append(math.inf)
                return losses, float("nan")
            losses.append(loss.item())
            loss.backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        accuracy = (model(X_test).argmax(1) == y_test).float().mean().item()
    return losses, accuracy


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lr", type=float, default=0.3)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--out", default="batchnorm.png")
    args = parser.parse_args()

    X, y = load_digits(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(X / 16.0, y, test_size=0.25, random_state=0, stratify=y)
    data = (torch.tensor(X_train, dtype=torch.float32), torch.tensor(y_train),
            torch.tensor(X_test, dtype=torch.float32), torch.tensor(y_test))

    curves = {}
    for label, batch_norm in (("without batch norm", False), ("with batch norm", True)):
        losses, accuracy = train(mlp(batch_norm), data, args.lr, args.epochs)
        diverged = math.isinf(losses[-1])
        print(f"{label:20} lr={args.lr}: " + (f"diverged at step {len(losses)} (loss not finite)" if diverged
                                             else f"final loss {losses[-1]:.4f}, test accuracy {accuracy:.3f}"))
        curves[label] = (losses, accuracy, diverged)

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for (label, (losses, accuracy, diverged)), color in zip(curves.items(), ("tab:red", "tab:blue")):
        finite = [v for v in losses if math.isfinite(v)]
        suffix = f"diverged: loss not finite at step {len(losses)}" if diverged else f"test accuracy {accuracy:.1%}"
        ax.plot(range(1, len(finite) + 1), finite, color=color, lw=1.2, label=f"{label} ({suffix})")
        if diverged:
            ax.plot(len(finite), finite[-1], "x", color=color, ms=10, mew=2)
    ax.set_yscale("log")
    ax.set_xlabel("step (mini-batch of 64)")
    ax.set_ylabel("training cross-entropy")
    ax.set_title(f"6-layer MLP on digits, fastoptim.torch.SGD(lr={args.lr}, momentum=0.9)")
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
