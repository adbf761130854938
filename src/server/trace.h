/* trace: W3C Trace Context (https://www.w3.org/TR/trace-context/) for a
 * request. A valid incoming traceparent joins the caller's trace: its
 * trace-id is kept, its parent-id is our parent, and the request gets a
 * span-id of its own; an invalid or missing one starts a new trace, as the
 * recommendation says. The answer carries traceparent with our span-id, so
 * a client sees which span served it; the access log carries both ids.
 * No transport here: HTTP hands header values, gRPC metadata values.
 *
 *   struct trace_ctx t;
 *   trace_begin(&t, header("traceparent"), header("tracestate"));
 *   char tp[TRACE_PARENT_LEN + 1];
 *   trace_format(&t, tp);                    // answer header "traceparent"
 *   log("trace_id=%s span_id=%s", t.trace_id_hex, t.span_id_hex);
 */
#ifndef EFFNET_SERVER_TRACE_H
#define EFFNET_SERVER_TRACE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TRACE_PARENT_LEN 55        /* "00-" 32 hex "-" 16 hex "-" 2 hex */
#define TRACE_STATE_MAX 512        /* the recommendation's bound on a tracestate value we keep */
#define TRACE_STATE_MEMBERS 32     /* list members at most */

/* A parsed traceparent. */
struct trace_parent {
        uint8_t version;
        uint8_t trace_id[16];
        uint8_t parent_id[8];
        uint8_t flags;              /* bit 0: sampled */
};

/* Parses a traceparent value strictly (version 00 exactly; a later version
 * by its version 00 prefix, followed by nothing or by '-'): lowercase hex
 * only, version ff, an all-zero trace-id or parent-id are invalid.
 * Returns 0, or -EBADMSG. Pure. */
int trace_parse_parent(const char *v, size_t len, struct trace_parent *ret_parent);

/* Whether a tracestate value is a valid list (keys, values, at most
 * TRACE_STATE_MEMBERS members, TRACE_STATE_MAX characters, no duplicate
 * key); empty list members (",,") and optional blanks around them are
 * allowed. Pure. */
bool trace_state_valid(const char *v, size_t len);

/* One request's trace. */
struct trace_ctx {
        uint8_t trace_id[16];
        uint8_t span_id[8];         /* ours: this request's span */
        uint8_t parent_id[8];       /* the caller's span; zero when we started the trace */
        uint8_t flags;              /* as received: sampled is the caller's choice, passed on */
        bool joined;                /* a valid traceparent came in */
        char trace_id_hex[33];
        char span_id_hex[17];
        char parent_id_hex[17];     /* "" when we started the trace */
        char state[TRACE_STATE_MAX + 1];  /* the caller's tracestate, when valid with a valid traceparent; "" */
};

/* The trace of a request with these header values (NULL when absent): the
 * caller's when traceparent is valid, a new one otherwise. Fresh ids come
 * from getrandom(). Never fails. Thread-safe. */
void trace_begin(struct trace_ctx *ret_ctx, const char *traceparent, const char *tracestate);

/* Whether a trace started here is recorded (spans exported): its
 * traceparent then says sampled (flags 01), so the caller's own tracing
 * knows the spans exist. Off by default; set once at start. */
void trace_record_new(bool on);

/* When a request reached each stage of its work in the pipeline
 * (CLOCK_MONOTONIC ns, time_now_ns; 0: never), for its spans (server/otlp.h). */
struct trace_stages {
        int64_t decode_ns;       /* its inputs handed to the pipeline: parse and decode on the worker pool */
        int64_t queue_ns;        /* handed to the batcher */
        int64_t infer_ns;        /* its first image went into a forward pass */
        int64_t done_ns;         /* the pipeline's completion fired */
};

/* Whether t's spans are recorded (server/otlp.h): the caller's choice
 * when it sent a traceparent (its sampled flag), always when the trace
 * started here. */
static inline bool trace_sampled(const struct trace_ctx *t)
{
        return !t->joined || (t->flags & 0x01);
}

/* "00-<trace-id>-<span-id>-<flags>" into buf (TRACE_PARENT_LEN + 1 bytes). */
void trace_format(const struct trace_ctx *t, char buf[TRACE_PARENT_LEN + 1]);

#endif
