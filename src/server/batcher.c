/* batcher: dynamic batching of image jobs into engine forward passes. */
#include "batcher.h"
#include "util.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>


struct batch_worker {
        struct batch *b;
        pthread_t thread;
        bool started;
        int n_exec;
        struct effnet_exec *exec[BATCH_MAX_EXEC]; /* exec[i] runs up to cfg.exec_batch[i] images */
        float *input;   /* [max_batch][3][size][size] images gathered from several jobs */
        float *logits;  /* [max_batch][classes] */
        size_t bytes;   /* executor memory */
        int status;     /* start-up result */
        char err[256];
        int64_t busy_since_ns; /* start of the current forward pass; 0 when idle (guarded by b->lock) */
};

/* A run of consecutive images of one job inside a batch. */
struct chunk {
        struct batch_job *job;
        int first;
        int count;
};

struct batch_gate {
        pthread_mutex_t lock;
        pthread_cond_t changed;
        int free_units, units;
        uint64_t next_ticket, serving;  /* FIFO: a pass runs when its ticket is served and its units are free */
};

int batch_gate_new(int units, struct batch_gate **ret_gate)
{
        struct batch_gate *g;

        if (units < 1)
                return -EINVAL;
        if (!(g = calloc(1, sizeof *g)))
                return -ENOMEM;
        pthread_mutex_init(&g->lock, NULL);
        pthread_cond_init(&g->changed, NULL);
        g->free_units = g->units = units;
        *ret_gate = g;
        return 0;
}

struct batch_gate *batch_gate_free(struct batch_gate *g)
{
        if (!g)
                return NULL;
        pthread_mutex_destroy(&g->lock);
        pthread_cond_destroy(&g->changed);
        free(g);
        return NULL;
}

/* Takes n units (at most all of them), in arrival order. */
static void gate_enter(struct batch_gate *g, int n)
{
        if (!g)
                return;
        if (n > g->units)
                n = g->units;
        pthread_mutex_lock(&g->lock);
        uint64_t ticket = g->next_ticket++;
        while (ticket != g->serving || g->free_units < n)
                pthread_cond_wait(&g->changed, &g->lock);
        g->serving++;
        g->free_units -= n;
        pthread_cond_broadcast(&g->changed);
        pthread_mutex_unlock(&g->lock);
}

static void gate_leave(struct batch_gate *g, int n)
{
        if (!g)
                return;
        if (n > g->units)
                n = g->units;
        pthread_mutex_lock(&g->lock);
        g->free_units += n;
        pthread_cond_broadcast(&g->changed);
        pthread_mutex_unlock(&g->lock);
}

struct batch {
        struct effnet_model *model;     /* not owned; outlives the batcher */
        struct batch_gate *gate;        /* not owned, or NULL */
        struct batch_config cfg;
        int size;                       /* input edge */
        int classes;
        size_t image_floats;            /* 3 * size * size */

        pthread_mutex_t lock;           /* guards everything below */
        pthread_cond_t work;            /* the queue changed, or stopping */
        pthread_cond_t started;         /* a worker finished its start-up */
        struct batch_job *head, *tail;  /* FIFO of jobs with images not yet taken */
        int queued;                     /* images in the FIFO not yet taken */
        bool stopping;
        int ready;                      /* workers done with start-up */
        int busy;                       /* workers inside a forward pass */
        uint64_t jobs, jobs_rejected, jobs_timed_out, jobs_failed, batches, batch_images;
        double forward_seconds;
        uint64_t *sizes;                /* [max_batch + 1] passes per image count */
        uint64_t forward_hist[BATCH_FORWARD_BUCKETS + 1]; /* passes per forward time bucket, +Inf last */
        int64_t last_take_ns;           /* when a worker last took a batch (or started) */

        void (*progress)(void *userdata, int done, int total);   /* start-up, see batch_opts */
        void *userdata;
        atomic_int steps;               /* start-up steps done, over every worker */

        int n_workers;
        struct batch_worker *workers;   /* [n_workers] */
        bool lock_init, cond_init;
};

/* Completes every job on a list linked through ->next. Lists are built by
 * pushing jobs in queue order, so the list is reversed first: callbacks then
 * fire in the order the jobs were submitted. No lock held. */
