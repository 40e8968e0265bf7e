# The process-wide task pool (task_pool.h), shared by every kernel module through
# this module's C API: `run_tasks(fn, ctx, n_tasks, chunk, num_threads)` calls
# fn(ctx, task, slot) once per task; slot < num_threads indexes per-thread scratch.
ctypedef void (*task_fn)(void* ctx, Py_ssize_t task, int slot) noexcept nogil

cdef void run_tasks(task_fn fn, void* ctx, Py_ssize_t n_tasks, Py_ssize_t chunk, int num_threads) noexcept nogil

# The state of openmp_runtime.h's choice of runtime, one per process: every module
# with OpenMP regions adopts it at import (`fc_openmp_adopt(openmp_state())`).
cdef void* openmp_state() noexcept nogil
