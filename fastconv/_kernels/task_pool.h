/* A parallel for-loop whose caller never waits for a thread that has not started.
 *
 * An OpenMP parallel region ends at a barrier that every member of the team must
 * reach, so a region is never shorter than the time its slowest member takes to be
 * woken and scheduled. On a busy machine, or a virtual machine whose idle vCPU the
 * host has descheduled, or beside another runtime's spinning threads, that wake-up
 * takes milliseconds: a 0.7 ms convolution took 2-15 ms at 2 threads, slower than
 * on one. Here the caller runs tasks itself from the first moment, workers join when
 * they get a core, and the caller waits only for tasks that a worker has claimed and
 * is running: a worker that arrives late finds nothing left and goes back to sleep.
 * The worst case is the caller's own one-thread speed, plus one chunk that a worker
 * claimed and was then held off its core with.
 *
 * fc_run_tasks(fn, ctx, n_tasks, chunk, num_threads) calls fn(ctx, task, slot) once
 * for every task in [0, n_tasks), `chunk` consecutive tasks per claim; `slot` in
 * [0, num_threads) is unique among the calls running at one time (slot 0 is the
 * caller), so it indexes per-thread scratch. One process-wide pool of workers, grown
 * on demand; a caller that finds it in use (another thread's call, or a task that
 * calls again) runs its tasks alone. Idle workers spin, then sleep: FC_SPIN_NS while
 * jobs follow each other closely, FC_SPIN_SHORT_NS when the last two gaps between jobs
 * were longer than that (a spin that would not have caught them only takes a core from
 * the code that runs in between, e.g. another library's ops interleaved with
 * fastconv's; one long gap is the idle before a burst of calls).
 *
 * With FASTCONV_OPENMP_TEAM=hot/any, jobs may run on another loaded OpenMP runtime's
 * team instead (openmp_runtime.h); such a job ends at that runtime's closing barrier.
 *
 * Without pthreads (Windows) it is an OpenMP dynamic loop; without OpenMP, serial.
 */
#ifndef FASTCONV_TASK_POOL_H
#define FASTCONV_TASK_POOL_H

#include <stddef.h>
#include <stdint.h>
#include "openmp_runtime.h"

typedef void (*fc_task_fn)(void *ctx, Py_ssize_t task, int slot);

#if defined(_OPENMP) && !defined(_WIN32)
#define FC_POOL_THREADS 1
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <time.h>
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define fc_relax() _mm_pause()
#else
#define fc_relax() ((void)0)
#endif

/* How long an idle worker (and a caller waiting for a claimed task) spins before
 * it sleeps (yields): long enough to bridge the gap between one op and the next,
 * short enough to leave the core to the rest of the machine (as libgomp's 10,000
 * spins that fastconv sets for its own OpenMP runtime). */
#define FC_SPIN_NS 200000
#define FC_SPIN_SHORT_NS 20000
#define FC_MAX_WORKERS 1023
/* The claim and join words hold the job's generation above these bits. */
#define FC_TASK_BITS 40
#define FC_SLOT_BITS 32
/* ... and so only the generation's low bits: compare generations through these masks */
#define FC_CLAIM_GEN(gen) ((gen) & (((uint64_t)1 << (64 - FC_TASK_BITS)) - 1))
#define FC_JOIN_GEN(gen) ((gen) & (((uint64_t)1 << (64 - FC_SLOT_BITS)) - 1))

static struct {
    pthread_mutex_t owner;            /* held by the caller whose job the pool runs */
    pthread_mutex_t lock;             /* guards sleeping workers and pool growth */
    pthread_cond_t wake;
    int workers;                      /* started */
    atomic_int sleeping;
    atomic_uint_fast64_t claim;       /* generation << FC_TASK_BITS | next task */
    atomic_uint_fast64_t joined;      /* generation << FC_SLOT_BITS | slots taken */
    atomic_int_fast64_t done;         /* tasks finished in the current job */
    /* The job: written by its caller between seq = 2 gen - 1 and seq = 2 gen (a seqlock),
     * so that a worker still reading the last job's fields can tell. */
    atomic_uint_fast64_t seq;
    _Atomic(fc_task_fn) fn;
    _Atomic(void *) ctx;
    atomic_int_fast64_t n_tasks, chunk;
    atomic_int max_slots;
    atomic_uint_fast64_t spin_ns;     /* how long idle workers spin after this job */
    uint64_t generation;              /* the caller's (under `owner`) */
    uint64_t last_end;                /* when the last job ended (under `owner`) */
    int long_gaps;                    /* how many gaps in a row were over FC_SPIN_NS (same) */
} fc_pool = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER};