static void complete_list(struct batch_job *list)
{
        struct batch_job *fifo = NULL;

        while (list) {
                struct batch_job *next = list->next;
                list->next = fifo;
                fifo = list;
                list = next;
        }
        list = fifo;
        while (list) {
                struct batch_job *next = list->next;
                list->next = NULL;
                list->done(list, list->status);  /* may free list */
                list = next;
        }
}

static struct effnet_exec *pick_exec(struct batch_worker *w, int n)
{
        for (int i = 0; i < w->n_exec; i++)
                if (w->b->cfg.exec_batch[i] >= n)
                        return w->exec[i];
        return w->exec[w->n_exec - 1];
}

/* Runs one forward pass over the chunks (n images in all) and writes each
 * job's logits rows. Called without the lock: the rows are disjoint and the
 * jobs stay valid until completed. */
static int run_batch(struct batch_worker *w, const struct chunk *chunks, int n_chunks, int n)
{
        struct batch *b = w->b;
        const float *in;

        if (n_chunks == 1) {
                in = chunks[0].job->images + (size_t)chunks[0].first * b->image_floats;
        } else {
                float *dst = w->input;
                for (int i = 0; i < n_chunks; i++) {
                        size_t k = (size_t)chunks[i].count * b->image_floats;
                        memcpy(dst, chunks[i].job->images + (size_t)chunks[i].first * b->image_floats,
                               k * sizeof(float));
                        dst += k;
                }
                in = w->input;
        }
        int r = effnet_exec_forward(pick_exec(w, n), in, n, w->logits);
        if (r < 0)
                return r;
        const float *src = w->logits;
        for (int i = 0; i < n_chunks; i++) {
                size_t k = (size_t)chunks[i].count * (size_t)b->classes;
                memcpy(chunks[i].job->logits + (size_t)chunks[i].first * (size_t)b->classes, src,
                       k * sizeof(float));
                src += k;
        }
        return 0;
}

/* Takes up to max_batch images from the head of the queue into chunks;
 * expired jobs go to *done_list instead. Returns the image count. Lock held. */
static int take_batch(struct batch *b, struct chunk *chunks, int *ret_n_chunks, struct batch_job **done_list)
{
        int64_t now = time_now_ns();
        int n = 0, n_chunks = 0;

        while (b->head && n < b->cfg.max_batch) {
                struct batch_job *job = b->head;
                int left = job->n - job->taken;

                if (job->deadline_ns && now > job->deadline_ns) {
                        b->head = job->next;
                        if (!b->head)
                                b->tail = NULL;
                        b->queued -= left;
                        job->taken = job->n;
                        job->remaining -= left;
                        job->status = -ETIMEDOUT;
                        b->jobs_timed_out++;
                        if (job->remaining == 0) {
                                job->next = *done_list;
                                *done_list = job;
                        } else {
                                job->next = NULL;
                        }
                        continue;
                }
                int room = b->cfg.max_batch - n, take;
                if (left <= room)
                        take = left;
                else if (n == 0)
                        take = room;  /* a job larger than a batch spans several */
                else
                        break;        /* a job that fits a batch is never split */
                chunks[n_chunks++] = (struct chunk){ .job = job, .first = job->taken, .count = take };
                job->taken += take;
                b->queued -= take;
                n += take;
                if (job->taken == job->n) {
                        b->head = job->next;
                        if (!b->head)
                                b->tail = NULL;
                        job->next = NULL;
                }
        }
        *ret_n_chunks = n_chunks;
        return n;
}

/* One step of a worker's start-up done: tells the caller's progress. */
static void start_step(struct batch *b)
{
        int done = atomic_fetch_add(&b->steps, 1) + 1;
        if (b->progress)
                b->progress(b->userdata, done, 2 * b->cfg.n_exec * b->n_workers);
}

