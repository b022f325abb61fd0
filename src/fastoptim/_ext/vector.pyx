# L-BFGS's fused vector operations (csrc/fastoptim/vector_ops.h) over flat
# float32 or float64 vectors, for fastoptim.rules.lbfgs.
#
# Each call checks its arrays (one dtype, one size, C-contiguous, written ones
# writeable and apart from the others), then runs in one nogil call with the
# loops of the SIMD level fastoptim uses and its threads (runtime.step_threads:
# one below the parallel threshold).  The vector is cut into blocks that depend
# on its size alone (fo_vector_blocks), the threads share the blocks, and block
# sums are added in block order: every result is the same for any thread count.

cimport numpy as cnp
from cython.parallel cimport prange

from .checks cimport check_float_array, check_layout, overlaps
from .common cimport fo_index
from .runtime cimport simd_level, step_threads

cnp.import_array()

cdef extern from "fastoptim/vector_ops.h" nogil:
    enum:
        FO_VECTOR_MAX_BLOCKS
    fo_index fo_vector_blocks(fo_index n)
    fo_index fo_vector_block_start(fo_index n, fo_index b, fo_index blocks)
    ctypedef double (*update_f32_fn)(float *out, const float *a, const float *x, const float *z, double alpha,
                                     double beta, fo_index begin, fo_index end) noexcept
    ctypedef double (*update_f64_fn)(double *out, const double *a, const double *x, const double *z,
                                     double alpha, double beta, fo_index begin, fo_index end) noexcept
    ctypedef void (*difference_f32_fn)(float *y, float *s, const float *g, const float *prev, const float *d,
                                       double t, fo_index begin, fo_index end, double *sums) noexcept
    ctypedef void (*difference_f64_fn)(double *y, double *s, const double *g, const double *prev,
                                       const double *d, double t, fo_index begin, fo_index end,
                                       double *sums) noexcept
    ctypedef double (*dot_f32_fn)(const float *x, const float *y, fo_index begin, fo_index end) noexcept
    ctypedef double (*dot_f64_fn)(const double *x, const double *y, fo_index begin, fo_index end) noexcept
    ctypedef double (*sum_abs_f32_fn)(const float *x, fo_index begin, fo_index end) noexcept
    ctypedef double (*sum_abs_f64_fn)(const double *x, fo_index begin, fo_index end) noexcept
    ctypedef double (*max_abs_f32_fn)(const float *x, double scale, fo_index begin, fo_index end) noexcept
    ctypedef double (*max_abs_f64_fn)(const double *x, double scale, fo_index begin, fo_index end) noexcept
    ctypedef struct fo_vector_loops:
        update_f32_fn update_f32
        update_f64_fn update_f64
        difference_f32_fn difference_f32
        difference_f64_fn difference_f64
        dot_f32_fn dot_f32
        dot_f64_fn dot_f64
        sum_abs_f32_fn sum_abs_f32
        sum_abs_f64_fn sum_abs_f64
        max_abs_f32_fn max_abs_f32
        max_abs_f64_fn max_abs_f64
    const fo_vector_loops *fo_vector_table(int level)


cdef enum operation:
    UPDATE, DIFFERENCE, DOT, SUM_ABS, MAX_ABS


ctypedef struct call:
    int op
    bint is_double
    fo_index n
    fo_index blocks
    char *out       # update: out; difference: y
    char *out2      # difference: s
    const char *a   # update: a; difference: g; dot, sum_abs, max_abs: x
    const char *b   # update: x; difference: prev; dot: y
    const char *c   # update: z; difference: d
    double alpha    # update: alpha; difference: t; max_abs: scale
    double beta
    const fo_vector_loops *loops


