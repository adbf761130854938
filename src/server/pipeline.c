/* pipeline: a request's work, from its inputs to one completion. */
#include "pipeline.h"
#include "util.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

struct pipeline {
        struct pipe_opts opts;
        struct registry *reg;          /* not owned */
        struct budget *budget;         /* what requests hold: bodies, tensors, outputs, answers */
        struct wpool *pool;            /* parses and decodes off the front ends' threads */
        atomic_bool stopping;
};

int pipe_new(const struct pipe_opts *opts, struct registry *reg, struct pipeline **ret_pipe)
{
        struct pipeline *p;
        int r;

        if (!opts || !reg || opts->max_images < 1 || opts->deadline_ms < 1 || opts->queue < 1 ||
            opts->workers < 0 || opts->workers > WPOOL_MAX_THREADS || opts->max_client_share < 1 ||
            opts->memory_budget < opts->max_client_share)
                return -EINVAL;
        p = calloc(1, sizeof *p);
        if (!p)
                return -ENOMEM;
        p->opts = *opts;
        p->reg = reg;
        struct budget_opts bo = { .total = opts->memory_budget, .client_share = opts->max_client_share };
        struct wpool_opts wo = { .threads = opts->workers, .queue = opts->queue };
        if ((r = budget_new(&bo, &p->budget)) < 0 || (r = wpool_new(&wo, &p->pool)) < 0) {
                pipe_free(p);
                return r;
        }
        *ret_pipe = p;
        return 0;
}

struct pipeline *pipe_free(struct pipeline *p)
{
        if (!p)
                return NULL;
        p->pool = wpool_free(p->pool);
        p->budget = budget_free(p->budget);
        free(p);
        return NULL;
}

void pipe_stop(struct pipeline *p)
{
        atomic_store(&p->stopping, true);
}

struct budget *pipe_budget(struct pipeline *p)
{
        return p->budget;
}

struct registry *pipe_registry(struct pipeline *p)
{
        return p->reg;
}

const struct pipe_opts *pipe_get_opts(const struct pipeline *p)
{
        return &p->opts;
}

void pipe_pool_stats(struct pipeline *p, struct wpool_stats *ret_stats)
{
        wpool_stats_snapshot(p->pool, ret_stats);
}

/* ---- requests: memory and model ------------------------------------------- */

int pipe_req_new(struct pipeline *p, const void *key, size_t key_len, struct pipe_req **ret_req)
{
        struct pipe_req *r = calloc(1, sizeof *r);

        if (!r)
                return -ENOMEM;
        r->p = p;
        r->client_fd = -1;
        r->start_ns = time_now_ns();
        r->deadline_ns = r->start_ns + p->opts.deadline_ms * 1000000;
        /* Without an account (no key, out of memory) r is charged to the total only. */
        if (key && key_len && budget_client_get(p->budget, key, key_len, &r->client) < 0)
                r->client = NULL;
        *ret_req = r;
        return 0;
}

int pipe_req_charge(struct pipe_req *r, int64_t bytes)
{
        return budget_charge(r->p->budget, r->client, bytes);
}

void pipe_req_uncharge(struct pipe_req *r, int64_t bytes)
{
        budget_release(r->p->budget, r->client, bytes);
}

void pipe_req_charge_force(struct pipe_req *r, int64_t bytes)
{
        budget_charge_force(r->p->budget, r->client, bytes);
}

int pipe_req_reserve(struct pipe_req *r, int64_t bytes)
{
        int rc = pipe_req_charge(r, bytes);

        if (rc == 0)
                r->reserved += bytes;
        return rc;
}

void pipe_req_body_release(struct pipe_req *r)
{
        free(r->body);
        if (r->cap)
                pipe_req_uncharge(r, (int64_t)r->cap);
        r->body = NULL;
        r->len = r->cap = 0;
}

#define BODY_MIN_ALLOC ((size_t)64 << 10)

