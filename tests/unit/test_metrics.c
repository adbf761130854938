/* Unit test of the /metrics text (src/server/metrics.c) and of the HTTP
 * module's tables it labels with (src/server/http_stats.h): every family
 * typed once, each owner's snapshot in its series, cumulative histograms,
 * escaped labels, unknown process values left out; statuses, error
 * statuses, routes and latency buckets. */
#include "check.h"
#include "metrics.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The value of the sample whose line starts with `series ` in a Prometheus
 * text body; NAN when it is missing. */
static double sample(const char *body, const char *series)
{
        size_t n = strlen(series);
        for (const char *l = body; l && *l; l = strchr(l, '\n'), l = l ? l + 1 : NULL)
                if (strncmp(l, series, n) == 0 && l[n] == ' ')
                        return strtod(l + n + 1, NULL);
        return NAN;
}

/* A sample equals want (NAN, for a missing series, never does). */
#define CHECK_SAMPLE(body, series, want)                                             \
        do {                                                                         \
                double v_ = sample(body, series);                                    \
                CHECK_MSG(v_ == (want), "%s = %g, want %g", series, v_, (double)(want)); \
        } while (0)

#define CHECK_MISSING(body, series) CHECK_MSG(isnan(sample(body, series)), "%s is there", series)

/* Snapshots as the owners would give them, each value distinct. */
struct fixture {
        struct http_stats hs;
        struct batch_stats bs;
        struct wpool_stats ds;
        struct metrics_model m;
        struct proc_stats ps;
        struct metrics_sources src;
};

static void fixture_init(struct fixture *x)
{
        *x = (struct fixture){ 0 };
        x->m = (struct metrics_model){ .variant = "efficientnetv2-b0", .precision = "fp32",
                                       .weights = "w\"x\n.safetensors", .weights_sha256 = "ab", .labels = "index",
                                       .classes = 10, .input_size = 224 };
        x->ps = (struct proc_stats){ .rss_bytes = -1, .cpu_seconds = -1, .open_fds = -1, .max_fds = -1 };
        x->bs = (struct batch_stats){ .jobs = 7, .batches = 5, .batch_images = 11, .queue_capacity = 64,
                                      .max_batch = 4 };
        x->bs.batch_sizes[1] = 3;
        x->bs.batch_sizes[4] = 2;
        x->hs.requests[HTTP_ROUTE_CLASSIFY][http_status_index(200)] = 6;
        x->hs.requests[HTTP_ROUTE_CLASSIFY][http_status_index(503)] = 1;
        x->hs.latency[HTTP_ROUTE_CLASSIFY].buckets[0] = 2;
        x->hs.latency[HTTP_ROUTE_CLASSIFY].buckets[3] = 4;
        x->hs.latency[HTTP_ROUTE_CLASSIFY].buckets[HTTP_LATENCY_BUCKETS] = 1;
        x->hs.latency[HTTP_ROUTE_CLASSIFY].sum = 1.5;
        x->hs.ready = true;
        x->src = (struct metrics_sources){ .http = &x->hs, .batch = &x->bs, .decode = &x->ds, .model = &x->m,
                                           .process = &x->ps };
}

static char *render(const struct fixture *x)
{
        char *body = NULL;
        CHECK_EQ(metrics_render(&x->src, &body), 0);
        REQUIRE(body);
        return body;
}

