/* decoder: a bounded pool of threads that decode and preprocess images, so
 * that a request of large images never occupies an HTTP thread.
 *
 * `threads` threads run jobs from a FIFO; at most threads + `queue` jobs are
 * in the pool at once (running or waiting). A job is a function and its
 * record, owned by the caller. Its function does one step (one image) and
 * returns DEC_AGAIN to be queued again at the tail, so that a request of
 * many large images takes turns with the others instead of holding a thread
 * until it is done; or DEC_DONE, after which the pool never touches the job
 * again (the function may hand the job's owner on, e.g. resume its
 * connection, as its last step). A job whose next step is large (an image of
 * more than DEC_LARGE_PIXELS) runs on all threads but one, so that small
 * steps wait for at most one small step ahead of them however many large
 * images are being decoded. The pool knows nothing of images or HTTP: http.c
 * gives it the work.
 *
 * Usage:
 *   struct dec_opts o = { .threads = 0, .queue = 64 };
 *   dec_new(&o, &pool);
 *   job->run = decode_one_image;          // runs on a pool thread, until DEC_DONE
 *   r = dec_submit(pool, job);            // -EAGAIN: queue full, run never fires
 *   pool = dec_free(pool);                // runs every queued job first
 *
 * Thread-safe: submit and stats from any thread.
 */
#ifndef EFFNET_SERVER_DECODER_H
#define EFFNET_SERVER_DECODER_H

#include <stdbool.h>
#include <stdint.h>

#define DEC_DEFAULT_MAX_THREADS 8    /* cap of the default (usable CPUs) */
#define DEC_MAX_THREADS         256
/* Past this many pixels an image is large: a 6000x6000 PNG takes about a
 * second to decode, a 12 MP photo a tenth of that. */
#define DEC_LARGE_PIXELS        ((int64_t)16 << 20)

struct dec_opts {
        int threads;    /* 0 = usable CPUs, at most DEC_DEFAULT_MAX_THREADS */
        int queue;      /* jobs waiting (not running), >= 1 */
};

enum dec_step {
        DEC_DONE,       /* the job is over and may be gone */
        DEC_AGAIN,      /* queue it again, behind the jobs waiting now */
};

struct dec_job;
typedef enum dec_step (*dec_run_fn)(struct dec_job *job);

/* Owned by the caller; valid from dec_submit until run returned DEC_DONE. */
struct dec_job {
        dec_run_fn run;
        void *userdata;
        bool large;             /* its next step is large; set before dec_submit and DEC_AGAIN */
        struct dec_job *next;   /* private to the pool, guarded by its lock */
};

struct dec_stats {
        int threads;
        int queue_capacity;
        int queued;             /* waiting now (new, or between two steps) */
        int busy;               /* running now */
        uint64_t jobs;          /* done since start */
        uint64_t rejected;      /* refused with -EAGAIN (queue full) */
};

struct dec_pool;

/* Starts the threads. -EINVAL (bad options), -ENOMEM, or a pthread error. */
int dec_new(const struct dec_opts *opts, struct dec_pool **ret_pool);

/* Queues job; run(job) follows on a pool thread. -EAGAIN when the pool
 * holds threads + queue jobs already, -ESHUTDOWN once dec_free began; then
 * run never fires and the caller still owns job. */
int dec_submit(struct dec_pool *p, struct dec_job *job);

/* A consistent snapshot of p's counters and gauges, taken under its lock. */
void dec_stats_snapshot(struct dec_pool *p, struct dec_stats *ret_stats);

/* Runs the jobs still queued, stops and joins the threads. Accepts NULL;
 * returns NULL. Not from a pool thread. */
struct dec_pool *dec_free(struct dec_pool *p);

#endif
