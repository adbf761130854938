/* access: the record of one answered request, which the http module fills
 * and hands to its access_log callback, and the daemon's log writes
 * (log_access). A header of its own so that the log needs no HTTP.
 *
 *   static void on_answered(void *userdata, const struct http_access *a)
 *   {
 *           log_access(a);
 *   }
 */
#ifndef EFFNET_SERVER_ACCESS_H
#define EFFNET_SERVER_ACCESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "trace.h"

/* Every pointer is valid only during the callback. */
struct http_access {
        const char *request_id;  /* the client's X-Request-Id, or one made up; echoed in the answer */
        const char *client;      /* numeric address */
        const char *method;
        const char *path;        /* without the query */
        int status;
        const char *error;       /* error code, or NULL */
        int images;
        size_t body_bytes;       /* request body received */
        size_t answer_bytes;     /* answer body */
        double queue_ms;         /* waiting for a worker; -1 when never queued */
        double inference_ms;     /* forward passes of its images */
        int batch_size;          /* images in its (largest) forward pass; 0 if none */
        const char *model;       /* the model it was served with, or NULL */
        long long version;       /* that model's version; 0 with no model */
        double ms;               /* headers received -> answer queued */
        const char *trace_id;    /* W3C trace context (server/trace.h): 32 hex digits, the caller's or new */
        const char *span_id;     /* 16 hex digits: this request's span, sent back in traceparent */
        const char *parent_id;   /* 16 hex digits: the caller's span; "" when the trace started here */
        bool sampled;            /* the trace started here, or the caller's traceparent has the sampled flag */
        const char *protocol;    /* "http", "grpc" */
        int64_t start_ns, end_ns;  /* CLOCK_MONOTONIC ns: headers received, answer queued */
        struct trace_stages stages;
};

#endif
