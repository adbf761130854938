/* pipeline: a request's work from its inputs to its outputs, as one line:
 * (parse) -> decode and preprocess on the worker pool -> the batcher of
 * its model version -> one completion callback. It owns what a request
 * makes the server hold (body, parts, tensors, logits, batch jobs, the
 * pending count, the deadline, the model version's reference) and charges
 * it to the memory budget (server/budget.h) before it is allocated. It
 * knows nothing of any transport: HTTP (http.c) and other front ends hand
 * it their inputs and turn the completion into their answer.
 *
 * Life of a request (any front end):
 *
 *   struct pipe_req *r;
 *   pipe_req_new(pipe, client_key, key_len, &r);      // client_key: its address (budget share)
 *   rc = pipe_req_acquire(r, "b0", 2, 0);             // model "b0", highest version; NULL name:
 *                                                    // the default model. -ENOENT/-ENODEV: 404
 *   // inputs, either encoded images (BYTES), pointing into memory that
 *   // stays valid until the completion:
 *   struct pipe_part parts[2] = { { jpeg, jpeg_len }, { png, png_len } };
 *   struct pipe_run run = { .mode = PIPE_JOB_PER_IMAGE, .parts = parts, .n = 2,
 *                           .answer_fixed = 1024, .answer_per_image = 4096,
 *                           .done = on_done, .userdata = my_call };
 *   // or a ready FP32 NCHW tensor [n][3][size][size] (size: pipe_req_model(r)->info->preproc.size),
 *   // reserved first (pipe_req_reserve: charged until the request's work is released),
 *   // then malloc'ed and taken over:
 *   //   rc = pipe_req_reserve(r, bytes); t = malloc(bytes); ...; run.tensor = t; run.n = n;
 *   if (pipe_run(r, &run) < 0)                          // done never fires; r->err, r->msg say why
 *           answer_error(r->err, r->msg), pipe_req_free(r);
 *
 *   static void on_done(struct pipe_req *r, void *userdata)  // once, on some pipeline thread
 *   {
 *           if (r->failed) ... r->err (enum api_error: its HTTP status is http_error_status's), r->msg
 *           else for each image i: pipe_req_top_k(r, i, k, idx, prob) or
 *                pipe_req_logits(r, i) -> [classes] floats (softmax them for probabilities)
 *           ... labels: api_labels_get(pipe_req_model(r)->labels, idx[j])
 *           // hand r back to the front end's own thread, answer, then pipe_req_free(r)
 *   }
 *
 * Limits (all from struct pipe_opts, the same as HTTP's): images per
 * request (max_images), pixels per image and per request, bytes per
 * encoded image, the deadline from pipe_req_new to the start of inference,
 * the memory budget and the share of one client, the worker pool's queue
 * (503 beyond: API_E_OVERLOADED) and the batcher's queue.
 *
 * Threads: pipe_* functions from any thread; a request is used by one
 * thread at a time (the front end until pipe_run, then the pipeline until
 * done fires, then the front end again).
 */
#ifndef EFFNET_SERVER_PIPELINE_H
#define EFFNET_SERVER_PIPELINE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "api.h"
#include "batcher.h"
#include "budget.h"
#include "generation.h"
#include "image.h"
#include "registry.h"
#include "trace.h"
#include "workpool.h"

struct pipe_opts {
        int workers;                 /* worker pool threads (decoding, parsing); 0 = usable CPUs (at most 8) */
        int queue;                   /* requests that may wait for a worker; 503 beyond */
        int64_t memory_budget;       /* bytes requests may hold over all clients */
        int64_t max_client_share;    /* of memory_budget, per client */
        int max_images;              /* per request */
        int64_t deadline_ms;         /* from pipe_req_new to the start of inference */
        struct img_opts img;         /* decode limits */
        int64_t max_request_pixels;  /* encoded pixels of all of a request's images together */
};

struct pipeline;

