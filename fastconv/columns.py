"""im2col / col2im: the public face of the column kernels (== torch unfold / fold)."""
import numpy as np

from fastconv import _memory
from fastconv import _validation as v
from fastconv._kernels import im2col as _kernel
from fastconv._threads import num_threads_for


def im2col(x, kernel_size, stride=1, padding=0, dilation=1):
    """Extract sliding windows as columns, exactly as ``torch.nn.functional.unfold``.

    Parameters
    ----------
    x : ndarray, shape (N, C, H, W) or (C, H, W), float32 or float64
    kernel_size, stride, dilation : int or pair of ints
    padding : int, pair of ints, ``"valid"`` or ``"same"``

    Returns
    -------
    cols : ndarray, shape (N, C*kh*kw, L) (or (C*kh*kw, L) for 3-D input)
        ``L = Ho*Wo``; row ``(c*kh + i)*kw + j`` holds input channel ``c`` seen
        through kernel offset ``(i, j)``.
    """
    x = v.float_array(x, "x")
    if x.ndim not in (3, 4):
        raise ValueError(f"x must be 3-D (C, H, W) or 4-D (N, C, H, W), got shape {x.shape}")
    batched = x if x.ndim == 4 else x[None]
    N, C, H, W = batched.shape
    if H == 0 or W == 0:
        raise ValueError(f"x must have non-zero height and width, got shape {x.shape}")
    g = v.conv_geometry((H, W), kernel_size, stride, padding, dilation)
    shape = (N, C * g.kernel_h * g.kernel_w, g.out_h * g.out_w)
    v.allocatable(shape, x.dtype, "column matrix")
    cols = _memory.empty(shape, x.dtype)
    _kernel.im2col(batched, cols, g.struct(), num_threads_for(cols.size))
    return cols if x.ndim == 4 else cols[0]


def col2im(cols, output_size, kernel_size, stride=1, padding=0, dilation=1):
    """Sum columns back into images, exactly as ``torch.nn.functional.fold``.

    Overlapping windows are summed, so ``col2im`` is the adjoint of `im2col`
    (not its inverse).

    Parameters
    ----------
    cols : ndarray, shape (N, C*kh*kw, L) or (C*kh*kw, L), float32 or float64
    output_size : int or pair of ints
        (H, W) of the image to rebuild.
    kernel_size, stride, padding, dilation : as in `im2col`

    Returns
    -------
    x : ndarray, shape (N, C, H, W) (or (C, H, W) for 2-D `cols`)
    """
    cols = v.float_array(cols, "cols")
    if cols.ndim not in (2, 3):
        raise ValueError(f"cols must be 2-D (C*kh*kw, L) or 3-D (N, C*kh*kw, L), got shape {cols.shape}")
    batched = cols if cols.ndim == 3 else cols[None]
    H, W = v.pair(output_size, "output_size", minimum=1)
    g = v.conv_geometry((H, W), kernel_size, stride, padding, dilation)
    kk = g.kernel_h * g.kernel_w
    N, rows, L = batched.shape
    if rows % kk:
        raise ValueError(
            f"cols.shape[-2] = {rows} must be divisible by kh*kw = {kk} (kernel_size {(g.kernel_h, g.kernel_w)})")
    if L != g.out_h * g.out_w:
        raise ValueError(
            f"cols.shape[-1] = {L} does not match the {g.out_h}x{g.out_w} = {g.out_h * g.out_w} "
            f"windows of output_size {(H, W)} with these kernel_size/stride/padding/dilation")
    v.allocatable((N, rows // kk, H, W), cols.dtype, "output")
    x = np.zeros((N, rows // kk, H, W), dtype=cols.dtype)
    _kernel.col2im(batched, x, g.struct(), num_threads_for(batched.size))
    return x if cols.ndim == 3 else x[0]