cdef void run_block(const call *k, fo_index block, double *sums) noexcept nogil:
    """Block `block` of the call; its sums (two for DIFFERENCE) into sums[0:2]."""
    cdef fo_index begin = fo_vector_block_start(k.n, block, k.blocks)
    cdef fo_index end = fo_vector_block_start(k.n, block + 1, k.blocks)
    if k.op == UPDATE:
        if k.is_double:
            sums[0] = k.loops.update_f64(<double *>k.out, <const double *>k.a, <const double *>k.b,
                                         <const double *>k.c, k.alpha, k.beta, begin, end)
        else:
            sums[0] = k.loops.update_f32(<float *>k.out, <const float *>k.a, <const float *>k.b,
                                         <const float *>k.c, k.alpha, k.beta, begin, end)
    elif k.op == DIFFERENCE:
        if k.is_double:
            k.loops.difference_f64(<double *>k.out, <double *>k.out2, <const double *>k.a, <const double *>k.b,
                                   <const double *>k.c, k.alpha, begin, end, sums)
        else:
            k.loops.difference_f32(<float *>k.out, <float *>k.out2, <const float *>k.a, <const float *>k.b,
                                   <const float *>k.c, k.alpha, begin, end, sums)
    elif k.op == DOT:
        if k.is_double:
            sums[0] = k.loops.dot_f64(<const double *>k.a, <const double *>k.b, begin, end)
        else:
            sums[0] = k.loops.dot_f32(<const float *>k.a, <const float *>k.b, begin, end)
    elif k.op == SUM_ABS:
        if k.is_double:
            sums[0] = k.loops.sum_abs_f64(<const double *>k.a, begin, end)
        else:
            sums[0] = k.loops.sum_abs_f32(<const float *>k.a, begin, end)
    else:
        if k.is_double:
            sums[0] = k.loops.max_abs_f64(<const double *>k.a, k.alpha, begin, end)
        else:
            sums[0] = k.loops.max_abs_f32(<const float *>k.a, k.alpha, begin, end)


cdef void run(call *k, double *totals) noexcept nogil:
    """Every block of the call, on the step's threads; the block sums added in block order
    (MAX_ABS: their maximum, NaN if one is) into totals[0:2]."""
    cdef double sums[2 * FO_VECTOR_MAX_BLOCKS]
    cdef fo_index b
    cdef int parts = step_threads(k.n)
    k.blocks = fo_vector_blocks(k.n)
    if parts > k.blocks:
        parts = <int>k.blocks
    if parts <= 1:
        for b in range(k.blocks):
            run_block(k, b, &sums[2 * b])
    else:
        for b in prange(k.blocks, schedule="static", num_threads=parts):
            run_block(k, b, &sums[2 * b])
    totals[0] = totals[1] = 0.0
    for b in range(k.blocks):
        if k.op == MAX_ABS:
            if sums[2 * b] > totals[0] or sums[2 * b] != sums[2 * b]:
                totals[0] = sums[2 * b]
            if totals[0] != totals[0]:
                break
        else:
            totals[0] += sums[2 * b]
            totals[1] += sums[2 * b + 1]


cdef cnp.ndarray checked(obj, str name, cnp.ndarray like, bint written):
    """obj as an array the loops may use: like's dtype and size, C-contiguous, writeable if written."""
    check_float_array(obj, name)
    cdef cnp.ndarray a = <cnp.ndarray>obj
    check_layout(a, name, written)
    if like is not None and (cnp.PyArray_TYPE(a) != cnp.PyArray_TYPE(like)
                             or cnp.PyArray_SIZE(a) != cnp.PyArray_SIZE(like)):
        raise ValueError(f"{name} has dtype {a.dtype} and {cnp.PyArray_SIZE(a)} elements; "
                         f"expected {like.dtype} and {cnp.PyArray_SIZE(like)}")
    return a


cdef int check_apart(cnp.ndarray written, str name, cnp.ndarray other, str other_name) except -1:
    if other is not None and overlaps(written, other):
        raise ValueError(f"{name} shares memory with {other_name}; a written vector must be its own memory")
    return 0


