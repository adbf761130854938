/* generation: one model version, the one owner of a model, its batcher,
 * its labels, where its weights came from, and the answers the server
 * gives about it (/v1/models, /v2/models/{m}, its config), built once.
 * Immutable once its answers are built: the registry (server/registry.h)
 * then takes it over and hands requests read-only references, so that a
 * reload can serve the next version while the old one finishes what it
 * started.
 *
 *   struct generation *g;
 *   if (gen_new(&g) < 0) return -ENOMEM;
 *   r = effnet_model_open(path, &oo, err, sizeof err, &g->model);
 *   ... api_labels_load(..., &g->labels); batch_new(g->model, &bo, ..., &g->batch);
 *   r = gen_set_weights(g, "hf://timm/...", &source);   // copies the strings
 *   r = gen_build_answers(g, &limits);                   // immutable from now on
 *   r = reg_serve(registry, g);                          // the registry owns g from now on
 */
#ifndef EFFNET_SERVER_GENERATION_H
#define EFFNET_SERVER_GENERATION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "effnet.h"
#include "api.h"
#include "batcher.h"
#include "v2.h"

/* The limits /v1/models reports with the model, and how the answers name
 * files. */
struct gen_limits {
        int64_t deadline_ms;
        int max_images;
        int64_t max_body_bytes;
        bool paths;                   /* absolute paths of the weights and labels; false: file names only,
                                       * since any client reads the answers (and a path may name a home) */
};

struct generation {
        /* What it serves: owned, filled in by whoever builds it; gen_free
         * frees them (the batcher first: it finishes its queued jobs). */
        struct effnet_model *model;
        struct batch *batch;
        struct api_labels *labels;
        int precision;                /* enum effnet_precision, resolved for this CPU */
        struct effnet_calibration *calibration; /* int8 plans: its scales and self-check */

        /* Where the weights came from (gen_set_weights): owned copies. */
        char *weights;                /* as the setting names them: a path or hf://ORG/NAME... */
        char sha256[65];              /* hex digest of the bytes served */
        struct api_weights source;    /* its strings point into strings below */
        char *strings;                /* one block for source's path, repo, revision, commit, file */

        /* What the server answers about it (gen_build_answers); owned. */
        const struct effnet_info *info;     /* the model's, with the input size its batcher runs (points to
                                             * info_served) */
        struct effnet_info info_served;
        size_t image_floats;          /* 3 * size * size: one preprocessed image */
        size_t label_max;             /* bytes of its longest label (answers' bounds) */
        char *models_body;            /* GET /v1/models */
        struct v2_model v2;           /* the model as /v2 describes it */
        int exec_batch[BATCH_MAX_EXEC];     /* v2.exec_batch points here */
        char *v2_config_body;         /* GET /v2/models/{m}/config */
        const char *weights_shown;    /* the weights setting as the answers name it: weights, or its file name
                                       * (points into weights) */
        char *labels_shown;           /* where the labels come from, as the answers name it */

        /* Which model and version it is: the registry serves it under them
         * (server/registry.h). gen_build_answers names a generation
         * without a name by its variant, version 1 (a one-model server). */
        char *name;                   /* owned */
        int64_t version;              /* >= 1 */
};

/* An empty generation (every field zero), or -ENOMEM. */
int gen_new(struct generation **ret_gen);

/* Frees g and everything it owns. The caller makes sure no request uses
 * it (refs is 0). Accepts NULL; returns NULL. */
struct generation *gen_free(struct generation *g);

/* Sets g->weights to weights and g->source to a copy of source (its
 * strings and its sha256 included, which also goes to g->sha256).
 * -ENOMEM (g unchanged). */
int gen_set_weights(struct generation *g, const char *weights, const struct api_weights *source);

/* Builds the answers about g from its model, batcher, labels and source,
 * with the server's limits. g->model, g->batch and g->labels must be set.
 * -ENOMEM (nothing kept), -EINVAL when they are not. */
int gen_build_answers(struct generation *g, const struct gen_limits *lim);

#endif
