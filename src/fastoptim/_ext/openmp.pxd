# OpenMP routines through one shim that degrades to serial stubs when the
# extension is built without OpenMP (scikit-learn's pattern).
cdef extern from *:
    """
    #ifdef _OPENMP
    #include <omp.h>
    #define FASTOPTIM_OPENMP 1
    #else
    #define FASTOPTIM_OPENMP 0
    static inline int omp_get_max_threads(void) { return 1; }
    static inline int omp_get_num_threads(void) { return 1; }
    static inline int omp_get_thread_num(void) { return 0; }
    #endif
    """
    bint FASTOPTIM_OPENMP
    int omp_get_max_threads() noexcept nogil
    int omp_get_num_threads() noexcept nogil
    int omp_get_thread_num() noexcept nogil
