/* kserve_pipe: gRPC infer requests onto the decoding pool and the batcher. */
#include "kserve_pipe.h"
#include "batcher.h"
#include "generation.h"
#include "util.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* One request's work, charged to its client. */
struct kp_work {
        struct kpipe *p;
        struct kserve_infer *job;
        struct dec_job djob;
        int next;                    /* the next image to decode */
        int64_t pixels_left;
        int64_t submit_ns;
        struct batch_job *jobs;      /* [n], one per image */
        atomic_int pending;
        atomic_int error;
        size_t charged;
};

int kpipe_new(const struct kpipe_opts *opts, struct kpipe **ret)
{
        struct kpipe *p;

        if (!opts->dec || !opts->budget)
                return -EINVAL;
        if (!(p = calloc(1, sizeof *p)))
                return -ENOMEM;
        p->opts = *opts;
        *ret = p;
        return 0;
}

struct kpipe *kpipe_free(struct kpipe *p)
{
        free(p);
        return NULL;
}

void kpipe_stop(struct kpipe *p)
{
        atomic_store(&p->stopping, true);
}

static void work_done(struct kp_work *w, int status)
{
        struct kserve_infer *job = w->job;
        struct budget *b = w->p->opts.budget;
        struct budget_client *c = job->client;
        size_t charged = w->charged;

        if (w->jobs && status == 0) {
                int64_t taken = 0;
                for (int i = 0; i < job->req->n; i++) {
                        const struct batch_job *j = &w->jobs[i];
                        if (j->taken_ns && (!taken || j->taken_ns < taken))
                                taken = j->taken_ns;
                        if (j->forward_ns > job->forward_ns)
                                job->forward_ns = j->forward_ns;
                        if (j->batch_size > job->batch_size)
                                job->batch_size = j->batch_size;
                }
                job->queue_ns = taken ? taken - w->submit_ns : -1;
        }
        free(w->jobs);
        free(w);
        budget_release(b, c, (int64_t)charged);
        kserve_infer_done(job, status);
}

static void on_image_done(struct batch_job *bj, int status)
{
        struct kp_work *w = bj->userdata;
        int none = 0;

        if (status)
                atomic_compare_exchange_strong(&w->error, &none, status);
        if (atomic_fetch_sub(&w->pending, 1) == 1)
                work_done(w, atomic_load(&w->error));
}

/* The request's tensors are ready: one job per image into the batcher of
 * its generation. Any thread. */
static void submit_images(struct kp_work *w)
{
        struct kserve_infer *job = w->job;
        struct generation *g = job->g;
        int n = job->req->n, i, r = 0;

        if (time_now_ns() > job->deadline_ns) {
                work_done(w, -ETIMEDOUT);
                return;
        }
        if (atomic_load(&w->p->stopping)) {
                work_done(w, -ESHUTDOWN);
                return;
        }
        w->submit_ns = time_now_ns();
        atomic_store(&w->pending, n);
        for (i = 0; i < n; i++) {
                w->jobs[i] = (struct batch_job){ .n = 1, .images = job->req->tensor + (size_t)i * g->image_floats,
                                                 .logits = job->logits + (size_t)i * (size_t)g->info->classes,
                                                 .deadline_ns = job->deadline_ns, .done = on_image_done,
                                                 .userdata = w };
                if ((r = batch_submit(g->batch, &w->jobs[i])) < 0) {
                        int none = 0;
                        atomic_compare_exchange_strong(&w->error, &none, r);
                        break;
                }
        }
        /* Jobs never submitted never call back. */
        if (i < n && atomic_fetch_sub(&w->pending, n - i) == n - i)
                work_done(w, atomic_load(&w->error));
}

/* On a decoding thread: one BYTES image into its tensor; after the last,
 * the batcher. */
