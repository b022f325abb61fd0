# Hogwild! (Niu, Recht, Re, Wright 2011): lock-free parallel SGD for linear models.
#
# One call of run_block is one nogil parallel region over a block of a shuffled
# sample order (normally a whole epoch).  The threads claim slices of CHUNK
# consecutive positions of the order in turn and update the shared weight vector
# without locks or atomics, touching only the nonzeros of each row.
#
# Step sizes and L2 decay depend only on a sample's position in the order (its
# "virtual time"), never on which thread runs it, and are planned serially per
# epoch by plan_positions.  L2 keeps updates sparse with scikit-learn's WeightVector
# trick: the true weights are scale * w, decay multiplies the scale, and an
# update of the true weights by u*x adds u*x/scale to w.  The scale after
# position v is the product of the decay factors of the block up to v, so every
# thread knows it without sharing a variable; between blocks it is folded into w.
# Claiming slices in order keeps the threads' virtual times close to one another,
# so a thread reading another's recent writes interprets their scale almost exactly.
#
# An Epoch holds a sample order and its plan.  Shuffling and planning are serial
# (Fisher-Yates and the running scale are sequential), so the next epoch's are
# two tasks of this epoch's parallel loop, claimed before its first slice: while
# one thread shuffles, the other already runs samples.  Only the first epoch's
# are done before the loop (the two at once).  The next epoch's plan depends only
# on this one's (its last scale and averaging state), never on the weights.  Two
# Epochs take turns, each shuffling the order it holds.
#
# The intercept is one shared scalar: written on every sample by every thread it
# would bounce its cache line between cores, so with P > 1 each thread adds its
# updates to a private delta and publishes it every INTERCEPT_SYNC samples and at
# the end of each slice (a racy read-modify-write, as Hogwild! allows).  With
# P = 1 it is updated on every sample and the whole block is plain sequential
# SGD, bit-reproducible.
#
# The C this relies on is in csrc/hogwild/: the losses (losses.h, scikit-learn's
# expressions), the shuffle (shuffle.h), and prefetching and the shared counter
# the threads claim work from (threads.h).

from cython cimport floating
from cython.parallel cimport parallel
from libc.float cimport DBL_MAX
from libc.math cimport fabs, pow
from libc.stdint cimport int32_t, int64_t, uint64_t, uintptr_t

cimport numpy as cnp

from .._ext.openmp cimport omp_get_thread_num

import numpy as np

cnp.import_array()

cdef extern from "hogwild/losses.h" nogil:
    enum:
        FO_HW_LOG_LOSS
        FO_HW_HINGE
        FO_HW_MODIFIED_HUBER
        FO_HW_SQUARED_ERROR
        FO_HW_HUBER
        FO_HW_EPSILON_INSENSITIVE
    double fo_hw_loss_value(int loss, double p, double y, double epsilon)
    double fo_hw_loss_derivative(int loss, double p, double y, double epsilon)

cdef extern from "hogwild/threads.h" nogil:
    void fo_hw_prefetch(const void *p)
    void fo_hw_prefetch_write(const void *p)
    Py_ssize_t fo_hw_claim(Py_ssize_t *counter)
    int fo_hw_round_trips(double *ns, int n_batches, int batch)

cdef extern from "hogwild/shuffle.h" nogil:
    void fo_hw_shuffle(Py_ssize_t *order, Py_ssize_t n, uint64_t seed)

cdef enum:
    # step-size schedules per sample; Hogwild!'s per-epoch decay is CONSTANT within an epoch
    CONSTANT, OPTIMAL, INVSCALING
cdef enum:
    # Threads claim CHUNK consecutive positions of the shuffled order at a time, so
    # positions are processed roughly in order whatever the threads' speeds (a
    # thread another process slows down holds up one chunk, not half the epoch).
    # A thread claims its next chunk when it starts one, to prefetch across them.
    CHUNK = 1024
    # With P > 1, each thread publishes its intercept updates every INTERCEPT_SYNC
    # samples.  Less often, the threads' stale views of the intercept add up: on
    # dense rows (no intercept damping) 256 already made two threads oscillate.
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

LOSSES = {"log_loss": FO_HW_LOG_LOSS, "hinge": FO_HW_HINGE, "modified_huber": FO_HW_MODIFIED_HUBER,
          "squared_error": FO_HW_SQUARED_ERROR, "huber": FO_HW_HUBER,
          "epsilon_insensitive": FO_HW_EPSILON_INSENSITIVE}