static int worker_start(struct batch_worker *w)
{
        struct batch *b = w->b;
        const struct batch_config *c = &b->cfg;
        int r;

        for (int i = 0; i < c->n_exec; i++) {
                struct effnet_exec_opts eo = { .batch = c->exec_batch[i], .threads = c->threads,
                                               .precision = c->precision, .size = b->size,
                                               .calibration = c->calibration };
                if ((r = effnet_exec_new(b->model, &eo, w->err, sizeof w->err, &w->exec[i])) < 0)
                        return r;
                w->n_exec = i + 1;
                w->bytes += effnet_exec_bytes(w->exec[i]);
                start_step(b);
        }
        w->input = calloc((size_t)c->max_batch * b->image_floats, sizeof(float));
        w->logits = calloc((size_t)c->max_batch * (size_t)b->classes, sizeof(float));
        if (!w->input || !w->logits)
                return err_set(w->err, sizeof w->err, -ENOMEM, "out of memory for batch buffers");
        /* Warm-up: the first pass of each executor (and of this thread's
         * OpenMP team) is slow; pay for it before the first request. */
        for (int i = 0; i < w->n_exec; i++) {
                if ((r = effnet_exec_forward(w->exec[i], w->input, c->exec_batch[i], w->logits)) < 0)
                        return err_set(w->err, sizeof w->err, r, "warm-up forward (batch %d) failed: %s",
                                       c->exec_batch[i], strerror(-r));
                start_step(b);
        }
        return 0;
}

/* Tells batch_new how the worker's start-up went (r); a worker that failed
 * waits for batch_new to stop all. Lock held. */
static void worker_announce(struct batch_worker *w, int r)
{
        struct batch *b = w->b;

        w->status = r;
        b->ready++;
        pthread_cond_broadcast(&b->started);
        while (r < 0 && !b->stopping)
                pthread_cond_wait(&b->work, &b->lock);
}

/* Waits until the head of the queue is due: a full batch is queued, its
 * first job has waited max_delay, or the batcher is stopping. False when
 * stopping with nothing queued. Lock held. */
static bool wait_for_batch(struct batch *b)
{
        for (;;) {
                if (!b->head) {
                        if (b->stopping)
                                return false;
                        pthread_cond_wait(&b->work, &b->lock);
                        continue;
                }
                if (!b->stopping && b->queued < b->cfg.max_batch) {
                        int64_t until = b->head->enqueued_ns + b->cfg.max_delay_us * 1000;
                        if (time_now_ns() < until) {
                                struct timespec ts = { .tv_sec = until / 1000000000,
                                                       .tv_nsec = until % 1000000000 };
                                pthread_cond_timedwait(&b->work, &b->lock, &ts);
                                continue;
                        }
                }
                return true;
        }
}

/* Counts a forward pass of n images that took secs. Lock held. */
static void count_pass(struct batch *b, struct batch_worker *w, int n, double secs)
{
        int bucket = 0;

        w->busy_since_ns = 0;
        b->busy--;
        b->batches++;
        b->batch_images += (uint64_t)n;
        b->sizes[n]++;
        b->forward_seconds += secs;
        while (bucket < BATCH_FORWARD_BUCKETS && secs > batch_forward_bounds[bucket])
                bucket++;
        b->forward_hist[bucket]++;
}

/* Settles each chunk's job after a pass of n images over [t0, t1] that
 * returned fr; jobs with no image left go to *done_list. Lock held. */
static void settle_chunks(struct batch *b, const struct chunk *chunks, int n_chunks, int n, int fr, int64_t t0,
                          int64_t t1, struct batch_job **done_list)
{
        for (int i = 0; i < n_chunks; i++) {
                struct batch_job *job = chunks[i].job;
                if (job->taken_ns == 0)
                        job->taken_ns = t0;
                job->forward_ns += t1 - t0;
                if (n > job->batch_size)
                        job->batch_size = n;
                if (fr < 0 && job->status == 0) {
                        job->status = -EIO;
                        b->jobs_failed++;
                }
                job->remaining -= chunks[i].count;
                if (job->remaining == 0) {
                        job->next = *done_list;
                        *done_list = job;
                }
        }
}

/* Takes one batch from the queue, runs it without the lock and completes
 * the jobs it finished (and those that expired) without the lock too.
 * Lock held on entry and on return. */
