/* The update rules of fastoptim: what every rule shares, and the expansions
 * of the rule list (rules.h) into the enum, the argument union and the
 * prepare dispatch.
 *
 * A rule is one file, csrc/fastoptim/rules/<name>.inc, included twice:
 *   - once without FO_T: its hyperparameter fields (FO_<NAME>_FIELDS), its
 *     argument struct and fo_<name>_prepare, which derives the per-call
 *     scalars in double once per call;
 *   - once per (dtype, grad mode, SIMD level) with FO_T set: its loops
 *     over a range [begin, end) of one tensor (see loops.inc).
 * rules.h lists the rules: one #include and one X(NAME, name) line each.
 *
 * Every rule's arguments are a fo_common header (lr, step, maximize,
 * grad_scale, set alike for every rule by the step engine) followed by the
 * rule's own fields, so nothing outside the rule's file knows its layout:
 * the Cython layer fills the fields through the table fo_rule_describe()
 * returns (name, kind, offset), in the order of FO_<NAME>_FIELDS, which is
 * the order of the Python Rule's kernel fields (a test checks they agree).
 *
 * Operand slots passed to a loop: data[0] = param, data[1] = grad,
 * data[2..] = the rule's state arrays in the order of the Python Rule's
 * state slots (NULL where the options do not need that array).  The loops
 * compute in FO_T (float or double) and read and write element operands
 * through FO_LOAD and FO_STORE (loops.inc): stored as FO_T, or, for the
 * rules in FO_HALF_RULES, as bfloat16 converted in registers (a bfloat16
 * param whose states are all bfloat16, round to nearest even).  Every other
 * 16-bit case reaches the float32 loops through staged.inc.
 *
 * Rules that are not per-element (docs/adding_a_rule.md) also have
 * per-tensor hooks, listed in rules.h:
 *   - FO_TENSOR_RULES: fo_<name>_tensor(common, args, data), once per
 *     tensor and step after the per-call prepare, before any loop: it
 *     reads and writes the rule's per-tensor scalar state (0-d operands,
 *     float32 or float64 as common.f64_operands says) and derives the
 *     tensor's own scalars into its args.
 *   - FO_PASS_RULES: X(NAME, name, passes, sums), rules that go over each
 *     tensor `passes` times (LAMB: 2).  common.pass says which pass a loop
 *     runs.  Every pass but the last also sums `sums` quantities per tensor
 *     in a fixed order: the engine cuts each tensor into B = fo_sum_blocks(n)
 *     blocks (block b = [n*b/B, n*(b+1)/B)), the unit of thread work,
 *     and calls the loop once per block with data[FO_SUMS_OPERAND] pointing
 *     at that block's `sums` doubles, which the loop writes (reductions.h's
 *     lane order); then, per tensor, it adds the blocks' values in block
 *     order (0.0 + s_0 + ... + s_(B-1)) and hands the totals to
 *     fo_<name>_reduced(common, args, pass, totals), which derives what the
 *     next pass needs.  The sums depend on the values alone, never on the
 *     thread count or SIMD width.
 *   - FO_SWEEP_RULES: X(NAME, name, sweeps), rules with per-tensor work
 *     beyond the elements' (Adafactor's factored row and column sums), done
 *     in `sweeps` sweeps after the hooks and before the passes.  The engine
 *     runs sweep 1 for every tensor in one parallel region, then sweep 2, and
 *     so on: each tensor's sweep s is fo_<name>_sweep_items(common, data, s)
 *     items, which the rule's loop runs with common.sweep = s (0 in the
 *     passes) and [begin, end) a range of them; a thread takes the items
 *     whose share of its tensor's elements falls in its own
 *     (fo_items_before).  fo_<name>_scratch(common, data, &kept) gives the
 *     tensor's working memory in doubles: common.scratch, its own through its
 *     sweeps, and common.kept, its own through its sweeps and passes.
 */
#ifndef FASTOPTIM_UPDATE_RULES_H
#define FASTOPTIM_UPDATE_RULES_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>

typedef ptrdiff_t fo_index;

