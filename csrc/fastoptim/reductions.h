/* Sums over a segment of a grad, for the norms and the finiteness check of
 * fastoptim._train_kernels.
 *
 * Eight partial sums in a fixed pattern: the compiler keeps them in SIMD
 * registers without reassociating anything (no -ffast-math), and the result
 * depends on the segment alone, so it is the same on every run and for any
 * thread count.  Everything accumulates in double, whatever the dtype.
 */
#ifndef FASTOPTIM_REDUCTIONS_H
#define FASTOPTIM_REDUCTIONS_H

#include <math.h>
#include <stddef.h>

#define FO_LANES 8

static inline double fo_combine_lanes(const double *acc)
{
    return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

/* TERM(v) is summed over v = x[j] * s. */
#define FO_DEFINE_SUM(NAME, T, TERM)                                                   \
static inline double NAME(const T *x, ptrdiff_t first, ptrdiff_t last, double s)       \
{                                                                                       \
    double acc[FO_LANES] = {0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0}, tail = 0.0, v;     \
    ptrdiff_t j = first;                                                                \
    for (; j + FO_LANES <= last; j += FO_LANES)                                         \
        for (int k = 0; k < FO_LANES; k++) {                                            \
            v = (double)x[j + k] * s;                                                   \
            acc[k] += TERM;                                                             \
        }                                                                               \
    for (; j < last; j++) {                                                             \
        v = (double)x[j] * s;                                                           \
        tail += TERM;                                                                   \
    }                                                                                   \
    return fo_combine_lanes(acc) + tail;                                                \
}

/* Part of a longer sum of TERM(v) (v = x[j] in double) in the lane order above, for a loop
 * that produces its values a chunk at a time: lanes[k] += TERM for j = k, k + 8, ... over the
 * whole octets of x[0 .. n), then *tail += the rest in order.  Each chunk but the last must be
 * whole octets, so that lane k keeps elements k, k + 8, ... of the whole sum.  One array per
 * call (two interleaved arrays vectorise lane against lane instead of octet by octet); always
 * inlined, so it takes the SIMD level of the loop that calls it. */
#if defined(__GNUC__) || defined(__clang__)
#define FO_REDUCTION_INLINE static inline __attribute__((always_inline))
#else
#define FO_REDUCTION_INLINE static __forceinline
#endif
#define FO_DEFINE_ADD_TERMS(NAME, T, TERM)                                              \
FO_REDUCTION_INLINE void NAME(const T *x, ptrdiff_t n, double *lanes, double *tail)     \
{                                                                                       \
    ptrdiff_t j = 0;                                                                    \
    for (; j + FO_LANES <= n; j += FO_LANES)                                            \
        for (int k = 0; k < FO_LANES; k++) {                                            \
            const double v = (double)x[j + k];                                          \
            lanes[k] += TERM;                                                           \
        }                                                                               \
    for (; j < n; j++) {                                                                \
        const double v = (double)x[j];                                                  \
        *tail += TERM;                                                                  \
    }                                                                                   \
}

FO_DEFINE_ADD_TERMS(fo_add_squares_f32, float, v * v)
FO_DEFINE_ADD_TERMS(fo_add_squares_f64, double, v * v)
FO_DEFINE_ADD_TERMS(fo_add_values_f32, float, v)
FO_DEFINE_ADD_TERMS(fo_add_values_f64, double, v)
/* fo_add_squares_* (fo_add_values_*) for x of element type T (float or double) */
#define FO_ADD_SQUARES(T, x, n, lanes, tail)                                              \
    (sizeof(T) == sizeof(float) ? fo_add_squares_f32((const float *)(x), n, lanes, tail)  \
                                : fo_add_squares_f64((const double *)(x), n, lanes, tail))
#define FO_ADD_VALUES(T, x, n, lanes, tail)                                               \
    (sizeof(T) == sizeof(float) ? fo_add_values_f32((const float *)(x), n, lanes, tail)   \
                                : fo_add_values_f64((const double *)(x), n, lanes, tail))

FO_DEFINE_SUM(fo_sum_squares_f32, float, v * v)
FO_DEFINE_SUM(fo_sum_squares_f64, double, v * v)
FO_DEFINE_SUM(fo_sum_abs_f32, float, fabs(v))
FO_DEFINE_SUM(fo_sum_abs_f64, double, fabs(v))
/* x * 0 is 0 for finite x and NaN for NaN or inf: the sum is NaN exactly when some element is. */
FO_DEFINE_SUM(fo_sum_zero_f32, float, v * 0.0)
FO_DEFINE_SUM(fo_sum_zero_f64, double, v * 0.0)

/* max |x| over the segment, NaN ignored, combined with `m`. */
#define FO_DEFINE_MAX(NAME, T)                                                          \
static inline double NAME(const T *x, ptrdiff_t first, ptrdiff_t last, double m)        \
{                                                                                       \
    double lane[FO_LANES] = {m, m, m, m, m, m, m, m}, v;                                \
    ptrdiff_t j = first;                                                                \
    for (; j + FO_LANES <= last; j += FO_LANES)                                         \
        for (int k = 0; k < FO_LANES; k++) {                                            \
            v = fabs((double)x[j + k]);                                                 \
            lane[k] = v > lane[k] ? v : lane[k];                                        \
        }                                                                               \
    for (; j < last; j++) {                                                             \
        v = fabs((double)x[j]);                                                         \
        lane[0] = v > lane[0] ? v : lane[0];                                            \
    }                                                                                   \
    m = lane[0];                                                                        \
    for (int k = 1; k < FO_LANES; k++)                                                  \
        m = lane[k] > m ? lane[k] : m;                                                  \
    return m;                                                                           \
}

FO_DEFINE_MAX(fo_max_abs_f32, float)
FO_DEFINE_MAX(fo_max_abs_f64, double)

#endif
