# Kernels of the training helpers (fastoptim.train): gradient clipping by
# value, the norm of all grads of a step, scaling, and gradient noise.
#
# Every function takes a list of arrays (the grads of one step, any mix of
# float32 and float64) laid end to end as one range of elements, like
# fastoptim._ext.step.StepPlan.  Nothing of the arrays' size is allocated, and no result
# depends on the thread count:
#   - elementwise work (clip, scale, noise) splits the range in equal shares;
#     each element's result depends on that element alone;
#   - the norm sums NORM_BLOCKS fixed blocks of the range, each in a fixed
#     order, then adds the block sums in block order.  The blocks depend on
#     the sizes of the arrays only, never on how many threads share them;
#   - the noise of an element is a function of (seed, step, array number,
#     element index): a counter-based generator (Philox4x32-10, Salmon et al.
#     2011) turned into Gaussians by Box-Muller, with no state to share
#     (csrc/fastoptim/counter_rng.h).

cimport numpy as cnp
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from cython.parallel cimport prange
from libc.math cimport fabs, pow
from libc.stdint cimport uint32_t, uint64_t

from .checks cimport check_float_array, check_layout
from .common cimport split_point
from .openmp cimport FASTOPTIM_OPENMP
from .runtime cimport parallel_threads

cimport cython

import numpy as np

cnp.import_array()


cdef extern from "fastoptim/counter_rng.h" nogil:
    enum:
        FO_NOISE_QUADS
    void fo_philox4x32_10(uint32_t *c, uint32_t k0, uint32_t k1)
    void fo_normals(uint64_t first, int n, uint32_t stream, uint32_t step, uint32_t k0, uint32_t k1, double *z)

cdef extern from "fastoptim/reductions.h" nogil:
    double fo_sum_squares_f32(const float *x, Py_ssize_t first, Py_ssize_t last, double s)
    double fo_sum_squares_f64(const double *x, Py_ssize_t first, Py_ssize_t last, double s)
    double fo_sum_abs_f32(const float *x, Py_ssize_t first, Py_ssize_t last, double s)
    double fo_sum_abs_f64(const double *x, Py_ssize_t first, Py_ssize_t last, double s)
    double fo_sum_zero_f32(const float *x, Py_ssize_t first, Py_ssize_t last, double s)
    double fo_sum_zero_f64(const double *x, Py_ssize_t first, Py_ssize_t last, double s)
    double fo_max_abs_f32(const float *x, Py_ssize_t first, Py_ssize_t last, double m)
    double fo_max_abs_f64(const double *x, Py_ssize_t first, Py_ssize_t last, double m)

OPENMP = bool(FASTOPTIM_OPENMP)

cdef enum:
    NORM_BLOCKS = 256
    # What reduce() computes over the elements x (times `scale` for the sums).
    SUM_SQUARES = 0
    SUM_ABS = 1
    SUM_POWER = 2         # of |x * scale| ** p
    SUM_ZERO = 3          # of x * 0: NaN exactly when some x is NaN or inf, else 0
    MAX_ABS = 4           # max |x|, NaN ignored
    COUNT_NAN = 5
    # The elementwise operations.
    OP_CLIP = 0
    OP_SCALE = 1
    OP_NOISE = 2
    OP_REDUCE = 3

REDUCE_MODES = {"sum_squares": SUM_SQUARES, "sum_abs": SUM_ABS, "sum_power": SUM_POWER,
                "sum_zero": SUM_ZERO, "max_abs": MAX_ABS, "count_nan": COUNT_NAN}

ctypedef struct tensor:
    char *data
    Py_ssize_t offset      # index of its first element in the concatenated range
    Py_ssize_t size
    bint is_double
    uint32_t number        # its position in the list: the noise stream it draws from


cdef class Tensors:
    """Pointer table of a checked list of float32/float64 C-contiguous arrays."""
    cdef tensor *items
    cdef Py_ssize_t count
    cdef Py_ssize_t total
    cdef list arrays       # keeps the arrays alive while the table points into them

    def __cinit__(self, list arrays, list labels, bint written):
        cdef Py_ssize_t i
        cdef cnp.ndarray a
        self.items = NULL
        self.count = len(arrays)
        if len(labels) != self.count:
            raise ValueError("one label per array is needed")
        for i in range(self.count):
            check_float_array(arrays[i], labels[i])
            check_layout(<cnp.ndarray>arrays[i], labels[i], written)
        self.arrays = arrays
        self.items = <tensor *>PyMem_Malloc((self.count + 1) * sizeof(tensor))
        if self.items == NULL:
            raise MemoryError()
        self.total = 0
        for i in range(self.count):
            a = <cnp.ndarray>arrays[i]
            self.items[i].data = <char *>cnp.PyArray_DATA(a)
            self.items[i].offset = self.total
            self.items[i].size = cnp.PyArray_SIZE(a)
            self.items[i].is_double = cnp.PyArray_TYPE(a) == cnp.NPY_FLOAT64
            self.items[i].number = <uint32_t>i
            self.total += self.items[i].size

    def __dealloc__(self):
        PyMem_Free(self.items)


