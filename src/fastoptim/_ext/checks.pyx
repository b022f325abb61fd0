# Argument checks at C speed, shared by the extension modules (step, train):
# each raises a TypeError or ValueError naming the argument and the problem.

cimport numpy as cnp
from libc.math cimport isfinite
from libc.stdint cimport int64_t

import numpy as np

cnp.import_array()

from .common cimport FO_BF16, FO_F16

import sys

# ml_dtypes' bfloat16 type number, -1 while ml_dtypes is not imported.  Looked up, not imported:
# the import takes about a second (ml_dtypes 0.7, NumPy 2.4), and a bfloat16 array exists only
# once whoever made it has imported ml_dtypes.
cdef int _bf16_typenum = -1


cdef int bfloat16_typenum() noexcept:
    global _bf16_typenum
    if _bf16_typenum < 0:
        module = sys.modules.get("ml_dtypes")
        if module is not None:
            _bf16_typenum = np.dtype(module.bfloat16).num
    return _bf16_typenum


cdef int storage_type(int typenum) noexcept:
    if typenum == cnp.NPY_FLOAT32:
        return FO_FLOAT32
    if typenum == cnp.NPY_FLOAT64:
        return FO_FLOAT64
    if typenum == cnp.NPY_FLOAT16:
        return FO_F16
    if typenum >= 0 and typenum == bfloat16_typenum():
        return FO_BF16
    return -1

PARAM_DTYPES = "float32, float64, float16 or bfloat16"

# The kind of state operand that is a per-tensor scalar (check_state_operand).
SCALAR = "scalar"


cdef str describe(obj):
    if isinstance(obj, np.ndarray):
        return f"an array of dtype {obj.dtype}"
    t = type(obj)
    return f"a {t.__module__}.{t.__qualname__}" if t.__module__ != "builtins" else f"a {t.__qualname__}"


cdef int check_layout(cnp.ndarray a, str name, bint written) except -1:
    """Memory layout a kernel can update in place: never copied behind the user's back."""
    if not cnp.PyArray_IS_C_CONTIGUOUS(a):
        raise ValueError(f"{name} is not C-contiguous (strides {(<object>a).strides} for shape {(<object>a).shape}); "
                         f"fastoptim never updates or reads through a hidden copy: "
                         f"pass np.ascontiguousarray({name.split('[')[0]}) or a contiguous array")
    if not cnp.PyArray_ISNOTSWAPPED(a) or not cnp.PyArray_ISALIGNED(a):
        raise ValueError(f"{name} is byte-swapped or misaligned ({a.dtype.str}); "
                         f"expected native-endian, aligned {PARAM_DTYPES}")
    if written and not cnp.PyArray_ISWRITEABLE(a):
        raise ValueError(f"{name} is read-only; fastoptim updates it in place and needs a writeable array")
    return 0


cdef int check_float_array(obj, str name) except -1:
    if not cnp.PyArray_Check(obj):
        raise TypeError(f"{name} must be a numpy.ndarray of float32 or float64, got {describe(obj)}")
    if dtype_index(cnp.PyArray_TYPE(<cnp.ndarray>obj)) < 0:
        raise TypeError(f"{name} has dtype {(<cnp.ndarray>obj).dtype}; "
                        f"expected float32 or float64 (complex, integer and other dtypes are not supported)")
    return 0


cdef int check_param_array(obj, str name) except -1:
    """obj is an array of a dtype the update rules take (16-bit ones included)."""
    if not cnp.PyArray_Check(obj):
        raise TypeError(f"{name} must be a numpy.ndarray of {PARAM_DTYPES}, got {describe(obj)}")
    if storage_type(cnp.PyArray_TYPE(<cnp.ndarray>obj)) < 0:
        raise TypeError(f"{name} has dtype {(<cnp.ndarray>obj).dtype}; expected {PARAM_DTYPES} "
                        f"(ml_dtypes.bfloat16; complex, integer and other dtypes are not supported)")
    return 0


