/* registry: model versions by name and version, references, retirement. */
#include "registry.h"
#include "util.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* One model: its serving versions, highest first, and its state. */
struct reg_model {
        char *name;
        struct reg_version *versions;
        enum reg_state state;          /* when no version serves */
        char reason[256];
        struct reg_model *next;        /* in name order */
};

struct registry {
        pthread_mutex_t lock;          /* guards everything below */
        struct reg_model *models;
        struct reg_version *retired;   /* replaced or retired, maybe still in use */
        struct batch_stats retired_stats;   /* final counters of collected versions' batchers */
        char *default_name;            /* NULL: the only model */
};

int reg_new(struct registry **ret_reg)
{
        struct registry *reg = calloc(1, sizeof *reg);

        if (!reg)
                return -ENOMEM;
        pthread_mutex_init(&reg->lock, NULL);
        *ret_reg = reg;
        return 0;
}

static void version_free(struct reg_version *v)
{
        gen_free((struct generation *)v->g);
        free(v);
}

struct registry *reg_free(struct registry *reg)
{
        if (!reg)
                return NULL;
        while (reg->models) {
                struct reg_model *m = reg->models;
                reg->models = m->next;
                while (m->versions) {
                        struct reg_version *v = m->versions;
                        m->versions = v->next;
                        version_free(v);
                }
                free(m->name);
                free(m);
        }
        while (reg->retired) {
                struct reg_version *v = reg->retired;
                reg->retired = v->next;
                version_free(v);
        }
        free(reg->default_name);
        pthread_mutex_destroy(&reg->lock);
        free(reg);
        return NULL;
}

static struct reg_model *find_model(struct registry *reg, const char *name, size_t len)
{
        for (struct reg_model *m = reg->models; m; m = m->next)
                if (strlen(m->name) == len && memcmp(m->name, name, len) == 0)
                        return m;
        return NULL;
}

/* Model name, created (in name order) when new. NULL: out of memory. */
static struct reg_model *get_model(struct registry *reg, const char *name)
{
        struct reg_model *m = find_model(reg, name, strlen(name)), **p;

        if (m)
                return m;
        m = calloc(1, sizeof *m);
        if (!m || !(m->name = strdup(name))) {
                free(m);
                return NULL;
        }
        m->state = REG_UNAVAILABLE;
        for (p = &reg->models; *p && strcmp((*p)->name, name) < 0; p = &(*p)->next)
                ;
        m->next = *p;
        *p = m;
        return m;
}

static void retire(struct registry *reg, struct reg_version *v)
{
        v->next = reg->retired;
        reg->retired = v;
}

/* Retires every version of every model but m, and forgets those models. */
static void retire_others(struct registry *reg, struct reg_model *keep)
{
        struct reg_model **p = &reg->models;

        while (*p) {
                struct reg_model *m = *p;
                if (m == keep) {
                        p = &m->next;
                        continue;
                }
                while (m->versions) {
                        struct reg_version *v = m->versions;
                        m->versions = v->next;
                        retire(reg, v);
                }
                *p = m->next;
                free(m->name);
                free(m);
        }
}

static int serve(struct registry *reg, struct generation *g, bool only)
{
        struct reg_version *v = calloc(1, sizeof *v), **p;
        struct reg_model *m;

        if (!v || !g->name) {
                free(v);
                gen_free(g);
                return -ENOMEM;
        }
        v->g = g;
        atomic_init(&v->refs, 0);
        pthread_mutex_lock(&reg->lock);
        m = get_model(reg, g->name);
        if (!m) {
                pthread_mutex_unlock(&reg->lock);
                version_free(v);
                return -ENOMEM;
        }
        for (p = &m->versions; *p && (*p)->g->version > g->version; p = &(*p)->next)
                ;
        if (*p && (*p)->g->version == g->version) {
                struct reg_version *old = *p;
                v->next = old->next;
                retire(reg, old);
        } else {
                v->next = *p;
        }
        *p = v;
        if (only) {
                /* Its model's other versions too. */
                for (struct reg_version **q = &m->versions; *q;) {
                        if (*q != v) {
                                struct reg_version *o = *q;
                                *q = o->next;
                                retire(reg, o);
                        } else {
                                q = &(*q)->next;
                        }
                }
                retire_others(reg, m);
        }
        m->state = REG_READY;
        m->reason[0] = '\0';
        pthread_mutex_unlock(&reg->lock);
        return 0;
}

