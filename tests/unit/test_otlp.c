/* Unit tests of the span export (server/otlp.h): which requests make
 * spans, their OTLP/HTTP JSON read back with jansson, and the ring's
 * drops against a collector nobody listens on. */
#include "check.h"
#include "otlp.h"
#include "util.h"

#include <errno.h>
#include <jansson.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#define TID "4bf92f3577b34da6a3ce929d0e0e4736"
#define SID "b7ad6b7169203331"
#define PID "00f067aa0ba902b7"

static struct http_access access_of(void)
{
        return (struct http_access){ .trace_id = TID, .span_id = SID, .parent_id = PID, .sampled = true,
                                     .protocol = "http", .status = 200, .model = "b0", .version = 3,
                                     .start_ns = 1000, .end_ns = 9000,
                                     .stages = { .decode_ns = 2000, .queue_ns = 3000, .infer_ns = 4000,
                                                 .done_ns = 8000 } };
}

static void record_from(void)
{
        struct http_access a = access_of();
        struct otlp_record r;

        CHECK(otlp_record_from(&a, &r));
        CHECK_EQ(otlp_record_spans(&r), 5);
        CHECK(strcmp(r.trace_id, TID) == 0 && strcmp(r.parent_id, PID) == 0 && strcmp(r.model, "b0") == 0);
        a.sampled = false;
        CHECK(!otlp_record_from(&a, &r));        /* the caller did not sample it */
        a = access_of();
        a.stages = (struct trace_stages){ 0 };
        CHECK(!otlp_record_from(&a, &r));        /* never reached the pipeline: a probe */
        a = access_of();
        a.trace_id = "4bf9";
        CHECK(!otlp_record_from(&a, &r));
        a = access_of();
        a.stages.queue_ns = a.stages.infer_ns = 0;   /* failed in decoding */
        CHECK(otlp_record_from(&a, &r));
        CHECK_EQ(otlp_record_spans(&r), 3);
        a = access_of();
        a.model = NULL;
        a.parent_id = "";
        CHECK(otlp_record_from(&a, &r));
        CHECK(r.model[0] == '\0' && r.version == 0 && r.parent_id[0] == '\0');
}

static json_t *span_named(json_t *spans, const char *name)
{
        size_t i;
        json_t *s;

        json_array_foreach(spans, i, s)
                if (strcmp(json_string_value(json_object_get(s, "name")), name) == 0)
                        return s;
        return NULL;
}

static long long ns(json_t *span, const char *key)
{
        const char *v = json_string_value(json_object_get(span, key));
        return v ? atoll(v) : -1;
}

static json_t *encode(const struct otlp_record *recs, int n, char *buf, size_t cap)
{
        int len = otlp_encode(recs, n, 1700000000000000000LL, "0.1.0", buf, cap);
        json_error_t e;

        REQUIRE(len > 0 && (size_t)len < cap);
        CHECK_EQ(strlen(buf), len);
        json_t *doc = json_loads(buf, 0, &e);
        CHECK_MSG(doc, "%s at %d: %.200s", e.text, e.position, buf);
        return doc;
}

