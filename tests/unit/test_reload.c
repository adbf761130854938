/* reload: its states (idle, running, ready, back to idle) with a loader
 * that waits for the test, results and errors handed over, one load at a
 * time. */
#include "check.h"
#include "reload.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

/* The input of the fake loader: it waits for gate_open, then returns r
 * and, on success, result. */
struct fake {
        atomic_bool gate_open;
        atomic_int calls;
        int r;
        void *result;
};

static int fake_load(const void *input, char *err, size_t err_len, void **ret_result)
{
        struct fake *f = (struct fake *)input;
        struct timespec ts = { .tv_sec = 0, .tv_nsec = 1000000 };

        atomic_fetch_add(&f->calls, 1);
        while (!atomic_load(&f->gate_open))
                nanosleep(&ts, NULL);
        if (f->r < 0) {
                snprintf(err, err_len, "fake load failed (%d)", f->r);
                return f->r;
        }
        *ret_result = f->result;
        return 0;
}

/* Waits up to 10 s for the loader to return. */
static bool wait_ready(const struct reload *rl)
{
        struct timespec ts = { .tv_sec = 0, .tv_nsec = 1000000 };

        for (int i = 0; i < 10000 && !reload_ready(rl); i++)
                nanosleep(&ts, NULL);
        return reload_ready(rl);
}

static void test_idle(void)
{
        struct reload rl = RELOAD_INIT;
        char err[64] = "untouched";
        void *got = &rl;

        CHECK(!reload_running(&rl));
        CHECK(!reload_ready(&rl));
        CHECK_EQ(reload_finish(&rl, err, sizeof err, &got), -ENOENT);
        CHECK(got == &rl);
        CHECK_EQ(strcmp(err, "untouched"), 0);
}

static void test_success(void)
{
        struct reload rl = RELOAD_INIT;
        int token;
        struct fake f = { .result = &token }, other = { .result = NULL };
        char err[64] = "";
        void *got = NULL;

        REQUIRE(reload_start(&rl, fake_load, &f) == 0);
        CHECK(reload_running(&rl));
        /* The gate is closed: the load cannot have returned. */
        CHECK(!reload_ready(&rl));
        /* One load at a time: the second is refused, its loader never runs. */
        atomic_store(&other.gate_open, true);
        CHECK_EQ(reload_start(&rl, fake_load, &other), -EBUSY);
        atomic_store(&f.gate_open, true);
        REQUIRE(wait_ready(&rl));
        CHECK(reload_running(&rl));
        CHECK_EQ(reload_finish(&rl, err, sizeof err, &got), 0);
        CHECK(got == &token);
        CHECK(!reload_running(&rl));
        CHECK(!reload_ready(&rl));
        CHECK_EQ(atomic_load(&f.calls), 1);
        CHECK_EQ(atomic_load(&other.calls), 0);
        /* Finished: nothing more to hand over. */
        CHECK_EQ(reload_finish(&rl, err, sizeof err, &got), -ENOENT);
}

static void test_failure_then_again(void)
{
        struct reload rl = RELOAD_INIT;
        int token;
        struct fake bad = { .r = -EBADMSG }, good = { .result = &token };
        char err[64] = "";
        void *got = &rl;

        atomic_store(&bad.gate_open, true);
        REQUIRE(reload_start(&rl, fake_load, &bad) == 0);
        REQUIRE(wait_ready(&rl));
        CHECK_EQ(reload_finish(&rl, err, sizeof err, &got), -EBADMSG);
        CHECK(got == &rl);   /* untouched on failure */
        CHECK_CONTAINS(err, "fake load failed (-74)");
        CHECK(!reload_running(&rl));
        /* A failed load leaves the unit idle: the next SIGHUP can load. */
        atomic_store(&good.gate_open, true);
        REQUIRE(reload_start(&rl, fake_load, &good) == 0);
        /* reload_finish joins whether or not the load has returned. */
        CHECK_EQ(reload_finish(&rl, err, sizeof err, &got), 0);
        CHECK(got == &token);
        CHECK_EQ(atomic_load(&good.calls), 1);
}

int main(void)
{
        test_idle();
        test_success();
        test_failure_then_again();
        return CHECK_DONE();
}
