"""The documentation's figures, made at build time by fastoptim's own command line.

Before Sphinx reads the pages, this runs

    python -m fastoptim trajectories --quick --out _generated/figures
    python -m fastoptim compare --dataset iris --out _generated/figures

(trajectories also draws every schedule of fastoptim.schedules), so the pages
never show a hand-committed picture of the optimizers.  Each command's output
(the comparison table) is saved beside the figures and included by the pages.
A failing command fails the build.
"""
import subprocess
import sys
import time
from pathlib import Path

COMMANDS = {
    "trajectories": ["trajectories", "--quick"],
    "compare": ["compare", "--dataset", "iris"],
}


def make_figures(app):
    out = Path(app.srcdir) / "_generated" / "figures"
    out.mkdir(parents=True, exist_ok=True)
    for name, arguments in COMMANDS.items():
        start = time.perf_counter()
        result = subprocess.run([sys.executable, "-m", "fastoptim", *arguments, "--out", str(out)],
                                capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"python -m fastoptim {' '.join(arguments)} failed:\n{result.stderr}")
        (out / f"{name}.txt").write_text(result.stdout)
        print(f"figures: python -m fastoptim {' '.join(arguments)}: {time.perf_counter() - start:.1f} s")


def setup(app):
    app.connect("builder-inited", make_figures)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
