/* metrics: the /metrics body, in the Prometheus text exposition format
 * (version 0.0.4), rendered from the snapshots of the modules that own the
 * counters: the http module (struct http_stats), the batcher (struct
 * batch_stats), the decoding pool (struct dec_stats) and the process
 * (struct proc_stats). It keeps no counter of its own and knows no socket.
 *
 *   struct http_stats hs;  http_stats_snapshot(server, &hs);
 *   struct batch_stats bs; batch_stats_snapshot(batch, &bs);
 *   struct dec_stats ds;   dec_stats_snapshot(pool, &ds);
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
#include "decoder.h"
#include "http_stats.h"
#include "auth.h"
#include "tls.h"

/* The model being served, for effnetd_model_info. Strings are borrowed. */
struct metrics_model {
        const char *variant;
        const char *precision;         /* "fp32", "bf16" */
        const char *weights;           /* path as given */
        const char *weights_sha256;    /* hex */
        const char *labels;            /* api_labels_source() */
        int classes;
        int input_size;
};

/* One snapshot per module, all borrowed for the call. process: a value
 * below zero (start time: not above zero) leaves its series out. */
struct metrics_sources {
        const struct http_stats *http;
        const struct batch_stats *batch;   /* summed over the batchers of every model generation */
        const struct dec_stats *decode;
        const struct metrics_model *model;
        const struct proc_stats *process;
        const struct auth_stats *auth;     /* API keys; NULL: off, left out */
        const struct tls_stats *tls;       /* TLS; NULL: off, left out */
};

/* The body, NUL-terminated and owned by the caller (free). Families come
 * in a fixed order, each with its HELP and TYPE lines. -ENOMEM. Reentrant. */
int metrics_render(const struct metrics_sources *src, char **ret_body);

#endif
