# Threads, SIMD level and build facts, and the C kernel tables they select
# (csrc/kernels.c is compiled into this module only; the other modules reach
# the tables through the functions of runtime.pxd).

from .common cimport (FO_HALF_BF16, FO_HALF_F16, FO_N_SIMD_LEVELS, FO_SIMD_BASELINE, fo_compiled_table,
                      fo_cpu_supports, fo_has_half_loop, fo_index, fo_rule_passes,
                      fo_kernel_table, fo_rule_desc, fo_rule_describe, fo_staged_table, threads_for)
from .openmp cimport FASTOPTIM_OPENMP, omp_get_max_threads

import os

OPENMP = bool(FASTOPTIM_OPENMP)

# 0: follow omp_get_max_threads() (OMP_NUM_THREADS, threadpoolctl, omp_set_num_threads),
# as scikit-learn's _openmp_effective_n_threads does; > 0: set by set_num_threads.
cdef int _n_threads = 0
# Without OMP_NUM_THREADS, OpenMP's default may count cores this process may not use.
cdef int _followed_threads_cap = 1
# Below this many elements per call, work runs on one thread: starting a
# parallel region costs more than the work.  Tests lower it to exercise splits.
cdef fo_index _parallel_min_elements = 1 << 15


cdef const fo_kernel_table *kernel_table() noexcept nogil:
    return _table


cdef int parallel_threads(fo_index n_elements, int n_threads) noexcept nogil:
    return threads_for(n_elements, n_threads, _parallel_min_elements)


cdef int step_threads(fo_index n_elements) noexcept nogil:
    return threads_for(n_elements, current_threads(), _parallel_min_elements)


cdef inline int current_threads() noexcept nogil:
    """The threads of a step: set_num_threads's count, else OpenMP's (read live, per call)."""
    if not FASTOPTIM_OPENMP:
        return 1
    if _n_threads > 0:
        return _n_threads
    return max(1, min(omp_get_max_threads(), _followed_threads_cap))


cdef int simd_level() noexcept nogil:
    cdef int i
    for i in range(FO_N_SIMD_LEVELS):
        if fo_compiled_table(i) == _table or fo_staged_table(i) == _table:
            return i
    return FO_SIMD_BASELINE


cdef const fo_rule_desc *rule_describe(int rule) noexcept nogil:
    return fo_rule_describe(rule)


# ---- threads ------------------------------------------------------------------

