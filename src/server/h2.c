/* h2: gRPC over HTTP/2 on libnghttp2, one event loop thread. */
#include "h2.h"
#include "tls.h"
#include "util.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <nghttp2/nghttp2.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>
#include <zlib.h>

/* How often slow and idle connections and streams are looked for: a cut
 * comes at most this late. */
#define SWEEP_NS 250000000LL
#define READ_CHUNK 16384
/* A message buffer grows by doubling from this, charged at each step, so
 * that a client that announces a large message and sends little holds
 * little. */
#define MSG_MIN_ALLOC ((size_t)16 << 10)
#define MAX_PATH 256
/* Per stream and per connection receive windows: large enough that a
 * multi-megabyte tensor needs few WINDOW_UPDATE round trips, while every
 * byte received is charged anyway. */
#define STREAM_WINDOW (1 << 20)
#define CONN_WINDOW (4 << 20)
/* nghttp2's allocations carry their size, so that frees release the charge. */
#define MEM_HEADER 16

enum { META_AUTHORIZATION, META_TRACEPARENT, META_TRACESTATE, META_REQUEST_ID, N_META };
static const char *const meta_names[N_META] = { "authorization", "traceparent", "tracestate", "x-request-id" };

enum ep_kind { EP_LISTENER, EP_WAKE, EP_CONN };

/* A request's grpc-encoding: the compression of its messages that carry
 * the compressed flag. gzip and deflate (zlib's format) are inflated with
 * zlib; anything else is refused (UNIMPLEMENTED). */
enum msg_encoding { ENC_IDENTITY, ENC_GZIP, ENC_DEFLATE, ENC_UNKNOWN };
/* What every answer says the server takes (grpc-accept-encoding). */
#define ACCEPT_ENCODING "identity,deflate,gzip"

struct h2_conn;

struct h2_call {
        struct h2_server *s;
        struct h2_conn *conn;          /* NULL once its stream is gone (loop thread) */
        struct h2_conn *owner;         /* the connection whose live_calls counts it while the handler holds
                                        * it (kept, closed or not, until then: see conn_close) */
        struct h2_call *prev, *next;   /* on conn->calls */
        int32_t stream_id;
        int refs;                      /* the stream's and the handler's (loop thread) */
        bool taken;                    /* the handler took it and has not yet finished it */
        bool handler_done;             /* h2_call_finish was processed */
        bool cancelled;                /* on_cancel fired (or would have, for a call not taken) */
        bool client_ended;             /* END_STREAM from the client */
        bool bad_headers;              /* a header was refused: the stream is reset */
        bool method_post, grpc_type;
        uint8_t encoding;              /* enum msg_encoding */
        struct budget_client *client;  /* its own reference to its connection's account: it may outlive
                                        * the connection; NULL: the total only */

        char path[MAX_PATH];
        char *meta[N_META];            /* owned, charged */
        size_t header_bytes;
        int64_t start_ns, deadline_ns; /* deadline 0: the client gave none */
        int64_t last_ns;               /* bytes of this stream last moved */
        int64_t msg_start_ns;          /* the message being received began; 0 between messages */

        /* Receiving (loop thread). */
        uint8_t prefix[5];
        int prefix_have;
        bool in_message;
        bool msg_compressed;           /* the message being received has the compressed flag */
        uint8_t *msg;                  /* charged: msg_cap */
        size_t msg_len, msg_need, msg_cap;
        size_t received;
        bool discard;                  /* the call is over: data is dropped */
        bool orphan;                   /* counted in owner->orphans */
        bool rst_after_final;          /* the server ended it: reset once the status is out, so that the
                                        * client stops sending */
        char peer[INET6_ADDRSTRLEN];
        unsigned char key[1 + 16];     /* its connection's client key (budget) */
        size_t key_len;

        /* Sending: guarded by s->post_lock. */
        uint8_t *out;                  /* charged: out_cap */
        size_t out_len, out_off, out_cap;
        bool finished;                 /* a final status is set (by the handler or the server) */
        int status;
        char message[H2_MAX_STATUS_MESSAGE];
        bool handler_finished;         /* h2_call_finish called */
        bool dirty;                    /* on s->dirty */
        struct h2_call *dirty_next;

        /* Loop thread. */
        bool headers_sent, final_sent, deferred;
        struct {
                char name[H2_MAX_HEADER_NAME + 1];
                char value[H2_MAX_HEADER_VALUE + 1];
        } extra[H2_MAX_HEADERS];       /* h2_call_set_header's: n_extra of them */
        int n_extra;
        void *userdata;
};

struct h2_conn {
        enum ep_kind kind;             /* EP_CONN: first, for the epoll tag */
        struct h2_server *s;
        struct h2_conn *prev, *next;
        int fd;                        /* -1: h2_feed's */
        struct tls_conn *tls;          /* NULL: cleartext */
        bool handshaking;              /* TLS: no HTTP/2 bytes move before the handshake is done */
        bool tls_charged;              /* TLS_CONN_BYTES charged to client for GnuTLS's session */
        bool recv_wants_write;         /* TLS: a read waits for the socket to be writable (GnuTLS says
                                        * which way only for the last call that would block) */
        nghttp2_session *ng;
        nghttp2_mem mem;
        struct budget_client *client;  /* a reference; NULL: the total only */
        unsigned char key[1 + 16];     /* the client's address, as the budget names it */
        size_t key_len;
        char peer[INET6_ADDRSTRLEN];
        int64_t last_ns;               /* bytes last moved */
        int64_t preface_due_ns;        /* 0 once a frame arrived */
        int live_calls;                /* taken and not finished, its streams gone or not */
        int orphans;                   /* of those, calls whose streams are gone (the client reset them):
                                        * nghttp2 counts the others against max_streams */
        struct h2_call *calls;
        uint32_t events;
        bool closing;
        bool graceful;                 /* closing by the protocol's end (GOAWAY, the client's close): TLS
                                        * says close_notify first */
        bool goaway;
        bool dead;                     /* closed; kept for the live_calls of calls still held */
};

struct ep_tag {
        enum ep_kind kind;
};

struct h2_server {
        struct h2_opts opts;
        struct ep_tag listener_tag, wake_tag;
        int listen_fd, epoll_fd, wake_fd;
        char url[128];
        pthread_t thread;
        bool started;
        atomic_bool stop;
        atomic_bool draining;
        atomic_int inflight;
        pthread_mutex_t post_lock;     /* guards every call's sending fields and dirty */
        struct h2_call *dirty;
        struct h2_conn *conns;         /* loop thread */
        int64_t next_sweep_ns;
        atomic_ullong connections, connections_refused, timeouts, streams_refused, messages_too_large,
                protocol_errors, tls_failures;
        atomic_int open;
};

/* ---- pure helpers -------------------------------------------------------------- */

int h2_parse_timeout(const char *v, int64_t *ret_ns)
{
        int64_t n = 0;
        size_t len, i;

        if (!v)
                return -EINVAL;
        len = strlen(v);
        if (len < 2 || len > 9)
                return -EINVAL;
        for (i = 0; i < len - 1; i++) {
                if (v[i] < '0' || v[i] > '9')
                        return -EINVAL;
                n = n * 10 + (v[i] - '0');
        }
        /* 8 digits of minutes, seconds or less fit an int64 of ns; 8 digits
         * of hours may not: those are capped rather than overflow. */
        int64_t ns;
        switch (v[len - 1]) {
        case 'H': ns = n > INT64_MAX / 3600000000000LL ? INT64_MAX : n * 3600000000000LL; break;
        case 'M': ns = n * 60000000000LL; break;
        case 'S': ns = n * 1000000000LL; break;
        case 'm': ns = n * 1000000LL; break;
        case 'u': ns = n * 1000LL; break;
        case 'n': ns = n; break;
        default: return -EINVAL;
        }
        *ret_ns = ns;
        return 0;
}

void h2_percent_encode(const char *s, char *out, size_t out_len)
{
        static const char hex[] = "0123456789ABCDEF";
        size_t o = 0;

        for (; s && *s; s++) {
                unsigned char c = (unsigned char)*s;
                if (c >= 0x20 && c <= 0x7e && c != '%') {
                        if (o + 1 >= out_len)
                                break;
                        out[o++] = (char)c;
                } else {
                        if (o + 3 >= out_len)
                                break;
                        out[o++] = '%';
                        out[o++] = hex[c >> 4];
                        out[o++] = hex[c & 15];
                }
        }
        out[o] = '\0';
}