int reg_serve(struct registry *reg, struct generation *g)
{
        return serve(reg, g, false);
}

int reg_serve_only(struct registry *reg, struct generation *g)
{
        return serve(reg, g, true);
}

int reg_retire(struct registry *reg, const char *name, int64_t version, enum reg_state state, const char *reason)
{
        struct reg_model *m;
        int n = 0;

        pthread_mutex_lock(&reg->lock);
        m = find_model(reg, name, strlen(name));
        for (struct reg_version **p = m ? &m->versions : NULL; p && *p;) {
                struct reg_version *v = *p;
                if (version == 0 || v->g->version == version) {
                        *p = v->next;
                        retire(reg, v);
                        n++;
                } else {
                        p = &v->next;
                }
        }
        if (m && !m->versions) {
                m->state = state;
                snprintf(m->reason, sizeof m->reason, "%s", reason ? reason : "");
        }
        pthread_mutex_unlock(&reg->lock);
        return n > 0 ? 0 : -ENOENT;
}

int reg_set_state(struct registry *reg, const char *name, enum reg_state state, const char *reason)
{
        struct reg_model *m;

        pthread_mutex_lock(&reg->lock);
        m = get_model(reg, name);
        if (m && !m->versions) {
                m->state = state;
                if (reason)
                        snprintf(m->reason, sizeof m->reason, "%s", reason);
        } else if (m && state == REG_FAILED) {
                /* Its serving versions go on; the failure of the last load is still told. */
                snprintf(m->reason, sizeof m->reason, "%s", reason ? reason : "");
        }
        pthread_mutex_unlock(&reg->lock);
        return m ? 0 : -ENOMEM;
}

void reg_forget(struct registry *reg, const char *name)
{
        pthread_mutex_lock(&reg->lock);
        for (struct reg_model **p = &reg->models; *p; p = &(*p)->next)
                if (strcmp((*p)->name, name) == 0 && !(*p)->versions) {
                        struct reg_model *m = *p;
                        *p = m->next;
                        free(m->name);
                        free(m);
                        break;
                }
        pthread_mutex_unlock(&reg->lock);
}

int reg_set_default(struct registry *reg, const char *name)
{
        char *copy = NULL;

        if (name && !(copy = strdup(name)))
                return -ENOMEM;
        pthread_mutex_lock(&reg->lock);
        free(reg->default_name);
        reg->default_name = copy;
        pthread_mutex_unlock(&reg->lock);
        return 0;
}

/* The model requests without a name get; NULL with *ret_error. */
static struct reg_model *default_model(struct registry *reg, int *ret_error)
{
        struct reg_model *m;

        if (reg->default_name) {
                m = find_model(reg, reg->default_name, strlen(reg->default_name));
                *ret_error = -ENOENT;
                return m;
        }
        /* The only model (listed models that serve nothing do not count:
         * a broken one beside a good one leaves the good one the default). */
        struct reg_model *only = NULL;
        int serving = 0;
        for (m = reg->models; m; m = m->next)
                if (m->versions) {
                        only = m;
                        serving++;
                }
        *ret_error = serving == 0 ? -ENOENT : -EADDRNOTAVAIL;
        return serving == 1 ? only : NULL;
}

int reg_acquire(struct registry *reg, const char *name, size_t name_len, int64_t version,
                struct reg_version **ret_version)
{
        struct reg_model *m;
        struct reg_version *v = NULL;
        int r = -ENOENT;

