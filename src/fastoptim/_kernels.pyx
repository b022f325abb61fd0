# Typed drivers of the C update rules: argument checks at C speed, then one
# nogil region that splits the work over OpenMP threads.
#
# Two entry points share the drivers:
#   run_single  - one tensor (fastoptim.functional), checked on every call;
#   StepPlan    - all tensors of an optimizer (fastoptim.optim), pointer tables
#                 built once and reused; only the grads are checked per step.
# Work is split into equal element ranges of the concatenated tensors, one per
# thread, so tensors of any size mix and every thread gets the same load.
# Each element's update is independent of the others, so results do not depend
# on the thread count or on where the split falls.

cimport numpy as cnp
from cpython.long cimport PyLong_Check, PyLong_AsSsize_t
from cpython.pycapsule cimport PyCapsule_GetPointer
from cython.parallel cimport prange
from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t, uint64_t
from libc.stdlib cimport calloc, free, qsort
from libc.string cimport memcpy

from ._openmp cimport FASTOPTIM_OPENMP, omp_get_max_threads

import os
import numpy as np

cnp.import_array()

OPENMP = bool(FASTOPTIM_OPENMP)

SGD, ADAGRAD, RMSPROP, ADADELTA, ADAM = FO_SGD, FO_ADAGRAD, FO_RMSPROP, FO_ADADELTA, FO_ADAM
MAX_OPERANDS = FO_MAX_OPERANDS

# The kernel's hyperparameters of each rule, in the order run_single and
# StepPlan.run take them; the state arrays of each rule, in operand order.
KERNEL_FIELDS = {
    FO_SGD: ("lr", "momentum", "dampening", "weight_decay", "nesterov", "maximize"),
    FO_ADAGRAD: ("lr", "lr_decay", "weight_decay", "eps", "maximize"),
    FO_RMSPROP: ("lr", "alpha", "eps", "weight_decay", "momentum", "centered", "maximize"),
    FO_ADADELTA: ("lr", "rho", "eps", "weight_decay", "maximize"),
    FO_ADAM: ("lr", "beta1", "beta2", "eps", "weight_decay", "amsgrad", "maximize",
              "decoupled_weight_decay"),
}
STATE_NAMES = {
    FO_SGD: ("momentum_buffer",),
    FO_ADAGRAD: ("sum",),
    FO_RMSPROP: ("square_avg", "momentum_buffer", "grad_avg"),
    FO_ADADELTA: ("square_avg", "acc_delta"),
    FO_ADAM: ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"),
}


# ---- threads and SIMD level ------------------------------------------------

cdef int _n_threads = 1
# Below this many elements per call a step runs on one thread: starting a
# parallel region costs more than the work.  Tests lower it to exercise splits.
cdef fo_index _parallel_min_elements = 1 << 15