int h2_frame_prefix(const uint8_t p[5], bool *ret_compressed, uint32_t *ret_len)
{
        if (p[0] > 1)
                return -EPROTO;
        *ret_compressed = p[0] == 1;
        *ret_len = (uint32_t)p[1] << 24 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 8 | (uint32_t)p[4];
        return 0;
}

/* ---- accounting ---------------------------------------------------------------- */

static int charge(struct h2_server *s, struct budget_client *c, size_t bytes)
{
        return budget_charge(s->opts.budget, c, (int64_t)bytes);
}

static void uncharge(struct h2_server *s, struct budget_client *c, size_t bytes)
{
        if (bytes)
                budget_release(s->opts.budget, c, (int64_t)bytes);
}

/* Memory that carries its size, charged to client before it is had, so
 * that a free releases the charge: nghttp2's and zlib's state. */
static void *charged_alloc(struct h2_server *s, struct budget_client *client, size_t size)
{
        if (size > SIZE_MAX - MEM_HEADER || charge(s, client, size + MEM_HEADER) < 0)
                return NULL;
        uint8_t *p = malloc(size + MEM_HEADER);
        if (!p) {
                uncharge(s, client, size + MEM_HEADER);
                return NULL;
        }
        memcpy(p, &size, sizeof size);
        return p + MEM_HEADER;
}

static void charged_free(struct h2_server *s, struct budget_client *client, void *ptr)
{
        size_t size;

        if (!ptr)
                return;
        uint8_t *p = (uint8_t *)ptr - MEM_HEADER;
        memcpy(&size, p, sizeof size);
        free(p);
        uncharge(s, client, size + MEM_HEADER);
}

/* nghttp2's memory, charged to the connection's client: a refusal is
 * nghttp2's out of memory, which ends the connection. */
static void *mem_malloc(size_t size, void *ud)
{
        struct h2_conn *c = ud;
        return charged_alloc(c->s, c->client, size);
}

static void mem_free(void *ptr, void *ud)
{
        struct h2_conn *c = ud;
        charged_free(c->s, c->client, ptr);
}

static void *mem_calloc(size_t n, size_t size, void *ud)
{
        if (size && n > SIZE_MAX / size)
                return NULL;
        void *p = mem_malloc(n * size, ud);
        if (p)
                memset(p, 0, n * size);
        return p;
}

static void *mem_realloc(void *ptr, size_t size, void *ud)
{
        struct h2_conn *c = ud;
        size_t old = 0;

        if (!ptr)
                return mem_malloc(size, ud);
        if (size == 0) {
                mem_free(ptr, ud);
                return NULL;
        }
        memcpy(&old, (uint8_t *)ptr - MEM_HEADER, sizeof old);
        if (size > old && charge(c->s, c->client, size - old) < 0)
                return NULL;
        uint8_t *p = realloc((uint8_t *)ptr - MEM_HEADER, size + MEM_HEADER);
        if (!p) {
                if (size > old)
                        uncharge(c->s, c->client, size - old);
                return NULL;
        }
        if (size < old)
                uncharge(c->s, c->client, old - size);
        memcpy(p, &size, sizeof size);
        return p + MEM_HEADER;
}

/* ---- calls ----------------------------------------------------------------------- */

const char *h2_call_path(const struct h2_call *c)
{
        return c->path;
}

const char *h2_call_metadata(const struct h2_call *c, const char *name)
{
        for (int i = 0; i < N_META; i++)
                if (strcmp(name, meta_names[i]) == 0)
                        return c->meta[i];
        return NULL;
}

int64_t h2_call_deadline_ns(const struct h2_call *c)
{
        return c->deadline_ns;
}

int64_t h2_call_start_ns(const struct h2_call *c)
{
        return c->start_ns;
}

const char *h2_call_peer(const struct h2_call *c)
{
        return c->peer;
}

struct budget_client *h2_call_client(const struct h2_call *c)
{
        return c->client;
}

const void *h2_call_client_key(const struct h2_call *c, size_t *ret_len)
{
        *ret_len = c->key_len;
        return c->key;
}

size_t h2_call_received(const struct h2_call *c)
{
        return c->received;
}

void h2_call_set_userdata(struct h2_call *c, void *userdata)
{
        c->userdata = userdata;
}

void *h2_call_userdata(const struct h2_call *c)
{
        return c->userdata;
}

int h2_call_set_header(struct h2_call *c, const char *name, const char *value)
{
        size_t n = strlen(name), v = strlen(value);

        if (n == 0 || n > H2_MAX_HEADER_NAME || v > H2_MAX_HEADER_VALUE || strncmp(name, "grpc-", 5) == 0)
                return -EINVAL;
        for (size_t i = 0; i < n; i++)
                if (!((name[i] >= 'a' && name[i] <= 'z') || (name[i] >= '0' && name[i] <= '9') || name[i] == '-' ||
                      name[i] == '_' || name[i] == '.'))
                        return -EINVAL;
        for (size_t i = 0; i < v; i++)
                if (value[i] < 0x20 || value[i] > 0x7e)
                        return -EINVAL;
        int i = 0;
        while (i < c->n_extra && strcmp(c->extra[i].name, name) != 0)
                i++;
        if (i == H2_MAX_HEADERS)
                return -E2BIG;
        memcpy(c->extra[i].name, name, n + 1);
        memcpy(c->extra[i].value, value, v + 1);
        if (i == c->n_extra)
                c->n_extra++;
        return 0;
}

static void wake(struct h2_server *s)
{
        uint64_t one = 1;
        if (s->wake_fd >= 0 && write(s->wake_fd, &one, sizeof one) < 0) {
                /* The counter is full: the loop is awake anyway. */
        }
}

/* Puts c on the list the loop processes (post_lock held). */
static void mark_dirty(struct h2_server *s, struct h2_call *c)
{
        if (c->dirty)
                return;
        c->dirty = true;
        c->dirty_next = s->dirty;
        s->dirty = c;
}

int h2_call_send(struct h2_call *c, const void *msg, size_t len)
{
        struct h2_server *s = c->s;
        struct budget_client *client = c->client;
        int r = 0;

        if (len > UINT32_MAX)
                return -E2BIG;
        pthread_mutex_lock(&s->post_lock);
        if (c->finished) {
                r = -ECANCELED;
                goto out;
        }
        size_t need = c->out_len + 5 + len;
        if (need > c->out_cap) {
                size_t cap = c->out_cap ? c->out_cap : 4096;
                while (cap < need)
                        cap *= 2;
                if ((r = charge(s, client, cap - c->out_cap)) < 0)
                        goto out;
                uint8_t *p = realloc(c->out, cap);
                if (!p) {
                        uncharge(s, client, cap - c->out_cap);
                        r = -ENOMEM;
                        goto out;
                }
                c->out = p;
                c->out_cap = cap;
        }
        uint8_t *p = c->out + c->out_len;
        p[0] = 0;
        p[1] = (uint8_t)(len >> 24);
        p[2] = (uint8_t)(len >> 16);
        p[3] = (uint8_t)(len >> 8);
        p[4] = (uint8_t)len;
        if (len)
                memcpy(p + 5, msg, len);
        c->out_len += 5 + len;
        mark_dirty(s, c);
out:
        pthread_mutex_unlock(&s->post_lock);
        if (r == 0)
                wake(s);
        return r;
}

/* Sets c's final status unless it has one (post_lock held). */
static void set_final(struct h2_call *c, enum h2_status status, const char *message)
{
        if (c->finished)
                return;
        c->finished = true;
        c->status = (int)status;
        snprintf(c->message, sizeof c->message, "%s", message ? message : "");
}

void h2_call_finish(struct h2_call *c, enum h2_status status, const char *message)
{
        struct h2_server *s = c->s;

        pthread_mutex_lock(&s->post_lock);
        set_final(c, status, message);
        c->handler_finished = true;
        mark_dirty(s, c);
        pthread_mutex_unlock(&s->post_lock);
        wake(s);
}

