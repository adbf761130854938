/* http: the effnetd HTTP server on libmicrohttpd (the only module that
 * includes microhttpd.h). Routes (docs/openapi.yaml; their one table is
 * server/routes.h's):
 *
 *   POST /v1/classify[?top_k=K]  one image body, or multipart/form-data parts
 *   POST /v1/models/{m}[/versions/{v}]/classify  the same, of a named model
 *   GET  /v1/models | /healthz | /readyz | /metrics
 *   GET  / and /ui/{app.js,app.css}  the try-it page (server/ui.h), unless turned off
 *   KServe v2 (server/v2.h): GET /v2, /v2/health/{live,ready},
 *   /v2/models/{m}[/versions/{v}][/ready|/config]; POST .../infer;
 *   POST /v2/repository/index, /v2/repository/models/{m}/{load,unload}
 *
 * libmicrohttpd's polling threads (epoll) read requests and hand each one's
 * work to the request pipeline (server/pipeline.h: decoding on a bounded
 * worker pool, then the batcher of its model version). Meanwhile the
 * request is suspended, so waiting clients hold no thread, and the
 * pipeline's one completion resumes it. A request takes the model version
 * served (server/registry.h) when its body is complete. Every client controllable resource has
 * a limit: body bytes per request, memory held in all and per client
 * address (bodies, tensors, outputs, answers), images per request,
 * pixels, connections, idle time, time to send the headers and the body,
 * requests waiting for decoding, request deadline.
 *
 * The routes, the statuses of error answers and the counters of /metrics
 * are this module's (server/http_stats.h); server/metrics.h renders them
 * with the batcher's and the decoding pool's.
 */
#ifndef EFFNET_SERVER_HTTP_H
#define EFFNET_SERVER_HTTP_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "effnet.h"
#include "access.h"
#include "image.h"
#include "api.h"
#include "batcher.h"
#include "generation.h"
#include "pipeline.h"
#include "http_stats.h"
#include "grpc_stats.h"
#include "auth.h"
#include "tls.h"
#include "otlp.h"

#define HTTP_MAX_REQUEST_ID 128      /* longest X-Request-Id taken from a client */
#define HTTP_CONTROL_MAX_BODY (64 << 10)  /* a repository load or unload call's body (a load's config) */

/* The admin listener's budget: probes and scrapes are few and quick. */
#define HTTP_ADMIN_MAX_CONNECTIONS 32
#define HTTP_ADMIN_PER_CLIENT      8
#define HTTP_ADMIN_TIMEOUT_S       10

/* What requests are served with: the model versions of the pipeline's
 * registry (server/registry.h). Requests take a reference to the version
 * served when their body is complete; a reload serves a new one, and
 * requests keep the version they started with. */

/* The answer to a repository load or unload call (Triton's model
 * repository extension), from any thread, once: ok, or the error e with a
 * message for the client. */
typedef void (*http_control_done_fn)(void *token, bool ok, enum api_error e, const char *message);

