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


GOOD_DISTRIBUTED_TRAIN = '''
import numpy as np
import numpy.typing as npt
import fastoptim
from fastoptim import train
from fastoptim.distributed import (DataParallel, ElasticAveraging, ParameterServer, ZeroRedundancyOptimizer,
                                   broadcast_params, random_delays, round_robin_delays, simulate)

w = np.zeros(3)
params = {"w": w}
same: dict[str, npt.NDArray[np.float64]] = broadcast_params(params, root=0, timeout=10.0)  # keeps the structure
dp = DataParallel(fastoptim.Adam(params, lr=0.1), average=False, bucket_bytes=1 << 20)
dp.step(dp.grad_buffers())
zero = ZeroRedundancyOptimizer([w], fastoptim.Adam, lr=0.1)
ea = ElasticAveraging(fastoptim.SGD([w], lr=0.1), period=4, alpha=0.5)
ps = ParameterServer([w], lambda p: fastoptim.SGD(p, lr=0.1), servers=1, compensation="constant")
stats = ps.run(lambda server: None)
delays: npt.NDArray[np.int64] = random_delays(4, 10, seed=1) + round_robin_delays(4, 10)
out = simulate(lambda snapshot: [snapshot[0]], [w], lambda p: fastoptim.SGD(p, lr=0.1), delays=delays)
seconds: float = out["seconds"]
by_name = simulate(lambda snapshot: {"w": snapshot["w"]}, params, lambda p: fastoptim.SGD(p, lr=0.1), delays=[0, 1])
norm: float = train.clip_grad_norm([w], max_norm=1.0) + train.grad_norm({"w": w}, norm_type=1.0)
stopper = train.EarlyStopping(patience=3)
history = train.fit([w], lambda p, batch: (0.0, [w]), np.zeros((4, 3)), fastoptim.SGD([w]), epochs=2,
                    pacing=train.linear_pacing(0.5), early_stopping=stopper, progress=False)
losses: list[float] = history.loss
'''

BAD_DISTRIBUTED_TRAIN = '''
import numpy as np
import fastoptim
from fastoptim import train
from fastoptim.distributed import DataParallel, ParameterServer, simulate

w = np.zeros(3)
DataParallel("adam")                                                          # line 8
DataParallel(fastoptim.Adam([w]), timeout="10")                               # line 9
ParameterServer([w], fastoptim.SGD([w]), servers=1)                           # line 10
simulate(lambda s: s, [w], lambda p: fastoptim.SGD(p), delays=[0], compensation=1)  # line 11
simulate(lambda s: {"w": s[0]}, [w], lambda p: fastoptim.SGD(p), delays=[0])  # line 12
train.clip_grad_norm([w], max_norm="1")                                       # line 13
train.fit([w], lambda p, b: (0.0, p), np.zeros((4, 3)), fastoptim.SGD([w]), epochs=2.5)  # line 14
train.minibatches(10, 3, pacing=0.5)                                          # line 15
'''


def _mypy(tmp_path, files):
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    # From an empty directory, so mypy finds fastoptim where Python does: the installed package.
    env = {k: v for k, v in os.environ.items() if k not in ("MYPYPATH", "PYTHONPATH")}
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", "--python-executable", sys.executable,
         "--cache-dir", str(tmp_path / "cache"), *files],
        cwd=tmp_path, capture_output=True, text=True, env=env, timeout=300)
    errors = [line for line in result.stdout.splitlines() if ": error:" in line]
    return result.stdout, errors


def _flagged_lines(errors, name):
    return {int(e.split(":")[1]) for e in errors if e.startswith(name)}


def test_mypy_checks_user_code_against_the_installed_package(tmp_path):
    # One mypy run for every case: each costs about half a minute.
    stdout, errors = _mypy(tmp_path, {"good.py": GOOD, "bad.py": BAD,
                                      "good_distributed_train.py": GOOD_DISTRIBUTED_TRAIN,
                                      "bad_distributed_train.py": BAD_DISTRIBUTED_TRAIN})
    assert not [e for e in errors if e.startswith("good")], stdout
    assert _flagged_lines(errors, "bad.py") == {6, 7, 8, 9, 10, 11}, stdout
    assert 'Argument "lr" to "Adam" has incompatible type "str"' in stdout
    assert _flagged_lines(errors, "bad_distributed_train.py") == set(range(8, 16)), stdout
    assert 'Argument 1 to "DataParallel" has incompatible type "str"' in stdout
