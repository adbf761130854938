/* generation: one model generation and what the server answers about it. */
#include "generation.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int gen_new(struct generation **ret_gen)
{
        struct generation *g = calloc(1, sizeof *g);

        if (!g)
                return -ENOMEM;
        *ret_gen = g;
        return 0;
}

static void free_answers(struct generation *g)
{
        free(g->models_body);
        free(g->v2_config_body);
        free(g->labels_shown);
        g->models_body = g->v2_config_body = g->labels_shown = NULL;
        g->weights_shown = NULL;
}

struct generation *gen_free(struct generation *g)
{
        if (!g)
                return NULL;
        batch_free(g->batch);
        effnet_calibration_free(g->calibration);
        api_labels_free(g->labels);
        effnet_model_free(g->model);
        free(g->weights);
        free(g->strings);
        free(g->name);
        free_answers(g);
        free(g);
        return NULL;
}

/* Appends s (NULL stays NULL) to the block at *p, returning where it went. */
static const char *put(char **p, const char *s)
{
        if (!s)
                return NULL;
        char *at = *p;
        size_t n = strlen(s) + 1;
        memcpy(at, s, n);
        *p += n;
        return at;
}

int gen_set_weights(struct generation *g, const char *weights, const struct api_weights *source)
{
        const char *parts[] = { source->path, source->repo, source->revision, source->commit, source->file };
        size_t n = 0;

        for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++)
                n += parts[i] ? strlen(parts[i]) + 1 : 0;
        char *w = strdup(weights), *block = malloc(n ? n : 1);
        if (!w || !block) {
                free(w);
                free(block);
                return -ENOMEM;
        }
        free(g->weights);
        free(g->strings);
        g->weights = w;
        g->strings = block;
        snprintf(g->sha256, sizeof g->sha256, "%s", source->sha256 ? source->sha256 : "");
        g->source = (struct api_weights){ .source = source->source, .sha256 = g->sha256, .seed = source->seed };
        g->source.path = put(&block, source->path);
        g->source.repo = put(&block, source->repo);
        g->source.revision = put(&block, source->revision);
        g->source.commit = put(&block, source->commit);
        g->source.file = put(&block, source->file);
        return 0;
}

/* The file name of a path: what follows its last '/'. */
static const char *file_name(const char *path)
{
        const char *slash = strrchr(path, '/');
        return slash ? slash + 1 : path;
}

/* How the answers name the weights and the labels' source: by file name
 * unless lim->paths. hf:// names are no local path and stay whole. */
static int name_files(struct generation *g, const struct gen_limits *lim, const struct api_weights *w,
                      struct api_weights *ret_shown)
{
        const char *labels = api_labels_source(g->labels);
        bool local = g->weights && strncmp(g->weights, "hf://", 5) != 0;

        *ret_shown = *w;
        if (w->source != API_WEIGHTS_HUB && w->path)
                ret_shown->file = file_name(w->path);
        if (!lim->paths)
                ret_shown->path = NULL;
        g->weights_shown = g->weights && local && !lim->paths ? file_name(g->weights) : g->weights;
        if (!lim->paths && strncmp(labels, "file:", 5) == 0) {
                if (asprintf(&g->labels_shown, "file:%s", file_name(labels + 5)) < 0)
                        g->labels_shown = NULL;
        } else {
                g->labels_shown = strdup(labels);
        }
        return g->labels_shown ? 0 : -ENOMEM;
}

int gen_build_answers(struct generation *g, const struct gen_limits *lim)
{
        struct batch_config bc;

        if (!g->model || !g->batch || !g->labels)
                return -EINVAL;
        batch_get_config(g->batch, &bc);
        /* The model's facts, but the input edge its executors were built for. */
        g->info_served = *effnet_model_info(g->model);
        g->info_served.preproc.size = bc.input_size;
        g->info = &g->info_served;
        if (!g->name && !(g->name = strdup(g->info->variant)))
                return -ENOMEM;
        if (g->version < 1)
                g->version = 1;
        g->image_floats = (size_t)3 * (size_t)g->info->preproc.size * (size_t)g->info->preproc.size;
        g->label_max = 0;
        for (int i = 0; i < api_labels_count(g->labels); i++) {
                size_t n = strlen(api_labels_get(g->labels, i));
                if (n > g->label_max)
                        g->label_max = n;
        }
        /* Without gen_set_weights: a file of unknown name. */
        struct api_weights fallback = { .source = API_WEIGHTS_FILE, .path = g->weights ? g->weights : "",
                                        .sha256 = g->sha256, .seed = g->info->seed };
        struct api_weights shown;
        free_answers(g);
        if (name_files(g, lim, g->weights ? &g->source : &fallback, &shown) < 0)
                return -ENOMEM;
        const struct api_weights *w = &shown;
        struct api_model_desc d = {
                .info = g->info,
                .weights = w,
                .labels = g->labels_shown,
                .batch = &bc,
                .deadline_ms = lim->deadline_ms,
                .max_images = lim->max_images,
                .max_body_bytes = lim->max_body_bytes,
                .int8 = g->calibration ? effnet_calibration_check(g->calibration) : NULL,
        };
        memcpy(g->exec_batch, bc.exec_batch, sizeof g->exec_batch);
        g->v2 = (struct v2_model){ .name = g->name, .version = g->version, .size = g->info->preproc.size,
                                   .classes = g->info->classes, .max_batch = bc.max_batch,
                                   .max_delay_us = bc.max_delay_us, .exec_batch = g->exec_batch,
                                   .n_exec = bc.n_exec, .labels = g->labels, .labels_source = g->labels_shown,
                                   .weights = w };
        if (api_models_body(&d, &g->models_body) < 0 || v2_config_body(&g->v2, &g->v2_config_body) < 0) {
                free_answers(g);
                g->v2.weights = NULL;
                return -ENOMEM;
        }
        /* The bodies are built; the names on this stack go. */
        g->v2.weights = NULL;
        g->v2.labels_source = NULL;
        return 0;
}