static void call_free(struct h2_call *c)
{
        struct h2_server *s = c->s;
        struct budget_client *client = c->client;

        free(c->msg);
        uncharge(s, client, c->msg_cap);
        free(c->out);
        uncharge(s, client, c->out_cap);
        for (int i = 0; i < N_META; i++) {
                if (c->meta[i]) {
                        uncharge(s, client, strlen(c->meta[i]) + 1);
                        free(c->meta[i]);
                }
        }
        free(c);
        uncharge(s, client, sizeof *c);
        budget_client_put(s->opts.budget, client);
}


/* ---- connections ------------------------------------------------------------------ */

static void conn_close(struct h2_conn *conn);

static ssize_t on_send(nghttp2_session *ng, const uint8_t *data, size_t len, int flags, void *ud)
{
        struct h2_conn *conn = ud;

        if (conn->fd < 0)
                return (ssize_t)len;   /* h2_feed: the answer is dropped */
        if (conn->tls) {
                if (conn->handshaking)
                        return NGHTTP2_ERR_WOULDBLOCK;
                /* nghttp2 offers the same bytes again after WOULDBLOCK, as
                 * GnuTLS wants. */
                ssize_t t = tls_conn_send(conn->tls, data, len);
                if (t == -EAGAIN)
                        return NGHTTP2_ERR_WOULDBLOCK;
                if (t < 0)
                        return NGHTTP2_ERR_CALLBACK_FAILURE;
                conn->last_ns = time_now_ns();
                return t;
        }
        ssize_t n = send(conn->fd, data, len, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0) {
                if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
                        return NGHTTP2_ERR_WOULDBLOCK;
                return NGHTTP2_ERR_CALLBACK_FAILURE;
        }
        conn->last_ns = time_now_ns();
        return n;
}

static void conn_update_events(struct h2_conn *conn)
{
        struct h2_server *s = conn->s;
        uint32_t ev = EPOLLIN | EPOLLRDHUP;

        if (conn->fd < 0)
                return;
        if (conn->handshaking) {
                /* Only what the handshake waits for, or the loop spins on
                 * the SETTINGS nghttp2 holds until it is done. */
                if (tls_conn_want_write(conn->tls))
                        ev = EPOLLOUT | EPOLLRDHUP;
        } else if (nghttp2_session_want_write(conn->ng) || conn->recv_wants_write) {
                ev |= EPOLLOUT;
        }
        if (ev == conn->events)
                return;
        struct epoll_event e = { .events = ev, .data.ptr = conn };
        if (epoll_ctl(s->epoll_fd, EPOLL_CTL_MOD, conn->fd, &e) == 0)
                conn->events = ev;
}

/* Sends what nghttp2 has queued; marks the connection for closing on an
 * error or when neither side has anything more to say. */
static void conn_send(struct h2_conn *conn)
{
        if (conn->closing)
                return;
        if (nghttp2_session_send(conn->ng) != 0) {
                conn->closing = true;
                return;
        }
        if (!nghttp2_session_want_read(conn->ng) && !nghttp2_session_want_write(conn->ng)) {
                conn->closing = true;
                conn->graceful = true;
                return;
        }
        conn_update_events(conn);
}

/* The body of a response: the call's queued messages, then (once it is
 * finished) its trailers. Loop thread. */
static ssize_t on_read_data(nghttp2_session *ng, int32_t stream_id, uint8_t *buf, size_t length,
                            uint32_t *data_flags, nghttp2_data_source *source, void *ud)
{
        struct h2_call *c = source->ptr;
        struct h2_server *s = c->s;
        struct budget_client *client = c->client;
        size_t n;
        bool eof = false;
        int status = 0;
        char msg[3 * H2_MAX_STATUS_MESSAGE + 1];

        pthread_mutex_lock(&s->post_lock);
        n = c->out_len - c->out_off;
        if (n > length)
                n = length;
        if (n)
                memcpy(buf, c->out + c->out_off, n);
        c->out_off += n;
        if (c->out_off == c->out_len && c->out_cap) {
                free(c->out);
                uncharge(s, client, c->out_cap);
                c->out = NULL;
                c->out_len = c->out_off = c->out_cap = 0;
        }
        if (c->out_len == 0 && c->finished) {
                eof = true;
                status = c->status;
                h2_percent_encode(c->message, msg, sizeof msg);
        }
        c->deferred = n == 0 && !eof;
        pthread_mutex_unlock(&s->post_lock);
        if (n)
                c->last_ns = time_now_ns();
        if (c->deferred)
                return NGHTTP2_ERR_DEFERRED;
        if (eof) {
                char st[16];
                snprintf(st, sizeof st, "%d", status);
                nghttp2_nv tr[2] = {
                        { (uint8_t *)"grpc-status", (uint8_t *)st, 11, strlen(st), NGHTTP2_NV_FLAG_NONE },
                        { (uint8_t *)"grpc-message", (uint8_t *)msg, 12, strlen(msg), NGHTTP2_NV_FLAG_NONE },
                };
                *data_flags |= NGHTTP2_DATA_FLAG_EOF | NGHTTP2_DATA_FLAG_NO_END_STREAM;
                if (nghttp2_submit_trailer(ng, stream_id, tr, msg[0] ? 2 : 1) != 0)
                        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
                c->final_sent = true;
        }
        return (ssize_t)n;
}

#define NV(n, v) { (uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, strlen(v), NGHTTP2_NV_FLAG_NONE }

/* Moves c's answer on: its response headers (with its body, or alone with
 * the status for a call that ends with no message: gRPC's trailers-only
 * answer), or resumes its body. Loop thread, c on a connection. */
static void call_flush(struct h2_call *c)
{
        struct h2_server *s = c->s;
        nghttp2_session *ng = c->conn->ng;
        bool finished, empty;
        int status;
        char msg[3 * H2_MAX_STATUS_MESSAGE + 1], st[16];

        if (c->final_sent)
                return;
        pthread_mutex_lock(&s->post_lock);
        finished = c->finished;
        empty = c->out_len == c->out_off;
        status = c->status;
        h2_percent_encode(c->message, msg, sizeof msg);
        pthread_mutex_unlock(&s->post_lock);
        if (!c->headers_sent) {
                if (!finished && empty)
                        return;
                c->headers_sent = true;
                nghttp2_nv nv[6 + H2_MAX_HEADERS] = { NV(":status", "200"), NV("content-type", "application/grpc"),
                                                      NV("grpc-accept-encoding", ACCEPT_ENCODING) };
                size_t n = 3;
                for (int i = 0; i < c->n_extra; i++)
                        nv[n++] = (nghttp2_nv){ (uint8_t *)c->extra[i].name, (uint8_t *)c->extra[i].value,
                                                strlen(c->extra[i].name), strlen(c->extra[i].value),
                                                NGHTTP2_NV_FLAG_NONE };
                if (finished && empty) {
                        /* Trailers-only: the status in the headers. */
                        snprintf(st, sizeof st, "%d", status);
                        nv[n++] = (nghttp2_nv)NV("grpc-status", st);
                        if (msg[0])
                                nv[n++] = (nghttp2_nv)NV("grpc-message", msg);
                        nghttp2_submit_response(ng, c->stream_id, nv, n, NULL);
                        c->final_sent = true;
                        return;
                }
                nghttp2_data_provider dp = { .source.ptr = c, .read_callback = on_read_data };
                nghttp2_submit_response(ng, c->stream_id, nv, n, &dp);
                return;
        }
        if (c->deferred) {
                c->deferred = false;
                nghttp2_session_resume_data(ng, c->stream_id);
        }
}

/* Whether the handler still holds c: it took it and has not finished it
 * (after h2_call_finish its state may be gone: nothing more reaches it). */
static bool handler_holds(struct h2_call *c)
{
        bool fin;

        if (!c->taken || c->cancelled)
                return false;
        pthread_mutex_lock(&c->s->post_lock);
        fin = c->handler_finished;
        pthread_mutex_unlock(&c->s->post_lock);
        return !fin;
}

/* Ends c from the server's side (a limit, the deadline, a bad message):
 * the status goes out unless the handler's did, and the handler hears of
 * it through on_cancel. Loop thread. */