/* A tensor's 8-bit blockwise state (layout FO_Q8, blockwise8.inc; Dettmers et al. 2022, with
 * bitsandbytes' layout): up to FO_Q8_SLOTS state slots kept as one uint8 code per element and
 * one float32 absmax per block of `block` elements.  An element's value is
 * qmap[code] * absmax[its block]; after the update a block's absmax is the largest |value| in it
 * and each code the nearest map entry to value / absmax (ties to the lower code).  The nearest
 * search is exact: code = the number of thresholds <= v = value / absmax, where threshold[j] is
 * the least float32 nearer to qmap[j + 1] than to qmap[j] (threshold[255] = +inf).  Where each
 * bucket of values by sign and the top 16 bits of |v| (an exponent and 7 mantissa bits; those
 * at or below first_key merged) holds one threshold at most, bucket[] gives the code in one
 * lookup (blockwise8.inc, q8_bucket_of); otherwise bucket is NULL and the thresholds are
 * searched.  The tables are made from qmap by the step engine (blockwise8.py, QuantTable). */
#define FO_Q8_SLOTS 2
#define FO_Q8_MAX_BLOCK 4096
#define FO_Q8_KEY_OF_ONE 0x3F80                /* the top 16 bits of 1.0f: |v| <= 1 */
typedef struct fo_q8 {
    int n_slots;                          /* quantized state slots */
    int operand[FO_Q8_SLOTS];             /* each one's operand (2 + its state slot) */
    fo_index block;                       /* elements per block, at most FO_Q8_MAX_BLOCK */
    float *absmax[FO_Q8_SLOTS];           /* one per block */
    const float *qmap[FO_Q8_SLOTS];       /* 256 increasing values */
    const float *threshold[FO_Q8_SLOTS];  /* 256, see above */
    const uint32_t *bucket[FO_Q8_SLOTS];  /* 2 * per_sign entries (positive v's, then negative), or NULL */
    int first_key[FO_Q8_SLOTS];           /* the bucket keys: first_key .. FO_Q8_KEY_OF_ONE */
    int per_sign[FO_Q8_SLOTS];            /* FO_Q8_KEY_OF_ONE + 1 - first_key */
    int64_t *skipped;                     /* blocks left untouched for a non-finite grad (atomic adds) */
} fo_q8;

struct fo_args;

/* The header of every rule's arguments. */
typedef struct {
    double lr;
    int64_t step;          /* 1-based count of this tensor's steps, this one included */
    int maximize;
    double grad_scale;     /* the grad is divided by it, as in torch's fused kernels; 1 = unscaled */
    /* Staged layouts (staged.inc), set per tensor by the step engine: */
    uint32_t half_slots;   /* bit k: state slot k is stored in the param's 16-bit type */
    uint32_t param_index;  /* stochastic rounding: the param's index in its optimizer */
    uint64_t seed;         /* stochastic rounding: the seed of the random bits */
    /* Set per tensor by the step engine; read by the per-tensor hooks only. */
    unsigned f64_operands; /* bit k: data[k] is float64 (else float32), e.g. a per-tensor scalar's storage */
    int scalar_f64;        /* new per-tensor scalars round to float64 (torch's default dtype), else float32 */
    int pass;              /* FO_PASS_RULES: the pass the loops run, 0-based; 0 for the others */
    /* The param's shape as rules with factored state (Adafactor) walk it: its element count,
     * and its last two dimensions (1 where it has fewer), set per tensor by the step engine. */
    fo_index size, rows, cols;
    /* FO_Q8: the tensor's 8-bit state, set per tensor by the step engine (NULL otherwise). */
    const fo_q8 *q8;
    /* FO_SWEEP_RULES: the sweep the loops run, 1-based; 0 in the passes. */
    int sweep;
    /* FO_SWEEP_RULES (NULL for others), set by the step engine (fo_tensor_scratch): the tensor's
     * working memory through its sweeps, and what it keeps from them for its passes. */
    double *scratch;
    double *kept;
} fo_common;

/* Per-tensor scalar state (a 0-d operand), as torch keeps NAdam's mu_product
 * or ASGD's eta: stored as float32 or float64, computed in double and
 * rounded to its dtype where torch computes in it. */
#define FO_OPERAND_F64(c, k) ((int)(((c)->f64_operands >> (k)) & 1u))
static inline double fo_scalar_load(const char *p, int f64)
{
    return f64 ? *(const double *)p : (double)*(const float *)p;
}
static inline void fo_scalar_store(char *p, int f64, double value)
{
    if (f64) *(double *)p = value;
    else *(float *)p = (float)value;
}
/* value rounded to float32 unless f64: a float32 product of two rounded
 * operands is exact in double, so rounding it once is float32 arithmetic. */
static inline double fo_scalar_round(double value, int f64)
{
    return f64 ? value : (double)(float)value;
}

