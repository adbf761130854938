/* otlp: requests' spans to an OpenTelemetry collector (OTLP/HTTP JSON). */
#include "otlp.h"
#include "util.h"

#include <curl/curl.h>
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

struct otlp {
        char *url;                     /* {endpoint}/v1/traces */
        char *service_version;         /* NULL: none */
        pthread_t thread;
        bool started;

        pthread_mutex_t lock;          /* guards the ring and stopping */
        pthread_cond_t wake;           /* records came in, or stop */
        struct otlp_record *ring;      /* [cap], allocated at start */
        int cap, head, count;          /* records at ring[head..head+count) mod cap */
        bool stopping;
        int64_t flush_until_ns;        /* set with stopping: posts end by then */

        atomic_ullong exported, dropped, failures;

        /* The thread's own. */
        struct otlp_record *batch;     /* [batch_cap] */
        int batch_cap;
        char *body;                    /* [body_cap]: the JSON of one batch */
        size_t body_cap;
        CURL *easy;
        CURLM *multi;
        struct curl_slist *headers;
        uint64_t rng;                  /* child span ids */
};

/* ---- the record and its JSON (pure) --------------------------------------------------- */

static void copy_str(char *dst, size_t cap, const char *src)
{
        size_t n = src ? strnlen(src, cap - 1) : 0;

        memcpy(dst, src ? src : "", n);
        dst[n] = '\0';
}

bool otlp_record_from(const struct http_access *a, struct otlp_record *ret_rec)
{
        /* Probes, metrics and metadata never reach the pipeline: their
         * spans would say nothing but drown the others. */
        if (!a->sampled || !a->stages.decode_ns || !a->trace_id || strlen(a->trace_id) != 32 || !a->span_id ||
            strlen(a->span_id) != 16)
                return false;
        struct otlp_record r = { 0 };
        copy_str(r.trace_id, sizeof r.trace_id, a->trace_id);
        copy_str(r.span_id, sizeof r.span_id, a->span_id);
        if (a->parent_id && strlen(a->parent_id) == 16)
                copy_str(r.parent_id, sizeof r.parent_id, a->parent_id);
        copy_str(r.model, sizeof r.model, a->model);
        r.version = a->model ? a->version : 0;
        copy_str(r.protocol, sizeof r.protocol, a->protocol);
        copy_str(r.error, sizeof r.error, a->error);
        r.status = a->status;
        r.start_ns = a->start_ns;
        r.end_ns = a->end_ns;
        r.decode_ns = a->stages.decode_ns;
        r.queue_ns = a->stages.queue_ns;
        r.infer_ns = a->stages.infer_ns;
        r.done_ns = a->stages.done_ns;
        *ret_rec = r;
        return true;
}

int otlp_record_spans(const struct otlp_record *rec)
{
        return 1 + !!rec->decode_ns + !!rec->queue_ns + !!rec->infer_ns + !!rec->done_ns;
}

/* Appends to a buffer; once something did not fit, every later append is
 * ignored and the buffer says so (len > cap). */
struct out {
        char *buf;
        size_t cap, len;
};

