/* budget: one byte budget for everything clients make the server hold
 * (request bodies, decoded tensors, outputs, answers not yet read), with a
 * share per client address, so that one client cannot take all of it.
 *
 * A charge is taken before the memory is allocated and released when it is
 * freed; what is charged is the allocation (or a proven upper bound of it),
 * so that the budget and the memory really used cannot drift apart. A
 * charge that does not fit is refused, and the caller answers 503: nothing
 * waits for memory.
 *
 * Usage:
 *   struct budget_opts o = { .total = 512 << 20, .client_share = 256 << 20 };
 *   budget_new(&o, &b);
 *   budget_client_get(b, addr_key, addr_key_len, &c);   // one per request
 *   r = budget_charge(b, c, bytes);       // -ENOBUFS: total full; -EDQUOT: c's share full
 *   p = malloc(bytes); ... free(p);
 *   budget_release(b, c, bytes);
 *   c = budget_client_put(b, c);
 *   b = budget_free(b);
 *
 * Thread-safe: every function from any thread, under the budget's one lock.
 */
#ifndef EFFNET_SERVER_BUDGET_H
#define EFFNET_SERVER_BUDGET_H

#include <stddef.h>
#include <stdint.h>

#define BUDGET_MAX_KEY 32       /* bytes of a client key (an address family and an IPv6 address fit) */

struct budget_opts {
        int64_t total;          /* bytes over every client, >= 1 */
        int64_t client_share;   /* bytes one client may hold, 1..total */
};

struct budget_stats {
        int64_t total, client_share;
        int64_t used;               /* charged now, forced charges included */
        int clients;                /* client addresses holding a charge or a reference */
        uint64_t refused_total;     /* charges refused: the total was full */
        uint64_t refused_client;    /* charges refused: the client's share was full */
};

struct budget;
struct budget_client;   /* one client address's account, reference counted */

/* -EINVAL (bad options), -ENOMEM. */
int budget_new(const struct budget_opts *opts, struct budget **ret_budget);

/* Accepts NULL; returns NULL. Every client must have been put back. */
struct budget *budget_free(struct budget *b);

/* The account of the client named by key (its address, without the port),
 * a new reference to it: created at the first, dropped with the last
 * budget_client_put once it holds nothing. -EINVAL (key empty or longer
 * than BUDGET_MAX_KEY), -ENOMEM. */
int budget_client_get(struct budget *b, const void *key, size_t key_len, struct budget_client **ret_client);

/* Drops a reference taken by budget_client_get. Accepts NULL; returns NULL. */
struct budget_client *budget_client_put(struct budget *b, struct budget_client *c);

/* Charges bytes (>= 0) to the total and to c (NULL: the total only).
 * -ENOBUFS when the total would pass opts.total, -EDQUOT when c would pass
 * opts.client_share; then nothing is charged. */
int budget_charge(struct budget *b, struct budget_client *c, int64_t bytes);

/* Charges bytes that are held already and cannot be refused (a small error
 * answer, a probe's): counted, so that budget_charge refuses others
 * meanwhile, even past the total. */
void budget_charge_force(struct budget *b, struct budget_client *c, int64_t bytes);

/* Gives back bytes charged to c (NULL: to the total only). */
void budget_release(struct budget *b, struct budget_client *c, int64_t bytes);

/* What c holds now (0 for NULL). */
int64_t budget_client_used(struct budget *b, const struct budget_client *c);

void budget_stats_snapshot(struct budget *b, struct budget_stats *ret_stats);

#endif