static void call_end(struct h2_call *c, enum h2_status status, const char *message)
{
        struct h2_server *s = c->s;

        bool holds = handler_holds(c);

        pthread_mutex_lock(&s->post_lock);
        set_final(c, status, message);
        pthread_mutex_unlock(&s->post_lock);
        c->discard = true;
        c->cancelled = true;
        /* The client may still be sending: it is told to stop, after the status. */
        c->rst_after_final = !c->client_ended;
        if (holds && s->opts.handler->on_cancel)
                s->opts.handler->on_cancel(s->opts.userdata, c);
        if (c->conn)
                call_flush(c);
}

/* Drops one reference (the stream's or the handler's); the last frees c:
 * its stream is gone and the handler is done, so nobody can post. */
static void call_unref(struct h2_call *c)
{
        if (--c->refs > 0)
                return;
        call_free(c);
}

/* The stream of c is gone (closed, reset, or its connection): detach. */
static void call_detach(struct h2_call *c)
{
        struct h2_conn *conn = c->conn;
        struct h2_server *s = c->s;

        if (!conn)
                return;
        bool holds = handler_holds(c);
        pthread_mutex_lock(&s->post_lock);
        /* Nothing can be sent any more: replies are refused. */
        set_final(c, H2_CANCELLED, "the stream is gone");
        pthread_mutex_unlock(&s->post_lock);
        c->cancelled = true;
        if (holds && s->opts.handler->on_cancel)
                s->opts.handler->on_cancel(s->opts.userdata, c);
        if (holds && c->owner) {
                c->orphan = true;
                c->owner->orphans++;
        }
        if (c->prev)
                c->prev->next = c->next;
        else
                conn->calls = c->next;
        if (c->next)
                c->next->prev = c->prev;
        c->prev = c->next = NULL;
        c->conn = NULL;
        nghttp2_session_set_stream_user_data(conn->ng, c->stream_id, NULL);
        call_unref(c);
}

/* ---- nghttp2 callbacks -------------------------------------------------------------- */

static int on_begin_headers(nghttp2_session *ng, const nghttp2_frame *frame, void *ud)
{
        struct h2_conn *conn = ud;
        struct h2_server *s = conn->s;
        struct h2_call *c;
        struct budget_client *client = NULL;

        if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST)
                return 0;
        if (conn->key_len && budget_client_get(s->opts.budget, conn->key, conn->key_len, &client) < 0)
                client = NULL;
        bool charged = charge(s, client, sizeof *c) == 0;
        if (!charged || !(c = calloc(1, sizeof *c))) {
                if (charged)
                        uncharge(s, client, sizeof *c);
                budget_client_put(s->opts.budget, client);
                atomic_fetch_add(&s->streams_refused, 1);
                /* Resets this stream only. */
                return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
        }
        c->s = s;
        c->client = client;
        c->conn = conn;
        c->stream_id = frame->hd.stream_id;
        c->refs = 1;
        memcpy(c->peer, conn->peer, sizeof c->peer);
        memcpy(c->key, conn->key, sizeof c->key);
        c->key_len = conn->key_len;
        c->start_ns = c->last_ns = time_now_ns();
        c->next = conn->calls;
        if (conn->calls)
                conn->calls->prev = c;
        conn->calls = c;
        nghttp2_session_set_stream_user_data(ng, c->stream_id, c);
        return 0;
}

static int on_header(nghttp2_session *ng, const nghttp2_frame *frame, const uint8_t *name, size_t namelen,
                     const uint8_t *value, size_t valuelen, uint8_t flags, void *ud)
{
        struct h2_conn *conn = ud;
        struct h2_server *s = conn->s;
        struct h2_call *c = nghttp2_session_get_stream_user_data(ng, frame->hd.stream_id);

        if (!c || frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST)
                return 0;     /* trailers from the client carry nothing gRPC uses */
        c->header_bytes += namelen + valuelen + 32;
        if (c->header_bytes > s->opts.max_header_bytes) {
                c->bad_headers = true;
                atomic_fetch_add(&s->streams_refused, 1);
                return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
        }
        if (namelen == 5 && memcmp(name, ":path", 5) == 0) {
                if (valuelen >= sizeof c->path)
                        valuelen = 0;   /* no such method: UNIMPLEMENTED */
                memcpy(c->path, value, valuelen);
                c->path[valuelen] = '\0';
        } else if (namelen == 7 && memcmp(name, ":method", 7) == 0) {
                c->method_post = valuelen == 4 && memcmp(value, "POST", 4) == 0;
        } else if (namelen == 12 && memcmp(name, "content-type", 12) == 0) {
                c->grpc_type = valuelen >= 16 && memcmp(value, "application/grpc", 16) == 0 &&
                               (valuelen == 16 || value[16] == '+' || value[16] == ';');
        } else if (namelen == 13 && memcmp(name, "grpc-encoding", 13) == 0) {
                if (valuelen == 8 && memcmp(value, "identity", 8) == 0)
                        c->encoding = ENC_IDENTITY;
                else if (valuelen == 4 && memcmp(value, "gzip", 4) == 0)
                        c->encoding = ENC_GZIP;
                else if (valuelen == 7 && memcmp(value, "deflate", 7) == 0)
                        c->encoding = ENC_DEFLATE;
                else
                        c->encoding = ENC_UNKNOWN;
        } else if (namelen == 12 && memcmp(name, "grpc-timeout", 12) == 0) {
                char v[16];
                int64_t ns;
                if (valuelen < sizeof v) {
                        memcpy(v, value, valuelen);
                        v[valuelen] = '\0';
                        if (h2_parse_timeout(v, &ns) == 0) {
                                int64_t max = s->opts.max_deadline_ms * 1000000;
                                c->deadline_ns = c->start_ns + (ns < max ? ns : max);
                        }
                }
        } else {
                for (int i = 0; i < N_META; i++) {
                        if (namelen != strlen(meta_names[i]) || memcmp(name, meta_names[i], namelen) != 0)
                                continue;
                        /* Once each, bounded, charged before it is copied. */
                        bool ok = !c->meta[i] && valuelen <= H2_MAX_METADATA_VALUE &&
                                  charge(s, c->client, valuelen + 1) == 0;
                        if (ok && !(c->meta[i] = malloc(valuelen + 1))) {
                                uncharge(s, c->client, valuelen + 1);
                                ok = false;
                        }
                        if (!ok) {
                                c->bad_headers = true;
                                atomic_fetch_add(&s->streams_refused, 1);
                                return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
                        }
                        memcpy(c->meta[i], value, valuelen);
                        c->meta[i][valuelen] = '\0';
                }
        }
        return 0;
}

/* The client sent everything: tell the handler, or fail a cut message. */
static void call_client_end(struct h2_call *c)
{
        struct h2_server *s = c->s;

        if (c->client_ended)
                return;
        c->client_ended = true;
        if (c->discard)
                return;
        if (c->in_message || c->prefix_have) {
                call_end(c, H2_INTERNAL, "the stream ended inside a message");
                return;
        }
        if (handler_holds(c) && s->opts.handler->on_end)
                s->opts.handler->on_end(s->opts.userdata, c);
}

/* A call's headers are complete: the handler takes it or refuses it. */
static void call_start(struct h2_conn *conn, struct h2_call *c)
{
        struct h2_server *s = conn->s;
        char msg[256] = "";
        int st;

        if (!c->method_post || !c->grpc_type) {
                st = H2_INTERNAL;
                snprintf(msg, sizeof msg, "a gRPC call is a POST of content-type application/grpc");
        } else if (c->encoding == ENC_UNKNOWN) {
                /* gRPC's compression spec: UNIMPLEMENTED, and the answer's
                 * grpc-accept-encoding names what would do. */
                st = H2_UNIMPLEMENTED;
                snprintf(msg, sizeof msg, "grpc-encoding not supported; this server takes " ACCEPT_ENCODING);
        } else if (atomic_load(&s->draining)) {
                st = H2_UNAVAILABLE;
                snprintf(msg, sizeof msg, "the server is shutting down");
        } else if (conn->orphans >= s->opts.max_streams) {
                /* Calls whose streams the client reset still hold work: they
                 * count until the handler is done with them, so that a
                 * client cannot queue work without bound by opening and
                 * resetting streams (rapid reset). */
                st = H2_RESOURCE_EXHAUSTED;
                snprintf(msg, sizeof msg, "%d calls of this connection are being served, the limit", s->opts.max_streams);
                atomic_fetch_add(&s->streams_refused, 1);
        } else {
                st = s->opts.handler->on_call(s->opts.userdata, c, msg, sizeof msg);
        }
        if (st != 0) {
                call_end(c, (enum h2_status)st, msg);
                return;
        }
        c->taken = true;
        c->refs++;
        c->owner = conn;
        conn->live_calls++;
        atomic_fetch_add(&s->inflight, 1);
}

