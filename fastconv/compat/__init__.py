"""Drop-in modules that mirror other libraries' APIs exactly, computed by fastconv.

- `fastconv.compat.cs231n`: the classic course module ``fast_layers`` (plus
  its ``layer_utils`` conv sandwiches and the ``im2col_cython`` extension).
"""
