/* http: the effnetd HTTP server on libmicrohttpd (the only module that
 * includes microhttpd.h). Routes (DESIGN.md section 1):
 *
 *   POST /v1/classify[?top_k=K]  one image body, or multipart/form-data parts
 *   GET  /v1/models | /healthz | /readyz | /metrics
 *
 * libmicrohttpd's polling threads (epoll) read requests and decode images;
 * a request that waits for inference is suspended, so waiting clients hold
 * no thread, and the batcher's completion callback resumes it. Every client
 * controllable resource has a limit: body bytes per request and buffered in
 * all, images per request, pixels, connections, idle time, request deadline.
 */
#ifndef EFFNET_SERVER_HTTP_H
#define EFFNET_SERVER_HTTP_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include "effnet.h"
#include "image/image.h"
#include "server/api.h"
#include "server/batcher.h"

#define HTTP_DEFAULT_LISTEN             "127.0.0.1:8080"
#define HTTP_DEFAULT_MAX_BODY_BYTES     ((int64_t)10 << 20)
#define HTTP_DEFAULT_MAX_BODY_TOTAL     ((int64_t)512 << 20)
#define HTTP_DEFAULT_MAX_IMAGES         32
#define HTTP_DEFAULT_MAX_CONNECTIONS    512
#define HTTP_DEFAULT_CONN_TIMEOUT_S     30
#define HTTP_DEFAULT_DEADLINE_MS        30000
#define HTTP_DEFAULT_RETRY_AFTER_S      1

/* One answered request, for the access log. */
struct http_access {
        const char *client;      /* numeric address */
        const char *method;
        const char *path;        /* without the query */
        int status;
        const char *error;       /* error code, or NULL */
        int images;
        size_t body_bytes;       /* request body received */
        double ms;               /* headers received -> answer queued */
};

struct http_opts {
        const char *listen;          /* "HOST:PORT", "[V6]:PORT"; port 0 picks a free one */
        int threads;                 /* polling threads; 0 = usable CPUs (at most 4) */
        int max_connections;
        int connection_timeout_s;    /* idle time before a connection is dropped */
        int64_t max_body_bytes;      /* per request */
        int64_t max_body_total;      /* bodies buffered over all connections */
        int max_images;              /* per request; <= the queue's capacity */
        int64_t deadline_ms;         /* from request headers to the start of inference */
        int retry_after_s;           /* Retry-After of 503 answers */
        struct img_opts img;         /* decode limits, fast JPEG path */
        const char *weights;         /* shown by /v1/models */
        /* Called once per answered request (any thread). May be NULL. */
        void (*access_log)(void *userdata, const struct http_access *a);
        /* libmicrohttpd's own messages (any thread). May be NULL. */
        void (*error_log)(void *userdata, const char *fmt, va_list ap);
        void *userdata;
};

struct http_server;

/* Starts listening and serving. m, b and labels must outlive the server.
 * Errors: -EINVAL (bad listen address or options), -EADDRINUSE and other
 * socket errors (libmicrohttpd does not say which: -EIO), -ENOMEM. */
int http_new(const struct http_opts *opts, struct effnet_model *m, struct batch *b,
             const struct api_labels *labels, char *err, size_t err_len, struct http_server **ret_server);

/* "http://127.0.0.1:8080" with the port actually bound. */
const char *http_url(const struct http_server *s);

/* Stops accepting connections; /readyz and new requests on open
 * connections answer 503 from now on. Requests already received finish. */
void http_drain(struct http_server *s);

/* Requests received and not yet completed. */
int http_inflight(struct http_server *s);

/* Requests suspended until the batcher completes their job. */
int http_waiting(struct http_server *s);

/* Stops the server. Call when http_waiting() is 0 (libmicrohttpd cannot stop
 * with suspended connections) and, for a clean drain, http_inflight() too.
 * Accepts NULL; returns NULL. */
struct http_server *http_free(struct http_server *s);

#endif
