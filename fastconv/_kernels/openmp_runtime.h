/* Which OpenMP runtime a kernel module's parallel regions run on.
 *
 * By default fastconv's own copy of libgomp (setup.py: PRIVATE_GOMP), whose idle
 * threads spin briefly; a region of one thread runs inline (fc_serial_openmp), and so
 * does every region in a forked child, and every region for FC_SERIAL_NS after two of
 * its team's regions in a row had a thread kept off its core (fc_openmp_own_region_ended).
 * FASTCONV_OPENMP_TEAM in the environment can send regions of two or more threads,
 * and the task pool's jobs (task_pool.h), to the team of another runtime loaded in
 * the process (torch's or scikit-learn's libgomp, an LLVM libomp), whose idle threads
 * spin for milliseconds after each of its own regions (libgomp: 300,000 spins, ~6 ms)
 * and hold a core that fastconv's threads would share:
 *   "hot"  while its threads are hot: in each of the last two gaps between fastconv's
 *          regions (of 0.1 ms or more), threads other than the caller used at least
 *          half a core beyond what fastconv's own threads may account for there (their
 *          idle spin, and up to a tick of the region's work that the process's CPU
 *          clock counts late). A region on that team that waited more than
 *          FC_STALL_NS and a quarter of its time for a member held off its core sends
 *          fastconv back to its own runtime for FC_BACKOFF_NS.
 *   "any"  whenever one is loaded (the tests' way to run every kernel there).
 *   "own"  never (the default).
 * Measured beside torch (bench --sections neighbours, C1/C2 forwards interleaved with
 * torch's on 2 vCPUs), neither rule beat fastconv's own runtime consistently: the
 * ratios moved with the load more than with the rule.
 *
 * How: setup.py links every kernel module with `-Wl,--wrap=SYMBOL` for the runtime
 * entry points that the compiler's OpenMP code calls (WRAPPED_OPENMP), so those calls
 * land here; each forwards to the runtime the enclosing region runs on (a thread-local
 * set by the region's body), or to fastconv's own (`__real_SYMBOL`) outside any region.
 * A region's runtime is chosen when it starts and never changes under a running team.
 * A forked child runs its regions inline if its parent's own runtime had run a team
 * (that runtime would wait for the parent's threads), and never joins another's.
 */
#ifndef FASTCONV_OPENMP_RUNTIME_H
#define FASTCONV_OPENMP_RUNTIME_H

#if defined(FC_WRAP_OPENMP) && defined(__linux__) && defined(_OPENMP)
#define FC_FOREIGN_OPENMP 1
#include <dlfcn.h>
#include <link.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct {
    void (*parallel)(void (*fn)(void *), void *data, unsigned num_threads, unsigned flags);
    void (*barrier)(void);
    bool (*loop_start)(long start, long end, long incr, long chunk, long *istart, long *iend);
    bool (*loop_next)(long *istart, long *iend);
    void (*loop_end_nowait)(void);
    int (*thread_num)(void);
    int (*num_threads)(void);
} fc_omp_runtime;

void __real_GOMP_parallel(void (*fn)(void *), void *data, unsigned num_threads, unsigned flags);
void __real_GOMP_barrier(void);
bool __real_GOMP_loop_nonmonotonic_dynamic_start(long, long, long, long, long *, long *);
bool __real_GOMP_loop_nonmonotonic_dynamic_next(long *, long *);
void __real_GOMP_loop_end_nowait(void);
int __real_omp_get_thread_num(void);
int __real_omp_get_num_threads(void);

static const fc_omp_runtime fc_own_openmp = {
    __real_GOMP_parallel, __real_GOMP_barrier, __real_GOMP_loop_nonmonotonic_dynamic_start,
    __real_GOMP_loop_nonmonotonic_dynamic_next, __real_GOMP_loop_end_nowait,
    __real_omp_get_thread_num, __real_omp_get_num_threads};

#define FC_OWN_SPIN_NS 250000        /* how long fastconv's idle threads spin, at most */
#define FC_MIN_GAP_NS 100000         /* a shorter gap keeps the last choice */
#define FC_TICK_NS 4000000          /* the scheduler's tick at 250 Hz */
#define FC_STALL_NS 150000
#define FC_BACKOFF_NS 100000000
#define FC_SERIAL_NS 20000000       /* torch's idle threads spin ~6 ms; OpenBLAS's ~0.1 s re-enter it */

