# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# The Winograd kernel compiled again with AVX + FMA (setup.py adds the flags);
# fastconv._winograd imports it only when the CPU has them.
include "conv_winograd.pyx"
