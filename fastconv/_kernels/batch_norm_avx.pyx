# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
# The batch norm kernels compiled a second time, with AVX + FMA on x86 (setup.py adds the
# flags); fastconv.normalization imports it only when the CPU has them.
include "batch_norm.pyx"
