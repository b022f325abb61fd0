/* Builds the kernel tables: the same loops compiled for the x86-64 baseline
 * and, with GCC or clang on x86-64, for AVX2+FMA and AVX-512 through target
 * regions (fastoptim/each_level.inc), so one installed binary runs the best
 * code the CPU supports without -march=native.  Other compilers and
 * architectures get the baseline table only. */
#include "fastoptim/kernels.h"

#if defined(_MSC_VER)
#define FO_ALWAYS_INLINE __forceinline
#define FO_RESTRICT __restrict
#else
#define FO_ALWAYS_INLINE inline __attribute__((always_inline))
#define FO_RESTRICT __restrict__
#endif

#define FO_CAT3_(a, b, c) a##_##b##_##c
#define FO_CAT3(a, b, c) FO_CAT3_(a, b, c)
#define FO_CAT4_(a, b, c, d) a##_##b##_##c##_##d
#define FO_CAT4(a, b, c, d) FO_CAT4_(a, b, c, d)
#define FO_STR_(x) #x
#define FO_STR(x) FO_STR_(x)

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

int fo_cpu_supports(int level)
{
    switch (level) {
    case FO_SIMD_BASELINE: return 1;
#if FO_X86_DISPATCH
    /* __builtin_cpu_supports also checks that the OS saves the wide registers. */
    case FO_SIMD_AVX2:
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    case FO_SIMD_AVX512:
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl")
            && __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512bw");
#endif
    default: return 0;
    }
}
