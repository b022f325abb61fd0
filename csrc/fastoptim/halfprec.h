/* 16-bit floating point: widening to float32, round to nearest even and
 * stochastic rounding back, and the random bits of stochastic rounding.
 *
 * Scalar, branch-free integer code (a few float operations where they are
 * exact), written so the compiler vectorises loops over it at every SIMD
 * level; each function is the algorithm of src/fastoptim/_lowp_reference.py
 * (docs/lowp_notes.md explains them), and tests check the two agree bit for
 * bit.  The F16C instructions give the same bits for float16 (NaN included),
 * which is why staged.inc may use them where the CPU has them.
 */
#ifndef FASTOPTIM_HALFPREC_H
#define FASTOPTIM_HALFPREC_H

#include <stdint.h>
#include <string.h>

/* Always inlined, so that the loops calling them (compiled for each SIMD level) vectorise them. */
#if defined(_MSC_VER)
#define FO_HALF_INLINE static __forceinline
#else
#define FO_HALF_INLINE static inline __attribute__((always_inline))
#endif

FO_HALF_INLINE uint32_t fo_f32_bits(float x)
{
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    return u;
}

FO_HALF_INLINE float fo_bits_f32(uint32_t u)
{
    float x;
    memcpy(&x, &u, sizeof x);
    return x;
}

/* ---- bfloat16 ---------------------------------------------------------------- */

FO_HALF_INLINE float fo_bf16_to_f32(uint16_t h)
{
    return fo_bits_f32((uint32_t)h << 16);
}

/* Round to nearest even.  NaN: sign and top payload kept, made quiet.
 * Written for the rule loops on bfloat16 storage, which GCC 12 vectorises with it: x != x
 * is the NaN test (one vector compare; (u & 0x7FFFFFFF) > 0x7F800000 takes AVX2 two, as it
 * has no unsigned compare), and the select is made in 32 bits before the narrowing (the
 * narrowing applied to the select directly is vectorised as three narrowings and a blend). */
FO_HALF_INLINE uint16_t fo_f32_to_bf16(float x)
{
    const uint32_t u = fo_f32_bits(x);
    const uint32_t high = u >> 16;
    const uint32_t rounded = (u + 0x7FFFu + (high & 1u)) >> 16;
    const uint32_t nan = high | 0x0040u;
    const uint32_t result = x != x ? nan : rounded;
    return (uint16_t)result;
}

/* Stochastic rounding with 16 random bits r: rounds the magnitude up with
 * probability (discarded bits) / 2^16.  NaN as in round to nearest. */
FO_HALF_INLINE uint16_t fo_f32_to_bf16_sr(float x, uint32_t r)
{
    const uint32_t u = fo_f32_bits(x);
    const uint32_t rounded = (u + r) >> 16;
    const uint32_t nan = (u >> 16) | 0x0040u;
    return (uint16_t)((u & 0x7FFFFFFFu) > 0x7F800000u ? nan : rounded);
}

/* ---- float16 (IEEE binary16) ------------------------------------------------------ */

/* Exact.  NaN is made quiet with its payload kept, as F16C's VCVTPH2PS does. */
FO_HALF_INLINE float fo_f16_to_f32(uint16_t h)
{
    const uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    const uint32_t exponent = h & 0x7C00u, mantissa = h & 0x03FFu;
    const uint32_t normal = ((uint32_t)(h & 0x7FFFu) << 13) + 0x38000000u;
    const uint32_t special = 0x7F800000u | (mantissa << 13) | (mantissa ? 0x00400000u : 0u);
    /* subnormal (and zero): mantissa * 2^-24, exact in float32 */
    const uint32_t subnormal = fo_f32_bits((float)(int32_t)mantissa * 0x1p-24f);
    const uint32_t magnitude = exponent == 0x7C00u ? special : (exponent == 0 ? subnormal : normal);
    return fo_bits_f32(sign | magnitude);
}

/* Round to nearest even, the bits of F16C's VCVTPS2PH with imm8 = 0.
 * Subnormal results: adding 0.5 puts the float16 subnormal spacing (2^-24)
 * at float32's last place, so the float addition rounds exactly as needed
 * and the low bits of the sum are the result. */
FO_HALF_INLINE uint16_t fo_f32_to_f16(float x)
{
    const uint32_t u = fo_f32_bits(x);
    const uint32_t sign = (u >> 16) & 0x8000u, a = u & 0x7FFFFFFFu;
    const uint32_t rebiased = a - 0x38000000u;                     /* exponent 127 -> 15 */
    const uint32_t normal = (rebiased + 0x0FFFu + ((rebiased >> 13) & 1u)) >> 13;
    const uint32_t subnormal = fo_f32_bits(fo_bits_f32(a) + 0.5f) - 0x3F000000u;
    uint32_t h = a < 0x38800000u ? subnormal : normal;
    h = a >= 0x477FF000u ? 0x7C00u : h;                             /* >= 65520 and inf */
    h = a > 0x7F800000u ? (0x7E00u | ((a >> 13) & 0x03FFu)) : h;    /* NaN: quiet, top payload */
    return (uint16_t)(sign | h);
}

