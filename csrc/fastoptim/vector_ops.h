/* The vector operations of L-BFGS (fastoptim.rules.lbfgs) over flat float32 or
 * float64 vectors, fused so each pass over memory does an update and the dot
 * product the algorithm needs next:
 *
 *   update:      out = (a + alpha * x) * beta    (x may be NULL: out = a * beta),
 *                returning sum z * out            (z may be NULL: no sum)
 *   difference:  y = g - prev and s = d * t, returning sum y * s and sum y * y
 *   dot, sum_abs, max_abs (of x * scale, NaN propagating as torch's max does)
 *
 * Element operations round in the vector's dtype, one operation at a time (the
 * build turns off contraction), so they equal NumPy's expressions bit for bit.
 * Sums accumulate in double over FO_LANES fixed lanes (reductions.h's pattern)
 * within a block; a vector of n elements is cut into fo_vector_blocks(n) blocks
 * that depend on n alone, the unit of thread work, and the caller adds the
 * block sums in block order: the result is the same for any thread count and
 * at every SIMD level.  The functions work on one block [begin, end).
 * The loops are in vector_ops.inc, compiled once per SIMD level by
 * csrc/vector_ops.c (each_level.inc).
 */
#ifndef FASTOPTIM_VECTOR_OPS_H
#define FASTOPTIM_VECTOR_OPS_H

#include <stddef.h>

/* At most this many blocks per vector, each at least FO_VECTOR_BLOCK_MIN elements
 * (fewer blocks for a short vector: a block's call costs more than its work). */
#define FO_VECTOR_MAX_BLOCKS 256
#define FO_VECTOR_BLOCK_MIN 4096

static inline ptrdiff_t fo_vector_blocks(ptrdiff_t n)
{
    ptrdiff_t blocks = n / FO_VECTOR_BLOCK_MIN;
    return blocks < 1 ? 1 : blocks > FO_VECTOR_MAX_BLOCKS ? FO_VECTOR_MAX_BLOCKS : blocks;
}

/* Where block b of `blocks` begins in a vector of n elements (the step's split: n * b / blocks,
 * exact in integers for any n an array can have, as b <= FO_VECTOR_MAX_BLOCKS). */
static inline ptrdiff_t fo_vector_block_start(ptrdiff_t n, ptrdiff_t b, ptrdiff_t blocks)
{
    return n * b / blocks;
}

#define FO_VECTOR_TYPEDEFS(T, TNAME)                                                                    \
typedef double (*fo_vec_update_##TNAME##_fn)(T *out, const T *a, const T *x, const T *z, double alpha,  \
                                             double beta, ptrdiff_t begin, ptrdiff_t end);              \
typedef void (*fo_vec_difference_##TNAME##_fn)(T *y, T *s, const T *g, const T *prev, const T *d,       \
                                               double t, ptrdiff_t begin, ptrdiff_t end, double *sums); \
typedef double (*fo_vec_dot_##TNAME##_fn)(const T *x, const T *y, ptrdiff_t begin, ptrdiff_t end);      \
typedef double (*fo_vec_sum_abs_##TNAME##_fn)(const T *x, ptrdiff_t begin, ptrdiff_t end);              \
typedef double (*fo_vec_max_abs_##TNAME##_fn)(const T *x, double scale, ptrdiff_t begin, ptrdiff_t end);

FO_VECTOR_TYPEDEFS(float, f32)
FO_VECTOR_TYPEDEFS(double, f64)
#undef FO_VECTOR_TYPEDEFS

typedef struct {
    fo_vec_update_f32_fn update_f32;
    fo_vec_update_f64_fn update_f64;
    fo_vec_difference_f32_fn difference_f32;
    fo_vec_difference_f64_fn difference_f64;
    fo_vec_dot_f32_fn dot_f32;
    fo_vec_dot_f64_fn dot_f64;
    fo_vec_sum_abs_f32_fn sum_abs_f32;
    fo_vec_sum_abs_f64_fn sum_abs_f64;
    fo_vec_max_abs_f32_fn max_abs_f32;
    fo_vec_max_abs_f64_fn max_abs_f64;
} fo_vector_loops;

/* The loops of a SIMD level (fo_simd_level), or the baseline's where this build
 * has no code for it; the caller passes the level fastoptim uses. */
const fo_vector_loops *fo_vector_table(int level);

#endif
