/* http: the effnetd HTTP server on libmicrohttpd. */
#include "http.h"
#include "util.h"
#include "budget.h"
#include "pipeline.h"
#include "registry.h"
#include "routes.h"
#include "workpool.h"
#include "hosts.h"
#include "metrics.h"
#include "multipart.h"
#include "ui.h"
#include "v2.h"
#include "trace.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <microhttpd.h>
#include <netdb.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* libmicrohttpd cannot answer while a body is arriving, so after a chunked
 * body went over a limit the rest is read and dropped and the 413 follows
 * its end; past this many dropped bytes the connection closes instead. */
#define DISCARD_MAX ((size_t)64 << 20)
/* The bound of one prediction in an answer, besides its label (escaped:
 * labels are printable UTF-8, so only '"' and '\\' grow, to two bytes):
 * {"index":I,"label":"","score":S}, with I of at most 10 digits and S
 * printed with 6 significant digits (at most 13 characters). /v2's FP32
 * probabilities are printed with 9 (at most 16 characters and a comma). */
#define ANSWER_PREDICTION_MAX 64
#define ANSWER_FLOAT_MAX 24
#define ANSWER_FIXED_MAX 1024
/* How often connections still without their headers, or with a body still
 * arriving, are checked against header-timeout and body-timeout: the cut
 * comes at most this late. */
#define HEADER_SWEEP_NS 250000000LL

/* One accepted connection, tracked for header-timeout and body-timeout
 * from libmicrohttpd's connection notifications. Guarded by
 * http_server.conn_lock. */
struct http_conn {
        struct http_conn *prev, *next;
        int fd;                            /* valid while listed: the closed notification comes before close */
        int64_t deadline_ns;               /* its request's headers, or its body, are due then; 0 = none due
                                            * (a request is being served, or no limit) */
        bool body;                         /* the deadline is its body's */
        bool cut;                          /* shut down once, counted once */
};

/* Which listener a request came in on, given to its callbacks: set before
 * either listener starts, so that its polling threads never read a daemon
 * pointer that http_new is still writing. */
struct http_listener {
        struct http_server *s;
        bool admin;
};

struct http_server {
        struct http_opts opts;             /* strings below are not owned */
        struct http_listener main_listener, admin_listener;
        struct MHD_Daemon *daemon;
        struct MHD_Daemon *admin;          /* probes and metrics only, or NULL */
        struct hosts *hosts;               /* the Host names the main listener answers (immutable) */
        struct hosts *admin_hosts;         /* those the admin listener answers, or NULL */
        char url[128], admin_url[128];
        struct pipeline *pipe;             /* requests' work (not owned) */
        struct registry *reg;              /* the model versions served (the pipeline's; not owned) */
        atomic_ullong reloads, reload_failures;
        atomic_ullong id_seq;              /* made-up request ids */
        uint64_t id_salt;

        atomic_bool draining;
        atomic_bool stopping;              /* http_stop began: nothing new is suspended or submitted */
        atomic_int submitting;             /* requests between submit_enter and submit_leave */
        atomic_int resuming;               /* threads inside MHD_resume_connection (see req_resume) */
        pthread_mutex_t conn_lock;         /* guards conns and every http_conn on it, sweeping */
        pthread_cond_t conn_cond;          /* sweeping became false */
        struct http_conn *conns;           /* connections, while header-timeout is on */
        bool sweeping;
        bool sweeper_started;
        pthread_t sweeper;
        atomic_llong answer_bytes;         /* bodies of answers queued and not yet sent (a gauge) */
        atomic_int inflight;
        atomic_int waiting;                /* suspended while the batcher has their job */
        struct budget *budget;             /* what requests hold: bodies, tensors, outputs, answers (the
                                            * pipeline's) */
        atomic_ullong requests[HTTP_N_ROUTES][HTTP_N_STATUSES];
        atomic_ullong errors[API_N_ERRORS];
        atomic_ullong images;
        atomic_ullong connections;
        atomic_ullong body_timeouts;       /* connections closed past body-timeout */
        atomic_ullong connections_refused; /* closed at accept: max-connections open */
        atomic_int main_open;              /* connections open on the main listener */
        atomic_ullong header_timeouts;     /* connections shut down past header-timeout */
        atomic_ullong latency[HTTP_N_ROUTES][HTTP_LATENCY_BUCKETS + 1];
        atomic_ullong latency_us[HTTP_N_ROUTES];
        atomic_ullong queue_wait[HTTP_LATENCY_BUCKETS + 1];
        atomic_ullong queue_wait_us;
};

enum req_state {
        REQ_BODY,      /* reading the body */
        REQ_WAITING,   /* suspended, its work is in the pipeline */
        REQ_DONE,      /* the pipeline completed it (or it failed to start); answer now */
        REQ_ANSWERED,
};

/* One request; freed when libmicrohttpd reports it completed. Its work
 * (body, images, outputs, model version, memory charges) is the
 * pipeline's request, pr (server/pipeline.h); this is what HTTP adds. */
struct req {
        struct http_server *s;
        struct pipe_req *pr;        /* owned; its model version is NULL while the body arrives: a slow
                                     * upload holds no retired model */
        char id[HTTP_MAX_REQUEST_ID + 1];
        struct MHD_Connection *conn;
        const char *method;         /* libmicrohttpd's, valid for the request */
        const char *path;
        const struct hosts *hosts;  /* the Host names its listener answers */
        bool admin;                 /* came in on the admin listener */
        struct trace_ctx trace;     /* W3C trace context: the caller's trace, or one started here */
        struct routes_match match;  /* its route (match.id: what it is counted under) and the model and
                                     * version its path names */
        enum req_state state;
        int64_t start_ns;
        int top_k;                  /* 0: the default, until the request takes its model version */
        const char *content_type;   /* NULL when absent */
        bool multipart;
        int64_t v2_version;         /* the version its path names; 0: none */
        int64_t v2_header_len;      /* Inference-Header-Content-Length; -1 when absent */
        struct v2_request *v2req;   /* the parsed infer request, owned */
        size_t max_body;            /* body limit of its route */
        size_t received;            /* body bytes, kept or dropped */
        int n_images;               /* answered */
        size_t answer_len;          /* its answer's body, counted in s->answer_bytes and charged to the
                                     * budget until completed */
        bool counted_waiting;       /* counted in http_server.waiting */
};