/* The kinds of a rule's fields, and how FO_<NAME>_FIELDS(F) entries F(rule, kind, name) declare them. */
enum fo_field_kind { FO_FIELD_REAL, FO_FIELD_FLAG };
#define FO_CTYPE_REAL double
#define FO_CTYPE_FLAG int
#define FO_DECLARE_FIELD(rule, kind, name) FO_CTYPE_##kind name;

/* How a tensor's operands are stored, the kernel tables' second dimension.
 * FO_FLOAT32 and FO_FLOAT64 run the rule's loops compiled for that type
 * (the compute types).  The others are staged (staged.inc): the rule's
 * float32 loop runs on chunks widened from 16 bits and rounded back, the
 * param stored by round to nearest even, from a float32 master copy, or by
 * stochastic rounding; each state slot in 16 bits or float32 (half_slots). */
enum fo_layout {
    FO_FLOAT32, FO_FLOAT64,
    FO_BF16, FO_F16,
    FO_BF16_MASTER, FO_F16_MASTER,
    FO_BF16_SR, FO_F16_SR,
    FO_Q8,                             /* float32 param, 8-bit blockwise state (blockwise8.inc) */
    FO_N_LAYOUTS
};
#define FO_N_COMPUTE_TYPES 2           /* FO_FLOAT32, FO_FLOAT64: the layouts with loops of their own */
enum fo_param_store { FO_STORE_NEAREST, FO_STORE_MASTER, FO_STORE_STOCHASTIC };
/* Whether the loop divides the grad by grad_scale: a compile-time variant, so 1 costs nothing. */
enum fo_grad_mode { FO_GRAD_PLAIN, FO_GRAD_SCALED, FO_N_GRAD_MODES };
/* Operand slots of one tensor: param, grad and up to FO_MAX_OPERANDS - 2
 * state arrays, then the float32 master copy of a 16-bit param (FO_*_MASTER). */
#define FO_MAX_OPERANDS 5
#define FO_MASTER_SLOT FO_MAX_OPERANDS
#define FO_DATA_SLOTS (FO_MAX_OPERANDS + 1)
/* Elements per chunk of a staged layout; chunks start at multiples of it. */
#define FO_STAGE 256
/* Multi-pass rules (FO_PASS_RULES): blocks per tensor, sums per block at most, and
 * the operand of a summing pass's output (the engine passes FO_DATA_SLOTS operands;
 * staged layouts refuse pass rules, so the master slot and the sums never meet). */
#define FO_NORM_BLOCKS 256
#define FO_SUM_BLOCK_LENGTH 4096
#define FO_MAX_SUMS 4
#define FO_SUMS_OPERAND FO_MAX_OPERANDS  /* = FO_MASTER_SLOT */
/* The blocks of a tensor of n elements in a summing pass: one per FO_SUM_BLOCK_LENGTH elements, at
 * least 1, at most FO_NORM_BLOCKS (from 2^20 elements on).  Each block is a kernel call, so a small
 * tensor must not be cut into many (rules/_numpy.py's sum_blocks is the same). */
static inline fo_index fo_sum_blocks(fo_index n)
{
    const fo_index blocks = n / FO_SUM_BLOCK_LENGTH;
    return blocks < 1 ? 1 : (blocks > FO_NORM_BLOCKS ? FO_NORM_BLOCKS : blocks);
}

#include "rules.h"

#define FO_ENUM_ENTRY(NAME, name) FO_##NAME,
enum fo_rule { FO_RULES(FO_ENUM_ENTRY) FO_N_RULES };
#undef FO_ENUM_ENTRY

#define FO_UNION_MEMBER(NAME, name) fo_##name##_args name;
typedef struct fo_args {
    fo_common common;
    union { FO_RULES(FO_UNION_MEMBER) } rule;
} fo_args;
#undef FO_UNION_MEMBER

/* Derive the per-call scalars of `rule` from its fields and the header. */
static inline void fo_prepare(int rule, fo_args *a)
{
#define FO_PREPARE_CASE(NAME, name) case FO_##NAME: fo_##name##_prepare(&a->common, &a->rule.name); break;
    switch (rule) {
    FO_RULES(FO_PREPARE_CASE)
    default: break;
    }
#undef FO_PREPARE_CASE
}

/* The per-tensor hook of the rules listed in FO_TENSOR_RULES (rules.h). */
static inline void fo_tensor_prepare(int rule, fo_args *a, char *const *data)
{
#define FO_TENSOR_CASE(NAME, name) case FO_##NAME: fo_##name##_tensor(&a->common, &a->rule.name, data); break;
    switch (rule) {
    FO_TENSOR_RULES(FO_TENSOR_CASE)
    default: break;
    }
#undef FO_TENSOR_CASE
}

