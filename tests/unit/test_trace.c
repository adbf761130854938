/* Unit tests of W3C trace context (server/trace.h): traceparent and
 * tracestate as the recommendation's test suite reads them, and a
 * request's ids. */
#include "check.h"
#include "trace.h"

#include <errno.h>

#define TID "4bf92f3577b34da6a3ce929d0e0e4736"
#define PID "00f067aa0ba902b7"

static int parse(const char *v, struct trace_parent *p)
{
        return trace_parse_parent(v, strlen(v), p);
}

static void traceparent(void)
{
        struct trace_parent p;

        CHECK_EQ(parse("00-" TID "-" PID "-01", &p), 0);
        CHECK_EQ(p.version, 0);
        CHECK_EQ(p.trace_id[0], 0x4b);
        CHECK_EQ(p.trace_id[15], 0x36);
        CHECK_EQ(p.parent_id[7], 0xb7);
        CHECK_EQ(p.flags, 1);
        CHECK_EQ(parse("00-" TID "-" PID "-00", &p), 0);
        CHECK_EQ(p.flags, 0);
        CHECK_EQ(parse("00-" TID "-" PID "-ff", &p), 0);   /* unknown flags: parsed, not passed on */
        /* A later version: its version 00 prefix, then nothing or '-'. */
        CHECK_EQ(parse("01-" TID "-" PID "-01", &p), 0);
        CHECK_EQ(parse("cc-" TID "-" PID "-01-what-the-future-will-be-like", &p), 0);
        CHECK_EQ(p.version, 0xcc);

        const char *bad[] = {
                "",
                "00",
                "00-" TID "-" PID "-0",                     /* short */
                "00-" TID "-" PID "-01-",                   /* version 00 is 55 characters exactly */
                "00-" TID "-" PID "-01 ",
                "00-" TID "-" PID "-011",
                "cc-" TID "-" PID "-01what",                /* a later version: '-' after the flags */
                "ff-" TID "-" PID "-01",                    /* version ff is invalid */
                "0x-" TID "-" PID "-01",
                "00-4BF92F3577B34DA6A3CE929D0E0E4736-" PID "-01",  /* upper case */
                "00-" TID "-00F067AA0BA902B7-01",
                "00-" TID "-" PID "-0A",
                "00-00000000000000000000000000000000-" PID "-01",  /* zero trace-id */
                "00-" TID "-0000000000000000-01",           /* zero parent-id */
                "00_" TID "-" PID "-01",
                "00-" TID "_" PID "-01",
                "00-" TID "-" PID "_01",
                "00-4bf92f3577b34da6a3ce929d0e0e473-" PID "-011",  /* fields shifted */
                "00-" TID "-00f067aa0ba902b-001",
                "00-4bf92f3577b34da6a3ce929d0e0e473g-" PID "-01",
                " 00-" TID "-" PID "-0",
        };
        for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
                CHECK_MSG(parse(bad[i], &p) == -EBADMSG, "invalid traceparent accepted: '%s'", bad[i]);
        CHECK_EQ(trace_parse_parent(NULL, 0, &p), -EBADMSG);
        /* The length given is what is read: a NUL inside is no end. */
        const char nul[] = "00-" TID "-" PID "-01\0";
        CHECK_EQ(trace_parse_parent(nul, sizeof nul - 1, &p), -EBADMSG);
}

static bool state_ok(const char *v)
{
        return trace_state_valid(v, strlen(v));
}

