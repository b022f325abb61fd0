from .common cimport fo_index, fo_kernel_table, fo_rule_desc

# The kernel table of the SIMD level in use.
cdef const fo_kernel_table *kernel_table() noexcept nogil
# Threads for a call over n elements with n_threads asked (1 below the parallel threshold).
cdef int parallel_threads(fo_index n_elements, int n_threads) noexcept nogil
# Threads for an optimizer step over n elements, with the count set by set_num_threads.
cdef int step_threads(fo_index n_elements) noexcept nogil
# Rule `rule`'s name and fields, or NULL past the last rule.
cdef const fo_rule_desc *rule_describe(int rule) noexcept nogil
# The SIMD level in use (fo_simd_level: the index of runtime.SIMD_LEVELS).
cdef int simd_level() noexcept nogil
