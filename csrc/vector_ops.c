/* L-BFGS's fused vector operations (fastoptim/vector_ops.inc), compiled once
 * per SIMD level as kernels.c compiles the update rules. */
#include <math.h>

#include "fastoptim/kernels.h"
#include "fastoptim/reductions.h"
#include "fastoptim/vector_ops.h"

#if defined(_MSC_VER)
#define FO_ALWAYS_INLINE __forceinline
#define FO_RESTRICT __restrict
#else
#define FO_ALWAYS_INLINE inline __attribute__((always_inline))
#define FO_RESTRICT __restrict__
#endif

#define FO_CAT3_(a, b, c) a##_##b##_##c
#define FO_CAT3(a, b, c) FO_CAT3_(a, b, c)

#define FO_LEVEL_BODY "fastoptim/vector_ops.inc"
#include "fastoptim/each_level.inc"
#undef FO_LEVEL_BODY

const fo_vector_loops *fo_vector_table(int level)
{
    switch (level) {
#if FO_X86_DISPATCH
    case FO_SIMD_AVX2: return &fo_vector_avx2;
    case FO_SIMD_AVX512: return &fo_vector_avx512;
#endif
    default: return &fo_vector_baseline;
    }
}