/* A forked child has only the forking thread, but a runtime that ran a region in the
 * parent still counts the parent's team as its own and waits for it at the next region:
 * the child hangs. So there, regions run on the calling thread alone, as a team of one
 * (the task pool's jobs still run on its workers, restarted in the child). */
static void fc_serial_parallel(void (*fn)(void *), void *data, unsigned num_threads, unsigned flags) {
    (void)num_threads; (void)flags;
    fn(data);
}
static void fc_serial_barrier(void) {}
static bool fc_serial_loop_start(long start, long end, long incr, long chunk, long *istart, long *iend) {
    (void)chunk;
    *istart = start;
    *iend = end;
    return incr > 0 ? start < end : start > end;
}
static bool fc_serial_loop_next(long *istart, long *iend) { (void)istart; (void)iend; return false; }
static void fc_serial_loop_end_nowait(void) {}
static int fc_serial_thread_num(void) { return 0; }
static int fc_serial_num_threads(void) { return 1; }

/* ... also every region of one thread: the same, without a runtime's bookkeeping. */
static const fc_omp_runtime fc_serial_openmp = {
    fc_serial_parallel, fc_serial_barrier, fc_serial_loop_start, fc_serial_loop_next,
    fc_serial_loop_end_nowait, fc_serial_thread_num, fc_serial_num_threads};

/* The choice's state, one per process: each module starts on its own copy and adopts
 * the task pool's (_tasks.pyx) when it is imported (fc_openmp_adopt), so that the
 * gaps it measures are gaps between any of fastconv's regions. */
typedef struct {
    pthread_mutex_t lock;
    unsigned long long adds;          /* the loader's count of loaded objects when last looked */
    fc_omp_runtime foreign;
    int found;                        /* `foreign` is filled in */
    int any;                          /* FASTCONV_OPENMP_TEAM=any */
    int forked;                       /* a forked child of a parent whose own runtime ran a team */
    int own_teams;                    /* the own runtime has run a region of 2+ threads */
    int forked_child;                 /* never join another runtime's team: its pool was the parent's */
    int hot;                          /* the last choice: the foreign team */
    int busy_gaps;                    /* gaps in a row in which the others were busy, up to 2 */
    int last_threads;                 /* the last region's team size */
    uint64_t last_end, last_other;    /* when the last region ended; others' CPU time then */
    uint64_t last_region;             /* how long it took */
    uint64_t backoff_until;
    uint64_t serial_until;            /* own regions run on the caller alone until then */
    uint64_t pool_end;                /* when the task pool's last job ended (its idle threads spin) */
    int stalls;                       /* own regions in a row with a member long off its core */
    uint64_t foreign_regions;         /* regions (and pool jobs) run on the other team */
    uint64_t serial_regions;          /* regions run on the caller alone after a stall */
} fc_openmp_state;

static fc_openmp_state fc_openmp_own_state = {PTHREAD_MUTEX_INITIALIZER};
static fc_openmp_state *fc_openmp = &fc_openmp_own_state;

static void *fc_openmp_state_of_module(void) { return fc_openmp; }
static void fc_openmp_adopt(void *state) { if (state) fc_openmp = (fc_openmp_state *)state; }

