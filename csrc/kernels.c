/* Builds the kernel tables: the same loops compiled for the x86-64 baseline
 * and, with GCC or clang on x86-64, for AVX2+FMA and AVX-512 through target
 * regions (fastoptim/each_level.inc), so one installed binary runs the best
 * code the CPU supports without -march=native.  Other compilers and
 * architectures get the baseline table only. */
#include "fastoptim/kernels.h"

#include "fastoptim/halfprec.h"

#if defined(_MSC_VER)
#define FO_ALWAYS_INLINE __forceinline
#define FO_RESTRICT __restrict
#define FO_ALIGNED(n) __declspec(align(n))
#else
#define FO_ALWAYS_INLINE inline __attribute__((always_inline))
#define FO_RESTRICT __restrict__
#define FO_ALIGNED(n) __attribute__((aligned(n)))
#endif

#define FO_CAT3_(a, b, c) a##_##b##_##c
#define FO_CAT3(a, b, c) FO_CAT3_(a, b, c)
#define FO_CAT4_(a, b, c, d) a##_##b##_##c##_##d
#define FO_CAT4(a, b, c, d) FO_CAT4_(a, b, c, d)
#define FO_STR_(x) #x
#define FO_STR(x) FO_STR_(x)

#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__)) \
    && !defined(FASTOPTIM_NO_SIMD_DISPATCH)
#define FO_X86_DISPATCH 1
#else
#define FO_X86_DISPATCH 0
#endif

#if FO_X86_DISPATCH
#include <immintrin.h>
#include <cpuid.h>
/* AVX-512 BF16 (CPUID leaf 7 subleaf 1, EAX bit 5): the AVX-512 level's bfloat16 rounding
 * uses VCVTNEPS2BF16 where the CPU has it (staged.inc), decided once at load. */
static int fo_cpu_has_avx512bf16(void)
{
    unsigned int eax, ebx, ecx, edx;
    return __get_cpuid_count(7, 1, &eax, &ebx, &ecx, &edx) && (eax >> 5 & 1u);
}
#endif

/* each_level.inc compiles level_table.inc per SIMD level with FO_F16C (float16
 * conversions by F16C at the AVX2 level, AVX-512F's 16-lane VCVTPS2PH/VCVTPH2PS
 * at the AVX-512 level: the bits of halfprec.h's fo_f32_to_f16, NaN included)
 * and FO_AVX512 set.  bfloat16 rounding at the AVX-512 level uses AVX-512 BF16's
 * VCVTNEPS2BF16 when the CPU has it, with halfprec.h's integer code for blocks
 * holding a float32 subnormal (the instruction flushes those); elsewhere the
 * integer code, which the compiler vectorises at every level. */
#define FO_LEVEL_BODY "fastoptim/level_table.inc"
#include "fastoptim/each_level.inc"
#undef FO_LEVEL_BODY

/* The field tables: names, kinds and offsets of each rule's fields. */
#define FO_FIELD_ENTRY(r, kind, name) {#name, FO_FIELD_##kind, offsetof(fo_args, rule.r.name)},
#define FO_FIELD_TABLE(NAME, name) static const fo_field fo_fields_##name[] = {FO_##NAME##_FIELDS(FO_FIELD_ENTRY)};
FO_RULES(FO_FIELD_TABLE)
#define FO_DESC_ROW(NAME, name) \
    [FO_##NAME] = {#name, (int)(sizeof(fo_fields_##name) / sizeof(fo_field)), fo_fields_##name},
static const fo_rule_desc fo_rule_descs[FO_N_RULES] = {FO_RULES(FO_DESC_ROW)};

const fo_rule_desc *fo_rule_describe(int rule)
{
    return rule >= 0 && rule < FO_N_RULES ? &fo_rule_descs[rule] : NULL;
}

const fo_kernel_table *fo_compiled_table(int level)
{
    switch (level) {
    case FO_SIMD_BASELINE: return &fo_table_baseline;
#if FO_X86_DISPATCH
    case FO_SIMD_AVX2: return &fo_table_avx2;
    case FO_SIMD_AVX512: return &fo_table_avx512;
#endif
    default: return NULL;
    }
}

const fo_kernel_table *fo_staged_table(int level)
{
    switch (level) {
    case FO_SIMD_BASELINE: return &fo_staged_table_baseline;
#if FO_X86_DISPATCH
    case FO_SIMD_AVX2: return &fo_staged_table_avx2;
    case FO_SIMD_AVX512: return &fo_staged_table_avx512;
#endif
    default: return NULL;
    }
}

#if FO_X86_DISPATCH
#include <cpuid.h>
/* F16C: CPUID leaf 1, ECX bit 29 (every AVX2 CPU has it; checked all the same). */
static int fo_cpu_has_f16c(void)
{
    unsigned int eax, ebx, ecx, edx;
    return __get_cpuid(1, &eax, &ebx, &ecx, &edx) && (ecx >> 29 & 1u);
}
#endif

int fo_cpu_supports(int level)
{
    switch (level) {
    case FO_SIMD_BASELINE: return 1;
#if FO_X86_DISPATCH
    /* __builtin_cpu_supports also checks that the OS saves the wide registers. */
    case FO_SIMD_AVX2:
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && fo_cpu_has_f16c();
    case FO_SIMD_AVX512:
        __builtin_cpu_init();
#if FO_HAVE_AVX512_BF16
        fo_avx512bf16 = fo_cpu_has_avx512bf16();
#endif
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl")
            && __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512bw") && fo_cpu_has_f16c();
#endif
    default: return 0;
    }
}
