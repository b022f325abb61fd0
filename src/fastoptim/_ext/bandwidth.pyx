# The machine's streaming bandwidth, for the benchmarks' roofline.

from cython.parallel cimport prange


def scale_add_inplace(double[::1] a, const double[::1] b, double s, int n_threads):
    """a = s * a + b with n_threads: two streams read, one written in place, as an
    optimizer step does.  The benchmark times it on arrays far larger than the caches."""
    cdef Py_ssize_t i, n = a.shape[0]
    if b.shape[0] != n:
        raise ValueError("a and b must have the same length")
    with nogil:
        for i in prange(n, schedule="static", num_threads=max(1, n_threads)):
            a[i] = s * a[i] + b[i]
