/* h2: gRPC's framing helpers (grpc-timeout, grpc-message's encoding, the
 * message prefix), and whole connections through h2_feed with bytes a
 * client would send: the handler sees the call's path, deadline, metadata
 * and messages; a message over the limit, a compressed one, a cut one and
 * a header list over the limit never reach it; streams past max_streams
 * are refused; and every byte charged to the budget is given back. */
#include "check.h"
#include "budget.h"
#include "h2.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

static void test_timeout(void)
{
        int64_t ns = 0;

        CHECK_EQ(h2_parse_timeout("100m", &ns), 0);
        CHECK_EQ(ns, 100000000LL);
        CHECK_EQ(h2_parse_timeout("30S", &ns), 0);
        CHECK_EQ(ns, 30000000000LL);
        CHECK_EQ(h2_parse_timeout("2M", &ns), 0);
        CHECK_EQ(ns, 120000000000LL);
        CHECK_EQ(h2_parse_timeout("1H", &ns), 0);
        CHECK_EQ(ns, 3600000000000LL);
        CHECK_EQ(h2_parse_timeout("5u", &ns), 0);
        CHECK_EQ(ns, 5000LL);
        CHECK_EQ(h2_parse_timeout("7n", &ns), 0);
        CHECK_EQ(ns, 7LL);
        /* 8 digits of hours: capped, never an overflow. */
        CHECK_EQ(h2_parse_timeout("99999999H", &ns), 0);
        CHECK(ns > 0);
        ns = -1;
        CHECK_EQ(h2_parse_timeout("123456789S", &ns), -EINVAL);   /* 9 digits */
        CHECK_EQ(h2_parse_timeout("S", &ns), -EINVAL);
        CHECK_EQ(h2_parse_timeout("10", &ns), -EINVAL);
        CHECK_EQ(h2_parse_timeout("10s", &ns), -EINVAL);          /* units are case-sensitive: s is not S */
        CHECK_EQ(h2_parse_timeout("-1S", &ns), -EINVAL);
        CHECK_EQ(h2_parse_timeout("", &ns), -EINVAL);
        CHECK_EQ(h2_parse_timeout(NULL, &ns), -EINVAL);
        CHECK_EQ(ns, -1);   /* untouched on failure */
}

static void test_percent(void)
{
        char out[64];

        h2_percent_encode("unknown model 'x'", out, sizeof out);
        CHECK_EQ(strcmp(out, "unknown model 'x'"), 0);
        h2_percent_encode("50% done\n\xc3\xa9", out, sizeof out);
        CHECK_EQ(strcmp(out, "50%25 done%0A%C3%A9"), 0);
        /* Cut on a whole escape, always NUL-terminated. */
        h2_percent_encode("ab\n", out, 5);
        CHECK_EQ(strcmp(out, "ab"), 0);
        h2_percent_encode(NULL, out, sizeof out);
        CHECK_EQ(out[0], '\0');
}

static void test_prefix(void)
{
        const uint8_t a[5] = { 0, 0, 0, 1, 2 }, b[5] = { 1, 0x12, 0x34, 0x56, 0x78 }, c[5] = { 2, 0, 0, 0, 0 };
        bool comp = true;
        uint32_t len = 0;

        CHECK_EQ(h2_frame_prefix(a, &comp, &len), 0);
        CHECK(!comp);
        CHECK_EQ(len, 258u);
        CHECK_EQ(h2_frame_prefix(b, &comp, &len), 0);
        CHECK(comp);
        CHECK_EQ(len, 0x12345678u);
        CHECK_EQ(h2_frame_prefix(c, &comp, &len), -EPROTO);
}

/* ---- whole connections ------------------------------------------------------ */

struct seen {
        int calls, messages, ends, cancels;
        char path[128];
        char auth[64];
        int64_t deadline_ns, start_ns;
        size_t last_len;
        uint8_t last[64];
        int refuse;          /* on_call's answer */
        int answer;          /* answer and finish at the end of the client's messages */
};

