/* Counter-based Gaussian random numbers for gradient noise.
 *
 * Philox4x32-10 (Salmon et al. 2011, "Parallel random numbers: as easy as
 * 1, 2, 3") maps a 128-bit counter and a 64-bit key to 128 random bits with
 * no state, so any element's draw can be computed by whichever thread holds
 * it.  Each call gives two pairs of 32-bit uniforms, turned into four
 * standard normals by Box-Muller.
 *
 * Box-Muller's log, sin and cos are evaluated here with short series
 * (absolute error below 1e-12 in the normals) instead of libm's calls:
 * a little faster, and, unlike libm, whose last bits differ between
 * platforms, the same bits on every machine, so a seed gives the same noise
 * everywhere.
 */
#ifndef FASTOPTIM_COUNTER_RNG_H
#define FASTOPTIM_COUNTER_RNG_H

#include <stdint.h>
#include <string.h>
#include <math.h>

static inline void fo_philox4x32_10(uint32_t c[4], uint32_t k0, uint32_t k1)
{
    uint32_t c0 = c[0], c1 = c[1], c2 = c[2], c3 = c[3];
    for (int r = 0; r < 10; r++) {
        uint64_t p0 = (uint64_t)0xD2511F53u * c0;
        uint64_t p1 = (uint64_t)0xCD9E8D57u * c2;
        c0 = (uint32_t)(p1 >> 32) ^ c1 ^ k0;
        c1 = (uint32_t)p1;
        c2 = (uint32_t)(p0 >> 32) ^ c3 ^ k1;
        c3 = (uint32_t)p0;
        k0 += 0x9E3779B9u;
        k1 += 0xBB67AE85u;
    }
    c[0] = c0; c[1] = c1; c[2] = c2; c[3] = c3;
}

/* log(w + 1) - 32 log(2) = log(u) for u = (w + 1) / 2^32 in (0, 1]. */
static inline double fo_log_uniform(uint32_t w)
{
    const double ln2 = 0.69314718055994530942;
    double d = (double)w + 1.0;
    uint64_t bits;
    memcpy(&bits, &d, sizeof bits);
    int64_t e = (int64_t)(bits >> 52) - 1023;               /* d > 0, normal */
    bits = (bits & 0x000FFFFFFFFFFFFFull) | 0x3FF0000000000000ull;
    double m;
    memcpy(&m, &bits, sizeof m);                              /* d = m 2^e, m in [1, 2) */
    int big = m > 1.41421356237309504880;
    m = big ? 0.5 * m : m;                                    /* m in [0.707, 1.414] */
    e += big;
    /* log m = 2 atanh(s), s = (m - 1) / (m + 1), |s| <= 0.1716 */
    double s = (m - 1.0) / (m + 1.0), s2 = s * s;
    double series = 1.0 + s2 * (1.0 / 3 + s2 * (1.0 / 5 + s2 * (1.0 / 7 + s2 * (1.0 / 9
                    + s2 * (1.0 / 11 + s2 * (1.0 / 13))))));
    return (double)(e - 32) * ln2 + 2.0 * s * series;
}

/* cos and sin of 2 pi w / 2^32. */
static inline void fo_cos_sin_turn(uint32_t w, double *cos_out, double *sin_out)
{
    const double half_pi = 1.57079632679489661923, sqrt_half = 0.70710678118654752440;
    uint32_t quadrant = w >> 30;
    /* angle = quadrant pi/2 + psi, psi = phi + pi/4, phi in [-pi/4, pi/4) */
    double phi = ((double)(w & 0x3FFFFFFFu) * (1.0 / 1073741824.0) - 0.5) * half_pi;
    double p2 = phi * phi;
    /* Taylor series in Horner form, with the divisions folded into constants. */
    double sin_phi = phi * (1.0 - p2 * (1.0 / 6) * (1.0 - p2 * (1.0 / 20) * (1.0 - p2 * (1.0 / 42)
                     * (1.0 - p2 * (1.0 / 72) * (1.0 - p2 * (1.0 / 110) * (1.0 - p2 * (1.0 / 156)))))));
    double cos_phi = 1.0 - p2 * 0.5 * (1.0 - p2 * (1.0 / 12) * (1.0 - p2 * (1.0 / 30) * (1.0 - p2 * (1.0 / 56)
                     * (1.0 - p2 * (1.0 / 90) * (1.0 - p2 * (1.0 / 132) * (1.0 - p2 * (1.0 / 182)))))));
    double sin_psi = (sin_phi + cos_phi) * sqrt_half;
    double cos_psi = (cos_phi - sin_phi) * sqrt_half;
    int odd = quadrant & 1;
    double a = odd ? sin_psi : cos_psi, b = odd ? cos_psi : sin_psi;
    *cos_out = (quadrant == 1 || quadrant == 2) ? -a : a;
    *sin_out = quadrant >= 2 ? -b : b;
}

#define FO_NOISE_QUADS 16

/* Normals of quads first .. first + n - 1 (n <= FO_NOISE_QUADS) into z[4 n]:
 * the counters first, in a loop of integer arithmetic, then the transforms. */
static inline void fo_normals(uint64_t first, int n, uint32_t stream, uint32_t step, uint32_t k0, uint32_t k1,
                              double *z)
{
    uint32_t words[4 * FO_NOISE_QUADS];
    for (int q = 0; q < n; q++) {
        uint32_t *c = words + 4 * q;
        c[0] = (uint32_t)(first + q);
        c[1] = (uint32_t)((first + q) >> 32);
        c[2] = stream;
        c[3] = step;
        fo_philox4x32_10(c, k0, k1);
    }
    for (int i = 0; i < 2 * n; i++) {
        double r = sqrt(-2.0 * fo_log_uniform(words[2 * i])), cs, sn;
        fo_cos_sin_turn(words[2 * i + 1], &cs, &sn);
        z[2 * i] = r * cs;
        z[2 * i + 1] = r * sn;
    }
}

#endif