static void put(struct out *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(struct out *o, const char *fmt, ...)
{
        va_list ap;

        if (o->len >= o->cap)
                return;
        va_start(ap, fmt);
        int n = vsnprintf(o->buf + o->len, o->cap - o->len, fmt, ap);
        va_end(ap);
        o->len = n < 0 ? o->cap + 1 : o->len + (size_t)n;
}

/* A JSON string's contents: '"', '\\' and control characters escaped. */
static void put_escaped(struct out *o, const char *s)
{
        for (; *s; s++) {
                unsigned char c = (unsigned char)*s;
                if (c == '"' || c == '\\')
                        put(o, "\\%c", c);
                else if (c < 0x20)
                        put(o, "\\u%04x", c);
                else
                        put(o, "%c", c);
        }
}

static void put_span(struct out *o, const struct otlp_record *r, const char *span_id, const char *parent_id,
                     const char *name, int kind, int64_t start_ns, int64_t end_ns, int64_t wall, bool attrs)
{
        if (end_ns < start_ns)
                end_ns = start_ns;
        put(o, "{\"traceId\":\"%s\",\"spanId\":\"%s\",", r->trace_id, span_id);
        if (*parent_id)
                put(o, "\"parentSpanId\":\"%s\",", parent_id);
        put(o, "\"name\":\"%s\",\"kind\":%d,\"startTimeUnixNano\":\"%lld\",\"endTimeUnixNano\":\"%lld\"", name, kind,
            (long long)(start_ns + wall), (long long)(end_ns + wall));
        if (attrs) {
                put(o, ",\"attributes\":[{\"key\":\"model\",\"value\":{\"stringValue\":\"");
                put_escaped(o, r->model);
                put(o, "\"}},{\"key\":\"version\",\"value\":{\"intValue\":\"%lld\"}},"
                    "{\"key\":\"protocol\",\"value\":{\"stringValue\":\"", r->version);
                put_escaped(o, r->protocol);
                put(o, "\"}},{\"key\":\"status\",\"value\":{\"intValue\":\"%d\"}}", r->status);
                if (*r->error) {
                        put(o, ",{\"key\":\"error\",\"value\":{\"stringValue\":\"");
                        put_escaped(o, r->error);
                        put(o, "\"}}");
                }
                /* A server span is an error for the server's faults only (5xx). */
                put(o, "],\"status\":{\"code\":%d}", r->status >= 500 ? 2 : r->status < 400 ? 1 : 0);
        }
        put(o, "}");
}

int otlp_encode(const struct otlp_record *recs, int n, int64_t wall_offset_ns, const char *service_version,
                char *buf, size_t cap)
{
        struct out o = { .buf = buf, .cap = cap };
        static const char *const names[4] = { "decode", "queue", "infer", "answer" };

        put(&o, "{\"resourceSpans\":[{\"resource\":{\"attributes\":[{\"key\":\"service.name\",\"value\":"
            "{\"stringValue\":\"effnetd\"}}");
        if (service_version) {
                put(&o, ",{\"key\":\"service.version\",\"value\":{\"stringValue\":\"");
                put_escaped(&o, service_version);
                put(&o, "\"}}");
        }
        put(&o, "]},\"scopeSpans\":[{\"scope\":{\"name\":\"effnetd\"},\"spans\":[");
        for (int i = 0; i < n; i++) {
                const struct otlp_record *r = &recs[i];
                /* Stage k lasts until the next stage reached, the last one
                 * until the answer; the request spans them all. */
                int64_t t[5] = { r->decode_ns, r->queue_ns, r->infer_ns, r->done_ns, r->end_ns };
                int64_t start = r->start_ns, end = r->end_ns;
                for (int k = 0; k < 4; k++) {
                        if (t[k] && t[k] < start)
                                start = t[k];
                        if (t[k] > end)
                                end = t[k];
                }
                if (end < start)
                        end = start;
                put(&o, "%s", i ? "," : "");
                put_span(&o, r, r->span_id, r->parent_id, "request", 2, start, end, wall_offset_ns, true);
                for (int k = 0; k < 4; k++) {
                        if (!t[k])
                                continue;
                        int64_t stage_end = end;
                        for (int j = k + 1; j < 5; j++)
                                if (t[j]) {
                                        stage_end = t[j];
                                        break;
                                }
                        if (stage_end > end)
                                stage_end = end;
                        put(&o, ",");
                        put_span(&o, r, r->child_id[k], r->span_id, names[k], 1, t[k], stage_end, wall_offset_ns,
                                 false);
                }
        }
        put(&o, "]}]}]}");
        if (o.len >= cap)
                return -ENOBUFS;
        return (int)o.len;
}

/* ---- the exporter's thread -------------------------------------------------------------- */

static uint64_t next_rand(struct otlp *o)
{
        /* splitmix64: ids unique within the trace, not secrets. */
        uint64_t z = (o->rng += 0x9e3779b97f4a7c15ULL);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
        return z ^ (z >> 31);
}

static void child_ids(struct otlp *o, struct otlp_record *r)
{
        for (int k = 0; k < 4; k++) {
                uint64_t x;
                do
                        x = next_rand(o);
                while (x == 0);
                snprintf(r->child_id[k], sizeof r->child_id[k], "%016llx", (unsigned long long)x);
        }
}

static int64_t wall_offset_ns(void)
{
        struct timespec ts;

        clock_gettime(CLOCK_REALTIME, &ts);
        return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec - time_now_ns();
}

static size_t discard(char *ptr, size_t size, size_t nmemb, void *userdata)
{
        (void)ptr;
        (void)userdata;
        return size * nmemb;
}

/* Waits on the ring's condition until deadline (CLOCK_MONOTONIC ns) or a
 * signal. Called with the lock held. */
static void wait_until(struct otlp *o, int64_t deadline_ns)
{
        int64_t left = deadline_ns - time_now_ns();
        if (left <= 0)
                return;
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        int64_t at = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec + left;
        ts.tv_sec = at / 1000000000;
        ts.tv_nsec = at % 1000000000;
        pthread_cond_timedwait(&o->wake, &o->lock, &ts);
}

/* One POST of len bytes of o->body: 0 when the collector took it (2xx),
 * -EIO otherwise. Cut off at its timeout, or once a stop's flush time is up. */
static int post(struct otlp *o, size_t len)
{
        CURLcode cc = CURLE_OK;
        int running = 1;
        long code = 0;

        curl_easy_setopt(o->easy, CURLOPT_POSTFIELDS, o->body);
        curl_easy_setopt(o->easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
        if (curl_multi_add_handle(o->multi, o->easy) != CURLM_OK)
                return -EIO;
        while (running) {
                if (curl_multi_perform(o->multi, &running) != CURLM_OK) {
                        cc = CURLE_FAILED_INIT;
                        break;
                }
                if (!running)
                        break;
                pthread_mutex_lock(&o->lock);
                bool cut = o->stopping && time_now_ns() >= o->flush_until_ns;
                pthread_mutex_unlock(&o->lock);
                if (cut) {
                        cc = CURLE_ABORTED_BY_CALLBACK;
                        break;
                }
                /* otlp_free wakes the poll, so that a stop never waits for it. */
                curl_multi_poll(o->multi, NULL, 0, 100, NULL);
        }
        if (cc == CURLE_OK) {
                CURLMsg *m;
                int left;
                cc = CURLE_RECV_ERROR;
                while ((m = curl_multi_info_read(o->multi, &left)))
                        if (m->msg == CURLMSG_DONE && m->easy_handle == o->easy)
                                cc = m->data.result;
        }
        curl_multi_remove_handle(o->multi, o->easy);
        if (cc == CURLE_OK)
                curl_easy_getinfo(o->easy, CURLINFO_RESPONSE_CODE, &code);
        return cc == CURLE_OK && code >= 200 && code < 300 ? 0 : -EIO;
}

/* Sends batch[0..n): up to OTLP_ATTEMPTS posts, pausing *backoff_ms after
 * each failure (doubled, up to OTLP_BACKOFF_MAX_MS; 0 after a success).
 * Then counts its spans exported or dropped. */
static void send_batch(struct otlp *o, int n, int64_t *backoff_ms)
{
        int spans = 0;

        for (int i = 0; i < n; i++) {
                child_ids(o, &o->batch[i]);
                spans += otlp_record_spans(&o->batch[i]);
        }
        int len = otlp_encode(o->batch, n, wall_offset_ns(), o->service_version, o->body, o->body_cap);
        if (len < 0) {   /* cannot happen: body_cap holds OTLP_RECORD_JSON_MAX per record */
                atomic_fetch_add(&o->dropped, (unsigned long long)spans);
                return;
        }
        for (int attempt = 1;; attempt++) {
                if (post(o, (size_t)len) == 0) {
                        atomic_fetch_add(&o->exported, (unsigned long long)spans);
                        *backoff_ms = 0;
                        return;
                }
                atomic_fetch_add(&o->failures, 1);
                *backoff_ms = *backoff_ms ? *backoff_ms * 2 : OTLP_BACKOFF_MIN_MS;
                if (*backoff_ms > OTLP_BACKOFF_MAX_MS)
                        *backoff_ms = OTLP_BACKOFF_MAX_MS;
                pthread_mutex_lock(&o->lock);
                bool last = attempt == OTLP_ATTEMPTS || o->stopping;
                /* The pause also holds back the next batch: a dead collector
                 * is not hammered, the ring fills and drops instead. */
                if (!o->stopping)
                        wait_until(o, time_now_ns() + *backoff_ms * 1000000);
                pthread_mutex_unlock(&o->lock);
                if (last) {
                        atomic_fetch_add(&o->dropped, (unsigned long long)spans);
                        return;
                }
        }
}

static void *exporter(void *arg)
{
        struct otlp *o = arg;
        int64_t backoff_ms = 0;

        pthread_mutex_lock(&o->lock);
        for (;;) {
                /* A batch: full, or what came within OTLP_BATCH_MS. */
                int64_t due = time_now_ns() + (int64_t)OTLP_BATCH_MS * 1000000;
                while (!o->stopping && o->count < o->batch_cap && (o->count == 0 || time_now_ns() < due)) {
                        if (o->count == 0)
                                due = time_now_ns() + (int64_t)OTLP_BATCH_MS * 1000000;
                        wait_until(o, due);
                }
                if (o->stopping && (o->count == 0 || time_now_ns() >= o->flush_until_ns))
                        break;
                int n = o->count < o->batch_cap ? o->count : o->batch_cap;
                for (int i = 0; i < n; i++)
                        o->batch[i] = o->ring[(o->head + i) % o->cap];
                o->head = (o->head + n) % o->cap;
                o->count -= n;
                pthread_mutex_unlock(&o->lock);
                send_batch(o, n, &backoff_ms);
                pthread_mutex_lock(&o->lock);
        }
        /* What could not go in time is dropped. */
        unsigned long long left = 0;
        for (int i = 0; i < o->count; i++)
                left += (unsigned long long)otlp_record_spans(&o->ring[(o->head + i) % o->cap]);
        o->count = 0;
        pthread_mutex_unlock(&o->lock);
        atomic_fetch_add(&o->dropped, left);
        return NULL;
}

/* ---- the exporter ------------------------------------------------------------------------ */

static int fail(char *err, size_t err_len, int code, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static int fail(char *err, size_t err_len, int code, const char *fmt, ...)
{
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(err, err_len, fmt, ap);
        va_end(ap);
        return code;
}

int otlp_new(const struct otlp_opts *opts, char *err, size_t err_len, struct otlp **ret_otlp)
{
        const char *e = opts->endpoint;
        struct otlp *o;
        int r;

        if (!e || (strncmp(e, "http://", 7) != 0 && strncmp(e, "https://", 8) != 0) ||
            strlen(e) <= (e[4] == 's' ? 8u : 7u))
                return fail(err, err_len, -EINVAL, "otlp-endpoint: an http:// or https:// URL, not \"%s\"",
                            e ? e : "");
        if (opts->queue < 1 || opts->queue > OTLP_MAX_QUEUE)
                return fail(err, err_len, -EINVAL, "otlp-queue: 1 to %d", OTLP_MAX_QUEUE);
        if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
                return fail(err, err_len, -ENOMEM, "otlp: libcurl would not start");
        o = calloc(1, sizeof *o);
        if (!o) {
                curl_global_cleanup();
                return fail(err, err_len, -ENOMEM, "otlp: out of memory");
        }
        pthread_mutex_init(&o->lock, NULL);
        pthread_condattr_t ca;
        pthread_condattr_init(&ca);
        pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
        pthread_cond_init(&o->wake, &ca);
        pthread_condattr_destroy(&ca);
        o->cap = opts->queue;
        o->batch_cap = OTLP_BATCH_SPANS / OTLP_SPANS_PER_REQUEST;
        o->body_cap = (size_t)o->batch_cap * OTLP_RECORD_JSON_MAX + 1024;
        size_t n = strlen(e);
        while (n > 0 && e[n - 1] == '/')
                n--;
        if (asprintf(&o->url, "%.*s/v1/traces", (int)n, e) < 0)
                o->url = NULL;
        if (opts->service_version)
                o->service_version = strdup(opts->service_version);
        /* All the memory the spans will ever take, now. */
        o->ring = calloc((size_t)o->cap, sizeof *o->ring);
        o->batch = calloc((size_t)o->batch_cap, sizeof *o->batch);
        o->body = malloc(o->body_cap);
        o->easy = curl_easy_init();
        o->multi = curl_multi_init();
        o->headers = curl_slist_append(NULL, "Content-Type: application/json");
        if (!o->url || (opts->service_version && !o->service_version) || !o->ring || !o->batch || !o->body ||
            !o->easy || !o->multi || !o->headers) {
                otlp_free(o);
                return fail(err, err_len, -ENOMEM, "otlp: out of memory");
        }
        curl_easy_setopt(o->easy, CURLOPT_URL, o->url);
        curl_easy_setopt(o->easy, CURLOPT_PROTOCOLS_STR, "http,https");
        curl_easy_setopt(o->easy, CURLOPT_HTTPHEADER, o->headers);
        curl_easy_setopt(o->easy, CURLOPT_USERAGENT, "effnetd");
        curl_easy_setopt(o->easy, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(o->easy, CURLOPT_CONNECTTIMEOUT_MS, (long)OTLP_CONNECT_TIMEOUT_MS);
        curl_easy_setopt(o->easy, CURLOPT_TIMEOUT_MS, (long)OTLP_TIMEOUT_MS);
        curl_easy_setopt(o->easy, CURLOPT_WRITEFUNCTION, discard);
        if (getrandom(&o->rng, sizeof o->rng, 0) != sizeof o->rng)
                o->rng = (uint64_t)wall_offset_ns();
        if ((r = pthread_create(&o->thread, NULL, exporter, o)) != 0) {
                otlp_free(o);
                return fail(err, err_len, -r, "otlp: thread: %s", strerror(r));
        }
        o->started = true;
        *ret_otlp = o;
        return 0;
}

struct otlp *otlp_free(struct otlp *o)
{
        if (!o)
                return NULL;
        if (o->started) {
                pthread_mutex_lock(&o->lock);
                o->stopping = true;
                o->flush_until_ns = time_now_ns() + (int64_t)OTLP_FLUSH_MS * 1000000;
                pthread_cond_signal(&o->wake);
                pthread_mutex_unlock(&o->lock);
                curl_multi_wakeup(o->multi);
                pthread_join(o->thread, NULL);
        }
        curl_slist_free_all(o->headers);
        if (o->multi)
                curl_multi_cleanup(o->multi);
        if (o->easy)
                curl_easy_cleanup(o->easy);
        free(o->body);
        free(o->batch);
        free(o->ring);
        free(o->service_version);
        free(o->url);
        pthread_cond_destroy(&o->wake);
        pthread_mutex_destroy(&o->lock);
        free(o);
        curl_global_cleanup();
        return NULL;
}

void otlp_record(struct otlp *o, const struct http_access *a)
{
        struct otlp_record rec;

        if (!otlp_record_from(a, &rec))
                return;
        pthread_mutex_lock(&o->lock);
        if (o->count == o->cap || o->stopping) {
                pthread_mutex_unlock(&o->lock);
                atomic_fetch_add(&o->dropped, (unsigned long long)otlp_record_spans(&rec));
                return;
        }
        o->ring[(o->head + o->count) % o->cap] = rec;
        o->count++;
        if (o->count == o->batch_cap)
                pthread_cond_signal(&o->wake);
        pthread_mutex_unlock(&o->lock);
}

void otlp_stats_snapshot(struct otlp *o, struct otlp_stats *ret_stats)
{
        struct otlp_stats st = { .spans_exported = atomic_load(&o->exported),
                                 .spans_dropped = atomic_load(&o->dropped),
                                 .export_failures = atomic_load(&o->failures), .queue_capacity = o->cap };

        pthread_mutex_lock(&o->lock);
        st.queued = o->count;
        pthread_mutex_unlock(&o->lock);
        *ret_stats = st;
}
