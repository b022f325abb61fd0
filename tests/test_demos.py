"""python -m fastoptim compare / trajectories: they run, reach their targets and write readable PNGs."""
import io
import os
import subprocess
import sys

import pytest

from fastoptim import demos

# Every contender, from the registry (fastoptim.rules): SGD, Momentum, Nesterov, Adagrad, ...
LABELS = [c.label for c in demos.CONTENDERS]


def assert_png(path, min_width=600):
    from matplotlib import image
    assert os.path.getsize(path) > 10_000, f"{path} is suspiciously small"
    pixels = image.imread(path)
    assert pixels.shape[1] >= min_width and pixels.shape[0] >= 300
    assert pixels.std() > 0.05, f"{path} looks blank"


@pytest.fixture(scope="module")
def iris_comparison(tmp_path_factory):
    out = tmp_path_factory.mktemp("compare")
    text = io.StringIO()
    results = demos.compare("iris", out=str(out), file=text)
    return results, text.getvalue(), out


def test_every_optimizer_reaches_90_percent_test_accuracy_on_iris(iris_comparison):
    results, _, _ = iris_comparison
    assert [r["label"] for r in results] == LABELS
    for r in results:
        assert r["accuracy"] >= 0.9, f"{r['label']} reached only {r['accuracy']:.3f}"
        assert r["loss"] < 0.5 and r["time"] > 0
        assert r["history"].loss[-1] < r["history"].loss[0]


def test_compare_prints_the_table_with_hyperparameters(iris_comparison):
    results, text, _ = iris_comparison
    lines = text.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("optimizer"))
    for name in ("train loss", "test acc", "time (s)", "hyperparameters"):
        assert name in lines[header]
    rows = lines[header + 2:header + 2 + len(LABELS)]
    assert [row.split()[0] for row in rows] == LABELS
    assert "lr=0.05, momentum=0.9, nesterov=True" in rows[2]
    for row, r in zip(rows, results):
        assert f"{r['accuracy']:.3f}" in row


def test_compare_writes_loss_and_accuracy_curves(iris_comparison):
    _, text, out = iris_comparison
    for name in ("compare_iris_loss.png", "compare_iris_accuracy.png"):
        assert_png(out / name)
        assert f"wrote {out / name}" in text


def test_compare_on_digits_runs(tmp_path):
    results = demos.compare("digits", epochs=2, out=None, file=io.StringIO())
    assert [r["label"] for r in results] == LABELS
    assert all(r["accuracy"] > 0.8 for r in results)
    assert not list(tmp_path.iterdir())


def run_cli(*args, **env):
    return subprocess.run([sys.executable, "-m", "fastoptim", *args], capture_output=True, text=True,
                          env={**os.environ, **env}, cwd="/", timeout=300)


def test_trajectories_command_writes_every_png(tmp_path):
    result = run_cli("trajectories", "--quick", "--out", str(tmp_path / "paths"))
    assert result.returncode == 0, result.stderr
    names = sorted(p.name for p in (tmp_path / "paths").iterdir())
    assert names == sorted([f"trajectories_{n}.png" for n in
                            ("quadratic", "ill_conditioned", "saddle", "rosenbrock", "x_cos_pi_x")]
                           + ["schedules.png"])
    for name in names:
        assert_png(tmp_path / "paths" / name, min_width=1000)
        assert f"wrote {tmp_path / 'paths' / name}" in result.stdout


def test_trajectories_show_what_they_claim():
    from fastoptim.demos import problems
    # Plain descent settles in the local minimum of x cos(pi x); momentum carries over the bump.
    steps, overrides = demos.TRAJECTORY_SETTINGS["x_cos_pi_x"]
    by_label = {c.label: c for c in demos.CONTENDERS}
    local, best = problems.x_cos_pi_x.minima
    sgd = demos.descend(problems.x_cos_pi_x, by_label["SGD"], {"lr": overrides["SGD"]}, steps)
    momentum = demos.descend(problems.x_cos_pi_x, by_label["Momentum"], {"lr": overrides["Momentum"]}, 200)
    assert sgd[-1, 0] == pytest.approx(local[0], abs=1e-3)
    assert momentum[-1, 0] == pytest.approx(best[0], abs=0.05)
    # On the convex quadratics every contender ends closer to the minimum than it started.
    for name in ("quadratic", "ill_conditioned"):
        fn = getattr(problems, name)
        steps, runs = demos._runs(fn, 1.0)
        for contender, _, path in runs:
            assert fn(path[-1]) < fn(path[0]) / 10, contender.label


