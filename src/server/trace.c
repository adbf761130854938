/* trace: W3C traceparent/tracestate parsing and a request's trace ids. */
#include "trace.h"

#include <errno.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

static int hex_lc(char c)
{
        if (c >= '0' && c <= '9')
                return c - '0';
        if (c >= 'a' && c <= 'f')
                return c - 'a' + 10;
        return -1;   /* upper case is invalid in traceparent */
}

/* n bytes from 2n lowercase hex digits; -EBADMSG on any other character. */
static int unhex(const char *p, uint8_t *out, size_t n)
{
        for (size_t i = 0; i < n; i++) {
                int hi = hex_lc(p[2 * i]), lo = hex_lc(p[2 * i + 1]);
                if (hi < 0 || lo < 0)
                        return -EBADMSG;
                out[i] = (uint8_t)(hi << 4 | lo);
        }
        return 0;
}

static void tohex(const uint8_t *in, size_t n, char *out)
{
        static const char digits[] = "0123456789abcdef";

        for (size_t i = 0; i < n; i++) {
                out[2 * i] = digits[in[i] >> 4];
                out[2 * i + 1] = digits[in[i] & 15];
        }
        out[2 * n] = '\0';
}

static bool all_zero(const uint8_t *p, size_t n)
{
        uint8_t x = 0;

        for (size_t i = 0; i < n; i++)
                x |= p[i];
        return x == 0;
}

int trace_parse_parent(const char *v, size_t len, struct trace_parent *ret_parent)
{
        struct trace_parent t;

        if (!v || len < TRACE_PARENT_LEN)
                return -EBADMSG;
        if (unhex(v, &t.version, 1) < 0 || t.version == 0xff)
                return -EBADMSG;
        /* Version 00 is exactly 55 characters; a later version may append
         * fields after a '-', which we do not read. */
        if (t.version == 0 ? len != TRACE_PARENT_LEN : len > TRACE_PARENT_LEN && v[TRACE_PARENT_LEN] != '-')
                return -EBADMSG;
        if (v[2] != '-' || v[35] != '-' || v[52] != '-')
                return -EBADMSG;
        if (unhex(v + 3, t.trace_id, 16) < 0 || unhex(v + 36, t.parent_id, 8) < 0 || unhex(v + 53, &t.flags, 1) < 0)
                return -EBADMSG;
        if (all_zero(t.trace_id, 16) || all_zero(t.parent_id, 8))
                return -EBADMSG;
        *ret_parent = t;
        return 0;
}

static bool key_char(char c)
{
        return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-' || c == '*' || c == '/';
}

/* A list member's key: simple-key or tenant-id@system-id. */
static bool key_valid(const char *k, size_t n)
{
        const char *at = memchr(k, '@', n);

        if (!at) {
                if (n < 1 || n > 256 || !(k[0] >= 'a' && k[0] <= 'z'))
                        return false;
                for (size_t i = 1; i < n; i++)
                        if (!key_char(k[i]))
                                return false;
                return true;
        }
        size_t tn = (size_t)(at - k), sn = n - tn - 1;
        const char *sys = at + 1;
        if (tn < 1 || tn > 241 || !((k[0] >= 'a' && k[0] <= 'z') || (k[0] >= '0' && k[0] <= '9')))
                return false;
        for (size_t i = 1; i < tn; i++)
                if (!key_char(k[i]))
                        return false;
        if (sn < 1 || sn > 14 || !(sys[0] >= 'a' && sys[0] <= 'z'))
                return false;
        for (size_t i = 1; i < sn; i++)
                if (!key_char(sys[i]))
                        return false;
        return true;
}

/* value = 0*255(chr) nblk-chr: printable ASCII but ',' and '=', spaces
 * inside only. */
