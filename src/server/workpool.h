/* workpool: a bounded pool of worker threads that run jobs in steps, so
 * that long work (decoding large images, parsing large bodies) never
 * occupies a transport's thread. It knows nothing of what the work is.
 *
 * `threads` threads run jobs from a FIFO; at most threads + `queue` jobs are
 * in the pool at once (running or waiting). A job is a function and its
 * record, owned by the caller. Its function does one step (e.g. one image) and
 * returns WPOOL_AGAIN to be queued again at the tail, so that a request of
 * many large images takes turns with the others instead of holding a thread
 * until it is done; or WPOOL_DONE, after which the pool never touches the job
 * again (the function may hand the job's owner on, e.g. resume its
 * connection, as its last step). A job whose next step is large (for images:
 * one of more than WPOOL_LARGE_PIXELS) runs on all threads but one, so that small
 * steps wait for at most one small step ahead of them however many large
 * images are being decoded. The pool knows nothing of images or HTTP: the
 * request pipeline (pipeline.c) gives it the work.
 *
 * Usage:
 *   struct wpool_opts o = { .threads = 0, .queue = 64 };
 *   wpool_new(&o, &pool);
 *   job->run = one_step;                  // runs on a pool thread, until WPOOL_DONE
 *   r = wpool_submit(pool, job);            // -EAGAIN: queue full, run never fires
 *   pool = wpool_free(pool);                // runs every queued job first
 *
 * Thread-safe: submit and stats from any thread.
 */
#ifndef EFFNET_SERVER_WORKPOOL_H
#define EFFNET_SERVER_WORKPOOL_H

#include <stdbool.h>
#include <stdint.h>

#define WPOOL_DEFAULT_MAX_THREADS 8    /* cap of the default (usable CPUs) */
#define WPOOL_MAX_THREADS         256
/* Past this many pixels an image is large: a 6000x6000 PNG takes about a
 * second to decode, a 12 MP photo a tenth of that. */
#define WPOOL_LARGE_PIXELS        ((int64_t)16 << 20)

struct wpool_opts {
        int threads;    /* 0 = usable CPUs, at most WPOOL_DEFAULT_MAX_THREADS */
        int queue;      /* jobs waiting (not running), >= 1 */
};

enum wpool_step {
        WPOOL_DONE,       /* the job is over and may be gone */
        WPOOL_AGAIN,      /* queue it again, behind the jobs waiting now */
};

struct wpool_job;
typedef enum wpool_step (*wpool_run_fn)(struct wpool_job *job);

/* Owned by the caller; valid from wpool_submit until run returned WPOOL_DONE. */
struct wpool_job {
        wpool_run_fn run;
        void *userdata;
        bool large;             /* its next step is large; set before wpool_submit and WPOOL_AGAIN */
        struct wpool_job *next;   /* private to the pool, guarded by its lock */
};

struct wpool_stats {
        int threads;
        int queue_capacity;
        int queued;             /* waiting now (new, or between two steps) */
        int busy;               /* running now */
        uint64_t jobs;          /* done since start */
        uint64_t rejected;      /* refused with -EAGAIN (queue full) */
};

struct wpool;

/* Starts the threads. -EINVAL (bad options), -ENOMEM, or a pthread error. */
int wpool_new(const struct wpool_opts *opts, struct wpool **ret_pool);

/* Queues job; run(job) follows on a pool thread. -EAGAIN when the pool
 * holds threads + queue jobs already, -ESHUTDOWN once wpool_free began; then
 * run never fires and the caller still owns job. */
int wpool_submit(struct wpool *p, struct wpool_job *job);

/* A consistent snapshot of p's counters and gauges, taken under its lock. */
void wpool_stats_snapshot(struct wpool *p, struct wpool_stats *ret_stats);

/* Runs the jobs still queued, stops and joins the threads. Accepts NULL;
 * returns NULL. Not from a pool thread. */
struct wpool *wpool_free(struct wpool *p);

#endif