SCHEDULES = {"constant": CONSTANT, "optimal": OPTIMAL, "invscaling": INVSCALING}

ctypedef fused index_t:
    int32_t
    int64_t


def shuffle(Py_ssize_t[::1] order, uint64_t seed):
    """Fisher-Yates shuffle of order in place from a 64-bit seed (as an epoch's shuffle task)."""
    with nogil:
        fo_hw_shuffle(&order[0], order.shape[0], seed)


def round_trips(int n_batches=500, int batch=100):
    """Mean round trip (ns) of a cache line between two threads, per batch of `batch`, as an
    array of n_batches; None without two OpenMP threads.  See fo_hw_round_trips: the
    Hogwild! threads' weights travel between the cores this way, so the low percentiles
    tell how near the two cores the threads run on are (the host's choice on a VM)."""
    if n_batches < 1 or batch < 1:
        raise ValueError("n_batches and batch must be positive")
    ns = np.zeros(n_batches)
    cdef double[::1] view = ns
    cdef int ran
    with nogil:
        ran = fo_hw_round_trips(&view[0], n_batches, batch)
    return ns if ran else None


def loss_value(int loss, double p, double y, double epsilon):
    """The loss at prediction p for target y (for tests)."""
    return fo_hw_loss_value(loss, p, y, epsilon)


def derivative(int loss, double p, double y, double epsilon):
    """The loss derivative (for the Python layer's initial step size, as scikit-learn's)."""
    return fo_hw_loss_derivative(loss, p, y, epsilon)


cdef struct PlanInputs:
    int schedule
    double eta0, power_t, alpha, optimal_init, l2, t_start, scale_start
    double average_from, average_a, average_b


cdef struct EpochArrays:
    # what an epoch's tasks read and write, for use without the GIL
    Py_ssize_t n
    Py_ssize_t n_rows        # the rows of the data the order refers to are below this
    Py_ssize_t *order
    double *eta
    double *scale_after
    double *norm_weight      # NULL unless the norm is tracked
    double *average_weight   # NULL unless averaging
    Py_ssize_t *ends         # block ends (room for n)
    double *end_states       # (average_a, average_b) at each block end
    Py_ssize_t n_blocks
    PlanInputs plan
    # pending tasks: shuffle order (whatever it holds) from shuffle_seed; plan
    int n_tasks
    int tasks[2]
    uint64_t shuffle_seed


cdef enum:
    SHUFFLE_TASK, PLAN_TASK


