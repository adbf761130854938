/* http_stats: the HTTP module's routes, statuses and counters as plain
 * data. They belong to the http module (server/http.h), which counts them;
 * they have a header of their own, with no libmicrohttpd, so that the
 * metrics module (server/metrics.h), in the core library, can label and
 * render them. Everything here is immutable.
 *
 *   struct http_stats st;
 *   http_stats_snapshot(server, &st);           // server/http.h
 *   for (int r = 0; r < HTTP_N_ROUTES; r++)
 *           for (int i = 0; i < HTTP_N_STATUSES; i++)
 *                   printf("%s %d %llu\n", http_route_path(r), http_status_at(i),
 *                          (unsigned long long)st.requests[r][i]);
 */
#ifndef EFFNET_SERVER_HTTP_STATS_H
#define EFFNET_SERVER_HTTP_STATS_H

#include <stdbool.h>
#include <stdint.h>

#include "api.h"

/* What a request is counted under: one per path, and one per path template
 * (the KServe v2 model name is a template: one series per route). The route
 * ids of server/routes.h's table. */
enum http_route {
        HTTP_ROUTE_CLASSIFY,
        HTTP_ROUTE_MODELS,
        HTTP_ROUTE_HEALTHZ,
        HTTP_ROUTE_READYZ,
        HTTP_ROUTE_METRICS,
        HTTP_ROUTE_UI,                  /* the try-it page, GET / */
        HTTP_ROUTE_UI_ASSET,            /* its script and style, GET /ui/... */
        HTTP_ROUTE_OTHER,               /* unknown paths */
        HTTP_ROUTE_MODEL_CLASSIFY,      /* POST /v1/models/{model}[/versions/{v}]/classify */
        HTTP_ROUTE_V2_SERVER,
        HTTP_ROUTE_V2_LIVE,
        HTTP_ROUTE_V2_READY,
        HTTP_ROUTE_V2_MODEL,
        HTTP_ROUTE_V2_MODEL_READY,
        HTTP_ROUTE_V2_MODEL_CONFIG,
        HTTP_ROUTE_V2_INFER,
        HTTP_ROUTE_V2_OTHER,            /* unknown paths under /v2 */
        HTTP_ROUTE_V2_REPO_INDEX,       /* POST /v2/repository/index */
        HTTP_ROUTE_V2_REPO_CONTROL,     /* POST /v2/repository/models/{model}/load, /unload */
        HTTP_N_ROUTES,
};

/* The path (or path template) of a route, as /metrics labels it. */
static inline const char *http_route_path(enum http_route r)
{
        static const char *const paths[HTTP_N_ROUTES] = {
                [HTTP_ROUTE_CLASSIFY] = "/v1/classify", [HTTP_ROUTE_MODELS] = "/v1/models",
                [HTTP_ROUTE_HEALTHZ] = "/healthz",      [HTTP_ROUTE_READYZ] = "/readyz",
                [HTTP_ROUTE_METRICS] = "/metrics",      [HTTP_ROUTE_OTHER] = "other",
                [HTTP_ROUTE_UI] = "/",                  [HTTP_ROUTE_UI_ASSET] = "/ui/{asset}",
                [HTTP_ROUTE_V2_SERVER] = "/v2",
                [HTTP_ROUTE_V2_LIVE] = "/v2/health/live",
                [HTTP_ROUTE_V2_READY] = "/v2/health/ready",
                [HTTP_ROUTE_V2_MODEL] = "/v2/models/{model}",
                [HTTP_ROUTE_V2_MODEL_READY] = "/v2/models/{model}/ready",
                [HTTP_ROUTE_V2_MODEL_CONFIG] = "/v2/models/{model}/config",
                [HTTP_ROUTE_V2_INFER] = "/v2/models/{model}/infer",
                [HTTP_ROUTE_V2_OTHER] = "other",
                [HTTP_ROUTE_MODEL_CLASSIFY] = "/v1/models/{model}/classify",
                [HTTP_ROUTE_V2_REPO_INDEX] = "/v2/repository/index",
                [HTTP_ROUTE_V2_REPO_CONTROL] = "/v2/repository/models/{model}/{action}",
        };
        return paths[r];
}