int pipe_req_append(struct pipe_req *r, const void *data, size_t n, size_t bound)
{
        int rc;

        if (r->len + n > bound) {
                pipe_req_body_release(r);
                return -E2BIG;
        }
        if (r->len + n > r->cap) {
                /* Doubling (a body arrives in many small pieces), up to the
                 * bound (its own length when known): the capacity charged
                 * is at most twice what arrived, and the length exactly at
                 * the end. */
                size_t cap = r->cap ? r->cap * 2 : BODY_MIN_ALLOC;
                if (cap < r->len + n)
                        cap = r->len + n;
                if (cap > bound)
                        cap = bound;
                int64_t grow = (int64_t)(cap - r->cap);
                if ((rc = pipe_req_charge(r, grow)) < 0) {
                        pipe_req_body_release(r);
                        return rc;
                }
                uint8_t *b = realloc(r->body, cap);
                if (!b) {
                        pipe_req_uncharge(r, grow);
                        pipe_req_body_release(r);
                        return -ENOMEM;
                }
                r->body = b;
                r->cap = cap;
        }
        memcpy(r->body + r->len, data, n);
        r->len += n;
        return 0;
}

void pipe_req_drop_model(struct pipe_req *r)
{
        reg_release(r->p->reg, r->mv);
        r->mv = NULL;
}

int pipe_req_acquire(struct pipe_req *r, const char *name, size_t name_len, int64_t version)
{
        struct reg_version *v;
        int rc = reg_acquire(r->p->reg, name, name_len, version, &v);

        if (rc < 0)
                return rc;
        pipe_req_drop_model(r);
        r->mv = v;
        return 0;
}

const struct generation *pipe_req_model(const struct pipe_req *r)
{
        return r->mv ? r->mv->g : NULL;
}

void pipe_req_release_work(struct pipe_req *r)
{
        pipe_req_drop_model(r);
        free(r->parts);
        r->parts = NULL;
        pipe_req_body_release(r);
        free(r->tensors);
        free(r->logits);
        free(r->jobs);
        r->tensors = r->logits = NULL;
        r->jobs = NULL;
        pipe_req_uncharge(r, r->reserved);
        r->reserved = 0;
}

struct pipe_req *pipe_req_free(struct pipe_req *r)
{
        if (!r)
                return NULL;
        pipe_req_release_work(r);
        budget_client_put(r->p->budget, r->client);
        free(r);
        return NULL;
}

void pipe_req_fail(struct pipe_req *r, enum api_error e, const char *fmt, ...)
{
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(r->msg, sizeof r->msg, fmt, ap);
        va_end(ap);
        r->failed = true;
        r->err = e;
}

void pipe_req_fail_budget(struct pipe_req *r, int code, const char *what)
{
        const struct pipe_opts *o = &r->p->opts;

        if (code == -EDQUOT)
                pipe_req_fail(r, API_E_OVERLOADED, "%s: this client's requests hold their share of memory "
                              "(max-client-share, %lld bytes); retry later", what, (long long)o->max_client_share);
        else
                pipe_req_fail(r, API_E_OVERLOADED, "%s: requests in flight hold the memory budget (memory-budget, "
                              "%lld bytes); retry later", what, (long long)o->memory_budget);
}

/* ---- the line: admission, decode, batch, completion ---------------------- */

/* The error of jobs that failed with status (not 0). */
static void fail_status(struct pipe_req *r, int status)
{
        switch (status) {
        case -ETIMEDOUT:
                pipe_req_fail(r, API_E_DEADLINE, "waited past the deadline of %lld ms in the queue",
                              (long long)r->p->opts.deadline_ms);
                break;
        case -EAGAIN:
                pipe_req_fail(r, API_E_OVERLOADED, "the queue is full; retry later");
                break;
        case -ESHUTDOWN:
                pipe_req_fail(r, API_E_DRAINING, "the server is shutting down");
                break;
        case -E2BIG:
                pipe_req_fail(r, API_E_TOO_LARGE, "more images than the queue holds");
                break;
        default:
                pipe_req_fail(r, API_E_INTERNAL, "inference failed: %s", strerror(-status));
                break;
        }
}

/* The one way out of a running request: its outputs or its failure, to
 * the front end. Last touch of r. */
