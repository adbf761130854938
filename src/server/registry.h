/* registry: the model versions a server answers with, by model name and
 * version number; the references requests hold on them; and the retirement
 * of the versions replaced or unloaded, which are freed once no request
 * uses them.
 *
 * A model version is a struct generation (server/generation.h), immutable
 * once its answers are built: the registry takes it over whole and hands
 * out read-only references. A request takes one with reg_acquire and gives
 * it back with reg_release; a version replaced (reg_serve with the same
 * name and version) or retired (reg_retire) keeps serving the requests
 * that hold it and goes to the retired list, from which the owner's main
 * loop collects it (reg_collect_retired) once no request uses it.
 *
 *   struct registry *reg;
 *   reg_new(&reg);
 *   r = reg_serve(reg, g);                        // g is the registry's from now on
 *   r = reg_acquire(reg, "b0", 2, 0, &v);         // the highest version of "b0"
 *   ... v->g->batch, v->g->info ...               // read only
 *   reg_release(reg, v);
 *   while ((g = reg_collect_retired(reg)))       // no request uses g any more
 *           gen_free(g);
 *   reg = reg_free(reg);
 *
 * Thread-safe: every function from any thread, under the registry's lock.
 */
#ifndef EFFNET_SERVER_REGISTRY_H
#define EFFNET_SERVER_REGISTRY_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "batcher.h"
#include "generation.h"

#define REG_MAX_NAME 64              /* bytes of a model name */

/* One model version as the registry holds it. */
struct reg_version {
        const struct generation *g;  /* what it serves; immutable, owned by the registry */
        /* Private to the registry (its lock, or atomics). */
        atomic_int refs;             /* requests holding it */
        struct reg_version *next;    /* its model's serving list (highest version first), or the retired list */
};

/* The state of a model in the registry's listing. */
enum reg_state {
        REG_READY,          /* at least one version serves */
        REG_UNAVAILABLE,    /* known (in the repository) but not loaded, or unloaded */
        REG_LOADING,
        REG_FAILED,         /* its last load failed: the reason is kept */
};

/* One row of reg_list: a model and one of its versions (version 0: none
 * serving). Strings are valid until the callback returns. */
struct reg_row {
        const char *name;
        int64_t version;
        enum reg_state state;
        const char *reason;           /* REG_FAILED, REG_UNAVAILABLE: why; else "" */
        const struct generation *g;   /* a serving version's, else NULL */
};

struct registry;

int reg_new(struct registry **ret_reg);

/* Frees every version it holds. No request may hold any. Accepts NULL;
 * returns NULL. */
struct registry *reg_free(struct registry *reg);

/* g (its answers built, g->name and g->version set) serves its model from
 * now on, beside the model's other versions; the version it replaces (same
 * name and version) is retired. The registry owns g from now on, also on
 * failure (-ENOMEM: g is freed). */
int reg_serve(struct registry *reg, struct generation *g);

/* As reg_serve, and at the same instant every other version of every
 * model is retired and the other models forgotten: a one-model server
 * whose reload may change the model's name (its variant). */
int reg_serve_only(struct registry *reg, struct generation *g);

/* Retires version (0: every version) of model name: new requests do not
 * get it, those holding it finish with it. -ENOENT when it serves no such
 * version. The model stays listed with state (REG_UNAVAILABLE, or
 * REG_FAILED) and reason. */
int reg_retire(struct registry *reg, const char *name, int64_t version, enum reg_state state, const char *reason);

/* Records model name's state without a serving version (loading, failed
 * with its reason, unavailable), e.g. for a load that failed; its serving
 * versions, if any, keep serving. reason NULL keeps the one it has.
 * -ENOMEM. */
int reg_set_state(struct registry *reg, const char *name, enum reg_state state, const char *reason);

/* Forgets model name when it serves no version (it left the repository). */
void reg_forget(struct registry *reg, const char *name);

/* The model version a request is served with, as a reference: model name
 * (name_len bytes; NULL: the default model, see reg_set_default), version
 * (0: its highest serving one). -ENOENT: no such model serving, -ENODEV:
 * the model serves but not that version, -EADDRNOTAVAIL: no name and no
 * default (several models, none named default). */
int reg_acquire(struct registry *reg, const char *name, size_t name_len, int64_t version,
                struct reg_version **ret_version);

/* Gives back a reference of reg_acquire. Accepts NULL. */
void reg_release(struct registry *reg, struct reg_version *v);

/* The model requests without a model name are served with: name, or
 * NULL for "the only model, when there is exactly one". -ENOMEM. */
int reg_set_default(struct registry *reg, const char *name);

/* A retired version that no request uses any more, the caller's now (its
 * batcher's final counters are kept for reg_batch_totals): gen_free it.
 * NULL when there is none. */
struct generation *reg_collect_retired(struct registry *reg);

/* Retired versions still held by requests. */
int reg_retired_count(struct registry *reg);

/* Serving versions over all models. */
int reg_serving_count(struct registry *reg);

#define REG_MAX_LISTED_VERSIONS 64

/* The versions of model name that serve now (the READY ones), highest
 * first, at most max of them into ret_versions; returns how many (0 for
 * an unknown model or one serving nothing). */
int reg_versions(struct registry *reg, const char *name, int64_t *ret_versions, int max);

/* The batchers' counters over every version ever served: collected,
 * retired and serving. */
void reg_batch_totals(struct registry *reg, struct batch_stats *ret_stats);

/* Calls row() for every model (in name order) and serving version
 * (highest first), under the registry's lock: row must not call the
 * registry. Stops at and returns row's first negative return. */
int reg_list(struct registry *reg, int (*row)(void *userdata, const struct reg_row *r), void *userdata);

#endif
