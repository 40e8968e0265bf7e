# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Crops of base maps with a window pasted over each, float32/float64.

The gather of `fastconv.viz.occlusion`'s windowed path: for item b, the crop of
the unoccluded image's activation that a layer reads, with the part that the
occlusion changed written over it (`paste_crops`); and the gather of each
distinct crop once, contiguous (`gather_crops`), so that an item's crop is then
one memcpy rather than one per row. One task per item (prange over the batch).
"""
from libc.string cimport memcpy

from cython cimport floating
from cython.parallel cimport prange
from fastconv._kernels._openmp cimport fc_openmp_adopt
from fastconv._kernels._tasks cimport openmp_state

fc_openmp_adopt(openmp_state())   # one choice of runtime per process (openmp_runtime.h)


cdef void _copy_crop(floating* dst, const floating* src, Py_ssize_t C, Py_ssize_t h, Py_ssize_t w,
                    Py_ssize_t src_plane, Py_ssize_t W) noexcept nogil:
    """C planes of h x w from `src` (rows W apart, planes src_plane apart) into `dst`."""
    cdef Py_ssize_t c, u
    if src_plane == h * w:
        memcpy(dst, src, C * h * w * sizeof(floating))  # whole planes: contiguous
        return
    for c in range(C):
        for u in range(h):
            memcpy(dst + (c * h + u) * w, src + c * src_plane + u * W, w * sizeof(floating))


cdef void _paste_window(floating* dst, const floating* win, Py_ssize_t C, Py_ssize_t h, Py_ssize_t w,
                        Py_ssize_t wh, Py_ssize_t ww, Py_ssize_t wt, Py_ssize_t wl) noexcept nogil:
    """The (C, wh, ww) window `win` over the (C, h, w) crop `dst` from (wt, wl) on, clipped to it."""
    cdef Py_ssize_t c, u, v
    cdef Py_ssize_t r0 = min(max(wt, 0), h), r1 = min(max(wt + wh, 0), h)
    cdef Py_ssize_t c0 = min(max(wl, 0), w), c1 = min(max(wl + ww, 0), w)
    cdef floating* d
    cdef const floating* s
    if r0 >= r1 or c0 >= c1:
        return  # the window misses the crop
    for c in range(C):
        for u in range(r0, r1):
            d = dst + (c * h + u) * w + c0
            s = win + (c * wh + u - wt) * ww + (c0 - wl)
            for v in range(c1 - c0):
                d[v] = s[v]


def paste_crops(const floating[:, :, :, ::1] base, const Py_ssize_t[::1] image, const Py_ssize_t[::1] top,
                const Py_ssize_t[::1] left, const floating[:, :, :, ::1] window, const Py_ssize_t[::1] window_top,
                const Py_ssize_t[::1] window_left, floating[:, :, :, ::1] out, int num_threads):
    """out[b, c] = base[image[b], c, top[b]:top[b] + h, left[b]:left[b] + w] with window[b, c]
    written over it from (window_top[b], window_left[b]) of the crop on, clipped to the crop.

    The caller checks the bounds: every crop inside its base map, one index per item.
    """
    cdef Py_ssize_t B = out.shape[0], C = out.shape[1], h = out.shape[2], w = out.shape[3]
    cdef Py_ssize_t b
    if B == 0:
        return
    for b in prange(B, nogil=True, schedule="static", num_threads=num_threads):
        _copy_crop(&out[b, 0, 0, 0], &base[image[b], 0, top[b], left[b]], C, h, w,
                   base.shape[2] * base.shape[3], base.shape[3])
        _paste_window(&out[b, 0, 0, 0], &window[b, 0, 0, 0], C, h, w, window.shape[2], window.shape[3],
                      window_top[b], window_left[b])


def gather_crops(const floating[:, :, :, ::1] base, const Py_ssize_t[::1] image, const Py_ssize_t[::1] top,
                 const Py_ssize_t[::1] left, floating[:, :, :, ::1] out, int num_threads):
    """out[b, c] = base[image[b], c, top[b]:top[b] + h, left[b]:left[b] + w]; the caller
    checks the bounds."""
    cdef Py_ssize_t B = out.shape[0], C = out.shape[1], h = out.shape[2], w = out.shape[3]
    cdef Py_ssize_t b
    if B == 0:
        return
    for b in prange(B, nogil=True, schedule="static", num_threads=num_threads):
        _copy_crop(&out[b, 0, 0, 0], &base[image[b], 0, top[b], left[b]], C, h, w,
                   base.shape[2] * base.shape[3], base.shape[3])
