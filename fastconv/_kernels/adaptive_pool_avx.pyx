# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
# The adaptive pooling kernels compiled a second time, with AVX + FMA on x86 (setup.py adds the
# flags); fastconv.adaptive_pooling imports it only when the CPU has them.
include "adaptive_pool.pyx"