/* A line for the operator, through the error_log callback. */
static void server_log(struct http_server *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void server_log(struct http_server *s, const char *fmt, ...)
{
        va_list ap;

        if (!s->opts.error_log)
                return;
        va_start(ap, fmt);
        s->opts.error_log(s->opts.userdata, fmt, ap);
        va_end(ap);
}

/* The model version serving q, or NULL. */
static const struct generation *req_gen(const struct req *q)
{
        return pipe_req_model(q->pr);
}

/* Whether q is under KServe v2's paths: its errors are v2's. */
static bool req_v2(const struct req *q)
{
        return strcmp(http_route_protocol(q->match.id), "v2") == 0;
}

/* The model version q names (its path's model and version, or the
 * default model): a reference until its work is released. */
static int req_take_gen(struct req *q)
{
        if (q->match.model)
                return pipe_req_acquire(q->pr, q->match.model, q->match.model_len, q->v2_version);
        return pipe_req_acquire(q->pr, NULL, 0, 0);
}

/* Everything but the request's own record: its body, images, outputs and
 * its reference to the model version (so that a retired one can go). */
static void req_release_work(struct req *q)
{
        pipe_req_release_work(q->pr);
        q->v2req = v2_request_free(q->v2req);
}

static void req_free(struct req *q)
{
        if (!q)
                return;
        req_release_work(q);
        pipe_req_uncharge(q->pr, (int64_t)q->answer_len);
        q->pr = pipe_req_free(q->pr);
        free(q);
}

#define req_fail(q, ...) pipe_req_fail((q)->pr, __VA_ARGS__)

/* An answer queued: counted in /metrics (requests by route and status,
 * latency, queue wait), then handed to the access log callback, if any. */
static void count_answer(struct req *q, int status, const char *error, size_t answer_bytes)
{
        struct http_server *s = q->s;
        double ms = (double)(time_now_ns() - q->start_ns) / 1e6;
        char host[INET6_ADDRSTRLEN + 8] = "-";
        double queue_ms = -1;

        atomic_fetch_add(&s->requests[q->match.id][http_status_index(status)], 1);
        atomic_fetch_add(&s->latency[q->match.id][http_latency_bucket(ms / 1e3)], 1);
        atomic_fetch_add(&s->latency_us[q->match.id], (unsigned long long)(ms * 1000.0));
        const struct pipe_req *pr = q->pr;
        if (pr->job.taken_ns && pr->submit_ns) {
                queue_ms = (double)(pr->job.taken_ns - pr->submit_ns) / 1e6;
                atomic_fetch_add(&s->queue_wait[http_latency_bucket(queue_ms / 1e3)], 1);
                atomic_fetch_add(&s->queue_wait_us, (unsigned long long)(queue_ms * 1000.0));
        }
        if (!s->opts.access_log)
                return;
        const union MHD_ConnectionInfo *ci = MHD_get_connection_info(q->conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
        if (ci && ci->client_addr) {
                socklen_t sl = ci->client_addr->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                                                      : sizeof(struct sockaddr_in);
                if (getnameinfo(ci->client_addr, sl, host, sizeof host, NULL, 0, NI_NUMERICHOST) != 0)
                        snprintf(host, sizeof host, "-");
        }
        struct http_access a = { .request_id = q->id, .client = host, .method = q->method, .path = q->path,
                                 .status = status, .error = error, .images = q->n_images,
                                 .body_bytes = q->received, .answer_bytes = answer_bytes, .queue_ms = queue_ms,
                                 .inference_ms = (double)pr->job.forward_ns / 1e6,
                                 .batch_size = pr->job.batch_size, .ms = ms, .trace_id = q->trace.trace_id_hex,
                                 .span_id = q->trace.span_id_hex, .parent_id = q->trace.parent_id_hex,
                                 .sampled = trace_sampled(&q->trace), .protocol = "http", .start_ns = q->start_ns,
                                 .end_ns = time_now_ns() };
        pipe_req_stages(pr, &a.stages);
        const struct generation *g = req_gen(q);
        if (g && (q->match.id == HTTP_ROUTE_CLASSIFY || q->match.id == HTTP_ROUTE_MODEL_CLASSIFY ||
                  q->match.id == HTTP_ROUTE_V2_INFER)) {
                a.model = g->name;
                a.version = (long long)g->version;
        }
        s->opts.access_log(s->opts.userdata, &a);
}

/* Server-Timing on classify answers: the server's own time for a client
 * (the try-it page shows it) without parsing the access log. total: from
 * the request's headers to its answer; queue: waiting for a worker; infer:
 * the forward passes of its images. */
static void add_server_timing(struct req *q, struct MHD_Response *resp)
{
        char st[160];
        double total = (double)(time_now_ns() - q->start_ns) / 1e6;
        const struct pipe_req *pr = q->pr;
        double queue = pr->job.taken_ns && pr->submit_ns ? (double)(pr->job.taken_ns - pr->submit_ns) / 1e6 : 0;

        snprintf(st, sizeof st, "total;dur=%.2f, queue;dur=%.2f, infer;dur=%.2f", total, queue,
                 (double)pr->job.forward_ns / 1e6);
        MHD_add_response_header(resp, "Server-Timing", st);
}

/* Queues n bytes of body (malloc'ed, taken over; NULL answers 500 with a
 * fixed body). header_len >= 0: a v2 answer with binary data after its JSON
 * header of that length (Inference-Header-Content-Length). */
static enum MHD_Result respond_n(struct req *q, int status, char *body, size_t n, const char *content_type,
                                 const char *error, int64_t header_len)
{
        struct http_server *s = q->s;
        static const char oom[] = "{\"error\":{\"code\":\"internal\",\"message\":\"out of memory\"}}";
        static const char oom_v2[] = "{\"error\":\"out of memory\"}";
        struct MHD_Response *resp;

        if (body) {
                resp = MHD_create_response_from_buffer(n, body, MHD_RESPMEM_MUST_FREE);
                if (!resp) {
                        free(body);
                } else {
                        /* Allocated already, and small unless its bound was reserved at
                         * admission: charged, never refused (a probe must answer). */
                        q->answer_len = n;
                        atomic_fetch_add(&s->answer_bytes, (long long)n);
                        pipe_req_charge_force(q->pr, (int64_t)n);
                }
        } else {
                const char *fixed = req_v2(q) ? oom_v2 : oom;
                status = 500;
                content_type = "application/json";
                header_len = -1;
                n = strlen(fixed);
                resp = MHD_create_response_from_buffer(n, (void *)fixed, MHD_RESPMEM_PERSISTENT);
        }
        if (!resp)
                return MHD_NO;
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
        if (header_len >= 0) {
                char hl[24];
                snprintf(hl, sizeof hl, "%lld", (long long)header_len);
                MHD_add_response_header(resp, "Inference-Header-Content-Length", hl);
        }
        MHD_add_response_header(resp, "X-Request-Id", q->id);
        char tp[TRACE_PARENT_LEN + 1];
        trace_format(&q->trace, tp);
        MHD_add_response_header(resp, "traceparent", tp);
        /* A caller's vendors' state rides along the trace: kept (valid,
         * with a valid traceparent), it goes back unchanged. */
        if (q->trace.state[0])
                MHD_add_response_header(resp, "tracestate", q->trace.state);
        if (status == 401)
                MHD_add_response_header(resp, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer");
        /* A browser must not read an answer as anything but its type (JSON
         * as a script or a page). */
        MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff");
        if (q->match.id == HTTP_ROUTE_UI || q->match.id == HTTP_ROUTE_UI_ASSET) {
                MHD_add_response_header(resp, "Content-Security-Policy", UI_CSP);
                MHD_add_response_header(resp, "Referrer-Policy", "no-referrer");
                MHD_add_response_header(resp, "X-Frame-Options", "DENY");
                MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, UI_CACHE_CONTROL);
        }
        if ((q->match.id == HTTP_ROUTE_CLASSIFY || q->match.id == HTTP_ROUTE_MODEL_CLASSIFY) && status == 200)
                add_server_timing(q, resp);
        if (atomic_load(&s->draining))
                MHD_add_response_header(resp, MHD_HTTP_HEADER_CONNECTION, "close");
        if (status == 503) {
                char ra[16];
                snprintf(ra, sizeof ra, "%d", s->opts.retry_after_s);
                MHD_add_response_header(resp, MHD_HTTP_HEADER_RETRY_AFTER, ra);
        }
        if (status == 405 && q->match.allow)
                MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, q->match.allow);
        enum MHD_Result r = MHD_queue_response(q->conn, (unsigned)status, resp);
        MHD_destroy_response(resp);
        q->state = REQ_ANSWERED;
        count_answer(q, status, error, n);
        /* The answer has its own copy: a slow reader of it holds no model
         * generation (a retired one could not go), body or tensors. */
        req_release_work(q);
        return r;
}

static enum MHD_Result respond(struct req *q, int status, char *body, const char *content_type, const char *error)
{
        return respond_n(q, status, body, body ? strlen(body) : 0, content_type, error, -1);
}

/* Under /v2 the body is {"error":"<message>"}, as the protocol says (Triton's
 * clients raise exactly that string); effnetd's own API has codes. */
static enum MHD_Result respond_error(struct req *q, enum api_error e, const char *msg)
{
        char *body = NULL;
        int r;

        atomic_fetch_add(&q->s->errors[e], 1);
        if (req_v2(q))
                r = v2_error_body(msg, &body);
        else
                r = api_error_body(e, msg, &body);
        if (r < 0)
                body = NULL;
        return respond(q, http_error_status(e), body, "application/json", api_error_code(e));
}

static enum MHD_Result respond_failed(struct req *q)
{
        return respond_error(q, q->pr->err, q->pr->msg);
}

static enum MHD_Result respond_json(struct req *q, int status, const char *json)
{
        return respond(q, status, strdup(json), "application/json", NULL);
}

/* The media type of a Content-Type value without parameters, compared
 * case-insensitively. */
static bool media_is(const char *ct, const char *type)
{
        size_t n = strlen(type);
        return strncasecmp(ct, type, n) == 0 && (ct[n] == '\0' || ct[n] == ';' || ct[n] == ' ' || ct[n] == '\t');
}

static void hist_load(struct http_hist *h, atomic_ullong *buckets, atomic_ullong *sum_us)
{
        for (int i = 0; i <= HTTP_LATENCY_BUCKETS; i++)
                h->buckets[i] = atomic_load(&buckets[i]);
        h->sum = (double)atomic_load(sum_us) / 1e6;
}

void http_stats_snapshot(struct http_server *s, struct http_stats *ret_stats)
{
        struct http_stats *st = ret_stats;

        *st = (struct http_stats){ 0 };
        for (int i = 0; i < HTTP_N_ROUTES; i++) {
                for (int k = 0; k < HTTP_N_STATUSES; k++)
                        st->requests[i][k] = atomic_load(&s->requests[i][k]);
                hist_load(&st->latency[i], s->latency[i], &s->latency_us[i]);
        }
        hist_load(&st->queue_wait, s->queue_wait, &s->queue_wait_us);
        for (int e = 0; e < API_N_ERRORS; e++)
                st->errors[e] = atomic_load(&s->errors[e]);
        st->images = atomic_load(&s->images);
        st->connections = atomic_load(&s->connections);
        st->connections_refused = atomic_load(&s->connections_refused);
        st->body_timeouts = atomic_load(&s->body_timeouts);
        st->header_timeouts = atomic_load(&s->header_timeouts);
        st->reloads = atomic_load(&s->reloads);
        st->reload_failures = atomic_load(&s->reload_failures);
        st->answer_bytes = atomic_load(&s->answer_bytes);
        struct budget_stats bs;
        budget_stats_snapshot(s->budget, &bs);
        st->memory_budget = bs.total;
        st->memory_client_share = bs.client_share;
        st->memory_charged = bs.used;
        st->memory_refused = bs.refused_total;
        st->memory_refused_client = bs.refused_client;
        st->inflight = atomic_load(&s->inflight);
        st->ready = !atomic_load(&s->draining);
        st->retired_models = reg_retired_count(s->reg);
}

/* The registry's rows, copied (a version may go once the lock is
 * released). */
struct listing {
        int n, cap;
        struct listed {
                char *name, *reason, *body;
                int64_t version;
                enum reg_state state;
        } *rows;
        bool bodies;
};

static int list_row(void *userdata, const struct reg_row *r)
{
        struct listing *l = userdata;

        if (l->n == l->cap) {
                int cap = l->cap ? l->cap * 2 : 16;
                struct listed *x = realloc(l->rows, sizeof *x * (size_t)cap);
                if (!x)
                        return -ENOMEM;
                l->rows = x;
                l->cap = cap;
        }
        struct listed *x = &l->rows[l->n];
        *x = (struct listed){ .name = strdup(r->name), .reason = strdup(r->reason ? r->reason : ""),
                              .version = r->version, .state = r->state };
        if (l->bodies && r->g)
                x->body = strdup(r->g->models_body);
        l->n++;
        if (!x->name || !x->reason || (l->bodies && r->g && !x->body))
                return -ENOMEM;
        return 0;
}

static void listing_clear(struct listing *l)
{
        for (int i = 0; i < l->n; i++) {
                free(l->rows[i].name);
                free(l->rows[i].reason);
                free(l->rows[i].body);
        }
        free(l->rows);
        *l = (struct listing){ 0 };
}

static const char *state_name(enum reg_state st)
{
        switch (st) {
        case REG_READY: return "READY";
        case REG_LOADING: return "LOADING";
        default: return "UNAVAILABLE";
        }
}

/* GET /v1/models: every model and version with its state. */
static int models_body(struct req *q, char **ret_body)
{
        struct listing l = { .bodies = true };
        int r = reg_list(q->s->reg, list_row, &l);
        struct api_model_row *rows = r == 0 ? calloc((size_t)l.n + 1, sizeof *rows) : NULL;

        if (rows) {
                for (int i = 0; i < l.n; i++)
                        rows[i] = (struct api_model_row){ .name = l.rows[i].name, .version = l.rows[i].version,
                                                          .state = state_name(l.rows[i].state),
                                                          .reason = l.rows[i].reason, .body = l.rows[i].body };
                r = api_models_list_body(rows, l.n, ret_body);
        } else {
                r = -ENOMEM;
        }
        free(rows);
        listing_clear(&l);
        return r;
}

/* POST /v2/repository/index: every model of the registry, loaded or not. */
static enum MHD_Result respond_index(struct req *q)
{
        struct listing l = { 0 };
        struct v2_index_row *rows = NULL;
        char *body = NULL;
        int r = reg_list(q->s->reg, list_row, &l);

        if (r == 0 && (rows = calloc((size_t)l.n + 1, sizeof *rows))) {
                for (int i = 0; i < l.n; i++)
                        rows[i] = (struct v2_index_row){ .name = l.rows[i].name, .version = l.rows[i].version,
                                                         .state = state_name(l.rows[i].state),
                                                         .reason = l.rows[i].reason };
                if (v2_repository_index_body(rows, l.n, &body) < 0)
                        body = NULL;
        }
        free(rows);
        listing_clear(&l);
        return respond(q, 200, body, "application/json", NULL);
}

/* A model version's /metrics facts, copied under the registry's lock (a
 * version may go once it is released). */
struct metrics_row {
        struct metrics_model m;
        struct batch_stats bs;
        char *strings[6];
};

struct metrics_rows {
        struct metrics_row *rows;
        int n, cap;
};

static int metrics_row(void *userdata, const struct reg_row *r)
{
        struct metrics_rows *l = userdata;
        const struct generation *g = r->g;
        struct batch_config bc;

        if (!g)
                return 0;
        if (l->n == l->cap) {
                int cap = l->cap ? l->cap * 2 : 8;
                struct metrics_row *x = realloc(l->rows, sizeof *x * (size_t)cap);
                if (!x)
                        return -ENOMEM;
                l->rows = x;
                l->cap = cap;
        }
        struct metrics_row *x = &l->rows[l->n++];
        memset(x, 0, sizeof *x);
        batch_get_config(g->batch, &bc);
        batch_stats_snapshot(g->batch, &x->bs);
        const char *src[6] = { g->name, g->info->variant, effnet_precision_name(bc.precision), g->weights_shown,
                               g->sha256, g->labels_shown };
        for (int i = 0; i < 6; i++)
                if (!(x->strings[i] = strdup(src[i] ? src[i] : "")))
                        return -ENOMEM;
        x->m = (struct metrics_model){ .name = x->strings[0], .version = (long long)g->version,
                                       .variant = x->strings[1], .precision = x->strings[2],
                                       .weights = x->strings[3], .weights_sha256 = x->strings[4],
                                       .labels = x->strings[5], .classes = g->info->classes,
                                       .input_size = g->info->preproc.size, .executor_bytes = bc.exec_bytes,
                                       .threads = bc.workers * bc.threads };
        return 0;
}

/* GET /metrics: every owner's snapshot, rendered by the metrics module;
 * every model version served with its own labels. */
static int metrics_body(struct req *q, char **ret_body)
{
        struct http_server *s = q->s;
        struct http_stats hs;
        struct batch_stats bs;
        struct wpool_stats ds;
        struct proc_stats ps;
        struct metrics_rows l = { 0 };
        struct metrics_model *models = NULL;
        int r;

        http_stats_snapshot(s, &hs);
        reg_batch_totals(s->reg, &bs);
        pipe_pool_stats(s->pipe, &ds);
        proc_get_stats(&ps);
        r = reg_list(s->reg, metrics_row, &l);
        if (r == 0 && !(models = calloc((size_t)l.n + 1, sizeof *models)))
                r = -ENOMEM;
        for (int i = 0; r == 0 && i < l.n; i++) {
                models[i] = l.rows[i].m;
                models[i].batch = &l.rows[i].bs;
        }
        struct grpc_stats gs;
        struct auth_stats as;
        struct tls_stats ts;
        struct otlp_stats os;
        if (r == 0) {
                struct metrics_sources src = { .http = &hs, .batch = &bs, .decode = &ds, .models = models,
                                               .n_models = l.n, .process = &ps };
                if (s->opts.grpc_stats) {
                        s->opts.grpc_stats(s->opts.userdata, &gs);
                        src.grpc = &gs;
                }
                if (s->opts.auth) {
                        auth_stats_snapshot(s->opts.auth, &as);
                        src.auth = &as;
                }
                if (s->opts.tls) {
                        tls_stats_snapshot(s->opts.tls, &ts);
                        src.tls = &ts;
                }
                if (s->opts.otlp_stats) {
                        s->opts.otlp_stats(s->opts.userdata, &os);
                        src.otlp = &os;
                }
                r = metrics_render(&src, ret_body);
        }
        for (int i = 0; i < l.n; i++)
                for (int k = 0; k < 6; k++)
                        free(l.rows[i].strings[k]);
        free(l.rows);
        free(models);
        return r;
}

/* ---- the route table's handlers (server/routes.h), by route id ---------------
 * GET routes answer at their headers; the others read a body first
 * (REQ_BODY) and answer in their complete handler, or when the work it
 * started is done. */

/* Takes the model version q's path names; true when there is none, with
 * the message in msg. */
static bool model_lookup_failed(struct req *q, char *msg, size_t len)
{
        int mlen = (int)(q->match.model_len < 100 ? q->match.model_len : 100);
        int r = -EINVAL;

        if (routes_version(&q->match, &q->v2_version) == 0 && (r = req_take_gen(q)) == 0)
                return false;
        if (r == -EINVAL || r == -ENODEV)
                snprintf(msg, len, "unknown version '%.*s' of model '%.*s'",
                         (int)(q->match.version_len < 40 ? q->match.version_len : 40), q->match.version, mlen,
                         q->match.model);
        else
                snprintf(msg, len, "unknown model '%.*s' (GET /v1/models lists the models served)", mlen,
                         q->match.model);
        return true;
}

static enum MHD_Result get_healthz(struct req *q)
{
        return respond_json(q, 200, "{\"status\":\"ok\"}");
}

static enum MHD_Result get_readyz(struct req *q)
{
        if (atomic_load(&q->s->draining))
                return respond_error(q, API_E_DRAINING, "the server is shutting down");
        return respond_json(q, 200, "{\"status\":\"ready\"}");
}

static enum MHD_Result get_models(struct req *q)
{
        char *body = NULL;

        if (models_body(q, &body) < 0)
                body = NULL;
        return respond(q, 200, body, "application/json", NULL);
}

static enum MHD_Result get_metrics(struct req *q)
{
        char *body = NULL;

        if (metrics_body(q, &body) < 0)
                body = NULL;
        return respond(q, 200, body, "text/plain; version=0.0.4; charset=utf-8", NULL);
}

/* The try-it page and its assets. */
static enum MHD_Result get_ui(struct req *q)
{
        struct ui_asset a;
        char *body;

        if (ui_find(q->path, &a) < 0)
                return respond_error(q, API_E_NOT_FOUND, "no such path");
        body = malloc(a.len + 1);
        if (body)
                memcpy(body, a.body, a.len + 1);
        return respond_n(q, 200, body, a.len, a.content_type, NULL, -1);
}

/* The /v2 health and metadata answers: the same truth as /healthz, /readyz
 * and /v1/models. */
static enum MHD_Result get_v2_server(struct req *q)
{
        char *body = NULL;

        if (v2_server_body(&body) < 0)
                body = NULL;
        return respond(q, 200, body, "application/json", NULL);
}

static enum MHD_Result get_v2_live(struct req *q)
{
        return respond_json(q, 200, "{\"live\":true}");
}

static enum MHD_Result get_v2_ready(struct req *q)
{
        if (atomic_load(&q->s->draining))
                return respond_error(q, API_E_DRAINING, "the server is shutting down");
        return respond_json(q, 200, "{\"ready\":true}");
}

static enum MHD_Result get_v2_model(struct req *q)
{
        char msg[256];

        if (model_lookup_failed(q, msg, sizeof msg))
                return respond_error(q, API_E_NOT_FOUND, msg);
        /* "versions": every version serving now, not only this one. */
        const struct generation *g = req_gen(q);
        int64_t versions[REG_MAX_LISTED_VERSIONS];
        int n = reg_versions(q->s->reg, g->v2.name, versions, REG_MAX_LISTED_VERSIONS);
        char *body = NULL;
        if (v2_model_body(&g->v2, versions, n, &body) < 0)
                body = NULL;
        return respond(q, 200, body, "application/json", NULL);
}

static enum MHD_Result get_v2_model_ready(struct req *q)
{
        char msg[256], ready[160];

        if (model_lookup_failed(q, msg, sizeof msg))
                return respond_error(q, API_E_NOT_FOUND, msg);
        if (atomic_load(&q->s->draining))
                return respond_error(q, API_E_DRAINING, "the server is shutting down");
        /* Variant names are plain ASCII ("efficientnetv2-s"): no escaping. */
        snprintf(ready, sizeof ready, "{\"name\":\"%s\",\"ready\":true}", req_gen(q)->name);
        return respond_json(q, 200, ready);
}

static enum MHD_Result get_v2_model_config(struct req *q)
{
        char msg[256];

        if (model_lookup_failed(q, msg, sizeof msg))
                return respond_error(q, API_E_NOT_FOUND, msg);
        return respond_json(q, 200, req_gen(q)->v2_config_body);
}

/* Inference-Header-Content-Length: digits only. */
static int parse_header_len(const char *v, int64_t *ret)
{
        if (!v)
                return *ret = -1, 0;
        return parse_int("Inference-Header-Content-Length", v, 0, INT64_MAX, NULL, 0, ret);
}

/* An infer request refused at its headers. Triton's clients send the whole
 * body before they read the answer, and would see a reset connection rather
 * than the error: the body is read and dropped first (up to DISCARD_MAX past
 * the limit, see on_body), then answered. */
static enum MHD_Result fail_after_body(struct req *q, enum api_error e, const char *msg)
{
        req_fail(q, e, "%s", msg);
        q->state = REQ_BODY;
        return MHD_YES;
}

/* Whether answers that clients have not read yet fill max-answer-total:
 * then a new request is refused (503) before any work is spent on it, so
 * that slow readers cannot make the daemon hold their answers without bound. */
static bool answers_full(struct http_server *s, char *msg, size_t len)
{
        long long held = atomic_load(&s->answer_bytes);

        if (held < s->opts.max_answer_total)
                return false;
        snprintf(msg, len, "answers not yet read by their clients hold %lld bytes (the max-answer-total setting); "
                 "retry later", held);
        return true;
}

/* POST /v2/models/{model}[/versions/{version}]/infer: model and version,
 * limits, Inference-Header-Content-Length. */
static enum MHD_Result v2_infer_headers(struct req *q)
{
        struct http_server *s = q->s;
        char msg[256];

        if (model_lookup_failed(q, msg, sizeof msg))
                return fail_after_body(q, API_E_NOT_FOUND, msg);
        const char *cl = MHD_lookup_connection_value(q->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
        int64_t cl_bytes;
        if (cl && parse_int("Content-Length", cl, 0, (int64_t)q->max_body, NULL, 0, &cl_bytes) < 0) {
                snprintf(msg, sizeof msg, "body of %.30s bytes; the limit of /v2 infer requests is %zu "
                         "(the v2-max-body-bytes setting)", cl, q->max_body);
                return respond_error(q, API_E_TOO_LARGE, msg);
        }
        if (atomic_load(&s->draining))
                return fail_after_body(q, API_E_DRAINING, "the server is shutting down");
        if (answers_full(s, msg, sizeof msg))
                return fail_after_body(q, API_E_OVERLOADED, msg);
        const char *ce = MHD_lookup_connection_value(q->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_ENCODING);
        if (ce && strcasecmp(ce, "identity") != 0) {
                snprintf(msg, sizeof msg, "Content-Encoding %.40s is not supported: send the body uncompressed", ce);
                return fail_after_body(q, API_E_UNSUPPORTED_MEDIA, msg);
        }
        const char *hl = MHD_lookup_connection_value(q->conn, MHD_HEADER_KIND, "Inference-Header-Content-Length");
        if (parse_header_len(hl, &q->v2_header_len) < 0) {
                snprintf(msg, sizeof msg, "Inference-Header-Content-Length %.30s is not a byte count", hl);
                return fail_after_body(q, API_E_INVALID_REQUEST, msg);
        }
        q->state = REQ_BODY;
        return MHD_YES;
}

/* POST /v2/repository/...: the body is read whole (a load's config). */
static enum MHD_Result control_headers(struct req *q)
{
        q->state = REQ_BODY;
        return MHD_YES;
}

/* POST /v1/classify and /v1/models/{model}[/versions/{version}]/classify:
 * the model, draining, top_k, Content-Type, Content-Length. */
static enum MHD_Result classify_headers(struct req *q)
{
        struct http_server *s = q->s;
        char msg[200], why[320];

        if (q->match.model && model_lookup_failed(q, why, sizeof why))
                return respond_error(q, API_E_NOT_FOUND, why);
        if (atomic_load(&s->draining))
                return respond_error(q, API_E_DRAINING, "the server is shutting down");
        if (!req_gen(q))
                return respond_error(q, API_E_NOT_FOUND, "no default model: name one, POST "
                                     "/v1/models/{name}/classify (GET /v1/models lists them), or set default-model");
        if (answers_full(s, msg, sizeof msg))
                return respond_error(q, API_E_OVERLOADED, msg);

        /* Without top_k, q->top_k stays 0: the default is taken against the
         * model that serves the request (classify_complete), which a reload
         * may change while the body arrives. */
        const char *k = MHD_lookup_connection_value(q->conn, MHD_GET_ARGUMENT_KIND, "top_k");
        if (k && api_parse_top_k(k, req_gen(q)->info->classes, &q->top_k) < 0) {
                snprintf(msg, sizeof msg, "top_k must be an integer in 1..%d", req_gen(q)->info->classes);
                return respond_error(q, API_E_INVALID_ARGUMENT, msg);
        }
        const char *ct = MHD_lookup_connection_value(q->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE);
        q->content_type = ct;
        if (ct && media_is(ct, "multipart/form-data")) {
                q->multipart = true;
        } else if (ct && !media_is(ct, "image/jpeg") && !media_is(ct, "image/png") &&
                   !media_is(ct, "application/octet-stream")) {
                snprintf(msg, sizeof msg,
                         "Content-Type %.80s: send image/jpeg, image/png, application/octet-stream "
                         "or multipart/form-data", ct);
                return respond_error(q, API_E_UNSUPPORTED_MEDIA, msg);
        }
        const char *cl = MHD_lookup_connection_value(q->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
        int64_t cl_bytes;
        if (cl && parse_int("Content-Length", cl, 0, s->opts.max_body_bytes, NULL, 0, &cl_bytes) < 0) {
                snprintf(msg, sizeof msg, "body of %.30s bytes; the limit is %lld", cl,
                         (long long)s->opts.max_body_bytes);
                return respond_error(q, API_E_TOO_LARGE, msg);
        }
        q->state = REQ_BODY;
        return MHD_YES;
}

/* The body limit of a route's requests. */
static size_t body_limit(const struct http_server *s, enum routes_body b)
{
        switch (b) {
        case ROUTES_BODY_V2: return (size_t)s->opts.v2_max_body_bytes;
        case ROUTES_BODY_CONTROL: return HTTP_CONTROL_MAX_BODY;
        case ROUTES_BODY_CLASSIFY:
        case ROUTES_BODY_NONE: break;
        }
        /* GET routes answer at their headers and read no body. */
        return (size_t)s->opts.max_body_bytes;
}

/* The most bytes q's body can have: its Content-Length when it sent one
 * (libmicrohttpd holds the body to it), else its route's limit. The buffer
 * grows to this and no further, so its capacity (what is charged) is never
 * more than the body's own length when that is known. */
static size_t body_bound(struct req *q)
{
        const char *cl = MHD_lookup_connection_value(q->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
        int64_t n;

        if (cl && parse_int("Content-Length", cl, 1, (int64_t)q->max_body, NULL, 0, &n) == 0)
                return (size_t)n;
        return q->max_body;
}

/* A piece of the body: keep it, or drop it once the request has failed. */
static enum MHD_Result on_body(struct req *q, const char *data, size_t n)
{
        struct http_server *s = q->s;
        int r;

        /* A body trickled in holds its connection and buffer; no answer can
         * go out before the body ends, so past body-timeout from the
         * headers the connection is closed. */
        if (s->opts.body_timeout_s > 0 && time_now_ns() - q->start_ns > (int64_t)s->opts.body_timeout_s * 1000000000) {
                atomic_fetch_add(&s->body_timeouts, 1);
                return MHD_NO;
        }
        q->received += n;
        if (q->pr->failed)
                return q->received > q->max_body + DISCARD_MAX ? MHD_NO : MHD_YES;
        if (q->pr->len + n > q->max_body) {
                pipe_req_body_release(q->pr);
                req_fail(q, API_E_TOO_LARGE, "body over the limit of %zu bytes", q->max_body);
                return MHD_YES;
        }
        size_t bound = body_bound(q);
        r = pipe_req_append(q->pr, data, n, bound > q->pr->len + n ? bound : q->pr->len + n);
        if (r == -ENOBUFS || r == -EDQUOT)
                pipe_req_fail_budget(q->pr, r, "the request body");
        else if (r < 0)
                req_fail(q, API_E_OVERLOADED, "out of memory for the body; retry later");
        return MHD_YES;
}

/* Hands a suspended request back to its polling thread, from any thread.
 * Last touch of q: its thread may answer and free it at once. Counted in
 * resuming until MHD_resume_connection returns, so that http_stop does not
 * stop the daemon under a resume still signalling it. */
static void req_resume(struct req *q)
{
        struct http_server *s = q->s;

        atomic_fetch_add(&s->resuming, 1);
        MHD_resume_connection(q->conn);
        atomic_fetch_sub(&s->resuming, 1);
}

/* A suspended request is over (its pipe_req says how). */
static void req_finish(struct req *q)
{
        q->state = REQ_DONE;
        req_resume(q);
}

/* The pipeline's one completion: back to the polling thread. */
static void on_pipe_done(struct pipe_req *pr, void *userdata)
{
        req_finish(userdata);
}

/* Entering the pipeline (suspend, submit): false once http_stop began, so
 * that no connection is suspended and no job submitted while or after the
 * server stops (the caller answers 503 draining). Then submit_leave. Both
 * sides are sequentially consistent: http_stop sets stopping and then
 * reads submitting, this counts itself and then reads stopping, so one of
 * them sees the other. */
static bool submit_enter(struct http_server *s)
{
        atomic_fetch_add(&s->submitting, 1);
        if (!atomic_load(&s->stopping))
                return true;
        atomic_fetch_sub(&s->submitting, 1);
        return false;
}

static void submit_leave(struct http_server *s)
{
        atomic_fetch_sub(&s->submitting, 1);
}

/* Suspends q's connection (inside submit_enter): it holds no polling
 * thread until req_resume. Counted in waiting, which http_stop waits for. */
static void req_suspend(struct req *q)
{
        q->state = REQ_WAITING;
        q->counted_waiting = true;
        atomic_fetch_add(&q->s->waiting, 1);
        MHD_suspend_connection(q->conn);
}

/* The bound of q's answer (charged at admission): its JSON with top_k
 * predictions per image (api_classify_body), or /v2's outputs
 * (v2_infer_body: the classification's k strings "score:index:label", or
 * every class's probability as JSON text or 4 bytes). */
static void answer_bound(const struct req *q, struct pipe_run *run)
{
        const struct generation *g = req_gen(q);

        if (q->match.id == HTTP_ROUTE_V2_INFER) {
                size_t k = q->v2req ? (size_t)q->v2req->classification : 0;
                run->answer_per_image = k ? k * (ANSWER_PREDICTION_MAX + 2 * g->label_max)
                                          : (size_t)g->info->classes * ANSWER_FLOAT_MAX;
        } else {
                run->answer_per_image = ANSWER_PREDICTION_MAX / 2 +
                                        (size_t)q->top_k * (ANSWER_PREDICTION_MAX + 2 * g->label_max);
        }
        run->answer_fixed = ANSWER_FIXED_MAX + 2 * strlen(g->name);
}

/* Hands q to the pipeline, its connection suspended meanwhile. A full
 * worker pool answers 503 at once: bodies do not pile up behind a few
 * slow images. */
static enum MHD_Result start_pipeline(struct req *q, struct pipe_run *run)
{
        struct http_server *s = q->s;

        if (!submit_enter(s)) {
                req_fail(q, API_E_DRAINING, "the server is shutting down");
                return respond_failed(q);
        }
        const union MHD_ConnectionInfo *ci = MHD_get_connection_info(q->conn, MHD_CONNECTION_INFO_CONNECTION_FD);
        q->pr->client_fd = ci ? ci->connect_fd : -1;
        run->client_fd_check = true;
        run->done = on_pipe_done;
        run->userdata = q;
        /* Suspend first: the pipeline may complete before pipe_run returns. */
        req_suspend(q);
        if (pipe_run(q->pr, run) < 0)
                req_finish(q);
        submit_leave(s);
        return MHD_YES;
}

/* On a worker thread: parses q's /v2 body into q->v2req, charging what the
 * parse holds: its head while it runs, then its tensor or images for as
 * long as q holds them; then the pipeline's inputs from it. */
static int v2_parse(struct pipe_req *pr, void *userdata)
{
        struct req *q = userdata;
        struct http_server *s = q->s;
        const struct v2_model *m = &req_gen(q)->v2;
        struct v2_limits lim = { .max_images = s->opts.max_images, .max_image_bytes = s->opts.img.limits.max_bytes };
        size_t json_len = q->v2_header_len >= 0 && (size_t)q->v2_header_len < pr->len ? (size_t)q->v2_header_len
                                                                                         : pr->len;
        int64_t head = (int64_t)v2_head_bytes(json_len);
        char err[256];
        int r;

        if ((r = pipe_req_charge(pr, head)) < 0)
                goto fail;
        r = v2_parse_head(pr->body, pr->len, q->v2_header_len, m, &lim, err, sizeof err, &q->v2req);
        pipe_req_uncharge(pr, head);
        if (r < 0)
                goto fail;
        int64_t data = (int64_t)v2_request_data_bytes(q->v2req, m, &lim);
        if ((int64_t)pr->cap + data > s->opts.max_client_share) {
                snprintf(err, sizeof err, "the request's %lld bytes of body and %lld of tensors or images are "
                         "more than one client may hold (max-client-share, %lld)", (long long)pr->cap,
                         (long long)data, (long long)s->opts.max_client_share);
                r = -E2BIG;
                goto fail;
        }
        if ((r = pipe_req_reserve(pr, data)) < 0)
                goto fail;
        if ((r = v2_parse_data(q->v2req, pr->body, pr->len, m, &lim, err, sizeof err)) < 0)
                goto fail;
        int n = q->v2req->n;
        answer_bound(q, &pr->run);
        pr->run.n = n;
        if (q->v2req->datatype == V2_BYTES) {
                /* Its images point into the body (binary data) or the request. */
                struct pipe_part *parts = calloc((size_t)n, sizeof *parts);
                if (!parts) {
                        r = -ENOMEM;
                        goto fail;
                }
                for (int i = 0; i < n; i++)
                        parts[i] = (struct pipe_part){ .data = q->v2req->images[i].data,
                                                       .len = q->v2req->images[i].len };
                /* Copied by the pipeline before the next step: freed by
                 * v2_parts_free once pipe_run's parse returned. */
                pr->run.parts = parts;
                return 0;
        }
        pr->run.tensor = q->v2req->tensor;   /* taken over */
        q->v2req->tensor = NULL;
        return 0;
fail:
        if (r == -E2BIG)
                req_fail(q, API_E_TOO_LARGE, "%s", err);
        else if (r == -ENOBUFS || r == -EDQUOT)
                pipe_req_fail_budget(pr, r, "parsing the request");
        else if (r == -ENOMEM)
                req_fail(q, API_E_OVERLOADED, "out of memory; retry later");
        else
                req_fail(q, API_E_INVALID_REQUEST, "%s", err);
        return r;
}

/* The daemon's answer to a load or unload call (any thread). */
static void on_control_done(void *token, bool ok, enum api_error e, const char *message)
{
        struct req *q = token;

        if (!ok)
                req_fail(q, e, "%s", message);
        req_finish(q);
}

/* POST /v2/repository/models/{model}/load or /unload: handed to the
 * daemon, the connection suspended until it answers. */
static enum MHD_Result start_control(struct req *q)
{
        struct http_server *s = q->s;
        char name[REG_MAX_NAME + 1], err[512];
        /* Its two routes differ in their last segment only. */
        bool load = strcmp(strrchr(q->path, '/'), "/load") == 0;

        if (!s->opts.repo_control)
                return respond_error(q, API_E_INVALID_REQUEST, "this server does not load or unload models");
        if (q->match.model_len > REG_MAX_NAME) {
                snprintf(err, sizeof err, "no model '%.*s'", REG_MAX_NAME, q->match.model);
                return respond_error(q, API_E_INVALID_REQUEST, err);
        }
        memcpy(name, q->match.model, q->match.model_len);
        name[q->match.model_len] = '\0';
        if (!submit_enter(s)) {
                req_fail(q, API_E_DRAINING, "the server is shutting down");
                return respond_failed(q);
        }
        req_suspend(q);
        if (s->opts.repo_control(s->opts.userdata, name, load, (const char *)q->pr->body, q->pr->len,
                                 on_control_done, q, err, sizeof err) < 0) {
                req_fail(q, API_E_INVALID_REQUEST, "%s", err);
                req_finish(q);
        }
        submit_leave(s);
        return MHD_YES;
}

/* Takes the model version served now for a request whose body is in;
 * false when there is none any more (an unload while the body arrived),
 * with the answer given. */
static bool take_gen_after_body(struct req *q, enum MHD_Result *ret)
{
        if (req_take_gen(q) == 0)
                return true;
        *ret = respond_error(q, API_E_NOT_FOUND, "the model is not served now (unloaded or reloaded)");
        return false;
}

/* A whole /v2 infer body: parsed on the worker pool, since a large JSON
 * body takes a while and the polling thread serves other connections. */
static enum MHD_Result v2_infer_complete(struct req *q)
{
        struct pipe_run run = { .mode = PIPE_JOB_PER_IMAGE, .parse = v2_parse, .numbered = true };
        enum MHD_Result mr;

        if (!take_gen_after_body(q, &mr))
                return mr;
        return start_pipeline(q, &run);
}

/* The whole body is here: take the model version served now, split the
 * body into images and hand them to the pipeline. */
static enum MHD_Result classify_complete(struct req *q)
{
        struct http_server *s = q->s;
        const struct generation *g;
        struct pipe_part one, *parts = NULL;
        char err[256], msg[200];
        enum MHD_Result mr;
        int n = 1, r;

        if (!take_gen_after_body(q, &mr))
                return mr;
        g = req_gen(q);
        if (q->top_k == 0)
                api_parse_top_k(NULL, g->info->classes, &q->top_k);
        if (q->top_k > g->info->classes) {
                snprintf(msg, sizeof msg, "top_k must be an integer in 1..%d", g->info->classes);
                return respond_error(q, API_E_INVALID_ARGUMENT, msg);
        }
        if (q->pr->len == 0)
                return respond_error(q, API_E_INVALID_IMAGE, "empty body: send an image");
        if (q->multipart) {
                char boundary[MULTIPART_MAX_BOUNDARY + 1];
                struct multipart_part *mp;
                if (multipart_boundary(q->content_type, boundary) < 0)
                        return respond_error(q, API_E_INVALID_MULTIPART,
                                             "multipart/form-data without a valid boundary parameter");
                mp = calloc((size_t)s->opts.max_images, sizeof *mp);
                parts = calloc((size_t)s->opts.max_images, sizeof *parts);
                if (!mp || !parts) {
                        free(mp);
                        free(parts);
                        return respond_error(q, API_E_OVERLOADED, "out of memory; retry later");
                }
                r = multipart_parse(q->pr->body, q->pr->len, boundary, mp, s->opts.max_images, &n, err,
                                    sizeof err);
                for (int i = 0; r == 0 && i < n; i++)
                        parts[i] = (struct pipe_part){ .data = mp[i].data, .len = mp[i].len };
                free(mp);
                if (r == -E2BIG) {
                        free(parts);
                        snprintf(msg, sizeof msg, "more than %d images in one request", s->opts.max_images);
                        return respond_error(q, API_E_TOO_LARGE, msg);
                }
                if (r < 0) {
                        free(parts);
                        return respond_error(q, API_E_INVALID_MULTIPART, err);
                }
        } else {
                one = (struct pipe_part){ .data = q->pr->body, .len = q->pr->len };
        }
        struct pipe_run run = { .mode = PIPE_ONE_JOB, .parts = parts ? parts : &one, .n = n,
                                .numbered = q->multipart };
        answer_bound(q, &run);
        mr = start_pipeline(q, &run);
        free(parts);   /* pipe_run copied the array */
        return mr;
}

/* The answer when building the body of a successful request failed (r):
 * the logits were not finite from an input within what images hold (a log
 * line: the operator's to fix), or something inside us broke. */
static enum MHD_Result answer_body_error(struct req *q, int r)
{
        if (r == -EDOM) {
                server_log(q->s, "request %s: the model computed NaN or Inf from an input that an image can "
                           "hold: its weights are broken", q->id);
                req_fail(q, API_E_NON_FINITE, "the model computed NaN or Inf for this input: its weights are "
                         "broken");
                return respond_failed(q);
        }
        return respond(q, 500, NULL, NULL, "internal");
}

/* The outputs of a /v2 infer request whose jobs all succeeded. */
static enum MHD_Result answer_v2_infer(struct req *q)
{
        const struct generation *g = req_gen(q);
        char *body = NULL;
        size_t len = 0, hlen = 0;
        char err[256];
        int r = v2_check_logits(&g->v2, q->v2req, q->pr->logits, err, sizeof err);

        /* The client's extreme values overflowed the network: its error. */
        if (r == -ERANGE) {
                req_fail(q, API_E_INVALID_REQUEST, "%s", err);
                return respond_failed(q);
        }
        if (r == 0)
                r = v2_infer_body(&g->v2, q->v2req, q->pr->logits, &body, &len, &hlen);
        if (r < 0)
                return answer_body_error(q, r);
        q->n_images = q->pr->n_images;
        atomic_fetch_add(&q->s->images, (unsigned long long)q->n_images);
        if (q->v2req->binary_output)
                return respond_n(q, 200, body, len, "application/octet-stream", NULL, (int64_t)hlen);
        return respond_n(q, 200, body, len, "application/json", NULL, -1);
}

/* The classes of effnetd's own request whose job succeeded. */
static enum MHD_Result answer_classify(struct req *q)
{
        const struct generation *g = req_gen(q);
        char *body = NULL;
        int r;

        q->n_images = q->pr->n_images;
        r = api_classify_body(g->name, g->labels, q->pr->logits, q->n_images, g->info->classes, q->top_k,
                              q->multipart, &body);

        if (r < 0)
                return answer_body_error(q, r);
        atomic_fetch_add(&q->s->images, (unsigned long long)q->n_images);
        return respond(q, 200, body, "application/json", NULL);
}

/* A load or unload call the daemon carried out. */
static enum MHD_Result answer_control(struct req *q)
{
        return respond(q, 200, strdup(""), "application/json", NULL);
}

/* Each route's handlers, by the route id of server/routes.h's table (one
 * id may have several rows: with and without a version, load and unload).
 * HTTP_ROUTE_OTHER and HTTP_ROUTE_V2_OTHER have none: no such path. */
struct route_handler {
        enum MHD_Result (*headers)(struct req *q);   /* answers, or sets REQ_BODY for a body to follow */
        enum MHD_Result (*complete)(struct req *q);  /* its body is in: answers, or starts work */
        enum MHD_Result (*answer)(struct req *q);    /* the work it started succeeded */
};

static const struct route_handler handlers[HTTP_N_ROUTES] = {
        [HTTP_ROUTE_CLASSIFY] = { classify_headers, classify_complete, answer_classify },
        [HTTP_ROUTE_MODEL_CLASSIFY] = { classify_headers, classify_complete, answer_classify },
        [HTTP_ROUTE_MODELS] = { get_models, NULL, NULL },
        [HTTP_ROUTE_HEALTHZ] = { get_healthz, NULL, NULL },
        [HTTP_ROUTE_READYZ] = { get_readyz, NULL, NULL },
        [HTTP_ROUTE_METRICS] = { get_metrics, NULL, NULL },
        [HTTP_ROUTE_UI] = { get_ui, NULL, NULL },
        [HTTP_ROUTE_UI_ASSET] = { get_ui, NULL, NULL },
        [HTTP_ROUTE_V2_SERVER] = { get_v2_server, NULL, NULL },
        [HTTP_ROUTE_V2_LIVE] = { get_v2_live, NULL, NULL },
        [HTTP_ROUTE_V2_READY] = { get_v2_ready, NULL, NULL },
        [HTTP_ROUTE_V2_MODEL] = { get_v2_model, NULL, NULL },
        [HTTP_ROUTE_V2_MODEL_READY] = { get_v2_model_ready, NULL, NULL },
        [HTTP_ROUTE_V2_MODEL_CONFIG] = { get_v2_model_config, NULL, NULL },
        [HTTP_ROUTE_V2_INFER] = { v2_infer_headers, v2_infer_complete, answer_v2_infer },
        [HTTP_ROUTE_V2_REPO_INDEX] = { control_headers, respond_index, NULL },
        [HTTP_ROUTE_V2_REPO_CONTROL] = { control_headers, start_control, answer_control },
};

/* First call for a request, routed (found: routes_match's result): Host,
 * API key, path and method; then its route's headers handler. */
static enum MHD_Result on_headers(struct req *q, int found)
{
        struct http_server *s = q->s;
        const char *host = MHD_lookup_connection_value(q->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_HOST);
        bool open = q->match.route && (q->match.route->flags & ROUTES_OPEN);
        char msg[200], why[320];

        /* Before anything is served or read: a page that reached us by DNS
         * rebinding gets nothing but this. */
        if (!hosts_allow(q->hosts, host)) {
                snprintf(why, sizeof why, "Host %.60s is not served here (Host names answered: %s; see the "
                         "allowed-hosts setting)", host, hosts_describe(q->hosts));
                return respond_error(q, API_E_MISDIRECTED, why);
        }
        /* Before the path is looked at: without a key, nothing (not even
         * which paths exist) is told but the probes. */
        if (s->opts.auth && !q->admin && !open) {
                enum auth_verdict v = auth_check(s->opts.auth, MHD_lookup_connection_value(q->conn, MHD_HEADER_KIND,
                                                                                           "Authorization"));
                if (v != AUTH_OK) {
                        snprintf(msg, sizeof msg, "%s: send \"Authorization: Bearer KEY\" with a valid API key",
                                 v == AUTH_MISSING ? "no API key" : v == AUTH_MALFORMED ? "malformed Authorization"
                                                                                       : "API key not valid");
                        return respond_error(q, API_E_UNAUTHENTICATED, msg);
                }
        }
        if (found == -ENOENT || !handlers[q->match.id].headers) {
                snprintf(msg, sizeof msg, "no such path: %.120s", q->path);
                return respond_error(q, API_E_NOT_FOUND, msg);
        }
        if (found == -EOPNOTSUPP)
                return respond_error(q, API_E_METHOD_NOT_ALLOWED,
                                     strcmp(q->match.route->method, "POST") == 0 ? "use POST" : "use GET");
        return handlers[q->match.id].headers(q);
}

/* The whole body is in (or was dropped: the request failed). */
static enum MHD_Result on_complete(struct req *q)
{
        if (q->pr->failed)
                return respond_failed(q);
        return handlers[q->match.id].complete(q);
}

/* The answer of a request whose work is done (or failed). */
static enum MHD_Result answer(struct req *q)
{
        q->counted_waiting = false;
        atomic_fetch_sub(&q->s->waiting, 1);
        if (q->pr->failed)
                return respond_failed(q);
        return handlers[q->match.id].answer(q);
}

/* After the pipeline's completion resumed the connection. */
static enum MHD_Result on_result(struct req *q)
{
        enum MHD_Result r = answer(q);
        /* The answer is queued: the images, outputs and model version are
         * not held while a slow client reads it. */
        req_release_work(q);
        return r;
}

/* libmicrohttpd's own unescaping, except that a URL with %00 stays as sent:
 * decoded, the NUL would end the C string early and "/healthz%00x" would be
 * /healthz. Undecoded, it matches no route (404). */
static size_t unescape(void *cls, struct MHD_Connection *conn, char *uri)
{
        for (const char *p = uri; (p = strchr(p, '%')) != NULL; p++)
                if (p[1] == '0' && p[2] == '0')
                        return strlen(uri);
        return MHD_http_unescape(uri);
}

/* X-Request-Id from the client when it is a sane token, else a new one. */
static void request_id(struct req *q)
{
        struct http_server *s = q->s;
        const char *v = MHD_lookup_connection_value(q->conn, MHD_HEADER_KIND, "X-Request-Id");
        size_t n = 0;

        if (v) {
                while (v[n] && n <= HTTP_MAX_REQUEST_ID &&
                       (isalnum((unsigned char)v[n]) || strchr("-_.:/+=@", v[n])))
                        n++;
                if (n > 0 && n <= HTTP_MAX_REQUEST_ID && v[n] == '\0') {
                        memcpy(q->id, v, n + 1);
                        return;
                }
        }
        uint64_t x = atomic_fetch_add(&s->id_seq, 1) + s->id_salt;
        /* splitmix64: ids look random but never repeat within a process */
        x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
        x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
        x ^= x >> 31;
        snprintf(q->id, sizeof q->id, "%016llx", (unsigned long long)x);
}

static struct http_conn *conn_of(struct MHD_Connection *conn)
{
        const union MHD_ConnectionInfo *ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
        return ci ? ci->socket_context : NULL;
}

/* A request's headers are in: no header deadline while it is served. */
static void conn_headers_seen(struct http_server *s, struct MHD_Connection *conn)
{
        struct http_conn *c = conn_of(conn);

        if (!c)
                return;
        pthread_mutex_lock(&s->conn_lock);
        c->deadline_ns = 0;
        pthread_mutex_unlock(&s->conn_lock);
}

/* A request's body follows its headers: it must end by body-timeout from
 * start_ns (the headers), also when no byte comes (on_body checks only as
 * bytes arrive, and without connection-timeout nothing else would). */
static void conn_body_due(struct http_server *s, struct MHD_Connection *conn, int64_t start_ns)
{
        struct http_conn *c = conn_of(conn);

        if (!c || s->opts.body_timeout_s <= 0)
                return;
        pthread_mutex_lock(&s->conn_lock);
        c->deadline_ns = start_ns + (int64_t)s->opts.body_timeout_s * 1000000000;
        c->body = true;
        pthread_mutex_unlock(&s->conn_lock);
}

/* A request's body is complete: no deadline while it is served. */
static void conn_body_done(struct http_server *s, struct MHD_Connection *conn)
{
        struct http_conn *c = conn_of(conn);

        if (!c)
                return;
        pthread_mutex_lock(&s->conn_lock);
        c->deadline_ns = 0;
        c->body = false;
        pthread_mutex_unlock(&s->conn_lock);
}

/* A request is over; the next one on the connection may first wait idle
 * (up to connection-timeout, which libmicrohttpd enforces), then must have
 * its headers within header-timeout. Without an idle limit, a kept-alive
 * connection waits for its next request without a header deadline. */
static void conn_request_done(struct http_server *s, struct MHD_Connection *conn, bool admin)
{
        struct http_conn *c = conn_of(conn);
        int64_t idle_s = admin ? HTTP_ADMIN_TIMEOUT_S : s->opts.connection_timeout_s;

        if (!c)
                return;
        pthread_mutex_lock(&s->conn_lock);
        c->deadline_ns = idle_s > 0 && s->opts.header_timeout_s > 0
                                 ? time_now_ns() + (idle_s + s->opts.header_timeout_s) * 1000000000
                                 : 0;
        c->body = false;
        pthread_mutex_unlock(&s->conn_lock);
}

static void *sweeper_main(void *arg)
{
        struct http_server *s = arg;

        pthread_mutex_lock(&s->conn_lock);
        while (s->sweeping) {
                int64_t now = time_now_ns();
                for (struct http_conn *c = s->conns; c; c = c->next)
                        if (c->deadline_ns && !c->cut && now > c->deadline_ns) {
                                /* libmicrohttpd sees the end of the stream and closes it. */
                                shutdown(c->fd, SHUT_RDWR);
                                c->cut = true;
                                atomic_fetch_add(c->body ? &s->body_timeouts : &s->header_timeouts, 1);
                        }
                struct timespec ts;
                int64_t at = now + HEADER_SWEEP_NS;
                ts.tv_sec = at / 1000000000;
                ts.tv_nsec = at % 1000000000;
                pthread_cond_timedwait(&s->conn_cond, &s->conn_lock, &ts);
        }
        pthread_mutex_unlock(&s->conn_lock);
        return NULL;
}

static void sweeper_stop(struct http_server *s)
{
        if (!s->sweeper_started)
                return;
        pthread_mutex_lock(&s->conn_lock);
        s->sweeping = false;
        pthread_cond_signal(&s->conn_cond);
        pthread_mutex_unlock(&s->conn_lock);
        pthread_join(s->sweeper, NULL);
        s->sweeper_started = false;
}

/* q's work in the pipeline, charged to its client's account in the
 * budget: its address (an IPv4 address mapped into IPv6 counts as the IPv4
 * one), without the port. Without one (no address, out of memory) q is
 * charged to the total only. -ENOMEM. */
static int req_take_client(struct req *q, struct MHD_Connection *conn)
{
        const union MHD_ConnectionInfo *ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
        unsigned char key[1 + 16];
        size_t len = 0;

        if (ci && ci->client_addr && ci->client_addr->sa_family == AF_INET) {
                const struct sockaddr_in *a = (const struct sockaddr_in *)ci->client_addr;
                key[0] = 4;
                memcpy(key + 1, &a->sin_addr, 4);
                len = 5;
        } else if (ci && ci->client_addr && ci->client_addr->sa_family == AF_INET6) {
                const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)ci->client_addr;
                bool v4 = IN6_IS_ADDR_V4MAPPED(&a->sin6_addr);
                key[0] = v4 ? 4 : 6;
                memcpy(key + 1, a->sin6_addr.s6_addr + (v4 ? 12 : 0), v4 ? 4 : 16);
                len = v4 ? 5 : 17;
        }
        return pipe_req_new(q->s->pipe, len ? key : NULL, len, &q->pr);
}

/* libmicrohttpd's access handler: called once with the headers, then with
 * each piece of the body, then once more at its end, and again when a
 * suspended request is resumed. */
static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                                  const char *version, const char *upload_data, size_t *upload_data_size,
                                  void **con_cls)
{
        struct http_listener *l = cls;
        struct http_server *s = l->s;
        struct req *q = *con_cls;

        if (!q) {
                q = calloc(1, sizeof *q);
                if (!q)
                        return MHD_NO;
                q->s = s;
                if (req_take_client(q, conn) < 0) {
                        free(q);
                        return MHD_NO;
                }
                conn_headers_seen(s, conn);
                q->conn = conn;
                request_id(q);
                trace_begin(&q->trace, MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "traceparent"),
                            MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "tracestate"));
                q->admin = l->admin;
                q->method = method;
                q->path = url;
                q->v2_header_len = -1;
                int found = routes_match(method, url, (l->admin ? ROUTES_ON_ADMIN : 0) |
                                                              (s->opts.ui ? ROUTES_WITH_UI : 0), &q->match);
                q->max_body = body_limit(s, q->match.route ? q->match.route->body : ROUTES_BODY_NONE);
                q->hosts = l->admin ? s->admin_hosts : s->hosts;
                q->start_ns = q->pr->start_ns;
                /* The default model, for the routes that name none; the
                 * others take the one their path names. */
                if (!q->match.model && q->match.id != HTTP_ROUTE_V2_REPO_INDEX)
                        pipe_req_acquire(q->pr, NULL, 0, 0);
                *con_cls = q;
                atomic_fetch_add(&s->inflight, 1);
                enum MHD_Result r = on_headers(q, found);
                /* The body may take long (up to body-timeout): a model
                 * retired meanwhile is not held for it. The route's
                 * complete handler takes the generation served then. */
                if (q->state == REQ_BODY) {
                        pipe_req_drop_model(q->pr);
                        conn_body_due(s, conn, q->start_ns);
                }
                return r;
        }
        if (*upload_data_size) {
                size_t n = *upload_data_size;
                *upload_data_size = 0;
                if (q->state != REQ_BODY)
                        return MHD_YES;
                return on_body(q, upload_data, n);
        }
        switch (q->state) {
        case REQ_BODY:
                conn_body_done(s, conn);
                return on_complete(q);
        case REQ_DONE:
                return on_result(q);
        default:
                return MHD_YES;
        }
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
        struct http_listener *l = cls;
        struct http_server *s = l->s;
        struct req *q = *con_cls;

        conn_request_done(s, conn, l->admin);
        if (!q)
                return;
        *con_cls = NULL;
        /* A client that left before its answer was queued (while its body
         * was read, its images decoded or its job queued; libmicrohttpd
         * may not call the handler again then, or fail to send) is counted
         * once, as 499, as nginx logs it. Connections the server cut while
         * reading the body (body-timeout, too much discarded: the handler's
         * error) or for idling are counted by their own counters. */
        bool left = toe == MHD_REQUEST_TERMINATED_CLIENT_ABORT || toe == MHD_REQUEST_TERMINATED_READ_ERROR ||
                    (toe == MHD_REQUEST_TERMINATED_WITH_ERROR && q->state != REQ_BODY);
        if (q->state != REQ_ANSWERED && left) {
                atomic_fetch_add(&s->errors[API_E_CLIENT_GONE], 1);
                count_answer(q, http_error_status(API_E_CLIENT_GONE), api_error_code(API_E_CLIENT_GONE), 0);
        }
        /* A client that left while its job was queued: libmicrohttpd completes
         * the resumed connection without calling the handler again. */
        if (q->counted_waiting)
                atomic_fetch_sub(&s->waiting, 1);
        atomic_fetch_sub(&s->answer_bytes, (long long)q->answer_len);
        req_free(q);
        atomic_fetch_sub(&s->inflight, 1);
}

