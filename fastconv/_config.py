"""show_config(): what this build of fastconv is running with."""
import platform
import sys

import numpy as np

from fastconv import __version__
from fastconv._kernels import ISA_NAMES, _openmp, widest_build
from fastconv._threads import blas, get_num_threads


def build_info():
    """How the extensions were compiled: written by setup.py into fastconv/_build_info.py.

    The OpenMP flag itself comes from the compiled extension (``_OPENMP`` was
    defined or not), so it is right even if the generated module is missing.
    """
    try:
        from fastconv import _build_info as b
    except ImportError:  # built by something other than setup.py's build_ext
        b = None
    get = lambda name, default=None: getattr(b, name, default)  # noqa: E731
    return {
        "openmp": _openmp.openmp_enabled(),
        "openmp_compile_args": get("openmp_compile_args", []),
        "openmp_link_args": get("openmp_link_args", []),
        "compiler": get("compiler", "unknown"),
        "compile_args": get("compile_args", []),
        "cython": get("cython", "unknown"),
        "numpy": get("numpy_build", "unknown"),
        "platform": get("platform", "unknown"),
    }


def kernel_blas_build():
    """The BLAS SciPy was built against, which the kernels' GEMMs call (through
    scipy.linalg.cython_blas): name and version."""
    try:
        import scipy

        dep = scipy.show_config(mode="dicts")["Build Dependencies"]["blas"]
        return {"name": dep.get("name"), "version": dep.get("version")}
    except (AttributeError, KeyError, TypeError, ValueError):  # an older SciPy: no such dicts
        return {"name": "unknown", "version": None}


def openmp_runtime():
    """The OpenMP runtime libraries loaded in this process (libgomp, libomp, vcomp)."""
    from threadpoolctl import ThreadpoolController

    return [{"library": c.prefix, "version": c.version, "path": c.filepath}
            for c in ThreadpoolController().select(user_api="openmp").lib_controllers]


def config():
    """The build and runtime configuration as a dict (what `show_config` prints)."""
    return {
        "fastconv": __version__,
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "platform": f"{platform.system()} {platform.machine()}",
        "openmp": _openmp.openmp_enabled(),
        "num_threads": get_num_threads(),
        "num_procs": _openmp.num_procs(),
        "build": build_info(),
        "blas_build": kernel_blas_build(),
        "openmp_runtime": openmp_runtime(),
        "blas": blas.info(),
        "direct_kernels": ISA_NAMES[widest_build("conv_direct").compiled_isa()],
    }


def show_config():
    """Print fastconv's version, how it was built (compiler, OpenMP flags, the BLAS
    SciPy was built with, which the kernels call), and what it runs with (threads,
    OpenMP and BLAS libraries)."""
    c = config()
    b = c["build"]
    print(f"fastconv {c['fastconv']}  (python {c['python']}, numpy {c['numpy']}, {c['platform']})")
    print(f"  built with:  {b['compiler']}; Cython {b['cython']}; numpy {b['numpy']}; {b['platform']}")
    print(f"  flags:       {' '.join(b['compile_args']) or '-'}")
    if c["openmp"]:
        flags = (f"compile {' '.join(b['openmp_compile_args']) or '-'}, link {' '.join(b['openmp_link_args']) or '-'}"
                 if b["openmp_compile_args"] else "flags unknown")
        runtime = ", ".join(f"{lib['library']}" + (f" {lib['version']}" if lib["version"] else "")
                            for lib in c["openmp_runtime"]) or "not found"
        print(f"  OpenMP:      enabled (built with {flags}; runtime {runtime})")
    else:
        print("  OpenMP:      disabled (serial kernels)")
    print(f"  threads:     {c['num_threads']} of {c['num_procs']} processors")
    print(f"  direct conv: {c['direct_kernels']} build")
    bb = c["blas_build"]
    print(f"  BLAS built:  {bb['name']} {bb['version'] or ''} (SciPy's, which runs fastconv's GEMMs)")
    for lib in c["blas"] or [{"library": "none found"}]:
        details = ", ".join(f"{k} {lib[k]}" for k in ("version", "threading", "num_threads") if lib.get(k))
        print(f"  BLAS:        {lib['library']} ({details})")