cdef Py_ssize_t plan_positions(const PlanInputs *p, Py_ssize_t n, double *eta, double *scale_after,
                               double *norm_weight, double *average_weight, Py_ssize_t *ends,
                               double *end_states) noexcept nogil:
    """Step sizes, L2 scales and averaging weights of positions 0..n-1; returns the number of blocks.

    Position v runs at scikit-learn's step counter t = t_start + v; alpha sets the
    'optimal' schedule, l2 the decay (alpha with an L2 penalty, else 0).  The
    first block continues from scale_start (the scale is carried across epochs
    as scikit-learn does, so one thread follows its arithmetic); later blocks
    start from 1.  A new block starts where the running scale would fall below
    MIN_SCALE.  A decay factor 1 - eta*alpha is clamped to MIN_SCALE
    (scikit-learn clamps it to 0 and zeroes the weights; the difference is below
    1e-9 of the weights).

    Averaged SGD (from step average_from > 0 on) keeps scikit-learn's lazy form:
    the averaged weights are (aw + average_a * w) / average_b, and an update u*x of
    the true weights at v adds -u * average_weight[v] * x to aw.  average_a and
    average_b depend only on the position, so they are planned here; they restart
    at (0, 1) with each block, when the caller folds them into aw.

    norm_weight[v] (if not NULL) = sum of (scale_after[u] / scale_after[v])**2 over
    the positions u = v .. end-2 of v's block: how many times a change of the
    squared weight norm made at v counts in the sum of the norm before each later
    step of the block (scikit-learn's stopping objective adds alpha/2 * |w|^2
    before every step).
    """
    cdef Py_ssize_t v, block, start, n_blocks = 0
    cdef double t, e, factor, mu, running = p.scale_start
    cdef double average_a = p.average_a, average_b = p.average_b
    cdef bint averaging = p.average_from > 0.0 and average_weight != NULL
    for v in range(n):
        t = p.t_start + v
        if p.schedule == OPTIMAL:
            e = 1.0 / (p.alpha * (p.optimal_init + t - 1.0))
        elif p.schedule == INVSCALING:
            e = p.eta0 / pow(t, p.power_t)
        else:
            e = p.eta0
        eta[v] = e
        factor = 1.0 - e * p.l2
        if factor < MIN_SCALE:
            factor = MIN_SCALE
        if running * factor < MIN_SCALE and v > 0:
            ends[n_blocks] = v
            end_states[2 * n_blocks] = average_a
            end_states[2 * n_blocks + 1] = average_b
            n_blocks += 1
            running, average_a, average_b = 1.0, 0.0, 1.0
        running *= factor
        scale_after[v] = running
        if averaging:
            if t >= p.average_from:  # as scikit-learn's WeightVector.add_average
                average_weight[v] = average_a / running
                mu = 1.0 / (t - p.average_from + 1.0)
                if mu < 1.0:
                    average_b /= 1.0 - mu
                average_a += mu * average_b * running
            else:
                average_weight[v] = 0.0
    ends[n_blocks] = n
    end_states[2 * n_blocks] = average_a
    end_states[2 * n_blocks + 1] = average_b
    n_blocks += 1
    if norm_weight != NULL:
        start = 0
        for block in range(n_blocks):
            norm_weight[ends[block] - 1] = 0.0
            for v in range(ends[block] - 2, start - 1, -1):
                factor = scale_after[v + 1] / scale_after[v]
                norm_weight[v] = 1.0 + factor * factor * norm_weight[v + 1]
            start = ends[block]
    return n_blocks


cdef void run_task(EpochArrays *epoch, int task) noexcept nogil:
    """Pending task number `task` of an epoch (the tasks are independent of each other)."""
    if epoch.tasks[task] == SHUFFLE_TASK:
        fo_hw_shuffle(epoch.order, epoch.n, epoch.shuffle_seed)
    else:
        epoch.n_blocks = plan_positions(&epoch.plan, epoch.n, epoch.eta, epoch.scale_after,
                                        epoch.norm_weight, epoch.average_weight, epoch.ends,
                                        epoch.end_states)


cdef void run_claimed_tasks(EpochArrays *epoch, Py_ssize_t *claimed) noexcept nogil:
    """Run the epoch's pending tasks that this thread claims from the shared counter."""
    cdef Py_ssize_t task = fo_hw_claim(claimed)
    while task < epoch.n_tasks:
        run_task(epoch, task)
        task = fo_hw_claim(claimed)


