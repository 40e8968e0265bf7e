"""Build the compiled kernels: Cython 3 extensions with OpenMP when the compiler has it.

OpenMP is probed per compiler by compiling and linking a tiny program with the
flags that compiler family needs. When the probe fails (or FASTCONV_NO_OPENMP=1)
the build warns and produces serial kernels: `prange` degrades to `range` and
`fastconv/_kernels/_openmp.pxd` supplies single-thread fallbacks.
"""
import os
import platform
import re
import shutil
import subprocess
import sys
import sysconfig
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


#: Extra flags of the kernel variants, by module-name suffix: the same source
#: compiled for wider vectors, imported only where the CPU runs them.
ISA_FLAGS = {"_avx": ["-mavx", "-mfma"], "_avx512": ["-mavx512f", "-mfma"]}


def isa_flags(compiler, suffix):
    """Flags for a `*_avx`/`*_avx512` variant on x86 gcc/clang; none elsewhere (the
    variant then builds as a copy of the baseline, and is never chosen)."""
    x86 = platform.machine().lower() in ("x86_64", "amd64", "i386", "i686", "x86")
    if compiler.compiler_type == "msvc" or not x86:
        return []
    return ISA_FLAGS[suffix]


def sanitizer_flags(compiler):
    """FASTCONV_SANITIZE=1: AddressSanitizer + UndefinedBehaviorSanitizer (gcc/clang)."""
    if os.environ.get("FASTCONV_SANITIZE", "0") in ("", "0") or compiler.compiler_type == "msvc":
        return [], []
    # -fno-wrapv undoes CPython's -fwrapv, under which signed overflow is defined and
    # UBSan cannot report it.
    flags = ["-fsanitize=address,undefined", "-fno-wrapv", "-fno-omit-frame-pointer", "-g", "-O1"]
    return flags, ["-fsanitize=address,undefined"]


#: fastconv's private copy of libgomp (gcc on Linux): the compiler's libgomp.so.1
#: with its SONAME renamed in place (same length, so no other byte moves), placed
#: beside the kernels and found through their RUNPATH ($ORIGIN). The dynamic
#: loader matches libraries by SONAME, so under the stock name fastconv would
#: share whichever libgomp.so.1 the process loaded first (torch bundles one under
#: that name) and could not choose its own wait policy (fastconv/_threads.py).
#: the OpenMP entry points that fastconv/_kernels/openmp_runtime.h forwards (Linux)
WRAPPED_OPENMP = ("GOMP_parallel", "GOMP_barrier", "GOMP_loop_nonmonotonic_dynamic_start",
                  "GOMP_loop_nonmonotonic_dynamic_next", "GOMP_loop_end_nowait",
                  "omp_get_thread_num", "omp_get_num_threads")
PRIVATE_GOMP = "libgompfc.so"   # "libgomp" first: threadpoolctl lists it as a libgomp
STOCK_GOMP = "libgomp.so.1"


def private_gomp_image(compiler):
    """The bytes of the compiler's libgomp with the SONAME renamed to PRIVATE_GOMP,
    or None where there is none to copy (not gcc on Linux, FASTCONV_SHARED_OPENMP=1,
    or a libgomp whose SONAME string is not found exactly once)."""
    # Not under the sanitizers: the kernels are loaded with RTLD_DEEPBIND to bind to the
    # copy (fastconv/_kernels/__init__.py), which AddressSanitizer does not support.
    if (not sys.platform.startswith("linux") or compiler.compiler_type != "unix"
            or os.environ.get("FASTCONV_SHARED_OPENMP", "0") not in ("", "0")
            or os.environ.get("FASTCONV_SANITIZE", "0") not in ("", "0")):
        return None
    try:
        out = subprocess.run([compiler.compiler_so[0], f"-print-file-name={STOCK_GOMP}"],
                             capture_output=True, text=True, timeout=30).stdout.strip()
        image = Path(out).resolve().read_bytes() if os.path.isabs(out) else b""
    except Exception:  # no copy: the build falls back to the shared runtime
        return None
    stock, private = STOCK_GOMP.encode() + b"\0", PRIVATE_GOMP.encode() + b"\0"
    assert len(stock) == len(private)
    if not image.startswith(b"\x7fELF") or image.count(stock) != 1:
        return None
    return image.replace(stock, private)


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


def compiler_description(compiler):
    """'gcc (GCC) 12.2.0'-style first line of the compiler's --version, or its type."""
    if compiler.compiler_type == "msvc":
        return "msvc"
    try:
        exe = compiler.compiler_so[0]
        out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=30).stdout
        return out.splitlines()[0].strip() if out else exe
    except Exception:  # a description only: never fail the build over it
        return compiler.compiler_type


BUILD_INFO = '''"""How this copy of fastconv was built (generated by setup.py; not in git)."""
openmp = {openmp!r}
openmp_compile_args = {omp_compile!r}
openmp_link_args = {omp_link!r}
openmp_private = {omp_private!r}
compiler = {compiler!r}
compile_args = {compile_args!r}
cython = {cython!r}
numpy_build = {numpy!r}
platform = {platform!r}
'''


