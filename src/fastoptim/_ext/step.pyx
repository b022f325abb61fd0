# The drivers of the update rules: argument checks at C speed, then one nogil
# region that splits the work over OpenMP threads.
#
# Two entry points share the drivers:
#   run_single  - one tensor (fastoptim.functional), checked on every call;
#   StepPlan    - all tensors of an optimizer (the step engine), pointer tables
#                 built once and reused; only the grads are checked per step.
# Work is split into equal element ranges of the concatenated tensors, one per
# thread, so tensors of any size mix and every thread gets the same load.
# Each element's update is independent of the others, so results do not depend
# on the thread count or on where the split falls.  Rules with several passes
# (fo_rule_passes: LAMB) sum per-tensor quantities in their first passes over
# fixed blocks of each tensor (fo_sum_blocks, the unit of thread work), added
# in block order: their results do not depend on the thread count either.
#
# A rule's arguments are filled generically: the common header (lr, maximize,
# step, grad scale) by name, the rule's own fields through the C field table
# (fo_rule_describe), from a tuple (lr, maximize, *fields) that the Python Rule
# checked, in the same order.

cimport numpy as cnp
from cpython.long cimport PyLong_AsSsize_t
from cython.parallel cimport prange
from libc.math cimport NAN
from libc.stdint cimport int64_t, uint8_t, uint32_t, uint64_t
from libc.stdlib cimport calloc, free, malloc, qsort
from libc.string cimport memcpy

from .checks cimport (check_grad_scale, check_layout, check_like, check_param_array, check_state_operand,
                      check_step, overlaps, same_shape, scalar_as_array, storage_type)
from .common cimport (FO_BF16, FO_F16, FO_FIELD_REAL, FO_FLOAT32, FO_GRAD_PLAIN, FO_GRAD_SCALED, FO_MASTER_SLOT,
                      FO_MAX_OPERANDS, FO_DATA_SLOTS, FO_MAX_SUMS, FO_N_COMPUTE_TYPES, FO_NORM_BLOCKS,
                      FO_Q8, FO_Q8_KEY_OF_ONE, FO_Q8_MAX_BLOCK, FO_Q8_SLOTS, FO_SUMS_OPERAND, fo_args, fo_q8, fo_field, fo_has_tensor_hook, fo_index, fo_kernel_table, fo_prepare,
                      fo_items_before, fo_rule_desc, fo_rule_passes, fo_rule_sums, fo_rule_sweeps, fo_run, fo_sum_blocks,
                      fo_sweep_items, fo_tensor_prepare, fo_tensor_reduced, fo_tensor_scratch,
                      segment_of, split_point)
from .dlpack cimport dlpack_grad_data
from .runtime cimport kernel_table, rule_describe, step_threads

import numpy as np

from .checks import SCALAR

cnp.import_array()

MAX_OPERANDS = FO_MAX_OPERANDS
# Param storage layouts beyond the compute types (enum fo_layout): a 16-bit param
# (bfloat16 or float16) stored by round to nearest even, from a float32 master copy,
# or by stochastic rounding.
LAYOUTS = {("bfloat16", "nearest"): FO_BF16, ("float16", "nearest"): FO_F16,
           ("bfloat16", "master"): FO_BF16 + 2, ("float16", "master"): FO_F16 + 2,
           ("bfloat16", "stochastic"): FO_BF16 + 4, ("float16", "stochastic"): FO_F16 + 4}
# A float32 param whose state is kept in 8 bits per element (blockwise8.inc).
BLOCKWISE8 = FO_Q8
Q8_SLOTS, Q8_MAX_BLOCK, Q8_KEY_OF_ONE = FO_Q8_SLOTS, FO_Q8_MAX_BLOCK, FO_Q8_KEY_OF_ONE


def is_half(array):
    """Whether array is a NumPy array of a 16-bit float type the kernels take."""
    return cnp.PyArray_Check(array) and storage_type(cnp.PyArray_TYPE(<cnp.ndarray>array)) in (FO_BF16, FO_F16)


cdef int fill_args(int rule, fo_args *a, tuple h) except -1:
    """The header's lr and maximize from h[0], h[1], the rule's fields from h[2:]."""
    cdef object value
    cdef const fo_rule_desc *d = rule_describe(rule)
    cdef const fo_field *f
    cdef char *base = <char *>a
    cdef int i
    if d == NULL or len(h) != d.n_fields + 2:
        raise ValueError(f"rule {rule} takes {'?' if d == NULL else d.n_fields + 2} hyperparameters, got {len(h)}")
    a.common.lr = h[0]
    a.common.maximize = bool(h[1])
    for i in range(d.n_fields):
        f = &d.fields[i]
        if f.kind == FO_FIELD_REAL:  # an optional one (Real.allow_none) holds NaN for None
            value = h[i + 2]
            (<double *>(base + f.offset))[0] = NAN if value is None else value
        else:
            (<int *>(base + f.offset))[0] = bool(h[i + 2])
    return 0


cdef unsigned f64_operands(arrays):
    """Bit k set where operand k is a float64 array (fo_common.f64_operands)."""
    cdef unsigned mask = 0
    cdef Py_ssize_t k
    for k in range(len(arrays)):
        a = arrays[k]
        if a is not None and cnp.PyArray_TYPE(<cnp.ndarray>a) == cnp.NPY_FLOAT64:
            mask |= 1u << k
    return mask


def staged_refusal(int rule):
    """Why the C rule cannot run on 16-bit params yet, or None.  The staged drivers run the
    rule's float32 loop chunk by chunk: a per-tensor hook (scalar state), sweeps or several
    passes (sums over the whole tensor) are not staged yet."""
    if fo_rule_passes(rule) > 1:
        return "it goes over each tensor in several passes, which the 16-bit drivers do not stage yet"
    if fo_rule_sweeps(rule) > 0:
        return "it sums over rows and columns before its update, which the 16-bit drivers do not stage yet"
    if fo_has_tensor_hook(rule):
        return "it keeps per-tensor scalar state, which the 16-bit drivers do not stage yet"
    return None


cdef int refuse_staged(int rule, int layout, cnp.ndarray param, str name) except -1:
    """16-bit params of a rule the staged drivers cannot run are refused before anything is written."""
    if layout >= FO_N_COMPUTE_TYPES:
        reason = staged_refusal(rule)
        if reason is not None:
            raise TypeError(f"{rule_describe(rule).name.decode()} does not take {(<object>param).dtype} params "
                            f"({name}): {reason}; use float32 or float64 params")
    return 0


cdef struct tensor_shape:
    fo_index size, rows, cols  # what the header says of a param (set_shape)