static int on_call(void *ud, struct h2_call *c, char *msg, size_t msg_len)
{
        struct seen *s = ud;
        const char *a = h2_call_metadata(c, "authorization");

        s->calls++;
        snprintf(s->path, sizeof s->path, "%s", h2_call_path(c));
        snprintf(s->auth, sizeof s->auth, "%s", a ? a : "");
        s->deadline_ns = h2_call_deadline_ns(c);
        s->start_ns = h2_call_start_ns(c);
        /* A response header of the handler's: its bounds and refusals
         * (what reaches the client is checked by the gRPC tests). */
        char name[H2_MAX_HEADER_NAME + 2], value[H2_MAX_HEADER_VALUE + 2];
        memset(name, 'n', sizeof name - 1);
        name[sizeof name - 1] = '\0';
        memset(value, 'v', sizeof value - 1);
        value[sizeof value - 1] = '\0';
        CHECK_EQ(h2_call_set_header(c, name, "x"), -EINVAL);
        CHECK_EQ(h2_call_set_header(c, "x", value), -EINVAL);
        name[H2_MAX_HEADER_NAME] = '\0';
        value[H2_MAX_HEADER_VALUE] = '\0';
        CHECK_EQ(h2_call_set_header(c, name, value), 0);
        CHECK_EQ(h2_call_set_header(c, "Traceparent", "x"), -EINVAL);
        CHECK_EQ(h2_call_set_header(c, "grpc-status", "0"), -EINVAL);
        CHECK_EQ(h2_call_set_header(c, "", "x"), -EINVAL);
        CHECK_EQ(h2_call_set_header(c, "traceparent", "a\nb"), -EINVAL);
        CHECK_EQ(h2_call_set_header(c, "traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"), 0);
        CHECK_EQ(h2_call_set_header(c, "traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b8-01"), 0);
        CHECK_EQ(h2_call_set_header(c, "tracestate", "a=b"), -E2BIG);   /* a third name */
        if (s->refuse)
                snprintf(msg, msg_len, "refused");
        return s->refuse;
}

static void on_message(void *ud, struct h2_call *c, const uint8_t *msg, size_t len)
{
        struct seen *s = ud;

        s->messages++;
        s->last_len = len;
        memcpy(s->last, msg, len < sizeof s->last ? len : sizeof s->last);
}

static void on_end(void *ud, struct h2_call *c)
{
        struct seen *s = ud;

        s->ends++;
        if (s->answer)
                CHECK_EQ(h2_call_send(c, "pong", 4), 0);
        h2_call_finish(c, H2_OK, NULL);
}

static void on_cancel(void *ud, struct h2_call *c)
{
        struct seen *s = ud;

        s->cancels++;
        h2_call_finish(c, H2_CANCELLED, NULL);
}

static const struct h2_handler handler = { on_call, on_message, on_end, on_cancel };

/* A client's bytes, built up. */
struct wire {
        uint8_t b[1 << 16];
        size_t n;
};

static void put(struct wire *w, const void *p, size_t n)
{
        REQUIRE(w->n + n <= sizeof w->b);
        if (n)
                memcpy(w->b + w->n, p, n);
        w->n += n;
}

static void frame(struct wire *w, uint8_t type, uint8_t flags, uint32_t stream, const void *payload, size_t n)
{
        uint8_t h[9] = { (uint8_t)(n >> 16), (uint8_t)(n >> 8), (uint8_t)n, type, flags,
                         (uint8_t)(stream >> 24), (uint8_t)(stream >> 16), (uint8_t)(stream >> 8), (uint8_t)stream };
        put(w, h, 9);
        put(w, payload, n);
}

/* HPACK: a literal field without indexing, a new name, no Huffman
 * (lengths below 127, or one continuation byte). */
static size_t field(uint8_t *p, const char *name, const char *value)
{
        size_t o = 0, nl = strlen(name), vl = strlen(value);
        p[o++] = 0;
        p[o++] = (uint8_t)nl;
        memcpy(p + o, name, nl);
        o += nl;
        if (vl < 127) {
                p[o++] = (uint8_t)vl;
        } else {
                REQUIRE(vl - 127 < 128);
                p[o++] = 127;
                p[o++] = (uint8_t)(vl - 127);
        }
        memcpy(p + o, value, vl);
        return o + vl;
}

