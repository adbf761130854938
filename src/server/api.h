/* api: the JSON (and Prometheus text) bodies of the effnetd HTTP API, and
 * class labels. The shapes are the HTTP contract (docs/openapi.yaml):
 *
 *   {"model":"efficientnetv2-s","predictions":[{"index":281,"label":"tabby","score":0.8123},...]}
 *   {"model":"efficientnetv2-s","results":[{"predictions":[...]},...]}     (multipart)
 *   {"error":{"code":"invalid_image","message":"..."}}
 *
 * No HTTP machinery inside (no sockets, no libmicrohttpd): the http module
 * and the effnet CLI both print these bodies. What it knows of HTTP is
 * data: the status of each error code, and the routes and statuses that
 * label the /metrics series it writes. The batcher's settings and counters
 * are passed in by pointer; this header only names their types.
 * Bodies are returned as NUL-terminated strings owned by the caller (free).
 * Every function is reentrant; labels are immutable once loaded.
 */
#ifndef EFFNET_SERVER_API_H
#define EFFNET_SERVER_API_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "effnet.h"

/* The batcher's settings and counters, shown by /v1/models and /metrics
 * (server/batcher.h). */
struct batch_config;
struct batch_stats;

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
 * names that are not printable text; a message in err either way. */
int api_labels_load_hub_config(const char *config_path, int classes, char *err, size_t err_len,
                               struct api_labels **ret_labels);
/* Where the names come from: "builtin-imagenet-1k", "file:PATH",
 * "hub:config.json", or "indices" (the label is the class index). */
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

enum api_error {
        API_E_INVALID_ARGUMENT,     /* 400: a bad query parameter */
        API_E_INVALID_IMAGE,        /* 400: empty, truncated, corrupt or not an image */
        API_E_INVALID_MULTIPART,    /* 400: malformed multipart/form-data */
        API_E_INVALID_REQUEST,      /* 400: a malformed or mismatched /v2 infer request */
        API_E_NOT_FOUND,            /* 404 */
        API_E_METHOD_NOT_ALLOWED,   /* 405 */
        API_E_TOO_LARGE,            /* 413: body, images or pixels over a limit */
        API_E_UNSUPPORTED_MEDIA,    /* 415 */
        API_E_INTERNAL,             /* 500 */
        API_E_NON_FINITE,           /* 500: the model computed NaN or Inf (broken weights) */
        API_E_OVERLOADED,           /* 503: queue or memory budget full */
        API_E_DRAINING,             /* 503: shutting down */
        API_E_DEADLINE,             /* 504 */
        API_N_ERRORS,
};

int api_error_status(enum api_error e);
const char *api_error_code(enum api_error e);
int api_error_body(enum api_error e, const char *message, char **ret_body);

/* ---- models, metrics --------------------------------------------------------- */

/* Where the weights served come from, for /v1/models and the log. */
enum api_weights_source {
        API_WEIGHTS_FILE,              /* a file on disk */
        API_WEIGHTS_SEEDED,            /* a file of effnet init-weights: deterministic, untrained */
        API_WEIGHTS_HUB,               /* hf://: a file of a Hugging Face Hub repository, from its cache */
};

struct api_weights {
        int source;                    /* enum api_weights_source */
        const char *path;              /* the local file: as given, or the hub cache's snapshot */
        const char *sha256;            /* hex digest of the bytes served */
        int64_t seed;                  /* >= 0: seeded weights (also under API_WEIGHTS_HUB); -1 otherwise */
        const char *repo, *revision, *commit, *file;   /* API_WEIGHTS_HUB only; NULL otherwise */
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
};

int api_models_body(const struct api_model_desc *d, char **ret_body);

enum api_route {
        API_ROUTE_CLASSIFY,
        API_ROUTE_MODELS,
        API_ROUTE_HEALTHZ,
        API_ROUTE_READYZ,
        API_ROUTE_METRICS,
        API_ROUTE_UI,                  /* the try-it page, GET / */
        API_ROUTE_UI_ASSET,            /* its script and style, GET /ui/... */
        API_ROUTE_OTHER,               /* unknown paths */
        /* KServe v2 (the model name is a template: one series per route) */
        API_ROUTE_V2_SERVER,
        API_ROUTE_V2_LIVE,
        API_ROUTE_V2_READY,
        API_ROUTE_V2_MODEL,
        API_ROUTE_V2_MODEL_READY,
        API_ROUTE_V2_MODEL_CONFIG,
        API_ROUTE_V2_INFER,
        API_ROUTE_V2_OTHER,            /* unknown paths under /v2 */
        API_N_ROUTES,
};

/* The HTTP statuses the server answers with, in counter order. */
#define API_N_STATUSES 9
extern const int api_statuses[API_N_STATUSES];
/* Index of status in api_statuses (the last one, 500, for anything else). */
int api_status_index(int status);
const char *api_route_path(enum api_route r);
/* "v2" for the KServe v2 routes, "v1" for effnetd's own API. */
const char *api_route_protocol(enum api_route r);

/* Request latency and queue wait histogram buckets (upper bounds, seconds). */
#define API_LATENCY_BUCKETS 14
extern const double api_latency_bounds[API_LATENCY_BUCKETS];

struct api_hist {
        uint64_t buckets[API_LATENCY_BUCKETS + 1];   /* observations per bucket (not cumulative), +Inf last */
        double sum;                                  /* seconds */
};

/* Index of the bucket of an observation of v seconds. */
int api_hist_bucket(double v);

struct api_model_stats {
        const char *variant;
        const char *precision;         /* "fp32", "bf16" */
        const char *weights;           /* path as given */
        const char *weights_sha256;    /* hex */
        const char *labels;            /* api_labels_source() */
        int classes;
        int input_size;
};

struct api_process_stats {
        int64_t rss_bytes;             /* < 0: unknown (line left out) */
        double cpu_seconds;            /* user + system; < 0: unknown */
        int open_fds;                  /* < 0: unknown */
        int64_t max_fds;               /* < 0: unknown */
        double start_time_seconds;     /* since the epoch; <= 0: unknown */
};

/* The image decoding threads (server/decoder.h). */
struct api_decode_stats {
        int threads;
        int queue_capacity;
        int queued;                    /* requests waiting for a decoding thread */
        int busy;                      /* threads decoding now */
        uint64_t jobs;                 /* requests decoded */
        uint64_t rejected;             /* refused with 503: the decode queue was full */
};

struct api_http_stats {
        uint64_t requests[API_N_ROUTES][API_N_STATUSES];
        uint64_t errors[API_N_ERRORS];
        struct api_hist latency[API_N_ROUTES];  /* headers received -> answer queued */
        struct api_hist queue_wait;    /* submitted -> first image in a forward pass, per request */
        uint64_t images;               /* images classified and answered */
        uint64_t connections;          /* accepted since start */
        uint64_t body_timeouts;        /* closed because the body took longer than body-timeout */
        uint64_t connections_refused;  /* closed at accept: max-connections were open */
        uint64_t header_timeouts;      /* shut down because the headers took longer than header-timeout */
        struct api_decode_stats decode;
        int retired_models;            /* swapped out by reloads, still used by requests */
        int64_t answer_bytes;          /* answers queued and not yet sent */
        uint64_t reloads, reload_failures;
        int inflight;                  /* requests being served now */
        bool ready;
        struct api_model_stats model;
        struct api_process_stats process;
};

/* Prometheus text exposition format (version 0.0.4). */
int api_metrics_body(const struct api_http_stats *hs, const struct batch_stats *bs, char **ret_body);

#endif
