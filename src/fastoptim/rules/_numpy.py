"""Helpers of the rules' NumPy references (whole-array operations, in the array's dtype)."""


def signed_grad(grad, maximize, grad_scale):
    """The gradient the update sees: divided by grad_scale (torch's fused kernels), negated for maximize."""
    d = -grad if maximize else grad.copy()
    if grad_scale is not None:
        d = d / d.dtype.type(grad_scale)
    return d


def lerp(start, end, weight):
    """torch.lerp_ in place: weight < 0.5 interpolates from start, otherwise back from end."""
    w = start.dtype.type(weight)
    if abs(float(w)) < 0.5:
        start += w * (end - start)
    else:
        start[...] = end - (end - start) * (start.dtype.type(1) - w)


def torch_sign(x):
    """torch.sign on CPU: (x > 0) - (x < 0) in x's dtype, so sign(NaN) = 0 (np.sign(NaN) is NaN)."""
    return (x > 0).astype(x.dtype) - (x < 0).astype(x.dtype)
