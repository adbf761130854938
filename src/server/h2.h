/* h2: a small HTTP/2 server for gRPC on libnghttp2 (the only module that
 * includes nghttp2.h): a listener, one event loop thread (epoll) for every
 * connection, an nghttp2 session per connection, gRPC's length-prefixed
 * messages, its trailers (grpc-status, grpc-message) and its deadlines
 * (grpc-timeout). It knows nothing of the calls' meaning: a handler (the
 * KServe service, server/kserve.h) gets each call's headers and messages,
 * and answers from any thread.
 *
 *   struct h2_opts o = { .listen = "127.0.0.1:8001", .max_connections = 256, ...,
 *                        .budget = b, .handler = &handler, .userdata = svc };
 *   h2_new(&o, err, sizeof err, &s);
 *   ...handler.on_call(svc, call): 0 takes it, a status refuses it
 *   ...handler.on_message(svc, call, msg, len): each request message
 *   h2_call_send(call, reply, len);      // any thread, any number of times
 *   h2_call_finish(call, H2_OK, NULL);   // any thread, exactly once per taken call
 *   h2_drain(s); ... wait for h2_inflight(s) == 0 ... s = h2_free(s);
 *
 * Every client controllable resource has a limit: connections, concurrent
 * streams per connection, header bytes per request, message bytes, time to
 * send the connection preface, the headers and each message, idle time; and
 * every byte a connection makes the server hold (nghttp2's own state, the
 * message being received, answers not yet sent) is charged to the memory
 * budget (server/budget.h) of the client's address before it is
 * allocated; a message compressed with grpc-encoding gzip or deflate
 * (zlib inflates it) is bounded and charged by its inflated size. A
 * charge that does not fit fails that stream
 * (RESOURCE_EXHAUSTED) or, for nghttp2's own state, the connection.
 *
 * Cleartext HTTP/2 with prior knowledge (h2c), as gRPC clients connect to
 * an http:// target; or, with opts.tls, TLS 1.2/1.3 whose client must pick
 * "h2" by ALPN (server/tls.h's struct tls_conn, on the loop thread: the
 * handshake never blocks it, and takes at most read_timeout_s).
 */
#ifndef EFFNET_SERVER_H2_H
#define EFFNET_SERVER_H2_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "budget.h"

struct tls;

/* gRPC status codes (grpc/doc/statuscodes.md). */
enum h2_status {
        H2_OK = 0,
        H2_CANCELLED = 1,
        H2_UNKNOWN = 2,
        H2_INVALID_ARGUMENT = 3,
        H2_DEADLINE_EXCEEDED = 4,
        H2_NOT_FOUND = 5,
        H2_RESOURCE_EXHAUSTED = 8,
        H2_FAILED_PRECONDITION = 9,
        H2_UNIMPLEMENTED = 12,
        H2_INTERNAL = 13,
        H2_UNAVAILABLE = 14,
        H2_UNAUTHENTICATED = 16,
};

/* Longest grpc-message sent (a longer message is cut). */
#define H2_MAX_STATUS_MESSAGE 512
/* Metadata kept for the handler, per name (longer values are refused). */
#define H2_MAX_METADATA_VALUE 1024
/* h2_call_set_header's bounds: two headers (traceparent, tracestate), a
 * value as long as a tracestate kept (server/trace.h's TRACE_STATE_MAX). */
#define H2_MAX_HEADERS 2
#define H2_MAX_HEADER_NAME 31
#define H2_MAX_HEADER_VALUE 512

struct h2_call;

/* What the server calls, all on its event loop thread (or h2_feed's
 * caller), never with a lock of its own held. */
struct h2_handler {
        /* A new call, its headers complete. Return 0 to take it: then
         * on_message follows for each of its messages and on_end when the
         * client has sent them all, and the handler calls h2_call_finish
         * once. Or return a status (> 0) with a message in msg (msg_len
         * bytes) to refuse it: it is answered with that and nothing else
         * follows. */
        int (*on_call)(void *userdata, struct h2_call *call, char *msg, size_t msg_len);
        /* One request message, msg[len], owned by the server and valid
         * during the call only. */
        void (*on_message)(void *userdata, struct h2_call *call, const uint8_t *msg, size_t len);
        /* The client half-closed: no more messages. */
        void (*on_end)(void *userdata, struct h2_call *call);
        /* The call is over for the client (it reset the stream, closed the
         * connection, or the deadline passed): what the handler sends is
         * dropped; it still calls h2_call_finish. At most once per call. */
        void (*on_cancel)(void *userdata, struct h2_call *call);
};

struct h2_opts {
        const char *listen;          /* "HOST:PORT", "[V6]:PORT"; port 0 picks one. NULL: no socket and no
                                      * thread, only h2_feed (fuzzing, tests) */
        int max_connections;         /* open at once; more are closed at accept */
        int max_streams;             /* concurrent streams per connection (SETTINGS_MAX_CONCURRENT_STREAMS) */
        uint32_t max_header_bytes;   /* one request's header list (names + values + 32 per field) */
        int64_t max_message_bytes;   /* one gRPC message, as received */
        int idle_timeout_s;          /* a connection with no call open and no bytes for this long is closed */
        int read_timeout_s;          /* from a stream's headers (or its previous message) to its next
                                      * message's end, and from accept to the connection preface */
        int64_t max_deadline_ms;     /* grpc-timeout is cut to this; also the deadline without one */
        struct budget *budget;       /* borrowed; must outlive the server */
        struct tls *tls;             /* borrowed, must outlive the server; NULL: cleartext */
        const struct h2_handler *handler;
        void *userdata;
};

struct h2_server;

