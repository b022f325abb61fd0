# Declarations and inline helpers shared by the extension modules: the C
# kernels' interface (csrc/fastoptim/kernels.h) and the split of a range of
# elements over threads.  Everything here is inline or extern: each module
# that cimports it compiles its own copy, with no call across modules.

from libc.stdint cimport int64_t, uint8_t, uint32_t, uint64_t

cdef extern from "fastoptim/kernels.h" nogil:
    ctypedef Py_ssize_t fo_index

    enum:
        FO_FLOAT32, FO_FLOAT64, FO_BF16, FO_F16, FO_BF16_MASTER, FO_F16_MASTER, FO_BF16_SR, FO_F16_SR, FO_Q8
        FO_Q8_SLOTS, FO_Q8_MAX_BLOCK, FO_Q8_KEY_OF_ONE
        FO_N_LAYOUTS, FO_N_COMPUTE_TYPES
        FO_STORE_NEAREST, FO_STORE_MASTER, FO_STORE_STOCHASTIC
        FO_GRAD_PLAIN, FO_GRAD_SCALED
        FO_MAX_OPERANDS, FO_MASTER_SLOT, FO_DATA_SLOTS
        FO_NORM_BLOCKS, FO_MAX_SUMS, FO_SUMS_OPERAND
        FO_FIELD_REAL, FO_FIELD_FLAG
        FO_SIMD_BASELINE, FO_SIMD_AVX2, FO_SIMD_AVX512, FO_N_SIMD_LEVELS
        FO_HALF_BF16, FO_HALF_F16

    # A tensor's 8-bit blockwise state (update_rules.h).
    ctypedef struct fo_q8:
        int n_slots
        int operand[2]
        fo_index block
        float *absmax[2]
        const float *qmap[2]
        const float *threshold[2]
        const uint32_t *bucket[2]
        int first_key[2]
        int per_sign[2]
        int64_t *skipped

    # The header every rule's arguments start with; the rest of fo_args is
    # filled through the field tables (fo_rule_describe), never named here.
    ctypedef struct fo_common:
        double lr
        int64_t step
        int maximize
        double grad_scale
        uint32_t half_slots
        uint32_t param_index
        uint64_t seed
        unsigned f64_operands
        int scalar_f64
        int pass_ "pass"
        fo_index size
        fo_index rows
        fo_index cols
        const fo_q8 *q8
        int sweep
        double *scratch
        double *kept

    ctypedef struct fo_args:
        fo_common common

    ctypedef struct fo_field:
        const char *name
        int kind
        size_t offset

    ctypedef struct fo_rule_desc:
        const char *name
        int n_fields
        const fo_field *fields

    ctypedef void (*fo_range_fn)(const fo_args *args, char *const *data, fo_index begin, fo_index end) noexcept

    ctypedef struct fo_kernel_table:
        const char *name

    void fo_run(const fo_kernel_table *table, int rule, int layout, int grad_mode, const fo_args *args,
                char *const *data, fo_index begin, fo_index end)
    void fo_prepare(int rule, fo_args *a)
    void fo_tensor_prepare(int rule, fo_args *a, char *const *data)
    int fo_has_tensor_hook(int rule)
    fo_index fo_tensor_scratch(int rule, const fo_common *c, char *const *data, fo_index *kept)
    int fo_rule_sweeps(int rule)
    fo_index fo_sweep_items(int rule, const fo_common *c, char *const *data, int sweep)
    fo_index fo_items_before(fo_index items, fo_index element, fo_index n)
    int fo_rule_passes(int rule)
    int fo_rule_sums(int rule)
    fo_index fo_sum_blocks(fo_index n)
    void fo_tensor_reduced(int rule, fo_args *a, int pass_, const double *totals)
    const fo_kernel_table *fo_compiled_table(int level)
    const fo_kernel_table *fo_staged_table(int level)
    int fo_has_half_loop(const fo_kernel_table *table, int rule, int half)
    int fo_cpu_supports(int level)
    const fo_rule_desc *fo_rule_describe(int rule)


cdef inline fo_index split_point(fo_index n, int part, int parts) noexcept nogil:
    """Where part `part` of `parts` equal shares of n elements begins.

    Boundaries fall on multiples of 16 elements (64 bytes of float32), so two
    threads never write one cache line of an aligned array; the split depends
    on n and parts alone, never on timing.
    """
    if part >= parts:
        return n
    return (<fo_index>((<double>n * part) / parts)) & ~(<fo_index>15)


cdef inline int threads_for(fo_index n_elements, int n_threads, fo_index min_elements) noexcept nogil:
    """Threads for a call over n_elements: one below min_elements, where starting
    a parallel region costs more than the work."""
    if n_threads <= 1 or n_elements < min_elements:
        return 1
    return n_threads


cdef inline fo_index segment_of(const fo_index *offsets, fo_index n_segments, fo_index element) noexcept nogil:
    """The segment holding `element` of n_segments laid end to end (segment k spans
    [offsets[k], offsets[k + 1])): the last k with offsets[k] <= element, by bisection."""
    cdef fo_index lo = 0, hi = n_segments, mid
    while lo < hi:
        mid = (lo + hi) // 2
        if offsets[mid + 1] <= element:
            lo = mid + 1
        else:
            hi = mid
    return lo