cdef inline Py_ssize_t first_tensor(const tensor *t, Py_ssize_t count, Py_ssize_t element) noexcept nogil:
    """The tensor holding `element`: the last one whose offset is <= element (skipping empty ones)."""
    cdef Py_ssize_t lo = 0, hi = count, mid
    while lo < hi:
        mid = (lo + hi) // 2
        if t[mid].offset + t[mid].size <= element:
            lo = mid + 1
        else:
            hi = mid
    return lo


# ---- elementwise operations ---------------------------------------------------

ctypedef struct op_args:
    int op
    double value          # clip bound, scale factor, noise standard deviation or reduce's scale
    uint32_t key0, key1   # noise: the seed
    uint32_t step_lo      # noise: the step (its high word is folded into key1)
    int mode              # reduce: what to sum
    double power          # reduce: p of SUM_POWER


cdef void clip_segment(cython.floating *x, Py_ssize_t first, Py_ssize_t last, double bound) noexcept nogil:
    cdef cython.floating hi = <cython.floating>bound, lo = -hi, v
    cdef Py_ssize_t j
    for j in range(first, last):
        # Two comparisons that NaN fails, so a NaN stays NaN (as torch.clamp
        # keeps it); selects and an unconditional store, so the loop vectorises.
        v = x[j]
        v = hi if v > hi else v
        v = lo if v < lo else v
        x[j] = v


cdef void scale_segment(cython.floating *x, Py_ssize_t first, Py_ssize_t last, double factor) noexcept nogil:
    cdef cython.floating f = <cython.floating>factor
    cdef Py_ssize_t j
    for j in range(first, last):
        x[j] = x[j] * f


cdef void noise_segment(cython.floating *x, Py_ssize_t first, Py_ssize_t last, const op_args *a,
                        uint32_t number) noexcept nogil:
    # Element j gets normal j % 4 of quad j // 4, whichever thread holds it.
    cdef double z[4 * FO_NOISE_QUADS]
    cdef double std = a.value
    cdef Py_ssize_t j = first, block_start, stop
    cdef uint64_t quad
    while j < last:
        quad = <uint64_t>(j >> 2)
        block_start = <Py_ssize_t>(quad * 4)
        stop = block_start + 4 * FO_NOISE_QUADS
        if stop > last:
            stop = last
        fo_normals(quad, <int>((stop - block_start + 3) >> 2), number, a.step_lo, a.key0, a.key1, z)
        while j < stop:
            x[j] = <cython.floating>(x[j] + std * z[j - block_start])
            j += 1


cdef void reduce_segment(cython.floating *x, Py_ssize_t first, Py_ssize_t last, const op_args *a,
                         double *out) noexcept nogil:
    """Add the segment's sum to *out (MAX_ABS: take the max with *out)."""
    cdef Py_ssize_t j
    cdef double total = 0.0
    if a.mode == MAX_ABS:
        if cython.floating is float:
            out[0] = fo_max_abs_f32(x, first, last, out[0])
        else:
            out[0] = fo_max_abs_f64(x, first, last, out[0])
        return
    if a.mode == SUM_SQUARES:
        if cython.floating is float:
            total = fo_sum_squares_f32(x, first, last, a.value)
        else:
            total = fo_sum_squares_f64(x, first, last, a.value)
    elif a.mode == SUM_ABS:
        if cython.floating is float:
            total = fo_sum_abs_f32(x, first, last, a.value)
        else:
            total = fo_sum_abs_f64(x, first, last, a.value)
    elif a.mode == SUM_ZERO:
        if cython.floating is float:
            total = fo_sum_zero_f32(x, first, last, a.value)
        else:
            total = fo_sum_zero_f64(x, first, last, a.value)
    elif a.mode == SUM_POWER:  # rare orders: pow() per element is fine
        for j in range(first, last):
            total += pow(fabs(x[j] * a.value), a.power)
    else:  # COUNT_NAN
        for j in range(first, last):
            total += x[j] != x[j]
    out[0] += total


cdef void run_segment(cython.floating *x, Py_ssize_t first, Py_ssize_t last, const op_args *a,
                      uint32_t number, double *out) noexcept nogil:
    if a.op == OP_CLIP:
        clip_segment(x, first, last, a.value)
    elif a.op == OP_SCALE:
        scale_segment(x, first, last, a.value)
    elif a.op == OP_NOISE:
        noise_segment(x, first, last, a, number)
    else:
        reduce_segment(x, first, last, a, out)


cdef void run_range(const tensor *t, Py_ssize_t count, Py_ssize_t begin, Py_ssize_t end,
                    const op_args *a, double *out) noexcept nogil:
    """Run the operation over elements [begin, end) of the concatenated tensors (reduce: into *out)."""
    cdef Py_ssize_t i, first, last
    if begin >= end:
        return
    i = first_tensor(t, count, begin)
    while i < count and t[i].offset < end:
        first = begin - t[i].offset if begin > t[i].offset else 0
        last = (end if end < t[i].offset + t[i].size else t[i].offset + t[i].size) - t[i].offset
        if last > first:
            if t[i].is_double:
                run_segment(<double *>t[i].data, first, last, a, t[i].number, out)
            else:
                run_segment(<float *>t[i].data, first, last, a, t[i].number, out)
        i += 1


