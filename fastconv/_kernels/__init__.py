"""Private compiled kernels. Typed memoryviews in, preallocated output, no checking."""
import contextlib
import importlib
import os

#: The idle wait of fastconv's own OpenMP runtime (see fastconv/_threads.py): an idle
#: thread spins this many times (about 0.2 ms at the ~20 ns a spin takes on current
#: x86 cores: long enough to bridge the gaps between one op and the next) and then
#: sleeps, instead of libgomp's default 300,000 (about 6 ms), so it leaves the cores
#: to the rest of the process and machine between calls. libgomp reads it once, when
#: it loads.
OPENMP_ENV = {"GOMP_SPINCOUNT": "10000"}

#: The variables by which a user chooses a wait policy: when any is set, it is the
#: user's choice and fastconv sets nothing.
USER_WAIT_VARIABLES = ("OMP_WAIT_POLICY", "OMP_WAIT_POLICY_ALL", "OMP_WAIT_POLICY_DEV", "GOMP_SPINCOUNT",
                       "KMP_BLOCKTIME")


def private_runtime():
    """True when the kernels link fastconv's own copy of the OpenMP runtime (setup.py)."""
    try:
        from fastconv import _build_info
    except ImportError:  # pragma: no cover - a build without the generated module
        return False
    return bool(getattr(_build_info, "openmp_private", False))


@contextlib.contextmanager
def own_runtime_environment():
    """OPENMP_ENV in os.environ while fastconv's private runtime loads, then removed.

    Only for the private copy, which nothing else in the process loads: a runtime
    shared with other libraries (a build without the copy) is left to its defaults,
    and torch's or scikit-learn's runtimes, loaded before or after, never see it.
    """
    set_here = {}
    if private_runtime() and not any(name in os.environ for name in USER_WAIT_VARIABLES):
        set_here = dict(OPENMP_ENV)
        os.environ.update(set_here)
    try:
        yield set_here
    finally:
        for name, value in set_here.items():
            if os.environ.get(name) == value:
                del os.environ[name]


def bind_to_own_runtime():
    """Load every kernel module with RTLD_DEEPBIND before Python imports it, so that its
    OpenMP calls bind to the private runtime it links. Without it the loader looks in
    the global scope first, and torch puts its libgomp there (RTLD_GLOBAL): kernels
    imported after torch would run on torch's runtime (and its default wait), or, worse,
    some on each. Python's own import then finds the module already loaded."""
    import ctypes
    import glob
    import importlib.machinery

    here = os.path.dirname(os.path.abspath(__file__))
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        for path in sorted(glob.glob(os.path.join(here, "*" + suffix))):
            ctypes.CDLL(path, mode=os.RTLD_NOW | os.RTLD_LOCAL | os.RTLD_DEEPBIND)


@contextlib.contextmanager
def affinity_kept():
    """The calling thread's CPU affinity as it was before the block. libgomp binds the
    thread that loads it to its first place when the user's environment asks for
    binding (``OMP_PROC_BIND``, ``OMP_PLACES``): loading fastconv's private runtime
    would move the importing thread (the main one) onto one CPU, and every thread
    started from it later (the task pool's workers, torch's, the user's own) with it.
    That binding is meant for the runtime's own teams, which it still gets."""
    if not (private_runtime() and hasattr(os, "sched_getaffinity")):
        yield
        return
    cpus = os.sched_getaffinity(0)
    try:
        yield
    finally:
        if os.sched_getaffinity(0) != cpus:
            os.sched_setaffinity(0, cpus)


try:
    with own_runtime_environment(), affinity_kept():
        if private_runtime() and hasattr(os, "RTLD_DEEPBIND"):
            bind_to_own_runtime()
        from fastconv._kernels import _openmp  # noqa: F401  (the first compiled module imported)
except ImportError as e:  # pragma: no cover - depends on how the package was installed
    raise ImportError(
        f"fastconv's compiled kernels are missing from {os.path.dirname(__file__)}. This is a source "
        f"checkout without built extensions (a `pip install .` elsewhere is shadowed when Python runs "
        f"from the checkout's root): run `pip install -e .` here, or run from another directory."
    ) from e


#: Instruction-set levels, as the per-ISA kernels' compiled_isa() and cpu_isa() number them (isa.h).
ISA_NAMES = ("baseline", "AVX+FMA", "AVX-512")

#: The kernels compiled once per instruction set from one source (setup.py's ISA_FLAGS):
#: their module names by level, the portable baseline first.
ISA_BUILDS = {
    "conv_direct": ("conv_direct", "conv_direct_avx", "conv_direct_avx512"),
    "conv_winograd": ("conv_winograd", "conv_winograd_avx", "conv_winograd_avx512"),
    "batch_norm": ("batch_norm", "batch_norm_avx", "batch_norm_avx512"),
    "adaptive_pool": ("adaptive_pool", "adaptive_pool_avx"),
}


def runnable_builds(kernel):
    """The builds of `kernel` (a key of ISA_BUILDS) this CPU runs, narrowest first: the
    portable baseline, then each build that was compiled for its level (setup.py
    skips the flags a compiler lacks) and that the CPU and OS support."""
    names = ISA_BUILDS[kernel]
    baseline = importlib.import_module(f"{__name__}.{names[0]}")
    modules = [baseline]
    for level in range(1, min(baseline.cpu_isa(), len(names) - 1) + 1):
        try:
            module = importlib.import_module(f"{__name__}.{names[level]}")
        except ImportError:
            continue
        if module.compiled_isa() == level:
            modules.append(module)
    return modules


def widest_build(kernel):
    """The build of `kernel` to run: the widest this CPU runs (wider vectors, more FMAs
    per load; docs/design.rst, "CPU dispatch")."""
    return runnable_builds(kernel)[-1]