cdef class Epoch:
    """One epoch's sample order and its plan: per position the step size, the L2
    scale after the step and the averaging weight; and the blocks the scale splits
    the epoch into.

    set_shuffle and set_plan only record what to do; prepare() does it now, or
    run_block(..., prepare=epoch) does it in its parallel loop.
    """
    cdef readonly object order, eta, scale_after, norm_weight, average_weight
    cdef object ends, end_states
    cdef EpochArrays arrays

    def __cinit__(self, Py_ssize_t n_samples, bint track_norm, bint averaging, rows=None):
        """n_samples positions, visiting the rows 0..n_samples-1 of the data, or the given
        rows (those of the training set when a validation set is held out)."""
        if n_samples < 1:
            raise ValueError(f"an epoch needs at least one sample, got n_samples={n_samples}")
        if rows is not None:
            rows = np.asarray(rows)
            if rows.shape != (n_samples,) or rows.dtype.kind not in "iu" or rows.min() < 0:
                raise ValueError(f"rows must be {n_samples} non-negative integers")
        # One allocation: from 4 MiB on NumPy asks Linux for huge pages, and first
        # touching fresh memory costs a page fault every 4 KiB otherwise (a few ms
        # an array on the benchmark, in a VM).
        cdef int n_arrays = 3 + track_norm + averaging
        buffer = np.empty((n_arrays, n_samples))
        self.order = buffer[0].view(np.intp)[:n_samples]
        self.eta, self.scale_after = buffer[1], buffer[2]
        self.norm_weight = buffer[3] if track_norm else None
        self.average_weight = buffer[n_arrays - 1] if averaging else None
        self.ends = np.empty(n_samples + 1, dtype=np.intp)
        self.end_states = np.empty(2 * (n_samples + 1))
        self.arrays.n = n_samples
        self.arrays.order = <Py_ssize_t *>cnp.PyArray_DATA(<cnp.ndarray>self.order)
        self.arrays.eta = <double *>cnp.PyArray_DATA(<cnp.ndarray>self.eta)
        self.arrays.scale_after = <double *>cnp.PyArray_DATA(<cnp.ndarray>self.scale_after)
        self.arrays.norm_weight = <double *>cnp.PyArray_DATA(<cnp.ndarray>self.norm_weight) if track_norm else NULL
        self.arrays.average_weight = <double *>cnp.PyArray_DATA(<cnp.ndarray>self.average_weight) if averaging else NULL
        self.arrays.ends = <Py_ssize_t *>cnp.PyArray_DATA(<cnp.ndarray>self.ends)
        self.arrays.end_states = <double *>cnp.PyArray_DATA(<cnp.ndarray>self.end_states)
        self.arrays.n_blocks = 0
        self.arrays.n_tasks = 0
        cdef Py_ssize_t i
        if rows is None:
            for i in range(n_samples):
                self.arrays.order[i] = i
            self.arrays.n_rows = n_samples
        else:
            self.order[:] = rows
            self.arrays.n_rows = int(rows.max()) + 1

    def set_shuffle(self, uint64_t seed):
        """Shuffle the order this epoch holds (a uniform shuffle of any order is uniform)."""
        self.arrays.shuffle_seed = seed
        self._add_task(SHUFFLE_TASK)

    def set_plan(self, int schedule, double eta0, double power_t, double alpha, double optimal_init,
                 double l2, double t_start, double scale_start, double average_from=0.0,
                 double average_a=0.0, double average_b=1.0):
        """Plan the positions (see plan_positions)."""
        self.arrays.plan = PlanInputs(schedule, eta0, power_t, alpha, optimal_init, l2, t_start,
                                      scale_start, average_from, average_a, average_b)
        self._add_task(PLAN_TASK)

    cdef _add_task(self, int task):
        cdef int k
        for k in range(self.arrays.n_tasks):
            if self.arrays.tasks[k] == task:
                return
        self.arrays.tasks[self.arrays.n_tasks] = task
        self.arrays.n_tasks += 1

    def prepare(self, int n_threads=1):
        """Run the pending tasks now, on up to n_threads threads (one task each)."""
        cdef Py_ssize_t claimed = 0
        if n_threads < 1:
            raise ValueError(f"n_threads must be at least 1, got {n_threads}")
        with nogil, parallel(num_threads=min(n_threads, self.arrays.n_tasks) or 1):
            run_claimed_tasks(&self.arrays, &claimed)
        self.arrays.n_tasks = 0

    @property
    def pending(self):
        return self.arrays.n_tasks > 0

    def blocks(self):
        """[(start, stop, average_a, average_b at stop)] of the planned blocks."""
        if self.arrays.n_tasks:
            raise RuntimeError("the epoch has pending tasks; prepare it first")
        cdef Py_ssize_t b, start = 0
        result = []
        for b in range(self.arrays.n_blocks):
            result.append((start, self.arrays.ends[b], self.arrays.end_states[2 * b],
                           self.arrays.end_states[2 * b + 1]))
            start = self.arrays.ends[b]
        return result


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
        fo_hw_prefetch(p + offset)


cdef inline Py_ssize_t position_ahead(Py_ssize_t v, Py_ssize_t steps, Py_ssize_t last, Py_ssize_t next_first,
                                      Py_ssize_t next_last) noexcept nogil:
    """The position `steps` after v in a thread's sequence: its chunk up to last, then its next chunk
    (-1 past both)."""
    v += steps
    if v < last:
        return v
    v += next_first - last
    return v if v < next_last else -1