/* header-timeout and body-timeout: libmicrohttpd drops idle connections
 * only, a client that sends a header byte now and then is never idle, and
 * one that stops sending its body is never cut without connection-timeout.
 * Every connection is listed from its start notification to its closed
 * one, with the time its request's headers (or its body) are due; a
 * sweeper thread shuts down those past it.
 * libmicrohttpd sends the closed notification before it closes the socket,
 * and both the listing and the shutdown hold conn_lock, so a listed fd is
 * always the connection's own, never a reused number. */
static void on_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
                          enum MHD_ConnectionNotificationCode toe)
{
        struct http_server *s = cls;
        struct http_conn *c;

        if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
                atomic_fetch_add(&s->connections, 1);
                if (s->opts.header_timeout_s <= 0 && s->opts.body_timeout_s <= 0)
                        return;
                const union MHD_ConnectionInfo *ci = MHD_get_connection_info(conn,
                                                                             MHD_CONNECTION_INFO_CONNECTION_FD);
                c = calloc(1, sizeof *c);
                if (!c || !ci) {
                        free(c);
                        return;   /* untracked: the idle timeout still applies */
                }
                c->fd = ci->connect_fd;
                c->deadline_ns = s->opts.header_timeout_s > 0
                                         ? time_now_ns() + (int64_t)s->opts.header_timeout_s * 1000000000
                                         : 0;
                pthread_mutex_lock(&s->conn_lock);
                c->next = s->conns;
                if (s->conns)
                        s->conns->prev = c;
                s->conns = c;
                pthread_mutex_unlock(&s->conn_lock);
                *socket_context = c;
        } else if (toe == MHD_CONNECTION_NOTIFY_CLOSED && (c = *socket_context) != NULL) {
                pthread_mutex_lock(&s->conn_lock);
                if (c->prev)
                        c->prev->next = c->next;
                else
                        s->conns = c->next;
                if (c->next)
                        c->next->prev = c->prev;
                pthread_mutex_unlock(&s->conn_lock);
                *socket_context = NULL;
                free(c);
        }
}