def usable_cores():
    """Cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS, Windows
        return os.cpu_count() or 1


def max_threads():
    """The most threads a step may use: 4 per core of the machine, and at least 64
    (fastoptim.max_threads documents why)."""
    return max(64, 4 * (os.cpu_count() or 1))


def default_num_threads():
    """The threads a step uses while set_num_threads has not set a count: OpenMP's
    omp_get_max_threads() (OMP_NUM_THREADS, threadpoolctl's limits), at most the
    usable cores unless OMP_NUM_THREADS is set, and never more than max_threads()."""
    if not FASTOPTIM_OPENMP:
        return 1
    return max(1, min(omp_get_max_threads(), _followed_threads_cap))


def _set_num_threads(int n):
    """Every step uses n threads; 0 = follow OpenMP (default_num_threads)."""
    global _n_threads
    if n < 0:
        raise ValueError(f"thread count {n} is negative")
    _n_threads = n


def _num_threads_setting():
    """The count set_num_threads set, or 0 while steps follow OpenMP."""
    return _n_threads


def get_num_threads():
    """The number of threads a step uses."""
    return current_threads()


cdef extern from *:
    """
    #if defined(_OPENMP) && !defined(_WIN32)
    #include <dlfcn.h>
    static const char *fo_openmp_library(void) {
        Dl_info info;
        if (dladdr((void *)&omp_get_max_threads, &info) && info.dli_fname)
            return info.dli_fname;
        return NULL;
    }
    #else
    static const char *fo_openmp_library(void) { return NULL; }
    #endif
    """
    const char *fo_openmp_library() noexcept nogil


def openmp_library():
    """The file of the OpenMP runtime the kernels call (None where it cannot be told:
    a serial build, Windows)."""
    path = fo_openmp_library()
    return None if path == NULL else os.fsdecode(path)


def _set_parallel_min_elements(fo_index n):
    """Test hook: the size from which a call is split across threads; returns the old one."""
    global _parallel_min_elements
    old = _parallel_min_elements
    _parallel_min_elements = n
    return old


# ---- SIMD level ---------------------------------------------------------------------

SIMD_LEVELS = ("baseline", "avx2", "avx512")
cdef const fo_kernel_table *_table = fo_compiled_table(FO_SIMD_BASELINE)
# Whether 16-bit params may take their rule's loops on 16-bit storage (kernels.h, fo_half_loop);
# False (a test hook) sends every one through the staged drivers.
cdef bint _half_loops = True


cdef const fo_kernel_table *level_table(int level) noexcept nogil:
    return fo_compiled_table(level) if _half_loops else fo_staged_table(level)


def compiled_simd_levels():
    """SIMD levels this build has code for."""
    return tuple(name for i, name in enumerate(SIMD_LEVELS) if fo_compiled_table(i) != NULL)


def supported_simd_levels():
    """SIMD levels this build has code for and this CPU can run."""
    return tuple(name for i, name in enumerate(SIMD_LEVELS)
                 if fo_compiled_table(i) != NULL and fo_cpu_supports(i))


def get_simd_level():
    """The SIMD level of the kernels in use."""
    return _table.name.decode()


def set_simd_level(level):
    """Use the kernels of `level` ('baseline', 'avx2' or 'avx512'); returns the previous level."""
    global _table
    if level not in SIMD_LEVELS:
        raise ValueError(f"Invalid SIMD level {level!r}: expected one of {SIMD_LEVELS}")
    i = SIMD_LEVELS.index(level)
    if fo_compiled_table(i) == NULL:
        raise ValueError(f"SIMD level {level!r} is not compiled into this build "
                         f"(compiled: {compiled_simd_levels()})")
    if not fo_cpu_supports(i):
        raise ValueError(f"SIMD level {level!r} is not supported by this CPU "
                         f"(supported: {supported_simd_levels()})")
    previous = get_simd_level()
    _table = level_table(i)
    return previous


def _set_half_loops(bint enabled):
    """Test hook: whether 16-bit params (round to nearest, state in their dtype) may take their
    rule's loops on 16-bit storage; False runs them through the staged drivers, which give the
    same bits.  Returns the previous setting."""
    global _half_loops, _table
    previous = _half_loops
    _half_loops = enabled
    _table = level_table(simd_level())
    return previous


# ---- the rules the C side has ---------------------------------------------------------

def rule_passes(int rule):
    """How many times rule number `rule` goes over each tensor (1; LAMB: 2, its norms first)."""
    return fo_rule_passes(rule)


def rule_fields():
    """{rule name: (its number, its field names in kernel order)}, as csrc/fastoptim/rules.h lists them."""
    cdef const fo_rule_desc *d
    cdef int rule = 0, i
    out = {}
    while True:
        d = fo_rule_describe(rule)
        if d == NULL:
            return out
        out[d.name.decode()] = (rule, tuple(d.fields[i].name.decode() for i in range(d.n_fields)))
        rule += 1


def half_loop_rules():
    """{"bfloat16": names, "float16": names}: the rules whose loops run on that 16-bit storage
    in the kernels in use (the others' 16-bit params go through the staged drivers)."""
    out = {}
    for half, dtype in ((FO_HALF_BF16, "bfloat16"), (FO_HALF_F16, "float16")):
        out[dtype] = tuple(name for name, (rule, _) in rule_fields().items() if fo_has_half_loop(_table, rule, half))
    return out


# ---- build facts for show_config --------------------------------------------------------

cdef extern from *:
    """
    #ifndef FASTOPTIM_COMPILE_ARGS
    #define FASTOPTIM_COMPILE_ARGS "unknown"
    #endif
    #if defined(__clang__)
    #define FASTOPTIM_COMPILER "clang " __clang_version__
    #elif defined(__GNUC__)
    #define FASTOPTIM_COMPILER "gcc " __VERSION__
    #elif defined(_MSC_VER)
    #define FASTOPTIM_COMPILER "msvc"
    #else
    #define FASTOPTIM_COMPILER "unknown"
    #endif
    """
    const char *FASTOPTIM_COMPILE_ARGS
    const char *FASTOPTIM_COMPILER

COMPILER = FASTOPTIM_COMPILER.decode()

# OMP_NUM_THREADS is the user's word (scikit-learn caps OpenMP's count only without it),
# up to max_threads(): an absurd count (OMP_NUM_THREADS=200000) would kill the process.
_followed_threads_cap = max_threads() if os.environ.get("OMP_NUM_THREADS") else min(usable_cores(), max_threads())
COMPILE_ARGS = FASTOPTIM_COMPILE_ARGS.decode()
