"""Types: the generated stubs match the rules, and mypy flags a user's type errors against
the installed package (py.typed, the stubs) while passing correct code."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

import fastoptim
from fastoptim.rules import VARIANTS
from fastoptim.rules._stubs import stubs

PACKAGE = Path(fastoptim.__file__).parent


def test_package_is_typed():
    assert (PACKAGE / "py.typed").is_file()
    for compiled in ("_ext/runtime", "_ext/step", "_ext/train"):  # the compiled modules typed code imports
        assert (PACKAGE / f"{compiled}.pyi").is_file(), compiled


@pytest.mark.parametrize("name", sorted(stubs()))
def test_generated_stubs_are_current(name):
    installed = PACKAGE / name
    assert installed.is_file(), f"{name} is not installed"
    assert installed.read_text() == stubs()[name], (
        f"{name} differs from what the rules generate: run `python -m fastoptim.rules._stubs src/fastoptim` "
        f"against the installed package and commit the stubs")


def test_generated_signatures_are_annotated():
    import inspect
    for _, variant in VARIANTS:
        for obj in (getattr(fastoptim, variant.name).__init__, getattr(fastoptim.functional, variant.function)):
            for p in inspect.signature(obj).parameters.values():
                assert p.name == "self" or p.annotation is not p.empty, (variant.name, p.name)


GOOD = '''
import numpy as np
import fastoptim
from fastoptim import schedules
from fastoptim.typing import FloatArray

w: FloatArray = np.zeros(3, np.float32)
params = {"w": w}
opt = fastoptim.Adam(params, lr=0.1, betas=(0.9, 0.99), amsgrad=True)
opt.step({"w": np.ones(3, np.float32)})
opt.step({"w": None}, grad_scale=2.0)
sgd = fastoptim.SGD([w], lr=schedules.cosine(0.1, total_steps=100), momentum=0.9)
sgd2 = fastoptim.SGD([{"params": [w], "lr": 0.1}], lr=lambda t: 0.1 / (1 + t))
m, v = np.zeros_like(w), np.zeros_like(w)
fastoptim.functional.adam(w, np.ones(3, np.float32), m, v, step=1, lr=1e-3)
with fastoptim.num_threads(1) as n:
    count: int = n + fastoptim.get_num_threads()
state: dict[str, object] = opt.state_dict()
level: str = fastoptim.get_simd_level()
'''

BAD = '''
import numpy as np
import fastoptim

w = np.zeros(3, np.float32)
fastoptim.Adam([w], lr="0.1")                                   # line 6
fastoptim.AdamW([w], betas=0.9)                                 # line 7
fastoptim.SGD([w]).step("grads")                                # line 8
fastoptim.functional.sgd(w, w, None, step="1")                  # line 9
fastoptim.set_num_threads("2")                                  # line 10
fastoptim.schedules.cosine(0.1, total_steps=1.5)                # line 11
'''


def test_mypy_checks_user_code_against_the_installed_package(tmp_path):
    (tmp_path / "good.py").write_text(GOOD)
    (tmp_path / "bad.py").write_text(BAD)
    # From an empty directory, so mypy finds fastoptim where Python does: the installed package.
    env = {k: v for k, v in os.environ.items() if k not in ("MYPYPATH", "PYTHONPATH")}
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", "--python-executable", sys.executable,
         "--cache-dir", str(tmp_path / "cache"), "good.py", "bad.py"],
        cwd=tmp_path, capture_output=True, text=True, env=env, timeout=300)
    errors = [line for line in result.stdout.splitlines() if ": error:" in line]
    assert not [e for e in errors if e.startswith("good.py")], result.stdout
    flagged = {int(e.split(":")[1]) for e in errors if e.startswith("bad.py")}
    assert flagged == {6, 7, 8, 9, 10, 11}, result.stdout
    assert 'Argument "lr" to "Adam" has incompatible type "str"' in result.stdout