/* The main listener's connections are also counted, for its accept policy
 * (on_accept); the admin listener keeps libmicrohttpd's own limit. */
static void on_main_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
                               enum MHD_ConnectionNotificationCode toe)
{
        struct http_server *s = cls;

        if (toe == MHD_CONNECTION_NOTIFY_STARTED)
                atomic_fetch_add(&s->main_open, 1);
        else if (toe == MHD_CONNECTION_NOTIFY_CLOSED)
                atomic_fetch_sub(&s->main_open, 1);
        on_connection(cls, conn, socket_context, toe);
}

static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
        struct http_server *s = cls;

        if (s->opts.error_log)
                s->opts.error_log(s->opts.userdata, fmt, ap);
}

struct http_server *http_free(struct http_server *s)
{
        if (!s)
                return NULL;
        if (s->daemon)
                MHD_stop_daemon(s->daemon);
        if (s->admin)
                MHD_stop_daemon(s->admin);
        sweeper_stop(s);
        s->hosts = hosts_free(s->hosts);
        s->admin_hosts = hosts_free(s->admin_hosts);
        pthread_cond_destroy(&s->conn_cond);
        pthread_mutex_destroy(&s->conn_lock);
        free(s);
        return NULL;
}

/* The URL of a listening socket, from its bound address. */
static void url_of(const struct sockaddr_storage *addr, bool tls, char *buf, size_t n)
{
        char host[INET6_ADDRSTRLEN] = "?";
        const char *scheme = tls ? "https" : "http";

        if (addr->ss_family == AF_INET6) {
                const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)addr;
                inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof host);
                snprintf(buf, n, "%s://[%s]:%u", scheme, host, ntohs(a->sin6_port));
        } else {
                const struct sockaddr_in *a = (const struct sockaddr_in *)addr;
                inet_ntop(AF_INET, &a->sin_addr, host, sizeof host);
                snprintf(buf, n, "%s://%s:%u", scheme, host, ntohs(a->sin_port));
        }
}

