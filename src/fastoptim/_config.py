"""Threads, SIMD level and build facts."""
import contextlib
import operator
import os
import sys

from ._ext import runtime as _kernels


def max_threads():
    """The most threads a step may use: 4 per core of the machine, and at least 64.

    Threads beyond the cores never speed up a memory-bound step, and asking the
    OpenMP runtime for hundreds of thousands of them kills the process; a larger
    count is an error (set_num_threads) or clamped to this (OMP_NUM_THREADS).
    """
    return max(64, 4 * (os.cpu_count() or 1))


def _resolve_threads(n):
    """scikit-learn's convention: None -> usable cores, -1 -> all, -2 -> all but one; 0 is an error;
    more than max_threads() is an error."""
    if n is None:
        return min(_kernels.default_num_threads(), max_threads())
    try:
        n = operator.index(n)
    except TypeError:
        raise TypeError(f"n_threads must be an integer or None, got {n!r}") from None
    if n == 0:
        raise ValueError("n_threads=0 is invalid: use a positive count, None for all usable cores, "
                         "or a negative count (-1 = all usable cores, -2 = all but one)")
    if n < 0:
        return max(1, _kernels.usable_cores() + 1 + n)
    if n > max_threads():
        raise ValueError(f"n_threads={n} is more than fastoptim allows ({max_threads()}: 4 per core, at "
                         f"least 64; this machine has {os.cpu_count()} cores); use None for all usable cores")
    return n


def set_num_threads(n_threads):
    """Set the threads every step uses (None: OMP_NUM_THREADS or the usable cores)."""
    _kernels._set_num_threads(_resolve_threads(n_threads))


def get_num_threads():
    """The threads a step uses (1 in a build without OpenMP)."""
    return _kernels.get_num_threads()


@contextlib.contextmanager
def num_threads(n_threads):
    """Use `n_threads` inside a `with` block, then restore the previous count."""
    previous = get_num_threads()
    set_num_threads(n_threads)
    try:
        yield get_num_threads()
    finally:
        _kernels._set_num_threads(previous)


def get_simd_level():
    """The SIMD level of the kernels in use: 'baseline', 'avx2' or 'avx512'."""
    return _kernels.get_simd_level()


def set_simd_level(level):
    """Use the kernels of `level` (must be compiled in and supported by this CPU); returns the previous one."""
    return _kernels.set_simd_level(level)


def _initial_simd_level():
    forced = os.environ.get("FASTOPTIM_SIMD", "").strip().lower()
    if forced:
        if forced not in _kernels.SIMD_LEVELS:
            raise ImportError(f"FASTOPTIM_SIMD={forced!r} is not one of {_kernels.SIMD_LEVELS}")
        return forced
    return _kernels.supported_simd_levels()[-1]


def show_config(file=None):
    """Print versions, compiler, flags, OpenMP, threads and SIMD levels."""
    import numpy

    from . import __version__
    try:
        import Cython
        cython_version = Cython.__version__
    except ImportError:  # pragma: no cover - Cython is a build requirement only
        cython_version = "not installed"
    lines = [
        f"fastoptim:       {__version__}",
        f"NumPy:           {numpy.__version__}",
        f"Cython:          {cython_version}",
        f"Python:          {sys.version.split()[0]}",
        f"compiler:        {_kernels.COMPILER}",
        f"compile flags:   {_kernels.COMPILE_ARGS}",
        f"OpenMP:          {'on' if _kernels.OPENMP else 'off (serial build)'}",
        f"threads:         {get_num_threads()} (usable cores: {_kernels.usable_cores()})",
        f"SIMD level:      {get_simd_level()}",
        f"SIMD compiled:   {', '.join(_kernels.compiled_simd_levels())}",
        f"SIMD supported:  {', '.join(_kernels.supported_simd_levels())}",
    ]
    print("\n".join(lines), file=file or sys.stdout)


_kernels.set_simd_level(_initial_simd_level())
_kernels._set_num_threads(_resolve_threads(None))