cdef call start(int op, cnp.ndarray first):
    cdef call k
    k.op = op
    k.is_double = cnp.PyArray_TYPE(first) == cnp.NPY_FLOAT64
    k.n = cnp.PyArray_SIZE(first)
    k.out = k.out2 = NULL
    k.a = k.b = k.c = NULL
    k.alpha = k.beta = 0.0
    k.loops = fo_vector_table(simd_level())
    return k


cdef inline char *data(cnp.ndarray a):
    return NULL if a is None else <char *>cnp.PyArray_DATA(a)


def update(out, a, double alpha, x, double beta, z):
    """out = (a + alpha * x) * beta, each operation rounded in the vectors' dtype (alpha and beta
    rounded to it first); x None: out = a * beta.  Returns the sum of z * out in double (0.0 when
    z is None).  out may be a itself; otherwise it shares no memory with a, x or z."""
    cdef cnp.ndarray o = checked(out, "out", None, True)
    cdef cnp.ndarray aa = checked(a, "a", o, False)
    cdef cnp.ndarray xx = None if x is None else checked(x, "x", o, False)
    cdef cnp.ndarray zz = None if z is None else checked(z, "z", o, False)
    if cnp.PyArray_DATA(aa) != cnp.PyArray_DATA(o):
        check_apart(o, "out", aa, "a")
    check_apart(o, "out", xx, "x")
    check_apart(o, "out", zz, "z")
    cdef call k = start(UPDATE, o)
    cdef double totals[2]
    k.out, k.a, k.b, k.c, k.alpha, k.beta = data(o), data(aa), data(xx), data(zz), alpha, beta
    with nogil:
        run(&k, totals)
    return totals[0]


def difference(y, s, g, prev, d, double t):
    """y = g - prev and s = d * t (t rounded to the dtype), each in the vectors' dtype; returns
    (sum of y * s, sum of y * y) in double.  y and s share no memory with each other or the inputs."""
    cdef cnp.ndarray gg = checked(g, "g", None, False)
    cdef cnp.ndarray yy = checked(y, "y", gg, True)
    cdef cnp.ndarray ss = checked(s, "s", gg, True)
    cdef cnp.ndarray pp = checked(prev, "prev", gg, False)
    cdef cnp.ndarray dd = checked(d, "d", gg, False)
    for name, other in (("s", ss), ("g", gg), ("prev", pp), ("d", dd)):
        check_apart(yy, "y", other, name)
    for name, other in (("g", gg), ("prev", pp), ("d", dd)):
        check_apart(ss, "s", other, name)
    cdef call k = start(DIFFERENCE, gg)
    cdef double totals[2]
    k.out, k.out2, k.a, k.b, k.c, k.alpha = data(yy), data(ss), data(gg), data(pp), data(dd), t
    with nogil:
        run(&k, totals)
    return totals[0], totals[1]


def dot(x, y):
    """The sum of x * y in double."""
    cdef cnp.ndarray xx = checked(x, "x", None, False)
    cdef cnp.ndarray yy = checked(y, "y", xx, False)
    cdef call k = start(DOT, xx)
    cdef double totals[2]
    k.a, k.b = data(xx), data(yy)
    with nogil:
        run(&k, totals)
    return totals[0]


def sum_abs(x):
    """The sum of |x| in double."""
    cdef cnp.ndarray xx = checked(x, "x", None, False)
    cdef call k = start(SUM_ABS, xx)
    cdef double totals[2]
    k.a = data(xx)
    with nogil:
        run(&k, totals)
    return totals[0]


def max_abs(x, double scale=1.0):
    """max |x * scale| (the product rounded in x's dtype), NaN if an element is; 0.0 for no element."""
    cdef cnp.ndarray xx = checked(x, "x", None, False)
    cdef call k = start(MAX_ABS, xx)
    cdef double totals[2]
    k.a, k.alpha = data(xx), scale
    with nogil:
        run(&k, totals)
    return totals[0]