/* Writes the port d bound into addr (for port 0). */
static void bound_port(struct MHD_Daemon *d, struct sockaddr_storage *addr)
{
        const union MHD_DaemonInfo *di = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT);
        uint16_t port = htons(di ? di->port : 0);
        if (addr->ss_family == AF_INET6)
                ((struct sockaddr_in6 *)addr)->sin6_port = port;
        else
                ((struct sockaddr_in *)addr)->sin_port = port;
}

/* The main listener's accept policy: a connection beyond max-connections is
 * closed at once. libmicrohttpd's own limit stops accepting instead, which
 * leaves new clients waiting in the kernel's backlog until they time out;
 * that limit is set above ours (see start_daemon) so that it is never
 * reached. */
static enum MHD_Result on_accept(void *cls, const struct sockaddr *addr, socklen_t addrlen)
{
        struct http_server *s = cls;

        /* Racing accepts on the pool's threads may each let one more in:
         * libmicrohttpd's limit, twice ours, bounds that. */
        if (atomic_load(&s->main_open) >= s->opts.max_connections) {
                atomic_fetch_add(&s->connections_refused, 1);
                return MHD_NO;
        }
        return MHD_YES;
}

/* One libmicrohttpd daemon on addr, or on listen_fd when > 0. */
static struct MHD_Daemon *start_daemon(struct http_listener *l, const struct sockaddr_storage *addr, int listen_fd,
                                       int threads, int max_connections, int per_client, int timeout_s,
                                       MHD_AcceptPolicyCallback accept_policy)
{
        struct http_server *s = l->s;
        /* With a policy that refuses at max_connections, libmicrohttpd's
         * limit is only a backstop. It is split between the pool's threads,
         * and a thread at its share stops accepting: twice the limit keeps
         * every share above what the policy lets in. */
        unsigned mhd_limit = (unsigned)max_connections * (accept_policy ? 2u : 1u);
        unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME |
                         MHD_USE_ERROR_LOG;
        /* [::] takes IPv4 clients too, as users of "any address" expect;
         * a specific IPv6 address stays IPv6 only. */
        if (addr->ss_family == AF_INET6)
                flags |= IN6_IS_ADDR_UNSPECIFIED(&((const struct sockaddr_in6 *)addr)->sin6_addr) ? MHD_USE_DUAL_STACK
                                                                                                 : MHD_USE_IPv6;
        /* A socket passed by systemd, or an address to bind. */
        struct MHD_OptionItem listen[] = {
                listen_fd > 0 ? (struct MHD_OptionItem){ MHD_OPTION_LISTEN_SOCKET, listen_fd, NULL }
                              : (struct MHD_OptionItem){ MHD_OPTION_SOCK_ADDR, 0, (void *)addr },
                { MHD_OPTION_END, 0, NULL },
        };
        /* HTTPS: each handshake takes the credentials current then
         * (server/tls.h), so that a reload needs no restart. */
        struct MHD_OptionItem tls[] = {
                { MHD_OPTION_HTTPS_PRIORITIES, 0, (void *)tls_priorities() },
                { MHD_OPTION_HTTPS_CERT_CALLBACK2, 0, NULL },
                { MHD_OPTION_END, 0, NULL },
        };
        if (s->opts.tls) {
                /* An item holds a function as a void * (ISO C has no cast for it). */
                _Static_assert(sizeof(tls_callback) == sizeof(void *), "a function pointer fits a void *");
                tls_callback cb = tls_cert_callback(s->opts.tls);
                memcpy(&tls[1].ptr_value, &cb, sizeof tls[1].ptr_value);
                flags |= MHD_USE_TLS;
        }
        return MHD_start_daemon(flags, 0, accept_policy, s, on_request, l,
                                MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, s,
                                MHD_OPTION_ARRAY, s->opts.tls ? tls : tls + 2,
                                MHD_OPTION_ARRAY, listen,
                                MHD_OPTION_THREAD_POOL_SIZE, (unsigned)(threads > 1 ? threads : 0),
                                MHD_OPTION_CONNECTION_LIMIT, mhd_limit,
                                MHD_OPTION_PER_IP_CONNECTION_LIMIT, (unsigned)per_client,
                                MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)timeout_s,
                                MHD_OPTION_NOTIFY_COMPLETED, on_completed, l,
                                MHD_OPTION_NOTIFY_CONNECTION, accept_policy ? on_main_connection : on_connection, s,
                                MHD_OPTION_UNESCAPE_CALLBACK, unescape, NULL,
                                MHD_OPTION_END);
}