def usable_cores():
    """Cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS, Windows
        return os.cpu_count() or 1


def default_num_threads():
    """OMP_NUM_THREADS if set (as omp_get_max_threads reports it), else the usable cores."""
    if not FASTOPTIM_OPENMP:
        return 1
    if os.environ.get("OMP_NUM_THREADS"):
        return max(1, omp_get_max_threads())
    return usable_cores()


def _set_num_threads(int n):
    global _n_threads
    _n_threads = n if FASTOPTIM_OPENMP else 1


def get_num_threads():
    """The number of threads a step uses."""
    return _n_threads


def _set_parallel_min_elements(fo_index n):
    """Test hook: the size from which a step is split across threads."""
    global _parallel_min_elements
    old = _parallel_min_elements
    _parallel_min_elements = n
    return old


SIMD_LEVELS = ("baseline", "avx2", "avx512")
cdef const fo_kernel_table *_table = fo_compiled_table(FO_SIMD_BASELINE)


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
    _table = fo_compiled_table(i)
    return previous


# ---- the drivers ------------------------------------------------------------

cdef inline fo_index split_point(fo_index n, int part, int parts) noexcept nogil:
    # Equal shares, boundaries on multiples of 16 elements (64 bytes of fp32)
    # so two threads never write the same cache line of an aligned tensor.
    if part >= parts:
        return n
    return (<fo_index>((<double>n * part) / parts)) & ~(<fo_index>15)


cdef inline int threads_for(fo_index n_elements) noexcept nogil:
    if _n_threads <= 1 or n_elements < _parallel_min_elements:
        return 1
    return _n_threads


cdef void run_one_tensor(int rule, int dtype, const fo_args *args, char **data,
                         fo_index n) noexcept nogil:
    cdef fo_range_fn fn = _table.range[rule][dtype]
    cdef int parts = threads_for(n), k
    if parts == 1:
        fn(args, data, 0, n)
        return
    for k in prange(parts, schedule="static", num_threads=parts):
        fn(args, data, split_point(n, k, parts), split_point(n, k + 1, parts))


cdef int fill_args(int rule, fo_args *a, tuple h) except -1:
    if rule == FO_SGD:
        a.sgd.lr, a.sgd.momentum, a.sgd.dampening, a.sgd.weight_decay = h[0], h[1], h[2], h[3]
        a.sgd.nesterov, a.sgd.maximize = bool(h[4]), bool(h[5])
    elif rule == FO_ADAGRAD:
        a.adagrad.lr, a.adagrad.lr_decay, a.adagrad.weight_decay, a.adagrad.eps = h[0], h[1], h[2], h[3]
        a.adagrad.maximize = bool(h[4])
    elif rule == FO_RMSPROP:
        a.rmsprop.lr, a.rmsprop.alpha, a.rmsprop.eps = h[0], h[1], h[2]
        a.rmsprop.weight_decay, a.rmsprop.momentum = h[3], h[4]
        a.rmsprop.centered, a.rmsprop.maximize = bool(h[5]), bool(h[6])
    elif rule == FO_ADADELTA:
        a.adadelta.lr, a.adadelta.rho, a.adadelta.eps, a.adadelta.weight_decay = h[0], h[1], h[2], h[3]
        a.adadelta.maximize = bool(h[4])
    elif rule == FO_ADAM:
        a.adam.lr, a.adam.beta1, a.adam.beta2, a.adam.eps, a.adam.weight_decay = h[0], h[1], h[2], h[3], h[4]
        a.adam.amsgrad, a.adam.maximize = bool(h[5]), bool(h[6])
        a.adam.decoupled_weight_decay = bool(h[7])
    else:
        raise ValueError(f"unknown rule {rule}")
    return 0


cdef inline void set_step(int rule, fo_args *a, int64_t step) noexcept nogil:
    if rule == FO_SGD:
        a.sgd.step = step
    elif rule == FO_ADAGRAD:
        a.adagrad.step = step
    elif rule == FO_RMSPROP:
        a.rmsprop.step = step
    elif rule == FO_ADADELTA:
        a.adadelta.step = step
    else:
        a.adam.step = step


# ---- checks -------------------------------------------------------------------

cdef inline int dtype_index(int typenum) noexcept:
    if typenum == cnp.NPY_FLOAT32:
        return FO_FLOAT32
    if typenum == cnp.NPY_FLOAT64:
        return FO_FLOAT64
    return -1


cdef str describe(obj):
    if isinstance(obj, np.ndarray):
        return f"an array of dtype {obj.dtype}"
    t = type(obj)
    return f"a {t.__module__}.{t.__qualname__}" if t.__module__ != "builtins" else f"a {t.__qualname__}"


cdef int check_layout(cnp.ndarray a, str name, bint written) except -1:
    """Memory layout a kernel can update in place: never copied behind the user's back."""
    if not cnp.PyArray_IS_C_CONTIGUOUS(a):
        raise ValueError(f"{name} is not C-contiguous (strides {(<object>a).strides} for shape {(<object>a).shape}); "
                         f"fastoptim never updates or reads through a hidden copy: "
                         f"pass np.ascontiguousarray({name.split('[')[0]}) or a contiguous array")
    if not cnp.PyArray_ISNOTSWAPPED(a) or not cnp.PyArray_ISALIGNED(a):
        raise ValueError(f"{name} is byte-swapped or misaligned ({a.dtype.str}); "
                         f"expected native-endian, aligned float32 or float64")
    if written and not cnp.PyArray_ISWRITEABLE(a):
        raise ValueError(f"{name} is read-only; fastoptim updates it in place and needs a writeable array")
    return 0


cdef int check_float_array(obj, str name) except -1:
    if not cnp.PyArray_Check(obj):
        raise TypeError(f"{name} must be a numpy.ndarray of float32 or float64, got {describe(obj)}")
    if dtype_index(cnp.PyArray_TYPE(<cnp.ndarray>obj)) < 0:
        raise TypeError(f"{name} has dtype {(<cnp.ndarray>obj).dtype}; "
                        f"expected float32 or float64 (complex, integer and other dtypes are not supported)")
    return 0


