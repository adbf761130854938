/* budget: the byte budget of what clients make the server hold. */
#include "budget.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

/* Clients are as many as open connections (max-connections): a few
 * hundred chains of a few entries each at most. */
#define BUDGET_BUCKETS 256

struct budget_client {
        struct budget_client *next;     /* in its bucket */
        int refs;
        int64_t used;
        size_t key_len;
        unsigned char key[BUDGET_MAX_KEY];
};

struct budget {
        pthread_mutex_t lock;           /* guards everything below but opts */
        struct budget_opts opts;        /* immutable */
        int64_t used;
        int clients;
        uint64_t refused_total, refused_client;
        struct budget_client *buckets[BUDGET_BUCKETS];
};

/* FNV-1a: keys are addresses, not chosen to collide (and a collision costs
 * a longer chain, never a wrong account). */
static size_t bucket_of(const void *key, size_t len)
{
        const unsigned char *p = key;
        uint32_t h = 2166136261u;

        for (size_t i = 0; i < len; i++)
                h = (h ^ p[i]) * 16777619u;
        return h % BUDGET_BUCKETS;
}

int budget_new(const struct budget_opts *opts, struct budget **ret_budget)
{
        struct budget *b;

        if (!opts || opts->total < 1 || opts->client_share < 1 || opts->client_share > opts->total)
                return -EINVAL;
        b = calloc(1, sizeof *b);
        if (!b)
                return -ENOMEM;
        b->opts = *opts;
        pthread_mutex_init(&b->lock, NULL);
        *ret_budget = b;
        return 0;
}

struct budget *budget_free(struct budget *b)
{
        if (!b)
                return NULL;
        /* Put back by their users; freed here only if one was leaked. */
        for (size_t i = 0; i < BUDGET_BUCKETS; i++)
                while (b->buckets[i]) {
                        struct budget_client *c = b->buckets[i];
                        b->buckets[i] = c->next;
                        free(c);
                }
        pthread_mutex_destroy(&b->lock);
        free(b);
        return NULL;
}

int budget_client_get(struct budget *b, const void *key, size_t key_len, struct budget_client **ret_client)
{
        struct budget_client *c;
        size_t i;

        if (!key || key_len == 0 || key_len > BUDGET_MAX_KEY)
                return -EINVAL;
        i = bucket_of(key, key_len);
        pthread_mutex_lock(&b->lock);
        for (c = b->buckets[i]; c; c = c->next)
                if (c->key_len == key_len && memcmp(c->key, key, key_len) == 0)
                        break;
        if (!c) {
                c = calloc(1, sizeof *c);
                if (!c) {
                        pthread_mutex_unlock(&b->lock);
                        return -ENOMEM;
                }
                memcpy(c->key, key, key_len);
                c->key_len = key_len;
                c->next = b->buckets[i];
                b->buckets[i] = c;
                b->clients++;
        }
        c->refs++;
        pthread_mutex_unlock(&b->lock);
        *ret_client = c;
        return 0;
}

/* Unlinks and frees c once nothing refers to it and it holds nothing.
 * Under b->lock. */
static void client_reap(struct budget *b, struct budget_client *c)
{
        if (c->refs > 0 || c->used > 0)
                return;
        for (struct budget_client **p = &b->buckets[bucket_of(c->key, c->key_len)]; *p; p = &(*p)->next)
                if (*p == c) {
                        *p = c->next;
                        b->clients--;
                        free(c);
                        return;
                }
}

struct budget_client *budget_client_put(struct budget *b, struct budget_client *c)
{
        if (!c)
                return NULL;
        pthread_mutex_lock(&b->lock);
        c->refs--;
        client_reap(b, c);
        pthread_mutex_unlock(&b->lock);
        return NULL;
}

int budget_charge(struct budget *b, struct budget_client *c, int64_t bytes)
{
        int r = 0;

        if (bytes < 0)
                return -EINVAL;
        pthread_mutex_lock(&b->lock);
        if (bytes > b->opts.total - b->used) {
                b->refused_total++;
                r = -ENOBUFS;
        } else if (c && bytes > b->opts.client_share - c->used) {
                b->refused_client++;
                r = -EDQUOT;
        } else {
                b->used += bytes;
                if (c)
                        c->used += bytes;
        }
        pthread_mutex_unlock(&b->lock);
        return r;
}

void budget_charge_force(struct budget *b, struct budget_client *c, int64_t bytes)
{
        if (bytes <= 0)
                return;
        pthread_mutex_lock(&b->lock);
        b->used += bytes;
        if (c)
                c->used += bytes;
        pthread_mutex_unlock(&b->lock);
}

void budget_release(struct budget *b, struct budget_client *c, int64_t bytes)
{
        if (bytes <= 0)
                return;
        pthread_mutex_lock(&b->lock);
        b->used -= bytes;
        if (c) {
                c->used -= bytes;
                client_reap(b, c);
        }
        pthread_mutex_unlock(&b->lock);
}

int64_t budget_client_used(struct budget *b, const struct budget_client *c)
{
        int64_t used;

        if (!c)
                return 0;
        pthread_mutex_lock(&b->lock);
        used = c->used;
        pthread_mutex_unlock(&b->lock);
        return used;
}

void budget_stats_snapshot(struct budget *b, struct budget_stats *ret_stats)
{
        pthread_mutex_lock(&b->lock);
        *ret_stats = (struct budget_stats){ .total = b->opts.total, .client_share = b->opts.client_share,
                                            .used = b->used, .clients = b->clients,
                                            .refused_total = b->refused_total,
                                            .refused_client = b->refused_client };
        pthread_mutex_unlock(&b->lock);
}