static void serve_batch(struct batch_worker *w, struct chunk *chunks)
{
        struct batch *b = w->b;
        struct batch_job *done_list = NULL;
        int n_chunks = 0;
        int n = take_batch(b, chunks, &n_chunks, &done_list);

        if (n > 0) {
                b->busy++;
                b->last_take_ns = w->busy_since_ns = time_now_ns();
        }
        pthread_mutex_unlock(&b->lock);
        complete_list(done_list);
        done_list = NULL;
        /* The CPUs shared with other models' batchers: the wait is not
         * the pass's time. */
        if (n > 0)
                gate_enter(b->gate, b->cfg.threads);
        int64_t t0 = time_now_ns();
        int fr = n > 0 ? run_batch(w, chunks, n_chunks, n) : 0;
        int64_t t1 = time_now_ns();
        if (n > 0)
                gate_leave(b->gate, b->cfg.threads);
        double secs = (double)(t1 - t0) / 1e9;
        pthread_mutex_lock(&b->lock);
        if (n == 0)
                return;
        count_pass(b, w, n, secs);
        settle_chunks(b, chunks, n_chunks, n, fr, t0, t1, &done_list);
        pthread_mutex_unlock(&b->lock);
        complete_list(done_list);
        pthread_mutex_lock(&b->lock);
}

static void *worker_main(void *arg)
{
        struct batch_worker *w = arg;
        struct batch *b = w->b;
        struct chunk *chunks = NULL;
        int r = worker_start(w);

        if (r == 0 && !(chunks = calloc((size_t)b->cfg.max_batch, sizeof *chunks)))
                r = err_set(w->err, sizeof w->err, -ENOMEM, "out of memory");
        pthread_mutex_lock(&b->lock);
        worker_announce(w, r);
        while (r == 0 && wait_for_batch(b))
                serve_batch(w, chunks);
        pthread_mutex_unlock(&b->lock);
        free(chunks);
        return NULL;
}

static void worker_release(struct batch_worker *w)
{
        for (int i = 0; i < w->n_exec; i++)
                w->exec[i] = effnet_exec_free(w->exec[i]);
        free(w->input);
        free(w->logits);
}

struct batch *batch_free(struct batch *b)
{
        if (!b)
                return NULL;
        if (b->lock_init) {
                pthread_mutex_lock(&b->lock);
                b->stopping = true;
                pthread_cond_broadcast(&b->work);
                pthread_mutex_unlock(&b->lock);
        }
        for (int i = 0; i < b->n_workers; i++)
                if (b->workers[i].started)
                        pthread_join(b->workers[i].thread, NULL);
        for (int i = 0; i < b->n_workers; i++)
                worker_release(&b->workers[i]);
        /* Jobs can only remain if no worker ever ran (start-up failed before
         * any submit succeeded), so there is nothing to complete here. */
        free(b->workers);
        free(b->sizes);
        if (b->cond_init) {
                pthread_cond_destroy(&b->work);
                pthread_cond_destroy(&b->started);
        }
        if (b->lock_init)
                pthread_mutex_destroy(&b->lock);
        free(b);
        return NULL;
}

/* Checks the options and resolves workers and threads for this process's
 * usable CPUs into *cfg. */
static int config_resolve(const struct batch_opts *opts, char *err, size_t err_len, struct batch_config *cfg)
{
        int cpus = cpu_usable_count();

        if (opts->max_batch < 1 || opts->max_batch > BATCH_MAX_BATCH)
                return err_set(err, err_len, -EINVAL, "max batch %d not in 1..%d", opts->max_batch,
                               BATCH_MAX_BATCH);
        if (opts->max_delay_us < 0 || opts->max_delay_us > 10000000)
                return err_set(err, err_len, -EINVAL, "max delay %lld us not in 0..10 s",
                               (long long)opts->max_delay_us);
        if (opts->queue_images < 1)
                return err_set(err, err_len, -EINVAL, "queue capacity %d < 1", opts->queue_images);
        int workers = opts->workers > 0 ? opts->workers : 1;
        if (workers > BATCH_MAX_WORKERS || workers > cpus)
                return err_set(err, err_len, -EINVAL, "%d workers but %d usable CPUs", workers, cpus);
        int threads = opts->threads > 0 ? opts->threads : cpus / workers;
        if (threads < 1)
                threads = 1;
        if ((int64_t)workers * threads > cpus)
                return err_set(err, err_len, -EINVAL,
                               "%d workers x %d threads exceed the %d CPUs this process may use", workers,
                               threads, cpus);
        *cfg = (struct batch_config){ .max_batch = opts->max_batch, .max_delay_us = opts->max_delay_us,
                                      .queue_images = opts->queue_images, .workers = workers,
                                      .threads = threads, .precision = opts->precision,
                                      .input_size = opts->input_size, .calibration = opts->calibration };
        if (opts->input_size && (opts->input_size < 32 || opts->input_size > 4096))
                return err_set(err, err_len, -EINVAL, "input size %d not in 32..4096", opts->input_size);
        /* Executors for 1, 2, 4, ... and max_batch images: a pass costs what
         * its executor's batch size costs, whatever the image count. */
        for (int s = 1; s < opts->max_batch && cfg->n_exec < BATCH_MAX_EXEC - 1; s *= 2)
                cfg->exec_batch[cfg->n_exec++] = s;
        cfg->exec_batch[cfg->n_exec++] = opts->max_batch;
        return 0;
}

