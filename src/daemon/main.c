/* effnetd: the EfficientNetV2 classification daemon (settings, start-up,
 * logging, signals). */
#include "common/util.h"
#include "daemon/config.h"
#include "effnet.h"
#include "server/api.h"
#include "server/batcher.h"
#include "server/http.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

static const char *prog = "effnetd";

static void usage(FILE *f)
{
        fprintf(f,
                "Usage: %s --weights FILE [--listen 127.0.0.1:8080] [OPTIONS]\n"
                "\n"
                "Serves EfficientNetV2 image classification over HTTP:\n"
                "  POST /v1/classify[?top_k=K]  (image/jpeg, image/png or multipart/form-data)\n"
                "  GET  /v1/models, /healthz, /readyz, /metrics\n"
                "\n"
                "Options (each also from the environment variable shown):\n",
                prog);
        conf_usage(f);
        fprintf(f, "  --help, --version\n");
}

static void log_line(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void log_line(const char *fmt, ...)
{
        char buf[1024];
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(buf, sizeof buf, fmt, ap);
        va_end(ap);
        /* One write per line, so that lines of several threads do not mix. */
        fprintf(stderr, "%s: %s\n", prog, buf);
}

static void on_access(void *userdata, const struct http_access *a)
{
        log_line("%s \"%s %s\" %d%s%s images=%d bytes=%zu ms=%.1f", a->client, a->method, a->path, a->status,
                 a->error ? " " : "", a->error ? a->error : "", a->images, a->body_bytes, a->ms);
}

static void on_http_error(void *userdata, const char *fmt, va_list ap)
{
        char buf[512];

        vsnprintf(buf, sizeof buf, fmt, ap);
        size_t n = strlen(buf);
        while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
                buf[--n] = '\0';
        log_line("http: %s", buf);
}

/* Enough descriptors for the connection limit, as far as the hard limit
 * allows. */
static void raise_fd_limit(int64_t connections)
{
        struct rlimit rl;

        if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
                return;
        rlim_t want = (rlim_t)connections + 64;
        if (rl.rlim_cur >= want)
                return;
        rl.rlim_cur = rl.rlim_max == RLIM_INFINITY || rl.rlim_max >= want ? want : rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < want)
                log_line("warning: %llu file descriptors for up to %lld connections",
                         (unsigned long long)rl.rlim_cur, (long long)connections);
}

static void sleep_ms(int ms)
{
        struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000 };
        nanosleep(&ts, NULL);
}

int main(int argc, char **argv)
{
        struct conf c = { 0 };
        struct effnet_model *model = NULL;
        struct api_labels *labels = NULL;
        struct batch *batch = NULL;
        struct http_server *http = NULL;
        char err[512];
        sigset_t sigs;
        int r, sig = 0;

        for (int i = 1; i < argc; i++) {
                if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
                        usage(stdout);
                        return 0;
                }
                if (strcmp(argv[i], "--version") == 0) {
                        printf("effnetd %s\n", EFFNET_VERSION);
                        return 0;
                }
        }
        if (conf_load(argc, argv, &c, err, sizeof err) < 0) {
                log_line("%s", err);
                return 2;
        }

        /* Signals go to the main thread's sigwait; every thread started from
         * here on inherits the mask. */
        sigemptyset(&sigs);
        sigaddset(&sigs, SIGTERM);
        sigaddset(&sigs, SIGINT);
        pthread_sigmask(SIG_BLOCK, &sigs, NULL);
        signal(SIGPIPE, SIG_IGN);
        raise_fd_limit(c.max_connections);
        fprintf(stderr, "%s: settings: ", prog);
        conf_print(stderr, &c);

        struct effnet_open_opts oo = { .padding = (int)c.padding, .bn_eps = (float)c.bn_eps };
        int64_t t0 = time_now_ns();
        if ((r = effnet_model_open(c.weights, &oo, err, sizeof err, &model)) < 0) {
                log_line("%s", err);
                goto out;
        }
        const struct effnet_info *info = effnet_model_info(model);
        if ((r = api_labels_load(c.labels, info->classes, err, sizeof err, &labels)) < 0) {
                log_line("%s", err);
                goto out;
        }
        log_line("model %s: %s, %d classes, input %d, %s weights, labels %s", c.weights, info->variant,
                 info->classes, info->preproc.size, info->dtype, api_labels_source(labels));

        struct batch_opts bo = {
                .max_batch = (int)c.max_batch,
                .max_delay_us = (int64_t)(c.max_delay_ms * 1000.0),
                .queue_images = (int)c.queue,
                .workers = (int)c.workers,
                .threads = (int)c.threads,
                .precision = (int)c.precision,
        };
        if ((r = batch_new(model, &bo, err, sizeof err, &batch)) < 0) {
                log_line("%s", err);
                goto out;
        }
        struct batch_config bc;
        batch_get_config(batch, &bc);
        log_line("%d worker(s) x %d thread(s) of %d usable CPUs, %s, batch sizes up to %d, ready in %.0f ms "
                 "(%.0f MB of executor memory)",
                 bc.workers, bc.threads, cpu_usable_count(), c.precision ? "bf16" : "fp32", bc.max_batch,
                 (double)(time_now_ns() - t0) / 1e6, (double)bc.exec_bytes / (1024.0 * 1024.0));

        struct http_opts ho = {
                .listen = c.listen,
                .threads = (int)c.http_threads,
                .max_connections = (int)c.max_connections,
                .connection_timeout_s = (int)c.connection_timeout,
                .max_body_bytes = c.max_body_bytes,
                .max_body_total = c.max_body_total,
                .max_images = (int)c.max_images,
                .deadline_ms = c.deadline_ms,
                .retry_after_s = (int)c.retry_after,
                .img = IMG_OPTS_DEFAULT,
                .weights = c.weights,
                .access_log = c.access_log ? on_access : NULL,
                .error_log = on_http_error,
        };
        ho.img.limits.max_bytes = (size_t)c.max_body_bytes;
        ho.img.limits.max_pixels = c.max_pixels;
        ho.img.jpeg_fast = c.jpeg_fast;
        if ((r = http_new(&ho, model, batch, labels, err, sizeof err, &http)) < 0) {
                log_line("%s", err);
                goto out;
        }
        log_line("listening on %s", http_url(http));

        while (sigwait(&sigs, &sig) != 0)
                ;
        log_line("%s: draining (%d requests in flight)", sig == SIGTERM ? "SIGTERM" : "SIGINT",
                 http_inflight(http));
        http_drain(http);
        /* Requests waiting for inference always finish (result or deadline);
         * only slow readers of answers are cut off after drain-timeout. */
        int64_t until = time_now_ns() + c.drain_timeout * 1000000000;
        while (http_waiting(http) > 0 || (http_inflight(http) > 0 && time_now_ns() < until))
                sleep_ms(10);
        if (http_inflight(http) > 0)
                log_line("closing %d connection(s) still sending answers", http_inflight(http));
        r = 0;
out:
        http = http_free(http);
        batch = batch_free(batch);
        labels = api_labels_free(labels);
        model = effnet_model_free(model);
        if (r == 0)
                log_line("stopped");
        conf_free(&c);
        return r < 0 ? 1 : 0;
}