class BuildExt(build_ext):
    def run(self):
        super().run()
        if self.inplace:
            self.copy_file(str(Path(self.build_lib) / "fastconv" / "_build_info.py"),
                           str(Path("fastconv") / "_build_info.py"), level=self.verbose)

    def build_extensions(self):
        compile_args = optimisation_flags(self.compiler)
        link_args = []
        omp_compile, omp_link = openmp_flags(self.compiler)
        openmp = False
        omp_private = False
        if os.environ.get("FASTCONV_NO_OPENMP", "0") not in ("", "0"):
            print("fastconv: FASTCONV_NO_OPENMP set; building serial kernels")
        elif compiler_has_openmp(self.compiler, omp_compile, omp_link):
            compile_args += omp_compile
            openmp = True
            private = self.write_private_gomp()
            if private is not None:
                # Link the copy by path instead of -fopenmp's -lgomp: DT_NEEDED is then
                # its SONAME, found beside the kernels at run time.
                omp_link = [PRIVATE_GOMP, "-lpthread", "-Wl,-rpath,$ORIGIN"]
                omp_private = True
                link_args += [private] + omp_link[1:]
            else:
                link_args += omp_link
        else:
            warnings.warn(
                "fastconv: the compiler does not support OpenMP; building serial kernels "
                "(install libomp / use gcc to get parallel kernels)",
                stacklevel=2,
            )
        if openmp and sys.platform.startswith("linux"):
            # the runtime entry points the compiler's OpenMP code calls go through
            # openmp_runtime.h, which picks the runtime each region runs on
            compile_args += ["-DFC_WRAP_OPENMP"]
            link_args += ["-Wl," + ",".join("--wrap=" + name for name in WRAPPED_OPENMP)]
        san_compile, san_link = sanitizer_flags(self.compiler)
        if san_compile:
            compile_args = [f for f in compile_args if not f.startswith("-O")] + san_compile
            link_args += san_link
        for ext in self.extensions:
            suffix = "_" + ext.name.rsplit("_", 1)[-1]
            if suffix in ISA_FLAGS:
                ext.extra_compile_args = isa_flags(self.compiler, suffix) + ext.extra_compile_args
            ext.extra_compile_args = compile_args + ext.extra_compile_args
            ext.extra_link_args = link_args + ext.extra_link_args
        self.write_build_info(openmp, omp_compile if openmp else [], omp_link if openmp else [], compile_args,
                              omp_private)
        super().build_extensions()

    def write_private_gomp(self):
        """Write PRIVATE_GOMP into the built package (and in place); its path, or None."""
        image = private_gomp_image(self.compiler)
        if image is None:
            return None
        target = Path(self.build_lib) / str(KERNELS) / PRIVATE_GOMP
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(image)
        target.chmod(0o755)
        # Also in the source tree, where in-place and editable builds import from.
        (KERNELS / PRIVATE_GOMP).write_bytes(image)
        (KERNELS / PRIVATE_GOMP).chmod(0o755)
        self._private_outputs = [str(target)]
        return str(target.resolve())

    def get_outputs(self):
        return super().get_outputs() + getattr(self, "_private_outputs", [])

    def write_build_info(self, openmp, omp_compile, omp_link, compile_args, omp_private=False):
        """fastconv/_build_info.py beside the built package (in place or in build/lib),
        so that show_config() reports the build as it was, not as it is guessed at run time.
        (setuptools always builds into build/lib; `run` copies it back for --inplace.)"""
        import Cython

        package_dir = Path(self.build_lib) / "fastconv"
        package_dir.mkdir(parents=True, exist_ok=True)
        (package_dir / "_build_info.py").write_text(BUILD_INFO.format(
            openmp=openmp, omp_compile=omp_compile, omp_link=omp_link, omp_private=omp_private,
            compiler=compiler_description(self.compiler), compile_args=compile_args,
            cython=Cython.__version__, numpy=np.__version__,
            platform=f"{platform.system()} {platform.machine()} ({sysconfig.get_platform()})"))


def headers_of(source, seen=None):
    """The kernel headers `source` reaches: its `"x.h"` names and those of the files it
    `include`s, `#include`s or cimports, transitively (Cython tracks .pxd/.pyx itself,
    not these)."""
    seen = set() if seen is None else seen
    text = source.read_text()
    names = re.findall(r'(?:include|from)\s+"([\w.]+\.(?:h|pyx))"', text)
    names += [m + ".pxd" for m in re.findall(r'fastconv\._kernels(?:\.|\s+cimport\s+)(\w+)', text)]
    for name in names:
        path = KERNELS / name
        if path.exists() and path not in seen:
            seen.add(path)
            headers_of(path, seen)
    return seen


def kernel_extensions():
    return [
        Extension(
            f"fastconv._kernels.{pyx.stem}",
            [str(pyx)],
            include_dirs=[np.get_include()],
            define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_9_API_VERSION")],
            # rebuild when a header it reaches changes, and only then
            depends=sorted(str(h) for h in headers_of(pyx) if h.suffix == ".h"),
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
