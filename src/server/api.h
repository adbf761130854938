/* api: the JSON bodies of the effnetd HTTP API, its error codes, and class
 * labels. The shapes are the HTTP contract (docs/openapi.yaml):
 *
 *   {"model":"efficientnetv2-s","predictions":[{"index":281,"label":"tabby","score":0.8123},...]}
 *   {"model":"efficientnetv2-s","results":[{"predictions":[...]},...]}     (multipart)
 *   {"error":{"code":"invalid_image","message":"..."}}
 *
 *   char *body;
 *   if (api_error_body(API_E_INVALID_IMAGE, "not a JPEG or PNG", &body) == 0) { puts(body); free(body); }
 *
 * No HTTP inside (no sockets, statuses or routes): the http module answers
 * with these bodies and gives each error code its status, and the effnet
 * CLI prints the same bodies. The batcher's settings are passed in by
 * pointer; this header only names their type.
 * Bodies are returned as NUL-terminated strings owned by the caller (free).
 * Every function is reentrant; labels are immutable once loaded.
 */
#ifndef EFFNET_SERVER_API_H
#define EFFNET_SERVER_API_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "effnet.h"

/* The batcher's settings, shown by /v1/models (server/batcher.h). */
struct batch_config;

#define API_DEFAULT_TOP_K 5

/* ---- labels ---------------------------------------------------------------- */

struct api_labels;

/* Class names for a model with `classes` outputs. path: a text file with one
 * name per line (its line count must equal classes: -EINVAL otherwise, with
 * the counts in err); NULL for the built-in ImageNet-1k names when classes
 * is 1000, or the index as a string otherwise. */
int api_labels_load(const char *path, int classes, char *err, size_t err_len,
                    struct api_labels **ret_labels);
struct api_labels *api_labels_free(struct api_labels *l);
/* Owned by l; index in 0..classes-1. */
const char *api_labels_get(const struct api_labels *l, int index);
/* Class names from a Hugging Face Hub repository's config.json as timm
 * writes it: "label_names", a list of classes' names (or an object of
 * "INDEX": name), each shown as its "label_descriptions" entry when there
 * is one (timm's synsets: "n01440764" -> "tench, Tinca tinca"). -ENOENT
 * when the file has no label_names, -EINVAL when their count differs from
 * classes or a name is missing, -EBADMSG for a file that is not JSON or
 * names that are not printable text, -E2BIG for a file of more than 4 MiB
 * (refused before it is parsed: jansson's tree takes many times its text),
 * -EIO when it cannot be read; a message in err either way. */
int api_labels_load_hub_config(const char *config_path, int classes, char *err, size_t err_len,
                               struct api_labels **ret_labels);
/* Where the names come from: "builtin-imagenet-1k", "file:PATH",
 * "hub:config.json", or "indices" (the label is the class index). */
/* The class names of a model, as effnetd and the effnet tool take them:
 * the file path when given (api_labels_load), else hub_config (a
 * repository's config.json) when it names every class, else the built-in
 * ImageNet-1k names for 1000 classes, else the indices. A config.json that
 * could not be used is no error: note says why (else it stays ""). */
int api_labels_open(const char *path, const char *hub_config, int classes, char *err, size_t err_len, char *note,
                    size_t note_len, struct api_labels **ret_labels);
const char *api_labels_source(const struct api_labels *l);
int api_labels_count(const struct api_labels *l);

/* ---- requests -------------------------------------------------------------- */

/* top_k from a query value: an integer in 1..classes. NULL gives the default
 * (API_DEFAULT_TOP_K, at most classes). -EINVAL otherwise. */
int api_parse_top_k(const char *s, int classes, int *ret_k);

/* The classify answer for n images. logits: [n][classes], turned into
 * probabilities in place. multi: the "results" shape (multipart) instead of
 * the single-image "predictions" shape (n must be 1 then). */
int api_classify_body(const char *model, const struct api_labels *labels, float *logits, int n,
                      int classes, int top_k, bool multi, char **ret_body);

/* ---- errors ---------------------------------------------------------------- */

/* What went wrong, as the "code" of an error body says it. */
enum api_error {
        API_E_INVALID_ARGUMENT,     /* a bad query parameter */
        API_E_INVALID_IMAGE,        /* empty, truncated, corrupt or not an image */
        API_E_INVALID_MULTIPART,    /* malformed multipart/form-data */
        API_E_INVALID_REQUEST,      /* a malformed or mismatched /v2 infer request */
        API_E_NOT_FOUND,
        API_E_METHOD_NOT_ALLOWED,
        API_E_MISDIRECTED,          /* a Host this server does not answer (DNS rebinding) */
        API_E_TOO_LARGE,            /* body, images or pixels over a limit */
        API_E_UNSUPPORTED_MEDIA,
        API_E_INTERNAL,
        API_E_NON_FINITE,           /* the model computed NaN or Inf (broken weights) */
        API_E_OVERLOADED,           /* queue or memory budget full */
        API_E_DRAINING,             /* shutting down */
        API_E_DEADLINE,
        API_E_CLIENT_GONE,          /* the client closed its connection before its answer (nobody reads it) */
        API_E_UNAUTHENTICATED,      /* no API key, or one that is not valid */
        API_N_ERRORS,
};

const char *api_error_code(enum api_error e);
int api_error_body(enum api_error e, const char *message, char **ret_body);

/* ---- models ------------------------------------------------------------------ */

/* Where the weights served come from, for /v1/models and the log. */
enum api_weights_source {
        API_WEIGHTS_FILE,              /* a file on disk */
        API_WEIGHTS_SEEDED,            /* a file of effnet init-weights: deterministic, untrained */
        API_WEIGHTS_HUB,               /* hf://: a file of a Hugging Face Hub repository, from its cache */
};

struct api_weights {
        int source;                    /* enum api_weights_source */
        const char *path;              /* the local file: as given, or the hub cache's snapshot; answers
                                        * leave out a NULL one */
        const char *sha256;            /* hex digest of the bytes served */
        int64_t seed;                  /* >= 0: seeded weights (also under API_WEIGHTS_HUB); -1 otherwise */
        const char *repo, *revision, *commit;   /* API_WEIGHTS_HUB only; NULL otherwise */
        const char *file;              /* hub: the file in the repository; in answers also that of a local file */
};

/* "seeded", "file" or "hub". */
const char *api_weights_source_name(int source);

struct api_model_desc {
        const struct effnet_info *info;
        const struct api_weights *weights;
        const char *labels;            /* api_labels_source() */
        const struct batch_config *batch;
        int64_t deadline_ms;
        int max_images;                /* per request */
        int64_t max_body_bytes;
        const struct effnet_int8_check *int8; /* int8 plans: the calibration's self-check */
};

int api_models_body(const struct api_model_desc *d, char **ret_body);

/* One model version (or a model with none serving) in GET /v1/models. */
struct api_model_row {
        const char *name;
        int64_t version;             /* 0: none serving */
        const char *state;           /* "READY", "UNAVAILABLE", "LOADING" */
        const char *reason;          /* why it does not serve; "" or NULL: none */
        const char *body;            /* its api_models_body, or NULL */
};

/* GET /v1/models: {"models": every row}, each its body's model with its
 * name, version, state and reason (a one-model server's body, with those
 * fields added). -ENOMEM, -EINVAL (a body that is not api_models_body's). */
int api_models_list_body(const struct api_model_row *rows, int n, char **ret_body);

#endif
