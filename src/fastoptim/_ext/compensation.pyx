# DC-ASGD's delay compensation (csrc/fastoptim/compensation.h) over lists of
# segments, for fastoptim.distributed's parameter server and simulator.
#
# A Compensation holds the pointers of its segments, checked once; run_*()
# rewrites the grads in place in one nogil call, with the loops of the SIMD
# level fastoptim uses (runtime.simd_level) and its threads (runtime.step_threads:
# one below the parallel threshold).  Segments are laid end to end and split
# in equal element ranges (common.split_point), one per thread, as the update
# rules' drivers split their tensors: each element's result depends on that
# element alone, so nothing depends on the thread count.

cimport numpy as cnp
from cython.parallel cimport prange
from libc.stdlib cimport calloc, free

from .checks cimport check_float_array, check_layout
from .common cimport fo_index, segment_of, split_point
from .runtime cimport simd_level, step_threads

cnp.import_array()

cdef extern from "fastoptim/compensation.h" nogil:
    ctypedef void (*constant_f32_fn)(float *g, const float *w, const float *w_bak,
                                     fo_index begin, fo_index end, double lambda_) noexcept
    ctypedef void (*constant_f64_fn)(double *g, const double *w, const double *w_bak,
                                     fo_index begin, fo_index end, double lambda_) noexcept
    ctypedef void (*adaptive_f32_fn)(float *g, const float *w, const float *w_bak, float *mean_square,
                                     fo_index begin, fo_index end, double lambda0_, double momentum_) noexcept
    ctypedef void (*adaptive_f64_fn)(double *g, const double *w, const double *w_bak, double *mean_square,
                                     fo_index begin, fo_index end, double lambda0_, double momentum_) noexcept
    ctypedef struct fo_compensation_loops:
        constant_f32_fn constant_f32
        constant_f64_fn constant_f64
        adaptive_f32_fn adaptive_f32
        adaptive_f64_fn adaptive_f64
    const fo_compensation_loops *fo_compensation_table(int level)