static void start(struct wire *w)
{
        put(w, "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 24);
        frame(w, 4, 0, 0, NULL, 0);   /* SETTINGS */
}

static void headers(struct wire *w, uint32_t stream, const char *path, const char *timeout, const char *auth,
                    bool end_stream)
{
        uint8_t p[1024];
        size_t n = 0;

        n += field(p + n, ":method", "POST");
        n += field(p + n, ":scheme", "http");
        n += field(p + n, ":path", path);
        n += field(p + n, ":authority", "localhost");
        n += field(p + n, "content-type", "application/grpc");
        n += field(p + n, "te", "trailers");
        if (timeout)
                n += field(p + n, "grpc-timeout", timeout);
        if (auth)
                n += field(p + n, "authorization", auth);
        frame(w, 1, 4 | (end_stream ? 1 : 0), stream, p, n);
}

/* A call's HEADERS with grpc-encoding. */
static void headers_enc(struct wire *w, uint32_t stream, const char *encoding)
{
        uint8_t p[1024];
        size_t n = 0;

        n += field(p + n, ":method", "POST");
        n += field(p + n, ":scheme", "http");
        n += field(p + n, ":path", "/a/B");
        n += field(p + n, ":authority", "localhost");
        n += field(p + n, "content-type", "application/grpc");
        n += field(p + n, "grpc-encoding", encoding);
        frame(w, 1, 4, stream, p, n);
}

static void message(struct wire *w, uint32_t stream, uint8_t flag, uint32_t declared, const void *msg, size_t n,
                    bool end_stream)
{
        uint8_t p[256];
        REQUIRE(n + 5 <= sizeof p);
        p[0] = flag;
        p[1] = (uint8_t)(declared >> 24);
        p[2] = (uint8_t)(declared >> 16);
        p[3] = (uint8_t)(declared >> 8);
        p[4] = (uint8_t)declared;
        if (n)
                memcpy(p + 5, msg, n);
        frame(w, 0, end_stream ? 1 : 0, stream, p, n + 5);
}

static struct h2_server *server(struct budget *b, struct seen *seen, int max_streams)
{
        struct h2_opts o = { .listen = NULL, .max_connections = 4, .max_streams = max_streams,
                             .max_header_bytes = 4096, .max_message_bytes = 100, .idle_timeout_s = 30,
                             .read_timeout_s = 10, .max_deadline_ms = 30000, .budget = b, .handler = &handler,
                             .userdata = seen };
        struct h2_server *s = NULL;
        char err[256];

        REQUIRE(h2_new(&o, err, sizeof err, &s) == 0);
        return s;
}

static int64_t used(struct budget *b)
{
        struct budget_stats st;
        budget_stats_snapshot(b, &st);
        return st.used;
}

static void test_calls(void)
{
        struct budget_opts bo = { .total = 64 << 20, .client_share = 32 << 20 };
        struct budget *b = NULL;
        static struct wire w;
        struct seen seen = { .answer = 1 };

        REQUIRE(budget_new(&bo, &b) == 0);
        struct h2_server *s = server(b, &seen, 4);

        /* One call: path, deadline (grpc-timeout), authorization kept for
         * the handler, one message, the client's end. */
        w.n = 0;
        start(&w);
        headers(&w, 1, "/inference.GRPCInferenceService/ServerLive", "250m", "Bearer k1", false);
        message(&w, 1, 0, 5, "hello", 5, true);
        h2_feed(s, w.b, w.n);
        CHECK_EQ(seen.calls, 1);
        CHECK_EQ(strcmp(seen.path, "/inference.GRPCInferenceService/ServerLive"), 0);
        CHECK_EQ(strcmp(seen.auth, "Bearer k1"), 0);
        CHECK_EQ(seen.deadline_ns - seen.start_ns, 250000000LL);
        CHECK_EQ(seen.messages, 1);
        CHECK_EQ(seen.last_len, (size_t)5);
        CHECK_EQ(memcmp(seen.last, "hello", 5), 0);
        CHECK_EQ(seen.ends, 1);
        CHECK_EQ(h2_inflight(s), 0);
        CHECK_EQ(used(b), 0);

        /* A message split over three DATA frames, and an empty one, on one stream. */
        memset(&seen, 0, sizeof seen);
        w.n = 0;
        start(&w);
        headers(&w, 1, "/a/B", NULL, NULL, false);
        uint8_t pre[5] = { 0, 0, 0, 0, 10 };
        frame(&w, 0, 0, 1, pre, 3);
        frame(&w, 0, 0, 1, pre + 3, 2);
        frame(&w, 0, 0, 1, "0123456789", 10);
        message(&w, 1, 0, 0, "", 0, true);
        h2_feed(s, w.b, w.n);
        CHECK_EQ(seen.messages, 2);
        CHECK_EQ(seen.last_len, (size_t)0);
        CHECK_EQ(seen.deadline_ns, 0);   /* none given */
        CHECK_EQ(used(b), 0);

        /* Over max_message_bytes (100), compressed, or cut by the end of
         * the stream: never handed over. */
        memset(&seen, 0, sizeof seen);
        w.n = 0;
        start(&w);
        headers(&w, 1, "/a/B", NULL, NULL, false);
        message(&w, 1, 0, 101, "x", 1, true);
        headers(&w, 3, "/a/B", NULL, NULL, false);
        message(&w, 3, 1, 1, "x", 1, true);
        headers(&w, 5, "/a/B", NULL, NULL, false);
        message(&w, 5, 0, 50, "x", 1, true);
        h2_feed(s, w.b, w.n);
        CHECK_EQ(seen.calls, 3);
        CHECK_EQ(seen.messages, 0);
        CHECK_EQ(seen.ends, 0);
        CHECK_EQ(seen.cancels, 3);
        struct h2_stats st;
        h2_stats_snapshot(s, &st);
        CHECK_EQ(st.messages_too_large, 1u);
        CHECK_EQ(used(b), 0);

        /* A header list over max_header_bytes: the stream is refused
         * before the handler sees it. */
        memset(&seen, 0, sizeof seen);
        w.n = 0;
        start(&w);
        char big[250];
        memset(big, 'a', sizeof big - 1);
        big[sizeof big - 1] = '\0';
        uint8_t p[8192];
        size_t n = field(p, ":method", "POST");
        n += field(p + n, ":path", "/a/B");
        for (int i = 0; i < 20; i++)
                n += field(p + n, "x-pad", big);
        frame(&w, 1, 5, 1, p, n);
        h2_feed(s, w.b, w.n);
        CHECK_EQ(seen.calls, 0);
        h2_stats_snapshot(s, &st);
        CHECK(st.streams_refused >= 1);

        /* Past max_streams (4) open at once: the fifth is refused. */
        memset(&seen, 0, sizeof seen);
        w.n = 0;
        start(&w);
        for (uint32_t id = 1; id <= 9; id += 2)
                headers(&w, id, "/a/B", NULL, NULL, false);
        h2_feed(s, w.b, w.n);
        CHECK_EQ(seen.calls, 4);
        CHECK_EQ(seen.cancels, 4);   /* the connection closed at the end */

        /* A refusal by the handler, and not gRPC at all (GET): no message reaches it. */
        memset(&seen, 0, sizeof seen);
        seen.refuse = H2_UNAUTHENTICATED;
        w.n = 0;
        start(&w);
        headers(&w, 1, "/a/B", NULL, NULL, false);
        message(&w, 1, 0, 1, "x", 1, true);
        h2_feed(s, w.b, w.n);
        CHECK_EQ(seen.calls, 1);
        CHECK_EQ(seen.messages, 0);
        memset(&seen, 0, sizeof seen);
        w.n = 0;
        start(&w);
        n = field(p, ":method", "GET");
        n += field(p + n, ":scheme", "http");
        n += field(p + n, ":path", "/");
        n += field(p + n, ":authority", "x");
        frame(&w, 1, 5, 1, p, n);
        h2_feed(s, w.b, w.n);
        CHECK_EQ(seen.calls, 0);

        /* Garbage instead of the preface. */
        h2_feed(s, (const uint8_t *)"GET / HTTP/1.1\r\n\r\n", 18);
        CHECK_EQ(h2_inflight(s), 0);
        CHECK_EQ(used(b), 0);
        h2_free(s);
        budget_free(b);
}

/* Every byte a connection holds is charged first: with a budget too
 * small for nghttp2's session, the connection is refused, and nothing
 * stays charged. */
static void test_budget_refusal(void)
{
        struct budget_opts bo = { .total = 4096, .client_share = 4096 };
        struct budget *b = NULL;
        static struct wire w;
        struct seen seen = { .answer = 1 };

        REQUIRE(budget_new(&bo, &b) == 0);
        struct h2_server *s = server(b, &seen, 4);
        w.n = 0;
        start(&w);
        headers(&w, 1, "/a/B", NULL, NULL, false);
        message(&w, 1, 0, 5, "hello", 5, true);
        h2_feed(s, w.b, w.n);
        CHECK_EQ(seen.messages, 0);
        CHECK_EQ(used(b), 0);
        h2_free(s);
        budget_free(b);
}

/* in[n] compressed by zlib as gzip (gzip true) or deflate's zlib format. */
static size_t squeeze(const void *in, size_t n, bool gzip, uint8_t *out, size_t cap)
{
        z_stream z = { 0 };
        REQUIRE(deflateInit2(&z, 9, Z_DEFLATED, gzip ? 16 + MAX_WBITS : MAX_WBITS, 8, Z_DEFAULT_STRATEGY) == Z_OK);
        z.next_in = (Bytef *)in;
        z.avail_in = (uInt)n;
        z.next_out = out;
        z.avail_out = (uInt)cap;
        REQUIRE(deflate(&z, Z_FINISH) == Z_STREAM_END);
        size_t len = cap - z.avail_out;
        deflateEnd(&z);
        return len;
}

/* grpc-encoding gzip and deflate: messages with the compressed flag are
 * inflated before the handler sees them; one that inflates past
 * max_message_bytes (100) is refused, as is a corrupt one, an unknown
 * encoding (before the handler), and the flag without an encoding; and
 * nothing stays charged. */
static void test_compressed(void)
{
        struct budget_opts bo = { .total = 64 << 20, .client_share = 32 << 20 };
        struct budget *b = NULL;
        static struct wire w;
        struct seen seen = { .answer = 1 };
        uint8_t z[128], zeros[4096] = { 0 };
        struct h2_stats st;
        size_t n;

        REQUIRE(budget_new(&bo, &b) == 0);
        struct h2_server *s = server(b, &seen, 4);
        for (int gz = 0; gz < 2; gz++) {
                memset(&seen, 0, sizeof seen);
                w.n = 0;
                start(&w);
                headers_enc(&w, 1, gz ? "gzip" : "deflate");
                n = squeeze("hello, hello, hello", 19, gz, z, sizeof z);
                message(&w, 1, 1, (uint32_t)n, z, n, false);
                message(&w, 1, 0, 5, "plain", 5, true);   /* the flag is per message */
                h2_feed(s, w.b, w.n);
                CHECK_EQ(seen.calls, 1);
                CHECK_EQ(seen.messages, 2);
                CHECK_EQ(seen.ends, 1);
                CHECK_EQ(seen.last_len, (size_t)5);
                CHECK_EQ(used(b), 0);
        }
        memset(&seen, 0, sizeof seen);
        w.n = 0;
        start(&w);
        headers_enc(&w, 1, "gzip");
        n = squeeze("hello", 5, true, z, sizeof z);
        message(&w, 1, 1, (uint32_t)n, z, n, true);
        h2_feed(s, w.b, w.n);
        CHECK_EQ(seen.messages, 1);
        CHECK_EQ(seen.last_len, (size_t)5);
        CHECK_EQ(memcmp(seen.last, "hello", 5), 0);

        /* 4096 bytes from a few dozen: past the limit of 100. */
        memset(&seen, 0, sizeof seen);
        h2_stats_snapshot(s, &st);
        uint64_t large = st.messages_too_large;
        w.n = 0;
        start(&w);
        headers_enc(&w, 1, "gzip");
        n = squeeze(zeros, sizeof zeros, true, z, sizeof z);
        CHECK(n < 100);
        message(&w, 1, 1, (uint32_t)n, z, n, true);
        headers_enc(&w, 3, "deflate");
        n = squeeze(zeros, 101, false, z, sizeof z);
        message(&w, 3, 1, (uint32_t)n, z, n, true);
        headers_enc(&w, 5, "deflate");
        n = squeeze(zeros, 100, false, z, sizeof z);   /* exactly the limit: taken */
        message(&w, 5, 1, (uint32_t)n, z, n, true);
        h2_feed(s, w.b, w.n);
        CHECK_EQ(seen.calls, 3);
        CHECK_EQ(seen.messages, 1);
        CHECK_EQ(seen.last_len, (size_t)100);
        h2_stats_snapshot(s, &st);
        CHECK_EQ(st.messages_too_large, large + 2);
        CHECK_EQ(used(b), 0);

        /* Corrupt, cut, with bytes after its end; gzip's bytes under
         * deflate; the flag with no grpc-encoding; an unknown encoding. */
        memset(&seen, 0, sizeof seen);
        w.n = 0;
        start(&w);
        headers_enc(&w, 1, "gzip");
        n = squeeze("hello", 5, true, z, sizeof z);
        z[n - 3] ^= 0xff;   /* the trailer's length */
        message(&w, 1, 1, (uint32_t)n, z, n, true);
        headers_enc(&w, 3, "gzip");
        n = squeeze("hello", 5, true, z, sizeof z);
        message(&w, 3, 1, (uint32_t)n - 4, z, n - 4, true);
        headers_enc(&w, 5, "gzip");
        n = squeeze("hello", 5, true, z, sizeof z);
        z[n] = 'x';
        message(&w, 5, 1, (uint32_t)n + 1, z, n + 1, true);
        headers_enc(&w, 7, "deflate");
        message(&w, 7, 1, (uint32_t)n, z, n, true);
        h2_feed(s, w.b, w.n);
        CHECK_EQ(seen.calls, 4);
        CHECK_EQ(seen.messages, 0);
        CHECK_EQ(seen.ends, 0);
        memset(&seen, 0, sizeof seen);
        w.n = 0;
        start(&w);
        headers(&w, 1, "/a/B", NULL, NULL, false);
        message(&w, 1, 1, (uint32_t)n, z, n, true);
        headers_enc(&w, 3, "br");
        message(&w, 3, 0, 5, "hello", 5, true);
        h2_feed(s, w.b, w.n);
        CHECK_EQ(seen.calls, 1);   /* br: refused before the handler */
        CHECK_EQ(seen.messages, 0);
        CHECK_EQ(used(b), 0);

        /* A budget that holds the compressed message but not zlib's state
         * with the inflated one: refused, nothing kept. */
        h2_free(s);
        budget_free(b);
        bo = (struct budget_opts){ .total = 30 << 10, .client_share = 30 << 10 };
        REQUIRE(budget_new(&bo, &b) == 0);
        s = server(b, &seen, 4);
        memset(&seen, 0, sizeof seen);
        w.n = 0;
        start(&w);
        headers_enc(&w, 1, "gzip");
        n = squeeze("hello", 5, true, z, sizeof z);
        message(&w, 1, 1, (uint32_t)n, z, n, true);
        h2_feed(s, w.b, w.n);
        CHECK_EQ(seen.calls, 1);
        CHECK_EQ(seen.messages, 0);
        CHECK_EQ(seen.cancels, 1);
        CHECK_EQ(used(b), 0);
        h2_free(s);
        budget_free(b);
}

int main(void)
{
        test_timeout();
        test_percent();
        test_prefix();
        test_calls();
        test_budget_refusal();
        test_compressed();
        return CHECK_DONE();
}
