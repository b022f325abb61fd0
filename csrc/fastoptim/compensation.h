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
 * (through fastoptim._ext.compensation), so their arithmetic is the same.
 * The loops are in compensation.inc, compiled once per SIMD level by
 * csrc/compensation.c as the update rules are (each_level.inc).
 */
#ifndef FASTOPTIM_COMPENSATION_H
#define FASTOPTIM_COMPENSATION_H

#include <stddef.h>

/* The epsilon of the adaptive lambda, as DC-ASGD-a writes it. */
#define FO_COMPENSATION_EPS 1e-7

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

/* The loops of a SIMD level (fo_simd_level: 0 baseline, 1 AVX2, 2 AVX-512), or
 * the baseline's where this build has no code for it.  The caller passes the
 * level fastoptim uses, which it checked against the CPU when it was set. */
const fo_compensation_loops *fo_compensation_table(int level);

#endif