/* The pipeline over registry reg (not owned; it must outlive the
 * pipeline): its budget and worker pool. -EINVAL, -ENOMEM, thread errors. */
int pipe_new(const struct pipe_opts *opts, struct registry *reg, struct pipeline **ret_pipe);

/* Runs the pool's queued work, joins its threads, frees it. No request may
 * be in it. Accepts NULL; returns NULL. */
struct pipeline *pipe_free(struct pipeline *p);

/* From now on every request's next step completes it with API_E_DRAINING
 * (the server stops: nothing new reaches a batcher). */
void pipe_stop(struct pipeline *p);

struct budget *pipe_budget(struct pipeline *p);
struct registry *pipe_registry(struct pipeline *p);
const struct pipe_opts *pipe_get_opts(const struct pipeline *p);
void pipe_pool_stats(struct pipeline *p, struct wpool_stats *ret_stats);

/* One encoded image: JPEG or PNG bytes. */
struct pipe_part {
        const void *data;
        size_t len;
};

enum pipe_mode {
        PIPE_ONE_JOB,          /* all images in one batch job, never split across passes (/v1) */
        PIPE_JOB_PER_IMAGE,    /* one job per image: they share passes with other requests (/v2) */
};

struct pipe_req;
typedef void (*pipe_done_fn)(struct pipe_req *r, void *userdata);

/* A step the front end runs on a pool thread before the images are
 * decoded (e.g. parsing a large body): it fills r->run's inputs (parts or
 * tensor, n, answer_per_image). Returns 0, or fails r (pipe_req_fail)
 * and returns negative. */
typedef int (*pipe_parse_fn)(struct pipe_req *r, void *userdata);

/* What pipe_run does. Exactly one of parse, parts and tensor. */
struct pipe_run {
        enum pipe_mode mode;
        pipe_parse_fn parse;          /* run first, on a pool thread; fills the fields below */
        const struct pipe_part *parts; /* [n] encoded images, valid until done; the array is copied (from
                                       * parse: malloc'ed, and taken over) */
        float *tensor;                /* [n][3][size][size] normalized NCHW, malloc'ed: taken over (reserve its
                                       * bytes first with pipe_req_reserve) */
        int n;                        /* images, 1..max_images */
        size_t answer_fixed;          /* the bound of the front end's answer: fixed bytes... */
        size_t answer_per_image;      /* ...plus this per image; charged at admission */
        bool numbered;                /* failures name the image: "part N: " (PIPE_ONE_JOB) or "image N: " */
        bool client_fd_check;         /* between images, end early when client_fd's peer left (API_E_CLIENT_GONE) */
        pipe_done_fn done;
        void *userdata;
};

/* One request. Fields marked "result" are read by the front end once done
 * fired; the rest is private to the pipeline. */
struct pipe_req {
        struct pipeline *p;
        struct reg_version *mv;       /* the model version's reference (pipe_req_acquire), or NULL */
        struct budget_client *client; /* its client's account (a reference); NULL: the total only */
        int client_fd;                /* a socket whose peer leaving ends the request; -1: none */
        int64_t start_ns, deadline_ns;
        struct pipe_run run;

        /* The body the front end received, when it keeps it here
         * (pipe_req_append): its capacity charged. Parts may point into it;
         * it goes once the images are decoded. */
        uint8_t *body;
        size_t len, cap;

        /* result: the failure (done fired with failed set). */
        bool failed;
        enum api_error err;
        char msg[256];

        /* result: the outputs. */
        int n_images;
        float *logits;                /* [n_images][classes] */
        int status;                   /* the batch jobs' first error (0, -ETIMEDOUT, -EIO...): failed says it */
        int64_t run_ns;               /* pipe_run took its inputs; 0 before */
        int64_t submit_ns;            /* handed to the batcher; 0 before */
        int64_t done_ns;              /* done fired; 0 before */
        struct batch_job job;         /* PIPE_ONE_JOB: the job; else the first pass, longest, largest batch */

