# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Crops of base maps with a window pasted over each, float32/float64.

The gather of `fastconv.viz.occlusion`'s windowed path: for item b, the crop of
the unoccluded image's activation that a layer reads, with the part that the
occlusion changed written over it. One task per item (prange over the batch);
each output element is written once, from the window where it covers the crop,
else from the base. Rows are a few elements long, so they are plain loops, not
memcpy calls.
"""
from cython cimport floating
from cython.parallel cimport prange


cdef inline void _copy(floating* dst, const floating* src, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t v
    for v in range(n):
        dst[v] = src[v]


cdef void _paste_item(floating* dst, const floating* src, const floating* win, Py_ssize_t C, Py_ssize_t h,
                     Py_ssize_t w, Py_ssize_t src_plane, Py_ssize_t W, Py_ssize_t wh, Py_ssize_t ww, Py_ssize_t wt,
                     Py_ssize_t wl) noexcept nogil:
    """One item: C planes of h x w from `src` (rows W apart, planes src_plane apart), with
    the (C, wh, ww) window `win` over them from (wt, wl) on."""
    cdef Py_ssize_t c, u
    cdef Py_ssize_t r0 = min(max(wt, 0), h), r1 = max(min(wt + wh, h), min(max(wt, 0), h))
    cdef Py_ssize_t c0 = min(max(wl, 0), w), c1 = max(min(wl + ww, w), min(max(wl, 0), w))
    if c0 == c1:
        r1 = r0  # the window misses the crop
    for c in range(C):
        for u in range(h):
            if r0 <= u < r1:
                _copy(dst, src, c0)
                _copy(dst + c0, win + (u - wt) * ww + (c0 - wl), c1 - c0)
                _copy(dst + c1, src + c1, w - c1)
            else:
                _copy(dst, src, w)
            src = src + W
            dst = dst + w
        src = src + (src_plane - h * W)
        win = win + wh * ww


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
        _paste_item(&out[b, 0, 0, 0], &base[image[b], 0, top[b], left[b]], &window[b, 0, 0, 0], C, h, w,
                    base.shape[2] * base.shape[3], base.shape[3], window.shape[2], window.shape[3],
                    window_top[b], window_left[b])
