"""Private compiled kernels. Typed memoryviews in, preallocated output, no checking."""
try:
    from fastconv._kernels import _openmp  # noqa: F401  (the first compiled module imported)
except ImportError as e:  # pragma: no cover - depends on how the package was installed
    import os

    raise ImportError(
        f"fastconv's compiled kernels are missing from {os.path.dirname(__file__)}. This is a source "
        f"checkout without built extensions (a `pip install .` elsewhere is shadowed when Python runs "
        f"from the checkout's root): run `pip install -e .` here, or run from another directory."
    ) from e
