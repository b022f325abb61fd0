# Hogwild! (Niu, Recht, Re, Wright 2011): lock-free parallel SGD for linear models.
#
# One call of run_block is one nogil parallel region over a block of a shuffled
# sample order (normally a whole epoch).  The threads claim slices of CHUNK
# consecutive positions of the order in turn and update the shared weight vector
# without locks or atomics, touching only the nonzeros of each row.
#
# Step sizes and L2 decay depend only on a sample's position in the order (its
# "virtual time"), never on which thread runs it, and are planned serially per
# epoch by plan_epoch.  L2 keeps updates sparse with scikit-learn's WeightVector
# trick: the true weights are scale * w, decay multiplies the scale, and an
# update of the true weights by u*x adds u*x/scale to w.  The scale after
# position v is the product of the decay factors of the block up to v, so every
# thread knows it without sharing a variable; between blocks it is folded into w.
# Claiming slices in order keeps the threads' virtual times close to one another,
# so a thread reading another's recent writes interprets their scale almost exactly.
#
# The intercept is one shared scalar: written on every sample by every thread it
# would bounce its cache line between cores, so with P > 1 each thread adds its
# updates to a private delta and publishes it every INTERCEPT_SYNC samples and at
# the end of each slice (a racy read-modify-write, as Hogwild! allows).  With
# P = 1 it is updated on every sample and the whole block is plain sequential
# SGD, bit-reproducible.

from cython cimport floating
from cython.parallel cimport prange
from libc.math cimport exp, fabs, log1p, pow
from libc.stdint cimport int32_t, int64_t, uint64_t

from ._openmp cimport omp_get_thread_num

import numpy as np

cdef enum:
    # loss codes
    LOG_LOSS, HINGE, MODIFIED_HUBER, SQUARED_ERROR, HUBER, EPSILON_INSENSITIVE
cdef enum:
    # step-size schedules per sample; Hogwild!'s per-epoch decay is CONSTANT within an epoch
    CONSTANT, OPTIMAL, INVSCALING
cdef extern from *:
    """
    #if defined(__GNUC__) || defined(__clang__)
    #define fo_prefetch(p) __builtin_prefetch((const void *)(p))
    #else
    #define fo_prefetch(p) ((void)(p))
    #endif
    """
    void fo_prefetch(const void *p) noexcept nogil

cdef enum:
    # Threads claim CHUNK consecutive positions of the shuffled order at a time, so
    # positions are processed roughly in order whatever the threads' speeds (a
    # thread another process slows down holds up one chunk, not half the epoch).
    CHUNK = 256
    INTERCEPT_SYNC = 32
    # Rows are visited in random order, so the hardware prefetcher cannot guess the
    # next one: a thread prefetches the row PREFETCH_AHEAD of its steps ahead with
    # its target and weight (and that row's indptr entry twice as far ahead).  Up to PREFETCH_LINES cache
    # lines of a row's values and indices; the hardware follows longer rows.
    PREFETCH_AHEAD = 4
    PREFETCH_LINES = 16
    # the weights a sparse row touches are prefetched when it is this many steps ahead
    WEIGHTS_AHEAD = 2
    # doubles between two threads' slots in a shared array: one 64-byte cache line
    PAD = 8

# The scale is folded into the weights before it falls below this (scikit-learn's threshold).
cdef double MIN_SCALE = 1e-9
# scikit-learn clips the loss derivative to this magnitude against overflow.
cdef double MAX_DLOSS = 1e12

LOSSES = {"log_loss": LOG_LOSS, "hinge": HINGE, "modified_huber": MODIFIED_HUBER,
          "squared_error": SQUARED_ERROR, "huber": HUBER, "epsilon_insensitive": EPSILON_INSENSITIVE}
SCHEDULES = {"constant": CONSTANT, "optimal": OPTIMAL, "invscaling": INVSCALING}

ctypedef fused index_t:
    int32_t
    int64_t


