/* metrics: the /metrics body, in the Prometheus text exposition format
 * (version 0.0.4), rendered from the snapshots of the modules that own the
 * counters: the http module (struct http_stats), the batcher (struct
 * batch_stats), the decoding pool (struct wpool_stats) and the process
 * (struct proc_stats). It keeps no counter of its own and knows no socket.
 *
 *   struct http_stats hs;  http_stats_snapshot(server, &hs);
 *   struct batch_stats bs; batch_stats_snapshot(batch, &bs);
 *   struct wpool_stats ds;   wpool_stats_snapshot(pool, &ds);
 *   struct proc_stats ps;  proc_get_stats(&ps);
 *   struct metrics_model m = { .variant = "efficientnetv2-s", ... };
 *   struct metrics_sources src = { .http = &hs, .batch = &bs, .decode = &ds,
 *                                  .model = &m, .process = &ps };
 *   char *body;
 *   if (metrics_render(&src, &body) == 0) { ...; free(body); }
 */
#ifndef EFFNET_SERVER_METRICS_H
#define EFFNET_SERVER_METRICS_H

#include "util.h"
#include "batcher.h"
#include "workpool.h"
#include "http_stats.h"
#include "grpc_stats.h"
#include "auth.h"
#include "tls.h"
#include "otlp.h"

/* A model version being served, for effnetd_model_info and the
 * effnetd_model_* families (labels model and version). Strings are
 * borrowed. */
struct metrics_model {
        const char *name;              /* NULL: the variant */
        long long version;             /* 0: 1 */
        const char *variant;
        const char *precision;         /* "fp32", "bf16" */
        const char *weights;           /* path as given */
        const char *weights_sha256;    /* hex */
        const char *labels;            /* api_labels_source() */
        int classes;
        int input_size;
        const struct batch_stats *batch;   /* its batcher's, or NULL */
        size_t executor_bytes;
        int threads;                   /* workers x threads per worker: its share of the CPUs */
};

/* One snapshot per module, all borrowed for the call. process: a value
 * below zero (start time: not above zero) leaves its series out. */
struct metrics_sources {
        const struct http_stats *http;
        const struct batch_stats *batch;   /* summed over the batchers of every model generation */
        const struct wpool_stats *decode;
        const struct metrics_model *model;   /* one model (when models is NULL), or NULL */
        const struct metrics_model *models;  /* [n_models], every model version served */
        int n_models;
        const struct proc_stats *process;
        const struct grpc_stats *grpc;     /* the gRPC service's; NULL: no gRPC listener */
        const struct auth_stats *auth;     /* API keys; NULL: off, left out */
        const struct tls_stats *tls;       /* TLS; NULL: off, left out */
        const struct otlp_stats *otlp;     /* span export; NULL: off, left out */
};

/* The body, NUL-terminated and owned by the caller (free). Families come
 * in a fixed order, each with its HELP and TYPE lines. -ENOMEM. Reentrant. */
int metrics_render(const struct metrics_sources *src, char **ret_body);

#endif
