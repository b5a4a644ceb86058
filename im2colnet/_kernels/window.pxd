# cython: language_level=3
"""What the kernels share: the float types (every kernel), and a sliding window's index
ranges (the convolution kernels).

Output position t reads input position t*stride + offset (offset = tap*dilation
- padding, any sign). Only t in [first_inside, end_inside) read inside the
image, so loops over that range need no per-pixel bounds test.
"""

ctypedef fused floating:
    float
    double


cdef inline Py_ssize_t first_inside(Py_ssize_t offset, Py_ssize_t stride) noexcept nogil:
    """The smallest t >= 0 with t*stride + offset >= 0."""
    if offset >= 0:
        return 0
    return (-offset + stride - 1) // stride


cdef inline Py_ssize_t end_inside(Py_ssize_t offset, Py_ssize_t stride, Py_ssize_t size,
                                  Py_ssize_t count) noexcept nogil:
    """The smallest t >= 0 with t*stride + offset >= size, at most count."""
    cdef Py_ssize_t t
    if offset >= size:
        return 0
    t = (size - offset + stride - 1) // stride
    return t if t < count else count