cdef int check_like(obj, str name, cnp.ndarray ref, str ref_name) except -1:
    """obj is a float array with ref's dtype and shape."""
    cdef cnp.ndarray a
    if not cnp.PyArray_Check(obj):
        raise TypeError(f"{name} must be a numpy.ndarray with {ref_name}'s dtype {ref.dtype}, "
                        f"got {describe(obj)}")
    a = <cnp.ndarray>obj
    if cnp.PyArray_TYPE(a) != cnp.PyArray_TYPE(ref):
        if storage_type(cnp.PyArray_TYPE(a)) < 0:
            raise TypeError(f"{name} has dtype {a.dtype}; expected {ref.dtype} like {ref_name} "
                            f"(complex, integer and other dtypes are not supported)")
        raise TypeError(f"{name} has dtype {a.dtype} but {ref_name} has dtype {ref.dtype}")
    if not same_shape(a, ref):
        raise ValueError(f"{name} has shape {(<object>a).shape} but {ref_name} has shape {(<object>ref).shape}")
    return 0


cdef int check_state_operand(obj, str name, cnp.ndarray ref, str ref_name, expected) except -1:
    """obj is a state array of a kind other than ref's dtype and shape: SCALAR (a per-tensor
    scalar, a 0-d float32 or float64 array) or a shape tuple (ref's dtype, that shape)."""
    cdef cnp.ndarray a
    check_float_array(obj, name)
    a = <cnp.ndarray>obj
    if expected == SCALAR:
        if cnp.PyArray_NDIM(a) != 0:
            raise ValueError(f"{name} has shape {(<object>a).shape}; expected a 0-d array (a per-tensor scalar, "
                             f"float32 as torch keeps it, or float64)")
        return 0
    if cnp.PyArray_TYPE(a) != cnp.PyArray_TYPE(ref):
        raise TypeError(f"{name} has dtype {a.dtype} but {ref_name} has dtype {ref.dtype}")
    if (<object>a).shape != expected:
        raise ValueError(f"{name} has shape {(<object>a).shape}; expected {expected} for {ref_name} of shape "
                         f"{(<object>ref).shape}")
    return 0


cdef int64_t check_step(step) except -1:
    try:
        s = int(step)
        bad = s != step or s < 1
    except (TypeError, ValueError):
        bad = True
    if bad:
        raise ValueError(f"Invalid step: {step!r}; expected the 1-based count of this step, an integer >= 1")
    return s


cdef double check_grad_scale(grad_scale) except -1:
    """1.0 for None, else a finite real number > 0 as a double (the grad is divided by it)."""
    cdef double s
    if grad_scale is None:
        return 1.0
    if type(grad_scale) is not float and (isinstance(grad_scale, (bool, np.bool_))
                                          or not isinstance(grad_scale, (int, float, np.integer, np.floating))):
        raise TypeError(f"Invalid grad_scale={grad_scale!r}; expected a real number > 0 (the grads are "
                        f"divided by it) or None")
    s = float(grad_scale)
    if not (isfinite(s) and s > 0):
        raise ValueError(f"Invalid grad_scale={grad_scale!r}; must be finite and > 0 (the grads are divided by it)")
    return s


cdef object scalar_as_array(obj, cnp.ndarray param):
    """A scalar grad of a 0-d param, as a 0-d array (grads are only read), else obj.

    `err.mean()` is the natural gradient of a scalar bias: a NumPy scalar of the
    param's dtype is taken as it is.  A Python float or int (a number with no dtype
    of its own, as torch takes it) is converted to the param's dtype.  A NumPy scalar
    of another dtype is left to the dtype check, as an array of that dtype would be.
    """
    if cnp.PyArray_NDIM(param) != 0:
        return obj
    if isinstance(obj, np.generic):
        if (<object>obj).dtype == param.dtype:
            return np.asarray(obj)
        return obj
    if type(obj) is float or type(obj) is int:
        return np.array(obj, dtype=param.dtype)
    return obj