cdef int check_like(obj, str name, cnp.ndarray ref, str ref_name) except -1:
    """obj is a float array with ref's dtype and shape."""
    cdef cnp.ndarray a
    if not cnp.PyArray_Check(obj):
        raise TypeError(f"{name} must be a numpy.ndarray with {ref_name}'s dtype {ref.dtype}, "
                        f"got {describe(obj)}")
    a = <cnp.ndarray>obj
    if cnp.PyArray_TYPE(a) != cnp.PyArray_TYPE(ref):
        if dtype_index(cnp.PyArray_TYPE(a)) < 0:
            raise TypeError(f"{name} has dtype {a.dtype}; expected {ref.dtype} like {ref_name} "
                            f"(complex, integer and other dtypes are not supported)")
        raise TypeError(f"{name} has dtype {a.dtype} but {ref_name} has dtype {ref.dtype}")
    if not same_shape(a, ref):
        raise ValueError(f"{name} has shape {(<object>a).shape} but {ref_name} has shape {(<object>ref).shape}")
    return 0


cdef inline bint same_shape(cnp.ndarray a, cnp.ndarray b) noexcept:
    cdef int d, nd = cnp.PyArray_NDIM(a)
    if nd != cnp.PyArray_NDIM(b):
        return False
    for d in range(nd):
        if cnp.PyArray_DIM(a, d) != cnp.PyArray_DIM(b, d):
            return False
    return True


cdef inline bint overlaps(cnp.ndarray a, cnp.ndarray b) noexcept:
    cdef char *a0 = <char *>cnp.PyArray_DATA(a)
    cdef char *b0 = <char *>cnp.PyArray_DATA(b)
    cdef fo_index na = cnp.PyArray_NBYTES(a), nb = cnp.PyArray_NBYTES(b)
    return na > 0 and nb > 0 and a0 < b0 + nb and b0 < a0 + na


cdef int64_t check_step(step) except -1:
    try:
        s = int(step)
        bad = s != step or s < 1
    except (TypeError, ValueError):
        bad = True
    if bad:
        raise ValueError(f"Invalid step: {step!r}; expected the 1-based count of this step, an integer >= 1")
    return s


cdef object scalar_as_array(obj, cnp.ndarray param):
    """A NumPy scalar grad of a 0-d param, as a 0-d array (grads are only read), else obj.

    `err.mean()` is the natural gradient of a scalar bias; only exact dtype
    matches are taken, so nothing is rounded on the way in.
    """
    if (cnp.PyArray_NDIM(param) == 0 and isinstance(obj, np.generic)
            and (<object>obj).dtype == param.dtype):
        return np.asarray(obj)
    return obj


# ---- functional: one tensor -------------------------------------------------

def run_single(int rule, tuple arrays, tuple names, step, tuple hyper):
    """Check one tensor's operands and update them in place.

    arrays: (param, grad, state...) in the rule's operand order, None where the
    options need no array; names: the argument names, for messages.
    """
    cdef fo_args args
    cdef char *data[FO_MAX_OPERANDS]
    cdef Py_ssize_t i, j, n_ops = len(arrays)
    cdef cnp.ndarray param, a
    check_float_array(arrays[0], names[0])
    param = <cnp.ndarray>arrays[0]
    check_layout(param, names[0], True)
    if n_ops > 1 and not cnp.PyArray_Check(arrays[1]):
        arrays = (param, scalar_as_array(arrays[1], param)) + arrays[2:]
    for i in range(1, n_ops):
        if arrays[i] is not None:
            check_like(arrays[i], names[i], param, names[0])
            check_layout(<cnp.ndarray>arrays[i], names[i], i != 1)
    for i in range(n_ops):
        for j in range(i + 1, n_ops):
            if arrays[i] is not None and arrays[j] is not None and overlaps(arrays[i], arrays[j]):
                raise ValueError(f"{names[j]} shares memory with {names[i]}; "
                                 f"each operand of an update must be its own array")
    fill_args(rule, &args, hyper)
    set_step(rule, &args, check_step(step))
    for i in range(FO_MAX_OPERANDS):
        data[i] = NULL
        if i < n_ops and arrays[i] is not None:
            data[i] = <char *>cnp.PyArray_DATA(<cnp.ndarray>arrays[i])
    cdef int dtype = dtype_index(cnp.PyArray_TYPE(param))
    cdef fo_index n = cnp.PyArray_SIZE(param)
    with nogil:
        fo_prepare(rule, &args)
        run_one_tensor(rule, dtype, &args, data, n)