        pthread_mutex_lock(&reg->lock);
        m = name ? find_model(reg, name, name_len) : default_model(reg, &r);
        if (m && m->versions) {
                r = -ENODEV;
                for (v = m->versions; v; v = v->next)
                        if (version == 0 || v->g->version == version)
                                break;
        } else if (m) {
                r = -ENOENT;
        }
        if (v)
                atomic_fetch_add(&v->refs, 1);
        pthread_mutex_unlock(&reg->lock);
        if (!v)
                return r;
        *ret_version = v;
        return 0;
}

void reg_release(struct registry *reg, struct reg_version *v)
{
        (void)reg;
        if (v)
                atomic_fetch_sub(&v->refs, 1);
}

struct generation *reg_collect_retired(struct registry *reg)
{
        struct reg_version **p, *v = NULL;
        struct generation *g = NULL;
        struct batch_stats st;

        pthread_mutex_lock(&reg->lock);
        for (p = &reg->retired; *p; p = &(*p)->next)
                if (atomic_load(&(*p)->refs) == 0) {
                        v = *p;
                        *p = v->next;
                        break;
                }
        if (v) {
                /* Its batcher keeps no job now: fold its final counters in. */
                batch_stats_snapshot(v->g->batch, &st);
                batch_stats_add(&reg->retired_stats, &st);
                g = (struct generation *)v->g;
                free(v);
        }
        pthread_mutex_unlock(&reg->lock);
        return g;
}

int reg_retired_count(struct registry *reg)
{
        int n = 0;

        pthread_mutex_lock(&reg->lock);
        for (struct reg_version *v = reg->retired; v; v = v->next)
                n++;
        pthread_mutex_unlock(&reg->lock);
        return n;
}

int reg_serving_count(struct registry *reg)
{
        int n = 0;

        pthread_mutex_lock(&reg->lock);
        for (struct reg_model *m = reg->models; m; m = m->next)
                for (struct reg_version *v = m->versions; v; v = v->next)
                        n++;
        pthread_mutex_unlock(&reg->lock);
        return n;
}

int reg_versions(struct registry *reg, const char *name, int64_t *ret_versions, int max)
{
        struct reg_model *m;
        int n = 0;

        pthread_mutex_lock(&reg->lock);
        m = find_model(reg, name, strlen(name));
        for (struct reg_version *v = m ? m->versions : NULL; v && n < max; v = v->next)
                ret_versions[n++] = v->g->version > 0 ? v->g->version : 1;
        pthread_mutex_unlock(&reg->lock);
        return n;
}

void reg_batch_totals(struct registry *reg, struct batch_stats *ret_stats)
{
        struct batch_stats now;

        pthread_mutex_lock(&reg->lock);
        *ret_stats = reg->retired_stats;
        for (struct reg_version *v = reg->retired; v; v = v->next) {
                batch_stats_snapshot(v->g->batch, &now);
                batch_stats_add(ret_stats, &now);
        }
        for (struct reg_model *m = reg->models; m; m = m->next)
                for (struct reg_version *v = m->versions; v; v = v->next) {
                        batch_stats_snapshot(v->g->batch, &now);
                        batch_stats_add(ret_stats, &now);
                }
        pthread_mutex_unlock(&reg->lock);
}

int reg_list(struct registry *reg, int (*row)(void *userdata, const struct reg_row *r), void *userdata)
{
        int r = 0;

        pthread_mutex_lock(&reg->lock);
        for (struct reg_model *m = reg->models; m && r >= 0; m = m->next) {
                if (!m->versions) {
                        struct reg_row x = { .name = m->name, .state = m->state, .reason = m->reason };
                        r = row(userdata, &x);
                        continue;
                }
                for (struct reg_version *v = m->versions; v && r >= 0; v = v->next) {
                        struct reg_row x = { .name = m->name, .version = v->g->version, .state = REG_READY,
                                             .reason = m->reason, .g = v->g };
                        r = row(userdata, &x);
                }
        }
        pthread_mutex_unlock(&reg->lock);
        return r < 0 ? r : 0;
}