static inline uint64_t fc_clock_ns(clockid_t clock) {
    struct timespec t;
    clock_gettime(clock, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

/* CPU time of the process's threads other than the calling one. */
static inline uint64_t fc_others_cpu_ns(void) {
    uint64_t self = fc_clock_ns(CLOCK_THREAD_CPUTIME_ID);
    return fc_clock_ns(CLOCK_PROCESS_CPUTIME_ID) - self;
}

/* The runtime of the region this thread is running, NULL outside any. */
static __thread const fc_omp_runtime *fc_region_openmp;
/* Whether that region is timed (fc_openmp_region_body), and the ns this thread has
 * spent off its core waiting at the region's barriers: a thread that only finished
 * first sleeps there, which is not being kept off its core while it had work. */
static __thread int fc_region_timed;
static __thread uint64_t fc_barrier_waited;

static int fc_loader_adds(struct dl_phdr_info *info, size_t size, void *adds) {
    (void)size;
    *(unsigned long long *)adds = info->dlpi_adds;
    return 1;                         /* the first object carries the count */
}

typedef struct {
    const char *own;                  /* the file of fastconv's runtime */
    char path[4096];
} fc_runtime_search;

static int fc_find_runtime(struct dl_phdr_info *info, size_t size, void *data) {
    (void)size;
    fc_runtime_search *s = (fc_runtime_search *)data;
    const char *name = strrchr(info->dlpi_name, '/');
    name = name ? name + 1 : info->dlpi_name;
    /* libgomp.so.1 (or an auditwheel copy, libgomp-1a2b3c4d.so.1), libomp.so, libiomp5.so;
     * not libomptarget or the like */
    if (strncmp(name, "libgomp.", 8) && strncmp(name, "libgomp-", 8) && strncmp(name, "libomp.", 7)
        && strncmp(name, "libiomp5.", 9))
        return 0;
    if (strcmp(info->dlpi_name, s->own) == 0 || strlen(info->dlpi_name) >= sizeof s->path) return 0;
    strcpy(s->path, info->dlpi_name);
    return 1;                         /* the first in load order */
}

static void fc_openmp_after_fork(void) {
    pthread_mutex_init(&fc_openmp->lock, NULL);      /* another thread may have held it */
    fc_openmp->forked = fc_openmp->own_teams;
    fc_openmp->found = 0;                             /* nor does another runtime's team */
    fc_openmp->adds = (unsigned long long)-1;         /* ... until it is looked for again */
    fc_openmp->forked_child = 1;
}

/* At load: a module whose first region comes after a fork is a child too. */
__attribute__((constructor)) static void fc_openmp_at_load(void) {
    pthread_atfork(NULL, NULL, fc_openmp_after_fork);
}

/* Look for another runtime (under the lock); fill fc_openmp->foreign if one has every
 * entry point. Keeps it loaded. */
static void fc_openmp_search(void) {
    Dl_info own;
    fc_openmp->found = 0;
    const char *team = getenv("FASTCONV_OPENMP_TEAM");
    fc_openmp->any = team && strcmp(team, "any") == 0;
    if (!team || (strcmp(team, "any") && strcmp(team, "hot")) || fc_openmp->forked_child
        || !dladdr((void *)__real_omp_get_thread_num, &own))
        return;
    fc_runtime_search s = {own.dli_fname, {0}};
    dl_iterate_phdr(fc_find_runtime, &s);
    void *lib = s.path[0] ? dlopen(s.path, RTLD_LAZY | RTLD_NOLOAD) : NULL;
    if (!lib) return;
    fc_omp_runtime *f = &fc_openmp->foreign;
    *(void **)&f->parallel = dlsym(lib, "GOMP_parallel");
    *(void **)&f->barrier = dlsym(lib, "GOMP_barrier");
    *(void **)&f->loop_start = dlsym(lib, "GOMP_loop_nonmonotonic_dynamic_start");
    *(void **)&f->loop_next = dlsym(lib, "GOMP_loop_nonmonotonic_dynamic_next");
    *(void **)&f->loop_end_nowait = dlsym(lib, "GOMP_loop_end_nowait");
    *(void **)&f->thread_num = dlsym(lib, "omp_get_thread_num");
    *(void **)&f->num_threads = dlsym(lib, "omp_get_num_threads");
    fc_openmp->found = f->parallel && f->barrier && f->loop_start && f->loop_next && f->loop_end_nowait
                      && f->thread_num && f->num_threads;
    if (!fc_openmp->found) dlclose(lib);
}

/* The runtime a region (or a task pool job) of `num_threads` starting now runs on. */
static const fc_omp_runtime *fc_openmp_runtime(int num_threads) {
    if (fc_region_openmp) return fc_region_openmp;      /* nested: the enclosing one's */
    if (fc_openmp->forked) return &fc_serial_openmp;
    unsigned long long adds = 0;
    dl_iterate_phdr(fc_loader_adds, &adds);
    pthread_mutex_lock(&fc_openmp->lock);
    if (adds != fc_openmp->adds) {
        fc_openmp->adds = adds;
        fc_openmp_search();
    }
    if (!fc_openmp->found || num_threads <= 1) {
        fc_openmp->hot = 0;
    } else {
        uint64_t now = fc_clock_ns(CLOCK_MONOTONIC), gap = now - fc_openmp->last_end;
        if (fc_openmp->any) {
            fc_openmp->hot = 1;
        } else if (now < fc_openmp->backoff_until) {
            fc_openmp->hot = 0;
        } else if (gap >= FC_MIN_GAP_NS) {
            uint64_t now_others = fc_others_cpu_ns();    /* the two clocks jitter by microseconds */
            uint64_t others = now_others > fc_openmp->last_other ? now_others - fc_openmp->last_other : 0;
            /* After a region of its own, each of fastconv's idle threads (its runtime's
             * and the task pool's) may spin for a while; and the process's clock counts
             * a thread that is running on another core only up to its last tick, so up
             * to a tick of the region's work can show up in the gap. */
            uint64_t idle = fc_openmp->last_threads > 1 ? (uint64_t)(fc_openmp->last_threads - 1) : 0;
            uint64_t late = fc_openmp->last_region < FC_TICK_NS ? fc_openmp->last_region : FC_TICK_NS;
            uint64_t own_spin = fc_openmp->hot ? 0
                                : idle * (2 * (gap < FC_OWN_SPIN_NS ? gap : FC_OWN_SPIN_NS) + late);
            int busy = others > own_spin && 2 * (others - own_spin) >= gap;
            fc_openmp->busy_gaps = busy ? fc_openmp->busy_gaps + (fc_openmp->busy_gaps < 2) : 0;
            fc_openmp->hot = fc_openmp->busy_gaps >= 2;
        }
    }
    const fc_omp_runtime *rt = fc_openmp->hot ? &fc_openmp->foreign : &fc_own_openmp;
    pthread_mutex_unlock(&fc_openmp->lock);
    return rt;
}

/* The runtime a region of `num_threads` starting now runs on: fc_openmp_runtime's
 * choice, except that fastconv's own team gives way to the caller alone for
 * FC_SERIAL_NS after two of its regions in a row stalled (fc_openmp_own_region_ended). */
static const fc_omp_runtime *fc_openmp_region_runtime(int num_threads) {
    const fc_omp_runtime *rt = fc_openmp_runtime(num_threads);
    if (rt == &fc_own_openmp
        && fc_clock_ns(CLOCK_MONOTONIC) < __atomic_load_n(&fc_openmp->serial_until, __ATOMIC_RELAXED)) {
        pthread_mutex_lock(&fc_openmp->lock);
        fc_openmp->serial_regions++;
        pthread_mutex_unlock(&fc_openmp->lock);
        return &fc_serial_openmp;
    }
    return rt;
}

/* After a region of fastconv's own team of `num_threads` that took `total` ns, ending at
 * `now`, with a thread at most `off_core` off its core while it had work (preempted in
 * the body, not while waiting at a barrier; a member: or not yet begun). Two such
 * regions in a row with a thread off its core that long (not ones that only had more
 * work) send the next regions to the caller alone for FC_SERIAL_NS (not regions that
 * start while the task pool's threads may still spin after a job): another thread
 * holds the core the member needs (another runtime's idle threads spin for
 * milliseconds after their calls, OpenBLAS's up to 0.1 s after a threaded GEMM;
 * another process may run there), and a region's closing barrier waits for the member
 * until the scheduler gives it a core. One such region alone is as likely a member
 * waking on an idle core. */
static void fc_openmp_own_region_ended(int num_threads, uint64_t total, uint64_t off_core, uint64_t now) {
    if (num_threads < 2) return;
    pthread_mutex_lock(&fc_openmp->lock);
    fc_openmp->own_teams = 1;     /* a forked child must not wait for this team */
    /* not within the pool's idle spin after its last job: those are fastconv's own
     * threads holding the cores for a moment (a training step's convolutions between
     * its batch norms), not something to give way to */
    uint64_t pool_end = __atomic_load_n(&fc_openmp->pool_end, __ATOMIC_RELAXED);
    int own_spin = now - total < pool_end + FC_OWN_SPIN_NS;
    int stalled = !own_spin && off_core > FC_STALL_NS && 4 * off_core > total;
    fc_openmp->stalls = stalled ? fc_openmp->stalls + 1 : 0;
    if (fc_openmp->stalls >= 2) {
        __atomic_store_n(&fc_openmp->serial_until, now + FC_SERIAL_NS, __ATOMIC_RELAXED);
        fc_openmp->stalls = 0;
    }
    pthread_mutex_unlock(&fc_openmp->lock);
}

/* After a region or pool job of `num_threads` on `rt` that took `total` ns, ending at
 * `now`, of which the caller spent `own_work` in its body: note when it ended, for the
 * choice of another runtime's team, and back off from such a team that kept the
 * caller waiting. */
static void fc_openmp_ended(const fc_omp_runtime *rt, int num_threads, uint64_t total, uint64_t own_work,
                            uint64_t now) {
    if (fc_region_openmp || !fc_openmp->found) return;     /* nested in a region; no other runtime */
    uint64_t wait = total > own_work ? total - own_work : 0, others = fc_others_cpu_ns();
    pthread_mutex_lock(&fc_openmp->lock);
    fc_openmp->last_end = now;
    fc_openmp->last_other = others;
    fc_openmp->last_threads = num_threads;
    fc_openmp->last_region = total;
    fc_openmp->foreign_regions += rt == &fc_openmp->foreign;
    if (rt == &fc_openmp->foreign && wait > FC_STALL_NS && 4 * wait > total) {
        fc_openmp->backoff_until = now + FC_BACKOFF_NS;
        fc_openmp->hot = 0;
    }
    pthread_mutex_unlock(&fc_openmp->lock);
}

typedef struct {
    void (*fn)(void *);
    void *data;
    const fc_omp_runtime *runtime;
    pthread_t caller;
    int timed;                        /* measure the caller's time in the body, the members' starts */
    uint64_t start;                   /* when the caller started the region */
    uint64_t caller_work;             /* ns the caller spent in the body */
    uint64_t off_core;                /* the most ns a thread spent off its core while it had work */
} fc_openmp_region;

static void fc_openmp_region_body(void *data) {
    fc_openmp_region *r = (fc_openmp_region *)data;
    const fc_omp_runtime *outer = fc_region_openmp;
    int caller = r->timed && pthread_equal(pthread_self(), r->caller);
    uint64_t start = r->timed ? fc_clock_ns(CLOCK_MONOTONIC) : 0;
    uint64_t cpu = r->timed ? fc_clock_ns(CLOCK_THREAD_CPUTIME_ID) : 0;
    int outer_timed = fc_region_timed;
    uint64_t outer_waited = fc_barrier_waited;
    fc_region_openmp = r->runtime;
    fc_region_timed = r->timed;
    fc_barrier_waited = 0;
    r->fn(r->data);
    uint64_t waited = fc_barrier_waited;
    fc_region_openmp = outer;
    fc_region_timed = outer_timed;
    fc_barrier_waited = outer_waited;
    if (r->timed) {   /* off its core while it had work, or before it began */
        uint64_t end = fc_clock_ns(CLOCK_MONOTONIC), ran = fc_clock_ns(CLOCK_THREAD_CPUTIME_ID) - cpu;
        uint64_t wall = end - r->start;    /* the caller too: a member it woke may run first */
        uint64_t off = wall > ran ? wall - ran : 0, seen = __atomic_load_n(&r->off_core, __ATOMIC_RELAXED);
        off = off > waited ? off - waited : 0;
        if (caller) r->caller_work = end - start;
        while (off > seen && !__atomic_compare_exchange_n(&r->off_core, &seen, off, 1, __ATOMIC_RELAXED,
                                                          __ATOMIC_RELAXED)) {
        }
    }
}

/* Run fn(data) on a team of `num_threads` of `rt` (GOMP_parallel's contract). */
static void fc_openmp_parallel(const fc_omp_runtime *rt, void (*fn)(void *), void *data, unsigned num_threads,
                               unsigned flags) {
    /* timed where a team may keep the caller waiting: its own (a stall), another runtime's */
    int timed = rt != &fc_serial_openmp;
    uint64_t start = timed ? fc_clock_ns(CLOCK_MONOTONIC) : 0;
    fc_openmp_region r = {fn, data, rt, pthread_self(), timed, start, 0, 0};
    rt->parallel(fc_openmp_region_body, &r, num_threads, flags);
    if (timed) {
        uint64_t now = fc_clock_ns(CLOCK_MONOTONIC);
        if (rt == &fc_own_openmp && !fc_region_openmp)     /* not a region nested in another */
            fc_openmp_own_region_ended((int)num_threads, now - start, __atomic_load_n(&r.off_core, __ATOMIC_RELAXED),
                                       now);
        fc_openmp_ended(rt, (int)num_threads, now - start, r.caller_work, now);
    }
}

#define FC_HIDDEN __attribute__((visibility("hidden")))

FC_HIDDEN void __wrap_GOMP_parallel(void (*fn)(void *), void *data, unsigned num_threads, unsigned flags) {
    if (num_threads == 1 && !fc_region_openmp) {
        /* one thread: no team to choose or wait for (small work, a few microseconds) */
        fc_region_openmp = &fc_serial_openmp;
        fn(data);
        fc_region_openmp = NULL;
        return;
    }
    /* num_threads 0 (no clause) is the runtime's default: a team, for the choice */
    fc_openmp_parallel(fc_openmp_region_runtime(num_threads ? (int)num_threads : 2), fn, data, num_threads, flags);
}

#define FC_IN_REGION (fc_region_openmp ? fc_region_openmp : &fc_own_openmp)
FC_HIDDEN void __wrap_GOMP_barrier(void) {
    if (!fc_region_timed) {
        FC_IN_REGION->barrier();
        return;
    }
    uint64_t wall = fc_clock_ns(CLOCK_MONOTONIC), cpu = fc_clock_ns(CLOCK_THREAD_CPUTIME_ID);
    FC_IN_REGION->barrier();
    wall = fc_clock_ns(CLOCK_MONOTONIC) - wall;
    cpu = fc_clock_ns(CLOCK_THREAD_CPUTIME_ID) - cpu;
    fc_barrier_waited += wall > cpu ? wall - cpu : 0;
}
FC_HIDDEN bool __wrap_GOMP_loop_nonmonotonic_dynamic_start(long start, long end, long incr, long chunk,
                                                           long *istart, long *iend) {
    return FC_IN_REGION->loop_start(start, end, incr, chunk, istart, iend);
}
FC_HIDDEN bool __wrap_GOMP_loop_nonmonotonic_dynamic_next(long *istart, long *iend) {
    return FC_IN_REGION->loop_next(istart, iend);
}
FC_HIDDEN void __wrap_GOMP_loop_end_nowait(void) { FC_IN_REGION->loop_end_nowait(); }
FC_HIDDEN int __wrap_omp_get_thread_num(void) { return FC_IN_REGION->thread_num(); }
FC_HIDDEN int __wrap_omp_get_num_threads(void) { return FC_IN_REGION->num_threads(); }
#undef FC_IN_REGION

/* Whether another runtime is loaded that regions may run on (tests). */
static int fc_openmp_foreign(void) {
    fc_openmp_runtime(1);
    pthread_mutex_lock(&fc_openmp->lock);
    int found = fc_openmp->found;
    pthread_mutex_unlock(&fc_openmp->lock);
    return found;
}

/* Tests: fc_openmp_own_region_ended's account of a region of fastconv's own team of
 * `num_threads` that took `total` ns with a thread `off_core` ns off its core. */
static void fc_openmp_note_region(int num_threads, uint64_t total, uint64_t off_core) {
    fc_openmp_own_region_ended(num_threads, total, off_core, fc_clock_ns(CLOCK_MONOTONIC));
}

/* How many regions ran on the caller alone after a stall of fastconv's own team. */
static uint64_t fc_openmp_serial_regions(void) {
    pthread_mutex_lock(&fc_openmp->lock);
    uint64_t n = fc_openmp->serial_regions;
    pthread_mutex_unlock(&fc_openmp->lock);
    return n;
}

/* How many of this module's regions (and pool jobs) ran on another runtime's team. */
static uint64_t fc_openmp_foreign_regions(void) {
    pthread_mutex_lock(&fc_openmp->lock);
    uint64_t n = fc_openmp->foreign_regions;
    pthread_mutex_unlock(&fc_openmp->lock);
    return n;
}

#else
#define FC_FOREIGN_OPENMP 0
static int fc_openmp_foreign(void) { return 0; }
static unsigned long long fc_openmp_foreign_regions(void) { return 0; }
static unsigned long long fc_openmp_serial_regions(void) { return 0; }
static void fc_openmp_note_region(int num_threads, uint64_t total, uint64_t off_core) {
    (void)num_threads; (void)total; (void)off_core;
}
static void *fc_openmp_state_of_module(void) { return NULL; }
static void fc_openmp_adopt(void *state) { (void)state; }
#endif

#endif
