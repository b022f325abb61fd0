# DLPack: a torch grad's memory, read at C speed (torch.Tensor.__dlpack__'s
# capsule is one C struct with pointer, device, dtype, shape and strides).

cimport numpy as cnp
from cpython.pycapsule cimport PyCapsule_GetPointer
from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t, uint64_t

from .checks cimport bfloat16_typenum
from .common cimport fo_index


cdef extern from *:
    """
    /* DLPack's stable C ABI (dlpack.h, v0.x "dltensor" capsules). */
    typedef struct { int32_t device_type; int32_t device_id; } fo_DLDevice;
    typedef struct { uint8_t code; uint8_t bits; uint16_t lanes; } fo_DLDataType;
    typedef struct {
        void *data; fo_DLDevice device; int32_t ndim; fo_DLDataType dtype;
        int64_t *shape; int64_t *strides; uint64_t byte_offset;
    } fo_DLTensor;
    typedef struct fo_DLManagedTensor {
        fo_DLTensor dl_tensor; void *manager_ctx; void (*deleter)(struct fo_DLManagedTensor *);
    } fo_DLManagedTensor;
    /* Where an empty tensor's NULL data points instead: NULL means "no grad" in a plan. */
    static char fo_empty_tensor_data;
    """
    ctypedef struct fo_DLDevice:
        int32_t device_type
    ctypedef struct fo_DLDataType:
        uint8_t code
        uint8_t bits
        uint16_t lanes
    ctypedef struct fo_DLTensor:
        void *data
        fo_DLDevice device
        int32_t ndim
        fo_DLDataType dtype
        int64_t *shape
        int64_t *strides
        uint64_t byte_offset
    ctypedef struct fo_DLManagedTensor:
        fo_DLTensor dl_tensor
    char fo_empty_tensor_data

cdef enum:
    DL_CPU = 1
    DL_FLOAT = 2
    DL_BFLOAT = 4
    DL_COMPLEX = 5


cdef inline char *dlpack_grad_data(capsule, cnp.ndarray p, bint complex_view, fo_index *nbytes) except? NULL:
    """The data of a DLPack capsule if it is a dense CPU tensor laid out as the array p:
    p's dtype, shape and strides (strides of size-1 dims do not matter); with
    complex_view, p is the view_as_real of a complex param, and the tensor must be
    complex with p's shape and strides but the trailing (real, imaginary) dimension.
    NULL otherwise (the caller says why)."""
    cdef fo_DLTensor *t = &(<fo_DLManagedTensor *>PyCapsule_GetPointer(capsule, "dltensor")).dl_tensor
    cdef int d, nd = cnp.PyArray_NDIM(p)
    cdef int64_t item = cnp.PyArray_ITEMSIZE(p), unit = item, compact = 1, stride
    cdef int code = DL_BFLOAT if cnp.PyArray_TYPE(p) == bfloat16_typenum() else DL_FLOAT
    if t.device.device_type != DL_CPU or t.dtype.lanes != 1:
        return NULL
    if complex_view:
        if (t.dtype.code != DL_COMPLEX or t.dtype.bits != 16 * item or nd < 1
                or cnp.PyArray_DIM(p, nd - 1) != 2 or cnp.PyArray_STRIDE(p, nd - 1) != item):
            return NULL
        nd -= 1
        unit = 2 * item
    elif t.dtype.code != code or t.dtype.bits != 8 * item:
        return NULL
    if t.ndim != nd:
        return NULL
    for d in range(nd - 1, -1, -1):
        if t.shape[d] != cnp.PyArray_DIM(p, d):
            return NULL
        # NULL strides mean compact row-major.
        stride = t.strides[d] if t.strides != NULL else compact
        if t.shape[d] != 1 and stride * unit != cnp.PyArray_STRIDE(p, d):
            return NULL
        compact *= t.shape[d]
    nbytes[0] = cnp.PyArray_NBYTES(p)
    if t.data == NULL:
        return &fo_empty_tensor_data if nbytes[0] == 0 else NULL
    return <char *>t.data + t.byte_offset
