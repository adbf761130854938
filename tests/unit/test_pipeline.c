/* Unit test of the request pipeline (src/server/pipeline.c) and the model
 * registry (src/server/registry.c) without any transport: a seeded B0 in a
 * registry, requests of ready tensors and of encoded images, one job or a
 * job per image, top-k, failures (bad image, too many images, memory
 * budget, deadline, stop), every completion exactly once, every charge
 * given back; and the registry's references, versions and retirement.
 *
 *   test_pipeline CORPUS_DIR      (tests/fuzz/corpus: jpeg/ seeds)
 */
#include "check.h"
#include "effnet.h"
#include "util.h"
#include "model.h"
#include "safetensors.h"
#include "image.h"
#include "api.h"
#include "batcher.h"
#include "generation.h"
#include "registry.h"
#include "pipeline.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <string.h>
#include <unistd.h>

#define CLASSES 10

static const char *corpus;
static char weights[128];

struct call {
        pthread_mutex_t lock;
        int done;              /* completions seen: must end at exactly 1 */
};

static void on_done(struct pipe_req *r, void *userdata)
{
        struct call *c = userdata;

        pthread_mutex_lock(&c->lock);
        c->done++;
        pthread_mutex_unlock(&c->lock);
}

/* Waits (up to a minute) for c's completion; its count. */
static int wait_done(struct call *c)
{
        int64_t until = time_now_ns() + 60 * 1000000000LL;
        int n;

        for (;;) {
                pthread_mutex_lock(&c->lock);
                n = c->done;
                pthread_mutex_unlock(&c->lock);
                if (n > 0 || time_now_ns() > until)
                        break;
                usleep(1000);
        }
        usleep(2000);   /* a second completion would come now */
        pthread_mutex_lock(&c->lock);
        n = c->done;
        pthread_mutex_unlock(&c->lock);
        return n;
}

static uint8_t *load(const char *name, size_t *ret_len)
{
        char path[1024];
        FILE *f;
        uint8_t *b = malloc(1 << 20);

        snprintf(path, sizeof path, "%s/jpeg/%s", corpus, name);
        REQUIRE(b && (f = fopen(path, "rb")));
        *ret_len = fread(b, 1, 1 << 20, f);
        fclose(f);
        return b;
}

/* A model version of the seeded B0 named name, version v. */
static struct generation *version_new(const char *name, int64_t v, int max_batch)
{
        struct generation *g;
        char err[256] = "";
        struct batch_opts bo = { .max_batch = max_batch, .max_delay_us = 1000, .queue_images = 16, .workers = 1,
                                 .threads = 1 };

        REQUIRE(gen_new(&g) == 0);
        int r = effnet_model_open(weights, NULL, err, sizeof err, &g->model);
        CHECK_MSG(r == 0, "%s", err);
        REQUIRE(r == 0);
        REQUIRE(api_labels_load(NULL, CLASSES, err, sizeof err, &g->labels) == 0);
        r = batch_new(g->model, &bo, err, sizeof err, &g->batch);
        CHECK_MSG(r == 0, "%s", err);
        REQUIRE(r == 0);
        REQUIRE((g->name = strdup(name)));
        g->version = v;
        REQUIRE(gen_build_answers(g, &(struct gen_limits){ .deadline_ms = 1000, .max_images = 4 }) == 0);
        return g;
}

static struct pipe_opts opts_default(void)
{
        struct pipe_opts o = { .workers = 2, .queue = 8, .memory_budget = 64 << 20, .max_client_share = 32 << 20,
                               .max_images = 4, .deadline_ms = 60000, .img = IMG_OPTS_DEFAULT,
                               .max_request_pixels = 1 << 24 };
        return o;
}

static int64_t budget_used(struct pipeline *p)
{
        struct budget_stats bs;
        budget_stats_snapshot(pipe_budget(p), &bs);
        return bs.used;
}

/* One request to completion: 0 when done fired once (r kept for the
 * caller, who frees it), or pipe_run's error (done must not fire). */
static int run_one(struct pipeline *p, const char *model, struct pipe_run *run, struct pipe_req **ret_req)
{
        struct call c = { .lock = PTHREAD_MUTEX_INITIALIZER };
        struct pipe_req *r;

        REQUIRE(pipe_req_new(p, "k1", 2, &r) == 0);
        int rc = pipe_req_acquire(r, model, model ? strlen(model) : 0, 0);
        REQUIRE(rc == 0);
        run->done = on_done;
        run->userdata = &c;
        rc = pipe_run(r, run);
        if (rc < 0) {
                usleep(20000);
                CHECK_EQ(c.done, 0);
        } else {
                CHECK_EQ(wait_done(&c), 1);
        }
        *ret_req = r;
        return rc;
}

