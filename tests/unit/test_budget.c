/* budget: the total and the per-client share refuse what would not fit and
 * charge nothing then, releases give back, forced charges count, clients
 * are shared by key and dropped once they hold nothing, and concurrent
 * charges never pass the total. */
#include "check.h"
#include "budget.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

static int64_t used(struct budget *b)
{
        struct budget_stats st;
        budget_stats_snapshot(b, &st);
        return st.used;
}

static int clients(struct budget *b)
{
        struct budget_stats st;
        budget_stats_snapshot(b, &st);
        return st.clients;
}

static void test_options(void)
{
        struct budget *b = NULL;

        CHECK_EQ(budget_new(&(struct budget_opts){ .total = 0, .client_share = 0 }, &b), -EINVAL);
        CHECK_EQ(budget_new(&(struct budget_opts){ .total = 10, .client_share = 11 }, &b), -EINVAL);
        CHECK_EQ(budget_new(&(struct budget_opts){ .total = 10, .client_share = 0 }, &b), -EINVAL);
        CHECK(b == NULL);
        REQUIRE(budget_new(&(struct budget_opts){ .total = 10, .client_share = 10 }, &b) == 0);
        struct budget_client *c = NULL;
        CHECK_EQ(budget_client_get(b, "", 0, &c), -EINVAL);
        char long_key[BUDGET_MAX_KEY + 1] = { 0 };
        CHECK_EQ(budget_client_get(b, long_key, sizeof long_key, &c), -EINVAL);
        CHECK(c == NULL);
        CHECK_EQ(budget_charge(b, NULL, -1), -EINVAL);
        b = budget_free(b);
        CHECK(budget_free(NULL) == NULL);
}

static void test_total_and_share(void)
{
        struct budget *b;
        struct budget_client *a, *a2, *c;
        struct budget_stats st;

        REQUIRE(budget_new(&(struct budget_opts){ .total = 1000, .client_share = 600 }, &b) == 0);
        REQUIRE(budget_client_get(b, "10.0.0.1", 8, &a) == 0);
        REQUIRE(budget_client_get(b, "10.0.0.1", 8, &a2) == 0);
        REQUIRE(budget_client_get(b, "10.0.0.2", 8, &c) == 0);
        CHECK(a == a2);           /* one account per address */
        CHECK(a != c);
        CHECK_EQ(clients(b), 2);

        CHECK_EQ(budget_charge(b, a, 400), 0);
        CHECK_EQ(budget_charge(b, a2, 200), 0);           /* the share: 600 exactly */
        CHECK_EQ(budget_charge(b, a, 1), -EDQUOT);        /* over a's share */
        CHECK_EQ(budget_client_used(b, a), 600);
        CHECK_EQ(budget_charge(b, c, 401), -ENOBUFS);     /* over the total, though within c's share */
        CHECK_EQ(budget_charge(b, c, 400), 0);
        CHECK_EQ(used(b), 1000);
        CHECK_EQ(budget_charge(b, NULL, 1), -ENOBUFS);    /* nothing left for anyone */
        CHECK_EQ(budget_charge(b, NULL, 0), 0);
        budget_stats_snapshot(b, &st);
        CHECK_EQ(st.refused_client, 1);
        CHECK_EQ(st.refused_total, 2);
        CHECK_EQ(st.total, 1000);
        CHECK_EQ(st.client_share, 600);

        budget_release(b, a, 300);
        CHECK_EQ(budget_client_used(b, a), 300);
        CHECK_EQ(budget_charge(b, c, 200), 0);            /* c: 600 now */
        CHECK_EQ(budget_charge(b, c, 1), -EDQUOT);

        /* Forced charges count, past the total too, and refuse others. */
        budget_charge_force(b, a, 500);
        CHECK_EQ(used(b), 1400);
        CHECK_EQ(budget_charge(b, NULL, 1), -ENOBUFS);
        budget_release(b, a, 800);
        budget_release(b, c, 600);
        CHECK_EQ(used(b), 0);

        /* A client is dropped once unreferenced and holding nothing, and
         * not before. */
        a = budget_client_put(b, a);
        CHECK_EQ(clients(b), 2);
        CHECK_EQ(budget_charge(b, a2, 10), 0);
        a2 = budget_client_put(b, a2);
        CHECK_EQ(clients(b), 2);                          /* still holds 10 */
        c = budget_client_put(b, c);
        CHECK_EQ(clients(b), 1);
        CHECK(a == NULL && c == NULL && a2 == NULL);
        struct budget_client *again;
        REQUIRE(budget_client_get(b, "10.0.0.1", 8, &again) == 0);
        CHECK_EQ(budget_client_used(b, again), 10);       /* the same account, found again */
        budget_release(b, again, 10);
        budget_client_put(b, again);
        CHECK_EQ(clients(b), 0);
        CHECK(budget_client_put(b, NULL) == NULL);
        budget_free(b);
}

/* Many threads charging and releasing at once: the total is never passed,
 * and everything comes back. */
struct racer {
        struct budget *b;
        int id;
        atomic_llong *peak;
};

static atomic_llong inside;

static void *race(void *arg)
{
        struct racer *r = arg;
        struct budget_client *c;
        char key[2] = { 'k', (char)(r->id % 4) };

        if (budget_client_get(r->b, key, sizeof key, &c) < 0)
                return NULL;
        for (int i = 0; i < 20000; i++) {
                int64_t n = 1 + (i * 7 + r->id) % 97;
                if (budget_charge(r->b, c, n) < 0)
                        continue;
                long long now = atomic_fetch_add(&inside, n) + n;
                long long p = atomic_load(r->peak);
                while (now > p && !atomic_compare_exchange_weak(r->peak, &p, now))
                        ;
                atomic_fetch_sub(&inside, n);
                budget_release(r->b, c, n);
        }
        budget_client_put(r->b, c);
        return NULL;
}

static void test_threads(void)
{
        struct budget *b;
        pthread_t t[8];
        struct racer r[8];
        atomic_llong peak = 0;

        REQUIRE(budget_new(&(struct budget_opts){ .total = 300, .client_share = 200 }, &b) == 0);
        for (int i = 0; i < 8; i++) {
                r[i] = (struct racer){ .b = b, .id = i, .peak = &peak };
                REQUIRE(pthread_create(&t[i], NULL, race, &r[i]) == 0);
        }
        for (int i = 0; i < 8; i++)
                pthread_join(t[i], NULL);
        CHECK_MSG(atomic_load(&peak) <= 300, "held %lld at once with a total of 300", (long long)atomic_load(&peak));
        CHECK(atomic_load(&peak) > 0);
        CHECK_EQ(used(b), 0);
        CHECK_EQ(clients(b), 0);
        budget_free(b);
}

int main(void)
{
        test_options();
        test_total_and_share();
        test_threads();
        return CHECK_DONE();
}
