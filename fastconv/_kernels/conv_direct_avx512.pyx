# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# The direct convolution kernel compiled a third time, with AVX-512F + FMA on x86
# (setup.py adds the flags); fastconv._direct imports it only when the CPU has them.
include "conv_direct.pyx"