cdef void chunk_pass(Py_ssize_t first, Py_ssize_t last, Py_ssize_t next_first, Py_ssize_t next_last,
                     int n_threads, floating *w, const floating *data,
                     const index_t *indices, const index_t *indptr, Py_ssize_t n_features, const double *y,
                     const double *sample_weight, const Py_ssize_t *order, Py_ssize_t start,
                     Py_ssize_t stop, const double *eta, double scale_start, const double *scale_after,
                     int loss, double epsilon, bint fit_intercept, double intercept_decay,
                     double *shared_intercept, const double *norm_weight, floating *aw,
                     const double *average_weight, Py_ssize_t average_first,
                     double *out) noexcept nogil:
    """SGD steps at positions first..last-1 of the block start..stop-1, in order (prefetching
    from next_first..next_last-1, the thread's next chunk, near the end).

    Adds to out (the running thread's slots): [0] the losses (before each update);
    [1] with norm_weight, the weighted changes of |w|^2 its updates make; [2] the
    intercept after each step from position average_first on; [3] the number of
    rows whose dot product with w is not finite (with finite weights: rows holding
    a NaN or an infinity, so the first epoch checks X on its way).  With aw, also
    updates the averaged weights.
    """
    cdef Py_ssize_t v, i, k, nnz, ahead, row_start, since_sync = 0, nonfinite = 0
    cdef int sync_every = 1 if n_threads == 1 else INTERCEPT_SYNC
    cdef const floating *x
    cdef const index_t *ind
    cdef double p, dot, dloss, update, scale_before, norm_changes = 0.0, intercept_sum = 0.0
    cdef double sum_loss = 0.0
    cdef double intercept_seen = shared_intercept[0], intercept_delta = 0.0
    for v in range(first, last):
        ahead = position_ahead(v, PREFETCH_AHEAD, last, next_first, next_last)
        if ahead >= 0:
            fo_hw_prefetch(y + order[ahead])
            if sample_weight != NULL:
                fo_hw_prefetch(sample_weight + order[ahead])
            if indices == NULL:
                prefetch_lines(<const char *>(data + order[ahead] * n_features), n_features * sizeof(floating))
            else:
                k = position_ahead(v, 2 * PREFETCH_AHEAD, last, next_first, next_last)
                if k >= 0:
                    fo_hw_prefetch(indptr + order[k])
                row_start = indptr[order[ahead]]
                nnz = indptr[order[ahead] + 1] - row_start
                prefetch_lines(<const char *>(data + row_start), nnz * sizeof(floating))
                prefetch_lines(<const char *>(indices + row_start), nnz * sizeof(index_t))
        ahead = position_ahead(v, WEIGHTS_AHEAD, last, next_first, next_last)
        if indices != NULL and ahead >= 0:
            row_start = indptr[order[ahead]]
            nnz = indptr[order[ahead] + 1] - row_start
            for k in range(nnz):
                fo_hw_prefetch_write(w + indices[row_start + k])
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
        if not fabs(dot) <= DBL_MAX:  # NaN fails the comparison too
            nonfinite += 1
        p = dot * scale_before + intercept_seen + intercept_delta
        sum_loss += fo_hw_loss_value(loss, p, y[i], epsilon)
        dloss = fo_hw_loss_derivative(loss, p, y[i], epsilon)
        if dloss > MAX_DLOSS:
            dloss = MAX_DLOSS
        elif dloss < -MAX_DLOSS:
            dloss = -MAX_DLOSS
        update = -eta[v] * dloss
        if sample_weight != NULL:
            update *= sample_weight[i]
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
    out[3] += nonfinite


