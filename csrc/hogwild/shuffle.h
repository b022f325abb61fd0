/* The sample order of a Hogwild! epoch: a Fisher-Yates shuffle driven by
 * splitmix64 from a 64-bit seed.
 *
 * NumPy's shuffle costs about 30 ns an element, a tenth of an epoch on the
 * benchmark; this does the same job in a few ns.  The swaps hit random
 * elements of an array the epoch has evicted from the caches, so each step's
 * partner is drawn FO_HW_SHUFFLE_AHEAD steps early and prefetched; the draws
 * keep their order, so the permutation is that of plain Fisher-Yates.
 */
#ifndef FASTOPTIM_HOGWILD_SHUFFLE_H
#define FASTOPTIM_HOGWILD_SHUFFLE_H

#include <stddef.h>
#include <stdint.h>

#include "hogwild/threads.h"

#define FO_HW_SHUFFLE_AHEAD 16

static inline uint64_t fo_hw_splitmix64(uint64_t *state)
{
    uint64_t z;
    *state += 0x9E3779B97F4A7C15ULL;
    z = *state;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

/* A uniform index in 0..i: a 53-bit uniform scaled to the range (bias below 2**-53 * i). */
static inline ptrdiff_t fo_hw_uniform_index(uint64_t *state, ptrdiff_t i)
{
    ptrdiff_t j = (ptrdiff_t)((double)(fo_hw_splitmix64(state) >> 11) * (1.0 / 9007199254740992.0) * (double)(i + 1));
    return j > i ? i : j; /* rounding guard */
}

/* Shuffle order[0..n-1] in place from a 64-bit seed. */
static inline void fo_hw_shuffle(ptrdiff_t *order, ptrdiff_t n, uint64_t seed)
{
    ptrdiff_t i, j, swap, partner[FO_HW_SHUFFLE_AHEAD];
    uint64_t state = seed;
    for (i = n - 1; i > n - 1 - FO_HW_SHUFFLE_AHEAD && i > 0; i--) {
        j = fo_hw_uniform_index(&state, i);
        partner[i % FO_HW_SHUFFLE_AHEAD] = j;
        fo_hw_prefetch_write(order + j);
    }
    for (i = n - 1; i > 0; i--) {
        j = partner[i % FO_HW_SHUFFLE_AHEAD];
        if (i > FO_HW_SHUFFLE_AHEAD) {
            ptrdiff_t ahead = i - FO_HW_SHUFFLE_AHEAD;
            partner[ahead % FO_HW_SHUFFLE_AHEAD] = fo_hw_uniform_index(&state, ahead);
            fo_hw_prefetch_write(order + partner[ahead % FO_HW_SHUFFLE_AHEAD]);
        }
        swap = order[i];
        order[i] = order[j];
        order[j] = swap;
    }
}

#endif