# ---- DLPack: a torch grad's memory, read at C speed ----------------------------

cdef extern from *:
    """
    /* DLPack's stable C ABI (dlpack.h, v0.x "dltensor" capsules). */
    typedef struct { int32_t device_type; int32_t device_id; } fo_DLDevice;
    typedef struct { uint8_t code; uint8_t bits; uint16_t lanes; } fo_DLDataType;
    typedef struct {
        void *data; fo_DLDevice device; int32_t ndim; fo_DLDataType dtype;
        int64_t *shape; int64_t *strides; uint64_t byte_offset;
    } fo_DLTensor;
    typedef struct fo_DLManagedTensor {
        fo_DLTensor dl_tensor; void *manager_ctx; void (*deleter)(struct fo_DLManagedTensor *);
    } fo_DLManagedTensor;
    /* Where an empty tensor's NULL data points instead: NULL means "no grad" in a plan. */
    static char fo_empty_tensor_data;
    """
    ctypedef struct fo_DLDevice:
        int32_t device_type
    ctypedef struct fo_DLDataType:
        uint8_t code
        uint8_t bits
        uint16_t lanes
    ctypedef struct fo_DLTensor:
        void *data
        fo_DLDevice device
        int32_t ndim
        fo_DLDataType dtype
        int64_t *shape
        int64_t *strides
        uint64_t byte_offset
    ctypedef struct fo_DLManagedTensor:
        fo_DLTensor dl_tensor
    char fo_empty_tensor_data

cdef enum:
    DL_CPU = 1
    DL_FLOAT = 2


cdef char *dlpack_grad_data(capsule, cnp.ndarray p, fo_index *nbytes) except? NULL:
    """The data of a DLPack capsule if it is a dense, C-contiguous CPU tensor
    with p's dtype and shape; NULL otherwise (the caller says why)."""
    cdef fo_DLTensor *t = &(<fo_DLManagedTensor *>PyCapsule_GetPointer(capsule, "dltensor")).dl_tensor
    cdef int d, nd = cnp.PyArray_NDIM(p)
    cdef int64_t expected = 1
    if (t.device.device_type != DL_CPU or t.dtype.code != DL_FLOAT or t.dtype.lanes != 1
            or t.dtype.bits != 8 * cnp.PyArray_ITEMSIZE(p) or t.ndim != nd):
        return NULL
    for d in range(nd - 1, -1, -1):
        if t.shape[d] != cnp.PyArray_DIM(p, d):
            return NULL
        # Strides of size-1 dims do not matter; NULL strides mean compact row-major.
        if t.strides != NULL and t.shape[d] != 1 and t.strides[d] != expected:
            return NULL
        expected *= t.shape[d]
    nbytes[0] = cnp.PyArray_NBYTES(p)
    if t.data == NULL:
        return &fo_empty_tensor_data if nbytes[0] == 0 else NULL
    return <char *>t.data + t.byte_offset

# ---- stateful: all tensors of an optimizer -----------------------------------

ctypedef struct interval:
    char *begin
    char *end
    Py_ssize_t tensor


cdef int compare_intervals(const void *x, const void *y) noexcept nogil:
    cdef const interval *a = <const interval *>x
    cdef const interval *b = <const interval *>y
    return -1 if a.begin < b.begin else (1 if a.begin > b.begin else 0)