typedef struct {
    fc_task_fn fn;
    void *ctx;
    int64_t n_tasks, chunk;
    int max_slots;
} fc_job;

/* The fields of the job whose claim word holds generation `cgen`, and its full generation,
 * or 0 if the pool has moved on from it. */
static int fc_read_job(uint64_t cgen, fc_job *job, uint64_t *gen) {
    uint64_t s = atomic_load_explicit(&fc_pool.seq, memory_order_acquire);
    if (s % 2 || FC_CLAIM_GEN(s / 2) != cgen) return 0;
    *gen = s / 2;
    job->fn = atomic_load_explicit(&fc_pool.fn, memory_order_relaxed);
    job->ctx = atomic_load_explicit(&fc_pool.ctx, memory_order_relaxed);
    job->n_tasks = atomic_load_explicit(&fc_pool.n_tasks, memory_order_relaxed);
    job->chunk = atomic_load_explicit(&fc_pool.chunk, memory_order_relaxed);
    job->max_slots = atomic_load_explicit(&fc_pool.max_slots, memory_order_relaxed);
    atomic_thread_fence(memory_order_acquire);
    return atomic_load_explicit(&fc_pool.seq, memory_order_relaxed) == s;
}

static inline uint64_t fc_now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

/* Claim and run tasks of job `gen` until none is left. A claim succeeds only while
 * the job has unclaimed tasks, i.e. while its caller is still waiting for them, so
 * the fields read are its own and its ctx is alive. */
static void fc_work(uint64_t gen, const fc_job *job, int slot) {
    const uint64_t mask = ((uint64_t)1 << FC_TASK_BITS) - 1;
    int64_t n = job->n_tasks;
    uint64_t c = atomic_load_explicit(&fc_pool.claim, memory_order_acquire);
    for (;;) {
        if (c >> FC_TASK_BITS != FC_CLAIM_GEN(gen) || (int64_t)(c & mask) >= n) return;
        int64_t first = (int64_t)(c & mask), last = first + job->chunk < n ? first + job->chunk : n;
        if (!atomic_compare_exchange_weak_explicit(&fc_pool.claim, &c, c + (uint64_t)(last - first),
                                                   memory_order_acq_rel, memory_order_acquire))
            continue;
        for (int64_t t = first; t < last; t++) job->fn(job->ctx, (Py_ssize_t)t, slot);
        atomic_fetch_add_explicit(&fc_pool.done, last - first, memory_order_release);
        c = atomic_load_explicit(&fc_pool.claim, memory_order_acquire);
    }
}

static void *fc_worker(void *unused) {
    (void)unused;
    uint64_t seen = 0;                /* the last generation this worker looked at */
    for (;;) {
        uint64_t gen = atomic_load_explicit(&fc_pool.claim, memory_order_acquire) >> FC_TASK_BITS;
        if (gen == seen) {
            uint64_t start = fc_now_ns(), spin = atomic_load_explicit(&fc_pool.spin_ns, memory_order_relaxed);
            for (int i = 1; gen == seen; i++) {
                fc_relax();
                if (i % 64 == 0 && fc_now_ns() - start > spin) break;
                gen = atomic_load_explicit(&fc_pool.claim, memory_order_acquire) >> FC_TASK_BITS;
            }
        }
        if (gen == seen) {            /* sleep until the next job is published */
            pthread_mutex_lock(&fc_pool.lock);
            atomic_fetch_add(&fc_pool.sleeping, 1);
            while ((gen = atomic_load(&fc_pool.claim) >> FC_TASK_BITS) == seen)
                pthread_cond_wait(&fc_pool.wake, &fc_pool.lock);
            atomic_fetch_sub(&fc_pool.sleeping, 1);
            pthread_mutex_unlock(&fc_pool.lock);
        }
        seen = gen;
        /* take a slot of this job, if it still has one free */
        fc_job job;
        if (!fc_read_job(seen, &job, &gen)) continue;
        uint64_t j = atomic_load_explicit(&fc_pool.joined, memory_order_acquire);
        while (j >> FC_SLOT_BITS == FC_JOIN_GEN(gen) && (int)(j & 0xffffffffu) < job.max_slots) {
            if (atomic_compare_exchange_weak_explicit(&fc_pool.joined, &j, j + 1, memory_order_acq_rel,
                                                      memory_order_acquire)) {
                fc_work(gen, &job, (int)(j & 0xffffffffu));
                break;
            }
        }
    }
    return NULL;
}

