/* DC-ASGD's delay compensation (Zheng et al. 2017), fused in one pass.
 *
 * A gradient g computed at the params w_bak a worker fetched arrives when the
 * params are w.  Before the optimizer steps, g is replaced in place by
 *
 *   g~ = g + lambda * g * g * (w - w_bak)                          (constant)
 *
 * and, for DC-ASGD-a, with a per-element lambda from a running mean square
 * of the raw gradients, updated before use:
 *
 *   ms     <- m * ms + (1 - m) * g * g
 *   lambda  = lambda0 / (sqrt(ms) + 1e-7)                          (adaptive)
 *
 * The parameter server and the one-process simulator both call these loops
 * (through fastoptim._compensation), so their arithmetic is the same.
 *
 * Expressions are written in NumPy's evaluation order, left to right with
 * scalars in the array's dtype, and the build turns off floating-point
 * contraction: results equal the NumPy formulas bit for bit.  The loops are
 * plain and branch-free so the compiler vectorises them (sqrt too, with
 * -fno-math-errno); they read three or four streams and write one or two,
 * so they run at memory speed on the baseline x86-64 vector width.
 */
#ifndef FASTOPTIM_COMPENSATION_H
#define FASTOPTIM_COMPENSATION_H

#include <math.h>
#include <stddef.h>

#if defined(_MSC_VER)
#define FO_COMP_RESTRICT __restrict
#else
#define FO_COMP_RESTRICT __restrict__
#endif

/* The epsilon of the adaptive lambda, as DC-ASGD-a writes it. */
#define FO_COMPENSATION_EPS 1e-7

#define FO_DEFINE_COMPENSATION(T, SUFFIX, SQRT)                                              \
static inline void fo_compensate_constant_##SUFFIX(                                          \
    T *FO_COMP_RESTRICT g, const T *FO_COMP_RESTRICT w, const T *FO_COMP_RESTRICT w_bak,     \
    ptrdiff_t begin, ptrdiff_t end, double lambda_)                                          \
{                                                                                            \
    const T lambda = (T)lambda_;                                                             \
    for (ptrdiff_t i = begin; i < end; i++) {                                                \
        const T gi = g[i];                                                                   \
        g[i] = gi + lambda * gi * gi * (w[i] - w_bak[i]);                                    \
    }                                                                                        \
}                                                                                            \
                                                                                             \
static inline void fo_compensate_adaptive_##SUFFIX(                                          \
    T *FO_COMP_RESTRICT g, const T *FO_COMP_RESTRICT w, const T *FO_COMP_RESTRICT w_bak,     \
    T *FO_COMP_RESTRICT mean_square, ptrdiff_t begin, ptrdiff_t end,                         \
    double lambda0_, double momentum_)                                                       \
{                                                                                            \
    const T lambda0 = (T)lambda0_;                                                           \
    const T momentum = (T)momentum_;                                                         \
    const T one_minus_momentum = (T)(1.0 - momentum_);                                       \
    const T eps = (T)FO_COMPENSATION_EPS;                                                    \
    for (ptrdiff_t i = begin; i < end; i++) {                                                \
        const T gi = g[i];                                                                   \
        const T ms = momentum * mean_square[i] + one_minus_momentum * gi * gi;               \
        mean_square[i] = ms;                                                                 \
        const T lambda = lambda0 / (SQRT(ms) + eps);                                         \
        g[i] = gi + lambda * gi * gi * (w[i] - w_bak[i]);                                    \
    }                                                                                        \
}

FO_DEFINE_COMPENSATION(float, f32, sqrtf)
FO_DEFINE_COMPENSATION(double, f64, sqrt)

#undef FO_DEFINE_COMPENSATION

#endif