cdef tensor_shape shape_of(cnp.ndarray param) noexcept:
    """The param's element count and last two dimensions."""
    cdef int ndim = cnp.PyArray_NDIM(param)
    cdef tensor_shape shape
    shape.size = cnp.PyArray_SIZE(param)
    shape.rows = cnp.PyArray_DIM(param, ndim - 2) if ndim >= 2 else 1
    shape.cols = cnp.PyArray_DIM(param, ndim - 1) if ndim >= 1 else 1
    return shape


cdef void set_shape(fo_args *a, tensor_shape shape) noexcept nogil:
    """The header's size, rows and cols."""
    a.common.size = shape.size
    a.common.rows = shape.rows
    a.common.cols = shape.cols


def checked_grad_scale(grad_scale):
    """grad_scale as the kernels take it: 1.0 for None, else a finite float > 0."""
    return check_grad_scale(grad_scale)


cdef void run_one_tensor(int rule, int layout, int grad_mode, const fo_args *args, char **data,
                         fo_index n) noexcept nogil:
    cdef const fo_kernel_table *table = kernel_table()
    cdef int parts = step_threads(n), k
    if parts == 1:
        fo_run(table, rule, layout, grad_mode, args, data, 0, n)
        return
    for k in prange(parts, schedule="static", num_threads=parts):
        fo_run(table, rule, layout, grad_mode, args, data, split_point(n, k, parts), split_point(n, k + 1, parts))


cdef void run_blocks(const fo_kernel_table *table, int rule, int layout, int grad_mode, const fo_args *args,
                     char **data, fo_index n, fo_index lo, fo_index hi, double *sums, int n_sums) noexcept nogil:
    """A summing pass over the blocks of one tensor of n elements whose first element lies in
    [lo, hi): block b of B = fo_sum_blocks(n), [n*b/B, n*(b+1)/B), writes sums[b*n_sums:...]."""
    cdef char *operands[FO_DATA_SLOTS]
    cdef fo_index start, stop, blocks = fo_sum_blocks(n)
    cdef int b, k
    for k in range(FO_DATA_SLOTS):
        operands[k] = data[k]
    for b in range(blocks):
        start = n * b // blocks
        if start < lo or start >= hi:
            continue
        stop = n * (b + 1) // blocks
        operands[FO_SUMS_OPERAND] = <char *>&sums[b * n_sums]
        fo_run(table, rule, layout, grad_mode, args, operands, start, stop)


cdef void reduce_blocks(int rule, fo_args *args, fo_index n, const double *sums, int n_sums,
                        int pass_) noexcept nogil:
    """Add one tensor's block sums in block order and hand the totals to its rule."""
    cdef double totals[FO_MAX_SUMS]
    cdef fo_index b, blocks = fo_sum_blocks(n) if n > 0 else 0
    cdef int k
    for k in range(n_sums):
        totals[k] = 0.0
        for b in range(blocks):
            totals[k] += sums[b * n_sums + k]
    fo_tensor_reduced(rule, args, pass_, totals)


cdef void run_tensor_passes(int rule, int layout, int grad_mode, fo_args *args, char **data, fo_index n,
                            int passes) noexcept nogil:
    """Every pass of a multi-pass rule over one tensor."""
    cdef const fo_kernel_table *table = kernel_table()
    cdef int n_sums = fo_rule_sums(rule), parts, k, pass_
    cdef double sums[FO_NORM_BLOCKS * FO_MAX_SUMS]
    for pass_ in range(passes):
        args.common.pass_ = pass_
        if pass_ == passes - 1:
            run_one_tensor(rule, layout, grad_mode, args, data, n)
            return
        parts = step_threads(n)
        if parts == 1:
            run_blocks(table, rule, layout, grad_mode, args, data, n, 0, n, sums, n_sums)
        else:
            for k in prange(parts, schedule="static", num_threads=parts):
                run_blocks(table, rule, layout, grad_mode, args, data, n, split_point(n, k, parts), split_point(n, k + 1, parts),
                           sums, n_sums)
        reduce_blocks(rule, args, n, sums, n_sums, pass_)


cdef void run_sweep_range(int rule, int grad_mode, fo_args *args, char **data, const int *layouts,
                          const fo_index *offsets, Py_ssize_t first_tensor, Py_ssize_t end_tensor, fo_index begin,
                          fo_index end) noexcept nogil:
    """One thread's part of a sweep (each tensor's common.sweep) over tensors [first_tensor,
    end_tensor) laid end to end (tensor t's elements at [offsets[t], offsets[t + 1])): of each,
    the items whose share of its elements lies in [begin, end) (fo_items_before)."""
    cdef const fo_kernel_table *table = kernel_table()
    cdef Py_ssize_t t
    cdef fo_index n, first, last, items
    if begin >= end:
        return
    t = first_tensor + segment_of(&offsets[first_tensor], end_tensor - first_tensor, begin)
    while t < end_tensor and offsets[t] < end:
        n = offsets[t + 1] - offsets[t]
        if data[t * FO_DATA_SLOTS + 1] != NULL and n > 0:
            items = fo_sweep_items(rule, &args[t].common, &data[t * FO_DATA_SLOTS], args[t].common.sweep)
            first = fo_items_before(items, (begin - offsets[t] if begin > offsets[t] else 0), n)
            last = fo_items_before(items, (end if end < offsets[t + 1] else offsets[t + 1]) - offsets[t], n)
            if last > first:
                fo_run(table, rule, layouts[t], grad_mode, &args[t], &data[t * FO_DATA_SLOTS], first, last)
        t += 1


cdef void run_sweeps(int rule, int grad_mode, fo_args *args, char **data, const int *layouts,
                     const fo_index *offsets, Py_ssize_t first_tensor, Py_ssize_t end_tensor) noexcept nogil:
    """Every sweep of a rule in FO_SWEEP_RULES over tensors [first_tensor, end_tensor): sweep s of
    all of them, in one parallel region, before sweep s + 1 of any."""
    cdef fo_index begin = offsets[first_tensor], total = offsets[end_tensor] - offsets[first_tensor]
    cdef int parts = step_threads(total), k, sweep
    cdef Py_ssize_t t
    for sweep in range(1, fo_rule_sweeps(rule) + 1):
        for t in range(first_tensor, end_tensor):
            args[t].common.sweep = sweep
        if parts == 1:
            run_sweep_range(rule, grad_mode, args, data, layouts, offsets, first_tensor, end_tensor, begin,
                            begin + total)
        else:
            for k in prange(parts, schedule="static", num_threads=parts):
                run_sweep_range(rule, grad_mode, args, data, layouts, offsets, first_tensor, end_tensor,
                                begin + split_point(total, k, parts), begin + split_point(total, k + 1, parts))
    for t in range(first_tensor, end_tensor):
        args[t].common.sweep = 0


# ---- functional: one tensor -------------------------------------------------