/* The lock and the two condition variables; work waits on the monotonic
 * clock (deadlines and max_delay are monotonic). */
static int sync_init(struct batch *b, char *err, size_t err_len)
{
        pthread_condattr_t ca;
        int r;

        if ((r = -pthread_mutex_init(&b->lock, NULL)) < 0)
                return err_set(err, err_len, r, "mutex: %s", strerror(-r));
        b->lock_init = true;
        pthread_condattr_init(&ca);
        pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
        r = -pthread_cond_init(&b->work, &ca);
        if (r == 0 && (r = -pthread_cond_init(&b->started, NULL)) < 0)
                pthread_cond_destroy(&b->work);
        pthread_condattr_destroy(&ca);
        if (r < 0)
                return err_set(err, err_len, r, "condition variable: %s", strerror(-r));
        b->cond_init = true;
        return 0;
}

/* Starts every worker and waits until each has built and warmed its
 * executors (or failed to). On failure, started workers have all finished
 * their start-up, so that batch_free can stop them. */
static int workers_start(struct batch *b, char *err, size_t err_len)
{
        int r = 0, started = 0;

        for (int i = 0; i < b->n_workers && r == 0; i++) {
                struct batch_worker *w = &b->workers[i];
                w->b = b;
                if ((r = -pthread_create(&w->thread, NULL, worker_main, w)) < 0) {
                        err_set(err, err_len, r, "worker thread: %s", strerror(-r));
                        break;
                }
                w->started = true;
                started++;
        }
        pthread_mutex_lock(&b->lock);
        while (b->ready < started)
                pthread_cond_wait(&b->started, &b->lock);
        b->last_take_ns = time_now_ns();
        pthread_mutex_unlock(&b->lock);
        for (int i = 0; i < started && r == 0; i++) {
                if (b->workers[i].status < 0)
                        r = err_set(err, err_len, b->workers[i].status, "worker %d: %s", i, b->workers[i].err);
                b->cfg.exec_bytes += b->workers[i].bytes;
        }
        return r;
}

int batch_new(struct effnet_model *m, const struct batch_opts *opts, char *err, size_t err_len,
              struct batch **ret_batch)
{
        struct batch *b = NULL;
        struct batch_config cfg;
        int r;

        if (!m || !opts)
                return err_set(err, err_len, -EINVAL, "batcher: no model or options");
        if ((r = config_resolve(opts, err, err_len, &cfg)) < 0)
                return r;
        if (!(b = calloc(1, sizeof *b)))
                return err_set(err, err_len, -ENOMEM, "out of memory");
        const struct effnet_info *info = effnet_model_info(m);
        b->model = m;
        b->gate = opts->gate;
        b->size = cfg.input_size ? cfg.input_size : info->preproc.size;
        cfg.input_size = b->size;
        b->classes = info->classes;
        b->image_floats = (size_t)3 * (size_t)b->size * (size_t)b->size;
        b->cfg = cfg;
        b->n_workers = cfg.workers;
        b->progress = opts->progress;
        b->userdata = opts->userdata;
        b->sizes = calloc((size_t)cfg.max_batch + 1, sizeof *b->sizes);
        b->workers = calloc((size_t)cfg.workers, sizeof *b->workers);
        if (!b->sizes || !b->workers) {
                r = err_set(err, err_len, -ENOMEM, "out of memory");
                goto fail;
        }
        if ((r = sync_init(b, err, err_len)) < 0 || (r = workers_start(b, err, err_len)) < 0)
                goto fail;
        *ret_batch = b;
        return 0;
fail:
        batch_free(b);
        return r;
}