cdef inline double loss_value(int loss, double p, double y, double epsilon) noexcept nogil:
    cdef double z, r
    if loss == LOG_LOSS:
        z = p * y
        if z > 18.0:
            return exp(-z)
        if z < -18.0:
            return -z
        return log1p(exp(-z))
    if loss == HINGE:
        z = p * y
        return 1.0 - z if z <= 1.0 else 0.0
    if loss == MODIFIED_HUBER:
        z = p * y
        if z >= 1.0:
            return 0.0
        if z >= -1.0:
            return (1.0 - z) * (1.0 - z)
        return -4.0 * z
    if loss == SQUARED_ERROR:
        return 0.5 * (p - y) * (p - y)
    if loss == HUBER:
        r = fabs(p - y)
        return 0.5 * r * r if r <= epsilon else epsilon * r - 0.5 * epsilon * epsilon
    # EPSILON_INSENSITIVE
    r = fabs(y - p) - epsilon
    return r if r > 0.0 else 0.0


cdef inline double loss_derivative(int loss, double p, double y, double epsilon) noexcept nogil:
    """d loss / d p, as scikit-learn's SGD losses define it."""
    cdef double z, r
    if loss == LOG_LOSS:
        z = p * y
        if z > 18.0:
            return -y * exp(-z)
        if z < -18.0:
            return -y
        return -y / (exp(z) + 1.0)
    if loss == HINGE:
        return -y if p * y <= 1.0 else 0.0
    if loss == MODIFIED_HUBER:
        z = p * y
        if z >= 1.0:
            return 0.0
        if z >= -1.0:
            return -2.0 * (1.0 - z) * y
        return -4.0 * y
    if loss == SQUARED_ERROR:
        return p - y
    if loss == HUBER:
        r = p - y
        if fabs(r) <= epsilon:
            return r
        return epsilon if r > 0.0 else -epsilon
    # EPSILON_INSENSITIVE
    r = y - p
    if r > epsilon:
        return -1.0
    if r < -epsilon:
        return 1.0
    return 0.0


cdef inline uint64_t splitmix64(uint64_t *state) noexcept nogil:
    cdef uint64_t z
    state[0] += 0x9E3779B97F4A7C15ULL
    z = state[0]
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL
    return z ^ (z >> 31)


def shuffle(Py_ssize_t[::1] order, uint64_t seed):
    """Fisher-Yates shuffle of order in place from a 64-bit seed.

    NumPy's shuffle costs about 30 ns an element, a tenth of an epoch on the
    benchmark; splitmix64 with a 53-bit uniform scaled to the range (bias below
    2**-53 * n) does the same job in a few ns.
    """
    cdef Py_ssize_t i, j, n = order.shape[0]
    cdef Py_ssize_t swap
    cdef uint64_t state = seed
    with nogil:
        for i in range(n - 1, 0, -1):
            j = <Py_ssize_t>(<double>(splitmix64(&state) >> 11) * (1.0 / 9007199254740992.0) * (i + 1))
            if j > i:  # rounding guard
                j = i
            swap = order[i]
            order[i] = order[j]
            order[j] = swap


def derivative(int loss, double p, double y, double epsilon):
    """The loss derivative (for the Python layer's initial step size, as scikit-learn's)."""
    return loss_derivative(loss, p, y, epsilon)