        /* Private. */
        struct pipe_part *parts;      /* [n] copy of run.parts */
        int next_part;
        int64_t pixels_left;
        float *tensors;               /* [n][3][size][size] */
        struct batch_job *jobs;       /* PIPE_JOB_PER_IMAGE: [n] */
        atomic_int pending;
        atomic_int job_error;
        int64_t reserved;             /* charged until pipe_req_release_work */
        struct wpool_job wjob;
};

/* A new request of the client named by key (its address, up to
 * BUDGET_MAX_KEY bytes; NULL: none), its deadline from now. -ENOMEM. */
int pipe_req_new(struct pipeline *p, const void *key, size_t key_len, struct pipe_req **ret_req);

/* Frees r and what it holds, its charges and reference given back. Not
 * while it runs (between pipe_run and done). Accepts NULL; returns NULL. */
struct pipe_req *pipe_req_free(struct pipe_req *r);

/* Gives back everything r holds but its record and failure: body,
 * tensors, logits, jobs, charges, the model version. */
void pipe_req_release_work(struct pipe_req *r);

/* Takes a reference to the model version that serves r (name of name_len
 * bytes, NULL for the default model; version 0 for the highest), giving
 * back any it held. reg_acquire's errors. */
int pipe_req_acquire(struct pipe_req *r, const char *name, size_t name_len, int64_t version);

/* Gives back r's model version (e.g. while a slow body arrives). */
void pipe_req_drop_model(struct pipe_req *r);

/* The model version r holds, or NULL. */
const struct generation *pipe_req_model(const struct pipe_req *r);

/* Charges bytes r's front end is about to allocate for it: 0, -ENOBUFS
 * (the budget is full) or -EDQUOT (the client's share is). */
int pipe_req_charge(struct pipe_req *r, int64_t bytes);
void pipe_req_uncharge(struct pipe_req *r, int64_t bytes);
/* Charges bytes until pipe_req_release_work (what the front end holds
 * for the request's work: a parsed tensor, decoded request data).
 * pipe_req_charge's errors. */
int pipe_req_reserve(struct pipe_req *r, int64_t bytes);
/* Held already and not refusable (a small answer): counted. */
void pipe_req_charge_force(struct pipe_req *r, int64_t bytes);

/* Appends n bytes to r's body, which may grow to bound bytes: its
 * capacity charged first. -E2BIG past bound, -ENOBUFS/-EDQUOT (budget),
 * -ENOMEM: then the body is released. */
int pipe_req_append(struct pipe_req *r, const void *data, size_t n, size_t bound);
void pipe_req_body_release(struct pipe_req *r);

/* Fails r with e and a message for the client. */
void pipe_req_fail(struct pipe_req *r, enum api_error e, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Fails r for a charge refused with code (-ENOBUFS, -EDQUOT), naming the setting. */
void pipe_req_fail_budget(struct pipe_req *r, int code, const char *what);

/* Starts r's work (r holds its model version): admission (its memory
 * charged, the batcher's room checked), then parse, decode, batch. 0: done
 * fires exactly once, from a pool or batcher thread, maybe before pipe_run
 * returns. Negative: r failed (r->err, r->msg) and done never fires. */
int pipe_run(struct pipe_req *r, const struct pipe_run *run);

/* Image i's logits ([classes] floats), once done fired without failure. */
const float *pipe_req_logits(const struct pipe_req *r, int i);

/* When r reached each stage (for its spans), once done fired. */
void pipe_req_stages(const struct pipe_req *r, struct trace_stages *ret_stages);

/* The k most probable classes of image i (softmax of its logits), most
 * probable first: ret_index[k] and ret_prob[k]. k is clamped to classes;
 * returns how many were written. */
int pipe_req_top_k(const struct pipe_req *r, int i, int k, int *ret_index, float *ret_prob);

#endif