cdef void apply_all(Tensors ts, const op_args *a, int n_threads) noexcept nogil:
    # The optimizer step's split (fastoptim._ext.common) and parallel threshold (runtime).
    cdef int parts = parallel_threads(ts.total, n_threads), k
    if parts == 1:
        run_range(ts.items, ts.count, 0, ts.total, a, NULL)
        return
    for k in prange(parts, schedule="static", num_threads=parts):
        run_range(ts.items, ts.count, split_point(ts.total, k, parts), split_point(ts.total, k + 1, parts), a, NULL)


cdef int run_in_place(list arrays, list labels, op_args *a, int n_threads) except -1:
    cdef Tensors ts = Tensors(arrays, labels, True)
    with nogil:
        apply_all(ts, a, n_threads)
    return 0


def clip_value(list arrays, list labels, double bound, int n_threads):
    """Clamp every element to [-bound, bound] in place (NaN stays NaN)."""
    cdef op_args a
    a.op, a.value = OP_CLIP, bound
    run_in_place(arrays, labels, &a, n_threads)


def scale(list arrays, list labels, double factor, int n_threads):
    """Multiply every element by `factor` in place (in the array's dtype)."""
    cdef op_args a
    a.op, a.value = OP_SCALE, factor
    run_in_place(arrays, labels, &a, n_threads)


def add_noise(list arrays, list labels, double std, uint64_t seed, uint64_t step, int n_threads):
    """Add std * N(0, 1) to every element in place; the draws depend on (seed, step, array, index) only."""
    cdef op_args a
    a.op, a.value = OP_NOISE, std
    a.key0 = <uint32_t>seed
    # The step's high word (past 4e9 steps) perturbs the key; its low word is in the counter.
    a.key1 = <uint32_t>(seed >> 32) ^ (<uint32_t>(step >> 32) * 0x85EBCA6Bu)
    a.step_lo = <uint32_t>step
    run_in_place(arrays, labels, &a, n_threads)


def philox4x32_10(counter, key):
    """Philox4x32-10 of a 4-word counter under a 2-word key (checked against Random123's known answers)."""
    cdef uint32_t c[4]
    for i in range(4):
        c[i] = <uint32_t>counter[i]
    fo_philox4x32_10(c, <uint32_t>key[0], <uint32_t>key[1])
    return (c[0], c[1], c[2], c[3])


def _standard_normals(uint64_t first_quad, int n_quads, uint32_t stream, uint32_t step, uint32_t key0,
                      uint32_t key1):
    """Test hook: the 4 * n_quads normals the noise kernel draws from quads first_quad, ... of a stream."""
    if not 0 <= n_quads <= FO_NOISE_QUADS:
        raise ValueError(f"n_quads must be in [0, {FO_NOISE_QUADS}]")
    out = np.empty(4 * n_quads)
    cdef double[::1] z = out
    if n_quads:
        fo_normals(first_quad, n_quads, stream, step, key0, key1, &z[0])
    return out


# ---- the norm ----------------------------------------------------------------

cdef inline void reduce_block(const tensor *t, Py_ssize_t count, Py_ssize_t total, Py_ssize_t b,
                              const op_args *a, double *out) noexcept nogil:
    """Block b of NORM_BLOCKS equal blocks of the concatenated range: where it falls depends on the sizes alone."""
    out[0] = 0.0
    run_range(t, count, (total * b) // NORM_BLOCKS, (total * (b + 1)) // NORM_BLOCKS, a, out)


def reduce(list arrays, list labels, int mode, double p, double scale, int n_threads):
    """The mode's sum over every element x of the arrays (of x * scale), or max |x| for MAX_ABS.

    The same result for any thread count: fixed blocks, each summed in a
    fixed order, the block results combined in block order.
    """
    cdef Tensors ts = Tensors(arrays, labels, False)
    cdef double parts[NORM_BLOCKS]
    cdef Py_ssize_t b, n_threads_used = parallel_threads(ts.total, n_threads)
    cdef double result = 0.0
    cdef op_args a
    if mode < SUM_SQUARES or mode > COUNT_NAN:
        raise ValueError(f"unknown reduce mode {mode}")
    a.op, a.mode, a.power, a.value = OP_REDUCE, mode, p, scale
    with nogil:
        if n_threads_used == 1:
            for b in range(NORM_BLOCKS):
                reduce_block(ts.items, ts.count, ts.total, b, &a, &parts[b])
        else:
            for b in prange(NORM_BLOCKS, schedule="static", num_threads=n_threads_used):
                reduce_block(ts.items, ts.count, ts.total, b, &a, &parts[b])
        for b in range(NORM_BLOCKS):
            if mode == MAX_ABS:
                result = parts[b] if parts[b] > result else result
            else:
                result += parts[b]
    return result