static void finish(struct pipe_req *r)
{
        if (r->jobs) {
                /* Its image jobs as one for the log: the first pass, the
                 * longest, the largest batch; their first error. */
                r->status = atomic_load(&r->job_error);
                for (int i = 0; i < r->n_images; i++) {
                        const struct batch_job *j = &r->jobs[i];
                        if (j->taken_ns && (!r->job.taken_ns || j->taken_ns < r->job.taken_ns))
                                r->job.taken_ns = j->taken_ns;
                        if (j->forward_ns > r->job.forward_ns)
                                r->job.forward_ns = j->forward_ns;
                        if (j->batch_size > r->job.batch_size)
                                r->job.batch_size = j->batch_size;
                }
        }
        if (!r->failed && r->status)
                fail_status(r, r->status);
        r->done_ns = time_now_ns();
        r->run.done(r, r->run.userdata);
}

static void on_job_done(struct batch_job *job, int status)
{
        struct pipe_req *r = job->userdata;

        r->status = status;
        finish(r);
}

/* One image of a job-per-image request: the last one finishes it. */
static void on_image_done(struct batch_job *job, int status)
{
        struct pipe_req *r = job->userdata;
        int none = 0;

        if (status)
                atomic_compare_exchange_strong(&r->job_error, &none, status);
        if (atomic_fetch_sub(&r->pending, 1) == 1)
                finish(r);
}

/* r's images are tensors: queue its job(s), or finish it. Any thread.
 * Every path ends with done fired (now or by the batcher). */
static void start_inference(struct pipe_req *r)
{
        const struct generation *g = r->mv->g;
        int n = r->n_images, rc;

        if (time_now_ns() > r->deadline_ns) {
                pipe_req_fail(r, API_E_DEADLINE, "past the deadline of %lld ms before inference",
                              (long long)r->p->opts.deadline_ms);
                finish(r);
                return;
        }
        if (atomic_load(&r->p->stopping)) {
                pipe_req_fail(r, API_E_DRAINING, "the server is shutting down");
                finish(r);
                return;
        }
        r->submit_ns = time_now_ns();
        if (r->run.mode == PIPE_ONE_JOB) {
                r->job = (struct batch_job){ .n = n, .images = r->tensors, .logits = r->logits,
                                             .deadline_ns = r->deadline_ns, .done = on_job_done, .userdata = r };
                rc = batch_submit(g->batch, &r->job);
                if (rc < 0) {
                        r->status = rc;
                        finish(r);
                }
                return;
        }
        /* One job per image, so that they share forward passes with every
         * other request. */
        atomic_store(&r->pending, n);
        int i;
        for (i = 0; i < n; i++) {
                /* r stays alive here: the jobs not yet submitted hold pending up. */
                r->jobs[i] = (struct batch_job){ .n = 1, .images = r->tensors + (size_t)i * g->image_floats,
                                                 .logits = r->logits + (size_t)i * (size_t)g->info->classes,
                                                 .deadline_ns = r->deadline_ns, .done = on_image_done,
                                                 .userdata = r };
                rc = batch_submit(g->batch, &r->jobs[i]);
                if (rc < 0) {
                        int none = 0;
                        atomic_compare_exchange_strong(&r->job_error, &none, rc);
                        break;
                }
        }
        /* Jobs never submitted never call back: count them done here. */
        if (i < n && atomic_fetch_sub(&r->pending, n - i) == n - i)
                finish(r);
}

/* Maps an image module error to the failure. */
static void fail_image(struct pipe_req *r, int rc, int part, const char *what)
{
        char where[24] = "";

        if (r->run.numbered)
                snprintf(where, sizeof where, r->run.mode == PIPE_ONE_JOB ? "part %d: " : "image %d: ", part + 1);
        if (rc == -E2BIG)
                pipe_req_fail(r, API_E_TOO_LARGE, "%s%s", where, what);
        else if (rc == -ENOTSUP || rc == -EBADMSG)
                pipe_req_fail(r, API_E_INVALID_IMAGE, "%s%s", where, what);
        else if (rc == -ENOMEM)
                pipe_req_fail(r, API_E_OVERLOADED, "%sout of memory; retry later", where);
        else
                pipe_req_fail(r, API_E_INTERNAL, "%s%s", where, what);
}