static int on_frame_recv(nghttp2_session *ng, const nghttp2_frame *frame, void *ud)
{
        struct h2_conn *conn = ud;
        struct h2_call *c;

        conn->preface_due_ns = 0;
        if (frame->hd.type != NGHTTP2_HEADERS && frame->hd.type != NGHTTP2_DATA)
                return 0;
        c = nghttp2_session_get_stream_user_data(ng, frame->hd.stream_id);
        if (!c)
                return 0;
        if (frame->hd.type == NGHTTP2_HEADERS && frame->headers.cat == NGHTTP2_HCAT_REQUEST)
                call_start(conn, c);
        /* The call may be gone: call_start's refusal can close the stream
         * only later, in nghttp2_session_send, so c is still valid here. */
        if (frame->hd.flags & NGHTTP2_FLAG_END_STREAM)
                call_client_end(c);
        return 0;
}

static void *z_alloc(void *ud, unsigned items, unsigned size)
{
        struct h2_call *c = ud;
        if (size && items > SIZE_MAX / size)
                return NULL;
        return charged_alloc(c->s, c->client, (size_t)items * size);
}

static void z_free(void *ud, void *ptr)
{
        struct h2_call *c = ud;
        charged_free(c->s, c->client, ptr);
}

/* Replaces c's complete compressed message by its inflated bytes; or ends
 * c and returns its error. zlib does the inflating (a decompressor is
 * not ours to write); its state and the output are charged to c's client
 * before they are had. The output grows by doubling up to one byte past
 * max_message_bytes, each step charged first, and inflate fills only
 * what is there: a small message that inflates past the limit (a zip
 * bomb) is refused having held at most the limit, as a plain message
 * of that size would. Loop thread. */
static int msg_inflate(struct h2_call *c)
{
        struct h2_server *s = c->s;
        size_t max = (size_t)s->opts.max_message_bytes;
        z_stream z = { .zalloc = z_alloc, .zfree = z_free, .opaque = c };
        uint8_t *out = NULL;
        size_t len = 0, cap = 0;
        char msg[160];
        int r, zr;

        /* gzip's header and trailer, or deflate as HTTP names it: zlib's. */
        zr = inflateInit2(&z, c->encoding == ENC_GZIP ? 16 + MAX_WBITS : MAX_WBITS);
        if (zr != Z_OK) {
                call_end(c, H2_RESOURCE_EXHAUSTED, "no memory in the budget to inflate a message now; retry later");
                return -ENOBUFS;
        }
        z.next_in = c->msg;
        z.avail_in = (uInt)c->msg_len;   /* at most max_message_bytes <= UINT32_MAX */
        for (;;) {
                if (len == cap) {
                        if (cap > max) {
                                r = -E2BIG;
                                goto fail;
                        }
                        size_t ncap = cap ? cap * 2 : MSG_MIN_ALLOC;
                        if (ncap > max + 1)
                                ncap = max + 1;
                        if ((r = charge(s, c->client, ncap - cap)) < 0)
                                goto fail;
                        uint8_t *p = realloc(out, ncap);
                        if (!p) {
                                uncharge(s, c->client, ncap - cap);
                                r = -ENOMEM;
                                goto fail;
                        }
                        out = p;
                        cap = ncap;
                }
                z.next_out = out + len;
                z.avail_out = (uInt)(cap - len);
                zr = inflate(&z, Z_NO_FLUSH);
                len = cap - z.avail_out;
                if (zr == Z_STREAM_END)
                        break;
                if (zr == Z_MEM_ERROR) {
                        r = -ENOBUFS;
                        goto fail;
                }
                /* Z_OK with room left means the input ran out before the end. */
                if ((zr != Z_OK && zr != Z_BUF_ERROR) || z.avail_out > 0) {
                        r = -EBADMSG;
                        goto fail;
                }
        }
        if (len > max) {
                r = -E2BIG;
                goto fail;
        }
        if (z.avail_in > 0) {
                r = -EBADMSG;   /* bytes after the end of the compressed data */
                goto fail;
        }
        inflateEnd(&z);
        free(c->msg);
        uncharge(s, c->client, c->msg_cap);
        c->msg = out;
        c->msg_len = len;
        c->msg_cap = cap;
        return 0;
fail:
        inflateEnd(&z);
        free(out);
        uncharge(s, c->client, cap);
        if (r == -E2BIG) {
                atomic_fetch_add(&s->messages_too_large, 1);
                snprintf(msg, sizeof msg, "a compressed message inflates past the limit of %lld bytes",
                         (long long)s->opts.max_message_bytes);
                call_end(c, H2_RESOURCE_EXHAUSTED, msg);
        } else if (r == -EBADMSG) {
                call_end(c, H2_INTERNAL, "a compressed message does not inflate (corrupt or cut)");
        } else {
                call_end(c, H2_RESOURCE_EXHAUSTED, "an inflated message does not fit the memory budget now; retry later");
        }
        return r;
}

/* Bytes of a call's request body: gRPC messages, each handed to the
 * handler when complete. */
static int on_data_chunk(nghttp2_session *ng, uint8_t flags, int32_t stream_id, const uint8_t *data, size_t len,
                         void *ud)
{
        struct h2_conn *conn = ud;
        struct h2_server *s = conn->s;
        struct h2_call *c = nghttp2_session_get_stream_user_data(ng, stream_id);
        char msg[160];

        if (!c)
                return 0;
        c->received += len;
        c->last_ns = time_now_ns();
        while (len && !c->discard) {
                if (!c->in_message) {
                        size_t k = 5 - (size_t)c->prefix_have;
                        if (k > len)
                                k = len;
                        memcpy(c->prefix + c->prefix_have, data, k);
                        c->prefix_have += (int)k;
                        data += k;
                        len -= k;
                        if (c->prefix_have < 5)
                                break;
                        c->prefix_have = 0;
                        bool compressed = false;   /* unset when the prefix is refused */
                        uint32_t mlen = 0;
                        if (h2_frame_prefix(c->prefix, &compressed, &mlen) < 0) {
                                call_end(c, H2_INTERNAL, "bad message prefix");
                                break;
                        }
                        if (compressed && c->encoding == ENC_IDENTITY) {
                                call_end(c, H2_INTERNAL, "a compressed message without grpc-encoding");
                                break;
                        }
                        if ((int64_t)mlen > s->opts.max_message_bytes) {
                                atomic_fetch_add(&s->messages_too_large, 1);
                                snprintf(msg, sizeof msg, "a message of %u bytes, more than the limit of %lld",
                                         mlen, (long long)s->opts.max_message_bytes);
                                call_end(c, H2_RESOURCE_EXHAUSTED, msg);
                                break;
                        }
                        c->in_message = true;
                        c->msg_compressed = compressed;
                        c->msg_need = mlen;
                        c->msg_len = 0;
                        c->msg_start_ns = c->last_ns;
                }
                size_t k = c->msg_need - c->msg_len;
                if (k > len)
                        k = len;
                if (c->msg_len + k > c->msg_cap) {
                        size_t cap = c->msg_cap ? c->msg_cap * 2 : MSG_MIN_ALLOC;
                        while (cap < c->msg_len + k)
                                cap *= 2;
                        if (cap > c->msg_need)
                                cap = c->msg_need;
                        int r = charge(s, c->client, cap - c->msg_cap);
                        uint8_t *p = r < 0 ? NULL : realloc(c->msg, cap);
                        if (!p) {
                                if (r == 0)
                                        uncharge(s, c->client, cap - c->msg_cap);
                                snprintf(msg, sizeof msg, "a message of %zu bytes does not fit the memory budget now; "
                                         "retry later", c->msg_need);
                                call_end(c, H2_RESOURCE_EXHAUSTED, msg);
                                break;
                        }
                        c->msg = p;
                        c->msg_cap = cap;
                }
                if (k)
                        memcpy(c->msg + c->msg_len, data, k);
                c->msg_len += k;
                data += k;
                len -= k;
                if (c->msg_len < c->msg_need)
                        break;
                c->in_message = false;
                c->msg_start_ns = 0;
                if (c->msg_compressed && msg_inflate(c) < 0)
                        break;
                /* An empty message has no buffer: it is given a valid pointer all the same. */
                if (handler_holds(c))
                        s->opts.handler->on_message(s->opts.userdata, c, c->msg ? c->msg : (const uint8_t *)"",
                                                    c->msg_len);
                /* The next message gets a buffer of its own size. */
                free(c->msg);
                uncharge(s, c->client, c->msg_cap);
                c->msg = NULL;
                c->msg_cap = c->msg_len = 0;
        }
        if (c->discard && c->msg_cap) {
                free(c->msg);
                uncharge(s, c->client, c->msg_cap);
                c->msg = NULL;
                c->msg_cap = c->msg_len = 0;
                c->in_message = false;
        }
        return 0;
}