#if FC_FOREIGN_OPENMP
/* A job on another runtime's team (openmp_runtime.h): its members claim chunks until
 * none is left; the team's closing barrier is the wait for tasks running elsewhere. */
typedef struct {
    fc_task_fn fn;
    void *ctx;
    int64_t n_tasks, chunk;
    int max_slots;
    atomic_int_fast64_t next;         /* the first task not yet claimed */
    atomic_int slots;                 /* slots taken */
} fc_team_job;

static void fc_team_member(void *data) {
    fc_team_job *job = (fc_team_job *)data;
    int slot = atomic_fetch_add_explicit(&job->slots, 1, memory_order_relaxed);
    if (slot >= job->max_slots) return;
    for (;;) {
        int64_t first = atomic_fetch_add_explicit(&job->next, job->chunk, memory_order_relaxed);
        if (first >= job->n_tasks) return;
        int64_t last = first + job->chunk < job->n_tasks ? first + job->chunk : job->n_tasks;
        for (int64_t t = first; t < last; t++) job->fn(job->ctx, (Py_ssize_t)t, slot);
    }
}
#endif

static void fc_pool_after_fork(void) {
    /* the child has the caller's thread only: start again with no workers */
    pthread_mutex_init(&fc_pool.owner, NULL);
    pthread_mutex_init(&fc_pool.lock, NULL);
    pthread_cond_init(&fc_pool.wake, NULL);
    fc_pool.workers = 0;
    atomic_store(&fc_pool.sleeping, 0);
    /* the job another thread of the parent was running has no caller here: retire it, so
     * that the child's new workers cannot claim its tasks (nor add them to `done`) */
    uint64_t gen = ++fc_pool.generation;
    if (FC_CLAIM_GEN(gen) == 0) gen = ++fc_pool.generation;
    atomic_store(&fc_pool.seq, 2 * gen - 1);              /* odd: no job to read */
    atomic_store(&fc_pool.joined, gen << FC_SLOT_BITS);
    atomic_store(&fc_pool.claim, gen << FC_TASK_BITS);
}

/* Start workers until there are `wanted` (under `owner`); fewer if the system refuses. */
static void fc_pool_grow(int wanted) {
    static int registered = 0;
    if (!registered) {
        pthread_atfork(NULL, NULL, fc_pool_after_fork);
        registered = 1;
    }
    pthread_mutex_lock(&fc_pool.lock);
    while (fc_pool.workers < wanted && fc_pool.workers < FC_MAX_WORKERS) {
        pthread_t t;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        int failed = pthread_create(&t, &attr, fc_worker, NULL);
        pthread_attr_destroy(&attr);
        if (failed) break;
        fc_pool.workers++;
    }
    pthread_mutex_unlock(&fc_pool.lock);
}