static enum dec_step decode_step(struct dec_job *dj)
{
        struct kp_work *w = dj->userdata;
        struct kserve_infer *job = w->job;
        struct v2_request *r = job->req;
        struct generation *g = job->g;
        const struct kpipe_opts *o = &w->p->opts;
        int i = w->next, e;
        struct img_info info;

        if (atomic_load(&w->p->stopping)) {
                work_done(w, -ESHUTDOWN);
                return DEC_DONE;
        }
        if (time_now_ns() > job->deadline_ns) {
                work_done(w, -ETIMEDOUT);
                return DEC_DONE;
        }
        if (i == 0) {
                size_t bytes = sizeof(float) * g->image_floats * (size_t)r->n;
                /* Charged to the request: freed (and released) with it. */
                if ((e = budget_charge(o->budget, job->client, (int64_t)bytes)) < 0) {
                        work_done(w, e);
                        return DEC_DONE;
                }
                if (!(r->tensor = malloc(bytes))) {
                        budget_release(o->budget, job->client, (int64_t)bytes);
                        work_done(w, -ENOMEM);
                        return DEC_DONE;
                }
                w->pixels_left = o->max_request_pixels;
        }
        const struct v2_image *im = &r->images[i];
        e = im->len ? img_probe(im->data, im->len, &o->img.limits, job->err, sizeof job->err, &info) : -EBADMSG;
        if (e == 0) {
                int64_t px = (int64_t)info.width * info.height;
                if (px > w->pixels_left) {
                        snprintf(job->err, sizeof job->err, "image %d: the request's images hold more than %lld "
                                 "pixels in all (max-request-pixels)", i + 1, (long long)o->max_request_pixels);
                        work_done(w, -E2BIG);
                        return DEC_DONE;
                }
                w->pixels_left -= px;
                e = img_prepare(im->data, im->len, &o->img, &g->info->preproc, r->tensor + (size_t)i * g->image_floats,
                                job->err, sizeof job->err);
        }
        if (e < 0) {
                char what[sizeof job->err];
                snprintf(what, sizeof what, "%s", im->len ? job->err : "empty image");
                snprintf(job->err, sizeof job->err, "image %d: %.200s", i + 1, what);
                work_done(w, e == -EINVAL ? -EBADMSG : e);
                return DEC_DONE;
        }
        if (++w->next < r->n) {
                struct img_info ni;
                char err[64];
                dj->large = img_probe(r->images[w->next].data, r->images[w->next].len, &o->img.limits, err, sizeof err,
                                      &ni) == 0 && (int64_t)ni.width * ni.height > DEC_LARGE_PIXELS;
                return DEC_AGAIN;
        }
        submit_images(w);
        return DEC_DONE;
}

int kpipe_submit(struct kpipe *p, struct kserve_infer *job)
{
        struct kp_work *w;
        int n = job->req->n, r;
        size_t bytes = sizeof *w + sizeof(struct batch_job) * (size_t)n;

        if (atomic_load(&p->stopping))
                return -ESHUTDOWN;
        if (!batch_has_room(job->g->batch, n))
                return -EAGAIN;
        if ((r = budget_charge(p->opts.budget, job->client, (int64_t)bytes)) < 0)
                return r;
        w = calloc(1, sizeof *w);
        struct batch_job *jobs = calloc((size_t)n, sizeof *jobs);
        if (!w || !jobs) {
                free(w);
                free(jobs);
                budget_release(p->opts.budget, job->client, (int64_t)bytes);
                return -ENOMEM;
        }
        w->p = p;
        w->job = job;
        w->jobs = jobs;
        w->charged = bytes;
        if (job->req->datatype == V2_FP32) {
                submit_images(w);
                return 0;
        }
        w->djob = (struct dec_job){ .run = decode_step, .userdata = w };
        if ((r = dec_submit(p->opts.dec, &w->djob)) < 0) {
                free(w->jobs);
                free(w);
                budget_release(p->opts.budget, job->client, (int64_t)bytes);
                return -EAGAIN;
        }
        return 0;
}