/* A ready tensor and the same image encoded give the same logits; one job
 * or a job per image give the same logits; top-k is the logits' order with
 * softmax probabilities. */
static void test_tensor_and_images(struct pipeline *p, const struct generation *g)
{
        size_t len;
        uint8_t *jpeg = load("baseline_420_64x48.jpg", &len);
        size_t floats = g->image_floats;
        float *t = malloc(sizeof(float) * floats * 2);
        char err[256];
        struct pipe_req *r1, *r2, *r3;

        REQUIRE(t);
        REQUIRE(img_prepare(jpeg, len, &pipe_get_opts(p)->img, &g->info->preproc, t, err, sizeof err) == 0);
        model_smooth_images(3, 1, g->info->preproc.size, t + floats);

        /* [jpeg image, smooth image] as a tensor, a job per image. */
        struct pipe_run tr = { .mode = PIPE_JOB_PER_IMAGE, .tensor = t, .n = 2 };
        REQUIRE(run_one(p, "b0", &tr, &r1) == 0);
        CHECK(!r1->failed);
        CHECK_EQ(r1->n_images, 2);
        const float *a = pipe_req_logits(r1, 0), *b = pipe_req_logits(r1, 1);
        REQUIRE(a && b);
        /* The two images differ: so do their logits (a collapsed network would not). */
        CHECK(memcmp(a, b, sizeof(float) * CLASSES) != 0);

        /* The same JPEG twice as encoded bytes in one job. */
        struct pipe_part parts[2] = { { jpeg, len }, { jpeg, len } };
        struct pipe_run ir = { .mode = PIPE_ONE_JOB, .parts = parts, .n = 2, .answer_fixed = 100,
                               .answer_per_image = 100 };
        REQUIRE(run_one(p, NULL, &ir, &r2) == 0);
        CHECK_MSG(!r2->failed, "%s", r2->msg);
        CHECK_EQ(r2->n_images, 2);
        CHECK(r2->job.batch_size == 2);
        for (int i = 0; i < 2; i++) {
                const float *x = pipe_req_logits(r2, i);
                REQUIRE(x);
                for (int c = 0; c < CLASSES; c++)
                        CHECK_MSG(fabsf(x[c] - a[c]) <= 1e-4f * (1 + fabsf(a[c])), "image %d class %d: %g vs %g", i,
                                  c, x[c], a[c]);
        }

        /* top-k: the logits' order, probabilities from softmax. */
        int idx[CLASSES + 2];
        float prob[CLASSES + 2];
        int k = pipe_req_top_k(r1, 1, CLASSES + 2, idx, prob);
        CHECK_EQ(k, CLASSES);
        double sum = 0, z = 0;
        float max = b[0];
        for (int c = 1; c < CLASSES; c++)
                max = b[c] > max ? b[c] : max;
        for (int c = 0; c < CLASSES; c++)
                z += exp((double)(b[c] - max));
        for (int j = 0; j < k; j++) {
                sum += prob[j];
                CHECK(fabs(prob[j] - exp((double)(b[idx[j]] - max)) / z) < 1e-6);
                if (j > 0)
                        CHECK(b[idx[j - 1]] >= b[idx[j]]);
        }
        CHECK(fabs(sum - 1.0) < 1e-4);
        CHECK_EQ(pipe_req_top_k(r1, 1, 3, idx, prob), 3);
        CHECK(b[idx[0]] == max);

        /* A version named that does not serve: refused before any work. */
        REQUIRE(pipe_req_new(p, NULL, 0, &r3) == 0);
        CHECK_EQ(pipe_req_acquire(r3, "b0", 2, 7), -ENODEV);
        CHECK_EQ(pipe_req_acquire(r3, "nope", 4, 0), -ENOENT);
        CHECK(pipe_req_model(r3) == NULL);
        struct pipe_run none = { .mode = PIPE_ONE_JOB, .parts = parts, .n = 1, .done = on_done };
        CHECK(pipe_run(r3, &none) < 0);
        pipe_req_free(r3);

        pipe_req_free(r1);
        pipe_req_free(r2);
        free(jpeg);
        CHECK_EQ(budget_used(p), 0);
}