static void fc_run_tasks(fc_task_fn fn, void *ctx, Py_ssize_t n_tasks, Py_ssize_t chunk, int num_threads) {
    if (n_tasks <= 0) return;
    if (chunk < 1) chunk = 1;
    if (num_threads <= 1 || n_tasks <= chunk || (uint64_t)n_tasks >> FC_TASK_BITS
        || pthread_mutex_trylock(&fc_pool.owner) != 0) {
        for (Py_ssize_t t = 0; t < n_tasks; t++) fn(ctx, t, 0);
        return;
    }
#if FC_FOREIGN_OPENMP
    const fc_omp_runtime *team = fc_openmp_runtime(num_threads);
    if (team == &fc_openmp->foreign) {
        fc_team_job job = {fn, ctx, (int64_t)n_tasks, (int64_t)chunk, num_threads, 0, 0};
        fc_openmp_parallel(team, fc_team_member, &job, (unsigned)num_threads, 0);
        pthread_mutex_unlock(&fc_pool.owner);
        return;
    }
    uint64_t job_start = fc_now_ns();
#endif
    fc_pool_grow(num_threads - 1);
    /* the next gap is likely as long as the last ones */
    if (fc_now_ns() - fc_pool.last_end <= FC_SPIN_NS) fc_pool.long_gaps = 0;
    else if (fc_pool.long_gaps < 2) fc_pool.long_gaps++;
    atomic_store_explicit(&fc_pool.spin_ns, fc_pool.long_gaps >= 2 ? FC_SPIN_SHORT_NS : FC_SPIN_NS,
                          memory_order_relaxed);
    uint64_t gen = ++fc_pool.generation;
    if (FC_CLAIM_GEN(gen) == 0) gen = ++fc_pool.generation;  /* a new worker's `seen` is 0 */
    fc_job job = {fn, ctx, (int64_t)n_tasks, (int64_t)chunk, num_threads};
    atomic_store_explicit(&fc_pool.seq, 2 * gen - 1, memory_order_relaxed);
    atomic_thread_fence(memory_order_release);
    atomic_store_explicit(&fc_pool.fn, fn, memory_order_relaxed);
    atomic_store_explicit(&fc_pool.ctx, ctx, memory_order_relaxed);
    atomic_store_explicit(&fc_pool.n_tasks, job.n_tasks, memory_order_relaxed);
    atomic_store_explicit(&fc_pool.chunk, job.chunk, memory_order_relaxed);
    atomic_store_explicit(&fc_pool.max_slots, num_threads, memory_order_relaxed);
    atomic_store_explicit(&fc_pool.seq, 2 * gen, memory_order_release);
    atomic_store_explicit(&fc_pool.done, 0, memory_order_relaxed);
    atomic_store_explicit(&fc_pool.joined, gen << FC_SLOT_BITS | 1, memory_order_release);
    atomic_store(&fc_pool.claim, gen << FC_TASK_BITS);        /* publishes the job */
    if (atomic_load(&fc_pool.sleeping) > 0) {     /* wake no more than can take a slot */
        pthread_mutex_lock(&fc_pool.lock);
        for (int i = 0, k = atomic_load(&fc_pool.sleeping); i < k && i < num_threads - 1; i++)
            pthread_cond_signal(&fc_pool.wake);
        pthread_mutex_unlock(&fc_pool.lock);
    }
    fc_work(gen, &job, 0);
    /* every task is claimed: wait for those still running elsewhere */
    uint64_t start = fc_now_ns();
    for (int i = 1; atomic_load_explicit(&fc_pool.done, memory_order_acquire) < (int64_t)n_tasks; i++) {
        if (i % 64 == 0 && fc_now_ns() - start > FC_SPIN_NS) sched_yield();
        else fc_relax();
    }
    fc_pool.last_end = fc_now_ns();
#if FC_FOREIGN_OPENMP
    __atomic_store_n(&fc_openmp->pool_end, fc_pool.last_end, __ATOMIC_RELAXED);
    fc_openmp_ended(&fc_own_openmp, num_threads, fc_pool.last_end - job_start, fc_pool.last_end - job_start,
                    fc_clock_ns(CLOCK_MONOTONIC));
#endif
    pthread_mutex_unlock(&fc_pool.owner);
}

#elif defined(_OPENMP)
#define FC_POOL_THREADS 0
#include <omp.h>
static void fc_run_tasks(fc_task_fn fn, void *ctx, Py_ssize_t n_tasks, Py_ssize_t chunk, int num_threads) {
    Py_ssize_t t;
    #pragma omp parallel for schedule(dynamic, chunk < 1 ? 1 : chunk) num_threads(num_threads)
    for (t = 0; t < n_tasks; t++) fn(ctx, t, omp_get_thread_num());
}
#else
#define FC_POOL_THREADS 0
static void fc_run_tasks(fc_task_fn fn, void *ctx, Py_ssize_t n_tasks, Py_ssize_t chunk, int num_threads) {
    (void)chunk; (void)num_threads;
    for (Py_ssize_t t = 0; t < n_tasks; t++) fn(ctx, t, 0);
}
#endif

#endif