static bool value_valid(const char *v, size_t n)
{
        if (n < 1 || n > 256 || v[n - 1] == ' ')
                return false;
        for (size_t i = 0; i < n; i++)
                if (v[i] < 0x20 || v[i] > 0x7e || v[i] == ',' || v[i] == '=')
                        return false;
        return true;
}

bool trace_state_valid(const char *v, size_t len)
{
        const char *keys[TRACE_STATE_MEMBERS];
        size_t key_len[TRACE_STATE_MEMBERS];
        int members = 0;
        size_t pos = 0;

        if (!v || len > TRACE_STATE_MAX)
                return false;
        for (;;) {
                const char *comma = memchr(v + pos, ',', len - pos);
                size_t end = comma ? (size_t)(comma - v) : len;
                size_t a = pos, b = end;

                while (a < b && (v[a] == ' ' || v[a] == '\t'))
                        a++;
                while (b > a && (v[b - 1] == ' ' || v[b - 1] == '\t'))
                        b--;
                if (a < b) {   /* empty members are allowed */
                        const char *eq = memchr(v + a, '=', b - a);
                        if (!eq || members == TRACE_STATE_MEMBERS)
                                return false;
                        size_t kn = (size_t)(eq - (v + a));
                        if (!key_valid(v + a, kn) || !value_valid(eq + 1, b - a - kn - 1))
                                return false;
                        for (int i = 0; i < members; i++)
                                if (key_len[i] == kn && memcmp(keys[i], v + a, kn) == 0)
                                        return false;
                        keys[members] = v + a;
                        key_len[members++] = kn;
                }
                if (!comma)
                        return true;
                pos = end + 1;
        }
}

/* Random ids from the kernel; should getrandom fail (it does not, for a
 * few bytes, once the pool is initialised), a clock and a counter keep
 * them unique within the process. */
static void random_id(uint8_t *p, size_t n)
{
        static atomic_ullong seq;

        if (getrandom(p, n, GRND_NONBLOCK) == (ssize_t)n && !all_zero(p, n))
                return;
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        uint64_t x = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec + atomic_fetch_add(&seq, 1) + 1;
        for (size_t i = 0; i < n; i++) {
                x ^= x >> 33;
                x *= 0xff51afd7ed558ccdULL;
                p[i] = (uint8_t)(x >> 56) | (i == 0);   /* never all zero */
        }
}

static atomic_bool record_new;

void trace_record_new(bool on)
{
        atomic_store(&record_new, on);
}

void trace_begin(struct trace_ctx *ret_ctx, const char *traceparent, const char *tracestate)
{
        struct trace_ctx t = { 0 };
        struct trace_parent p;

        if (traceparent && trace_parse_parent(traceparent, strlen(traceparent), &p) == 0) {
                memcpy(t.trace_id, p.trace_id, sizeof t.trace_id);
                memcpy(t.parent_id, p.parent_id, sizeof t.parent_id);
                t.flags = p.flags & 0x01;   /* only the flags of version 00 we know are passed on */
                t.joined = true;
                tohex(t.parent_id, sizeof t.parent_id, t.parent_id_hex);
                if (tracestate && trace_state_valid(tracestate, strlen(tracestate)))
                        memcpy(t.state, tracestate, strlen(tracestate) + 1);
        } else {
                random_id(t.trace_id, sizeof t.trace_id);
                t.flags = atomic_load(&record_new) ? 0x01 : 0x00;
        }
        random_id(t.span_id, sizeof t.span_id);
        tohex(t.trace_id, sizeof t.trace_id, t.trace_id_hex);
        tohex(t.span_id, sizeof t.span_id, t.span_id_hex);
        *ret_ctx = t;
}

void trace_format(const struct trace_ctx *t, char buf[TRACE_PARENT_LEN + 1])
{
        memcpy(buf, "00-", 3);
        tohex(t->trace_id, 16, buf + 3);
        buf[35] = '-';
        tohex(t->span_id, 8, buf + 36);
        buf[52] = '-';
        tohex(&t->flags, 1, buf + 53);
}