struct http_opts {
        const char *listen;          /* "HOST:PORT", "[V6]:PORT"; port 0 picks a free one */
        int threads;                 /* polling threads; 0 = usable CPUs (at most 4) */
        int max_connections;
        int max_connections_per_client;  /* per client address; 0 = none */
        int connection_timeout_s;    /* idle time before a connection is dropped */
        int body_timeout_s;          /* from the headers to the body's end; 0 = none */
        int header_timeout_s;        /* from a connection's start (or its previous request's end plus
                                      * connection_timeout_s) to its request's last header; 0 = none */
        int decode_threads;          /* image decoding threads; 0 = usable CPUs (at most 8) */
        int decode_queue;            /* requests that may wait for a decoding thread; 503 beyond */
        int64_t max_body_bytes;      /* per request */
        int64_t v2_max_body_bytes;   /* per /v2 infer request (JSON tensors are large) */
        int64_t memory_budget;       /* what requests may hold over all clients (server/budget.h): bodies,
                                      * tensors, outputs, answers not yet read */
        int64_t max_client_share;    /* of memory_budget, per client address */
        int64_t max_answer_total;    /* answers queued and not yet sent, over all connections */
        int max_images;              /* per request; <= the queue's capacity */
        int64_t deadline_ms;         /* from request headers to the start of inference */
        int retry_after_s;           /* Retry-After of 503 answers */
        struct img_opts img;         /* decode limits, fast JPEG path */
        int64_t max_request_pixels;  /* encoded pixels of all of a request's images together */
        bool ui;                     /* serve the try-it page (GET /, /ui/...) on the main listener */
        const char *allowed_hosts;   /* Host names answered (server/hosts.h); NULL = loopback names only
                                      * when every listener is on a loopback address, any otherwise */
        bool show_paths;             /* absolute file paths in /v1/models, /v2 model config, /metrics */
        int listen_fd;               /* > 0: an already listening socket (systemd), taken over; listen unused */
        const char *admin_listen;    /* HOST:PORT of a second listener that serves only /healthz, /readyz,
                                      * /metrics and /v2/health/live, ready, with its own thread and connections;
                                      * NULL = none */
        struct auth *auth;           /* API keys (server/auth.h), the caller's; NULL = none needed. The
                                      * probes (/healthz, /readyz, /v2/health/live, ready) and the admin listener
                                      * need none */
        struct tls *tls;             /* HTTPS on both listeners (server/tls.h), the caller's; NULL = HTTP */
        /* Called once per answered request (any thread). May be NULL. */
        void (*access_log)(void *userdata, const struct http_access *a);
        /* libmicrohttpd's own messages, and a request's NaN or Inf outputs that
         * its input did not make (broken weights) (any thread). May be NULL. */
        void (*error_log)(void *userdata, const char *fmt, va_list ap);
        /* POST /v2/repository/models/NAME/load and /unload (any thread), with
         * the call's body (body_len bytes, valid during the call only): 0
         * when the call is taken, and done(token, ...) follows exactly once;
         * else the reason in err (400), and done never fires. NULL: refused. */
        int (*repo_control)(void *userdata, const char *name, bool load, const char *body, size_t body_len,
                            http_control_done_fn done, void *token, char *err, size_t err_len);
        /* The gRPC service's counters for /metrics (any thread). NULL: none. */
        void (*grpc_stats)(void *userdata, struct grpc_stats *ret_stats);
        /* The span export's counters for /metrics (any thread). NULL: none. */
        void (*otlp_stats)(void *userdata, struct otlp_stats *ret_stats);
        void *userdata;
};

struct http_server;

/* Starts listening, serving requests through pipeline p (not owned: it
 * must outlive the server) and the model versions of its registry.
 * Errors: -EINVAL (bad listen address or options), -EADDRINUSE and other
 * socket errors (libmicrohttpd does not say which: -EIO), -ENOMEM. */
int http_new(const struct http_opts *opts, struct pipeline *p, char *err, size_t err_len,
             struct http_server **ret_server);

/* Counts a reload attempt for /metrics. */
void http_count_reload(struct http_server *s, bool ok);

/* The server's counters and gauges (server/http_stats.h), each read from
 * its atomic; the batchers' and the decoding pool's are theirs to snapshot.
 * Any thread. */
void http_stats_snapshot(struct http_server *s, struct http_stats *ret_stats);

/* "http://127.0.0.1:8080" with the port actually bound. */
const char *http_url(const struct http_server *s);
/* The same for the admin listener; "" without one. */
const char *http_admin_url(const struct http_server *s);

/* The Host names the main (or the admin) listener answers, in words
 * (server/hosts.h), for the log; "" without an admin listener. */
const char *http_hosts(const struct http_server *s, bool admin);

/* Starts draining: /readyz and new classify requests answer 503 (with
 * Retry-After) from now on, every answer closes its connection; requests
 * already received finish. The socket keeps listening until http_stop. */
void http_drain(struct http_server *s);

/* Requests received and not yet completed. */
int http_inflight(struct http_server *s);

/* Requests suspended until the batcher completes their job. */
int http_waiting(struct http_server *s);

/* Images classified and answered since start (for a status line). */
uint64_t http_images(struct http_server *s);

/* Stops serving: from now on no request is suspended or submitted to the
 * batcher (those that would be get 503 draining); waits for the requests
 * already submitted to get their answers (result or deadline), then closes
 * every connection (requests still reading or writing are cut off and
 * release their model versions; the pipeline stops too: pipe_stop). http_free follows. */
void http_stop(struct http_server *s);

/* Whether the server takes new requests (not draining), for the gRPC
 * service's ServerReady and ModelReady. Any thread. */
bool http_ready(struct http_server *s);

/* Stops the server and frees it (not its pipeline). Call when
 * http_waiting() is 0 (libmicrohttpd cannot stop with suspended
 * connections) and, for a clean drain, http_inflight() too. Accepts NULL;
 * returns NULL. */
struct http_server *http_free(struct http_server *s);

#endif
