/* What the threads of a Hogwild! epoch use to share work and memory:
 * prefetches for reading and for writing, the shared counter they claim
 * chunks and tasks from, and a probe of what sharing a cache line costs
 * (fo_hw_round_trips, for the benchmark).
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

/* Core-to-core round trips: two OpenMP threads bounce one cache line (a counter they
 * increment in turn) n_batches * batch times; ns[b] is the mean round trip of batch b in
 * nanoseconds.  Returns 1, or 0 when two threads did not run (no OpenMP, a runtime that
 * gave one thread, or a compiler without GCC's atomic builtins).  Hogwild!'s threads
 * share the weights' cache lines, so this latency sets how well they scale: on a VM
 * whose host places its two vCPUs on distant cores it is several times that between
 * neighbouring cores.  A thread another process preempts stalls its partner, so the low
 * percentiles of ns are the hardware's figure and the high ones the host's load. */
#if defined(_OPENMP) && (defined(__GNUC__) || defined(__clang__))
#include <omp.h>
static inline int fo_hw_round_trips(double *ns, int n_batches, int batch)
{
    int ran = 0;
    long line[16] = {0};
    long *counter = (long *)(((size_t)line + 63) & ~(size_t)63); /* alone in its cache line */
    #pragma omp parallel num_threads(2)
    {
        long target, total = 2L * n_batches * batch;
        int b, k;
        if (omp_get_num_threads() == 2) {
            if (omp_get_thread_num() == 0) {
                ran = 1;
                for (b = 0; b < n_batches; b++) {
                    double start = omp_get_wtime();
                    for (k = 0; k < batch; k++) {
                        target = 2L * ((long)b * batch + k);
                        while (__atomic_load_n(counter, __ATOMIC_ACQUIRE) != target)
                            ;
                        __atomic_store_n(counter, target + 1, __ATOMIC_RELEASE);
                    }
                    while (__atomic_load_n(counter, __ATOMIC_ACQUIRE) != 2L * ((long)b * batch + batch))
                        ;
                    ns[b] = (omp_get_wtime() - start) * 1e9 / batch;
                }
            } else {
                for (target = 1; target < total; target += 2) {
                    while (__atomic_load_n(counter, __ATOMIC_ACQUIRE) != target)
                        ;
                    __atomic_store_n(counter, target + 1, __ATOMIC_RELEASE);
                }
            }
        }
    }
    return ran;
}
#else
static inline int fo_hw_round_trips(double *ns, int n_batches, int batch)
{
    (void)ns; (void)n_batches; (void)batch;
    return 0;
}
#endif

#endif