/* Whether opts' limits hold together. */
static bool opts_valid(const struct http_opts *opts, const struct pipeline *p)
{
        return opts->max_body_bytes >= 1 && opts->max_client_share >= opts->max_body_bytes &&
               opts->v2_max_body_bytes >= 1 && opts->max_client_share >= opts->v2_max_body_bytes &&
               opts->memory_budget >= opts->max_client_share &&
               opts->max_answer_total >= 1 && opts->max_images >= 1 && opts->max_connections >= 1 &&
               opts->deadline_ms >= 1 && opts->connection_timeout_s >= 0 && opts->retry_after_s >= 0 &&
               opts->header_timeout_s >= 0 && opts->decode_threads >= 0 &&
               opts->decode_threads <= WPOOL_MAX_THREADS && opts->decode_queue >= 1 && p;
}

/* The main listener's address: the passed socket's, or opts->listen's. */
static int main_address(const struct http_opts *opts, char *err, size_t err_len,
                        struct sockaddr_storage *ret_addr)
{
        struct sockaddr_storage addr = { 0 };
        socklen_t sl = sizeof addr;

        if (opts->listen_fd <= 0)
                return parse_listen("listen", opts->listen, ret_addr, NULL, err, err_len);
        if (getsockname(opts->listen_fd, (struct sockaddr *)&addr, &sl) < 0)
                return err_set(err, err_len, -errno, "passed socket: %s", strerror(errno));
        if (addr.ss_family != AF_INET && addr.ss_family != AF_INET6)
                return err_set(err, err_len, -EINVAL, "passed socket is not TCP/IP");
        *ret_addr = addr;
        return 0;
}