static void tracestate(void)
{
        const char *good[] = {
                "", "congo=t61rcWkgMzE", "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE",
                "rojo=00f067aa0ba902b7 , \tcongo=t61rcWkgMzE", ",,rojo=1,,", "fw529a3039@dt=AQIDBA", "0tenant@sys=v",
                "a_-*/b=x y", "k=!\"#$%&'()*+-./:;<>?@[\\]^_`{|}~",
        };
        const char *bad[] = {
                "Rojo=1", "1rojo=1", "rojo", "rojo=", "rojo= ", "rojo=a=b", "rojo=a,rojo=b", "ro jo=1",
                "@sys=v", "tenant@=v", "tenant@Sys=v", "tenant@0sys=v", "tenant@systemtoolong15=v", "k=\x01",
                "k=\xc3\xa9",
        };
        for (size_t i = 0; i < sizeof good / sizeof good[0]; i++)
                CHECK_MSG(state_ok(good[i]), "valid tracestate refused: '%s'", good[i]);
        for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
                CHECK_MSG(!state_ok(bad[i]), "invalid tracestate accepted: '%s'", bad[i]);

        /* 32 members at most; keys of 256 characters at most; 512 in all. */
        char v[2048] = "";
        for (int i = 0; i < 32; i++)
                snprintf(v + strlen(v), sizeof v - strlen(v), "%sk%d=v", i ? "," : "", i);
        CHECK(state_ok(v));
        strcat(v, ",k32=v");
        CHECK(!state_ok(v));
        memset(v, 'a', 256);
        strcpy(v + 256, "=v");
        CHECK(state_ok(v));
        memset(v, 'a', 257);
        strcpy(v + 257, "=v");
        CHECK(!state_ok(v));
        memset(v, 0, sizeof v);
        strcpy(v, "k=");
        memset(v + 2, 'v', 256);
        CHECK(state_ok(v));
        v[2 + 256] = 'v';
        CHECK(!state_ok(v));   /* a value of 257 */
        memset(v, 0, sizeof v);
        for (int i = 0; strlen(v) < 520; i++)
                snprintf(v + strlen(v), sizeof v - strlen(v), "%sk%d=%s", i ? "," : "", i,
                         "0123456789012345678901234567890123456789012345");
        CHECK(!state_ok(v));
}

static void begin(void)
{
        struct trace_ctx t, u;
        struct trace_parent p;
        char tp[TRACE_PARENT_LEN + 1];

        trace_begin(&t, "00-" TID "-" PID "-01", "congo=t61rcWkgMzE");
        CHECK(t.joined);
        CHECK(strcmp(t.trace_id_hex, TID) == 0);
        CHECK(strcmp(t.parent_id_hex, PID) == 0);
        CHECK(strcmp(t.span_id_hex, PID) != 0);
        CHECK_EQ(t.flags, 1);
        CHECK(strcmp(t.state, "congo=t61rcWkgMzE") == 0);
        trace_format(&t, tp);
        CHECK_EQ(strlen(tp), TRACE_PARENT_LEN);
        CHECK_EQ(parse(tp, &p), 0);
        CHECK(memcmp(p.trace_id, t.trace_id, 16) == 0 && memcmp(p.parent_id, t.span_id, 8) == 0 && p.flags == 1);
        CHECK(strncmp(tp, "00-" TID "-", 36) == 0);

        /* Flags other than sampled are not passed on; a later version
         * answers with 00. */
        trace_begin(&t, "cc-" TID "-" PID "-ff-x", "Bad=1");
        CHECK(t.joined);
        CHECK_EQ(t.flags, 1);
        CHECK(t.state[0] == '\0');   /* an invalid tracestate is dropped, the traceparent kept */
        trace_format(&t, tp);
        CHECK(strncmp(tp, "00-", 3) == 0 && strcmp(tp + 52, "-01") == 0);

        /* Invalid or missing: a new trace, with a tracestate dropped. */
        trace_begin(&t, "00-" TID "-" PID "-0", "congo=t61rcWkgMzE");
        trace_begin(&u, NULL, NULL);
        CHECK(!t.joined && !u.joined);
        CHECK(strcmp(t.trace_id_hex, TID) != 0);
        CHECK(strcmp(t.trace_id_hex, u.trace_id_hex) != 0);
        CHECK(strcmp(t.span_id_hex, u.span_id_hex) != 0);
        CHECK(t.parent_id_hex[0] == '\0' && t.state[0] == '\0' && t.flags == 0);
        trace_format(&u, tp);
        CHECK_EQ(parse(tp, &p), 0);   /* never zero ids */
}

int main(void)
{
        traceparent();
        tracestate();
        begin();
        return CHECK_DONE();
}
