cimport numpy as cnp
from libc.stdint cimport int64_t

cdef extern from "fastoptim/kernels.h" nogil:
    ctypedef Py_ssize_t fo_index

    enum:
        FO_SGD, FO_ADAGRAD, FO_RMSPROP, FO_ADADELTA, FO_ADAM, FO_N_RULES
        FO_FLOAT32, FO_FLOAT64, FO_N_DTYPES
        FO_MAX_OPERANDS
        FO_SIMD_BASELINE, FO_SIMD_AVX2, FO_SIMD_AVX512, FO_N_SIMD_LEVELS

    ctypedef struct fo_sgd_args:
        double lr, momentum, dampening, weight_decay
        int64_t step
        int nesterov, maximize

    ctypedef struct fo_adagrad_args:
        double lr, lr_decay, weight_decay, eps
        int64_t step
        int maximize

    ctypedef struct fo_rmsprop_args:
        double lr, alpha, eps, weight_decay, momentum
        int64_t step
        int centered, maximize

    ctypedef struct fo_adadelta_args:
        double lr, rho, eps, weight_decay
        int64_t step
        int maximize

    ctypedef struct fo_adam_args:
        double lr, beta1, beta2, eps, weight_decay
        int64_t step
        int amsgrad, maximize, decoupled_weight_decay

    ctypedef union fo_args:
        fo_sgd_args sgd
        fo_adagrad_args adagrad
        fo_rmsprop_args rmsprop
        fo_adadelta_args adadelta
        fo_adam_args adam

    ctypedef void (*fo_range_fn)(const fo_args *args, char *const *data, fo_index begin, fo_index end) noexcept

    ctypedef struct fo_kernel_table:
        const char *name
        fo_range_fn range[5][2]

    void fo_prepare(int rule, fo_args *a)
    const fo_kernel_table *fo_compiled_table(int level)
    int fo_cpu_supports(int level)


# Argument checks shared with the other extensions (fastoptim._train_kernels).
cdef int check_float_array(obj, str name) except -1
cdef int check_layout(cnp.ndarray a, str name, bint written) except -1