static bool addr_is_loopback(const struct sockaddr_storage *addr)
{
        if (addr->ss_family == AF_INET6) {
                const struct in6_addr *a = &((const struct sockaddr_in6 *)addr)->sin6_addr;
                return IN6_IS_ADDR_LOOPBACK(a) || (IN6_IS_ADDR_V4MAPPED(a) && a->s6_addr[12] == 127);
        }
        return (ntohl(((const struct sockaddr_in *)addr)->sin_addr.s_addr) >> 24) == 127;
}

/* The Host names each listener answers (server/hosts.h): by default
 * loopback ones only on a loopback address (the main listener's is addr). */
static int hosts_setup(struct http_server *s, const struct sockaddr_storage *addr, char *err, size_t err_len)
{
        struct sockaddr_storage aaddr;
        int r;

        if ((r = hosts_new(s->opts.allowed_hosts, addr_is_loopback(addr), err, err_len, &s->hosts)) < 0)
                return r;
        if (!s->opts.admin_listen)
                return 0;
        if ((r = parse_listen("admin-listen", s->opts.admin_listen, &aaddr, NULL, err, err_len)) < 0)
                return r;
        return hosts_new(s->opts.allowed_hosts, addr_is_loopback(&aaddr), err, err_len, &s->admin_hosts);
}