/* Failures complete the request once, with the error a client gets. */
static void test_failures(struct pipeline *p)
{
        size_t len;
        uint8_t *jpeg = load("baseline_420_16x16.jpg", &len);
        struct pipe_req *r;
        uint8_t junk[64];

        memset(junk, 0x5a, sizeof junk);
        /* A part that is no image: 400, naming it. */
        struct pipe_part parts[5] = { { jpeg, len }, { junk, sizeof junk }, { jpeg, len }, { jpeg, len }, { jpeg, len } };
        struct pipe_run bad = { .mode = PIPE_JOB_PER_IMAGE, .parts = parts, .n = 2, .numbered = true };
        CHECK_EQ(run_one(p, "b0", &bad, &r), 0);
        CHECK(r->failed && r->err == API_E_INVALID_IMAGE);
        CHECK_MSG(strncmp(r->msg, "image 2: ", 9) == 0, "%s", r->msg);
        pipe_req_free(r);

        /* More images than max_images: 413, and done never fires. */
        struct pipe_run many = { .mode = PIPE_ONE_JOB, .parts = parts, .n = 5 };
        CHECK(run_one(p, "b0", &many, &r) < 0);
        CHECK(r->failed && r->err == API_E_TOO_LARGE);
        pipe_req_free(r);

        /* An answer bound beyond a client's share: 413 at admission. */
        struct pipe_run huge = { .mode = PIPE_ONE_JOB, .parts = parts, .n = 1, .answer_fixed = (size_t)40 << 20 };
        CHECK(run_one(p, "b0", &huge, &r) < 0);
        CHECK(r->failed && r->err == API_E_TOO_LARGE);
        pipe_req_free(r);

        /* Past the deadline before the decoding starts: 504. */
        struct pipe_req *late;
        struct call c = { .lock = PTHREAD_MUTEX_INITIALIZER };
        REQUIRE(pipe_req_new(p, NULL, 0, &late) == 0);
        REQUIRE(pipe_req_acquire(late, NULL, 0, 0) == 0);
        late->deadline_ns = time_now_ns() - 1;
        struct pipe_run lr = { .mode = PIPE_ONE_JOB, .parts = parts, .n = 1, .done = on_done, .userdata = &c };
        CHECK_EQ(pipe_run(late, &lr), 0);
        CHECK_EQ(wait_done(&c), 1);
        CHECK(late->failed && late->err == API_E_DEADLINE);
        pipe_req_free(late);

        free(jpeg);
        CHECK_EQ(budget_used(p), 0);
}

/* The memory budget: a second client's request that does not fit is
 * refused at admission (503) while the first one's charge is held. */
static void test_budget(struct registry *reg)
{
        struct pipe_opts o = opts_default();
        struct pipeline *p;
        struct pipe_req *hold, *r;
        size_t len;
        uint8_t *jpeg = load("baseline_420_16x16.jpg", &len);

        o.memory_budget = 4 << 20;
        o.max_client_share = 3 << 20;
        REQUIRE(pipe_new(&o, reg, &p) == 0);
        REQUIRE(pipe_req_new(p, "a", 1, &hold) == 0);
        CHECK_EQ(pipe_req_reserve(hold, 2 << 20), 0);
        CHECK_EQ(pipe_req_reserve(hold, 2 << 20), -EDQUOT);   /* its share */
        struct pipe_part part = { jpeg, len };
        /* b0 at 224: 600 KiB of tensor per image, times 3 does not fit beside 2 MiB. */
        struct pipe_run run = { .mode = PIPE_ONE_JOB, .parts = (struct pipe_part[]){ part, part, part, part }, .n = 4 };
        CHECK(run_one(p, "b0", &run, &r) < 0);
        CHECK(r->failed && r->err == API_E_OVERLOADED);
        CHECK_CONTAINS(r->msg, "memory-budget");
        pipe_req_free(r);
        pipe_req_free(hold);
        CHECK_EQ(budget_used(p), 0);
        /* The same request fits once the first is gone. */
        CHECK_EQ(run_one(p, "b0", &run, &r), 0);
        CHECK_MSG(!r->failed, "%s", r->msg);
        pipe_req_free(r);
        CHECK_EQ(budget_used(p), 0);
        /* Stopped: nothing new starts. */
        pipe_stop(p);
        CHECK(run_one(p, "b0", &run, &r) < 0);
        CHECK(r->failed && r->err == API_E_DRAINING);
        pipe_req_free(r);
        pipe_free(p);
        free(jpeg);
}

/* The registry: versions by number, the highest by default, a reference
 * keeps a retired version until it is given back, a reload may change
 * max-batch. */