int batch_submit(struct batch *b, struct batch_job *job)
{
        int r = 0;

        if (!b || !job || job->n < 1 || !job->images || !job->logits || !job->done)
                return -EINVAL;
        if (job->n > b->cfg.queue_images)
                return -E2BIG;
        pthread_mutex_lock(&b->lock);
        if (b->stopping) {
                r = -ESHUTDOWN;
        } else if (b->queued + job->n > b->cfg.queue_images) {
                b->jobs_rejected++;
                r = -EAGAIN;
        } else {
                job->next = NULL;
                job->enqueued_ns = time_now_ns();
                job->taken = 0;
                job->remaining = job->n;
                job->status = 0;
                job->taken_ns = 0;
                job->forward_ns = 0;
                job->batch_size = 0;
                if (b->tail)
                        b->tail->next = job;
                else
                        b->head = job;
                b->tail = job;
                b->queued += job->n;
                b->jobs++;
                pthread_cond_broadcast(&b->work);
        }
        pthread_mutex_unlock(&b->lock);
        return r;
}

int batch_has_room(struct batch *b, int n)
{
        pthread_mutex_lock(&b->lock);
        int ok = !b->stopping && b->queued + n <= b->cfg.queue_images;
        pthread_mutex_unlock(&b->lock);
        return ok;
}

void batch_stats_snapshot(struct batch *b, struct batch_stats *ret_stats)
{
        pthread_mutex_lock(&b->lock);
        *ret_stats = (struct batch_stats){
                .jobs = b->jobs,
                .jobs_rejected = b->jobs_rejected,
                .jobs_timed_out = b->jobs_timed_out,
                .jobs_failed = b->jobs_failed,
                .batches = b->batches,
                .batch_images = b->batch_images,
                .forward_seconds = b->forward_seconds,
                .queue_images = b->queued,
                .queue_capacity = b->cfg.queue_images,
                .busy_workers = b->busy,
                .max_batch = b->cfg.max_batch,
        };
        memcpy(ret_stats->forward_hist, b->forward_hist, sizeof b->forward_hist);
        memcpy(ret_stats->batch_sizes, b->sizes, sizeof(uint64_t) * ((size_t)b->cfg.max_batch + 1));
        pthread_mutex_unlock(&b->lock);
}

void batch_stats_add(struct batch_stats *to, const struct batch_stats *from)
{
        to->jobs += from->jobs;
        to->jobs_rejected += from->jobs_rejected;
        to->jobs_timed_out += from->jobs_timed_out;
        to->jobs_failed += from->jobs_failed;
        to->batches += from->batches;
        to->batch_images += from->batch_images;
        to->forward_seconds += from->forward_seconds;
        to->queue_images += from->queue_images;
        to->busy_workers += from->busy_workers;
        to->queue_capacity = from->queue_capacity;
        to->max_batch = from->max_batch;
        for (int i = 0; i <= BATCH_MAX_BATCH; i++)
                to->batch_sizes[i] += from->batch_sizes[i];
        for (int i = 0; i <= BATCH_FORWARD_BUCKETS; i++)
                to->forward_hist[i] += from->forward_hist[i];
}

void batch_get_config(const struct batch *b, struct batch_config *ret_config)
{
        *ret_config = b->cfg;
}

const double batch_forward_bounds[BATCH_FORWARD_BUCKETS] = {
        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30,
};

int batch_check_progress(struct batch *b, int64_t stall_ns, char *err, size_t err_len)
{
        int64_t now = time_now_ns();
        int r = 0;

        pthread_mutex_lock(&b->lock);
        for (int i = 0; i < b->n_workers && r == 0; i++) {
                int64_t since = b->workers[i].busy_since_ns;
                if (since && now - since > stall_ns)
                        r = err_set(err, err_len, -ETIMEDOUT, "worker %d has been in one forward pass for %.0f s",
                                    i, (double)(now - since) / 1e9);
        }
        /* Waiting images, no worker busy and none taken for too long: the
         * workers are not picking up work. */
        if (r == 0 && b->head && b->busy == 0 && now - b->head->enqueued_ns > stall_ns &&
            now - b->last_take_ns > stall_ns)
                r = err_set(err, err_len, -ETIMEDOUT, "%d image(s) waiting for %.0f s and no worker takes them",
                            b->queued, (double)(now - b->head->enqueued_ns) / 1e9);
        pthread_mutex_unlock(&b->lock);
        return r;
}
