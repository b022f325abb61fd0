# Argument checks at C speed, shared by the extension modules.  The inline
# tests are compiled into each user; the raising checks live in checks.pyx.

cimport numpy as cnp
from libc.stdint cimport int64_t

from .common cimport FO_FLOAT32, FO_FLOAT64, fo_index


cdef inline int dtype_index(int typenum) noexcept:
    """The kernels' dtype index of a NumPy type number, or -1."""
    if typenum == cnp.NPY_FLOAT32:
        return FO_FLOAT32
    if typenum == cnp.NPY_FLOAT64:
        return FO_FLOAT64
    return -1


cdef inline bint same_shape(cnp.ndarray a, cnp.ndarray b) noexcept:
    cdef int d, nd = cnp.PyArray_NDIM(a)
    if nd != cnp.PyArray_NDIM(b):
        return False
    for d in range(nd):
        if cnp.PyArray_DIM(a, d) != cnp.PyArray_DIM(b, d):
            return False
    return True


cdef inline bint overlaps(cnp.ndarray a, cnp.ndarray b) noexcept:
    cdef char *a0 = <char *>cnp.PyArray_DATA(a)
    cdef char *b0 = <char *>cnp.PyArray_DATA(b)
    cdef fo_index na = cnp.PyArray_NBYTES(a), nb = cnp.PyArray_NBYTES(b)
    return na > 0 and nb > 0 and a0 < b0 + nb and b0 < a0 + na


cdef str describe(obj)
cdef int check_float_array(obj, str name) except -1
cdef int check_layout(cnp.ndarray a, str name, bint written) except -1
cdef int check_like(obj, str name, cnp.ndarray ref, str ref_name) except -1
cdef int check_state_operand(obj, str name, cnp.ndarray ref, str ref_name, expected) except -1
cdef int64_t check_step(step) except -1
cdef double check_grad_scale(grad_scale) except -1
cdef object scalar_as_array(obj, cnp.ndarray param)
