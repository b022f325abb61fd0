/* What the threads of a Hogwild! epoch use to share work and memory:
 * prefetches for reading and for writing, and the shared counter they claim
 * chunks and tasks from.
 */
#ifndef FASTOPTIM_HOGWILD_THREADS_H
#define FASTOPTIM_HOGWILD_THREADS_H

#include <stddef.h>

#if defined(__GNUC__) || defined(__clang__)
#define fo_hw_prefetch(p) __builtin_prefetch((const void *)(p))
#else
#define fo_hw_prefetch(p) ((void)(p))
#endif

/* Prefetch a line in the modified state: a weight is read and then often
   written, and with several threads the line is usually in another core's
   cache, so fetching it for writing saves a second round trip to invalidate
   that copy.  x86 CPUs without PREFETCHW execute it as a no-op; elsewhere GCC
   and clang emit their write prefetch. */
#if (defined(__GNUC__) || defined(__clang__)) && (defined(__x86_64__) || defined(__i386__))
#define fo_hw_prefetch_write(p) __asm__ __volatile__("prefetchw %0" : : "m"(*(const char *)(p)))
#elif defined(__GNUC__) || defined(__clang__)
#define fo_hw_prefetch_write(p) __builtin_prefetch((const void *)(p), 1)
#else
#define fo_hw_prefetch_write(p) ((void)(p))
#endif

/* The next item of a shared counter, claimed atomically (serial builds have one thread).
 * MSVC's /openmp is OpenMP 2.0, which has no atomic capture: an interlocked add does the same. */
#if defined(_MSC_VER) && !defined(__clang__)
#include <intrin.h>
static inline ptrdiff_t fo_hw_claim(ptrdiff_t *counter)
{
#if defined(_WIN64)
    return (ptrdiff_t)_InterlockedExchangeAdd64((volatile __int64 *)counter, 1);
#else
    return (ptrdiff_t)_InterlockedExchangeAdd((volatile long *)counter, 1);
#endif
}
#else
static inline ptrdiff_t fo_hw_claim(ptrdiff_t *counter)
{
    ptrdiff_t claimed;
#ifdef _OPENMP
    #pragma omp atomic capture
#endif
    claimed = (*counter)++;
    return claimed;
}
#endif

#endif