/* A call's last HEADERS (its status) went out: a call the server ended
 * while its client was still sending is reset (NO_ERROR), as gRPC servers
 * do, so that the rest of a refused upload is not sent. */
static int on_frame_send(nghttp2_session *ng, const nghttp2_frame *frame, void *ud)
{
        struct h2_call *c;

        if (frame->hd.type != NGHTTP2_HEADERS || !(frame->hd.flags & NGHTTP2_FLAG_END_STREAM))
                return 0;
        c = nghttp2_session_get_stream_user_data(ng, frame->hd.stream_id);
        if (c && c->rst_after_final && !c->client_ended)
                nghttp2_submit_rst_stream(ng, NGHTTP2_FLAG_NONE, c->stream_id, NGHTTP2_NO_ERROR);
        return 0;
}

static int on_stream_close(nghttp2_session *ng, int32_t stream_id, uint32_t error_code, void *ud)
{
        struct h2_call *c = nghttp2_session_get_stream_user_data(ng, stream_id);

        if (c)
                call_detach(c);
        return 0;
}

/* ---- the loop ------------------------------------------------------------------------ */

static void peer_of(struct h2_conn *conn, const struct sockaddr_storage *a)
{
        snprintf(conn->peer, sizeof conn->peer, "-");
        if (a->ss_family == AF_INET) {
                const struct sockaddr_in *v4 = (const struct sockaddr_in *)a;
                conn->key[0] = 4;
                memcpy(conn->key + 1, &v4->sin_addr, 4);
                conn->key_len = 5;
                inet_ntop(AF_INET, &v4->sin_addr, conn->peer, sizeof conn->peer);
        } else if (a->ss_family == AF_INET6) {
                const struct sockaddr_in6 *v6 = (const struct sockaddr_in6 *)a;
                bool v4 = IN6_IS_ADDR_V4MAPPED(&v6->sin6_addr);
                conn->key[0] = v4 ? 4 : 6;
                memcpy(conn->key + 1, v6->sin6_addr.s6_addr + (v4 ? 12 : 0), v4 ? 4 : 16);
                conn->key_len = v4 ? 5 : 17;
                if (v4)
                        inet_ntop(AF_INET, v6->sin6_addr.s6_addr + 12, conn->peer, sizeof conn->peer);
                else
                        inet_ntop(AF_INET6, &v6->sin6_addr, conn->peer, sizeof conn->peer);
        }
}

/* A connection for fd (-1: h2_feed's) from addr, its session started
 * with the server's settings. NULL when it cannot be had (fd is closed). */
static struct h2_conn *conn_new(struct h2_server *s, int fd, const struct sockaddr_storage *addr)
{
        struct h2_conn *conn = NULL;
        nghttp2_session_callbacks *cb = NULL;
        nghttp2_option *opt = NULL;

        if (!(conn = calloc(1, sizeof *conn)))
                goto fail;
        conn->kind = EP_CONN;
        conn->s = s;
        conn->fd = fd;
        peer_of(conn, addr);
        if (conn->key_len && budget_client_get(s->opts.budget, conn->key, conn->key_len, &conn->client) < 0)
                conn->client = NULL;
        conn->last_ns = time_now_ns();
        conn->preface_due_ns = conn->last_ns + (int64_t)s->opts.read_timeout_s * 1000000000LL;
        conn->mem = (nghttp2_mem){ .mem_user_data = conn, .malloc = mem_malloc, .free = mem_free,
                                   .calloc = mem_calloc, .realloc = mem_realloc };
        if (nghttp2_session_callbacks_new(&cb) != 0 || nghttp2_option_new(&opt) != 0)
                goto fail;
        nghttp2_session_callbacks_set_send_callback(cb, on_send);
        nghttp2_session_callbacks_set_on_begin_headers_callback(cb, on_begin_headers);
        nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
        nghttp2_session_callbacks_set_on_frame_recv_callback(cb, on_frame_recv);
        nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, on_data_chunk);
        nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_stream_close);
        nghttp2_session_callbacks_set_on_frame_send_callback(cb, on_frame_send);
        /* Streams beyond the setting are refused by nghttp2 itself, even
         * before the client acknowledged it. */
        nghttp2_option_set_max_reserved_remote_streams(opt, 0);
        if (nghttp2_session_server_new3(&conn->ng, cb, conn, opt, &conn->mem) != 0)
                goto fail;
        nghttp2_session_callbacks_del(cb);
        nghttp2_option_del(opt);
        cb = NULL;
        opt = NULL;
        nghttp2_settings_entry iv[] = {
                { NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, (uint32_t)s->opts.max_streams },
                { NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, STREAM_WINDOW },
                { NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, s->opts.max_header_bytes },
        };
        if (nghttp2_submit_settings(conn->ng, NGHTTP2_FLAG_NONE, iv, 3) != 0 ||
            nghttp2_session_set_local_window_size(conn->ng, NGHTTP2_FLAG_NONE, 0, CONN_WINDOW) != 0)
                goto fail;
        if (fd >= 0 && s->opts.tls) {
                static const char *const alpn[] = { "h2", NULL };
                /* GnuTLS allocates its own: what a session holds is
                 * charged before it is made. */
                if (charge(s, conn->client, TLS_CONN_BYTES) < 0)
                        goto fail;   /* counted by the budget */
                conn->tls_charged = true;
                if (tls_conn_new(s->opts.tls, fd, alpn, &conn->tls) < 0)
                        goto fail;
                conn->handshaking = true;
        }
        if (fd >= 0) {
                struct epoll_event e = { .events = EPOLLIN | EPOLLRDHUP, .data.ptr = conn };
                if (epoll_ctl(s->epoll_fd, EPOLL_CTL_ADD, fd, &e) < 0)
                        goto fail;
                conn->events = e.events;
        }
        conn->next = s->conns;
        if (s->conns)
                s->conns->prev = conn;
        s->conns = conn;
        atomic_fetch_add(&s->open, 1);
        return conn;
fail:
        if (cb)
                nghttp2_session_callbacks_del(cb);
        if (opt)
                nghttp2_option_del(opt);
        if (conn) {
                if (conn->ng)
                        nghttp2_session_del(conn->ng);
                tls_conn_free(conn->tls);
                if (conn->tls_charged)
                        uncharge(s, conn->client, TLS_CONN_BYTES);
                budget_client_put(s->opts.budget, conn->client);
                free(conn);
        }
        if (fd >= 0)
                close(fd);
        return NULL;
}

/* A graceful end of a TLS connection: close_notify, so that the client
 * can tell it from a cut. One try, not a wait: the alert is a few dozen
 * bytes, which a socket with room takes at once; on a full socket (a
 * client that does not read) the connection is cut as any other. Bytes
 * the client sent that nobody will read are taken first (a few reads at
 * most), since closing a socket with unread bytes resets the connection,
 * which may destroy the alert before the client reads it. */
static void conn_bye(struct h2_conn *conn)
{
        uint8_t buf[READ_CHUNK];

        if (tls_conn_bye(conn->tls) < 0)
                return;
        for (int i = 0; i < 4; i++)
                if (recv(conn->fd, buf, sizeof buf, MSG_DONTWAIT) <= 0)
                        break;
}