def run_single(int rule, tuple arrays, tuple names, step, tuple hyper, grad_scale=None, tuple expected=None):
    """Check one tensor's operands and update them in place.

    arrays: (param, grad, state...) in the rule's operand order, None where the
    options need no array; names: the argument names, for messages; hyper: the
    checked (lr, maximize, *fields); grad_scale: None or a divisor of the grad;
    expected: None when every state array is like the param, else per operand
    None (like the param), SCALAR (a per-tensor scalar: a 0-d float32 or float64
    array) or the shape it must have (in the param's dtype).
    A 16-bit param (bfloat16, float16) takes its grad in its own dtype and each
    state array in its dtype or in float32; it is rounded to nearest even.
    """
    cdef fo_args args
    cdef char *data[FO_DATA_SLOTS]
    cdef uint32_t half_slots = 0
    cdef Py_ssize_t i, j, n_ops = len(arrays)
    cdef cnp.ndarray param
    cdef double scale
    check_param_array(arrays[0], names[0])
    param = <cnp.ndarray>arrays[0]
    cdef int layout = storage_type(cnp.PyArray_TYPE(param))
    cdef bint half = layout == FO_BF16 or layout == FO_F16
    refuse_staged(rule, layout, param, names[0])
    check_layout(param, names[0], True)
    if n_ops > 1 and not cnp.PyArray_Check(arrays[1]):
        arrays = (param, scalar_as_array(arrays[1], param)) + arrays[2:]
    for i in range(1, n_ops):
        if arrays[i] is not None:
            if expected is not None and expected[i] is not None:
                check_state_operand(arrays[i], names[i], param, names[0], expected[i])
            elif half and i >= 2 and cnp.PyArray_Check(arrays[i]) and cnp.PyArray_TYPE(<cnp.ndarray>arrays[i]) == cnp.NPY_FLOAT32:
                if not same_shape(<cnp.ndarray>arrays[i], param):  # float32 state of a 16-bit param
                    raise ValueError(f"{names[i]} has shape {arrays[i].shape} but {names[0]} has shape {(<object>param).shape}")
            else:
                check_like(arrays[i], names[i], param, names[0])
                if half and i >= 2:
                    half_slots |= 1u << (i - 2)
            check_layout(<cnp.ndarray>arrays[i], names[i], i != 1)
    for i in range(n_ops):
        for j in range(i + 1, n_ops):
            if arrays[i] is not None and arrays[j] is not None and overlaps(arrays[i], arrays[j]):
                raise ValueError(f"{names[j]} shares memory with {names[i]}; "
                                 f"each operand of an update must be its own array")
    fill_args(rule, &args, hyper)
    args.common.step = check_step(step)
    scale = 1.0 if grad_scale is None else check_grad_scale(grad_scale)
    args.common.grad_scale = scale
    args.common.half_slots = half_slots
    args.common.param_index = 0
    args.common.seed = 0
    args.common.f64_operands = f64_operands(arrays)
    args.common.scalar_f64 = 0  # new per-tensor scalars are float32, as torch's default dtype makes them
    for i in range(FO_DATA_SLOTS):
        data[i] = NULL
        if i < n_ops and arrays[i] is not None:
            data[i] = <char *>cnp.PyArray_DATA(<cnp.ndarray>arrays[i])
    cdef fo_index n = cnp.PyArray_SIZE(param)
    cdef int grad_mode = FO_GRAD_PLAIN if scale == 1.0 else FO_GRAD_SCALED
    cdef int passes = fo_rule_passes(rule)
    args.common.pass_ = 0
    set_shape(&args, shape_of(param))
    args.common.sweep = 0
    cdef fo_index offsets[2]
    offsets[0] = 0
    offsets[1] = n
    cdef fo_index kept_size, scratch_size = fo_tensor_scratch(rule, &args.common, data, &kept_size)
    args.common.kept = args.common.scratch = NULL
    if scratch_size + kept_size > 0:  # the rule's working memory, O(rows + columns) (Adafactor's)
        args.common.kept = <double *>malloc((scratch_size + kept_size) * sizeof(double))
        if args.common.kept == NULL:
            raise MemoryError()
        args.common.scratch = args.common.kept + kept_size
    try:
        with nogil:
            fo_prepare(rule, &args)
            fo_tensor_prepare(rule, &args, data)
            if fo_rule_sweeps(rule) > 0:
                run_sweeps(rule, grad_mode, &args, data, &layout, offsets, 0, 1)
            if passes > 1:
                run_tensor_passes(rule, layout, grad_mode, &args, data, n, passes)
            else:
                run_one_tensor(rule, layout, grad_mode, &args, data, n)
    finally:
        free(args.common.kept)


# ---- stateful: all tensors of an optimizer -----------------------------------

cdef bint dense_block(cnp.ndarray a) except -1:
    """Whether a's elements fill one block of memory from its data pointer, each once
    (C-contiguous, or any permutation of that: channels_last, a transpose)."""
    cdef Py_ssize_t expected = cnp.PyArray_ITEMSIZE(a)
    if cnp.PyArray_IS_C_CONTIGUOUS(a):
        return True
    for stride, size in sorted([((<object>a).strides[d], (<object>a).shape[d])
                                for d in range(cnp.PyArray_NDIM(a)) if cnp.PyArray_DIM(a, d) != 1]):
        if stride != expected:
            return False
        expected *= size
    return True


cdef bint same_layout(cnp.ndarray a, cnp.ndarray b) except -1:
    """Whether a and b, of one shape, put each element at the same place, counted in elements
    (so the kernels, which walk memory, pair the same elements; a float32 state or master copy
    of a 16-bit param has twice its strides in bytes)."""
    cdef int d
    cdef Py_ssize_t item_a = cnp.PyArray_ITEMSIZE(a), item_b = cnp.PyArray_ITEMSIZE(b)
    if not same_shape(a, b):
        return False
    if cnp.PyArray_SIZE(a) == 0:
        return True         # no elements to pair; numpy gives empty arrays any strides (ZeRO's empty pieces)
    for d in range(cnp.PyArray_NDIM(a)):
        if cnp.PyArray_DIM(a, d) != 1 and cnp.PyArray_STRIDE(a, d) * item_b != cnp.PyArray_STRIDE(b, d) * item_a:
            return False
    return True


ctypedef struct interval:
    char *begin
    char *end
    Py_ssize_t tensor


cdef int compare_intervals(const void *x, const void *y) noexcept nogil:
    cdef const interval *a = <const interval *>x
    cdef const interval *b = <const interval *>y
    return -1 if a.begin < b.begin else (1 if a.begin > b.begin else 0)


# The most doubles of sweep scratch a plan keeps beyond what its largest tensor needs (8 MB): the
# sweeps of many small tensors run together (run_all_sweeps), of large ones one by one.
cdef fo_index _sweep_scratch_budget = 1 << 20


