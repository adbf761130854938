/* Unit test of the repository's CPU budget (src/daemon/cpushare.c): even
 * shares that fit the CPUs, named threads held or refused with the reason,
 * serving models first, and more models than CPUs. */
#include "check.h"
#include "cpushare.h"

#include <string.h>

static int held_by(const struct cpushare_model *m, int n)
{
        int sum = 0;
        for (int i = 0; i < n; i++)
                sum += m[i].workers * m[i].ret_threads;
        return sum;
}

int main(void)
{
        /* Two models that name nothing on 2 and on 8 CPUs: half each. */
        struct cpushare_model two[2] = { { .name = "a", .workers = 1 }, { .name = "b", .workers = 1 } };
        CHECK_EQ(cpushare_split(two, 2, 2), 2);
        CHECK(two[0].ret_threads == 1 && two[1].ret_threads == 1);
        CHECK_EQ(cpushare_split(two, 2, 8), 8);
        CHECK(two[0].ret_threads == 4 && two[1].ret_threads == 4);
        /* One model alone takes every CPU, as a one-model daemon does. */
        CHECK_EQ(cpushare_split(two, 1, 6), 6);
        CHECK_EQ(two[0].ret_threads, 6);
        /* Uneven: the sum still fits, nothing is left idle. */
        struct cpushare_model three[3] = { { .name = "a", .workers = 1 }, { .name = "b", .workers = 2 },
                                           { .name = "c", .workers = 1 } };
        CHECK_EQ(cpushare_split(three, 3, 8), 8);
        CHECK_EQ(held_by(three, 3), 8);
        CHECK(three[0].ret_threads == 2 && three[1].ret_threads == 1 && three[2].ret_threads == 4);

        /* Named threads are held; the others share the rest. */
        struct cpushare_model mix[3] = { { .name = "a", .workers = 1 }, { .name = "big", .workers = 2, .threads = 2 },
                                         { .name = "c", .workers = 1 } };
        CHECK_EQ(cpushare_split(mix, 3, 8), 8);
        CHECK(mix[1].ret_threads == 2 && mix[0].ret_threads == 2 && mix[2].ret_threads == 2);
        /* ... unless they leave less than a CPU to each of the others: refused, with why. */
        CHECK_EQ(cpushare_split(mix, 3, 4), 4);
        CHECK_EQ(mix[1].ret_threads, 0);
        CHECK_CONTAINS(mix[1].ret_reason, "need 4 CPUs, but only 2 of the 4 usable CPUs are left");
        CHECK(mix[0].ret_threads == 2 && mix[2].ret_threads == 2 && !mix[0].ret_reason[0]);
        /* A serving model keeps what it holds: the newcomer gets what is left. */
        mix[1].serving = true;
        CHECK_EQ(cpushare_split(mix, 3, 4), 6);
        CHECK_EQ(mix[1].ret_threads, 2);
        CHECK(mix[0].ret_threads == 1 && mix[2].ret_threads == 1);
        /* Two that name threads: the second that does not fit is refused. */
        struct cpushare_model named[2] = { { .name = "x", .workers = 1, .threads = 2 },
                                           { .name = "y", .workers = 1, .threads = 1 } };
        CHECK_EQ(cpushare_split(named, 2, 2), 2);
        CHECK(named[0].ret_threads == 2 && named[1].ret_threads == 0);
        CHECK_CONTAINS(named[1].ret_reason, "only 0 of the 2 usable CPUs");
        CHECK_EQ(cpushare_split(named, 2, 3), 3);
        CHECK(named[0].ret_threads == 2 && named[1].ret_threads == 1);

        /* More models than CPUs: one thread each, and the sum says so. */
        struct cpushare_model many[3] = { { .name = "a", .workers = 1 }, { .name = "b", .workers = 1 },
                                          { .name = "c", .workers = 1 } };
        CHECK_EQ(cpushare_split(many, 3, 2), 3);
        CHECK(many[0].ret_threads == 1 && many[1].ret_threads == 1 && many[2].ret_threads == 1);
        CHECK_EQ(cpushare_split(many, 0, 2), 0);
        return CHECK_DONE();
}