/* Decodes image i of r into its tensor, within the deadline (checked
 * before every image, so a request of many slow images stops at the first
 * one past it) and the pixel budget (summed over its images from their
 * headers, before any is decoded past it). false: r failed. */
static bool prepare_image(struct pipe_req *r, int i)
{
        const struct pipe_opts *o = &r->p->opts;
        const struct generation *g = r->mv->g;
        const struct pipe_part *part = &r->parts[i];
        struct img_info info;
        char err[256];
        int rc;

        if (part->len == 0) {
                fail_image(r, -EBADMSG, i, "empty image");
                return false;
        }
        if (time_now_ns() > r->deadline_ns) {
                pipe_req_fail(r, API_E_DEADLINE, "past the deadline of %lld ms while decoding image %d",
                              (long long)o->deadline_ms, i + 1);
                return false;
        }
        if ((rc = img_probe(part->data, part->len, &o->img.limits, err, sizeof err, &info)) == 0) {
                int64_t px = (int64_t)info.width * info.height;
                if (px > r->pixels_left) {
                        pipe_req_fail(r, API_E_TOO_LARGE, "the request's images hold more than %lld pixels in all "
                                      "(max-request-pixels)", (long long)o->max_request_pixels);
                        return false;
                }
                r->pixels_left -= px;
                rc = img_prepare(part->data, part->len, &o->img, &g->info->preproc,
                                 r->tensors + (size_t)i * g->image_floats, err, sizeof err);
        }
        if (rc < 0) {
                fail_image(r, rc, i, err);
                return false;
        }
        return true;
}

/* Whether part i is a large image for the pool's scheduling, from its
 * header (a broken one fails when it is decoded). */
static bool part_is_large(struct pipe_req *r, int i)
{
        struct img_info info;
        char err[256];

        if (img_probe(r->parts[i].data, r->parts[i].len, &r->p->opts.img.limits, err, sizeof err, &info) < 0)
                return false;
        return (int64_t)info.width * info.height > WPOOL_LARGE_PIXELS;
}

/* Whether the peer of r's socket left: the end of its stream, with
 * nothing unread before it (a pipelined request would be), or an error
 * such as a reset. A client that only shuts down its sending side and
 * waits for the answer is taken as gone too, as nginx takes it. */