/* Closes conn: its calls are detached (the handler hears of those it
 * holds), its session and socket go. Loop thread. */
static void conn_close(struct h2_conn *conn)
{
        struct h2_server *s = conn->s;

        while (conn->calls)
                call_detach(conn->calls);
        nghttp2_session_del(conn->ng);
        if (conn->tls && conn->graceful && !conn->handshaking)
                conn_bye(conn);
        conn->tls = tls_conn_free(conn->tls);
        if (conn->tls_charged)
                uncharge(s, conn->client, TLS_CONN_BYTES);
        conn->tls_charged = false;
        if (conn->fd >= 0) {
                epoll_ctl(s->epoll_fd, EPOLL_CTL_DEL, conn->fd, NULL);
                close(conn->fd);
        }
        if (conn->prev)
                conn->prev->next = conn->next;
        else
                s->conns = conn->next;
        if (conn->next)
                conn->next->prev = conn->prev;
        budget_client_put(s->opts.budget, conn->client);
        atomic_fetch_sub(&s->open, 1);
        /* Calls whose streams a client reset still count against it until
         * the handler is done with them. */
        conn->dead = true;
        if (conn->live_calls == 0)
                free(conn);
}

/* Feeds bytes received into conn's session. */
static void conn_recv(struct h2_conn *conn, const uint8_t *data, size_t len)
{
        ssize_t r = nghttp2_session_mem_recv(conn->ng, data, len);
        if (r < 0) {
                atomic_fetch_add(&conn->s->protocol_errors, 1);
                conn->closing = true;
        }
}

/* Goes on with a TLS handshake; its time is bounded by the preface's
 * (read_timeout_s from accept), as nothing else clears preface_due_ns. */
static void conn_handshake(struct h2_conn *conn)
{
        int r = tls_conn_handshake(conn->tls);

        if (r == -EAGAIN)
                return;
        if (r < 0) {
                atomic_fetch_add(&conn->s->tls_failures, 1);
                conn->closing = true;
                return;
        }
        conn->handshaking = false;
        conn->last_ns = time_now_ns();
}

static void conn_readable(struct h2_conn *conn)
{
        uint8_t buf[READ_CHUNK];

        /* A few reads per wake-up, so that one busy connection does not
         * starve the others; but bytes GnuTLS already decrypted bring no
         * further wake-up, so those are all taken. */
        for (int i = 0; !conn->closing && (i < 8 || (conn->tls && tls_conn_pending(conn->tls) > 0)); i++) {
                ssize_t n;
                if (conn->tls) {
                        n = tls_conn_recv(conn->tls, buf, sizeof buf);
                        conn->recv_wants_write = n == -EAGAIN && tls_conn_want_write(conn->tls);
                        if (n == -EAGAIN)
                                break;
                        if (n < 0) {
                                conn->closing = true;
                                break;
                        }
                } else {
                        n = recv(conn->fd, buf, sizeof buf, MSG_DONTWAIT);
                }
                if (n == 0) {
                        conn->closing = true;
                        conn->graceful = true;
                        break;
                }
                if (n < 0) {
                        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
                                conn->closing = true;
                        break;
                }
                conn->last_ns = time_now_ns();
                conn_recv(conn, buf, (size_t)n);
        }
}

/* The calls the handler answered or finished since the last time. */
static void process_posts(struct h2_server *s)
{
        struct h2_call *list, *c, *next;

        pthread_mutex_lock(&s->post_lock);
        list = s->dirty;
        s->dirty = NULL;
        for (c = list; c; c = c->dirty_next)
                c->dirty = false;
        pthread_mutex_unlock(&s->post_lock);
        for (c = list; c; c = next) {
                next = c->dirty_next;
                bool done;
                pthread_mutex_lock(&s->post_lock);
                done = c->handler_finished;
                pthread_mutex_unlock(&s->post_lock);
                if (c->conn)
                        call_flush(c);
                if (done && c->taken && !c->handler_done) {
                        c->handler_done = true;
                        struct h2_conn *o = c->owner;
                        if (o && c->orphan)
                                o->orphans--;
                        if (o && --o->live_calls == 0 && o->dead)
                                free(o);
                        atomic_fetch_sub(&s->inflight, 1);
                        call_unref(c);
                }
        }
}

/* Slow and idle connections and streams, and calls past their deadline. */
static void sweep(struct h2_server *s, int64_t now)
{
        int64_t idle = (int64_t)s->opts.idle_timeout_s * 1000000000LL;
        int64_t rd = (int64_t)s->opts.read_timeout_s * 1000000000LL;
        char msg[128];

        for (struct h2_conn *conn = s->conns; conn; conn = conn->next) {
                if (conn->preface_due_ns && now > conn->preface_due_ns) {
                        atomic_fetch_add(&s->timeouts, 1);
                        conn->closing = true;
                        continue;
                }
                if (!conn->calls && !conn->live_calls && idle && now - conn->last_ns > idle) {
                        atomic_fetch_add(&s->timeouts, 1);
                        nghttp2_submit_goaway(conn->ng, NGHTTP2_FLAG_NONE,
                                              nghttp2_session_get_last_proc_stream_id(conn->ng), NGHTTP2_NO_ERROR,
                                              NULL, 0);
                        conn_send(conn);
                        conn->closing = true;
                        conn->graceful = true;
                        continue;
                }
                for (struct h2_call *c = conn->calls, *next; c; c = next) {
                        next = c->next;
                        if (c->final_sent)
                                continue;
                        if (c->deadline_ns && now > c->deadline_ns) {
                                call_end(c, H2_DEADLINE_EXCEEDED, "the deadline (grpc-timeout) passed");
                        } else if (rd && c->msg_start_ns && now - c->msg_start_ns > rd) {
                                atomic_fetch_add(&s->timeouts, 1);
                                snprintf(msg, sizeof msg, "a request message took longer than %d s to arrive",
                                         s->opts.read_timeout_s);
                                call_end(c, H2_UNAVAILABLE, msg);
                        } else if (idle && !c->client_ended && !c->taken && now - c->last_ns > idle) {
                                atomic_fetch_add(&s->timeouts, 1);
                                call_end(c, H2_UNAVAILABLE, "the stream was idle for too long");
                        } else if (idle && !c->client_ended && c->taken && now - c->last_ns > idle &&
                                   now - c->start_ns > rd && c->received == 0) {
                                atomic_fetch_add(&s->timeouts, 1);
                                snprintf(msg, sizeof msg, "no request message within %d s", s->opts.read_timeout_s);
                                call_end(c, H2_UNAVAILABLE, msg);
                        }
                }
                conn_send(conn);
        }
}

static void accept_all(struct h2_server *s)
{
        for (;;) {
                struct sockaddr_storage addr;
                socklen_t al = sizeof addr;
                int fd = accept4(s->listen_fd, (struct sockaddr *)&addr, &al, SOCK_NONBLOCK | SOCK_CLOEXEC);
                if (fd < 0)
                        return;
                atomic_fetch_add(&s->connections, 1);
                if (atomic_load(&s->open) >= s->opts.max_connections || atomic_load(&s->draining)) {
                        atomic_fetch_add(&s->connections_refused, 1);
                        close(fd);
                        continue;
                }
                int one = 1;
                setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                struct h2_conn *conn = conn_new(s, fd, &addr);
                if (conn)
                        conn_send(conn);   /* our SETTINGS */
        }
}

static void close_marked(struct h2_server *s)
{
        for (struct h2_conn *conn = s->conns, *next; conn; conn = next) {
                next = conn->next;
                if (conn->closing)
                        conn_close(conn);
        }
}

/* Tells every connection to go away once its calls are done. */
static void goaway_all(struct h2_server *s)
{
        for (struct h2_conn *conn = s->conns; conn; conn = conn->next) {
                if (conn->goaway)
                        continue;
                conn->goaway = true;
                nghttp2_submit_shutdown_notice(conn->ng);
                nghttp2_submit_goaway(conn->ng, NGHTTP2_FLAG_NONE, nghttp2_session_get_last_proc_stream_id(conn->ng),
                                      NGHTTP2_NO_ERROR, NULL, 0);
                conn_send(conn);
        }
}

