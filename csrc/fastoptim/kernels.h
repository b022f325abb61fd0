/* fastoptim's C kernels: one table of range functions per SIMD level.
 *
 * A range function applies one update rule to elements [begin, end) of one
 * tensor; the Cython layer splits work across tensors and threads and calls
 * them.  Every level computes bit-identical results: the build turns off
 * floating-point contraction, so a wider vector is the only difference.
 */
#ifndef FASTOPTIM_KERNELS_H
#define FASTOPTIM_KERNELS_H

#include "update_rules.h"

typedef void (*fo_range_fn)(const fo_args *args, char *const *data, fo_index begin, fo_index end);

typedef struct {
    const char *name;
    fo_range_fn range[FO_N_RULES][FO_N_DTYPES][FO_N_GRAD_MODES];
} fo_kernel_table;

enum fo_simd_level { FO_SIMD_BASELINE, FO_SIMD_AVX2, FO_SIMD_AVX512, FO_N_SIMD_LEVELS };

/* The range function of (rule, dtype, grad mode) in `table`. */
static inline fo_range_fn fo_range(const fo_kernel_table *table, int rule, int dtype, int grad_mode)
{
    return table->range[rule][dtype][grad_mode];
}

/* The table of a level, or NULL where this build has no code for it. */
const fo_kernel_table *fo_compiled_table(int level);
/* Whether the running CPU (and OS) can execute that level's instructions. */
int fo_cpu_supports(int level);
/* The rules' names and fields, by rule number (NULL past the last rule). */
const fo_rule_desc *fo_rule_describe(int rule);

#endif
