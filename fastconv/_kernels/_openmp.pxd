# The one place that touches OpenMP (the scikit-learn pattern): omp.h is
# included only when the compiler enabled OpenMP; otherwise these names are
# single-thread fallbacks, so every kernel still builds and runs serially.
cdef extern from *:
    """
    #ifdef _OPENMP
        #include <omp.h>
        #define FASTCONV_OPENMP 1
    #else
        #define FASTCONV_OPENMP 0
        static int omp_get_max_threads(void) { return 1; }
        static int omp_get_num_procs(void) { return 1; }
        static int omp_get_thread_num(void) { return 0; }
    #endif
    #include "openmp_runtime.h"
    """
    bint FASTCONV_OPENMP
    int omp_get_max_threads() noexcept nogil
    int omp_get_num_procs() noexcept nogil
    int omp_get_thread_num() noexcept nogil
    void fc_openmp_adopt(void* state) noexcept nogil