cdef class StepPlan:
    """Pointer tables for one optimizer's tensors, built once and reused.

    params: list of arrays (flattened over groups); states: per tensor, a
    tuple of state arrays in operand order (None for unused slots), or None
    while the tensor has no state yet; groups: group index of each tensor,
    of n_groups;
    keys: each tensor's name or flat index, for messages; steps: int64 array
    holding each tensor's step count, incremented here.
    """
    cdef readonly int rule
    cdef readonly Py_ssize_t n_tensors
    cdef readonly list params
    cdef readonly list states
    cdef list keys
    cdef list kept             # per tensor, a grad object that must outlive run(): an array made
                               # from a NumPy scalar, or a torch grad read through DLPack
    cdef bint keeping          # whether kept holds anything
    cdef fo_index *offsets
    cdef char **data
    cdef fo_args *args
    cdef int *dtypes
    cdef int *groups
    cdef readonly Py_ssize_t n_groups
    cdef fo_args *group_args
    cdef bint *has_state
    cdef interval *memory
    cdef Py_ssize_t n_memory
    cdef int64_t[::1] steps
    cdef readonly object steps_array
    cdef readonly list tensors      # torch face: the param tensors the views belong to

    def __cinit__(self):
        self.offsets = NULL
        self.data = NULL
        self.args = NULL
        self.dtypes = NULL
        self.groups = NULL
        self.has_state = NULL
        self.memory = NULL
        self.group_args = NULL

    def __dealloc__(self):
        free(self.offsets)
        free(self.data)
        free(self.args)
        free(self.dtypes)
        free(self.groups)
        free(self.has_state)
        free(self.memory)
        free(self.group_args)

    def __init__(self, int rule, list params, list states, groups, Py_ssize_t n_groups, list keys, steps):
        cdef Py_ssize_t n = len(params), i, j, k
        cdef cnp.ndarray p
        self.rule = rule
        self.n_tensors = n
        self.params = params
        self.states = states
        self.keys = keys
        self.kept = [None] * n
        self.keeping = False
        self.steps_array = steps
        self.steps = steps
        self.offsets = <fo_index *>calloc(n + 1, sizeof(fo_index))
        self.data = <char **>calloc(n * FO_MAX_OPERANDS + 1, sizeof(char *))
        self.args = <fo_args *>calloc(n + 1, sizeof(fo_args))
        self.dtypes = <int *>calloc(n + 1, sizeof(int))
        self.groups = <int *>calloc(n + 1, sizeof(int))
        self.has_state = <bint *>calloc(n + 1, sizeof(bint))
        self.memory = <interval *>calloc(n * FO_MAX_OPERANDS + 1, sizeof(interval))
        self.n_groups = n_groups
        self.group_args = <fo_args *>calloc(n_groups + 1, sizeof(fo_args))
        if (self.group_args == NULL or self.offsets == NULL or self.data == NULL or self.args == NULL or self.dtypes == NULL
                or self.groups == NULL or self.has_state == NULL or self.memory == NULL):
            raise MemoryError()
        self.n_memory = 0
        for i in range(n):
            p = <cnp.ndarray>params[i]
            self.offsets[i + 1] = self.offsets[i] + cnp.PyArray_SIZE(p)
            self.dtypes[i] = dtype_index(cnp.PyArray_TYPE(p))
            self.groups[i] = groups[i]
            self.data[i * FO_MAX_OPERANDS] = <char *>cnp.PyArray_DATA(p)
            self.add_memory(p, i)
            st = states[i]
            self.has_state[i] = st is not None
            if st is not None:
                for k, s in enumerate(st):
                    if s is not None:
                        self.data[i * FO_MAX_OPERANDS + 2 + k] = <char *>cnp.PyArray_DATA(<cnp.ndarray>s)
                        self.add_memory(<cnp.ndarray>s, i)
        qsort(self.memory, self.n_memory, sizeof(interval), compare_intervals)
        for j in range(1, self.n_memory):
            if self.memory[j].begin < self.memory[j - 1].end:
                raise ValueError(f"{self.param_name(self.memory[j].tensor)} shares memory with "
                                 f"{self.param_name(self.memory[j - 1].tensor)} (or their state); "
                                 f"every param must be its own array")

    cdef void add_memory(self, cnp.ndarray a, Py_ssize_t tensor):
        cdef fo_index nbytes = cnp.PyArray_NBYTES(a)
        if nbytes > 0:
            self.memory[self.n_memory].begin = <char *>cnp.PyArray_DATA(a)
            self.memory[self.n_memory].end = self.memory[self.n_memory].begin + nbytes
            self.memory[self.n_memory].tensor = tensor
            self.n_memory += 1

    cdef str param_name(self, Py_ssize_t i):
        return f"params[{self.keys[i]!r}]"

    cdef Py_ssize_t find_overlap(self, char *begin, char *end) noexcept:
        """A tensor whose param or state memory overlaps [begin, end), or -1."""
        cdef Py_ssize_t lo = 0, hi = self.n_memory, mid
        while lo < hi:  # first interval starting at or after end
            mid = (lo + hi) // 2
            if self.memory[mid].begin < end:
                lo = mid + 1
            else:
                hi = mid
        if lo > 0 and self.memory[lo - 1].end > begin:
            return self.memory[lo - 1].tensor
        return -1

    def matches(self, list param_groups):
        """Whether the groups' params are exactly the arrays this plan was built for."""
        cdef Py_ssize_t i = 0
        for group in param_groups:
            for p in group["params"]:
                if i >= self.n_tensors or p is not self.params[i]:
                    return False
                i += 1
        return i == self.n_tensors

    def gather(self, grads):
        """Check every grad and record its pointer; write nothing else.

        Returns how many tensors got a grad but have no state yet
        (missing_state() lists them).
        """
        cdef Py_ssize_t i, n = self.n_tensors, n_missing = 0
        cdef cnp.ndarray p, g
        cdef char *begin
        cdef fo_index nbytes
        if len(grads) != n:
            raise ValueError(f"got {len(grads)} grads for {n} params; "
                             f"pass one grad (or None) per param, in the same order")
        self.forget_grads()
        for i in range(n):
            gobj = grads[i]
            if gobj is None:
                continue
            p = <cnp.ndarray>self.params[i]
            if not cnp.PyArray_Check(gobj):
                gobj = scalar_as_array(gobj, p)
                if cnp.PyArray_Check(gobj):
                    self.keep(i, gobj)
            # The common case is checked with C tests alone; messages are
            # formatted only once something is wrong.
            if not (cnp.PyArray_Check(gobj) and cnp.PyArray_ISWRITEABLE(p)):
                self.raise_bad_grad(i, gobj)
            g = <cnp.ndarray>gobj
            if not (cnp.PyArray_TYPE(g) == cnp.PyArray_TYPE(p) and same_shape(g, p)
                    and cnp.PyArray_IS_C_CONTIGUOUS(g) and cnp.PyArray_ISNOTSWAPPED(g)
                    and cnp.PyArray_ISALIGNED(g)):
                self.raise_bad_grad(i, gobj)
            begin = <char *>cnp.PyArray_DATA(g)
            nbytes = cnp.PyArray_NBYTES(g)
            if nbytes > 0 and self.find_overlap(begin, begin + nbytes) >= 0:
                self.raise_bad_grad(i, gobj)
            if not self.has_state[i]:
                n_missing += 1
            self.data[i * FO_MAX_OPERANDS + 1] = begin
        return n_missing

    def missing_state(self):
        """Tensors with a gathered grad and no state yet."""
        return [i for i in range(self.n_tensors)
                if self.data[i * FO_MAX_OPERANDS + 1] != NULL and not self.has_state[i]]

    cdef void keep(self, Py_ssize_t i, grad):
        """Keep `grad` alive until the grads are forgotten."""
        self.kept[i] = grad
        self.keeping = True

    def forget_grads(self):
        cdef Py_ssize_t i
        for i in range(self.n_tensors):
            self.data[i * FO_MAX_OPERANDS + 1] = NULL
        if self.keeping:
            for i in range(self.n_tensors):
                self.kept[i] = None
            self.keeping = False

    cdef int raise_bad_grad(self, Py_ssize_t i, gobj) except -1:
        cdef cnp.ndarray p = <cnp.ndarray>self.params[i]
        cdef str name = f"grads[{self.keys[i]!r}]"
        cdef char *begin
        self.forget_grads()
        if not cnp.PyArray_ISWRITEABLE(p):
            raise ValueError(f"{self.param_name(i)} is read-only; fastoptim updates params in place")
        check_like(gobj, name, p, self.param_name(i))
        check_layout(<cnp.ndarray>gobj, name, False)
        begin = <char *>cnp.PyArray_DATA(<cnp.ndarray>gobj)
        hit = self.find_overlap(begin, begin + cnp.PyArray_NBYTES(<cnp.ndarray>gobj))
        raise ValueError(f"{name} shares memory with {self.param_name(hit)} or its state; "
                         f"pass the gradient in its own array")

    # ---- torch face -----------------------------------------------------------
    def attach_tensors(self, list tensors):
        """Record the torch tensors whose NumPy views this plan was built on (plan order)."""
        if len(tensors) != self.n_tensors:
            raise ValueError(f"got {len(tensors)} tensors for {self.n_tensors} params")
        self.tensors = tensors

    def gather_torch(self, list param_groups, to_dlpack):
        """gather() for torch params: read each param's .grad itself.

        Checks at C speed that the groups still hold the attached tensors over
        the same memory, then takes every grad through a DLPack capsule (one C
        struct with pointer, device, dtype, shape and strides).  Returns -1 if
        the params changed (rebuild the plan), else the number of params with a
        grad and no state yet.  Nothing but grad pointers is recorded.
        """
        cdef Py_ssize_t i = 0, n = self.n_tensors, n_missing = 0
        cdef cnp.ndarray p
        cdef char *begin
        cdef fo_index nbytes
        if self.tensors is None:
            raise ValueError("attach_tensors() was not called")
        self.forget_grads()
        for group in param_groups:
            for t in group["params"]:
                if i >= n or t is not self.tensors[i]:
                    self.forget_grads()
                    return -1
                p = <cnp.ndarray>self.params[i]
                if PyLong_AsSsize_t(t.data_ptr()) != <Py_ssize_t>cnp.PyArray_DATA(p) and cnp.PyArray_NBYTES(p) > 0:
                    self.forget_grads()
                    return -1  # the tensor's storage was swapped (p.data = ..., module.to(...))
                g = t.grad
                if g is not None:
                    try:
                        capsule = to_dlpack(g)
                    except Exception:  # sparse and other tensors without plain storage
                        self.raise_bad_torch_grad(i, g, "")
                    begin = dlpack_grad_data(capsule, p, &nbytes)
                    if begin == NULL:
                        if self.tensor_reshaped(i):  # same memory, new shape or dtype: rebuild
                            self.forget_grads()
                            return -1
                        self.raise_bad_torch_grad(i, g, "")
                    if nbytes > 0 and self.find_overlap(begin, begin + nbytes) >= 0:
                        self.raise_bad_torch_grad(i, g, "shares memory")
                    if not self.has_state[i]:
                        n_missing += 1
                    self.keep(i, g)
                    self.data[i * FO_MAX_OPERANDS + 1] = begin
                i += 1
        if i != n:
            self.forget_grads()
            return -1
        return n_missing

    cdef bint tensor_reshaped(self, Py_ssize_t i) except -1:
        t, p = self.tensors[i], self.params[i]
        return tuple(t.shape) != p.shape or str(t.dtype) != "torch." + p.dtype.name

    cdef int raise_bad_torch_grad(self, Py_ssize_t i, g, str problem) except -1:
        cdef cnp.ndarray p = <cnp.ndarray>self.params[i]
        cdef str name = f"params[{self.keys[i]!r}].grad"
        cdef char *begin
        cdef fo_index nbytes
        self.forget_grads()
        if problem:
            begin = <char *><Py_ssize_t>g.data_ptr()
            nbytes = g.numel() * g.element_size()
            hit = self.find_overlap(begin, begin + nbytes)
            raise ValueError(f"{name} shares memory with {self.param_name(hit)} or its state; "
                             f"a gradient must be its own tensor")
        if g.is_sparse or str(g.layout) != "torch.strided":
            raise TypeError(f"{name} is a sparse ({g.layout}) tensor; fastoptim.torch takes dense "
                            f"gradients only (use a dense embedding, or torch.optim.SparseAdam)")
        if g.device.type != "cpu":
            raise ValueError(f"{name} is on {g.device}; fastoptim.torch steps CPU tensors and never "
                             f"copies them behind your back")
        if str(g.dtype).replace("torch.", "") != p.dtype.name:
            raise TypeError(f"{name} has dtype {g.dtype} but {self.param_name(i)} has dtype torch.{p.dtype.name}")
        if tuple(g.shape) != (<object>p).shape:
            raise ValueError(f"{name} has shape {tuple(g.shape)} but {self.param_name(i)} has shape {(<object>p).shape}")
        raise ValueError(f"{name} is not contiguous (strides {g.stride()} for shape {tuple(g.shape)}); "
                         f"fastoptim.torch never reads through a hidden copy: make it contiguous "
                         f"(p.grad = p.grad.contiguous()) or keep it so")

    def run(self, list group_hyper):
        """Update every tensor whose grad gather() recorded, then forget the grads.

        group_hyper: per param group, the kernel hyperparameters (KERNEL_FIELDS order).
        """
        cdef Py_ssize_t n = self.n_tensors, i, prev = -1
        if len(group_hyper) != self.n_groups:
            self.forget_grads()
            raise ValueError(f"got hyperparameters for {len(group_hyper)} groups, expected {self.n_groups}")
        try:
            for i in range(self.n_groups):
                fill_args(self.rule, &self.group_args[i], group_hyper[i])
        except BaseException:
            self.forget_grads()
            raise
        with nogil:
            for i in range(n):
                if self.data[i * FO_MAX_OPERANDS + 1] == NULL:
                    continue
                self.steps[i] += 1
                # Tensors of one group at one step share their per-call scalars.
                if (prev >= 0 and self.groups[i] == self.groups[prev]
                        and self.steps[i] == self.steps[prev]):
                    memcpy(&self.args[i], &self.args[prev], sizeof(fo_args))
                else:
                    memcpy(&self.args[i], &self.group_args[self.groups[i]], sizeof(fo_args))
                    set_step(self.rule, &self.args[i], self.steps[i])
                    fo_prepare(self.rule, &self.args[i])
                prev = i
            self.run_all()
        self.forget_grads()

    cdef void run_all(self) noexcept nogil:
        cdef fo_index total = self.offsets[self.n_tensors]
        cdef int parts = threads_for(total), k
        if parts == 1:
            self.run_range(0, total)
            return
        for k in prange(parts, schedule="static", num_threads=parts):
            self.run_range(split_point(total, k, parts), split_point(total, k + 1, parts))

    cdef void run_range(self, fo_index begin, fo_index end) noexcept nogil:
        """Update elements [begin, end) of the tensors laid end to end."""
        cdef Py_ssize_t lo = 0, hi = self.n_tensors, mid, t
        cdef fo_index first, last
        if begin >= end:
            return
        while lo < hi:  # the tensor holding element `begin`: last t with offsets[t] <= begin
            mid = (lo + hi) // 2
            if self.offsets[mid + 1] <= begin:
                lo = mid + 1
            else:
                hi = mid
        t = lo
        while t < self.n_tensors and self.offsets[t] < end:
            if self.data[t * FO_MAX_OPERANDS + 1] != NULL:
                first = begin - self.offsets[t] if begin > self.offsets[t] else 0
                last = (end if end < self.offsets[t + 1] else self.offsets[t + 1]) - self.offsets[t]
                if last > first:
                    _table.range[self.rule][self.dtypes[t]](
                        &self.args[t], &self.data[t * FO_MAX_OPERANDS], first, last)
            t += 1


