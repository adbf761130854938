/* decoder: the pool's bound, steps taking turns, the lane kept for small
 * steps, and jobs still queued run by wpool_free. */
#include "check.h"
#include "workpool.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* A job of `steps` steps, each sleeping step_ms; records the order of
 * completions. */
struct tjob {
        struct wpool_job job;
        int steps, done_steps, step_ms;
        atomic_bool gate_open;      /* the first step waits for it (holds a thread) */
        bool gated;
        int finished_as;            /* 1-based place among finished jobs */
};

static atomic_int finished;         /* places handed out */
static atomic_int recorded;         /* jobs whose place and steps are written: what the test waits for */
static atomic_int running_large, max_running_large;

static void sleep_ms(int ms)
{
        struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000 };
        nanosleep(&ts, NULL);
}

static enum wpool_step run(struct wpool_job *job)
{
        struct tjob *t = job->userdata;

        if (job->large) {
                int now = atomic_fetch_add(&running_large, 1) + 1;
                int max = atomic_load(&max_running_large);
                while (now > max && !atomic_compare_exchange_weak(&max_running_large, &max, now))
                        ;
        }
        while (t->gated && !atomic_load(&t->gate_open))
                sleep_ms(1);
        sleep_ms(t->step_ms);
        if (job->large)
                atomic_fetch_sub(&running_large, 1);
        if (++t->done_steps < t->steps)
                return WPOOL_AGAIN;
        t->finished_as = atomic_fetch_add(&finished, 1) + 1;
        atomic_fetch_add(&recorded, 1);   /* after the writes: the waiter may read them */
        return WPOOL_DONE;
}

static void init(struct tjob *t, int steps, int step_ms, bool large)
{
        memset(t, 0, sizeof *t);
        t->steps = steps;
        t->step_ms = step_ms;
        t->job = (struct wpool_job){ .run = run, .userdata = t, .large = large };
}

static void wait_finished(int n)
{
        for (int i = 0; i < 5000 && atomic_load(&recorded) < n; i++)
                sleep_ms(1);
}

static void test_bad_options(void)
{
        struct wpool *p = NULL;

        CHECK(wpool_new(&(struct wpool_opts){ .threads = -1, .queue = 1 }, &p) == -EINVAL);
        CHECK(wpool_new(&(struct wpool_opts){ .threads = 1, .queue = 0 }, &p) == -EINVAL);
        CHECK(wpool_new(&(struct wpool_opts){ .threads = WPOOL_MAX_THREADS + 1, .queue = 1 }, &p) == -EINVAL);
        CHECK(p == NULL);
        CHECK(wpool_free(NULL) == NULL);
}

/* 1 thread, queue 1: two jobs in, the third refused and counted; a long
 * job's steps let a short one that came later finish first. */
static void test_bound_and_turns(void)
{
        struct wpool *p;
        struct tjob a, b, c;
        struct wpool_stats st;

        atomic_store(&finished, 0);
        atomic_store(&recorded, 0);
        REQUIRE(wpool_new(&(struct wpool_opts){ .threads = 1, .queue = 1 }, &p) == 0);
        init(&a, 5, 20, false);
        a.gated = true;
        init(&b, 1, 1, false);
        init(&c, 1, 1, false);
        CHECK(wpool_submit(p, &a.job) == 0);
        CHECK(wpool_submit(p, &b.job) == 0);
        CHECK(wpool_submit(p, &c.job) == -EAGAIN);
        wpool_stats_snapshot(p, &st);
        CHECK(st.threads == 1 && st.queue_capacity == 1 && st.rejected == 1);
        atomic_store(&a.gate_open, true);
        wait_finished(2);
        CHECK_MSG(b.finished_as == 1 && a.finished_as == 2, "b %d, a %d", b.finished_as, a.finished_as);
        CHECK(a.done_steps == 5);
        wpool_stats_snapshot(p, &st);
        CHECK(st.jobs == 2 && st.queued == 0 && st.busy == 0);
        p = wpool_free(p);
}

/* 3 threads: large steps never use more than 2, so small ones pass. */
static void test_small_lane(void)
{
        struct wpool *p;
        struct tjob big[4], small;

        atomic_store(&finished, 0);
        atomic_store(&recorded, 0);
        atomic_store(&max_running_large, 0);
        REQUIRE(wpool_new(&(struct wpool_opts){ .threads = 3, .queue = 8 }, &p) == 0);
        for (int i = 0; i < 4; i++) {
                init(&big[i], 3, 30, true);
                CHECK(wpool_submit(p, &big[i].job) == 0);
        }
        sleep_ms(10);
        init(&small, 1, 1, false);
        CHECK(wpool_submit(p, &small.job) == 0);
        wait_finished(5);
        CHECK_MSG(small.finished_as == 1, "the small job finished as %d", small.finished_as);
        CHECK_MSG(atomic_load(&max_running_large) == 2, "%d large steps at once", atomic_load(&max_running_large));
        p = wpool_free(p);
}

/* wpool_free runs what is queued before it returns. */
static void test_free_drains(void)
{
        struct wpool *p;
        struct tjob t[6];

        atomic_store(&finished, 0);
        atomic_store(&recorded, 0);
        REQUIRE(wpool_new(&(struct wpool_opts){ .threads = 2, .queue = 4 }, &p) == 0);
        for (int i = 0; i < 6; i++) {
                init(&t[i], 2, 5, false);
                CHECK(wpool_submit(p, &t[i].job) == 0);
        }
        p = wpool_free(p);
        CHECK(atomic_load(&finished) == 6);
}

int main(void)
{
        test_bad_options();
        test_bound_and_turns();
        test_small_lane();
        test_free_drains();
        return CHECK_DONE();
}
