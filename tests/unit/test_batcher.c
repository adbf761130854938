/* Unit test of the batcher (src/server/batcher.c) on a small seeded B0:
 * FIFO order, a job that fits is never split, a larger one spans passes in
 * order, deadlines, a full queue, shutdown with jobs queued, and every
 * callback exactly once. */
#include "check.h"
#include "effnet.h"
#include "util.h"
#include "model.h"
#include "safetensors.h"
#include "batcher.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <string.h>
#include <unistd.h>

#define CLASSES 10
#define MAX_JOBS 32
#define MAX_N 10

struct rec {
        struct batch_job job;
        int calls;   /* callbacks seen: must end at exactly 1 */
        int status;
        int order;   /* completion rank */
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cond = PTHREAD_COND_INITIALIZER;
static int completed;

static struct effnet_model *model;
static int size;                       /* the model's input edge */
static size_t image_floats;            /* 3 * size * size */
static float *images;                  /* [MAX_N][3][size][size] distinct smooth images */
static float logits[MAX_JOBS][MAX_N * CLASSES];
static struct rec recs[MAX_JOBS];

static void on_done(struct batch_job *job, int status)
{
        struct rec *r = job->userdata;
        pthread_mutex_lock(&lock);
        r->calls++;
        r->status = status;
        r->order = completed++;
        pthread_cond_broadcast(&cond);
        pthread_mutex_unlock(&lock);
}

static void reset(void)
{
        pthread_mutex_lock(&lock);
        memset(recs, 0, sizeof recs);
        completed = 0;
        pthread_mutex_unlock(&lock);
}

/* Job i over images [first, first + n). */
static int submit(struct batch *b, int i, int first, int n, int64_t deadline_ns)
{
        recs[i].job = (struct batch_job){ .n = n, .images = images + (size_t)first * image_floats,
                                          .logits = logits[i], .deadline_ns = deadline_ns,
                                          .done = on_done, .userdata = &recs[i] };
        return batch_submit(b, &recs[i].job);
}

static void wait_completed(int n)
{
        int64_t until = time_now_ns() + 120 * 1000000000LL;
        pthread_mutex_lock(&lock);
        while (completed < n && time_now_ns() < until) {
                pthread_mutex_unlock(&lock);
                usleep(1000);
                pthread_mutex_lock(&lock);
        }
        int got = completed;
        pthread_mutex_unlock(&lock);
        REQUIRE(got >= n);
}

static struct batch *start(int max_batch, int64_t max_delay_us, int queue_images)
{
        struct batch_opts o = { .max_batch = max_batch, .max_delay_us = max_delay_us,
                                .queue_images = queue_images, .workers = 1, .threads = 0,
                                .precision = EFFNET_FP32 };
        struct batch *b = NULL;
        char err[256] = "";
        int r = batch_new(model, &o, err, sizeof err, &b);
        CHECK_MSG(r == 0, "batch_new: %s", err);
        REQUIRE(b);
        return b;
}

/* One worker, one image a pass: callbacks come in submission order. */
static void test_fifo(void)
{
        struct batch *b = start(1, 0, 16);
        reset();
        for (int i = 0; i < 6; i++)
                CHECK_EQ(submit(b, i, i, 1, 0), 0);
        wait_completed(6);
        for (int i = 0; i < 6; i++) {
                CHECK_EQ(recs[i].order, i);
                CHECK_EQ(recs[i].status, 0);
                CHECK_EQ(recs[i].job.batch_size, 1);
        }
        b = batch_free(b);
        for (int i = 0; i < 6; i++)
                CHECK_EQ(recs[i].calls, 1);
}

/* Jobs of 3 with max_batch 4 never share a pass split across two, and a job
 * of 10 spans passes of 4, 4 and 2 with its images kept in order: its
 * logits equal those of each image run on its own. */
static void test_never_split_and_span(void)
{
        struct batch *b = start(4, 200000, 16);
        struct batch_stats st;

        reset();
        for (int i = 0; i < 4; i++)
                CHECK_EQ(submit(b, i, 0, 3, 0), 0);
        wait_completed(4);
        batch_stats_snapshot(b, &st);
        CHECK_EQ(st.max_batch, 4);
        CHECK_EQ(st.batch_sizes[3], 4);
        CHECK_EQ(st.batch_sizes[4], 0);
        for (int i = 0; i < 4; i++) {
                CHECK_EQ(recs[i].order, i);
                CHECK_EQ(recs[i].job.batch_size, 3);
        }

        reset();
        CHECK_EQ(submit(b, 0, 0, MAX_N, 0), 0);
        wait_completed(1);
        CHECK_EQ(recs[0].status, 0);
        CHECK_EQ(recs[0].job.batch_size, 4);
        for (int i = 0; i < MAX_N; i++)
                CHECK_EQ(submit(b, 1 + i, i, 1, 0), 0);
        wait_completed(1 + MAX_N);
        double worst = 0;
        for (int i = 0; i < MAX_N; i++)
                for (int c = 0; c < CLASSES; c++) {
                        double d = fabs(logits[0][i * CLASSES + c] - logits[1 + i][c]);
                        worst = d > worst ? d : worst;
                }
        CHECK_MSG(worst < 1e-3, "a spanning job's logits differ from single images by %g", worst);
        batch_stats_snapshot(b, &st);
        CHECK_EQ(st.jobs, 4 + 1 + MAX_N);
        b = batch_free(b);
}

/* A job past its deadline is dropped before inference, and says so. */
static void test_deadline(void)
{
        struct batch *b = start(2, 0, 8);
        struct batch_stats st = { 0 };

        reset();
        CHECK_EQ(submit(b, 0, 0, 2, time_now_ns() - 1), 0);
        CHECK_EQ(submit(b, 1, 0, 1, time_now_ns() + 60 * 1000000000LL), 0);
        wait_completed(2);
        CHECK_EQ(recs[0].status, -ETIMEDOUT);
        CHECK_EQ(recs[0].job.taken_ns, 0);
        CHECK_EQ(recs[1].status, 0);
        batch_stats_snapshot(b, &st);
        CHECK_EQ(st.jobs_timed_out, 1);
        CHECK_EQ(st.batch_images, 1);
        b = batch_free(b);
}

/* A queue of 4 images held by a 10 s wait for the batch to fill: the next
 * image is refused (-EAGAIN, counted), a job larger than the queue is
 * -E2BIG, a bad job -EINVAL; none of them gets a callback. batch_free then
 * runs every queued job to its end before it returns. */
static void test_full_queue_and_shutdown(void)
{
        struct batch *b = start(8, 10000000, 4);
        struct batch_stats st = { 0 };

        reset();
        CHECK_EQ(submit(b, 0, 0, 2, 0), 0);
        CHECK_EQ(submit(b, 1, 2, 2, 0), 0);
        CHECK_EQ(submit(b, 2, 0, 1, 0), -EAGAIN);
        CHECK_EQ(submit(b, 3, 0, 5, 0), -E2BIG);
        CHECK_EQ(batch_submit(b, &(struct batch_job){ .n = 0, .done = on_done }), -EINVAL);
        CHECK_EQ(batch_has_room(b, 1), 0);
        batch_stats_snapshot(b, &st);
        CHECK_EQ(st.jobs_rejected, 1);
        CHECK_EQ(st.queue_images, 4);
        int64_t t0 = time_now_ns();
        b = batch_free(b);
        /* One pass of 4 B0 images takes well under the 10 s batch delay. */
        CHECK_MSG(time_now_ns() - t0 < 9000000000LL, "shutdown waited for the batch delay");
        CHECK_EQ(completed, 2);
        CHECK_EQ(recs[0].calls, 1);
        CHECK_EQ(recs[1].calls, 1);
        CHECK_EQ(recs[0].status, 0);
        CHECK_EQ(recs[1].status, 0);
        CHECK_EQ(recs[0].order, 0);
        CHECK_EQ(recs[2].calls + recs[3].calls, 0);
}

/* Two generations' snapshots add up; the capacity is the last one's. */
static void test_stats_add(void)
{
        struct batch_stats sum = { 0 };
        struct batch_stats old = { .jobs = 3, .jobs_rejected = 1, .batches = 2, .batch_images = 5,
                                   .forward_seconds = 0.5, .queue_capacity = 8, .max_batch = 4 };
        struct batch_stats now = { .jobs = 4, .jobs_timed_out = 2, .jobs_failed = 1, .batches = 3,
                                   .batch_images = 6, .forward_seconds = 0.25, .queue_images = 2,
                                   .queue_capacity = 16, .busy_workers = 1, .max_batch = 4 };

        old.batch_sizes[1] = 1, old.batch_sizes[4] = 1;
        now.batch_sizes[2] = 3;
        old.forward_hist[0] = 2, now.forward_hist[0] = 1, now.forward_hist[BATCH_FORWARD_BUCKETS] = 2;
        batch_stats_add(&sum, &old);
        batch_stats_add(&sum, &now);
        CHECK_EQ(sum.jobs, 7);
        CHECK_EQ(sum.jobs_rejected, 1);
        CHECK_EQ(sum.jobs_timed_out, 2);
        CHECK_EQ(sum.jobs_failed, 1);
        CHECK_EQ(sum.batches, 5);
        CHECK_EQ(sum.batch_images, 11);
        CHECK(sum.forward_seconds == 0.75);
        CHECK_EQ(sum.queue_images, 2);
        CHECK_EQ(sum.busy_workers, 1);
        CHECK_EQ(sum.queue_capacity, 16);
        CHECK_EQ(sum.max_batch, 4);
        CHECK_EQ(sum.batch_sizes[1], 1);
        CHECK_EQ(sum.batch_sizes[2], 3);
        CHECK_EQ(sum.batch_sizes[4], 1);
        CHECK_EQ(sum.forward_hist[0], 3);
        CHECK_EQ(sum.forward_hist[BATCH_FORWARD_BUCKETS], 2);
}

int main(void)
{
        char dir[] = "/tmp/effnet-test-batcher-XXXXXX", path[64], err[256] = "";

        REQUIRE(mkdtemp(dir));
        snprintf(path, sizeof path, "%s/b0.safetensors", dir);
        int r = model_write_seeded(path, "b0", EFFNET_SCHEME_TIMM, CLASSES, 3, ST_F32, 1.0, err, sizeof err);
        CHECK_MSG(r == 0, "%s", err);
        r = effnet_model_open(path, NULL, err, sizeof err, &model);
        CHECK_MSG(r == 0, "%s", err);
        REQUIRE(model);
        unlink(path);
        rmdir(dir);
        size = effnet_model_info(model)->preproc.size;
        image_floats = 3 * (size_t)size * (size_t)size;
        REQUIRE((images = malloc(MAX_N * image_floats * sizeof(float))));
        model_smooth_images(11, MAX_N, size, images);

        test_stats_add();
        test_fifo();
        test_never_split_and_span();
        test_deadline();
        test_full_queue_and_shutdown();

        free(images);
        model = effnet_model_free(model);
        return CHECK_DONE();
}