static bool client_gone(struct pipe_req *r)
{
        char c;
        ssize_t n;

        if (r->client_fd < 0 || !r->run.client_fd_check)
                return false;
        n = recv(r->client_fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
        return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
}

/* On a pool thread: one of r's images to its tensor; after the last one,
 * inference. Image by image, so that the requests being decoded take
 * turns: a small one waits for at most one image of each large one ahead.
 * The tensors are allocated at the first image, so that requests waiting
 * for a worker hold their bodies only. */
static enum wpool_step decode_step(struct wpool_job *job)
{
        struct pipe_req *r = job->userdata;
        const struct generation *g = r->mv->g;
        int i = r->next_part;

        if (atomic_load(&r->p->stopping)) {
                pipe_req_fail(r, API_E_DRAINING, "the server is shutting down");
                goto done;
        }
        /* Nobody waits for the answer: the pool's time goes to others. */
        if (client_gone(r)) {
                pipe_req_fail(r, API_E_CLIENT_GONE, "the client closed the connection while image %d of %d was due",
                              i + 1, r->n_images);
                goto done;
        }
        if (i == 0) {
                r->pixels_left = r->p->opts.max_request_pixels;
                r->tensors = malloc(sizeof(float) * g->image_floats * (size_t)r->n_images);
                if (!r->tensors) {
                        pipe_req_fail(r, API_E_OVERLOADED, "out of memory; retry later");
                        goto done;
                }
        }
        if (!prepare_image(r, i))
                goto done;
        if (++r->next_part < r->n_images) {
                job->large = part_is_large(r, r->next_part);
                return WPOOL_AGAIN;
        }
        /* The parts pointed into the body (or the front end's memory): both go. */
        free(r->parts);
        r->parts = NULL;
        pipe_req_body_release(r);
        start_inference(r);
        return WPOOL_DONE;
done:
        finish(r);
        return WPOOL_DONE;
}

/* Admission: charges what r's n images will need before any of it is
 * allocated (their logits, the bound of the answer and, with_tensors,
 * their tensors: a ready tensor was reserved by the front end), so that
 * the requests being decoded or queued never hold more than the budget;
 * then allocates the outputs. false: r failed (503; 413 when it could
 * never fit). */
static bool admit(struct pipe_req *r, int n, bool with_tensors)
{
        const struct pipe_opts *o = &r->p->opts;
        const struct generation *g = r->mv->g;
        size_t floats = (size_t)g->info->classes + (with_tensors ? g->image_floats : 0);
        int64_t bytes = (int64_t)(sizeof(float) * (size_t)n * floats) +
                        (int64_t)(r->run.answer_fixed + (size_t)n * r->run.answer_per_image);
        int rc;

        if (n < 1 || n > o->max_images) {
                pipe_req_fail(r, API_E_TOO_LARGE, "more than %d images in one request", o->max_images);
                return false;
        }
        if (!batch_has_room(g->batch, n)) {
                pipe_req_fail(r, API_E_OVERLOADED, "the queue is full; retry later");
                return false;
        }
        if (bytes > o->max_client_share) {
                pipe_req_fail(r, API_E_TOO_LARGE, "%d images need %lld bytes of memory, more than one client may "
                              "hold (max-client-share, %lld bytes): send fewer images per request", n,
                              (long long)bytes, (long long)o->max_client_share);
                return false;
        }
        if ((rc = pipe_req_reserve(r, bytes)) < 0) {
                char what[64];
                snprintf(what, sizeof what, "%d images need %lld bytes", n, (long long)bytes);
                pipe_req_fail_budget(r, rc, what);
                return false;
        }
        r->n_images = n;
        r->logits = malloc(sizeof(float) * (size_t)g->info->classes * (size_t)n);
        if (r->run.mode == PIPE_JOB_PER_IMAGE)
                r->jobs = calloc((size_t)n, sizeof *r->jobs);
        if (!r->logits || (r->run.mode == PIPE_JOB_PER_IMAGE && !r->jobs)) {
                pipe_req_fail(r, API_E_OVERLOADED, "out of memory; retry later");
                return false;
        }
        return true;
}

/* r's inputs (r->run) admitted and set up: decoding to come (true), or a
 * ready tensor taken over. false: r failed. */
static bool take_inputs(struct pipe_req *r, bool take_parts)
{
        if (take_parts) {
                r->parts = (struct pipe_part *)r->run.parts;   /* the parse's, taken over */
                r->run.parts = r->parts;
        }
        if (r->run.n < 1 || (!r->run.parts == !r->run.tensor)) {
                if (r->run.tensor) {
                        free(r->run.tensor);
                        r->run.tensor = NULL;
                }
                pipe_req_fail(r, API_E_INTERNAL, "a request without inputs");
                return false;
        }
        if (r->run.tensor) {
                r->tensors = r->run.tensor;   /* taken over */
                r->run.tensor = NULL;
        }
        if (!admit(r, r->run.n, r->run.parts != NULL))
                return false;
        if (r->run.parts && !take_parts) {
                r->parts = malloc(sizeof *r->parts * (size_t)r->run.n);
                if (!r->parts) {
                        pipe_req_fail(r, API_E_OVERLOADED, "out of memory; retry later");
                        return false;
                }
                memcpy(r->parts, r->run.parts, sizeof *r->parts * (size_t)r->run.n);
        }
        r->run.parts = NULL;   /* the caller's array may go */
        r->next_part = 0;
        return true;
}

/* On a pool thread: the front end's parse, then the images' decoding (as
 * the next steps of the same job), or the ready tensor to the batcher. */
static enum wpool_step parse_step(struct wpool_job *job)
{
        struct pipe_req *r = job->userdata;

        if (atomic_load(&r->p->stopping)) {
                pipe_req_fail(r, API_E_DRAINING, "the server is shutting down");
                goto done;
        }
        if (r->run.parse(r, r->run.userdata) < 0) {
                if (!r->failed)
                        pipe_req_fail(r, API_E_INVALID_REQUEST, "the request could not be parsed");
                goto done;
        }
        if (!take_inputs(r, r->run.parts != NULL))
                goto done;
        if (r->parts) {
                job->run = decode_step;
                job->large = part_is_large(r, 0);
                return WPOOL_AGAIN;
        }
        pipe_req_body_release(r);
        start_inference(r);
        return WPOOL_DONE;
done:
        finish(r);
        return WPOOL_DONE;
}

/* Hands r's job to the pool. false: the pool is full (r failed). */
static bool submit_work(struct pipe_req *r, wpool_run_fn fn, bool large)
{
        r->wjob = (struct wpool_job){ .run = fn, .userdata = r, .large = large };
        if (wpool_submit(r->p->pool, &r->wjob) == 0)
                return true;
        struct wpool_stats ws;
        wpool_stats_snapshot(r->p->pool, &ws);
        pipe_req_fail(r, API_E_OVERLOADED, "%d requests are being decoded, the limit (decode-threads + "
                      "decode-queue); retry later", ws.threads + ws.queue_capacity);
        return false;
}

int pipe_run(struct pipe_req *r, const struct pipe_run *run)
{
        if (!r->mv || !run->done) {
                pipe_req_fail(r, API_E_INTERNAL, "a request without a model");
                return -EINVAL;
        }
        r->run = *run;
        r->run_ns = time_now_ns();
        if (atomic_load(&r->p->stopping)) {
                pipe_req_fail(r, API_E_DRAINING, "the server is shutting down");
                return -ESHUTDOWN;
        }
        if (run->parse)
                return submit_work(r, parse_step, false) ? 0 : -EAGAIN;
        if (!take_inputs(r, false))
                return -EAGAIN;
        if (r->parts)
                return submit_work(r, decode_step, part_is_large(r, 0)) ? 0 : -EAGAIN;
        start_inference(r);
        return 0;
}

/* ---- results ----------------------------------------------------------------- */

void pipe_req_stages(const struct pipe_req *r, struct trace_stages *ret_stages)
{
        *ret_stages = (struct trace_stages){ .decode_ns = r->run_ns, .queue_ns = r->submit_ns,
                                              .infer_ns = r->job.taken_ns, .done_ns = r->done_ns };
}

const float *pipe_req_logits(const struct pipe_req *r, int i)
{
        const struct generation *g = pipe_req_model(r);

        if (!g || !r->logits || i < 0 || i >= r->n_images)
                return NULL;
        return r->logits + (size_t)i * (size_t)g->info->classes;
}

int pipe_req_top_k(const struct pipe_req *r, int i, int k, int *ret_index, float *ret_prob)
{
        const struct generation *g = pipe_req_model(r);
        const float *x = pipe_req_logits(r, i);

        if (!x)
                return 0;
        int classes = g->info->classes;
        if (k > classes)
                k = classes;
        float max = x[0];
        double sum = 0;
        for (int c = 1; c < classes; c++)
                if (x[c] > max)
                        max = x[c];
        for (int c = 0; c < classes; c++)
                sum += exp((double)(x[c] - max));
        /* Insertion into the k best so far: k is small (top-k). */
        int n = 0;
        for (int c = 0; c < classes; c++) {
                int at = n < k ? n : k;
                while (at > 0 && x[ret_index[at - 1]] < x[c])
                        at--;
                if (at >= k)
                        continue;
                int last = n < k ? n : k - 1;
                for (int j = last; j > at; j--)
                        ret_index[j] = ret_index[j - 1];
                ret_index[at] = c;
                if (n < k)
                        n++;
        }
        for (int j = 0; j < n; j++)
                ret_prob[j] = (float)(exp((double)(x[ret_index[j]] - max)) / sum);
        return n;
}