# ---- build facts for show_config ------------------------------------------------

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
COMPILE_ARGS = FASTOPTIM_COMPILE_ARGS.decode()


# ---- machine bandwidth, for the benchmark's roofline ------------------------------

def scale_add_inplace(double[::1] a, const double[::1] b, double s, int n_threads):
    """a = s * a + b with n_threads: two streams read, one written in place, as an
    optimizer step does.  The benchmark times it on arrays far larger than the caches."""
    cdef Py_ssize_t i, n = a.shape[0]
    if b.shape[0] != n:
        raise ValueError("a and b must have the same length")
    with nogil:
        for i in prange(n, schedule="static", num_threads=max(1, n_threads)):
            a[i] = s * a[i] + b[i]


# ---- the stateful step's fast path -------------------------------------------------

def same_options(list groups, tuple keys, list remembered):
    """Whether every group holds, under each key, the very object remembered for it,
    and follows no lr schedule: then its checked hyperparameters are still valid.

    The caller keeps `remembered` alive, so an id cannot be recycled meanwhile.
    """
    cdef Py_ssize_t gi, j, n_keys = len(keys)
    cdef dict group
    cdef list values
    if remembered is None or len(groups) != len(remembered):
        return False
    for gi in range(len(groups)):
        if type(groups[gi]) is not dict:
            return False
        group = <dict>groups[gi]
        values = <list>remembered[gi]
        if "lr_schedule" in group:
            return False
        for j in range(n_keys):
            if group.get(keys[j], values) is not values[j]:
                return False
    return True


def same_objects(tuple a, tuple b):
    """Whether a and b hold the very same objects, position by position."""
    cdef Py_ssize_t i, n = len(a)
    if len(b) != n:
        return False
    for i in range(n):
        if a[i] is not b[i]:
            return False
    return True
