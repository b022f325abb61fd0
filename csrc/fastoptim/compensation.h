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
 * contraction: results equal the NumPy formulas bit for bit, at every SIMD
 * level.  The loops are plain and branch-free so the compiler vectorises them
 * (sqrt too, with -fno-math-errno).  As fastoptim's update rules do, they are
 * compiled for the x86-64 baseline and, with GCC or clang on x86-64, for
 * AVX2 and AVX-512 through target regions (never -march=native); the caller
 * picks the table of the SIMD level in use (fo_compensation_table).
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

#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__)) \
    && !defined(FASTOPTIM_NO_SIMD_DISPATCH)
#define FO_COMP_X86_DISPATCH 1
#else
#define FO_COMP_X86_DISPATCH 0
#endif

/* The epsilon of the adaptive lambda, as DC-ASGD-a writes it. */
#define FO_COMPENSATION_EPS 1e-7

#define FO_DEFINE_COMPENSATION(T, SUFFIX, SQRT)                                              \
static void fo_compensate_constant_##SUFFIX(                                                 \
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
static void fo_compensate_adaptive_##SUFFIX(                                                 \
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

/* One SIMD level's loops for both dtypes. */
#define FO_DEFINE_COMPENSATION_LEVEL(LEVEL)                                                  \
    FO_DEFINE_COMPENSATION(float, f32_##LEVEL, sqrtf)                                        \
    FO_DEFINE_COMPENSATION(double, f64_##LEVEL, sqrt)

FO_DEFINE_COMPENSATION_LEVEL(baseline)

#if FO_COMP_X86_DISPATCH
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#endif
FO_DEFINE_COMPENSATION_LEVEL(avx2)
#if defined(__clang__)
#pragma clang attribute pop
#pragma clang attribute push(__attribute__((target("avx512f,avx512vl,avx512dq,avx512bw,fma,prefer-vector-width=512"))), apply_to = function)
#else
#pragma GCC pop_options
#pragma GCC push_options
#pragma GCC target("avx512f,avx512vl,avx512dq,avx512bw,fma,prefer-vector-width=512")
#endif
FO_DEFINE_COMPENSATION_LEVEL(avx512)
#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif
#endif

typedef void (*fo_compensate_constant_f32_fn)(float *, const float *, const float *, ptrdiff_t, ptrdiff_t,
                                              double);
typedef void (*fo_compensate_constant_f64_fn)(double *, const double *, const double *, ptrdiff_t, ptrdiff_t,
                                              double);
typedef void (*fo_compensate_adaptive_f32_fn)(float *, const float *, const float *, float *, ptrdiff_t,
                                              ptrdiff_t, double, double);
typedef void (*fo_compensate_adaptive_f64_fn)(double *, const double *, const double *, double *, ptrdiff_t,
                                              ptrdiff_t, double, double);

typedef struct {
    fo_compensate_constant_f32_fn constant_f32;
    fo_compensate_constant_f64_fn constant_f64;
    fo_compensate_adaptive_f32_fn adaptive_f32;
    fo_compensate_adaptive_f64_fn adaptive_f64;
} fo_compensation_loops;

#define FO_COMPENSATION_ROW(LEVEL)                                                           \
    {fo_compensate_constant_f32_##LEVEL, fo_compensate_constant_f64_##LEVEL,                 \
     fo_compensate_adaptive_f32_##LEVEL, fo_compensate_adaptive_f64_##LEVEL}

/* The loops of a SIMD level (0 baseline, 1 AVX2, 2 AVX-512: fastoptim's
 * fo_simd_level), or the baseline's where this build has no code for it.
 * The caller checks that the CPU supports the level (fastoptim does when
 * the level is set). */
static const fo_compensation_loops *fo_compensation_table(int level)
{
    static const fo_compensation_loops baseline = FO_COMPENSATION_ROW(baseline);
#if FO_COMP_X86_DISPATCH
    static const fo_compensation_loops avx2 = FO_COMPENSATION_ROW(avx2);
    static const fo_compensation_loops avx512 = FO_COMPENSATION_ROW(avx512);
    if (level == 1) return &avx2;
    if (level == 2) return &avx512;
#endif
    (void)level;
    return &baseline;
}

#undef FO_DEFINE_COMPENSATION
#undef FO_DEFINE_COMPENSATION_LEVEL
#undef FO_COMPENSATION_ROW

#endif