/* "v2" for the KServe v2 routes, "v1" for effnetd's own API. */
static inline const char *http_route_protocol(enum http_route r)
{
        return r >= HTTP_ROUTE_V2_SERVER ? "v2" : "v1";
}

/* The statuses the server answers with, in counter order: 500 last, as it
 * also counts any status not listed. */
#define HTTP_N_STATUSES 12

/* The status counted at index i, 0..HTTP_N_STATUSES-1. 499 is nginx's
 * "client closed request": an answer nobody received, counted only. */
static inline int http_status_at(int i)
{
        static const int statuses[HTTP_N_STATUSES] = { 200, 400, 401, 404, 405, 413, 415, 421, 499, 503, 504, 500 };
        return statuses[i];
}

/* The counter index of status (that of 500 for a status not listed). */
static inline int http_status_index(int status)
{
        for (int i = 0; i < HTTP_N_STATUSES - 1; i++)
                if (http_status_at(i) == status)
                        return i;
        return HTTP_N_STATUSES - 1;
}

/* The status an error is answered with. */
static inline int http_error_status(enum api_error e)
{
        switch (e) {
        case API_E_INVALID_ARGUMENT:
        case API_E_INVALID_IMAGE:
        case API_E_INVALID_MULTIPART:
        case API_E_INVALID_REQUEST: return 400;
        case API_E_UNAUTHENTICATED: return 401;
        case API_E_NOT_FOUND: return 404;
        case API_E_METHOD_NOT_ALLOWED: return 405;
        case API_E_MISDIRECTED: return 421;
        case API_E_TOO_LARGE: return 413;
        case API_E_UNSUPPORTED_MEDIA: return 415;
        case API_E_OVERLOADED:
        case API_E_DRAINING: return 503;
        case API_E_DEADLINE: return 504;
        case API_E_CLIENT_GONE: return 499;
        case API_E_INTERNAL:
        case API_E_NON_FINITE:
        case API_N_ERRORS: break;      /* no default: a new code must be given its status here */
        }
        return 500;
}

/* Request latency and queue wait histogram buckets. */
#define HTTP_LATENCY_BUCKETS 14

/* The upper bound (seconds) of bucket i, 0..HTTP_LATENCY_BUCKETS-1. */
static inline double http_latency_bound(int i)
{
        static const double bounds[HTTP_LATENCY_BUCKETS] = {
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30,
        };
        return bounds[i];
}

/* The bucket of an observation of v seconds (HTTP_LATENCY_BUCKETS: +Inf). */
static inline int http_latency_bucket(double v)
{
        int i = 0;
        while (i < HTTP_LATENCY_BUCKETS && v > http_latency_bound(i))
                i++;
        return i;
}

struct http_hist {
        uint64_t buckets[HTTP_LATENCY_BUCKETS + 1];   /* observations per bucket (not cumulative), +Inf last */
        double sum;                                   /* seconds */
};

/* The HTTP module's counters and gauges at one moment. */
struct http_stats {
        uint64_t requests[HTTP_N_ROUTES][HTTP_N_STATUSES];   /* answered, by route and http_status_index */
        uint64_t errors[API_N_ERRORS];         /* error answers, by code */
        struct http_hist latency[HTTP_N_ROUTES];   /* headers received -> answer queued */
        struct http_hist queue_wait;           /* submitted -> first image in a forward pass, per request */
        uint64_t images;                       /* images classified and answered */
        uint64_t connections;                  /* accepted since start */
        uint64_t connections_refused;          /* closed at accept: max-connections were open */
        uint64_t body_timeouts;                /* closed because the body took longer than body-timeout */
        uint64_t header_timeouts;              /* shut down because the headers took longer than header-timeout */
        uint64_t reloads, reload_failures;     /* http_count_reload */
        int retired_models;                    /* swapped out by reloads, still used by requests */
        int64_t answer_bytes;                  /* answers queued and not yet sent */
        int64_t memory_budget, memory_client_share;   /* the memory-budget and max-client-share settings */
        int64_t memory_charged;                /* charged to the budget now (server/budget.h) */
        uint64_t memory_refused, memory_refused_client;   /* charges refused: the budget, a client's share */
        int inflight;                          /* requests being served now */
        bool ready;                            /* not draining */
};

#endif
