"""show_config(): what this build of fastconv is running with."""
import platform
import sys

import numpy as np

from fastconv import __version__, _direct
from fastconv._kernels import _openmp
from fastconv._threads import blas, get_num_threads


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
        "blas": blas.info(),
        "direct_kernels": "AVX+FMA" if _direct.kernel.compiled_for_avx_fma() else "baseline",
    }


def show_config():
    """Print fastconv's version, OpenMP status, thread count and the BLAS in use."""
    c = config()
    print(f"fastconv {c['fastconv']}  (python {c['python']}, numpy {c['numpy']}, {c['platform']})")
    print(f"  OpenMP:      {'enabled' if c['openmp'] else 'disabled (serial kernels)'}")
    print(f"  threads:     {c['num_threads']} of {c['num_procs']} processors")
    print(f"  direct conv: {c['direct_kernels']} build")
    for lib in c["blas"] or [{"library": "none found"}]:
        details = ", ".join(f"{k} {lib[k]}" for k in ("version", "threading", "num_threads") if lib.get(k))
        print(f"  BLAS:        {lib['library']} ({details})")
