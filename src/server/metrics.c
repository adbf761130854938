/* metrics: the Prometheus text of /metrics, from the owners' snapshots. */
#include "metrics.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void put_head(FILE *f, const char *name, const char *type, const char *help)
{
        fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* A family of one unlabelled sample. */
static void put_one(FILE *f, const char *name, const char *type, const char *help, long long v)
{
        put_head(f, name, type, help);
        fprintf(f, "%s %lld\n", name, v);
}

static void put_counter(FILE *f, const char *name, const char *help, uint64_t v)
{
        put_head(f, name, "counter", help);
        fprintf(f, "%s %llu\n", name, (unsigned long long)v);
}

/* A label value with \, " and newline escaped (text format 0.0.4). */
static void put_label(FILE *f, const char *v)
{
        for (; v && *v; v++) {
                if (*v == '\\' || *v == '"')
                        fputc('\\', f), fputc(*v, f);
                else if (*v == '\n')
                        fputs("\\n", f);
                else
                        fputc(*v, f);
        }
}

/* One histogram series: cumulative buckets, sum, count. labels: "" or
 * "route=\"/x\"," (ends with a comma). counts: n + 1 (+Inf last). */
static void put_hist(FILE *f, const char *name, const char *labels, const double *bounds, int n,
                     const uint64_t *counts, double sum)
{
        uint64_t cum = 0;
        size_t ll = strlen(labels);

        for (int i = 0; i <= n; i++) {
                cum += counts[i];
                if (i < n)
                        fprintf(f, "%s_bucket{%sle=\"%g\"} %llu\n", name, labels, bounds[i], (unsigned long long)cum);
                else
                        fprintf(f, "%s_bucket{%sle=\"+Inf\"} %llu\n", name, labels, (unsigned long long)cum);
        }
        if (ll)
                fprintf(f, "%s_sum{%.*s} %.6f\n%s_count{%.*s} %llu\n", name, (int)ll - 1, labels, sum, name,
                        (int)ll - 1, labels, (unsigned long long)cum);
        else
                fprintf(f, "%s_sum %.6f\n%s_count %llu\n", name, sum, name, (unsigned long long)cum);
}

/* Answers by route and status (the classify routes' 200 always, so that a
 * rate has a series from the start), and error answers by code. */
static void put_http_requests(FILE *f, const struct http_stats *hs)
{
        put_head(f, "effnetd_http_requests_total", "counter",
                 "HTTP requests answered, by protocol (v1: effnetd's own API, v2: KServe), route and status.");
        for (int r = 0; r < HTTP_N_ROUTES; r++)
                for (int s = 0; s < HTTP_N_STATUSES; s++)
                        if (hs->requests[r][s] || ((r == HTTP_ROUTE_CLASSIFY || r == HTTP_ROUTE_V2_INFER) && s == 0))
                                fprintf(f,
                                        "effnetd_http_requests_total{protocol=\"%s\",route=\"%s\",code=\"%d\"} %llu\n",
                                        http_route_protocol((enum http_route)r), http_route_path((enum http_route)r),
                                        http_status_at(s), (unsigned long long)hs->requests[r][s]);
        put_head(f, "effnetd_http_errors_total", "counter", "Error answers, by error code.");
        for (int e = 0; e < API_N_ERRORS; e++)
                fprintf(f, "effnetd_http_errors_total{code=\"%s\"} %llu\n", api_error_code((enum api_error)e),
                        (unsigned long long)hs->errors[e]);
}

/* Request latency by route, and the queue wait of classify requests. */
static void put_http_latency(FILE *f, const struct http_stats *hs)
{
        double bounds[HTTP_LATENCY_BUCKETS];
        char labels[128];

        for (int i = 0; i < HTTP_LATENCY_BUCKETS; i++)
                bounds[i] = http_latency_bound(i);
        put_head(f, "effnetd_http_request_duration_seconds", "histogram",
                 "Time from request headers to the answer, by protocol and route.");
        for (int r = 0; r < HTTP_N_ROUTES; r++) {
                snprintf(labels, sizeof labels, "protocol=\"%s\",route=\"%s\",",
                         http_route_protocol((enum http_route)r), http_route_path((enum http_route)r));
                put_hist(f, "effnetd_http_request_duration_seconds", labels, bounds, HTTP_LATENCY_BUCKETS,
                         hs->latency[r].buckets, hs->latency[r].sum);
        }
        put_head(f, "effnetd_queue_wait_seconds", "histogram",
                 "Time a classify request waited in the queue before its first forward pass.");
        put_hist(f, "effnetd_queue_wait_seconds", "", bounds, HTTP_LATENCY_BUCKETS, hs->queue_wait.buckets,
                 hs->queue_wait.sum);
}

/* Forward passes: their time, and their images (one bucket per batch size). */
static void put_batch_passes(FILE *f, const struct batch_stats *bs)
{
        uint64_t cum = 0;

        put_head(f, "effnetd_inference_seconds", "histogram", "Time of one forward pass (a batch).");
        put_hist(f, "effnetd_inference_seconds", "", batch_forward_bounds, BATCH_FORWARD_BUCKETS, bs->forward_hist,
                 bs->forward_seconds);
        put_head(f, "effnetd_batch_size", "histogram", "Images per forward pass.");
        for (int k = 1; k <= bs->max_batch && k <= BATCH_MAX_BATCH; k++) {
                cum += bs->batch_sizes[k];
                fprintf(f, "effnetd_batch_size_bucket{le=\"%d\"} %llu\n", k, (unsigned long long)cum);
        }
        fprintf(f,
                "effnetd_batch_size_bucket{le=\"+Inf\"} %llu\n"
                "effnetd_batch_size_sum %llu\n"
                "effnetd_batch_size_count %llu\n",
                (unsigned long long)cum, (unsigned long long)bs->batch_images, (unsigned long long)bs->batches);
}

static void put_http_connections(FILE *f, const struct http_stats *hs)
{
        put_counter(f, "effnetd_http_connections_total", "Connections accepted.", hs->connections);
        put_counter(f, "effnetd_http_connections_refused_total",
                    "Connections closed as soon as they were accepted, because max-connections were open.",
                    hs->connections_refused);
        put_counter(f, "effnetd_http_body_timeouts_total",
                    "Connections closed because the request body took longer than body-timeout.", hs->body_timeouts);
        put_counter(f, "effnetd_http_header_timeouts_total",
                    "Connections shut down because a request line and headers took longer than header-timeout.",
                    hs->header_timeouts);
}

static void put_decode(FILE *f, const struct wpool_stats *ds)
{
        put_one(f, "effnetd_decode_threads", "gauge", "Image decoding threads.", ds->threads);
        put_one(f, "effnetd_decode_queue_capacity", "gauge", "Requests that may wait for a decoding thread.",
                ds->queue_capacity);
        put_one(f, "effnetd_decode_queue_requests", "gauge", "Requests waiting for a decoding thread.", ds->queued);
        put_one(f, "effnetd_decode_busy_threads", "gauge", "Decoding threads at work.", ds->busy);
        put_counter(f, "effnetd_decode_requests_total", "Requests whose images were decoded (or failed to).",
                    ds->jobs);
        put_counter(f, "effnetd_decode_rejected_total",
                    "Requests answered 503 because the decode queue was full (decode-queue).", ds->rejected);
}

/* The server's state: generations, answers held, requests, reloads. */
static void put_server(FILE *f, const struct http_stats *hs)
{
        put_one(f, "effnetd_retired_models", "gauge",
                "Models swapped out by a reload and still held by requests in flight.", hs->retired_models);
        put_one(f, "effnetd_http_answer_bytes", "gauge", "Bytes of answers queued and not yet sent to their clients.",
                hs->answer_bytes);
        put_one(f, "effnetd_http_inflight_requests", "gauge", "Requests being served.", hs->inflight);
        put_one(f, "effnetd_memory_budget_bytes", "gauge",
                "Memory that requests may hold in all (memory-budget).", hs->memory_budget);
        put_one(f, "effnetd_memory_client_share_bytes", "gauge",
                "Memory that the requests of one client address may hold (max-client-share).",
                hs->memory_client_share);
        put_one(f, "effnetd_memory_charged_bytes", "gauge",
                "Memory held by requests now: bodies, decoded images, outputs, answers not yet read.",
                hs->memory_charged);
        put_head(f, "effnetd_memory_refused_total", "counter",
                 "Requests refused (503) because their memory did not fit, by what was full.");
        fprintf(f, "effnetd_memory_refused_total{limit=\"budget\"} %llu\n"
                "effnetd_memory_refused_total{limit=\"client_share\"} %llu\n",
                (unsigned long long)hs->memory_refused, (unsigned long long)hs->memory_refused_client);
        put_counter(f, "effnetd_images_total", "Images classified and answered.", hs->images);
        put_one(f, "effnetd_ready", "gauge", "Whether the server takes requests (1) or is draining (0).",
                hs->ready ? 1 : 0);
        put_head(f, "effnetd_reloads_total", "counter", "Weight reloads (SIGHUP), by result.");
        fprintf(f, "effnetd_reloads_total{result=\"ok\"} %llu\neffnetd_reloads_total{result=\"error\"} %llu\n",
                (unsigned long long)hs->reloads, (unsigned long long)hs->reload_failures);
}

/* The batch queue: jobs by outcome, passes, depth and workers. */
static void put_batch_queue(FILE *f, const struct batch_stats *bs)
{
        put_counter(f, "effnetd_batch_jobs_total", "Jobs (requests) accepted by the batch queue.", bs->jobs);
        put_counter(f, "effnetd_batch_jobs_rejected_total", "Jobs refused because the queue was full.",
                    bs->jobs_rejected);
        put_counter(f, "effnetd_batch_jobs_timed_out_total", "Jobs dropped before inference past their deadline.",
                    bs->jobs_timed_out);
        put_counter(f, "effnetd_batch_jobs_failed_total", "Jobs whose forward pass failed.", bs->jobs_failed);
        put_counter(f, "effnetd_batches_total", "Forward passes.", bs->batches);
        put_counter(f, "effnetd_batch_images_total", "Images in forward passes.", bs->batch_images);
        put_one(f, "effnetd_queue_images", "gauge", "Images waiting for a worker (queue depth).", bs->queue_images);
        put_one(f, "effnetd_queue_capacity_images", "gauge", "Capacity of the queue.", bs->queue_capacity);
        put_one(f, "effnetd_busy_workers", "gauge", "Workers inside a forward pass.", bs->busy_workers);
}

/* What is served, and by which build. */
/* effnetd_model{,_*}'s labels: model="..",version="..". */
static void put_model_labels(FILE *f, const struct metrics_model *m)
{
        fprintf(f, "model=\"");
        put_label(f, m->name ? m->name : m->variant);
        fprintf(f, "\",version=\"%lld\"", m->version > 0 ? m->version : 1);
}

/* One counter or gauge per model version. */
static void put_per_model(FILE *f, const char *name, const char *type, const char *help,
                          const struct metrics_model *models, int n, double (*value)(const struct metrics_model *))
{
        put_head(f, name, type, help);
        for (int i = 0; i < n; i++) {
                fprintf(f, "%s{", name);
                put_model_labels(f, &models[i]);
                fprintf(f, "} %.17g\n", value(&models[i]));
        }
}

static double v_images(const struct metrics_model *m) { return m->batch ? (double)m->batch->batch_images : 0; }
static double v_passes(const struct metrics_model *m) { return m->batch ? (double)m->batch->batches : 0; }
static double v_seconds(const struct metrics_model *m) { return m->batch ? m->batch->forward_seconds : 0; }
static double v_queue(const struct metrics_model *m) { return m->batch ? m->batch->queue_images : 0; }
static double v_rejected(const struct metrics_model *m) { return m->batch ? (double)m->batch->jobs_rejected : 0; }
static double v_exec(const struct metrics_model *m) { return (double)m->executor_bytes; }
static double v_threads(const struct metrics_model *m) { return m->threads; }

static void put_model(FILE *f, const struct metrics_model *models, int n)
{
        put_head(f, "effnetd_model_info", "gauge", "The model versions being served (value 1).");
        for (int i = 0; i < n; i++) {
                const struct metrics_model *m = &models[i];
                fprintf(f, "effnetd_model_info{");
                put_model_labels(f, m);
                fprintf(f, ",variant=\"");
                put_label(f, m->variant);
                fprintf(f, "\",precision=\"");
                put_label(f, m->precision);
                fprintf(f, "\",classes=\"%d\",input_size=\"%d\",weights=\"", m->classes, m->input_size);
                put_label(f, m->weights);
                fprintf(f, "\",weights_sha256=\"");
                put_label(f, m->weights_sha256);
                fprintf(f, "\",labels=\"");
                put_label(f, m->labels);
                fprintf(f, "\"} 1\n");
        }
        if (n == 1)
                put_one(f, "effnetd_model_classes", "gauge", "Output classes of the model being served.",
                        models[0].classes);
        put_per_model(f, "effnetd_model_images_total", "counter", "Images through forward passes, by model version.",
                      models, n, v_images);
        put_per_model(f, "effnetd_model_batches_total", "counter", "Forward passes, by model version.", models, n,
                      v_passes);
        put_per_model(f, "effnetd_model_inference_seconds_total", "counter",
                      "Time in forward passes, by model version.", models, n, v_seconds);
        put_per_model(f, "effnetd_model_queue_images", "gauge", "Images waiting for a worker, by model version.",
                      models, n, v_queue);
        put_per_model(f, "effnetd_model_rejected_total", "counter",
                      "Jobs refused by a full queue, by model version.", models, n, v_rejected);
        put_per_model(f, "effnetd_model_executor_bytes", "gauge",
                      "Scratch memory of the executors, by model version.", models, n, v_exec);
        put_per_model(f, "effnetd_model_threads", "gauge",
                      "Inference threads (workers x threads per worker), by model version: its share of the CPUs.",
                      models, n, v_threads);
        put_head(f, "effnetd_build_info", "gauge", "effnetd's version (value 1).");
        fprintf(f, "effnetd_build_info{version=\"%s\",compiler=\"%s\"} 1\n", EFFNET_VERSION,
#ifdef __VERSION__
                "gcc-compatible " __VERSION__
#else
                "unknown"
#endif
        );
}

/* The standard process_* families, each left out when unknown. */
static void put_process(FILE *f, const struct proc_stats *p)
{
        if (p->rss_bytes >= 0)
                put_one(f, "process_resident_memory_bytes", "gauge", "Resident memory size in bytes.", p->rss_bytes);
        if (p->cpu_seconds >= 0) {
                put_head(f, "process_cpu_seconds_total", "counter", "Total user and system CPU time spent in seconds.");
                fprintf(f, "process_cpu_seconds_total %.2f\n", p->cpu_seconds);
        }
        if (p->open_fds >= 0)
                put_one(f, "process_open_fds", "gauge", "Number of open file descriptors.", p->open_fds);
        if (p->max_fds >= 0)
                put_one(f, "process_max_fds", "gauge", "Maximum number of open file descriptors.", p->max_fds);
        if (p->start_time_seconds > 0) {
                put_head(f, "process_start_time_seconds", "gauge",
                         "Start time of the process since unix epoch in seconds.");
                fprintf(f, "process_start_time_seconds %.2f\n", p->start_time_seconds);
        }
}

/* The span export (otlp-endpoint): what reached the collector and what
 * was dropped rather than make a request wait. */
static void put_otlp(FILE *f, const struct otlp_stats *os)
{
        if (!os)
                return;
        put_head(f, "effnetd_otlp_spans_exported_total", "counter", "Spans the OTLP collector accepted.");
        fprintf(f, "effnetd_otlp_spans_exported_total %llu\n", os->spans_exported);
        put_head(f, "effnetd_otlp_spans_dropped_total", "counter",
                 "Spans dropped: the export queue was full (otlp-queue), or their batch failed every attempt.");
        fprintf(f, "effnetd_otlp_spans_dropped_total %llu\n", os->spans_dropped);
        put_head(f, "effnetd_otlp_export_failures_total", "counter",
                 "Posts to the OTLP collector that failed (connection, timeout, an answer other than 2xx).");
        fprintf(f, "effnetd_otlp_export_failures_total %llu\n", os->export_failures);
        put_head(f, "effnetd_otlp_queue_requests", "gauge", "Requests whose spans wait for export.");
        fprintf(f, "effnetd_otlp_queue_requests %d\n", os->queued);
}

/* The gRPC service (protocol "grpc"): requests by method and status code,
 * their time, and its transport's connections and refusals. */
static void put_grpc(FILE *f, const struct grpc_stats *gs)
{
        if (!gs)
                return;
        put_head(f, "effnetd_grpc_requests_total", "counter",
                 "gRPC requests answered (KServe v2 GRPCInferenceService; each request of a stream counts), by "
                 "method and gRPC status code.");
        for (int m = 0; m < GRPC_N_METHODS; m++)
                for (int c = 0; c < GRPC_N_CODES; c++)
                        if (gs->requests[m][c] || (m == GRPC_MODEL_INFER && c == 0))
                                fprintf(f, "effnetd_grpc_requests_total{protocol=\"grpc\",method=\"%s\",code=\"%s\"} "
                                        "%llu\n", grpc_method_name((enum grpc_method)m), grpc_code_name(c),
                                        (unsigned long long)gs->requests[m][c]);
        put_head(f, "effnetd_grpc_request_seconds_total", "counter",
                 "Time from a gRPC request's message to its answer, summed, by method.");
        for (int m = 0; m < GRPC_N_METHODS; m++)
                fprintf(f, "effnetd_grpc_request_seconds_total{protocol=\"grpc\",method=\"%s\"} %.6f\n",
                        grpc_method_name((enum grpc_method)m), gs->seconds[m]);
        put_head(f, "effnetd_grpc_images_total", "counter", "Images classified and answered over gRPC.");
        fprintf(f, "effnetd_grpc_images_total %llu\n", (unsigned long long)gs->images);
        put_head(f, "effnetd_grpc_connections_total", "counter", "gRPC connections accepted since start.");
        fprintf(f, "effnetd_grpc_connections_total %llu\n", (unsigned long long)gs->connections);
        put_head(f, "effnetd_grpc_connections", "gauge", "gRPC connections open now.");
        fprintf(f, "effnetd_grpc_connections %d\n", gs->connections_open);
        put_head(f, "effnetd_grpc_refusals_total", "counter",
                 "gRPC connections and streams refused or cut by a limit, by reason.");
        fprintf(f, "effnetd_grpc_refusals_total{reason=\"max_connections\"} %llu\n",
                (unsigned long long)gs->connections_refused);
        fprintf(f, "effnetd_grpc_refusals_total{reason=\"timeout\"} %llu\n", (unsigned long long)gs->timeouts);
        fprintf(f, "effnetd_grpc_refusals_total{reason=\"streams_or_headers\"} %llu\n",
                (unsigned long long)gs->streams_refused);
        fprintf(f, "effnetd_grpc_refusals_total{reason=\"message_size\"} %llu\n",
                (unsigned long long)gs->messages_too_large);
        fprintf(f, "effnetd_grpc_refusals_total{reason=\"protocol_error\"} %llu\n",
                (unsigned long long)gs->protocol_errors);
        fprintf(f, "effnetd_grpc_refusals_total{reason=\"tls_handshake\"} %llu\n",
                (unsigned long long)gs->tls_failures);
        put_head(f, "effnetd_grpc_inflight", "gauge", "gRPC calls being served now.");
        fprintf(f, "effnetd_grpc_inflight %d\n", gs->inflight);
}

/* API keys and TLS, when they are on. */
static void put_security(FILE *f, const struct auth_stats *a, const struct tls_stats *t)
{
        if (a) {
                put_head(f, "effnetd_auth_failures_total", "counter",
                         "Requests refused for their API key (401), by reason.");
                for (int v = AUTH_OK + 1; v < AUTH_N_VERDICTS; v++)
                        fprintf(f, "effnetd_auth_failures_total{reason=\"%s\"} %llu\n", auth_verdict_name(v),
                                (unsigned long long)a->failures[v]);
                put_one(f, "effnetd_auth_keys", "gauge", "API keys in the key file in use.", a->keys);
                put_head(f, "effnetd_auth_key_reloads_total", "counter", "Key file reads on SIGHUP, by result.");
                fprintf(f, "effnetd_auth_key_reloads_total{result=\"ok\"} %llu\n"
                        "effnetd_auth_key_reloads_total{result=\"error\"} %llu\n",
                        (unsigned long long)a->reloads, (unsigned long long)a->reload_failures);
        }
        if (t) {
                put_counter(f, "effnetd_tls_handshakes_total", "TLS handshakes given the server's certificate.",
                            t->handshakes);
                put_counter(f, "effnetd_tls_client_cert_refused_total",
                            "TLS handshakes refused for the client's certificate (mutual TLS).", t->client_cert_refused);
                put_head(f, "effnetd_tls_cert_reloads_total", "counter",
                         "Certificate and key reads on SIGHUP, by result.");
                fprintf(f, "effnetd_tls_cert_reloads_total{result=\"ok\"} %llu\n"
                        "effnetd_tls_cert_reloads_total{result=\"error\"} %llu\n",
                        (unsigned long long)t->reloads, (unsigned long long)t->reload_failures);
                put_one(f, "effnetd_tls_cert_not_after_seconds", "gauge",
                        "Expiry of the certificate served, Unix time in seconds.", (long long)t->not_after);
        }
}

int metrics_render(const struct metrics_sources *src, char **ret_body)
{
        char *buf = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&buf, &len);

        if (!f)
                return -ENOMEM;
        put_http_requests(f, src->http);
        put_http_latency(f, src->http);
        put_batch_passes(f, src->batch);
        put_http_connections(f, src->http);
        put_decode(f, src->decode);
        put_server(f, src->http);
        put_batch_queue(f, src->batch);
        if (src->models)
                put_model(f, src->models, src->n_models);
        else
                put_model(f, src->model, src->model ? 1 : 0);
        put_process(f, src->process);
        put_grpc(f, src->grpc);
        put_security(f, src->auth, src->tls);
        put_otlp(f, src->otlp);
        if (fclose(f) != 0 || !buf) {
                free(buf);
                return -ENOMEM;
        }
        *ret_body = buf;
        return 0;
}
