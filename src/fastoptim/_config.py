"""Threads, SIMD level and build facts."""
import contextlib
import operator
import os
import sys
from collections.abc import Iterator
from typing import TextIO

from ._ext import runtime as _kernels


def max_threads() -> int:
    """The most threads a step may use: 4 per core of the machine, and at least 64.

    Threads beyond the cores never speed up a memory-bound step, and asking the
    OpenMP runtime for hundreds of thousands of them kills the process; a larger
    count is an error (set_num_threads) or clamped to this (OMP_NUM_THREADS).
    """
    return _kernels.max_threads()


def _resolve_threads(n: int | None) -> int:
    """scikit-learn's convention: None -> usable cores, -1 -> all, -2 -> all but one; 0 is an error;
    more than max_threads() is an error."""
    if n is None:
        return _kernels.default_num_threads()
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


def set_num_threads(n_threads: int | None) -> None:
    """Set the threads every step uses, overriding OpenMP's count.

    Parameters
    ----------
    n_threads : int or None
        A positive count; -1 for all usable cores, -2 for all but one (scikit-learn's
        convention).  None goes back to following OpenMP, the default: the count of
        ``omp_get_max_threads()``, which ``OMP_NUM_THREADS`` and
        ``threadpoolctl.threadpool_limits`` set (at most the usable cores unless
        ``OMP_NUM_THREADS`` is set).

    Raises
    ------
    TypeError
        n_threads is not an integer or None.
    ValueError
        n_threads is 0.

    Examples
    --------
    >>> import fastoptim
    >>> fastoptim.set_num_threads(1)
    >>> fastoptim.get_num_threads()
    1
    >>> fastoptim.set_num_threads(None)  # follow OpenMP (OMP_NUM_THREADS, threadpoolctl) again
    """
    _kernels._set_num_threads(0 if n_threads is None else _resolve_threads(n_threads))


def get_num_threads() -> int:
    """The threads the next step uses (1 in a build without OpenMP).

    Returns
    -------
    int
        The count set by `set_num_threads`, else OpenMP's current one.

    Examples
    --------
    >>> import fastoptim
    >>> from threadpoolctl import threadpool_limits
    >>> with threadpool_limits(1):
    ...     fastoptim.get_num_threads()
    1
    """
    return _kernels.get_num_threads()


@contextlib.contextmanager
def num_threads(n_threads: int | None) -> Iterator[int]:
    """Use `n_threads` inside a ``with`` block, then restore the previous setting.

    Parameters
    ----------
    n_threads : int or None
        As `set_num_threads` takes it.

    Yields
    ------
    int
        The thread count in the block.

    Raises
    ------
    TypeError, ValueError
        As `set_num_threads`.

    Examples
    --------
    >>> import fastoptim
    >>> with fastoptim.num_threads(1) as n:
    ...     n
    1
    """
    previous = _kernels._num_threads_setting()
    set_num_threads(n_threads)
    try:
        yield get_num_threads()
    finally:
        _kernels._set_num_threads(previous)


def get_simd_level() -> str:
    """The SIMD level of the kernels in use.

    Returns
    -------
    str
        'baseline', 'avx2' or 'avx512'.

    Examples
    --------
    >>> import fastoptim
    >>> fastoptim.get_simd_level() in ("baseline", "avx2", "avx512")
    True
    """
    return _kernels.get_simd_level()


def set_simd_level(level: str) -> str:
    """Use the kernels of `level`; every level gives the same results.

    Parameters
    ----------
    level : str
        'baseline', 'avx2' or 'avx512': compiled in and supported by this CPU.

    Returns
    -------
    str
        The previous level.

    Raises
    ------
    ValueError
        An unknown level, or one not compiled in or not supported by this CPU.

    Examples
    --------
    >>> import fastoptim
    >>> previous = fastoptim.set_simd_level("baseline")
    >>> fastoptim.get_simd_level()
    'baseline'
    >>> _ = fastoptim.set_simd_level(previous)
    """
    return _kernels.set_simd_level(level)


def _initial_simd_level() -> str:
    forced = os.environ.get("FASTOPTIM_SIMD", "").strip().lower()
    if forced:
        if forced not in _kernels.SIMD_LEVELS:
            raise ImportError(f"FASTOPTIM_SIMD={forced!r} is not one of {_kernels.SIMD_LEVELS}")
        return forced
    return _kernels.supported_simd_levels()[-1]


def show_config(file: TextIO | None = None) -> None:
    """Print versions, compiler, flags, OpenMP, threads and SIMD levels.

    Parameters
    ----------
    file : text file, optional
        Where to print (default: sys.stdout).

    Examples
    --------
    >>> import fastoptim
    >>> fastoptim.show_config()  # doctest: +ELLIPSIS
    fastoptim:       ...
    """
    import numpy

    from . import __version__
    try:
        import Cython
        cython_version = Cython.__version__  # type: ignore[attr-defined]
    except ImportError:  # pragma: no cover - Cython is a build requirement only
        cython_version = "not installed"
    threads_source = ("set by set_num_threads" if _kernels._num_threads_setting()
                      else "following OpenMP's omp_get_max_threads")
    lines = [
        f"fastoptim:       {__version__}",
        f"NumPy:           {numpy.__version__}",
        f"Cython:          {cython_version}",
        f"Python:          {sys.version.split()[0]}",
        f"compiler:        {_kernels.COMPILER}",
        f"compile flags:   {_kernels.COMPILE_ARGS}",
        f"OpenMP:          {'on' if _kernels.OPENMP else 'off (serial build)'}",
        f"threads:         {get_num_threads()} ({threads_source}; usable cores: {_kernels.usable_cores()})",
        f"OpenMP runtime:  {_kernels.openmp_library() or 'n/a'}",
        f"SIMD level:      {get_simd_level()}",
        f"SIMD compiled:   {', '.join(_kernels.compiled_simd_levels())}",
        f"SIMD supported:  {', '.join(_kernels.supported_simd_levels())}",
    ]
    print("\n".join(lines), file=file or sys.stdout)


_kernels.set_simd_level(_initial_simd_level())
