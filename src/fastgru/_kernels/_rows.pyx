# cython: language_level=3
"""Row moves between the padded (T, B, F) layout and the packed, length-sorted rows the
kernels run on (fastgru._plan: pack, unpack), and the weight transposes of fastgru._packed.

Design: a row is F contiguous values, moved with one memcpy; padding rows are zeroed with one
memset each. NumPy's fancy indexing did the same moves at ~6 GB/s (unpack at S2 with lengths:
1.6-1.9 ms of a 39 ms inference); memcpy per row runs at memory speed. The caller validates:
C-contiguous 2-D arrays of one dtype and width, indices within range.
Transposes run in _transpose.h (blocks of SSE2 register transposes). NumPy's strided copy of
a transposed view took ~1 ns a value: 225 us for a GRU's W_hh at H = 256, most of a short
sequence's call.
"""
from libc.string cimport memcpy, memset

ctypedef fused real:
    float
    double

cdef extern from "_transpose.h" nogil:
    void fg_transpose_f32(const float* s, Py_ssize_t ls, float* d, Py_ssize_t ld,
                          Py_ssize_t R, Py_ssize_t C)
    void fg_transpose_f64(const double* s, Py_ssize_t ls, double* d, Py_ssize_t ld,
                          Py_ssize_t R, Py_ssize_t C)


def gather(const real[:, ::1] a, const Py_ssize_t[::1] index, real[:, ::1] out):
    """out[i] = a[index[i]] for every row i of out."""
    cdef Py_ssize_t i, n = out.shape[0], F = out.shape[1]
    if n == 0 or F == 0:
        return
    with nogil:
        for i in range(n):
            memcpy(&out[i, 0], &a[index[i], 0], F * sizeof(real))


def scatter(const real[:, ::1] p, const Py_ssize_t[::1] index, const Py_ssize_t[::1] pad,
            real[:, ::1] out):
    """out[index[i]] = p[i] for every row i of p; out[pad[j]] = 0."""
    cdef Py_ssize_t i, n = p.shape[0], F = out.shape[1]
    if F == 0:
        return
    with nogil:
        for i in range(n):
            memcpy(&out[index[i], 0], &p[i, 0], F * sizeof(real))
        for i in range(pad.shape[0]):
            memset(&out[pad[i], 0], 0, F * sizeof(real))


def transpose(const real[:, :] src, real[:, :] dst):
    """dst[c, r] = src[r, c] for src (R, C) and dst (C, R), each with unit stride along its
    rows (any row pitch: panels and slices of a larger buffer)."""
    cdef Py_ssize_t R = src.shape[0], C = src.shape[1]
    cdef Py_ssize_t ls, ld
    if dst.shape[0] != C or dst.shape[1] != R:
        raise ValueError(f"dst must have shape ({C}, {R}), got ({dst.shape[0]}, {dst.shape[1]})")
    if R == 0 or C == 0:
        return
    if (C > 1 and src.strides[1] != sizeof(real)) or (R > 1 and dst.strides[1] != sizeof(real)):
        raise ValueError("transpose needs unit strides along the rows of src and dst")
    ls = src.strides[0] // <Py_ssize_t>sizeof(real)
    ld = dst.strides[0] // <Py_ssize_t>sizeof(real)
    cdef const real* s = &src[0, 0]
    cdef real* d = &dst[0, 0]
    with nogil:
        if real is float:
            fg_transpose_f32(s, ls, d, ld, R, C)
        else:
            fg_transpose_f64(s, ls, d, ld, R, C)