/* Every family has one TYPE line, and every sample line a value. */
static void test_families(void)
{
        struct fixture x;
        fixture_init(&x);
        char *body = render(&x), *copy = strdup(body), *save = NULL;
        int types = 0;

        REQUIRE(copy);
        for (char *l = strtok_r(copy, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
                if (strncmp(l, "# TYPE ", 7) == 0) {
                        types++;
                        char name[128];
                        CHECK(sscanf(l + 7, "%127s", name) == 1);
                        char twice[160];
                        snprintf(twice, sizeof twice, "# TYPE %s ", name);
                        CHECK_MSG(strstr(strstr(body, twice) + 1, twice) == NULL, "%s typed twice", name);
                } else if (l[0] != '#') {
                        CHECK_MSG(strchr(l, ' ') != NULL, "bad sample line: %s", l);
                }
        }
        free(copy);
        CHECK_MSG(types > 20, "%d families", types);
        /* The label value with a quote and a newline is escaped. */
        CHECK_MSG(strstr(body, "w\\\"x\\n.safetensors") != NULL, "label not escaped");
        free(body);
}

/* Requests by route and status: the classify routes' 200 from the start,
 * other routes only once answered; the latency histogram is cumulative and
 * ends at the count. */
static void test_http_requests(void)
{
        struct fixture x;
        fixture_init(&x);
        x.hs.errors[API_E_DEADLINE] = 9;
        char *body = render(&x), series[256];
        const char *path = http_route_path(HTTP_ROUTE_CLASSIFY);
        double last = 0;

        CHECK_SAMPLE(body, "effnetd_http_requests_total{protocol=\"v1\",route=\"/v1/classify\",code=\"200\"}", 6);
        CHECK_SAMPLE(body, "effnetd_http_requests_total{protocol=\"v1\",route=\"/v1/classify\",code=\"503\"}", 1);
        CHECK_SAMPLE(body,
                     "effnetd_http_requests_total{protocol=\"v2\",route=\"/v2/models/{model}/infer\",code=\"200\"}", 0);
        CHECK_MISSING(body, "effnetd_http_requests_total{protocol=\"v1\",route=\"/healthz\",code=\"200\"}");
        snprintf(series, sizeof series, "effnetd_http_errors_total{code=\"%s\"}", api_error_code(API_E_DEADLINE));
        CHECK_SAMPLE(body, series, 9);
        for (int b = 0; b < HTTP_LATENCY_BUCKETS; b++) {
                char le[32];
                snprintf(le, sizeof le, "%g", http_latency_bound(b));
                snprintf(series, sizeof series,
                         "effnetd_http_request_duration_seconds_bucket{protocol=\"v1\",route=\"%s\",le=\"%s\"}",
                         path, le);
                double v = sample(body, series);
                CHECK_MSG(!isnan(v) && v >= last, "%s = %g after %g", series, v, last);
                last = v;
        }
        snprintf(series, sizeof series,
                 "effnetd_http_request_duration_seconds_bucket{protocol=\"v1\",route=\"%s\",le=\"+Inf\"}", path);
        CHECK_SAMPLE(body, series, 7);
        snprintf(series, sizeof series, "effnetd_http_request_duration_seconds_count{protocol=\"v1\",route=\"%s\"}",
                 path);
        CHECK_SAMPLE(body, series, 7);
        snprintf(series, sizeof series, "effnetd_http_request_duration_seconds_sum{protocol=\"v1\",route=\"%s\"}",
                 path);
        CHECK_SAMPLE(body, series, 1.5);
        free(body);
}

/* The batcher's snapshot: queue counters, and one batch-size bucket per
 * size up to max_batch, cumulative. */
static void test_batch(void)
{
        struct fixture x;
        fixture_init(&x);
        char *body = render(&x);

        CHECK_SAMPLE(body, "effnetd_batch_jobs_total", 7);
        CHECK_SAMPLE(body, "effnetd_batches_total", 5);
        CHECK_SAMPLE(body, "effnetd_queue_capacity_images", 64);
        CHECK_SAMPLE(body, "effnetd_batch_size_bucket{le=\"1\"}", 3);
        CHECK_SAMPLE(body, "effnetd_batch_size_bucket{le=\"3\"}", 3);
        CHECK_SAMPLE(body, "effnetd_batch_size_bucket{le=\"4\"}", 5);
        CHECK_MISSING(body, "effnetd_batch_size_bucket{le=\"5\"}");
        CHECK_SAMPLE(body, "effnetd_batch_size_bucket{le=\"+Inf\"}", 5);
        CHECK_SAMPLE(body, "effnetd_batch_size_sum", 11);
        CHECK_SAMPLE(body, "effnetd_batch_size_count", 5);
        free(body);
}

/* The decoding pool's snapshot and the server's own gauges and counters. */
static void test_decode_and_server(void)
{
        struct fixture x;
        fixture_init(&x);
        x.ds = (struct wpool_stats){ .threads = 3, .queue_capacity = 17, .queued = 2, .busy = 1, .jobs = 40,
                                   .rejected = 5 };
        x.hs.connections = 12, x.hs.connections_refused = 4, x.hs.body_timeouts = 2, x.hs.header_timeouts = 6;
        x.hs.retired_models = 1, x.hs.answer_bytes = 4096, x.hs.inflight = 8, x.hs.images = 99;
        x.hs.reloads = 2, x.hs.reload_failures = 1, x.hs.ready = false;
        x.hs.memory_budget = 1000, x.hs.memory_client_share = 500, x.hs.memory_charged = 321;
        x.hs.memory_refused = 7, x.hs.memory_refused_client = 3;
        char *body = render(&x);

        CHECK_SAMPLE(body, "effnetd_decode_threads", 3);
        CHECK_SAMPLE(body, "effnetd_decode_queue_capacity", 17);
        CHECK_SAMPLE(body, "effnetd_decode_queue_requests", 2);
        CHECK_SAMPLE(body, "effnetd_decode_busy_threads", 1);
        CHECK_SAMPLE(body, "effnetd_decode_requests_total", 40);
        CHECK_SAMPLE(body, "effnetd_decode_rejected_total", 5);
        CHECK_SAMPLE(body, "effnetd_http_connections_total", 12);
        CHECK_SAMPLE(body, "effnetd_http_connections_refused_total", 4);
        CHECK_SAMPLE(body, "effnetd_http_body_timeouts_total", 2);
        CHECK_SAMPLE(body, "effnetd_http_header_timeouts_total", 6);
        CHECK_SAMPLE(body, "effnetd_retired_models", 1);
        CHECK_SAMPLE(body, "effnetd_http_answer_bytes", 4096);
        CHECK_SAMPLE(body, "effnetd_http_inflight_requests", 8);
        CHECK_SAMPLE(body, "effnetd_images_total", 99);
        CHECK_SAMPLE(body, "effnetd_ready", 0);
        CHECK_SAMPLE(body, "effnetd_reloads_total{result=\"ok\"}", 2);
        CHECK_SAMPLE(body, "effnetd_reloads_total{result=\"error\"}", 1);
        CHECK_SAMPLE(body, "effnetd_model_classes", 10);
        CHECK_SAMPLE(body, "effnetd_memory_budget_bytes", 1000);
        CHECK_SAMPLE(body, "effnetd_memory_client_share_bytes", 500);
        CHECK_SAMPLE(body, "effnetd_memory_charged_bytes", 321);
        CHECK_SAMPLE(body, "effnetd_memory_refused_total{limit=\"budget\"}", 7);
        CHECK_SAMPLE(body, "effnetd_memory_refused_total{limit=\"client_share\"}", 3);
        free(body);
}

/* process_* series appear when known, and only then. */
static void test_process(void)
{
        struct fixture x;
        fixture_init(&x);
        char *body = render(&x);

        CHECK_MISSING(body, "process_resident_memory_bytes");
        CHECK_MISSING(body, "process_cpu_seconds_total");
        CHECK_MISSING(body, "process_open_fds");
        CHECK_MISSING(body, "process_max_fds");
        CHECK_MISSING(body, "process_start_time_seconds");
        free(body);
        x.ps = (struct proc_stats){ .rss_bytes = 1 << 20, .cpu_seconds = 2.5, .open_fds = 9, .max_fds = 1024,
                                    .start_time_seconds = 1700000000.5 };
        body = render(&x);
        CHECK_SAMPLE(body, "process_resident_memory_bytes", 1 << 20);
        CHECK_SAMPLE(body, "process_cpu_seconds_total", 2.5);
        CHECK_SAMPLE(body, "process_open_fds", 9);
        CHECK_SAMPLE(body, "process_max_fds", 1024);
        CHECK_SAMPLE(body, "process_start_time_seconds", 1700000000.5);
        free(body);
}

/* Each listed status has its own counter, anything else counts as 500;
 * every error is answered with a listed status. */
static void test_statuses(void)
{
        for (int i = 0; i < HTTP_N_STATUSES; i++) {
                CHECK_EQ(http_status_index(http_status_at(i)), i);
                for (int k = 0; k < i; k++)
                        CHECK_MSG(http_status_at(k) != http_status_at(i), "status %d twice", http_status_at(i));
        }
        CHECK_EQ(http_status_at(http_status_index(418)), 500);
        CHECK_EQ(http_status_at(http_status_index(500)), 500);
        for (int e = 0; e < API_N_ERRORS; e++) {
                int status = http_error_status((enum api_error)e);
                CHECK_MSG(status >= 400 && status < 600, "error %d: status %d", e, status);
                CHECK_EQ(http_status_at(http_status_index(status)), status);
        }
        CHECK_EQ(http_error_status(API_E_INVALID_IMAGE), 400);
        CHECK_EQ(http_error_status(API_E_NOT_FOUND), 404);
        CHECK_EQ(http_error_status(API_E_TOO_LARGE), 413);
        CHECK_EQ(http_error_status(API_E_NON_FINITE), 500);
        CHECK_EQ(http_error_status(API_E_OVERLOADED), 503);
        CHECK_EQ(http_error_status(API_E_DEADLINE), 504);
        CHECK_EQ(http_error_status(API_E_CLIENT_GONE), 499);
}

/* Routes label distinct series; a bound falls in its own bucket. */
static void test_routes_and_buckets(void)
{
        for (int r = 0; r < HTTP_N_ROUTES; r++) {
                const char *p = http_route_path((enum http_route)r);
                REQUIRE(p);
                for (int k = 0; k < r; k++)
                        CHECK_MSG(strcmp(p, http_route_path((enum http_route)k)) != 0 ||
                                          strcmp(http_route_protocol((enum http_route)r),
                                                 http_route_protocol((enum http_route)k)) != 0,
                                  "routes %d and %d share %s", k, r, p);
        }
        CHECK(strcmp(http_route_protocol(HTTP_ROUTE_METRICS), "v1") == 0);
        CHECK(strcmp(http_route_protocol(HTTP_ROUTE_V2_INFER), "v2") == 0);
        CHECK_EQ(http_latency_bucket(0), 0);
        for (int i = 0; i < HTTP_LATENCY_BUCKETS; i++) {
                CHECK_EQ(http_latency_bucket(http_latency_bound(i)), i);
                CHECK_EQ(http_latency_bucket(http_latency_bound(i) * 1.001), i + 1);
        }
        CHECK_EQ(http_latency_bucket(1e9), HTTP_LATENCY_BUCKETS);
}

/* API keys and TLS: their families only when they are on. */
static void test_security(void)
{
        struct fixture x;
        fixture_init(&x);
        char *body = render(&x);

        CHECK_MISSING(body, "effnetd_auth_failures_total{reason=\"missing\"}");
        CHECK_MISSING(body, "effnetd_tls_handshakes_total");
        free(body);
        struct auth_stats as = { .reloads = 2, .reload_failures = 1, .keys = 3 };
        as.failures[AUTH_MISSING] = 4;
        as.failures[AUTH_MALFORMED] = 5;
        as.failures[AUTH_INVALID] = 6;
        struct tls_stats ts = { .handshakes = 7, .client_cert_refused = 8, .reloads = 9, .reload_failures = 10,
                                .not_after = 1900000000 };
        x.src.auth = &as;
        x.src.tls = &ts;
        body = render(&x);
        CHECK_SAMPLE(body, "effnetd_auth_failures_total{reason=\"missing\"}", 4);
        CHECK_SAMPLE(body, "effnetd_auth_failures_total{reason=\"malformed\"}", 5);
        CHECK_SAMPLE(body, "effnetd_auth_failures_total{reason=\"invalid\"}", 6);
        CHECK_MISSING(body, "effnetd_auth_failures_total{reason=\"ok\"}");
        CHECK_SAMPLE(body, "effnetd_auth_keys", 3);
        CHECK_SAMPLE(body, "effnetd_auth_key_reloads_total{result=\"ok\"}", 2);
        CHECK_SAMPLE(body, "effnetd_auth_key_reloads_total{result=\"error\"}", 1);
        CHECK_SAMPLE(body, "effnetd_tls_handshakes_total", 7);
        CHECK_SAMPLE(body, "effnetd_tls_client_cert_refused_total", 8);
        CHECK_SAMPLE(body, "effnetd_tls_cert_reloads_total{result=\"ok\"}", 9);
        CHECK_SAMPLE(body, "effnetd_tls_cert_reloads_total{result=\"error\"}", 10);
        CHECK_SAMPLE(body, "effnetd_tls_cert_not_after_seconds", 1900000000);
        free(body);
}

int main(void)
{
        test_families();
        test_security();
        test_http_requests();
        test_batch();
        test_decode_and_server();
        test_process();
        test_statuses();
        test_routes_and_buckets();
        return CHECK_DONE();
}