/* Starts listening and its event loop thread. Errors: -EINVAL (bad
 * options or address, with the reason in err), socket errors, -ENOMEM. */
int h2_new(const struct h2_opts *opts, char *err, size_t err_len, struct h2_server **ret_server);

/* Stops the thread and closes every connection: calls the handler still
 * holds are cancelled (on_cancel, on the calling thread), and must be
 * finished there; a call whose work is elsewhere (another thread would
 * finish it later) must be finished before, since that h2_call_finish
 * would reach a freed server. Accepts NULL; returns NULL. */
struct h2_server *h2_free(struct h2_server *s);

/* "http://127.0.0.1:8001" with the port actually bound ("" without a listener). */
const char *h2_url(const struct h2_server *s);

/* From now on new calls are refused with UNAVAILABLE and every connection
 * is told to go away (GOAWAY) once its calls are done; calls already taken
 * finish. Any thread. */
void h2_drain(struct h2_server *s);

/* Calls taken and not yet finished by the handler. Any thread. */
int h2_inflight(struct h2_server *s);

struct h2_stats {
        uint64_t connections;          /* accepted since start */
        uint64_t connections_refused;  /* closed at accept: max-connections were open */
        uint64_t timeouts;             /* connections closed or streams reset for being slow or idle */
        uint64_t streams_refused;      /* over max-streams, or over the header limit */
        uint64_t messages_too_large;   /* over max_message_bytes */
        uint64_t protocol_errors;      /* connections closed for an HTTP/2 error */
        uint64_t tls_failures;         /* connections closed for a failed TLS handshake */
        int open;                      /* connections open now */
};
void h2_stats_snapshot(struct h2_server *s, struct h2_stats *ret_stats);

/* ---- one call (one HTTP/2 stream) ------------------------------------------- */

/* Its :path ("/inference.GRPCInferenceService/ModelInfer"). Valid for the
 * call's life. */
const char *h2_call_path(const struct h2_call *c);
/* A metadata value the server keeps for the handler: "authorization",
 * "traceparent", "tracestate", "x-request-id"; NULL when absent. Valid for
 * the call's life. Keys are not logged. */
const char *h2_call_metadata(const struct h2_call *c, const char *name);
/* Its deadline (CLOCK_MONOTONIC, ns): grpc-timeout from the headers, at most
 * max_deadline_ms. */
int64_t h2_call_deadline_ns(const struct h2_call *c);
/* When its headers were complete (CLOCK_MONOTONIC, ns). */
int64_t h2_call_start_ns(const struct h2_call *c);
/* Its client's numeric address ("127.0.0.1"; "-" unknown). */
const char *h2_call_peer(const struct h2_call *c);
/* Its client's account in the budget (a borrowed reference, valid for the
 * call's life); NULL: the total only. */
struct budget_client *h2_call_client(const struct h2_call *c);
/* Its client's address as the budget names its account (BUDGET_MAX_KEY
 * bytes at most), *ret_len bytes; 0 bytes when unknown. Valid for the
 * call's life. */
const void *h2_call_client_key(const struct h2_call *c, size_t *ret_len);
/* Bytes of request messages received so far. */
size_t h2_call_received(const struct h2_call *c);

/* A response header of the handler's (initial metadata: "traceparent",
 * "tracestate"), sent with the call's first answer; a second call with
 * the same name replaces its value. From on_call only (the loop thread,
 * before any answer). -EINVAL for a name that is not lowercase
 * [a-z0-9-_.] or starts with "grpc-", a value not printable ASCII, or
 * either too long; -E2BIG for a name past H2_MAX_HEADERS. */
int h2_call_set_header(struct h2_call *c, const char *name, const char *value);

/* The handler's own pointer for the call. */
void h2_call_set_userdata(struct h2_call *c, void *userdata);
void *h2_call_userdata(const struct h2_call *c);

/* Queues one reply message (copied, with gRPC's 5-byte prefix), charged
 * to the client's budget until sent. Any thread, before h2_call_finish.
 * -ENOBUFS/-EDQUOT when it does not fit the budget, -ENOMEM; -ECANCELED
 * when the call is over for the client (nothing queued either way). */
int h2_call_send(struct h2_call *c, const void *msg, size_t len);

/* Ends the call with status and message (NULL: none): the trailers follow
 * the replies queued. Exactly once per call taken; c may be gone when it
 * returns. Any thread. */
void h2_call_finish(struct h2_call *c, enum h2_status status, const char *message);

/* ---- testing -------------------------------------------------------------- */

/* Runs data (a client's bytes) through a fresh connection of a server made
 * without a listener, on the calling thread: the handler runs as it would
 * on the loop, its replies are processed after each piece, and the
 * connection is closed at the end (calls still open are cancelled). The
 * server's answer bytes are dropped. For fuzzing: never fails. */
void h2_feed(struct h2_server *s, const uint8_t *data, size_t len);

/* gRPC's grpc-timeout header value ("100m", "30S": at most 8 digits and one
 * of H M S m u n) in ns. -EINVAL for anything else. Pure. */
int h2_parse_timeout(const char *v, int64_t *ret_ns);

/* grpc-message's percent-encoding of s into out (out_len >= 1): bytes
 * outside 0x20..0x7e and '%' become %XX; cut at out_len - 1. Pure. */
void h2_percent_encode(const char *s, char *out, size_t out_len);

/* gRPC message framing: one message's 5-byte prefix (compressed flag,
 * big-endian length) parsed from p. -EPROTO for a flag other than 0 or 1. */
int h2_frame_prefix(const uint8_t p[5], bool *ret_compressed, uint32_t *ret_len);

#endif
