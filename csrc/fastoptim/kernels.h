/* fastoptim's C kernels: one table of range functions per SIMD level.
 *
 * A range function applies one update rule to elements [begin, end) of one
 * tensor; the Cython layer splits work across tensors and threads and calls
 * them.  Every level computes bit-identical results: the build turns off
 * floating-point contraction, so a wider vector is the only difference, and
 * the 16-bit conversions give the same bits with or without F16C.
 */
#ifndef FASTOPTIM_KERNELS_H
#define FASTOPTIM_KERNELS_H

#include "update_rules.h"

typedef void (*fo_range_fn)(const fo_args *args, char *const *data, fo_index begin, fo_index end);
/* A staged layout's driver: runs `compute` (a rule's float32 range function) on staged chunks. */
typedef void (*fo_staged_fn)(fo_range_fn compute, const fo_args *args, char *const *data, fo_index begin,
                             fo_index end);

/* The 16-bit storage types of FO_HALF_RULES' own loops, by layout - FO_BF16. */
enum fo_half_type { FO_HALF_BF16, FO_HALF_F16, FO_N_HALF_TYPES };

typedef struct {
    const char *name;
    fo_range_fn range[FO_N_RULES][FO_N_COMPUTE_TYPES][FO_N_GRAD_MODES];
    fo_staged_fn staged[FO_N_LAYOUTS];     /* NULL for the compute types */
    /* a rule's loops on 16-bit params and states (FO_HALF_RULES), or NULL: staged */
    fo_range_fn half[FO_N_RULES][FO_N_HALF_TYPES][FO_N_GRAD_MODES];
} fo_kernel_table;

enum fo_simd_level { FO_SIMD_BASELINE, FO_SIMD_AVX2, FO_SIMD_AVX512, FO_N_SIMD_LEVELS };

/* The loop of `rule` on a tensor of 16-bit layout FO_BF16 or FO_F16 (round to nearest even)
 * that runs on its storage, or NULL where the staged driver must: the rule has no such loop,
 * or one of its state operands is float32 (state_dtype="float32").  Every state operand of
 * FO_HALF_RULES is per element, so "each one in 16 bits" is half_slots covering them all. */
static inline fo_range_fn fo_half_loop(const fo_kernel_table *table, int rule, int layout, int grad_mode,
                                       const fo_args *args, char *const *data)
{
    if (layout != FO_BF16 && layout != FO_F16)
        return NULL;
    for (int k = 2; k < FO_MAX_OPERANDS; k++) {
        if (data[k] != NULL && !(args->common.half_slots >> (k - 2) & 1u))
            return NULL;
    }
    return table->half[rule][layout - FO_BF16][grad_mode];
}

/* Whether `rule` has loops on 16-bit storage of fo_half_type `half` in `table`. */
static inline int fo_has_half_loop(const fo_kernel_table *table, int rule, int half)
{
    return table->half[rule][half][FO_GRAD_PLAIN] != NULL;
}

/* Update elements [begin, end) of one tensor stored as `layout` (enum fo_layout)
 * by `rule`, with the kernels of `table`; data holds FO_DATA_SLOTS pointers. */
static inline void fo_run(const fo_kernel_table *table, int rule, int layout, int grad_mode, const fo_args *args,
                          char *const *data, fo_index begin, fo_index end)
{
    if (layout < FO_N_COMPUTE_TYPES) {
        table->range[rule][layout][grad_mode](args, data, begin, end);
        return;
    }
    const fo_range_fn half = fo_half_loop(table, rule, layout, grad_mode, args, data);
    if (half != NULL)
        half(args, data, begin, end);
    else
        table->staged[layout](table->range[rule][FO_FLOAT32][grad_mode], args, data, begin, end);
}

/* A float32 buffer as an operand indexed by the tensor's element index from
 * `first` on: element i is buffer[i - first].  (Integer arithmetic: the pointer
 * itself may lie before the buffer; only elements inside it are accessed.) */
static inline char *fo_shifted(float *buffer, fo_index first)
{
    return (char *)((uintptr_t)buffer - (uintptr_t)first * sizeof(float));
}

/* The table of a level, or NULL where this build has no code for it. */
const fo_kernel_table *fo_compiled_table(int level);
/* The same level's table with no loops on 16-bit storage (half all NULL), or NULL: a test hook. */
const fo_kernel_table *fo_staged_table(int level);
/* Whether the running CPU (and OS) can execute that level's instructions. */
int fo_cpu_supports(int level);
/* The rules' names and fields, by rule number (NULL past the last rule). */
const fo_rule_desc *fo_rule_describe(int rule);

#endif