cdef class Compensation:
    """DC-ASGD's compensation of a list of gradient segments, in place.

    grads, params, backups (and mean_squares, for the adaptive form): lists of
    the same length; segment k of each is a C-contiguous float32 or float64
    array of grads[k]'s dtype and size (any shape).  grads and mean_squares
    are written and must be writeable, and no array may share memory with a
    written one.  The arrays are kept alive by the object.

    run_constant(lambda_):            g <- g + lambda_ * g * g * (w - w_bak)
    run_adaptive(lambda0, momentum):  ms <- m * ms + (1 - m) * g * g, then the
                                      same with lambda = lambda0 / (sqrt(ms) + 1e-7)
    """
    cdef readonly fo_index n_segments
    cdef readonly fo_index size
    cdef readonly bint adaptive
    cdef readonly list arrays
    cdef char **g
    cdef char **w
    cdef char **w_bak
    cdef char **mean_square
    cdef fo_index *offsets
    cdef bint *is_double

    def __cinit__(self):
        self.g = self.w = self.w_bak = self.mean_square = NULL
        self.offsets = NULL
        self.is_double = NULL

    def __dealloc__(self):
        free(self.g)
        free(self.w)
        free(self.w_bak)
        free(self.mean_square)
        free(self.offsets)
        free(self.is_double)

    def __init__(self, list grads, list params, list backups, list mean_squares=None):
        cdef fo_index n = len(grads), k
        cdef cnp.ndarray a, ref
        self.adaptive = mean_squares is not None
        lists = [("grads", grads, True), ("params", params, False), ("backups", backups, False)]
        if self.adaptive:
            lists.append(("mean_squares", mean_squares, True))
        for name, arrays, _ in lists[1:]:
            if len(arrays) != n:
                raise ValueError(f"{name} has {len(arrays)} segments but grads has {n}")
        for name, arrays, written in lists:
            for k in range(n):
                check_float_array(arrays[k], f"{name}[{k}]")
                a = <cnp.ndarray>arrays[k]
                check_layout(a, f"{name}[{k}]", written)
                ref = <cnp.ndarray>grads[k]
                if a.dtype != ref.dtype or cnp.PyArray_SIZE(a) != cnp.PyArray_SIZE(ref):
                    raise ValueError(f"{name}[{k}] has dtype {a.dtype} and {cnp.PyArray_SIZE(a)} elements "
                                     f"but grads[{k}] has dtype {ref.dtype} and {cnp.PyArray_SIZE(ref)}")
        _check_no_written_overlap(lists)
        self.n_segments = n
        self.arrays = [arrays for _, arrays, _ in lists]
        self.g = <char **>calloc(n + 1, sizeof(char *))
        self.w = <char **>calloc(n + 1, sizeof(char *))
        self.w_bak = <char **>calloc(n + 1, sizeof(char *))
        self.mean_square = <char **>calloc(n + 1, sizeof(char *))
        self.offsets = <fo_index *>calloc(n + 1, sizeof(fo_index))
        self.is_double = <bint *>calloc(n + 1, sizeof(bint))
        if (self.g == NULL or self.w == NULL or self.w_bak == NULL or self.mean_square == NULL
                or self.offsets == NULL or self.is_double == NULL):
            raise MemoryError()
        for k in range(n):
            a = <cnp.ndarray>grads[k]
            self.g[k] = <char *>cnp.PyArray_DATA(a)
            self.w[k] = <char *>cnp.PyArray_DATA(<cnp.ndarray>params[k])
            self.w_bak[k] = <char *>cnp.PyArray_DATA(<cnp.ndarray>backups[k])
            if self.adaptive:
                self.mean_square[k] = <char *>cnp.PyArray_DATA(<cnp.ndarray>mean_squares[k])
            self.is_double[k] = cnp.PyArray_TYPE(a) == cnp.NPY_FLOAT64
            self.offsets[k + 1] = self.offsets[k] + cnp.PyArray_SIZE(a)
        self.size = self.offsets[n]

    def run_constant(self, double lambda_):
        """g <- g + lambda_ * g * g * (w - w_bak), every segment."""
        self._run(False, lambda_, 0.0)

    def run_adaptive(self, double lambda0, double momentum):
        """ms <- momentum * ms + (1 - momentum) * g * g, then g <- g + lambda * g * g * (w - w_bak)
        with lambda = lambda0 / (sqrt(ms) + 1e-7), every segment."""
        if not self.adaptive:
            raise ValueError("this Compensation was built without mean_squares: it has no adaptive form")
        self._run(True, lambda0, momentum)

    cdef void _run(self, bint adaptive, double lambda_, double momentum) noexcept:
        cdef fo_index total = self.size
        cdef int parts = step_threads(total), k
        cdef const fo_compensation_loops *loops = fo_compensation_table(simd_level())
        with nogil:
            if parts == 1:
                self.run_range(loops, adaptive, lambda_, momentum, 0, total)
            else:
                for k in prange(parts, schedule="static", num_threads=parts):
                    self.run_range(loops, adaptive, lambda_, momentum,
                                   split_point(total, k, parts), split_point(total, k + 1, parts))

    cdef void run_range(self, const fo_compensation_loops *loops, bint adaptive, double lambda_,
                        double momentum, fo_index begin, fo_index end) noexcept nogil:
        """Elements [begin, end) of the segments laid end to end."""
        cdef fo_index k, first, last
        if begin >= end:
            return
        k = segment_of(self.offsets, self.n_segments, begin)
        while k < self.n_segments and self.offsets[k] < end:
            first = begin - self.offsets[k] if begin > self.offsets[k] else 0
            last = (end if end < self.offsets[k + 1] else self.offsets[k + 1]) - self.offsets[k]
            if last > first:
                if adaptive and self.is_double[k]:
                    loops.adaptive_f64(<double *>self.g[k], <const double *>self.w[k],
                                       <const double *>self.w_bak[k], <double *>self.mean_square[k],
                                       first, last, lambda_, momentum)
                elif adaptive:
                    loops.adaptive_f32(<float *>self.g[k], <const float *>self.w[k],
                                       <const float *>self.w_bak[k], <float *>self.mean_square[k],
                                       first, last, lambda_, momentum)
                elif self.is_double[k]:
                    loops.constant_f64(<double *>self.g[k], <const double *>self.w[k],
                                       <const double *>self.w_bak[k], first, last, lambda_)
                else:
                    loops.constant_f32(<float *>self.g[k], <const float *>self.w[k],
                                       <const float *>self.w_bak[k], first, last, lambda_)
            k += 1


def _check_no_written_overlap(lists):
    """No array shares memory with an array that is written (the loops assume restrict)."""
    intervals = []
    for name, arrays, written in lists:
        for k, a in enumerate(arrays):
            if a.nbytes:
                begin = a.__array_interface__["data"][0]
                intervals.append((begin, begin + a.nbytes, written, f"{name}[{k}]"))
    intervals.sort()
    reach_all = reach_written = None   # (end, label) of the previous interval reaching furthest
    for begin, end, written, label in intervals:
        hit = reach_all if written else reach_written
        if hit is not None and begin < hit[0]:
            raise ValueError(f"{label} shares memory with {hit[1]}; a compensated grad and its "
                             f"mean square must each be their own memory")
        if reach_all is None or end > reach_all[0]:
            reach_all = (end, label)
        if written and (reach_written is None or end > reach_written[0]):
            reach_written = (end, label)
