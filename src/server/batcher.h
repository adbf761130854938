/* batcher: dynamic batching of image jobs into engine forward passes.
 *
 * A bounded FIFO of jobs (one job = the images of one request, in order) and
 * worker threads that each own one engine executor per batch size they may
 * run. A worker takes jobs from the head until max_batch images are taken,
 * waiting at most max_delay after the oldest job arrived for the batch to
 * fill. A job that fits in one batch is never split; a job larger than
 * max_batch spans consecutive batches in order. Jobs whose deadline has
 * passed are dropped before inference.
 *
 * Usage:
 *   struct batch_opts o = { .max_batch = 8, .max_delay_us = 2000, .queue_images = 64 };
 *   batch_new(model, &o, err, sizeof err, &b);       // builds and warms executors
 *   job->n = 2; job->images = x; job->logits = y; job->done = on_done; ...
 *   r = batch_submit(b, job);   // -EAGAIN: queue full; the callback never fires
 *   ...on_done(job, status) runs on a worker thread: 0, -ETIMEDOUT or -EIO
 *   b = batch_free(b);          // finishes every queued job first
 *
 * Knows nothing of HTTP. Thread-safe: submit and stats from any thread.
 */
#ifndef EFFNET_SERVER_BATCHER_H
#define EFFNET_SERVER_BATCHER_H

#include <stddef.h>
#include <stdint.h>

#include "effnet.h"

#define BATCH_MAX_BATCH             256
#define BATCH_MAX_WORKERS           64
#define BATCH_MAX_EXEC              16   /* executors per worker: batch sizes 1, 2, 4, ... and max_batch */

/* One CPU budget shared by the batchers of several models: a worker takes
 * `threads` units of it for each forward pass and gives them back after,
 * first come first served, so that the teams of every model together never
 * run more threads than the units (the usable CPUs). Thread-safe. */
struct batch_gate;

/* A gate of units (>= 1) CPUs. -EINVAL, -ENOMEM. */
int batch_gate_new(int units, struct batch_gate **ret_gate);
/* No batcher may use it any more. Accepts NULL; returns NULL. */
struct batch_gate *batch_gate_free(struct batch_gate *g);

struct batch_opts {
        int max_batch;        /* images per forward pass, 1..BATCH_MAX_BATCH */
        int64_t max_delay_us; /* wait for a batch to fill, from the oldest job's arrival */
        int queue_images;     /* capacity: images waiting, not yet taken by a worker */
        int workers;          /* 0 = 1 */
        int threads;          /* oneDNN threads per worker; 0 = usable CPUs / workers */
        int precision;        /* enum effnet_precision */
        int input_size;       /* input edge in pixels; 0 = the model's preproc.size; 32..4096 */
        struct batch_gate *gate;  /* the CPU budget shared with other batchers (not owned; outlives the
                                   * batcher); NULL: none */
        const struct effnet_calibration *calibration; /* EFFNET_INT8: must outlive the batcher */
        /* Start-up progress: called on a worker thread after each executor
         * is built and after its warm-up pass, with steps done and the
         * total (2 per executor of every worker); calls may come from
         * several workers at once. NULL: none. */
        void (*progress)(void *userdata, int done, int total);
        void *userdata;
};

struct batch;
struct batch_job;

/* Called once per submitted job, on a worker thread, without any batcher
 * lock held. status: 0 (logits written), -ETIMEDOUT (deadline passed before
 * inference), -EIO (the engine failed). Keep it short: it delays the
 * worker's next batch. The job may be freed inside the callback. */
typedef void (*batch_done_fn)(struct batch_job *job, int status);

/* Owned by the caller; must stay valid (with images and logits) from
 * batch_submit until its callback has returned. */
struct batch_job {
        int n;                  /* images, 1..queue capacity */
        const float *images;    /* [n][3][size][size] NCHW, normalized */
        float *logits;          /* [n][classes], written by the workers */
        int64_t deadline_ns;    /* CLOCK_MONOTONIC (time_now_ns); 0 = none */
        batch_done_fn done;
        void *userdata;

