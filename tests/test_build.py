"""The build: OpenMP compiled in, the thread and SIMD controls, show_config."""
import io
import os
import subprocess
import sys

import numpy as np
import pytest

import fastoptim
from fastoptim._ext import runtime
from fastoptim._registry import SPECS

from conftest import traced_memory_growth


@pytest.mark.skipif(os.environ.get("FASTOPTIM_ALLOW_SERIAL_BUILD", "") not in ("", "0"),
                    reason="FASTOPTIM_ALLOW_SERIAL_BUILD is set: a serial build is expected")
def test_openmp_is_compiled_in():
    assert runtime.OPENMP, "fastoptim was built without OpenMP (see the banner printed by the build)"
    assert "-fopenmp" in runtime.COMPILE_ARGS or "openmp" in runtime.COMPILE_ARGS


def test_compile_flags_are_portable():
    flags = runtime.COMPILE_ARGS.split()
    if sys.platform == "win32":  # MSVC: /fp:precise is its -ffp-contract=off
        assert {"/O2", "/fp:precise"} <= set(flags)
    else:
        assert {"-O3", "-fno-math-errno", "-ffp-contract=off"} <= set(flags)
    assert not any("march=native" in flag or "arch:" in flag for flag in flags)


def test_show_config():
    out = io.StringIO()
    fastoptim.show_config(file=out)
    text = out.getvalue()
    for key in ("fastoptim:", "NumPy:", "Cython:", "compiler:", "OpenMP:", "threads:", "SIMD level:"):
        assert key in text
    assert np.__version__ in text and fastoptim.__version__ in text
    assert ("OpenMP:          on" in text) == runtime.OPENMP


def test_thread_controls():
    original = runtime._num_threads_setting()  # 0 while steps follow OpenMP's count
    try:
        fastoptim.set_num_threads(1)
        assert fastoptim.get_num_threads() == 1
        with fastoptim.num_threads(2) as n:
            assert n == fastoptim.get_num_threads() == (2 if runtime.OPENMP else 1)
        assert fastoptim.get_num_threads() == 1
        fastoptim.set_num_threads(-1)
        assert fastoptim.get_num_threads() == (runtime.usable_cores() if runtime.OPENMP else 1)
        fastoptim.set_num_threads(None)
        assert fastoptim.get_num_threads() == runtime.default_num_threads()
        with pytest.raises(ValueError, match="n_threads=0"):
            fastoptim.set_num_threads(0)
        with pytest.raises(TypeError, match="integer or None"):
            fastoptim.set_num_threads(1.5)
    finally:
        runtime._set_num_threads(original)


def run_python(code, **env):
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={**os.environ, **env}, cwd="/")
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_default_threads_follow_omp_num_threads():
    assert run_python("import fastoptim; print(fastoptim.get_num_threads())", OMP_NUM_THREADS="1") == "1"


@pytest.mark.parametrize("level", runtime.supported_simd_levels())
def test_fastoptim_simd_env_forces_a_level(level):
    assert run_python("import fastoptim; print(fastoptim.get_simd_level())", FASTOPTIM_SIMD=level) == level


def test_best_simd_level_by_default():
    env = {k: v for k, v in os.environ.items() if k != "FASTOPTIM_SIMD"}
    code = "import fastoptim; print(fastoptim.get_simd_level())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd="/")
    assert out.stdout.strip() == runtime.supported_simd_levels()[-1]


def test_unsupported_simd_level_is_refused():
    with pytest.raises(ValueError, match="Invalid SIMD level"):
        fastoptim.set_simd_level("sse9")
    for level in set(runtime.SIMD_LEVELS) - set(runtime.supported_simd_levels()):
        with pytest.raises(ValueError, match="not (supported|compiled)"):
            fastoptim.set_simd_level(level)


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_steps_allocate_nothing(spec):
    """After the first step (which creates the state), a step allocates no Python memory."""
    rng = np.random.default_rng(0)
    options = list(spec.option_sets())[-1]  # the one with the most state
    params = [rng.standard_normal(n) for n in (100, 1000, 50_000)]
    grads = [rng.standard_normal(p.shape) for p in params]
    opt = spec.cls(params, **options)
    opt.step(grads)
    opt.step(grads)
    kept, peak = traced_memory_growth(lambda: opt.step(grads), 200)
    assert kept <= 0, f"{kept} bytes kept after 200 steps"
    assert peak < 4096, f"a step allocated {peak} bytes at its peak"


def test_tests_run_against_the_installed_package():
    source_tree = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")
    assert not os.path.abspath(fastoptim.__file__).startswith(source_tree)
