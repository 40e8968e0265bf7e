# The window geometry the kernel entry points take, and the checks they run on entry.
#
# Python fills the struct once from its geometry object: a def function with a
# Geometry argument takes a dict with these keys, `ConvGeometry.struct()`
# (fastconv/_validation.py). Entry points check their arrays' shapes against it
# before they release the GIL, so a wrong shape is a ValueError, never a write
# out of bounds.


cdef struct Geometry:
    Py_ssize_t kh, kw            # window size
    Py_ssize_t sh, sw            # stride
    Py_ssize_t pt, pl            # top and left padding (bottom and right follow from out_h, out_w)
    Py_ssize_t dh, dw            # dilation
    Py_ssize_t out_h, out_w      # output size


cdef inline tuple shape(const Py_ssize_t* dims, int ndim):
    """dims[:ndim] as a tuple (a memoryview's `shape` is a C array)."""
    return tuple([dims[i] for i in range(ndim)])


cdef inline int check_shape(str name, tuple got, tuple want) except -1:
    """ValueError unless array `name` has shape `want`."""
    if got != want:
        raise ValueError(f"{name} must have shape {want}, got {got}")
    return 0


cdef inline int check_workspace(str name, Py_ssize_t rows, Py_ssize_t values, int num_threads,
                                Py_ssize_t needed) except -1:
    """ValueError unless workspace `name` has a row of at least `needed` values for each thread."""
    if num_threads < 1:
        raise ValueError(f"num_threads must be at least 1, got {num_threads}")
    if rows < num_threads or values < needed:
        raise ValueError(f"{name} must be at least ({num_threads}, {needed}) for {num_threads} threads, "
                         f"got ({rows}, {values})")
    return 0


cdef inline int check_groups(Py_ssize_t groups, Py_ssize_t C, Py_ssize_t K) except -1:
    """ValueError unless `groups` divides both channel counts."""
    if groups < 1 or C % groups or K % groups:
        raise ValueError(f"groups={groups} must divide the {C} input and {K} output channels")
    return 0