        /* Written by the batcher before done() fires (for logs and metrics). */
        int64_t taken_ns;       /* when its first image went into a forward pass; 0 if none did */
        int64_t forward_ns;     /* time of the forward passes it was part of */
        int batch_size;         /* the largest pass (images) it was part of */

        /* Private to the batcher, guarded by its lock. */
        struct batch_job *next;
        int64_t enqueued_ns;
        int taken;              /* images handed to workers */
        int remaining;          /* images not yet finished or dropped */
        int status;
};

/* Upper bounds (seconds) of the forward-pass time histogram buckets. */
#define BATCH_FORWARD_BUCKETS 12
extern const double batch_forward_bounds[BATCH_FORWARD_BUCKETS];

/* The batcher's counters since start and its gauges now. */
struct batch_stats {
        uint64_t jobs;            /* accepted by batch_submit */
        uint64_t jobs_rejected;   /* -EAGAIN */
        uint64_t jobs_timed_out;
        uint64_t jobs_failed;     /* -EIO */
        uint64_t batches;         /* forward passes */
        uint64_t batch_images;    /* images in those passes */
        double forward_seconds;   /* summed over passes */
        int queue_images;         /* waiting now */
        int queue_capacity;
        int busy_workers;
        int max_batch;            /* batch_sizes[1..max_batch] are used */
        /* batch_sizes[k]: passes with exactly k images, k = 1..max_batch. */
        uint64_t batch_sizes[BATCH_MAX_BATCH + 1];
        /* Passes per forward time bucket (batch_forward_bounds; +Inf last). */
        uint64_t forward_hist[BATCH_FORWARD_BUCKETS + 1];
};

/* The settings in effect (defaults resolved). */
struct batch_config {
        int max_batch;
        int64_t max_delay_us;
        int queue_images;
        int workers;
        int threads;
        int precision;
        int input_size;           /* input edge in pixels */
        const struct effnet_calibration *calibration;
        int n_exec;               /* executors per worker */
        int exec_batch[BATCH_MAX_EXEC]; /* their batch sizes, ascending */
        size_t exec_bytes;        /* scratch memory over all workers */
};

/* Builds workers * n_exec executors for model m (which must outlive the
 * batcher), runs one forward on each (warm-up) and starts the workers.
 * Each worker's oneDNN calls get their own OpenMP team of `threads`, so
 * workers x threads may not exceed the CPUs this process may use.
 * Errors: -EINVAL for bad options (the message says which), -ENOMEM, engine
 * errors with a message in err. */
int batch_new(struct effnet_model *m, const struct batch_opts *opts,
              char *err, size_t err_len, struct batch **ret_batch);

/* Stops taking new jobs, lets the workers finish every queued one, joins
 * them and frees everything. Accepts NULL; returns NULL. */
struct batch *batch_free(struct batch *b);

/* Queues a job. Returns 0 (the callback will fire exactly once), -EAGAIN
 * when the queue lacks room for job->n images, -E2BIG when job->n exceeds
 * the queue's capacity, -EINVAL for a bad job, -ESHUTDOWN while stopping.
 * On error the callback never fires. */
int batch_submit(struct batch *b, struct batch_job *job);

/* Whether n more images would fit now (a hint: submit may still fail). */
int batch_has_room(struct batch *b, int n);

/* A consistent snapshot of b's counters and gauges, taken under its lock. */
void batch_stats_snapshot(struct batch *b, struct batch_stats *ret_stats);

/* Adds the snapshot from to to: counters, histograms and the gauges of
 * load (waiting images, busy workers), for the batchers of several model
 * generations together. to's queue_capacity and max_batch become from's:
 * add the batcher serving now last. */
void batch_stats_add(struct batch_stats *to, const struct batch_stats *from);

/* Whether the workers make progress: -ETIMEDOUT (with the reason in err)
 * when a worker has been inside one forward pass for longer than stall_ns,
 * or images have waited that long with no worker taking any; 0 otherwise.
 * For a watchdog: call it from the main loop before each keep-alive. */
int batch_check_progress(struct batch *b, int64_t stall_ns, char *err, size_t err_len);
void batch_get_config(const struct batch *b, struct batch_config *ret_config);

#endif
