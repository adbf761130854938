/* otlp: a request's spans, exported to an OpenTelemetry collector as
 * OTLP/HTTP JSON (POST {endpoint}/v1/traces). Each inference request
 * makes five spans in the trace of its traceparent (server/trace.h): the
 * request itself (kind SERVER, from its headers to its answer, the
 * caller's span its parent) and, as its children, decode (its inputs on
 * the worker pool), queue (waiting for the batcher), infer (its forward
 * passes) and answer (its completion to the answer queued).
 *
 * A request only copies its record into a ring of fixed size and never
 * waits: when the ring is full its spans are dropped and counted. One
 * thread takes the records out in batches (up to OTLP_BATCH_SPANS spans,
 * or what came in within a second), encodes them and posts them with
 * libcurl (only this module includes curl.h), with timeouts; a failing
 * collector is retried with a growing pause, and a batch that failed
 * OTLP_ATTEMPTS times is dropped and counted.
 *
 *   struct otlp_opts o = { .endpoint = "http://127.0.0.1:4318", .queue = 1024 };
 *   otlp_new(&o, err, sizeof err, &x);
 *   otlp_record(x, &access);           // from any thread, once a request is answered
 *   otlp_stats_snapshot(x, &st);       // for /metrics
 *   x = otlp_free(x);                  // sends what is left, for at most OTLP_FLUSH_MS
 */
#ifndef EFFNET_SERVER_OTLP_H
#define EFFNET_SERVER_OTLP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "access.h"

#define OTLP_SPANS_PER_REQUEST 5
#define OTLP_BATCH_SPANS 512         /* spans in one POST at most */
#define OTLP_BATCH_MS 1000           /* a record waits this long at most for a batch to fill */
#define OTLP_ATTEMPTS 3              /* posts of one batch before it is dropped */
#define OTLP_BACKOFF_MIN_MS 500      /* the pause after a failed post, doubled after each... */
#define OTLP_BACKOFF_MAX_MS 30000    /* ...up to this */
#define OTLP_CONNECT_TIMEOUT_MS 2000
#define OTLP_TIMEOUT_MS 5000         /* one post, in all */
#define OTLP_FLUSH_MS 1000           /* at otlp_free: the time left to send what is queued */

struct otlp_opts {
        const char *endpoint;        /* http:// or https:// URL of the collector; "/v1/traces" is appended */
        int queue;                   /* requests whose spans may wait (the ring), 1..OTLP_MAX_QUEUE */
        const char *service_version; /* resource attribute service.version; NULL: none */
};

#define OTLP_MAX_QUEUE (1 << 20)

struct otlp_stats {
        unsigned long long spans_exported;  /* accepted by the collector (2xx) */
        unsigned long long spans_dropped;   /* the ring was full, or their batch failed OTLP_ATTEMPTS times */
        unsigned long long export_failures; /* posts that failed (connection, timeout, non-2xx) */
        int queued;                          /* requests in the ring now */
        int queue_capacity;
};

/* One request's spans as the exporter keeps them: fixed size, no pointers. */
#define OTLP_NAME_MAX 64
struct otlp_record {
        char trace_id[33], span_id[17], parent_id[17];  /* hex; parent_id "" when the trace started here */
        char child_id[4][17];        /* decode, queue, infer, answer: filled by the exporter */
        char model[OTLP_NAME_MAX];   /* "" when none */
        long long version;
        char protocol[8];            /* "http", "grpc" */
        char error[32];              /* the error code, "" when none */
        int status;                  /* HTTP status (gRPC's mapped to it) */
        /* CLOCK_MONOTONIC ns (time_now_ns); 0: never reached. */
        int64_t start_ns, decode_ns, queue_ns, infer_ns, done_ns, end_ns;
};

struct otlp;

/* The exporter and its thread. -EINVAL for a bad endpoint or queue (err
 * says which), -ENOMEM, thread errors. */
int otlp_new(const struct otlp_opts *opts, char *err, size_t err_len, struct otlp **ret_otlp);

/* Stops the thread after it sent what is queued, or after OTLP_FLUSH_MS
 * (a post under way is cut off then); frees everything. Accepts NULL;
 * returns NULL. */
struct otlp *otlp_free(struct otlp *o);

/* Queues the spans of the answered request a (the access record of the
 * front end): a copy into the ring, or a count of dropped spans when it is
 * full. Requests that never reached the pipeline (probes, metadata) and
 * those whose caller's traceparent is not sampled make no spans. Never
 * blocks beyond a short lock, never allocates. Any thread. */
void otlp_record(struct otlp *o, const struct http_access *a);

void otlp_stats_snapshot(struct otlp *o, struct otlp_stats *ret_stats);

/* The record of a, or false when it makes no spans (as otlp_record). Pure. */
bool otlp_record_from(const struct http_access *a, struct otlp_record *ret_rec);

/* Spans a record makes: the request's and its stages that were reached. Pure. */
int otlp_record_spans(const struct otlp_record *rec);

/* The OTLP/HTTP JSON body (ExportTraceServiceRequest) of n records into
 * buf of cap bytes, times shifted by wall_offset_ns (CLOCK_REALTIME minus
 * CLOCK_MONOTONIC); service_version may be NULL. Returns the length, or
 * -ENOBUFS when it does not fit (OTLP_RECORD_JSON_MAX bytes per record
 * always do). Pure. */
#define OTLP_RECORD_JSON_MAX 8192
int otlp_encode(const struct otlp_record *recs, int n, int64_t wall_offset_ns, const char *service_version,
                char *buf, size_t cap);

#endif
