"""Build the compiled kernels: Cython 3 extensions with OpenMP when the compiler has it.

OpenMP is probed per compiler by compiling and linking a tiny program with the
flags that compiler family needs. When the probe fails (or FASTCONV_NO_OPENMP=1)
the build warns and produces serial kernels: `prange` degrades to `range` and
`fastconv/_kernels/_openmp.pxd` supplies single-thread fallbacks.
"""
import os
import platform
import shutil
import sys
import tempfile
import textwrap
import warnings
from pathlib import Path

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

KERNELS = Path("fastconv") / "_kernels"

OPENMP_PROBE = textwrap.dedent(
    """
    #include <omp.h>
    int main(void) {
        int n = 0;
        #pragma omp parallel reduction(+:n)
        n += 1;
        return n > 0 ? 0 : 1;
    }
    """
)


def openmp_flags(compiler):
    """(compile_args, link_args) that enable OpenMP for this compiler family."""
    if compiler.compiler_type == "msvc":
        return ["/openmp"], []
    if sys.platform == "darwin":
        # Apple clang has no -fopenmp driver flag; libomp comes from Homebrew.
        prefix = os.environ.get("FASTCONV_LIBOMP_PREFIX", "/opt/homebrew/opt/libomp")
        return (["-Xpreprocessor", "-fopenmp", f"-I{prefix}/include"],
                [f"-L{prefix}/lib", "-lomp"])
    return ["-fopenmp"], ["-fopenmp"]


def optimisation_flags(compiler):
    # Portable flags only: no -march=native, so a wheel runs on any x86-64/arm64.
    if compiler.compiler_type == "msvc":
        return ["/O2"]
    return ["-O3", "-fno-math-errno", "-Wno-unreachable-code", "-Wno-unused-function"]


def avx_fma_flags(compiler):
    """Flags for the `*_avx` kernel variants: AVX + FMA on x86 gcc/clang, none elsewhere
    (the variant then builds as a copy of the baseline, and is never chosen)."""
    x86 = platform.machine().lower() in ("x86_64", "amd64", "i386", "i686", "x86")
    if compiler.compiler_type == "msvc" or not x86:
        return []
    return ["-mavx", "-mfma"]


def sanitizer_flags(compiler):
    """FASTCONV_SANITIZE=1: AddressSanitizer + UndefinedBehaviorSanitizer (gcc/clang)."""
    if os.environ.get("FASTCONV_SANITIZE", "0") in ("", "0") or compiler.compiler_type == "msvc":
        return [], []
    flags = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-g", "-O1"]
    return flags, ["-fsanitize=address,undefined"]


def compiler_has_openmp(compiler, compile_args, link_args):
    tmp = tempfile.mkdtemp(prefix="fastconv-omp-")
    try:
        src = os.path.join(tmp, "probe.c")
        with open(src, "w") as f:
            f.write(OPENMP_PROBE)
        objects = compiler.compile([src], output_dir=tmp, extra_postargs=compile_args)
        compiler.link_executable(objects, "probe", output_dir=tmp, extra_postargs=link_args)
        return True
    except Exception:  # any compile or link failure means "no usable OpenMP"
        return False
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class BuildExt(build_ext):
    def build_extensions(self):
        compile_args = optimisation_flags(self.compiler)
        link_args = []
        omp_compile, omp_link = openmp_flags(self.compiler)
        if os.environ.get("FASTCONV_NO_OPENMP", "0") not in ("", "0"):
            print("fastconv: FASTCONV_NO_OPENMP set; building serial kernels")
        elif compiler_has_openmp(self.compiler, omp_compile, omp_link):
            compile_args += omp_compile
            link_args += omp_link
        else:
            warnings.warn(
                "fastconv: the compiler does not support OpenMP; building serial kernels "
                "(install libomp / use gcc to get parallel kernels)"
            )
        san_compile, san_link = sanitizer_flags(self.compiler)
        if san_compile:
            compile_args = [f for f in compile_args if not f.startswith("-O")] + san_compile
            link_args += san_link
        for ext in self.extensions:
            if ext.name.endswith("_avx"):
                ext.extra_compile_args = avx_fma_flags(self.compiler) + ext.extra_compile_args
            ext.extra_compile_args = compile_args + ext.extra_compile_args
            ext.extra_link_args = link_args + ext.extra_link_args
        super().build_extensions()


def kernel_extensions():
    return [
        Extension(
            f"fastconv._kernels.{pyx.stem}",
            [str(pyx)],
            include_dirs=[np.get_include()],
            define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_9_API_VERSION")],
        )
        for pyx in sorted(KERNELS.glob("*.pyx"))
    ]


setup(
    ext_modules=cythonize(
        kernel_extensions(),
        compiler_directives={
            "language_level": 3,
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "initializedcheck": False,
            "nonecheck": False,
        },
    ),
    cmdclass={"build_ext": BuildExt},
)