static void encoding(void)
{
        static char buf[3 * OTLP_RECORD_JSON_MAX];
        struct http_access a = access_of();
        struct otlp_record r[2];

        REQUIRE(otlp_record_from(&a, &r[0]));
        for (int k = 0; k < 4; k++)
                snprintf(r[0].child_id[k], sizeof r[0].child_id[k], "%016x", k + 1);
        json_t *doc = encode(r, 1, buf, sizeof buf);
        REQUIRE(doc);
        json_t *rs = json_array_get(json_object_get(doc, "resourceSpans"), 0);
        char *res = json_dumps(json_object_get(rs, "resource"), JSON_COMPACT);
        CHECK_CONTAINS(res, "{\"key\":\"service.name\",\"value\":{\"stringValue\":\"effnetd\"}}");
        CHECK_CONTAINS(res, "{\"key\":\"service.version\",\"value\":{\"stringValue\":\"0.1.0\"}}");
        free(res);
        json_t *spans = json_object_get(json_array_get(json_object_get(rs, "scopeSpans"), 0), "spans");
        CHECK_EQ(json_array_size(spans), 5);
        json_t *root = span_named(spans, "request");
        REQUIRE(root);
        CHECK(strcmp(json_string_value(json_object_get(root, "traceId")), TID) == 0);
        CHECK(strcmp(json_string_value(json_object_get(root, "spanId")), SID) == 0);
        CHECK(strcmp(json_string_value(json_object_get(root, "parentSpanId")), PID) == 0);
        CHECK_EQ(json_integer_value(json_object_get(root, "kind")), 2);
        CHECK_EQ(ns(root, "startTimeUnixNano"), 1700000000000001000LL);
        CHECK_EQ(ns(root, "endTimeUnixNano"), 1700000000000009000LL);
        char *attrs = json_dumps(json_object_get(root, "attributes"), JSON_COMPACT);
        CHECK_CONTAINS(attrs, "{\"key\":\"model\",\"value\":{\"stringValue\":\"b0\"}}");
        CHECK_CONTAINS(attrs, "{\"key\":\"version\",\"value\":{\"intValue\":\"3\"}}");
        CHECK_CONTAINS(attrs, "{\"key\":\"protocol\",\"value\":{\"stringValue\":\"http\"}}");
        CHECK_CONTAINS(attrs, "{\"key\":\"status\",\"value\":{\"intValue\":\"200\"}}");
        free(attrs);
        static const char *const names[4] = { "decode", "queue", "infer", "answer" };
        static const long long t[5] = { 2000, 3000, 4000, 8000, 9000 };
        for (int k = 0; k < 4; k++) {
                json_t *s = span_named(spans, names[k]);
                REQUIRE(s);
                CHECK(strcmp(json_string_value(json_object_get(s, "parentSpanId")), SID) == 0);
                CHECK(strcmp(json_string_value(json_object_get(s, "spanId")), r[0].child_id[k]) == 0);
                CHECK_EQ(json_integer_value(json_object_get(s, "kind")), 1);
                CHECK_EQ(ns(s, "startTimeUnixNano") - 1700000000000000000LL, t[k]);
                CHECK_EQ(ns(s, "endTimeUnixNano") - 1700000000000000000LL, t[k + 1]);
        }
        json_decref(doc);

        /* A request that failed in decoding, with no parent, a 5xx, a
         * hostile model name, and a clock that stepped: stages end at the
         * next one reached, nothing ends before it starts or outside the
         * request. */
        a.stages.queue_ns = a.stages.infer_ns = 0;
        a.parent_id = "";
        a.status = 503;
        a.error = "overloaded";
        a.model = "a\"b\\c\n\x01";
        a.end_ns = 500;   /* before its start: taken as the start */
        REQUIRE(otlp_record_from(&a, &r[1]));
        doc = encode(r, 2, buf, sizeof buf);
        REQUIRE(doc);
        spans = json_object_get(json_array_get(json_object_get(json_array_get(json_object_get(doc, "resourceSpans"), 0),
                                                               "scopeSpans"), 0), "spans");
        CHECK_EQ(json_array_size(spans), 8);
        root = json_array_get(spans, 5);
        CHECK(strcmp(json_string_value(json_object_get(root, "name")), "request") == 0);
        CHECK(!json_object_get(root, "parentSpanId"));
        CHECK_EQ(json_integer_value(json_object_get(json_object_get(root, "status"), "code")), 2);
        json_t *attr = json_array_get(json_object_get(root, "attributes"), 0);
        CHECK(strcmp(json_string_value(json_object_get(json_object_get(attr, "value"), "stringValue")),
                     "a\"b\\c\n\x01") == 0);
        long long r0 = ns(root, "startTimeUnixNano"), r1 = ns(root, "endTimeUnixNano");
        CHECK(r1 >= r0);
        for (int i = 6; i < 8; i++) {
                json_t *s = json_array_get(spans, i);
                CHECK(ns(s, "startTimeUnixNano") >= r0 && ns(s, "endTimeUnixNano") <= r1 &&
                      ns(s, "endTimeUnixNano") >= ns(s, "startTimeUnixNano"));
        }
        CHECK(strcmp(json_string_value(json_object_get(json_array_get(spans, 6), "name")), "decode") == 0);
        CHECK(strcmp(json_string_value(json_object_get(json_array_get(spans, 7), "name")), "answer") == 0);
        json_decref(doc);

        /* The worst record fits its bound; a buffer too small is refused. */
        memset(r[1].model, 1, sizeof r[1].model - 1);
        memset(r[1].error, '"', sizeof r[1].error - 1);
        r[1].decode_ns = r[1].queue_ns = r[1].infer_ns = r[1].done_ns = 1;
        r[1].version = -9223372036854775807LL;
        r[1].status = -2147483647;
        int len = otlp_encode(&r[1], 1, 9223372036854775807LL / 2, "0.1.0", buf, OTLP_RECORD_JSON_MAX + 1024);
        CHECK_MSG(len > 0, "%d", len);
        CHECK_EQ(otlp_encode(&r[1], 1, 0, NULL, buf, 100), -ENOBUFS);
}

static void ring(void)
{
        struct otlp *o;
        struct otlp_stats st;
        char err[256];

        CHECK_EQ(otlp_new(&(struct otlp_opts){ .endpoint = "ftp://x", .queue = 4 }, err, sizeof err, &o), -EINVAL);
        CHECK_EQ(otlp_new(&(struct otlp_opts){ .endpoint = "http://", .queue = 4 }, err, sizeof err, &o), -EINVAL);
        CHECK_EQ(otlp_new(&(struct otlp_opts){ .endpoint = "http://x", .queue = 0 }, err, sizeof err, &o), -EINVAL);

        /* A port nobody listens on. */
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        socklen_t sl = sizeof sa;
        REQUIRE(fd >= 0 && bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0 &&
                getsockname(fd, (struct sockaddr *)&sa, &sl) == 0);
        char url[64];
        snprintf(url, sizeof url, "http://127.0.0.1:%d/", ntohs(sa.sin_port));
        close(fd);
        REQUIRE(otlp_new(&(struct otlp_opts){ .endpoint = url, .queue = 2 }, err, sizeof err, &o) == 0);
        struct http_access a = access_of();
        int64_t t0 = time_now_ns();
        for (int i = 0; i < 5; i++)
                otlp_record(o, &a);
        CHECK(time_now_ns() - t0 < 100000000);
        otlp_stats_snapshot(o, &st);
        /* The thread waits up to a second for a batch: two in the ring, three dropped. */
        CHECK_EQ(st.queued, 2);
        CHECK_EQ(st.queue_capacity, 2);
        CHECK_EQ(st.spans_dropped, 15);
        CHECK_EQ(st.spans_exported, 0);
        t0 = time_now_ns();
        o = otlp_free(o);   /* the flush fails at once: connection refused */
        CHECK_MSG(time_now_ns() - t0 < (int64_t)(OTLP_FLUSH_MS + 1000) * 1000000, "%lld ms",
                  (long long)((time_now_ns() - t0) / 1000000));
        CHECK(otlp_free(NULL) == NULL);
}

int main(void)
{
        record_from();
        encoding();
        ring();
        return CHECK_DONE();
}