static void *loop_main(void *arg)
{
        struct h2_server *s = arg;
        struct epoll_event ev[64];

        while (!atomic_load(&s->stop)) {
                int n = epoll_wait(s->epoll_fd, ev, 64, (int)(SWEEP_NS / 1000000));
                for (int i = 0; i < n; i++) {
                        struct ep_tag *t = ev[i].data.ptr;
                        if (t->kind == EP_LISTENER) {
                                accept_all(s);
                        } else if (t->kind == EP_WAKE) {
                                uint64_t v;
                                if (read(s->wake_fd, &v, sizeof v) < 0) {
                                        /* nothing to read: another wake-up took it */
                                }
                        } else {
                                struct h2_conn *conn = (struct h2_conn *)t;
                                if (conn->closing)
                                        continue;
                                if (conn->handshaking)
                                        conn_handshake(conn);
                                if (conn->closing || conn->handshaking) {
                                        conn_update_events(conn);
                                        continue;
                                }
                                if (ev[i].events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR) ||
                                    conn->recv_wants_write || (conn->tls && tls_conn_pending(conn->tls) > 0))
                                        conn_readable(conn);
                                conn_send(conn);
                        }
                }
                process_posts(s);
                /* Sends of the posts above. */
                for (struct h2_conn *conn = s->conns; conn; conn = conn->next)
                        if (nghttp2_session_want_write(conn->ng))
                                conn_send(conn);
                if (atomic_load(&s->draining))
                        goaway_all(s);
                int64_t now = time_now_ns();
                if (now >= s->next_sweep_ns) {
                        sweep(s, now);
                        s->next_sweep_ns = now + SWEEP_NS;
                }
                close_marked(s);
        }
        return NULL;
}

/* ---- the server ------------------------------------------------------------------------ */

static int listen_on(struct h2_server *s, char *err, size_t err_len)
{
        struct sockaddr_storage addr;
        size_t alen;
        int r, one = 1;

        if ((r = parse_listen("grpc-listen", s->opts.listen, &addr, &alen, err, err_len)) < 0)
                return r;
        s->listen_fd = socket(addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (s->listen_fd < 0)
                return err_set(err, err_len, -errno, "grpc-listen %s: %s", s->opts.listen, strerror(errno));
        setsockopt(s->listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (bind(s->listen_fd, (struct sockaddr *)&addr, (socklen_t)alen) < 0 || listen(s->listen_fd, 128) < 0)
                return err_set(err, err_len, -errno, "grpc-listen %s: %s", s->opts.listen, strerror(errno));
        socklen_t al = sizeof addr;
        getsockname(s->listen_fd, (struct sockaddr *)&addr, &al);
        char host[INET6_ADDRSTRLEN] = "?";
        int port = 0;
        if (addr.ss_family == AF_INET) {
                inet_ntop(AF_INET, &((struct sockaddr_in *)&addr)->sin_addr, host, sizeof host);
                port = ntohs(((struct sockaddr_in *)&addr)->sin_port);
                snprintf(s->url, sizeof s->url, "%s://%s:%d", s->opts.tls ? "https" : "http", host, port);
        } else {
                inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&addr)->sin6_addr, host, sizeof host);
                port = ntohs(((struct sockaddr_in6 *)&addr)->sin6_port);
                snprintf(s->url, sizeof s->url, "%s://[%s]:%d", s->opts.tls ? "https" : "http", host, port);
        }
        return 0;
}

static bool opts_valid(const struct h2_opts *o)
{
        return o->max_connections >= 1 && o->max_streams >= 1 && o->max_header_bytes >= 1024 &&
               o->max_message_bytes >= 1 && o->max_message_bytes <= UINT32_MAX && o->idle_timeout_s >= 0 &&
               o->read_timeout_s >= 0 && o->max_deadline_ms >= 1 && o->budget && o->handler &&
               o->handler->on_call && o->handler->on_message;
}

int h2_new(const struct h2_opts *opts, char *err, size_t err_len, struct h2_server **ret_server)
{
        struct h2_server *s;
        int r;

        if (!opts_valid(opts))
                return err_set(err, err_len, -EINVAL, "bad gRPC server options");
        if (!(s = calloc(1, sizeof *s)))
                return -ENOMEM;
        s->opts = *opts;
        s->listen_fd = s->epoll_fd = s->wake_fd = -1;
        s->listener_tag.kind = EP_LISTENER;
        s->wake_tag.kind = EP_WAKE;
        pthread_mutex_init(&s->post_lock, NULL);
        if (!opts->listen) {
                *ret_server = s;
                return 0;
        }
        if ((r = listen_on(s, err, err_len)) < 0)
                goto fail;
        s->epoll_fd = epoll_create1(EPOLL_CLOEXEC);
        s->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        if (s->epoll_fd < 0 || s->wake_fd < 0) {
                r = err_set(err, err_len, -errno, "epoll: %s", strerror(errno));
                goto fail;
        }
        struct epoll_event el = { .events = EPOLLIN, .data.ptr = &s->listener_tag };
        struct epoll_event ew = { .events = EPOLLIN, .data.ptr = &s->wake_tag };
        if (epoll_ctl(s->epoll_fd, EPOLL_CTL_ADD, s->listen_fd, &el) < 0 ||
            epoll_ctl(s->epoll_fd, EPOLL_CTL_ADD, s->wake_fd, &ew) < 0) {
                r = err_set(err, err_len, -errno, "epoll: %s", strerror(errno));
                goto fail;
        }
        if ((r = -pthread_create(&s->thread, NULL, loop_main, s)) < 0) {
                err_set(err, err_len, r, "gRPC thread: %s", strerror(-r));
                goto fail;
        }
        s->started = true;
        *ret_server = s;
        return 0;
fail:
        h2_free(s);
        return r;
}

struct h2_server *h2_free(struct h2_server *s)
{
        if (!s)
                return NULL;
        if (s->started) {
                atomic_store(&s->stop, true);
                wake(s);
                pthread_join(s->thread, NULL);
        }
        process_posts(s);
        while (s->conns) {
                s->conns->graceful = true;   /* the server stops */
                conn_close(s->conns);
        }
        /* Calls whose handler finished after their connection went. */
        process_posts(s);
        if (s->listen_fd >= 0)
                close(s->listen_fd);
        if (s->epoll_fd >= 0)
                close(s->epoll_fd);
        if (s->wake_fd >= 0)
                close(s->wake_fd);
        pthread_mutex_destroy(&s->post_lock);
        free(s);
        return NULL;
}

const char *h2_url(const struct h2_server *s)
{
        return s->url;
}

void h2_drain(struct h2_server *s)
{
        atomic_store(&s->draining, true);
        wake(s);
}

int h2_inflight(struct h2_server *s)
{
        return atomic_load(&s->inflight);
}

void h2_stats_snapshot(struct h2_server *s, struct h2_stats *ret_stats)
{
        *ret_stats = (struct h2_stats){
                .connections = atomic_load(&s->connections),
                .connections_refused = atomic_load(&s->connections_refused),
                .timeouts = atomic_load(&s->timeouts),
                .streams_refused = atomic_load(&s->streams_refused),
                .messages_too_large = atomic_load(&s->messages_too_large),
                .protocol_errors = atomic_load(&s->protocol_errors),
                .tls_failures = atomic_load(&s->tls_failures),
                .open = atomic_load(&s->open),
        };
}

void h2_feed(struct h2_server *s, const uint8_t *data, size_t len)
{
        struct sockaddr_storage addr = { 0 };
        struct sockaddr_in *v4 = (struct sockaddr_in *)&addr;

        v4->sin_family = AF_INET;
        v4->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        struct h2_conn *conn = conn_new(s, -1, &addr);
        if (!conn)
                return;
        conn_send(conn);
        /* In pieces, as a socket would deliver them. */
        for (size_t off = 0; off < len && !conn->closing;) {
                size_t k = len - off < 4096 ? len - off : 4096;
                conn_recv(conn, data + off, k);
                off += k;
                process_posts(s);
                conn_send(conn);
        }
        sweep(s, time_now_ns() + (int64_t)3600 * 1000000000LL);
        process_posts(s);
        conn_close(conn);
        process_posts(s);
}
