# cython: language_level=3, boundscheck=False, wraparound=False
"""The task pool behind the kernels' parallel loops (task_pool.h): the caller runs
tasks from the start, workers join when they get a core, and nobody waits for a
thread that has not started. One pool per process; kernel modules cimport
`run_tasks` from here."""
from libc.stdint cimport int64_t, uint64_t

import numpy as np

cdef extern from "task_pool.h" nogil:
    ctypedef void (*fc_task_fn)(void* ctx, Py_ssize_t task, int slot) noexcept nogil
    void fc_run_tasks(fc_task_fn fn, void* ctx, Py_ssize_t n_tasks, Py_ssize_t chunk, int num_threads)
    int FC_POOL_THREADS

cdef extern from *:
    """
    #if FC_POOL_THREADS
    static void fc_pool_set_generation(uint64_t g) { fc_pool.generation = g; }
    #else
    static void fc_pool_set_generation(uint64_t g) { (void)g; }
    #endif
    """
    void fc_pool_set_generation(uint64_t g) nogil
    int fc_openmp_foreign() nogil
    unsigned long long fc_openmp_foreign_regions() nogil
    unsigned long long fc_openmp_serial_regions() nogil
    void fc_openmp_note_region(int num_threads, uint64_t total, uint64_t off_core) nogil
    void* fc_openmp_state_of_module() nogil

cdef extern from *:
    """
    #ifdef _MSC_VER
    #include <intrin.h>
    static int fc_exchange_int(int *p, int v) { return (int)_InterlockedExchange((long *)p, v); }
    static void fc_store_int(int *p, int v) { _InterlockedExchange((long *)p, v); }
    static void fc_increment_int(int *p) { _InterlockedIncrement((long *)p); }
    #else
    static int fc_exchange_int(int *p, int v) { return __atomic_exchange_n(p, v, __ATOMIC_ACQ_REL); }
    static void fc_store_int(int *p, int v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }
    static void fc_increment_int(int *p) { __atomic_fetch_add(p, 1, __ATOMIC_ACQ_REL); }
    #endif
    """
    int fc_exchange_int(int* p, int v) noexcept nogil
    void fc_store_int(int* p, int v) noexcept nogil
    void fc_increment_int(int* p) noexcept nogil


cdef void run_tasks(task_fn fn, void* ctx, Py_ssize_t n_tasks, Py_ssize_t chunk, int num_threads) noexcept nogil:
    fc_run_tasks(<fc_task_fn>fn, ctx, n_tasks, chunk, num_threads)


def set_generation(uint64_t generation):
    """Tests only: number the pool's next job generation + 1 (to run it across the
    wrap of the claim and join words' generation fields). Call it with no job running."""
    fc_pool_set_generation(generation)


def foreign_runtime():
    """True when the kernels' parallel regions and the pool's jobs run on another OpenMP
    runtime's team (openmp_runtime.h): the process has loaded one (torch's or
    scikit-learn's libgomp, an LLVM libomp) and FASTCONV_OPENMP_TEAM is not "own"."""
    return bool(fc_openmp_foreign())


def foreign_regions():
    """How many of the kernels' OpenMP regions and the pool's jobs ran on another
    runtime's team (tests)."""
    return fc_openmp_foreign_regions()


def serial_regions():
    """How many of the kernels' OpenMP regions ran on the calling thread alone because one
    of fastconv's own teams had kept its caller waiting for a member held off its core
    (openmp_runtime.h; tests)."""
    return fc_openmp_serial_regions()


def note_region(int num_threads, uint64_t total_ns, uint64_t off_core_ns):
    """Tests: account for a region of fastconv's own team of `num_threads` that took
    `total_ns` with a thread `off_core_ns` off its core, as the runtime does after each."""
    fc_openmp_note_region(num_threads, total_ns, off_core_ns)


cdef void* openmp_state() noexcept nogil:
    return fc_openmp_state_of_module()


def pool_threads():
    """True when the pool runs its own worker threads (pthreads + OpenMP build); False
    where it falls back to an OpenMP loop (Windows) or runs serially (no OpenMP)."""
    return bool(FC_POOL_THREADS)


# ---------------------------------------------------------------------------
# A probe for the tests: which task ran, on which slot, and whether two calls ever
# shared a slot at once.

cdef struct Probe:
    int* calls          # per task: how many times it ran
    int* slots          # per task: the slot it ran on
    int* busy           # per slot: 1 while a task runs on it
    int* clashes        # count of tasks that found their slot busy
    int num_threads
    int64_t spin        # busy-wait iterations per task


cdef void _probe_task(void* ctx, Py_ssize_t task, int slot) noexcept nogil:
    cdef Probe* p = <Probe*>ctx
    cdef int64_t i
    cdef volatile double sink = 0
    if slot < 0 or slot >= p.num_threads or fc_exchange_int(&p.busy[slot], 1):
        fc_increment_int(p.clashes)
        return
    p.calls[task] += 1
    p.slots[task] = slot
    for i in range(p.spin):
        sink = sink + 1.0
    fc_store_int(&p.busy[slot], 0)


def probe(int[::1] calls, int[::1] slots, Py_ssize_t chunk, int num_threads, int64_t spin=0):
    """Run len(calls) probe tasks; returns how many found their slot in use (always 0)."""
    busy_arr = np.zeros(max(num_threads, 1), dtype=np.intc)
    clash_arr = np.zeros(1, dtype=np.intc)
    cdef int[::1] b = busy_arr, c = clash_arr
    cdef Probe p
    if slots.shape[0] != calls.shape[0]:
        raise ValueError("calls and slots must have the same length")
    p.calls = &calls[0] if calls.shape[0] else NULL
    p.slots = &slots[0] if slots.shape[0] else NULL
    p.busy = &b[0]
    p.clashes = &c[0]
    p.num_threads = num_threads
    p.spin = spin
    with nogil:
        fc_run_tasks(_probe_task, &p, calls.shape[0], chunk, num_threads)
    return int(clash_arr[0])