def run_block(floating[::1] w, const floating[::1] data, const index_t[::1] indices,
              const index_t[::1] indptr, bint dense, Py_ssize_t n_features, const double[::1] y,
              const double[::1] sample_weight, Epoch epoch, Py_ssize_t start, Py_ssize_t stop,
              double scale_start, int loss, double epsilon, bint fit_intercept, double intercept_decay,
              double intercept, int n_threads, double[::1] scratch, floating[::1] aw=None,
              Py_ssize_t average_first=0, Epoch prepare=None):
    """Hogwild! SGD over positions start..stop-1 of a prepared epoch, on n_threads threads.

    Returns (sum of losses, weighted sum of the changes of |w|^2 (0 unless the
    epoch tracks the norm), intercept, sum of the intercept after each step from
    position average_first on, number of rows with a non-finite dot product).
    sample_weight None weighs every sample 1 (and reads nothing).  With aw (and
    an averaging epoch), also averaged SGD.  Dense rows are
    data[i*n_features:(i+1)*n_features] (indices and indptr unused).  scratch
    holds at least n_threads*PAD doubles.  The true weights are scale_start * w
    at the start and epoch.scale_after[stop-1] * w at the end; the caller folds
    the scale into w when it starts a new block.  prepare (another Epoch) has
    its pending tasks run by the first threads free, before their first slice.
    """
    cdef int k
    cdef Py_ssize_t n_tasks = 0, n_chunks = (stop - start + CHUNK - 1) // CHUNK
    # shared counters the threads claim tasks, then chunks from (see fo_hw_claim)
    cdef Py_ssize_t tasks_claimed = 0, chunks_claimed = 0
    cdef Py_ssize_t chunk, following
    cdef double *thread_out
    # the shared intercept gets a cache line of its own: the line of this array at &line[PAD] rounded down
    cdef double intercept_line[2 * PAD]
    cdef double *shared_intercept = <double *>(<uintptr_t>&intercept_line[PAD] & ~(<uintptr_t>63))
    cdef const index_t *indices_ptr = NULL if dense else &indices[0]
    cdef const index_t *indptr_ptr = NULL if dense else &indptr[0]
    cdef EpochArrays *arrays = &epoch.arrays
    cdef EpochArrays *next_arrays = NULL
    cdef floating *aw_ptr = NULL
    cdef const double *sample_weight_ptr = NULL if sample_weight is None else &sample_weight[0]
    cdef double total = 0.0, norm_total = 0.0, intercept_total = 0.0, nonfinite = 0.0
    if arrays.n_tasks:
        raise ValueError("the epoch has pending tasks; prepare it first")
    if not 0 <= start <= stop <= arrays.n or y.shape[0] < arrays.n_rows or (
            sample_weight is not None and sample_weight.shape[0] < arrays.n_rows) or (
            data.shape[0] < arrays.n_rows * n_features if dense else indptr.shape[0] <= arrays.n_rows):
        raise ValueError("the block is not within the epoch and its samples")
    if aw is not None:
        if aw.shape[0] != w.shape[0] or arrays.average_weight == NULL:
            raise ValueError("aw must match w and the epoch plan averaging")
        aw_ptr = &aw[0]
    else:
        average_first = stop
    if w.shape[0] < n_features:
        raise ValueError("w is shorter than the rows")
    if prepare is not None:
        if prepare is epoch:
            raise ValueError("an epoch cannot prepare itself while it runs")
        next_arrays = &prepare.arrays
        n_tasks = next_arrays.n_tasks
    if n_threads < 1:
        raise ValueError(f"n_threads must be at least 1, got {n_threads}")
    if scratch.shape[0] < n_threads * PAD:
        raise ValueError("scratch is too small")
    if stop <= start and n_tasks == 0:
        return 0.0, 0.0, intercept, 0.0, 0
    shared_intercept[0] = intercept
    scratch[:] = 0.0
    with nogil, parallel(num_threads=n_threads):
        thread_out = &scratch[omp_get_thread_num() * PAD]
        if next_arrays != NULL:
            run_claimed_tasks(next_arrays, &tasks_claimed)
        chunk = fo_hw_claim(&chunks_claimed)
        while chunk < n_chunks:
            following = fo_hw_claim(&chunks_claimed)
            chunk_pass(
                start + chunk * CHUNK, min(stop, start + (chunk + 1) * CHUNK),
                start + following * CHUNK, min(stop, start + (following + 1) * CHUNK), n_threads,
                &w[0], &data[0], indices_ptr, indptr_ptr, n_features, &y[0], sample_weight_ptr,
                arrays.order, start, stop, arrays.eta, scale_start, arrays.scale_after, loss, epsilon,
                fit_intercept, intercept_decay, shared_intercept, arrays.norm_weight, aw_ptr,
                arrays.average_weight, average_first, thread_out)
            chunk = following
    if n_tasks:
        next_arrays.n_tasks = 0
    for k in range(n_threads):
        total += scratch[k * PAD]
        norm_total += scratch[k * PAD + 1]
        intercept_total += scratch[k * PAD + 2]
        nonfinite += scratch[k * PAD + 3]
    return total, norm_total, shared_intercept[0], intercept_total, int(nonfinite)


THREAD_SCRATCH = PAD