def plan_epoch(int schedule, double eta0, double power_t, double alpha, double optimal_init, double l2,
               double t_start, double scale_start, double[::1] eta, double[::1] scale_after,
               double[::1] norm_weight=None, double average_from=0.0, double average_a=0.0,
               double average_b=1.0, double[::1] average_weight=None):
    """Plan an epoch: step sizes, L2 scales and the averaging coefficients of each position.

    Returns (block ends, (average_a, average_b) at each block end).

    norm_weight[v] (if given) = sum of (scale_after[u] / scale_after[v])**2 over the positions
    u = v .. end-2 of v's block: how many times a change of the squared weight norm
    made at v counts in the sum of the norm before each later step of the block
    (scikit-learn's stopping objective adds alpha/2 * |w|^2 before every step).

    Position v runs at scikit-learn's step counter t = t_start + v; alpha sets the
    'optimal' schedule, l2 the decay (alpha with an L2 penalty, else 0).  The
    first block continues from scale_start (the scale is carried across epochs
    as scikit-learn does, so one thread follows its arithmetic); later blocks
    start from 1.  A new block
    starts where the running scale would fall below MIN_SCALE.  A decay factor
    1 - eta*alpha is clamped to MIN_SCALE (scikit-learn clamps it to 0 and zeroes
    the weights; the difference is below 1e-9 of the weights).

    Averaged SGD (from step average_from > 0 on) keeps scikit-learn's lazy form:
    the averaged weights are (aw + average_a * w) / average_b, and an update u*x of
    the true weights at v adds -u * average_weight[v] * x to aw.  average_a and
    average_b depend only on the position, so they are planned here; they restart
    at (0, 1) with each block, when the caller folds them into aw.
    """
    cdef Py_ssize_t v, n = eta.shape[0]
    cdef double t, e, factor, mu, running = scale_start
    cdef bint averaging = average_from > 0.0 and average_weight is not None
    cdef list ends = [], states = []
    for v in range(n):
        t = t_start + v
        if schedule == OPTIMAL:
            e = 1.0 / (alpha * (optimal_init + t - 1.0))
        elif schedule == INVSCALING:
            e = eta0 / pow(t, power_t)
        else:
            e = eta0
        eta[v] = e
        factor = 1.0 - e * l2
        if factor < MIN_SCALE:
            factor = MIN_SCALE
        if running * factor < MIN_SCALE and v > 0:
            ends.append(v)
            states.append((average_a, average_b))
            running, average_a, average_b = 1.0, 0.0, 1.0
        running *= factor
        scale_after[v] = running
        if averaging:
            if t >= average_from:  # as scikit-learn's WeightVector.add_average
                average_weight[v] = average_a / running
                mu = 1.0 / (t - average_from + 1.0)
                if mu < 1.0:
                    average_b /= 1.0 - mu
                average_a += mu * average_b * running
            else:
                average_weight[v] = 0.0
    ends.append(n)
    states.append((average_a, average_b))
    start = 0
    for end in ends:
        if end > start and norm_weight is not None:
            norm_weight[end - 1] = 0.0
            for v in range(end - 2, start - 1, -1):
                factor = scale_after[v + 1] / scale_after[v]
                norm_weight[v] = 1.0 + factor * factor * norm_weight[v + 1]
        start = end
    return ends, states


cdef inline double row_dot(const floating *w, const floating *x, const index_t *ind,
                           Py_ssize_t nnz) noexcept nogil:
    cdef Py_ssize_t k
    cdef double s = 0.0
    if ind == NULL:
        for k in range(nnz):
            s += <double>w[k] * x[k]
    else:
        for k in range(nnz):
            s += <double>w[ind[k]] * x[k]
    return s


cdef inline void row_axpy(floating *w, const floating *x, const index_t *ind, Py_ssize_t nnz,
                          double c) noexcept nogil:
    cdef Py_ssize_t k
    if ind == NULL:
        for k in range(nnz):
            w[k] += <floating>(c * x[k])
    else:
        for k in range(nnz):
            w[ind[k]] += <floating>(c * x[k])


cdef inline double row_squared_norm(const floating *x, Py_ssize_t nnz) noexcept nogil:
    cdef Py_ssize_t k
    cdef double s = 0.0
    for k in range(nnz):
        s += <double>x[k] * x[k]
    return s


cdef inline void prefetch_lines(const char *p, Py_ssize_t n_bytes) noexcept nogil:
    cdef Py_ssize_t offset
    if n_bytes > 64 * PREFETCH_LINES:
        n_bytes = 64 * PREFETCH_LINES
    for offset in range(0, n_bytes, 64):
        fo_prefetch(p + offset)