/* The sweeps of `rule` before its passes (0 unless it is in FO_SWEEP_RULES). */
static inline int fo_rule_sweeps(int rule)
{
#define FO_SWEEPS_CASE(NAME, name, sweeps) case FO_##NAME: return sweeps;
    switch (rule) {
    FO_SWEEP_RULES(FO_SWEEPS_CASE)
    default: return 0;
    }
#undef FO_SWEEPS_CASE
}

/* The items of sweep `sweep` (1-based) of `rule` on a tensor of common's shape. */
static inline fo_index fo_sweep_items(int rule, const fo_common *c, char *const *data, int sweep)
{
#define FO_SWEEP_ITEMS_CASE(NAME, name, sweeps) case FO_##NAME: return fo_##name##_sweep_items(c, data, sweep);
    switch (rule) {
    FO_SWEEP_RULES(FO_SWEEP_ITEMS_CASE)
    default: return 0;
    }
#undef FO_SWEEP_ITEMS_CASE
}

/* The items of a sweep (of `items` for a tensor of n elements) before its element `element`:
 * floor(items * element / n), so the threads that share a tensor's elements share its items. */
static inline fo_index fo_items_before(fo_index items, fo_index element, fo_index n)
{
    return n > 0 ? (fo_index)((unsigned __int128)items * (unsigned __int128)element / (unsigned __int128)n) : 0;
}

/* The doubles of working memory `rule` needs for a tensor of common's shape with the operands
 * `data` (0 for the rules not in FO_SWEEP_RULES): returns the tensor's scratch through its sweeps
 * (common.scratch), and sets *kept to what it keeps from them through its passes (common.kept).
 * The step engine allocates both before the step, so that no step allocates. */
static inline fo_index fo_tensor_scratch(int rule, const fo_common *c, char *const *data, fo_index *kept)
{
    *kept = 0;
#define FO_SCRATCH_CASE(NAME, name, sweeps) case FO_##NAME: return fo_##name##_scratch(c, data, kept);
    switch (rule) {
    FO_SWEEP_RULES(FO_SCRATCH_CASE)
    default: return 0;
    }
#undef FO_SCRATCH_CASE
}

/* Whether `rule` has a per-tensor hook (its args then differ per tensor). */
static inline int fo_has_tensor_hook(int rule)
{
#define FO_TENSOR_HOOK_CASE(NAME, name) case FO_##NAME: return 1;
    switch (rule) {
    FO_TENSOR_RULES(FO_TENSOR_HOOK_CASE)
    default: return 0;
    }
#undef FO_TENSOR_HOOK_CASE
}

/* The passes of `rule` over each tensor (1 unless it is in FO_PASS_RULES). */
static inline int fo_rule_passes(int rule)
{
#define FO_PASSES_CASE(NAME, name, passes, sums) case FO_##NAME: return passes;
    switch (rule) {
    FO_PASS_RULES(FO_PASSES_CASE)
    default: return 1;
    }
#undef FO_PASSES_CASE
}

/* The per-tensor sums that `rule`'s passes but the last produce (0 for one pass). */
static inline int fo_rule_sums(int rule)
{
#define FO_SUMS_CASE(NAME, name, passes, sums) case FO_##NAME: return sums;
    switch (rule) {
    FO_PASS_RULES(FO_SUMS_CASE)
    default: return 0;
    }
#undef FO_SUMS_CASE
}

/* After pass `pass` of a multi-pass rule: the tensor's totals (fo_rule_sums of them). */
static inline void fo_tensor_reduced(int rule, fo_args *a, int pass, const double *totals)
{
#define FO_REDUCED_CASE(NAME, name, passes, sums) \
    case FO_##NAME: fo_##name##_reduced(&a->common, &a->rule.name, pass, totals); break;
    switch (rule) {
    FO_PASS_RULES(FO_REDUCED_CASE)
    default: break;
    }
#undef FO_REDUCED_CASE
}

/* A rule's fields as the Cython layer fills them. */
typedef struct {
    const char *name;
    int kind;              /* enum fo_field_kind */
    size_t offset;         /* in fo_args */
} fo_field;

typedef struct {
    const char *name;      /* the rule's lower-case name, as the Python Rule's `kernel` */
    int n_fields;
    const fo_field *fields;
} fo_rule_desc;

#endif
