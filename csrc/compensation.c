/* DC-ASGD's compensation loops (fastoptim/compensation.inc), compiled once
 * per SIMD level as kernels.c compiles the update rules. */
#include <math.h>

#include "fastoptim/compensation.h"
#include "fastoptim/kernels.h"

#if defined(_MSC_VER)
#define FO_RESTRICT __restrict
#else
#define FO_RESTRICT __restrict__
#endif

#define FO_CAT3_(a, b, c) a##_##b##_##c
#define FO_CAT3(a, b, c) FO_CAT3_(a, b, c)

#define FO_LEVEL_BODY "fastoptim/compensation.inc"
#include "fastoptim/each_level.inc"
#undef FO_LEVEL_BODY

const fo_compensation_loops *fo_compensation_table(int level)
{
    switch (level) {
#if FO_X86_DISPATCH
    case FO_SIMD_AVX2: return &fo_compensation_avx2;
    case FO_SIMD_AVX512: return &fo_compensation_avx512;
#endif
    default: return &fo_compensation_baseline;
    }
}