cdef void chunk_pass(Py_ssize_t first, Py_ssize_t last, int n_threads, floating *w, const floating *data,
                     const index_t *indices, const index_t *indptr, Py_ssize_t n_features, const double *y,
                     const double *sample_weight, const Py_ssize_t *order, Py_ssize_t start,
                     Py_ssize_t stop, const double *eta, double scale_start, const double *scale_after,
                     int loss, double epsilon, bint fit_intercept, double intercept_decay,
                     double *shared_intercept, const double *norm_weight, floating *aw,
                     const double *average_weight, Py_ssize_t average_first,
                     double *out) noexcept nogil:
    """SGD steps at positions first..last-1 of the block start..stop-1, in order.

    Adds to out (the running thread's slots): [0] the losses (before each update);
    [1] with norm_weight, the weighted changes of |w|^2 its updates make; [2] the
    intercept after each step from position average_first on.  With aw, also
    updates the averaged weights.
    """
    cdef Py_ssize_t v, i, k, nnz, ahead, row_start, since_sync = 0
    cdef int sync_every = 1 if n_threads == 1 else INTERCEPT_SYNC
    cdef const floating *x
    cdef const index_t *ind
    cdef double p, dot, dloss, update, scale_before, norm_changes = 0.0, intercept_sum = 0.0
    cdef double sum_loss = 0.0
    cdef double intercept_seen = shared_intercept[0], intercept_delta = 0.0
    for v in range(first, last):
        ahead = v + PREFETCH_AHEAD
        if ahead < last:
            fo_prefetch(y + order[ahead])
            fo_prefetch(sample_weight + order[ahead])
            if indices == NULL:
                prefetch_lines(<const char *>(data + order[ahead] * n_features), n_features * sizeof(floating))
            else:
                if ahead + PREFETCH_AHEAD < last:
                    fo_prefetch(indptr + order[ahead + PREFETCH_AHEAD])
                row_start = indptr[order[ahead]]
                nnz = indptr[order[ahead] + 1] - row_start
                prefetch_lines(<const char *>(data + row_start), nnz * sizeof(floating))
                prefetch_lines(<const char *>(indices + row_start), nnz * sizeof(index_t))
        ahead = v + WEIGHTS_AHEAD
        if indices != NULL and ahead < last:
            row_start = indptr[order[ahead]]
            nnz = indptr[order[ahead] + 1] - row_start
            for k in range(nnz):
                fo_prefetch(w + indices[row_start + k])
        i = order[v]
        if indices == NULL:
            x = data + i * n_features
            ind = NULL
            nnz = n_features
        else:
            x = data + indptr[i]
            ind = indices + indptr[i]
            nnz = indptr[i + 1] - indptr[i]
        scale_before = scale_start if v == start else scale_after[v - 1]
        dot = row_dot(w, x, ind, nnz)
        p = dot * scale_before + intercept_seen + intercept_delta
        sum_loss += loss_value(loss, p, y[i], epsilon)
        dloss = loss_derivative(loss, p, y[i], epsilon)
        if dloss > MAX_DLOSS:
            dloss = MAX_DLOSS
        elif dloss < -MAX_DLOSS:
            dloss = -MAX_DLOSS
        update = -eta[v] * dloss * sample_weight[i]
        if update != 0.0:
            if norm_weight != NULL:  # |w + u x|^2 - |w|^2 in true units, as scikit-learn's WeightVector
                norm_changes += norm_weight[v] * (update * update * row_squared_norm(x, nnz)
                                                  + 2.0 * update * scale_after[v] * dot)
            row_axpy(w, x, ind, nnz, update / scale_after[v])
            if aw != NULL and average_weight[v] != 0.0:
                row_axpy(aw, x, ind, nnz, -update * average_weight[v])
            if fit_intercept:
                intercept_delta += update * intercept_decay
        if v >= average_first:
            intercept_sum += intercept_seen + intercept_delta
        since_sync += 1
        if since_sync == sync_every:
            # publish this thread's updates and see the others'
            intercept_seen = shared_intercept[0] + intercept_delta
            if intercept_delta != 0.0:
                shared_intercept[0] = intercept_seen
                intercept_delta = 0.0
            since_sync = 0
    if intercept_delta != 0.0:
        shared_intercept[0] += intercept_delta
    out[0] += sum_loss
    out[1] += norm_changes
    out[2] += intercept_sum


