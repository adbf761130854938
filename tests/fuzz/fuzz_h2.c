/* Fuzz target for gRPC's HTTP/2 transport: the input is what a client
 * sends after the connection preface (frames: SETTINGS, HEADERS, DATA,
 * RST_STREAM, ...), run through a real connection (h2_feed) whose handler
 * takes every call, echoes each message and finishes at the client's end.
 * Any input must leave no call open and nothing charged to the budget. */
#include "budget.h"
#include "h2.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int on_call(void *ud, struct h2_call *c, char *msg, size_t msg_len)
{
        /* Calls on odd paths are refused, so that both ways are reached. */
        return strstr(h2_call_path(c), "refuse") ? H2_UNAUTHENTICATED : 0;
}

static void on_message(void *ud, struct h2_call *c, const uint8_t *msg, size_t len)
{
        h2_call_send(c, msg, len);
}

static void on_end(void *ud, struct h2_call *c)
{
        h2_call_finish(c, H2_OK, NULL);
}

static void on_cancel(void *ud, struct h2_call *c)
{
        h2_call_finish(c, H2_CANCELLED, "gone");
}

static const struct h2_handler handler = { on_call, on_message, on_end, on_cancel };

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        static struct budget *b;
        static struct h2_server *s;
        static const char preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

        if (!s) {
                struct budget_opts bo = { .total = 256 << 20, .client_share = 128 << 20 };
                struct h2_opts o = { .listen = NULL, .max_connections = 4, .max_streams = 8,
                                     .max_header_bytes = 8192, .max_message_bytes = 1 << 20, .idle_timeout_s = 30,
                                     .read_timeout_s = 10, .max_deadline_ms = 30000, .handler = &handler };
                char err[256];
                if (budget_new(&bo, &b) < 0)
                        abort();
                o.budget = b;
                if (h2_new(&o, err, sizeof err, &s) < 0)
                        abort();
        }
        uint8_t *in = malloc(24 + size);
        if (!in)
                return 0;
        memcpy(in, preface, 24);
        if (size)
                memcpy(in + 24, data, size);
        h2_feed(s, in, 24 + size);
        free(in);
        struct budget_stats st;
        budget_stats_snapshot(b, &st);
        if (h2_inflight(s) != 0 || st.used != 0)
                abort();
        return 0;
}