/* A new server with opts and its locks over pipeline p; no thread yet. */
static int server_alloc(const struct http_opts *opts, struct pipeline *p, char *err, size_t err_len,
                        struct http_server **ret_server)
{
        struct http_server *s = calloc(1, sizeof *s);
        pthread_condattr_t ca;

        if (!s)
                return err_set(err, err_len, -ENOMEM, "out of memory");
        s->opts = *opts;
        s->pipe = p;
        s->reg = pipe_registry(p);
        s->budget = pipe_budget(p);
        s->main_listener = (struct http_listener){ .s = s, .admin = false };
        s->admin_listener = (struct http_listener){ .s = s, .admin = true };
        pthread_mutex_init(&s->conn_lock, NULL);
        pthread_condattr_init(&ca);
        pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);   /* time_now_ns's clock */
        pthread_cond_init(&s->conn_cond, &ca);
        pthread_condattr_destroy(&ca);
        s->id_salt = (uint64_t)time_now_ns() ^ ((uint64_t)getpid() << 32);
        *ret_server = s;
        return 0;
}

/* With a header or body timeout, the sweeper. */
static int threads_start(struct http_server *s, char *err, size_t err_len)
{
        int r;

        if (s->opts.header_timeout_s > 0 || s->opts.body_timeout_s > 0) {
                s->sweeping = true;
                if ((r = -pthread_create(&s->sweeper, NULL, sweeper_main, s)) < 0)
                        return err_set(err, err_len, r, "timeout thread: %s", strerror(-r));
                s->sweeper_started = true;
        }
        return 0;
}

/* The main listener on addr (its bound port written back), and its URL. */
static int main_listen(struct http_server *s, struct sockaddr_storage *addr, char *err, size_t err_len)
{
        const struct http_opts *opts = &s->opts;
        int threads = opts->threads > 0 ? opts->threads : cpu_usable_count();

        if (opts->threads <= 0 && threads > 4)
                threads = 4;
        s->daemon = start_daemon(&s->main_listener, addr, opts->listen_fd, threads, opts->max_connections,
                                 opts->max_connections_per_client, opts->connection_timeout_s, on_accept);
        if (!s->daemon)
                return err_set(err, err_len, -EIO, "cannot listen on %s (address in use, or not permitted?)",
                               opts->listen_fd > 0 ? "the passed socket" : opts->listen);
        if (opts->listen_fd <= 0)
                bound_port(s->daemon, addr);
        url_of(addr, s->opts.tls != NULL, s->url, sizeof s->url);
        return 0;
}

/* The admin listener, when one is set: its own thread and connection
 * budget, so that clients that hold the main listener's connections cannot
 * reach it. */
static int admin_listen(struct http_server *s, char *err, size_t err_len)
{
        struct sockaddr_storage aaddr;
        int r;

        if (!s->opts.admin_listen)
                return 0;
        if ((r = parse_listen("admin-listen", s->opts.admin_listen, &aaddr, NULL, err, err_len)) < 0)
                return r;
        s->admin = start_daemon(&s->admin_listener, &aaddr, -1, 1, HTTP_ADMIN_MAX_CONNECTIONS, HTTP_ADMIN_PER_CLIENT,
                                HTTP_ADMIN_TIMEOUT_S, NULL);
        if (!s->admin)
                return err_set(err, err_len, -EIO, "cannot listen on %s for admin (address in use?)",
                               s->opts.admin_listen);
        bound_port(s->admin, &aaddr);
        url_of(&aaddr, s->opts.tls != NULL, s->admin_url, sizeof s->admin_url);
        return 0;
}

int http_new(const struct http_opts *opts, struct pipeline *p, char *err, size_t err_len,
             struct http_server **ret_server)
{
        struct sockaddr_storage addr = { 0 };
        struct http_server *s = NULL;
        int r;

        if (!opts_valid(opts, p))
                return err_set(err, err_len, -EINVAL, "http: bad limits");
        if ((r = main_address(opts, err, err_len, &addr)) < 0)
                return r;
        if ((r = server_alloc(opts, p, err, err_len, &s)) < 0)
                return r;
        if ((r = hosts_setup(s, &addr, err, err_len)) < 0)
                goto fail;
        if ((r = threads_start(s, err, err_len)) < 0)
                goto fail;
        if ((r = main_listen(s, &addr, err, err_len)) < 0)
                goto fail;
        if ((r = admin_listen(s, err, err_len)) < 0)
                goto fail;
        *ret_server = s;
        return 0;
fail:
        http_free(s);
        return r;
}

void http_stop(struct http_server *s)
{
        /* Quiesce first: close the gate to the batcher, let whoever is past
         * it finish submitting, then let every suspended request get its
         * answer (its result or its deadline); libmicrohttpd must not stop
         * with a connection suspended or being suspended. */
        if (s && s->daemon) {
                struct timespec ms = { .tv_sec = 0, .tv_nsec = 1000000 };
                atomic_store(&s->stopping, true);
                pipe_stop(s->pipe);
                while (atomic_load(&s->submitting) > 0 || atomic_load(&s->waiting) > 0 ||
                       atomic_load(&s->resuming) > 0)
                        nanosleep(&ms, NULL);
        }
        if (s && s->daemon) {
                MHD_stop_daemon(s->daemon);
                s->daemon = NULL;
        }
        if (s && s->admin) {
                MHD_stop_daemon(s->admin);
                s->admin = NULL;
        }
        if (s)
                sweeper_stop(s);
}

void http_count_reload(struct http_server *s, bool ok)
{
        atomic_fetch_add(ok ? &s->reloads : &s->reload_failures, 1);
}

uint64_t http_images(struct http_server *s)
{
        return atomic_load(&s->images);
}

const char *http_url(const struct http_server *s)
{
        return s->url;
}

const char *http_admin_url(const struct http_server *s)
{
        return s->admin_url;
}

const char *http_hosts(const struct http_server *s, bool admin)
{
        return admin ? (s->admin_hosts ? hosts_describe(s->admin_hosts) : "") : hosts_describe(s->hosts);
}

void http_drain(struct http_server *s)
{
        /* Keep listening: load balancers and probes get a 503 (not a
         * refused connection) until the server stops. */
        atomic_store(&s->draining, true);
}

int http_inflight(struct http_server *s)
{
        return atomic_load(&s->inflight);
}

int http_waiting(struct http_server *s)
{
        return atomic_load(&s->waiting);
}

bool http_ready(struct http_server *s)
{
        return !atomic_load(&s->draining);
}