/* Stochastic rounding with 16 random bits r (docs/lowp_notes.md, section 2):
 * the bits go below the float16 last place at the value's magnitude.  For a
 * subnormal result with d = 126 - max(e, 1) discarded bits, (m + R) >> d is
 * computed as ((m << (16 - d)) + r) >> 16 for d <= 16 (dropping r's low
 * bits cannot change the quotient) and ((m >> (d - 16)) + r) >> 16 beyond. */
FO_HALF_INLINE uint16_t fo_f32_to_f16_sr(float x, uint32_t r)
{
    const uint32_t u = fo_f32_bits(x);
    const uint32_t sign = (u >> 16) & 0x8000u, a = u & 0x7FFFFFFFu;
    const uint32_t t = (a + (r >> 3)) & ~0x1FFFu;
    const uint32_t normal = t >= 0x47800000u ? 0x7C00u : (t - 0x38000000u) >> 13;
    const int32_t e = (int32_t)(a >> 23);
    const uint32_t m = (a & 0x007FFFFFu) | (e > 0 ? 0x00800000u : 0u);
    const int32_t d = 126 - (e > 1 ? e : 1);
    const int32_t down = d - 16 < 31 ? d - 16 : 31;
    const uint32_t scaled = d <= 16 ? m << (16 - d) : m >> down;
    const uint32_t subnormal = (scaled + r) >> 16;
    uint32_t h = a < 0x38800000u ? subnormal : normal;
    h = a == 0x7F800000u ? 0x7C00u : h;
    h = a > 0x7F800000u ? (0x7E00u | ((a >> 13) & 0x03FFu)) : h;
    return (uint16_t)(sign | h);
}

/* ---- the random bits of stochastic rounding ----------------------------------------- */

/* Philox4x32-10 (as fo_philox4x32_10 in counter_rng.h, 32 lanes at once) keyed by (seed, step), counter (n lo, n hi, param index, step lo),
 * where element i takes the 16 bits of counter n = (i / 64) * 8 + i % 8, output
 * word (i / 16) % 4, half (i / 8) % 2 (docs/lowp_notes.md: "Key layout").
 * The tag keeps these bits apart from gradient noise drawn with the same seed. */
#define FO_SR_KEY_TAG 0x53523136u       /* "SR16" */
#define FO_STEP_HI_MIX 0x85EBCA6Bu
#define FO_SR_GROUPS 4                  /* groups of 64 elements per call */

/* The random bits of elements 64 g .. 64 (g + FO_SR_GROUPS) - 1, into r[0 ..]. */
FO_HALF_INLINE void fo_sr_bits(uint64_t seed, int64_t step, uint32_t param_index, uint64_t g, uint16_t *r)
{
    enum { LANES = 8 * FO_SR_GROUPS };
    const uint32_t step_hi = (uint32_t)((uint64_t)step >> 32);
    uint32_t k0 = (uint32_t)seed;
    uint32_t k1 = (uint32_t)(seed >> 32) ^ (step_hi * FO_STEP_HI_MIX) ^ FO_SR_KEY_TAG;
    uint32_t c0[LANES], c1[LANES], c2[LANES], c3[LANES];
    for (int l = 0; l < LANES; l++) {      /* lane l: counter 8 g + l */
        const uint64_t n = 8 * g + (uint64_t)l;
        c0[l] = (uint32_t)n;
        c1[l] = (uint32_t)(n >> 32);
        c2[l] = param_index;
        c3[l] = (uint32_t)step;
    }
    for (int round = 0; round < 10; round++) {
        for (int l = 0; l < LANES; l++) {
            const uint64_t p0 = (uint64_t)0xD2511F53u * c0[l];
            const uint64_t p1 = (uint64_t)0xCD9E8D57u * c2[l];
            const uint32_t n0 = (uint32_t)(p1 >> 32) ^ c1[l] ^ k0;
            const uint32_t n2 = (uint32_t)(p0 >> 32) ^ c3[l] ^ k1;
            c0[l] = n0;
            c1[l] = (uint32_t)p1;
            c2[l] = n2;
            c3[l] = (uint32_t)p0;
        }
        k0 += 0x9E3779B9u;
        k1 += 0xBB67AE85u;
    }
    /* element 64 q + 16 w + 8 h + j takes word w of lane 8 q + j, half h */
    for (int q = 0; q < FO_SR_GROUPS; q++) {
        for (int j = 0; j < 8; j++) {
            const int l = 8 * q + j;
            uint16_t *out = r + 64 * q + j;
            out[0] = (uint16_t)c0[l];  out[8] = (uint16_t)(c0[l] >> 16);
            out[16] = (uint16_t)c1[l]; out[24] = (uint16_t)(c1[l] >> 16);
            out[32] = (uint16_t)c2[l]; out[40] = (uint16_t)(c2[l] >> 16);
            out[48] = (uint16_t)c3[l]; out[56] = (uint16_t)(c3[l] >> 16);
        }
    }
}

#endif
