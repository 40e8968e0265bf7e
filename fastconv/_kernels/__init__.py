"""Private compiled kernels. Typed memoryviews in, preallocated output, no checking."""