def _set_sweep_scratch_budget(fo_index doubles):
    """Set the sweep scratch budget of the plans built from now on; return the old one (a test
    hook: 0 runs every tensor's sweeps on its own)."""
    global _sweep_scratch_budget
    old = _sweep_scratch_budget
    _sweep_scratch_budget = doubles
    return old


# How a tensor's step count is kept (StepPlan.step_kind).
cdef enum:
    STEP_INTERNAL = 0     # in the plan (rules without a 'step' in their state)
    STEP_INT64 = 1        # in the 0-d array the state holds: fastoptim.optim's int64,
    STEP_FLOAT32 = 2      # torch.optim's float32 (fused groups, or the default dtype),
    STEP_FLOAT64 = 3      # or float64 (under torch.set_default_dtype(torch.float64))


cdef class StepPlan:
    """Pointer tables for one optimizer's tensors, built once and reused.

    params: list of arrays (flattened over groups); states: per tensor, a
    tuple of state arrays in operand order (None for unused slots), or None
    while the tensor has no state yet; groups: group index of each tensor,
    of n_groups;
    keys: each tensor's name or flat index, for messages; steps: per tensor,
    its step count: a 0-d int64, float32 or float64 array that the state
    holds (a live counter, read and incremented in place by run()), or an
    int (a count kept in the plan, for rules whose state has no 'step').
    16-bit params: layouts, masters, seeds give per tensor the param's layout
    (LAYOUTS; None: round to nearest), its float32 master copy (FO_*_MASTER)
    and the seed of its stochastic rounding; a state array in the param's
    16-bit dtype is stored in 16 bits, one in float32 stays float32.
    8-bit state: quantized gives per tensor None or a Quantized8 (its layout
    then BLOCKWISE8), whose slots' state arrays are the uint8 codes.
    """
    cdef readonly int rule
    cdef int grad_mode         # FO_GRAD_PLAIN or FO_GRAD_SCALED for this run
    cdef readonly Py_ssize_t bad_tensor   # torch face: the param whose grad gather_torch refused,
    cdef readonly Py_ssize_t bad_overlap  # and the param its memory overlaps (-1: another problem)
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
    cdef int *layouts
    cdef uint32_t *half_slots
    cdef uint64_t *seeds
    cdef unsigned *f64_masks   # per tensor: fo_common.f64_operands
    cdef tensor_shape *shapes  # per tensor: its size, rows and cols
    cdef fo_index *state_sizes # per tensor and state operand: its element count when the plan was built
    cdef bint tensor_hook      # the rule has a per-tensor hook: prepare every tensor's args
    cdef int passes            # passes over each tensor (fo_rule_passes)
    cdef int n_sums            # sums per block of a summing pass (fo_rule_sums)
    cdef double *sums          # per tensor, FO_NORM_BLOCKS blocks of n_sums: the summing passes' output
    cdef int sweeps            # sweeps before the passes (fo_rule_sweeps)
    cdef double *scratch       # the sweeps' working memory (fo_tensor_scratch) of the tensors of one wave (run_all_sweeps)
    cdef fo_index *scratch_sizes  # per tensor, its part of scratch
    cdef fo_index scratch_capacity  # doubles in scratch: the most any tensor needs, or the sum of all up to _sweep_scratch_budget
    cdef double *tensor_memory # what each tensor keeps from its sweeps through its passes, one after another
    cdef fo_index *tensor_memory_offsets  # per tensor, its part of tensor_memory
    cdef public bint scalar_f64  # new per-tensor scalars round to float64 (torch's default dtype), else float32
    cdef int *groups
    cdef readonly Py_ssize_t n_groups
    cdef fo_args *group_args
    cdef bint *has_state
    cdef interval *memory
    cdef Py_ssize_t n_memory
    cdef int64_t *count             # per tensor: its step count when kept here (STEP_INTERNAL)
    cdef char **step_data           # per tensor: its counter's memory otherwise
    cdef int *step_kind
    cdef list step_arrays           # the counters, kept alive with the plan
    cdef readonly list tensors      # torch face: the param tensors the views belong to
    cdef list every                 # torch face: every param of the groups, when some are not in the plan,
    cdef bytes in_plan              # and which of them are (1) or are stepped elsewhere (0)
    cdef list tensor_layouts        # torch face: each tensor's (shape, strides, dtype) when attached
    cdef bint *complex_view         # torch face: the param is complex, its array the view_as_real
    cdef fo_q8 *q8s                 # per tensor: its 8-bit state's tables (layout FO_Q8)
    cdef list q8_kept               # the arrays those point into, kept alive with the plan
    cdef int64_t skipped            # blocks of 8-bit state left untouched for a non-finite grad

    def __cinit__(self):
        self.offsets = NULL
        self.data = NULL
        self.args = NULL
        self.layouts = NULL
        self.half_slots = NULL
        self.seeds = NULL
        self.f64_masks = NULL
        self.sums = NULL
        self.scratch = NULL
        self.scratch_sizes = NULL
        self.tensor_memory = NULL
        self.tensor_memory_offsets = NULL
        self.shapes = NULL
        self.state_sizes = NULL
        self.groups = NULL
        self.has_state = NULL
        self.memory = NULL
        self.group_args = NULL
        self.count = NULL
        self.step_data = NULL
        self.step_kind = NULL
        self.complex_view = NULL
        self.q8s = NULL

    def __dealloc__(self):
        free(self.offsets)
        free(self.data)
        free(self.args)
        free(self.layouts)
        free(self.half_slots)
        free(self.seeds)
        free(self.f64_masks)
        free(self.shapes)
        free(self.state_sizes)
        free(self.groups)
        free(self.has_state)
        free(self.memory)
        free(self.group_args)
        free(self.count)
        free(self.step_data)
        free(self.step_kind)
        free(self.complex_view)
        free(self.sums)
        free(self.scratch)
        free(self.scratch_sizes)
        free(self.tensor_memory)
        free(self.tensor_memory_offsets)
        free(self.q8s)

    def __init__(self, int rule, list params, list states, groups, Py_ssize_t n_groups, list keys, list steps,
                 layouts=None, masters=None, seeds=None, quantized=None):
        cdef Py_ssize_t n = len(params), i, j, k
        cdef cnp.ndarray p
        cdef int storage
        cdef fo_args probe
        cdef fo_index largest_scratch = 0, all_scratch = 0, kept_size
        self.rule = rule
        self.n_tensors = n
        self.bad_tensor = self.bad_overlap = -1
        self.params = params
        self.states = states
        self.keys = keys
        self.kept = [None] * n
        self.keeping = False
        if len(steps) != n:
            raise ValueError(f"got {len(steps)} step counts for {n} params")
        self.step_arrays = steps
        self.count = <int64_t *>calloc(n + 1, sizeof(int64_t))
        self.step_data = <char **>calloc(n + 1, sizeof(char *))
        self.step_kind = <int *>calloc(n + 1, sizeof(int))
        self.complex_view = <bint *>calloc(n + 1, sizeof(bint))
        self.q8s = <fo_q8 *>calloc(n + 1, sizeof(fo_q8))
        self.q8_kept = []
        self.skipped = 0
        if (self.count == NULL or self.step_data == NULL or self.step_kind == NULL or self.complex_view == NULL
                or self.q8s == NULL):
            raise MemoryError()
        self.offsets = <fo_index *>calloc(n + 1, sizeof(fo_index))
        self.data = <char **>calloc(n * FO_DATA_SLOTS + 1, sizeof(char *))
        self.args = <fo_args *>calloc(n + 1, sizeof(fo_args))
        self.layouts = <int *>calloc(n + 1, sizeof(int))
        self.half_slots = <uint32_t *>calloc(n + 1, sizeof(uint32_t))
        self.seeds = <uint64_t *>calloc(n + 1, sizeof(uint64_t))
        self.f64_masks = <unsigned *>calloc(n + 1, sizeof(unsigned))
        self.shapes = <tensor_shape *>calloc(n + 1, sizeof(tensor_shape))
        self.state_sizes = <fo_index *>calloc(n * FO_MAX_OPERANDS + 1, sizeof(fo_index))
        self.groups = <int *>calloc(n + 1, sizeof(int))
        self.has_state = <bint *>calloc(n + 1, sizeof(bint))
        # per tensor: its param, state arrays, master copy and step counter
        self.memory = <interval *>calloc(n * (FO_DATA_SLOTS + 1) + 1, sizeof(interval))
        self.n_groups = n_groups
        self.group_args = <fo_args *>calloc(n_groups + 1, sizeof(fo_args))
        if (self.group_args == NULL or self.offsets == NULL or self.data == NULL or self.args == NULL or self.layouts == NULL
                or self.half_slots == NULL or self.seeds == NULL or self.f64_masks == NULL or self.shapes == NULL
                or self.state_sizes == NULL or self.groups == NULL or self.has_state == NULL or self.memory == NULL):
            raise MemoryError()
        self.tensor_hook = fo_has_tensor_hook(rule)
        self.passes = fo_rule_passes(rule)
        self.sweeps = fo_rule_sweeps(rule)
        self.n_sums = fo_rule_sums(rule)
        if self.passes > 1:
            self.sums = <double *>calloc(n * FO_NORM_BLOCKS * self.n_sums + 1, sizeof(double))
            if self.sums == NULL:
                raise MemoryError()
        self.scalar_f64 = False
        self.n_memory = 0
        for i in range(n):
            p = <cnp.ndarray>params[i]
            if not dense_block(p):
                raise ValueError(f"{self.param_name(i)} is not one dense block of memory (strides "
                                 f"{(<object>p).strides} for shape {(<object>p).shape})")
            self.offsets[i + 1] = self.offsets[i] + cnp.PyArray_SIZE(p)
            storage = storage_type(cnp.PyArray_TYPE(p))
            self.layouts[i] = storage if layouts is None or layouts[i] is None else layouts[i]
            refuse_staged(rule, self.layouts[i], p, self.param_name(i))
            self.seeds[i] = 0 if seeds is None else seeds[i]
            self.groups[i] = groups[i]
            self.data[i * FO_DATA_SLOTS] = <char *>cnp.PyArray_DATA(p)
            self.add_memory(p, i)
            st = states[i]
            self.has_state[i] = st is not None
            self.f64_masks[i] = f64_operands((p, p) + (tuple(st) if st is not None else ()))
            self.shapes[i] = shape_of(p)
            q8 = None if quantized is None else quantized[i]
            if q8 is not None:
                self.set_quantized(i, p, q8, st)
            if st is not None:
                for k, s in enumerate(st):
                    if s is not None:
                        if q8 is None or k not in q8.slots:
                            self.check_state_layout(i, k, <cnp.ndarray>s, p)
                        self.data[i * FO_DATA_SLOTS + 2 + k] = <char *>cnp.PyArray_DATA(<cnp.ndarray>s)
                        self.state_sizes[i * FO_MAX_OPERANDS + 2 + k] = cnp.PyArray_SIZE(<cnp.ndarray>s)
                        self.add_memory(<cnp.ndarray>s, i)
                        if cnp.PyArray_TYPE(<cnp.ndarray>s) == cnp.PyArray_TYPE(p) and (storage == FO_BF16
                                                                                       or storage == FO_F16):
                            self.half_slots[i] |= 1u << k
            if masters is not None and masters[i] is not None:
                if not same_layout(<cnp.ndarray>masters[i], p):
                    raise ValueError(f"the master copy of {self.param_name(i)} is laid out differently from "
                                     f"its param (strides {(<object>masters[i]).strides} and {(<object>p).strides})")
                self.data[i * FO_DATA_SLOTS + FO_MASTER_SLOT] = <char *>cnp.PyArray_DATA(<cnp.ndarray>masters[i])
                self.add_memory(<cnp.ndarray>masters[i], i)
            self.set_counter(i, steps[i])
        self.tensor_memory_offsets = <fo_index *>calloc(n + 1, sizeof(fo_index))
        self.scratch_sizes = <fo_index *>calloc(n + 1, sizeof(fo_index))
        if self.tensor_memory_offsets == NULL or self.scratch_sizes == NULL:
            raise MemoryError()
        for i in range(n):
            set_shape(&probe, self.shapes[i])
            self.scratch_sizes[i] = fo_tensor_scratch(rule, &probe.common, &self.data[i * FO_DATA_SLOTS], &kept_size)
            largest_scratch = max(largest_scratch, self.scratch_sizes[i])
            all_scratch += self.scratch_sizes[i]
            self.tensor_memory_offsets[i + 1] = self.tensor_memory_offsets[i] + kept_size
        self.scratch_capacity = max(largest_scratch, min(all_scratch, _sweep_scratch_budget))
        if self.scratch_capacity > 0:
            self.scratch = <double *>malloc(self.scratch_capacity * sizeof(double))
            if self.scratch == NULL:
                raise MemoryError()
        if self.tensor_memory_offsets[n] > 0:
            self.tensor_memory = <double *>malloc(self.tensor_memory_offsets[n] * sizeof(double))
            if self.tensor_memory == NULL:
                raise MemoryError()
        qsort(self.memory, self.n_memory, sizeof(interval), compare_intervals)
        for j in range(1, self.n_memory):
            if self.memory[j].begin < self.memory[j - 1].end:
                raise ValueError(f"{self.param_name(self.memory[j].tensor)} shares memory with "
                                 f"{self.param_name(self.memory[j - 1].tensor)} (or their state); "
                                 f"every param must be its own array")

    cdef int set_quantized(self, Py_ssize_t i, cnp.ndarray p, q8, st) except -1:
        """Param i's 8-bit state tables (a Quantized8), checked as the kernel reads them."""
        cdef fo_q8 *q = &self.q8s[i]
        cdef Py_ssize_t j, k, n = cnp.PyArray_SIZE(p), blocks
        name = self.param_name(i)
        if self.layouts[i] != FO_Q8 or cnp.PyArray_TYPE(p) != cnp.NPY_FLOAT32 or not cnp.PyArray_IS_C_CONTIGUOUS(p):
            raise ValueError(f"8-bit state needs a C-contiguous float32 param; {name} is "
                             f"{(<object>p).dtype} with strides {(<object>p).strides}")
        if not 1 <= q8.block <= FO_Q8_MAX_BLOCK or len(q8.slots) > FO_Q8_SLOTS:
            raise ValueError(f"{name}: 8-bit state takes blocks of 1 to {FO_Q8_MAX_BLOCK} elements and at most "
                             f"{FO_Q8_SLOTS} slots, got {q8.block} and {len(q8.slots)}")
        blocks = (n + q8.block - 1) // q8.block
        q.n_slots = len(q8.slots)
        q.block = q8.block
        q.skipped = &self.skipped
        for j in range(q.n_slots):
            k = q8.slots[j]
            codes = None if st is None else st[k]
            table = q8.tables[j]
            arrays = [(codes, np.uint8, n, "codes"), (q8.absmax[j], np.float32, blocks, "absmax"),
                      (table.qmap, np.float32, 256, "qmap"), (table.threshold, np.float32, 256, "thresholds")]
            if table.bucket is not None:
                if not 0 <= table.first_key <= FO_Q8_KEY_OF_ONE or table.per_sign != FO_Q8_KEY_OF_ONE + 1 - table.first_key:
                    raise ValueError(f"{name}: 8-bit state {j + 1}'s buckets start at key {table.first_key} with "
                                     f"{table.per_sign} per sign")
                arrays.append((table.bucket, np.uint32, 2 * table.per_sign, "buckets"))
            for array, dtype, size, what in arrays:
                if (not cnp.PyArray_Check(array) or array.dtype != dtype or array.size != size
                        or not cnp.PyArray_IS_C_CONTIGUOUS(<cnp.ndarray>array)):
                    raise ValueError(f"{name}: 8-bit state {j + 1}'s {what} must be a C-contiguous {np.dtype(dtype)} "
                                     f"array of {size} elements, got {array!r:.80}")
            q.operand[j] = <int>(2 + k)
            q.absmax[j] = <float *>cnp.PyArray_DATA(<cnp.ndarray>q8.absmax[j])
            q.qmap[j] = <const float *>cnp.PyArray_DATA(<cnp.ndarray>table.qmap)
            q.threshold[j] = <const float *>cnp.PyArray_DATA(<cnp.ndarray>table.threshold)
            q.bucket[j] = NULL if table.bucket is None else <const uint32_t *>cnp.PyArray_DATA(<cnp.ndarray>table.bucket)
            q.first_key[j] = table.first_key
            q.per_sign[j] = table.per_sign
            self.add_memory(<cnp.ndarray>q8.absmax[j], i)
        self.q8_kept.append(q8)
        return 0

    def take_skipped(self):
        """The blocks of 8-bit state left untouched for a non-finite grad since the last call."""
        cdef int64_t skipped = self.skipped
        self.skipped = 0
        return skipped

    cdef int check_state_layout(self, Py_ssize_t i, Py_ssize_t k, cnp.ndarray s, cnp.ndarray p) except -1:
        """State k of param i pairs its elements with the param's: a state of the param's shape
        by the same memory offsets; one of another shape (Adafactor's row_var) in C order, so the
        param must be C-contiguous too.  A 0-d state (a per-tensor scalar, NAdam's mu_product)
        pairs nothing."""
        if cnp.PyArray_NDIM(s) == 0 or same_layout(s, p):
            return 0
        if not same_shape(s, p) and cnp.PyArray_IS_C_CONTIGUOUS(s):
            if cnp.PyArray_IS_C_CONTIGUOUS(p) or cnp.PyArray_SIZE(p) == 0:
                return 0
            raise ValueError(f"{self.param_name(i)} is not C-contiguous (strides {(<object>p).strides}) but "
                             f"its state {k} has another shape ({(<object>s).shape}), which pairs elements in "
                             f"C order: pass a C-contiguous param")
        raise ValueError(f"state {k} of {self.param_name(i)} is laid out differently from "
                         f"its param (strides {(<object>s).strides} and {(<object>p).strides})")

    cdef int set_counter(self, Py_ssize_t i, counter) except -1:
        cdef cnp.ndarray a
        cdef int typenum
        if not cnp.PyArray_Check(counter):
            self.step_kind[i] = STEP_INTERNAL
            self.count[i] = counter
            return 0
        a = <cnp.ndarray>counter
        typenum = cnp.PyArray_TYPE(a)
        if (cnp.PyArray_NDIM(a) != 0 or not cnp.PyArray_ISWRITEABLE(a) or not cnp.PyArray_ISALIGNED(a)
                or not cnp.PyArray_ISNOTSWAPPED(a)
                or typenum not in (cnp.NPY_INT64, cnp.NPY_FLOAT32, cnp.NPY_FLOAT64)):
            raise ValueError(f"state[{self.param_name(i)}]['step'] must be a writeable 0-d int64, float32 or "
                             f"float64 array, got {counter!r}")
        self.step_kind[i] = (STEP_INT64 if typenum == cnp.NPY_INT64 else
                             STEP_FLOAT32 if typenum == cnp.NPY_FLOAT32 else STEP_FLOAT64)
        self.step_data[i] = <char *>cnp.PyArray_DATA(a)
        self.add_memory(a, i)  # two params sharing one counter would count twice
        return 0

    cdef inline int64_t advance(self, Py_ssize_t i) noexcept nogil:
        """Add one to tensor i's step count; the new count."""
        cdef int kind = self.step_kind[i]
        cdef char *counter = self.step_data[i]
        if kind == STEP_INTERNAL:
            self.count[i] += 1
            return self.count[i]
        if kind == STEP_INT64:
            (<int64_t *>counter)[0] += 1
            return (<int64_t *>counter)[0]
        if kind == STEP_FLOAT32:  # as torch's `step += 1` on a float32 tensor (exact to 2**24)
            (<float *>counter)[0] = (<float *>counter)[0] + <float>1.0
            return <int64_t>(<float *>counter)[0]
        (<double *>counter)[0] = (<double *>counter)[0] + 1.0
        return <int64_t>(<double *>counter)[0]

    @property
    def step_counts(self):
        """Each tensor's step count now, as ints (plan order)."""
        return [self.count_of(i) for i in range(self.n_tensors)]

    cdef int64_t count_of(self, Py_ssize_t i):
        cdef int kind = self.step_kind[i]
        cdef char *counter = self.step_data[i]
        if kind == STEP_INTERNAL:
            return self.count[i]
        if kind == STEP_INT64:
            return (<int64_t *>counter)[0]
        if kind == STEP_FLOAT32:
            return <int64_t>(<float *>counter)[0]
        return <int64_t>(<double *>counter)[0]

    def advance_step(self, Py_ssize_t i):
        """Add one to tensor i's step count (a rule at the Python level steps it); the new count."""
        if not 0 <= i < self.n_tensors:
            raise IndexError(f"tensor {i} of {self.n_tensors}")
        return self.advance(i)

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
            if (<char *>cnp.PyArray_DATA(p) != self.data[i * FO_DATA_SLOTS]
                    or cnp.PyArray_SIZE(p) != self.offsets[i + 1] - self.offsets[i]):
                self.raise_moved(i, p, "")
            if self.has_state[i]:
                self.check_state_unmoved(i)
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
            self.data[i * FO_DATA_SLOTS + 1] = begin
        return n_missing

    cdef int check_state_unmoved(self, Py_ssize_t i) except -1:
        cdef Py_ssize_t k = 0
        for s in <tuple>self.states[i]:
            # each state array keeps the size the plan saw (a per-tensor scalar: 0-d; row_var: its own)
            if s is not None and (<char *>cnp.PyArray_DATA(<cnp.ndarray>s) != self.data[i * FO_DATA_SLOTS + 2 + k]
                                  or cnp.PyArray_SIZE(<cnp.ndarray>s) != self.state_sizes[i * FO_MAX_OPERANDS + 2 + k]):
                self.raise_moved(i, <cnp.ndarray>s, " (a state array of it)")
            k += 1
        return 0

    cdef int raise_moved(self, Py_ssize_t i, cnp.ndarray a, str which) except -1:
        """An array of the plan was resized (ndarray.resize) or its memory replaced in place: the
        tables point at memory it may have freed, so stepping it would corrupt the heap."""
        self.forget_grads()
        raise ValueError(f"{self.param_name(i)}{which} was resized or reallocated in place since the "
                         f"optimizer last stepped it (now shape {(<object>a).shape}); its state no longer "
                         f"fits it: build a new optimizer (or load a state_dict) for the resized param")

    def missing_state(self):
        """Tensors with a gathered grad and no state yet."""
        return [i for i in range(self.n_tensors)
                if self.data[i * FO_DATA_SLOTS + 1] != NULL and not self.has_state[i]]

    cdef void keep(self, Py_ssize_t i, grad):
        """Keep `grad` alive until the grads are forgotten."""
        self.kept[i] = grad
        self.keeping = True

    def forget_grads(self):
        cdef Py_ssize_t i
        for i in range(self.n_tensors):
            self.data[i * FO_DATA_SLOTS + 1] = NULL
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
    def attach_tensors(self, list tensors, list every=None, bytes in_plan=None):
        """Record the torch tensors whose NumPy views this plan was built on (plan order).

        every, in_plan: when some params of the groups are stepped elsewhere (torch's own
        implementation), every param of the groups in order and, per param, 1 if it is
        one of `tensors` and 0 if not; gather_torch then checks the groups against them.
        A complex tensor's array is its view_as_real (a trailing dimension of 2).
        """
        cdef Py_ssize_t i
        if len(tensors) != self.n_tensors:
            raise ValueError(f"got {len(tensors)} tensors for {self.n_tensors} params")
        if (every is None) != (in_plan is None) or (every is not None and len(every) != len(in_plan)):
            raise ValueError("every and in_plan go together, one flag per param")
        self.tensors = tensors
        self.every, self.in_plan = every, in_plan
        self.tensor_layouts = []
        for i in range(self.n_tensors):
            t = tensors[i]
            self.complex_view[i] = t.is_complex()
            self.tensor_layouts.append((t.shape, t.stride(), t.dtype))

    def gather_torch(self, list param_groups, to_dlpack):
        """gather() for torch params: read each param's .grad itself.

        Checks at C speed that the groups still hold the attached tensors over
        the same memory, then takes every grad through a DLPack capsule: a grad
        must have its param's dtype, shape and strides.
        Returns -1 if the params changed (rebuild the plan), -2 if a grad cannot
        be read in place (bad_tensor and bad_overlap say which), else the number
        of params with a grad and no state yet.  Nothing but grad pointers is
        recorded.
        """
        cdef Py_ssize_t i = 0, n = self.n_tensors, n_missing = 0, k = 0, n_every = 0
        cdef cnp.ndarray p
        cdef char *begin
        cdef fo_index nbytes
        cdef list every = self.every
        cdef const unsigned char *in_plan = NULL
        if self.tensors is None:
            raise ValueError("attach_tensors() was not called")
        if every is not None:
            in_plan = <const unsigned char *>self.in_plan
            n_every = len(every)
        self.forget_grads()
        for group in param_groups:
            for t in group["params"]:
                if every is not None:  # some params are stepped elsewhere: skip them
                    if k >= n_every or t is not every[k]:
                        self.forget_grads()
                        return -1
                    k += 1
                    if not in_plan[k - 1]:
                        continue
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
                        return self.refuse_torch_grad(i, -1)
                    begin = dlpack_grad_data(capsule, p, self.complex_view[i], &nbytes)
                    if begin == NULL:
                        if self.tensor_reshaped(i):  # same memory, new shape, strides or dtype: rebuild
                            self.forget_grads()
                            return -1
                        return self.refuse_torch_grad(i, -1)
                    if nbytes > 0:
                        hit = self.find_overlap(begin, begin + nbytes)
                        if hit >= 0:
                            return self.refuse_torch_grad(i, hit)
                    if not self.has_state[i]:
                        n_missing += 1
                    self.keep(i, g)
                    self.data[i * FO_DATA_SLOTS + 1] = begin
                i += 1
        if i != n or k != n_every:
            self.forget_grads()
            return -1
        return n_missing

    cdef bint tensor_reshaped(self, Py_ssize_t i) except -1:
        t = self.tensors[i]
        return (t.shape, t.stride(), t.dtype) != self.tensor_layouts[i]

    cdef int refuse_torch_grad(self, Py_ssize_t i, fo_index overlap) noexcept:
        """Record that param i's grad cannot be read as it is (overlap: the param whose memory it
        shares, or -1); the torch adapter says why.  Returns gather_torch's code for it."""
        self.forget_grads()
        self.bad_tensor, self.bad_overlap = i, overlap
        return -2

    def run(self, list group_hyper, double grad_scale=1.0):
        """Update every tensor whose grad gather() recorded, then forget the grads.

        group_hyper: per param group, the checked hyperparameters (lr, maximize, then the
        rule's kernel fields); grad_scale: a checked divisor of every grad (1: none).
        """
        cdef Py_ssize_t n = self.n_tensors, i, prev = -1
        cdef int64_t step, prev_step = 0
        if len(group_hyper) != self.n_groups:
            self.forget_grads()
            raise ValueError(f"got hyperparameters for {len(group_hyper)} groups, expected {self.n_groups}")
        try:
            for i in range(self.n_groups):
                fill_args(self.rule, &self.group_args[i], group_hyper[i])
                self.group_args[i].common.grad_scale = grad_scale
        except BaseException:
            self.forget_grads()
            raise
        self.grad_mode = FO_GRAD_PLAIN if grad_scale == 1.0 else FO_GRAD_SCALED
        with nogil:
            for i in range(n):
                if self.data[i * FO_DATA_SLOTS + 1] == NULL:
                    continue
                step = self.advance(i)
                # Tensors of one group at one step share their per-call scalars.
                if prev >= 0 and self.groups[i] == self.groups[prev] and step == prev_step:
                    memcpy(&self.args[i], &self.args[prev], sizeof(fo_args))
                else:
                    memcpy(&self.args[i], &self.group_args[self.groups[i]], sizeof(fo_args))
                    self.args[i].common.step = step
                    fo_prepare(self.rule, &self.args[i])
                self.args[i].common.half_slots = self.half_slots[i]
                self.args[i].common.param_index = <uint32_t>i
                self.args[i].common.seed = self.seeds[i]
                set_shape(&self.args[i], self.shapes[i])
                self.args[i].common.q8 = &self.q8s[i] if self.layouts[i] == FO_Q8 else NULL
                # what the tensor keeps from its sweeps for its passes (NULL for rules without)
                self.args[i].common.kept = (self.tensor_memory + self.tensor_memory_offsets[i]
                                            if self.tensor_memory != NULL else NULL)
                if self.tensor_hook:
                    self.args[i].common.f64_operands = self.f64_masks[i]
                    self.args[i].common.scalar_f64 = self.scalar_f64
                    fo_tensor_prepare(self.rule, &self.args[i], &self.data[i * FO_DATA_SLOTS])
                self.args[i].common.pass_ = 0
                self.args[i].common.sweep = 0
                prev = i
                prev_step = step
            if self.sweeps > 0:
                self.run_all_sweeps()
            if self.passes > 1:
                self.run_passes()
            else:
                self.run_all()
        self.forget_grads()

    cdef void run_all_sweeps(self) noexcept nogil:
        """The rule's sweeps over the tensors being stepped, in waves of consecutive tensors whose
        scratch fits the plan's together: each wave's sweeps in one parallel region each."""
        cdef Py_ssize_t first = 0, t
        cdef fo_index used = 0
        for t in range(self.n_tensors):
            if self.data[t * FO_DATA_SLOTS + 1] == NULL:
                continue
            if used + self.scratch_sizes[t] > self.scratch_capacity:
                run_sweeps(self.rule, self.grad_mode, self.args, self.data, self.layouts, self.offsets, first, t)
                first = t
                used = 0
            self.args[t].common.scratch = self.scratch + used
            used += self.scratch_sizes[t]
        run_sweeps(self.rule, self.grad_mode, self.args, self.data, self.layouts, self.offsets, first,
                   self.n_tensors)

    cdef void run_passes(self) noexcept nogil:
        """A multi-pass rule: each summing pass over every tensor's blocks, then per tensor
        its totals to the rule, then the last pass as any rule's."""
        cdef fo_index total = self.offsets[self.n_tensors]
        cdef int parts, k, pass_
        cdef Py_ssize_t i
        for pass_ in range(self.passes):
            for i in range(self.n_tensors):
                self.args[i].common.pass_ = pass_
            if pass_ == self.passes - 1:
                self.run_all()
                return
            parts = step_threads(total)
            if parts == 1:
                self.run_blocks_range(0, total)
            else:
                for k in prange(parts, schedule="static", num_threads=parts):
                    self.run_blocks_range(split_point(total, k, parts), split_point(total, k + 1, parts))
            for i in range(self.n_tensors):
                if self.data[i * FO_DATA_SLOTS + 1] != NULL:
                    reduce_blocks(self.rule, &self.args[i], self.offsets[i + 1] - self.offsets[i],
                                  &self.sums[i * FO_NORM_BLOCKS * self.n_sums], self.n_sums, pass_)

    cdef void run_blocks_range(self, fo_index begin, fo_index end) noexcept nogil:
        """A summing pass over the blocks whose first element lies in [begin, end) of the
        tensors laid end to end."""
        cdef fo_index t, first, last
        cdef const fo_kernel_table *table = kernel_table()
        if begin >= end:
            return
        t = segment_of(self.offsets, self.n_tensors, begin)
        while t < self.n_tensors and self.offsets[t] < end:
            if self.data[t * FO_DATA_SLOTS + 1] != NULL:
                first = begin - self.offsets[t] if begin > self.offsets[t] else 0
                last = (end if end < self.offsets[t + 1] else self.offsets[t + 1]) - self.offsets[t]
                run_blocks(table, self.rule, self.layouts[t], self.grad_mode, &self.args[t],
                           &self.data[t * FO_DATA_SLOTS], self.offsets[t + 1] - self.offsets[t], first, last,
                           &self.sums[t * FO_NORM_BLOCKS * self.n_sums], self.n_sums)
            t += 1

    cdef void run_all(self) noexcept nogil:
        cdef fo_index total = self.offsets[self.n_tensors]
        cdef int parts = step_threads(total), k
        if parts == 1:
            self.run_range(0, total)
            return
        for k in prange(parts, schedule="static", num_threads=parts):
            self.run_range(split_point(total, k, parts), split_point(total, k + 1, parts))

    cdef void run_range(self, fo_index begin, fo_index end) noexcept nogil:
        """Update elements [begin, end) of the tensors laid end to end."""
        cdef fo_index t, first, last
        cdef const fo_kernel_table *table = kernel_table()
        if begin >= end:
            return
        t = segment_of(self.offsets, self.n_tensors, begin)
        while t < self.n_tensors and self.offsets[t] < end:
            if self.data[t * FO_DATA_SLOTS + 1] != NULL:
                first = begin - self.offsets[t] if begin > self.offsets[t] else 0
                last = (end if end < self.offsets[t + 1] else self.offsets[t + 1]) - self.offsets[t]
                if last > first:
                    fo_run(table, self.rule, self.layouts[t], self.grad_mode,
                           &self.args[t], &self.data[t * FO_DATA_SLOTS], first, last)
            t += 1


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