def run_block(floating[::1] w, const floating[::1] data, const index_t[::1] indices,
              const index_t[::1] indptr, bint dense, Py_ssize_t n_features, const double[::1] y,
              const double[::1] sample_weight, const Py_ssize_t[::1] order, Py_ssize_t start,
              Py_ssize_t stop, const double[::1] eta, double scale_start, const double[::1] scale_after,
              const double[::1] norm_weight, bint track_norm, int loss, double epsilon,
              bint fit_intercept, double intercept_decay, double intercept, int n_threads,
              double[::1] scratch, floating[::1] aw=None, const double[::1] average_weight=None,
              Py_ssize_t average_first=0):
    """Hogwild! SGD over order[start:stop] on n_threads threads.

    Returns (sum of losses, weighted sum of the changes of |w|^2 (0 unless
    track_norm), intercept, sum of the intercept after each step from position
    average_first on).  With aw (and average_weight from plan_epoch), also
    averaged SGD.  Dense rows are data[i*n_features:(i+1)*n_features]
    (indices and indptr unused).  scratch holds at least n_threads*PAD
    doubles.  The true weights are scale_start * w at the start and
    scale_after[stop-1] * w at the end; the caller folds the scale into w when
    it starts a new block.
    """
    cdef int k
    cdef Py_ssize_t chunk, n_chunks = (stop - start + CHUNK - 1) // CHUNK
    cdef double shared_intercept[PAD]
    cdef const index_t *indices_ptr = NULL if dense else &indices[0]
    cdef const index_t *indptr_ptr = NULL if dense else &indptr[0]
    cdef const double *norm_weight_ptr = &norm_weight[0] if track_norm else NULL
    cdef floating *aw_ptr = NULL
    cdef const double *average_weight_ptr = NULL
    cdef double total = 0.0, norm_total = 0.0, intercept_total = 0.0
    if aw is not None:
        if aw.shape[0] != w.shape[0] or average_weight is None or average_weight.shape[0] < stop:
            raise ValueError("aw must match w and average_weight cover the block")
        aw_ptr = &aw[0]
        average_weight_ptr = &average_weight[0]
    else:
        average_first = stop
    if stop <= start:
        return 0.0, 0.0, intercept, 0.0
    if scratch.shape[0] < n_threads * PAD:
        raise ValueError("scratch is too small")
    shared_intercept[0] = intercept
    scratch[:] = 0.0
    with nogil:
        for chunk in prange(n_chunks, num_threads=n_threads, schedule="dynamic", chunksize=1):
            chunk_pass(
                start + chunk * CHUNK, min(stop, start + (chunk + 1) * CHUNK), n_threads, &w[0], &data[0],
                indices_ptr, indptr_ptr, n_features, &y[0], &sample_weight[0], &order[0], start, stop,
                &eta[0], scale_start, &scale_after[0], loss, epsilon, fit_intercept, intercept_decay,
                shared_intercept, norm_weight_ptr, aw_ptr, average_weight_ptr, average_first,
                &scratch[omp_get_thread_num() * PAD])
    for k in range(n_threads):
        total += scratch[k * PAD]
        norm_total += scratch[k * PAD + 1]
        intercept_total += scratch[k * PAD + 2]
    return total, norm_total, shared_intercept[0], intercept_total


THREAD_SCRATCH = PAD