static void test_registry(void)
{
        struct registry *reg;
        struct reg_version *v1, *v2, *x;

        REQUIRE(reg_new(&reg) == 0);
        CHECK_EQ(reg_acquire(reg, NULL, 0, 0, &x), -ENOENT);
        REQUIRE(reg_serve(reg, version_new("m", 1, 2)) == 0);
        REQUIRE(reg_serve(reg, version_new("m", 3, 4)) == 0);
        CHECK_EQ(reg_serving_count(reg), 2);
        REQUIRE(reg_acquire(reg, "m", 1, 0, &v2) == 0);
        CHECK_EQ(v2->g->version, 3);
        REQUIRE(reg_acquire(reg, NULL, 0, 1, &v1) == 0);   /* the only model is the default */
        CHECK_EQ(v1->g->version, 1);
        CHECK_EQ(reg_acquire(reg, "m", 1, 2, &x), -ENODEV);
        struct batch_config bc;
        batch_get_config(v2->g->batch, &bc);
        CHECK_EQ(bc.max_batch, 4);
        batch_get_config(v1->g->batch, &bc);
        CHECK_EQ(bc.max_batch, 2);

        /* Version 1 retired while held: not collected until released. */
        CHECK_EQ(reg_retire(reg, "m", 1, REG_UNAVAILABLE, "unloaded"), 0);
        CHECK_EQ(reg_retire(reg, "m", 1, REG_UNAVAILABLE, "unloaded"), -ENOENT);
        CHECK_EQ(reg_acquire(reg, "m", 1, 1, &x), -ENODEV);
        CHECK(reg_collect_retired(reg) == NULL);
        CHECK_EQ(reg_retired_count(reg), 1);
        reg_release(reg, v1);
        struct generation *old = reg_collect_retired(reg);
        CHECK(old && old->version == 1);
        gen_free(old);

        /* A second model: no default any more, until one is named. */
        REQUIRE(reg_serve(reg, version_new("n", 1, 1)) == 0);
        CHECK_EQ(reg_acquire(reg, NULL, 0, 0, &x), -EADDRNOTAVAIL);
        REQUIRE(reg_set_default(reg, "n") == 0);
        REQUIRE(reg_acquire(reg, NULL, 0, 0, &x) == 0);
        CHECK(strcmp(x->g->name, "n") == 0);
        reg_release(reg, x);
        /* A broken model is listed with its reason. */
        REQUIRE(reg_set_state(reg, "broken", REG_FAILED, "bad file") == 0);
        CHECK_EQ(reg_acquire(reg, "broken", 6, 0, &x), -ENOENT);

        /* Replacing version 3 in place: the old one retires. */
        REQUIRE(reg_serve(reg, version_new("m", 3, 1)) == 0);
        CHECK_EQ(reg_retired_count(reg), 1);
        reg_release(reg, v2);
        gen_free(reg_collect_retired(reg));
        CHECK_EQ(reg_retired_count(reg), 0);
        /* reg_serve_only: one model left. */
        REQUIRE(reg_serve_only(reg, version_new("z", 1, 1)) == 0);
        CHECK_EQ(reg_serving_count(reg), 1);
        while ((old = reg_collect_retired(reg)))
                gen_free(old);
        REQUIRE(reg_acquire(reg, NULL, 0, 0, &x) == -ENOENT);   /* the default "n" is gone */
        REQUIRE(reg_set_default(reg, NULL) == 0);
        REQUIRE(reg_acquire(reg, NULL, 0, 0, &x) == 0);
        reg_release(reg, x);
        reg_free(reg);
}

int main(int argc, char **argv)
{
        char dir[] = "/tmp/effnet-test-pipeline-XXXXXX", err[256] = "";
        struct registry *reg;
        struct pipeline *p;
        struct reg_version *v;

        REQUIRE(argc == 2);
        corpus = argv[1];
        REQUIRE(mkdtemp(dir));
        snprintf(weights, sizeof weights, "%s/b0.safetensors", dir);
        int r = model_write_seeded(weights, "b0", EFFNET_SCHEME_TIMM, CLASSES, 3, ST_F32, 1.0, err, sizeof err);
        CHECK_MSG(r == 0, "%s", err);

        test_registry();

        REQUIRE(reg_new(&reg) == 0);
        REQUIRE(reg_serve(reg, version_new("b0", 1, 4)) == 0);
        struct pipe_opts o = opts_default();
        REQUIRE(pipe_new(&o, reg, &p) == 0);
        REQUIRE(reg_acquire(reg, "b0", 2, 0, &v) == 0);
        test_tensor_and_images(p, v->g);
        reg_release(reg, v);
        test_failures(p);
        test_budget(reg);
        pipe_free(p);
        reg_free(reg);
        unlink(weights);
        rmdir(dir);
        return CHECK_DONE();
}