def test_compare_command(tmp_path):
    result = run_cli("compare", "--dataset", "iris", "--epochs", "5", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert all(label in result.stdout for label in LABELS)
    assert (tmp_path / "compare_iris_loss.png").exists()
    result = run_cli("compare", "--dataset", "mnist")
    assert result.returncode != 0 and "invalid choice" in result.stderr
    result = run_cli("compare", "--epochs", "0")
    assert result.returncode != 0 and "epochs must be a positive integer" in result.stderr


def test_without_matplotlib_the_commands_say_so(tmp_path):
    # A None entry in sys.modules makes `import matplotlib` fail, as if it were not installed.
    code = ("import sys; sys.modules['matplotlib'] = None; from fastoptim.__main__ import main; "
            "sys.exit(main(sys.argv[1:]))")
    for args in (["trajectories", "--out", str(tmp_path)], ["compare", "--out", str(tmp_path)]):
        result = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd="/")
        assert result.returncode != 0
        assert "need matplotlib" in result.stderr and "fastoptim[plot]" in result.stderr
        assert "Traceback" not in result.stderr
    assert not list(tmp_path.iterdir())
    # The table alone needs no matplotlib.
    result = subprocess.run([sys.executable, "-c", code, "compare", "--epochs", "2"], capture_output=True,
                            text=True, cwd="/")
    assert result.returncode == 0 and "AdamW" in result.stdout


def test_example_schedules_cover_every_schedule():
    from fastoptim import demos, schedules
    examples = demos.example_schedules(100)
    plateau_curve = [examples["ReduceLROnPlateau"](t) for t in range(100)]
    assert plateau_curve[0] == 0.1 and plateau_curve[-1] < 0.01  # the stalled loss cut the lr
    covered = {type(s).__name__.lower() for s in examples.values()}
    for name in schedules.__all__:
        if name[0].islower() and name != "plot":
            assert name.replace("_", "") in covered, f"{name} has no example in the lr-curve PNG"


def test_every_rule_with_demo_settings_is_a_contender_python_level_ones_too():
    from fastoptim.rules import VARIANTS
    assert LABELS == [demo.label for _, variant in VARIANTS for demo in variant.demos]
    by_label = {c.label: c for c in demos.CONTENDERS}
    assert (by_label["Muon"].ndim, by_label["Muon"].closure) == (2, False)  # from the rules, not the demos
    assert (by_label["LBFGS"].ndim, by_label["LBFGS"].closure) == (None, True)
    assert by_label["Adam"].ndim is None and not by_label["Adam"].closure


def test_a_contender_gives_its_rule_the_shapes_it_takes():
    import numpy as np
    muon = {c.label: c for c in demos.CONTENDERS}["Muon"]
    params = {"W": np.zeros((4, 3)), "b": np.zeros(3)}
    seen = []

    def loss_and_grad(p, batch):
        seen.append({k: v.shape for k, v in p.items()})
        return 0.0, {"W": np.ones((4, 3)), "b": np.ones(3)}
    views, shaped_loss_and_grad = muon.problem(params, loss_and_grad)
    assert views["b"].shape == (1, 3) and np.shares_memory(views["b"], params["b"])
    _, grads = shaped_loss_and_grad(views, None)
    assert seen == [{"W": (4, 3), "b": (3,)}] and grads["b"].shape == (1, 3)
    optimizer = muon.make(views)
    muon.step(optimizer, views, lambda p: shaped_loss_and_grad(p, None))
    assert np.all(params["b"] != 0) and np.all(params["W"] != 0)  # moved through the views
