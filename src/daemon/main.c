/* effnetd: the EfficientNetV2 classification daemon. main() runs its
 * phases in order: settings, process set-up, model, listeners, serving
 * (signals, SIGHUP reloads through daemon/reload.h), drain, teardown. */
#include "util.h"
#include "config.h"
#include "cpushare.h"
#include "log.h"
#include "reload.h"
#include "service.h"
#include "trace.h"
#include "effnet.h"
#include "hub.h"
#include "weights.h"
#include "api.h"
#include "batcher.h"
#include "http.h"
#include "pipeline.h"
#include "registry.h"
#include "repository.h"
#include "hosts.h"
#include "kserve.h"
#include "otlp.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#define STATUS_PERIOD_NS ((int64_t)5 * 1000000000)   /* STATUS= refresh */

static const char *prog = "effnetd";

static void usage(FILE *f)
{
        fprintf(f,
                "Usage: %s [--config FILE] [--weights FILE|hf://ORG/NAME[@REV][/FILE] | --model-repository DIR]\n"
                "       [--listen 127.0.0.1:8080] [OPTIONS]\n"
                "       %s --check-config | --print-config [OPTIONS]\n"
                "\n"
                "Serves EfficientNetV2 image classification over HTTP:\n"
                "  POST /v1/classify[?top_k=K]  (image/jpeg, image/png or multipart/form-data)\n"
                "  POST /v1/models/{model}/classify, /v1/models/{model}/versions/{version}/classify\n"
                "  GET  /v1/models, /healthz, /readyz, /metrics\n"
                "  GET  /  the try-it page in a browser (and /ui/app.js, /ui/app.css; --no-ui: off)\n"
                "KServe v2 / Open Inference Protocol (with Triton's binary data, classification\n"
                "and model configuration extensions):\n"
                "  GET  /v2, /v2/health/live, /v2/health/ready\n"
                "  GET  /v2/models/{model}[/versions/1][/ready|/config]\n"
                "  POST /v2/models/{model}[/versions/1]/infer\n"
                "  (with a model repository, any version it serves)\n"
                "Triton's model repository extension:\n"
                "  POST /v2/repository/index, /v2/repository/models/{model}/load and .../unload\n"
                "\n"
                "Settings come from the config file, then EFFNETD_* environment variables,\n"
                "then flags (each later source wins). SIGHUP reloads the [model] settings\n"
                "and the weights (with a model repository: rescans it); SIGTERM drains and exits.\n"
                "\n"
                "Options:\n",
                prog, prog);
        conf_usage(f);
        fprintf(f, "  --check-config               validate the settings (and that the files exist), then exit\n"
                   "  --print-config               print the settings in effect and where each came from\n"
                   "  --help, --version\n");
}

/* A download of hf:// weights, in the log and in STATUS=: a start or a
 * reload that waits on the network says so, and the service is not ready
 * (nor listening) until the model is loaded. */
struct pull_log {
        const char *uri;
        int64_t deadline_s;        /* hub-download-deadline */
        int64_t last_log_ns, last_status_ns;
        int last_tenth;
};

#define PULL_LOG_PERIOD_NS ((int64_t)10 * 1000000000)
#define PULL_STATUS_PERIOD_NS ((int64_t)1000000000)
/* Each sign of progress gives the start this much more time under systemd,
 * but while bytes arrive never more than to the download's deadline (and
 * a margin for the failure to be logged): a server that trickles bytes
 * cannot keep the service starting past hub-download-deadline. The end of
 * the download gives the time to check the file (a sha256 of up to 8 GiB). */
#define PULL_EXTEND_USEC ((int64_t)60 * 1000000)
#define PULL_DEADLINE_MARGIN_USEC ((int64_t)10 * 1000000)
#define PULL_CHECK_USEC ((int64_t)60 * 1000000)
#define HUB_DEADLINE_SETTING "hub-download-deadline"

/* How much longer the start may take, given the download's deadline. */
static uint64_t pull_extension_usec(const struct hub_progress *p, int64_t now_ns)
{
        int64_t until = (p->deadline_ns - now_ns) / 1000 + PULL_DEADLINE_MARGIN_USEC;

        if (p->finished)
                return (uint64_t)PULL_CHECK_USEC;
        if (until < 0)
                until = 0;
        return (uint64_t)(until < PULL_EXTEND_USEC ? until : PULL_EXTEND_USEC);
}

static void on_pull_progress(void *userdata, const struct hub_progress *p)
{
        struct pull_log *pl = userdata;
        int64_t now = time_now_ns();
        double mb = (double)p->done / 1e6, total = (double)p->total / 1e6;
        int tenth = p->total > 0 ? (int)(p->done * 10 / p->total) : 10;

        if (p->started) {
                char resuming[64] = "";
                if (p->resumed > 0)
                        snprintf(resuming, sizeof resuming, ", resuming at %.1f MB", mb);
                log_msg(LOG_INFO, "weights %s: downloading %.1f MB from %s into %s%s; gives up after %lld s "
                        "(" HUB_DEADLINE_SETTING ")", pl->uri, total, p->url, p->blob, resuming,
                        (long long)pl->deadline_s);
                pl->last_log_ns = now;
                pl->last_tenth = tenth;
        } else if (p->finished) {
                log_msg(LOG_INFO, "weights %s: downloaded %.1f MB, checking it", pl->uri, total);
        } else if (tenth > pl->last_tenth || now - pl->last_log_ns >= PULL_LOG_PERIOD_NS) {
                log_msg(LOG_INFO, "weights %s: downloading, %.0f%% (%.1f of %.1f MB)", pl->uri,
                        p->total > 0 ? 100.0 * (double)p->done / (double)p->total : 100.0, mb, total);
                pl->last_log_ns = now;
                pl->last_tenth = tenth;
        }
        if (p->started || p->finished || now - pl->last_status_ns >= PULL_STATUS_PERIOD_NS) {
                service_notify_status("not ready: downloading weights %s, %.1f of %.1f MB", pl->uri, mb, total);
                uint64_t more = pull_extension_usec(p, now);
                if (more > 0)
                        service_extend_timeout(more);
                pl->last_status_ns = now;
        }
}

/* The local file of the weights setting: the file itself, or for
 * hf://ORG/NAME[@REVISION][/FILE] the hub cache's snapshot, downloaded
 * first when it is not there, with the repository's config.json
 * (hub/weights.h), the download in the log and in STATUS=. */
static int weights_open(const struct conf *c, struct weights_file *wf, char *err, size_t err_len)
{
        int64_t deadline_s = c->hub_download_deadline_us / PARSE_S;
        struct pull_log pl = { .uri = c->weights, .deadline_s = deadline_s };
        struct hub_opts o = { .progress = on_pull_progress, .userdata = &pl, .deadline_s = deadline_s,
                              .deadline_name = HUB_DEADLINE_SETTING };
        int r;

        if ((r = weights_resolve(c->weights, &o, err, err_len, wf)) < 0)
                return r;
        if (wf->hub)
                log_msg(LOG_INFO, "weights %s: commit %s, %s (%s)", c->weights, wf->hub->commit, wf->hub->path,
                        wf->hub->downloaded ? "downloaded" : wf->hub->network ? "in the cache, linked"
                                                                              : "from the cache");
        return 0;
}

/* Warm-up (building and running each executor once) in the log and in
 * STATUS=: on a large model or a small machine it takes a while. */
struct warm_log {
        pthread_mutex_t lock;      /* workers report at once */
        int64_t t0, last_log_ns;
        int last_done;
};

#define WARM_LOG_PERIOD_NS ((int64_t)2 * 1000000000)

static void on_warm_progress(void *userdata, int done, int total)
{
        struct warm_log *wl = userdata;
        int64_t now = time_now_ns();

        pthread_mutex_lock(&wl->lock);
        if (done > wl->last_done) {
                wl->last_done = done;
                service_notify_status("not ready: warming up, %d of %d executor steps (build, first run)", done, total);
                if (done == total || now - wl->last_log_ns >= WARM_LOG_PERIOD_NS) {
                        log_msg(LOG_INFO, "warm-up: %d of %d executor steps done (%.1f s)", done, total,
                                (double)(now - wl->t0) / 1e9);
                        wl->last_log_ns = now;
                }
        }
        pthread_mutex_unlock(&wl->lock);
}

/* The class names: the labels setting's file, else the hub repository's
 * config.json when it names every class, else the built-in ImageNet-1k
 * names for 1000 classes, else the indices (said in the log: the answers
 * carry numbers, not names). */
static int labels_open(const struct conf *c, const char *hub_config, int classes, char *err, size_t err_len,
                       struct api_labels **ret_labels)
{
        char note[512] = "";
        int r = api_labels_open(c->labels, hub_config, classes, err, err_len, note, sizeof note, ret_labels);

        if (*note)
                log_msg(LOG_WARNING, "labels: %s", note);
        return r;
}

/* The model of c (read into memory, so that a file rewritten in place
 * cannot fault the daemon) into g, with the sha256 of those bytes (what is
 * served) and where they came from. */
static int model_load(const struct conf *c, const struct weights_file *wf, struct generation *g, char *err,
                      size_t err_len)
{
        struct effnet_open_opts oo = { .padding = c->padding, .bn_eps = (float)c->bn_eps, .copy = 1 };
        char sha256[65];
        size_t file_len = 0;
        int r;

        service_notify_status("not ready: loading weights %s", c->weights);
        if ((r = effnet_model_open(wf->path, &oo, err, err_len, &g->model)) < 0)
                return r;
        const void *file = effnet_model_file(g->model, &file_len);
        if ((r = weights_sha256_hex(file, file_len, sha256)) < 0)
                return err_set(err, err_len, r, "sha256: out of memory");
        const struct effnet_info *info = effnet_model_info(g->model);
        bool hub = wf->hub != NULL;
        struct api_weights source = {
                .source = hub ? API_WEIGHTS_HUB : info->seed >= 0 ? API_WEIGHTS_SEEDED : API_WEIGHTS_FILE,
                .path = wf->path, .sha256 = sha256, .seed = info->seed,
                .repo = hub ? wf->ref.repo : NULL, .revision = hub ? wf->ref.revision : NULL,
                .commit = hub ? wf->hub->commit : NULL, .file = hub ? wf->ref.file : NULL,
        };
        if (gen_set_weights(g, c->weights, &source) < 0)
                return err_set(err, err_len, -ENOMEM, "out of memory");
        return 0;
}

/* The CPUs every model's forward passes share (batcher.h's gate): made
 * before the first load, freed at exit. */
static struct batch_gate *cpu_gate;

/* What one model version is loaded from: the settings (shallow: the
 * strings are the caller's), and in a repository its name, version and
 * input size. */
struct load_spec {
        struct conf c;
        const char *name;          /* NULL: the variant (a one-model server) */
        int64_t version;           /* 0: 1 */
        int input_size;            /* 0: the model's */
};
/* The calibration setting's file for int8 (made for g's weights, whose
 * sha256 is known by now); other precisions take none. */
static int calibration_open(const struct conf *c, struct generation *g, char *err, size_t err_len)
{
        if (g->precision != EFFNET_INT8) {
                if (c->calibration)
                        log_msg(LOG_NOTICE, "calibration %s: unused, precision is %s", c->calibration,
                                effnet_precision_name(g->precision));
                return 0;
        }
        if (!c->calibration)
                return err_set(err, err_len, -EINVAL, "precision int8 needs a calibration made for these weights: "
                               "effnet calibrate --weights W --images DIR -o FILE, then calibration = FILE");
        return effnet_calibration_load(g->model, g->sha256, c->calibration, err, err_len, &g->calibration);
}

/* A warm batcher for g's model. */
static int batcher_open(const struct conf *c, int input_size, struct generation *g, char *err, size_t err_len)
{
        struct batch_opts bo = {
                .max_batch = (int)c->max_batch,
                .max_delay_us = c->max_delay_us,
                .queue_images = (int)c->queue,
                .workers = (int)c->workers,
                .threads = (int)c->threads,
                .precision = g->precision,
                .input_size = input_size,
                .gate = cpu_gate,
                .calibration = g->calibration,
                .progress = on_warm_progress,
        };
        struct warm_log wl = { .t0 = time_now_ns() };
        int r;

        bo.userdata = &wl;
        pthread_mutex_init(&wl.lock, NULL);
        r = batch_new(g->model, &bo, err, err_len, &g->batch);
        pthread_mutex_destroy(&wl.lock);
        return r;
}

/* The model version of spec: its model, labels, and a warm batcher. */
static int generation_open(const struct load_spec *spec, char *err, size_t err_len, struct generation **ret_gen)
{
        const struct conf *c = &spec->c;
        struct weights_file wf = { 0 };
        struct generation *g = NULL;
        int r;

        if ((r = gen_new(&g)) < 0) {
                err_set(err, err_len, r, "out of memory");
                goto fail;
        }
        if ((r = effnet_precision_resolve(c->precision, err, err_len, &g->precision)) < 0 ||
            (r = weights_open(c, &wf, err, err_len)) < 0 ||
            (r = model_load(c, &wf, g, err, err_len)) < 0 ||
            (r = calibration_open(c, g, err, err_len)) < 0 ||
            (r = labels_open(c, wf.config, effnet_model_info(g->model)->classes, err, err_len,
                             &g->labels)) < 0 ||
            (r = batcher_open(c, spec->input_size, g, err, err_len)) < 0)
                goto fail;
        if (spec->name && !(g->name = strdup(spec->name))) {
                r = err_set(err, err_len, -ENOMEM, "out of memory");
                goto fail;
        }
        g->version = spec->version;
        /* Every executor exists and holds its weights: the copy of the file
         * is not needed any more. */
        effnet_model_drop_file(g->model);
        weights_file_clear(&wf);
        *ret_gen = g;
        return 0;
fail:
        weights_file_clear(&wf);
        gen_free(g);
        return r;
}

/* What is served, where its weights and names come from, in the log: the
 * untrained default and answers without names say so. */
static void log_model(const struct generation *g)
{
        const struct effnet_info *info = effnet_model_info(g->model);
        const struct api_weights *w = &g->source;
        char from[1200];

        if (w->source == API_WEIGHTS_HUB)
                snprintf(from, sizeof from, "hub %s revision %s commit %s file %s", w->repo, w->revision, w->commit,
                         w->file);
        else
                snprintf(from, sizeof from, "%s %s", w->source == API_WEIGHTS_SEEDED ? "seeded" : "file", w->path);
        log_msg(LOG_INFO, "model %s: %s, %d classes, input %d, %s weights from %s (sha256 %.16s...), labels %s",
                g->weights, info->variant, info->classes, info->preproc.size, info->dtype, from, g->sha256,
                api_labels_source(g->labels));
        if (g->calibration) {
                const struct effnet_int8_check *k = effnet_calibration_check(g->calibration);
                struct effnet_calib_layer l;
                int n = 0, n8 = 0;
                for (; effnet_calibration_layer(g->calibration, n, &l) == 0; n++)
                        n8 += strcmp(l.runs, "int8") == 0;
                log_msg(LOG_INFO, "int8: %d of %d convolutions in int8; against fp32 on the %d images held out of "
                        "the calibration: top-1 agreement %.3f, top-5 overlap %.3f, logit difference max %.3f rms "
                        "%.4f (in logit std)", n8, n, k->images, k->top1_agreement, k->top5_overlap,
                        k->max_logit_diff, k->rms_logit_diff);
        }
        if (w->seed >= 0)
                log_msg(LOG_WARNING, "weights %s are seeded (seed %lld), not trained: the classes predicted mean "
                        "nothing; serve trained weights, e.g. --weights hf://timm/tf_efficientnetv2_s.in21k_ft_in1k",
                        g->weights, (long long)w->seed);
        if (strcmp(api_labels_source(g->labels), "indices") == 0)
                log_msg(LOG_NOTICE, "labels: no names for the model's %d classes (none built in, none in the "
                        "weights' repository): each label is the class index; --labels FILE names them",
                        info->classes);
}

static void describe(const struct generation *g, char *buf, size_t n)
{
        if (!g) {
                snprintf(buf, n, "no model yet");
                return;
        }
        const struct effnet_info *info = effnet_model_info(g->model);
        snprintf(buf, n, "%s, %s, %d classes, input %d, weights %s", info->variant,
                 effnet_precision_name(g->precision), info->classes, info->preproc.size, g->weights);
}

static void on_http_error(void *userdata, const char *fmt, va_list ap)
{
        char buf[512];

        vsnprintf(buf, sizeof buf, fmt, ap);
        size_t n = strlen(buf);
        while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
                buf[--n] = '\0';
        log_msg(LOG_WARNING, "http: %s", buf);
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
                log_msg(LOG_WARNING, "%llu file descriptors for up to %lld connections",
                        (unsigned long long)rl.rlim_cur, (long long)connections);
}

/* Whether hf:// weights are well-formed, and whether they are in the cache
 * (without using the network: a start downloads what is missing). */
static int check_hub_weights(const char *weights)
{
        struct hub_ref ref;
        struct hub_file *f = NULL;
        struct hub_opts o = { .offline = true };
        char err[1024];
        int r;

        if ((r = hub_parse_uri(weights, err, sizeof err, &ref)) < 0) {
                fprintf(stderr, "%s: weights: %s\n", prog, err);
                return r;
        }
        if (hub_fetch(&ref, &o, err, sizeof err, &f) == 0)
                fprintf(stderr, "%s: weights %s: in the hub cache, %s\n", prog, weights, f->path);
        else
                fprintf(stderr, "%s: weights %s: not in the hub cache yet; effnetd downloads it when it starts\n",
                        prog, weights);
        hub_file_free(f);
        return 0;
}

/* Whether the files the settings name can be read and allowed-hosts
 * parses (for --check-config). */
static int check_files(const struct conf *c)
{
        /* hf:// weights are no local file. */
        bool hub = c->weights && hub_is_uri(c->weights);
        const char *files[] = { hub ? NULL : c->weights, c->labels };
        int r = hub ? check_hub_weights(c->weights) : 0;

        if (c->model_repository) {
                struct repo_scan *sc = NULL;
                char err[1024];
                if ((r = repo_scan(c->model_repository, NULL, NULL, err, sizeof err, &sc)) < 0)
                        fprintf(stderr, "%s: %s\n", prog, err);
                for (int i = 0; sc && i < sc->n; i++)
                        if (sc->models[i].error[0])
                                fprintf(stderr, "%s: model %s: %s\n", prog, sc->models[i].name, sc->models[i].error);
                repo_scan_free(sc);
        }

        for (size_t i = 0; i < ARRAY_SIZE(files); i++)
                if (files[i] && access(files[i], R_OK) < 0) {
                        fprintf(stderr, "%s: %s: %s\n", prog, files[i], strerror(errno));
                        r = -errno;
                }
        struct hosts *h = NULL;
        char err[256];
        int hr = hosts_new(c->allowed_hosts, true, err, sizeof err, &h);
        if (hr < 0) {
                fprintf(stderr, "%s: %s\n", prog, err);
                r = hr;
        }
        hosts_free(h);
        return r;
}

/* Prints each line of a multi-line message with the program name. */
static void print_errors(const char *err)
{
        const char *p = err;
        while (*p) {
                const char *nl = strchr(p, '\n');
                int n = nl ? (int)(nl - p) : (int)strlen(p);
                fprintf(stderr, "%s: %.*s\n", prog, n, p);
                p += n + (nl ? 1 : 0);
        }
}

/* What the daemon holds while it runs. Each phase below says which fields
 * it fills; daemon_teardown undoes them all (each accepts what was never
 * filled). */
struct daemon {
        struct conf conf;          /* settings_open */
        char **args;               /* settings_open: the command line without the actions, for reloads */
        int nargs;
        sigset_t sigs;             /* process_setup: SIGTERM, SIGINT, SIGHUP, blocked in every thread */
        int listen_fd;             /* process_setup: systemd's socket, or -1 (http takes it over) */
        struct registry *reg;      /* model_open: the model versions served */
        struct pipeline *pipe;     /* model_open: requests' work, over reg */
        const struct generation *gen;  /* model_open: the version served last (reg's; main thread only) */
        struct http_server *http;  /* listeners_open */
        struct kserve *_Atomic grpc;   /* listeners_open, with grpc-listen; read by /metrics threads */
        struct auth *auth;         /* security_open: API keys, or NULL */
        struct tls *tls;           /* security_open: TLS credentials, or NULL */
        struct otlp *otlp;         /* security_open: the span export (otlp-endpoint), or NULL */
        struct reload reload;      /* serve: a SIGHUP's load */
        struct conf next;          /* serve: the settings the running reload reads */
        bool abandon_reload;       /* drain: a reload still loading, left to the process exit */
        /* The main loop's periodic work (tick). */
        int64_t watchdog_ns;       /* keep-alive period / 2; 0 = no watchdog */
        int64_t next_watchdog, next_status;
        int64_t stall_ns;
        uint64_t last_images;
        int64_t last_status_ns;
        char what[512];            /* describe(gen) */
        char status[700];          /* the STATUS= of READY=1 */
        bool stalled;              /* logged once per stall */
};

/* The front ends' access_log callback, set when either is on: one access
 * line per answered request, and its spans to the collector. */
static void on_answered(void *userdata, const struct http_access *a)
{
        struct daemon *d = userdata;

        if (d->conf.access_log)
                log_access(a);
        if (d->otlp)
                otlp_record(d->otlp, a);
}

static void otlp_stats(void *userdata, struct otlp_stats *ret_stats)
{
        struct daemon *d = userdata;

        otlp_stats_snapshot(d->otlp, ret_stats);
}

/* The loader of a generation, on the reload's thread: input is the
 * struct conf to load. */
static int generation_load(const void *input, char *err, size_t err_len, void **ret_result)
{
        struct generation *g = NULL;
        struct load_spec spec = { .c = *(const struct conf *)input };
        int r = generation_open(&spec, err, err_len, &g);

        if (r == 0)
                *ret_result = g;
        return r;
}

/* The settings of a reload, read again: the [model] ones (weights, labels,
 * precision, calibration, padding, bn-eps) take effect, the others need a
 * restart. */
static int next_settings(const struct daemon *d, struct conf *ret_next)
{
        const struct conf *running = &d->conf;
        struct conf n = { 0 };
        char err[2048], changed[1024];
        int r;

        if ((r = conf_load(d->nargs, d->args, &n, err, sizeof err)) < 0) {
                log_msg(LOG_ERR, "reload: bad settings, keeping the running model: %s", err);
                return r;
        }
        /* Batching, limits and HTTP stay as started: swap only the model. */
        if (conf_changes(running, &n, "model", changed, sizeof changed) > 0)
                log_msg(LOG_WARNING, "reload: only [model] settings change on reload; these keep their running "
                        "values until a restart: %s", changed);
        n.max_batch = running->max_batch;
        n.queue = running->queue;
        n.workers = running->workers;
        n.threads = running->threads;
        n.max_delay_us = running->max_delay_us;
        *ret_next = n;
        return 0;
}

/* SIGHUP, first: the key file and the TLS files are read again at once
 * (small files; a bad one keeps what is in use, and says why). */
static void security_reload(struct daemon *d)
{
        char err[1024];

        if (d->auth) {
                if (auth_reload(d->auth, err, sizeof err) < 0)
                        log_msg(LOG_ERR, "SIGHUP: keeping the API keys in use: %s", err);
                else
                        log_msg(LOG_INFO, "SIGHUP: API keys read again from %s", d->conf.api_keys_file);
        }
        if (d->tls) {
                if (tls_reload(d->tls, err, sizeof err) < 0)
                        log_msg(LOG_ERR, "SIGHUP: keeping the TLS certificate in use: %s", err);
                else
                        log_msg(LOG_INFO, "SIGHUP: TLS certificate and key read again from %s", d->conf.tls_cert);
        }
}

static void sync_start(struct daemon *d, const char *why);

/* SIGHUP: starts loading the next generation, unless one is loading. */
static void on_sighup(struct daemon *d)
{
        int r;

        security_reload(d);
        if (d->conf.model_repository) {
                log_msg(LOG_INFO, "SIGHUP: rescanning the model repository %s", d->conf.model_repository);
                sync_start(d, "SIGHUP");
                return;
        }
        if (reload_running(&d->reload)) {
                log_msg(LOG_NOTICE, "SIGHUP: a reload is already running");
                return;
        }
        service_notify_reloading();
        log_msg(LOG_INFO, "SIGHUP: reloading the model");
        if ((r = next_settings(d, &d->next)) < 0)
                goto fail;
        if ((r = reload_start(&d->reload, generation_load, &d->next)) < 0) {
                log_msg(LOG_ERR, "reload: thread: %s", strerror(-r));
                conf_free(&d->next);
                goto fail;
        }
        return;
fail:
        http_count_reload(d->http, false);
        service_notify_ready(d->status);
}

/* Serves g (built by generation_open) from now on, beside or in place of
 * the versions served: its answers built with the limits of d's settings,
 * then handed to the registry, which owns it from then on (also on
 * failure: then it is freed). */
static int serve_version(struct daemon *d, struct generation *g, bool only, char *err, size_t err_len)
{
        const struct conf *c = &d->conf;
        struct gen_limits lim = { .deadline_ms = c->deadline_us / PARSE_MS, .max_images = (int)c->max_images,
                                  .max_body_bytes = c->max_body_bytes, .paths = c->show_paths };
        struct batch_config bc;
        int r;

        batch_get_config(g->batch, &bc);
        if (c->max_images > bc.queue_images) {
                err_set(err, err_len, -EINVAL, "max images per request (%lld) exceeds the queue (%d images)",
                        (long long)c->max_images, bc.queue_images);
                gen_free(g);
                return -EINVAL;
        }
        if ((r = gen_build_answers(g, &lim)) < 0) {
                gen_free(g);
                return err_set(err, err_len, r, "out of memory");
        }
        /* One model (the weights setting): a reload replaces it, even when its variant, its name, changes. */
        if ((r = only ? reg_serve_only(d->reg, g) : reg_serve(d->reg, g)) < 0)
                return err_set(err, err_len, r, "out of memory");
        d->gen = g;
        return 0;
}

/* ---- a model repository (model-repository) ------------------------------------ */

/* One model version to load from the repository, and what came of it. */
struct load_item {
        char name[REPO_MAX_NAME + 1];
        int64_t version;
        char path[1024];
        char calibration[1100];       /* its int8 calibration file, or "" */
        char ident[600];              /* the files' and its settings' identity */
        struct repo_model_conf mc;
        struct generation *g;         /* loaded, or NULL */
        char err[512];
};

/* A sync: the loads it needs (on the reload thread), and the scan that
 * says which versions stay. */
struct sync_job {
        const struct conf *base;      /* the daemon's settings (main thread's; unchanged meanwhile) */
        struct repo_scan *scan;
        struct load_item *items;
        int n;
};

/* A version the registry serves from the repository, and its identity. */
struct served {
        char name[REPO_MAX_NAME + 1];
        int64_t version;
        char ident[600];
        struct served *next;
};

/* A load or unload call from a client, answered from the main thread. */
struct control {
        char name[REPO_MAX_NAME + 1];
        bool load;
        struct repo_override *override;  /* owned: a load's config; NULL: config.conf alone */
        http_control_done_fn done;
        void *token;
        struct control *next;
};

/* The repository's state (main thread only, but the control queue). */
struct repo_state {
        struct served *served;
        struct repo_override *overrides;   /* the last load's config of each model that had one */
        char *wanted;                 /* explicit mode: ",name,name," loaded on request; NULL: none */
        bool wanted_all;              /* load-model = * */
        struct sync_job *running;     /* the sync the reload thread loads */
        struct control *attached;     /* load calls answered when the running sync ends */
        bool pending;                 /* a rescan asked for while one runs */
        int64_t next_poll_ns;
        int cpus_over;                /* CPUs held beyond the usable ones, as last logged */
        pthread_mutex_t lock;         /* guards queue (http threads add to it) */
        struct control *queue;
};

static struct repo_state repo = { .lock = PTHREAD_MUTEX_INITIALIZER };

static bool repo_wants(const char *name)
{
        char key[REPO_MAX_NAME + 3];

        if (repo.wanted_all)
                return true;
        snprintf(key, sizeof key, ",%s,", name);
        return repo.wanted && strstr(repo.wanted, key);
}

static void repo_want(const char *name, bool want)
{
        char key[REPO_MAX_NAME + 3], *w = NULL;

        snprintf(key, sizeof key, ",%s,", name);
        if (want == repo_wants(name))
                return;
        if (want) {
                if (asprintf(&w, "%s%s,", repo.wanted ? repo.wanted : ",", name) < 0)
                        return;
        } else if (repo.wanted) {
                char *at = strstr(repo.wanted, key);
                if (at && (w = strdup(repo.wanted)))
                        memmove(w + (at - repo.wanted), w + (at - repo.wanted) + strlen(key) - 1,
                                strlen(at + strlen(key) - 1) + 1);
        }
        free(repo.wanted);
        repo.wanted = w;
}

static struct served *served_find(const char *name, int64_t version)
{
        for (struct served *x = repo.served; x; x = x->next)
                if (strcmp(x->name, name) == 0 && (version == 0 || x->version == version))
                        return x;
        return NULL;
}

static void served_drop(const char *name, int64_t version)
{
        for (struct served **p = &repo.served; *p;) {
                if (strcmp((*p)->name, name) == 0 && (version == 0 || (*p)->version == version)) {
                        struct served *x = *p;
                        *p = x->next;
                        free(x);
                } else {
                        p = &(*p)->next;
                }
        }
}

/* On the reload thread: every item of the job, one after the other. */
static int sync_load(const void *input, char *err, size_t err_len, void **ret_result)
{
        struct sync_job *job = (struct sync_job *)input;

        for (int i = 0; i < job->n; i++) {
                struct load_item *it = &job->items[i];
                const struct repo_model_conf *mc = &it->mc;
                struct load_spec spec = { .c = *job->base, .name = it->name, .version = it->version,
                                          .input_size = mc->input_size };
                spec.c.weights = it->path;
                spec.c.labels = mc->labels[0] ? (char *)mc->labels : NULL;
                spec.c.calibration = it->calibration[0] ? it->calibration : NULL;
                if (mc->precision >= 0)
                        spec.c.precision = mc->precision;
                if (mc->padding >= 0)
                        spec.c.padding = mc->padding;
                if (mc->bn_eps >= 0)
                        spec.c.bn_eps = mc->bn_eps;
                if (mc->max_batch)
                        spec.c.max_batch = mc->max_batch;
                if (mc->workers)
                        spec.c.workers = mc->workers;
                if (mc->threads)
                        spec.c.threads = mc->threads;
                log_msg(LOG_INFO, "model %s version %lld: loading %s (%d worker(s) x %d thread(s))", it->name,
                        (long long)it->version, it->path, (int)spec.c.workers, (int)spec.c.threads);
                if (generation_open(&spec, it->err, sizeof it->err, &it->g) < 0)
                        it->g = NULL;
        }
        *ret_result = job;
        return 0;
}

static struct sync_job *sync_job_free(struct sync_job *job)
{
        if (!job)
                return NULL;
        for (int i = 0; i < job->n; i++)
                gen_free(job->items[i].g);
        repo_scan_free(job->scan);
        free(job->items);
        free(job);
        return NULL;
}

/* Answers a load or unload call. */
static void control_answer(struct control *c, bool ok, enum api_error e, const char *fmt, ...)
        __attribute__((format(printf, 4, 5)));
static void control_answer(struct control *c, bool ok, enum api_error e, const char *fmt, ...)
{
        char msg[600];
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(msg, sizeof msg, fmt, ap);
        va_end(ap);
        c->done(c->token, ok, e, msg);
        repo_override_free(c->override);
        free(c);
}

/* The reason a model of the registry does not serve, for a load's answer. */
struct why_row {
        const char *name;
        char reason[300];
        bool serving;
};

static int why_row(void *userdata, const struct reg_row *r)
{
        struct why_row *w = userdata;

        if (strcmp(r->name, w->name) != 0)
                return 0;
        if (r->g)
                w->serving = true;
        if (r->reason && *r->reason)
                snprintf(w->reason, sizeof w->reason, "%s", r->reason);
        return 0;
}

/* Retires the versions the scan no longer wants, of the models it covers
 * (only: that model's scan): a model left with none would serve nothing,
 * so its old versions stay until a wanted one serves, unless the model
 * left the repository. */
static void sync_retire(struct daemon *d, const struct repo_scan *sc, const char *only)
{
        for (struct served *x = repo.served, *next; x; x = next) {
                next = x->next;
                if (only && strcmp(x->name, only) != 0)
                        continue;
                const struct repo_model *m = repo_scan_find(sc, x->name);
                char name[REPO_MAX_NAME + 1];
                int64_t v = x->version;
                bool wanted = false, any = false;
                for (int k = 0; m && k < m->n_versions; k++) {
                        const struct served *s = served_find(x->name, m->versions[k].version);
                        wanted = wanted || m->versions[k].version == v;
                        any = any || s != NULL;
                }
                if (wanted || (m && !any))
                        continue;
                snprintf(name, sizeof name, "%s", x->name);
                log_msg(LOG_INFO, "model %s version %lld: retired (%s)", name, (long long)v,
                        m ? "its version-policy wants it no more" : "it left the model repository");
                reg_retire(d->reg, name, v, REG_UNAVAILABLE, m ? "retired by its version-policy" : "removed");
                served_drop(name, v);
                if (!m && !served_find(name, 0))
                        reg_forget(d->reg, name);
        }
}

static void sync_end(struct daemon *d, struct sync_job *job);

/* A load failure's reason as clients see it (the repository index, the
 * load call, /v1/models): the repository's folder is cut from the paths
 * in it, "DIR/m/1/calibration.json" becomes "m/1/calibration.json",
 * unless show-paths is on. The log keeps the whole path. */
static void fail_model(struct daemon *d, const char *name, const char *reason)
{
        const char *dir = d->conf.model_repository;
        size_t n = dir ? strlen(dir) : 0;
        char shown[600];
        size_t o = 0;

        while (n > 0 && dir[n - 1] == '/')
                n--;
        for (const char *p = reason; *p && o + 1 < sizeof shown;) {
                if (!d->conf.show_paths && n > 0 && strncmp(p, dir, n) == 0 && p[n] == '/') {
                        p += n + 1;
                        continue;
                }
                shown[o++] = *p++;
        }
        shown[o] = '\0';
        reg_set_state(d->reg, name, REG_FAILED, shown);
}


/* One CPU budget for the models the scan serves (cpushare.h): each one's
 * workers and threads per worker into workers[i] and threads[i]; a model
 * whose threads do not fit gets the reason as its error. -ENOMEM. */
static int sync_share_cpus(const struct conf *c, struct repo_scan *sc, int *workers, int *threads)
{
        struct cpushare_model *cm = calloc((size_t)sc->n + 1, sizeof *cm);
        int *of = calloc((size_t)sc->n + 1, sizeof *of);
        int n = 0, cpus = cpu_usable_count(), r = 0;

        if (!cm || !of) {
                r = -ENOMEM;
                goto done;
        }
        for (int i = 0; i < sc->n; i++) {
                const struct repo_model *m = &sc->models[i];
                workers[i] = m->conf.workers ? m->conf.workers : (int)c->workers;
                threads[i] = 0;
                if (m->error[0] || (c->model_control_mode == CONF_CONTROL_EXPLICIT && !repo_wants(m->name)))
                        continue;
                cm[n] = (struct cpushare_model){ .name = m->name, .workers = workers[i],
                                                 .threads = m->conf.threads ? m->conf.threads : (int)c->threads,
                                                 .serving = served_find(m->name, 0) != NULL };
                of[n++] = i;
        }
        int held = cpushare_split(cm, n, cpus);
        for (int k = 0; k < n; k++) {
                struct repo_model *m = &sc->models[of[k]];
                threads[of[k]] = cm[k].ret_threads;
                if (!cm[k].ret_threads)
                        snprintf(m->error, sizeof m->error, "%s", cm[k].ret_reason);
        }
        /* More models than CPUs: each still needs a thread; their passes
         * take turns through the gate (batcher.h). Said once, not per poll. */
        if (held > cpus && held - cpus != repo.cpus_over)
                log_msg(LOG_WARNING, "model repository: %d models on %d usable CPUs, one thread each at least: "
                        "%d CPUs held, their forward passes take turns", n, cpus, held);
        repo.cpus_over = held > cpus ? held - cpus : 0;
done:
        free(cm);
        free(of);
        return r;
}

/* Scans the repository and loads what changed: the versions its policies
 * want that are not served with the same file and settings. The loads run
 * on the reload thread; sync_end serves them. A scan while one runs is
 * done after it. */
static void sync_start(struct daemon *d, const char *why)
{
        const struct conf *c = &d->conf;
        struct sync_job *job = NULL;
        char err[1024];

        if (reload_running(&d->reload)) {
                repo.pending = true;
                return;
        }
        repo.pending = false;
        if (!(job = calloc(1, sizeof *job)))
                return;
        job->base = c;
        if (repo_scan(c->model_repository, NULL, repo.overrides, err, sizeof err, &job->scan) < 0) {
                log_msg(LOG_ERR, "%s: %s; serving what is loaded", why, err);
                sync_job_free(job);
                for (struct control *a = repo.attached, *n; a; a = n) {
                        n = a->next;
                        control_answer(a, false, API_E_INVALID_REQUEST, "failed to load '%s': %s", a->name, err);
                }
                repo.attached = NULL;
                return;
        }
        const struct repo_scan *sc = job->scan;
        int cap = 0;
        for (int i = 0; i < sc->n; i++)
                cap += sc->models[i].n_versions;
        job->items = calloc((size_t)cap + 1, sizeof *job->items);
        int *workers = calloc((size_t)sc->n + 1, sizeof *workers);
        int *threads = calloc((size_t)sc->n + 1, sizeof *threads);
        if (!job->items || !workers || !threads || sync_share_cpus(c, job->scan, workers, threads) < 0) {
                free(workers);
                free(threads);
                sync_job_free(job);
                return;
        }
        for (int i = 0; i < sc->n; i++) {
                const struct repo_model *m = &sc->models[i];
                if (c->model_control_mode == CONF_CONTROL_EXPLICIT && !repo_wants(m->name)) {
                        if (!served_find(m->name, 0))
                                reg_set_state(d->reg, m->name, REG_UNAVAILABLE, NULL);
                        continue;
                }
                if (m->error[0]) {
                        log_msg(LOG_ERR, "model %s: %s", m->name, m->error);
                        fail_model(d, m->name, m->error);
                        continue;
                }
                for (int k = 0; k < m->n_versions; k++) {
                        const struct repo_version *v = &m->versions[k];
                        struct load_item *it = &job->items[job->n];
                        /* Its share of the CPUs is a setting too: a share that
                         * changes (a model added or gone) reloads it. */
                        snprintf(it->ident, sizeof it->ident, "%s|%s|%dx%d", v->ident, m->conf_ident, workers[i],
                                 threads[i]);
                        const struct served *s = served_find(m->name, v->version);
                        if (s && strcmp(s->ident, it->ident) == 0)
                                continue;
                        snprintf(it->name, sizeof it->name, "%s", m->name);
                        it->version = v->version;
                        snprintf(it->path, sizeof it->path, "%s", v->path);
                        snprintf(it->calibration, sizeof it->calibration, "%s", v->calibration);
                        it->mc = m->conf;
                        it->mc.workers = workers[i];
                        it->mc.threads = threads[i];
                        job->n++;
                }
                if (!served_find(m->name, 0) && job->n > 0)
                        reg_set_state(d->reg, m->name, REG_LOADING, "");
        }
        free(workers);
        free(threads);
        if (job->n == 0) {
                sync_end(d, job);
                return;
        }
        log_msg(LOG_INFO, "%s: loading %d model version(s)", why, job->n);
        service_notify_reloading();
        if (reload_start(&d->reload, sync_load, job) < 0) {
                log_msg(LOG_ERR, "%s: no loading thread", why);
                sync_job_free(job);
                return;
        }
        repo.running = job;
}

/* The loads of a sync are done: serve the new versions (beside the ones
 * serving), then retire what the repository wants no more, then answer
 * the load calls waiting for it. */
static void sync_end(struct daemon *d, struct sync_job *job)
{
        char err[512];

        for (int i = 0; i < job->n; i++) {
                struct load_item *it = &job->items[i];
                if (!it->g) {
                        log_msg(LOG_ERR, "model %s version %lld: failed to load: %s", it->name,
                                (long long)it->version, it->err);
                        fail_model(d, it->name, it->err);
                        continue;
                }
                struct generation *g = it->g;
                it->g = NULL;
                if (serve_version(d, g, false, err, sizeof err) < 0) {
                        fail_model(d, it->name, err);
                        continue;
                }
                struct served *s = served_find(it->name, it->version);
                if (!s && (s = calloc(1, sizeof *s))) {
                        snprintf(s->name, sizeof s->name, "%s", it->name);
                        s->version = it->version;
                        s->next = repo.served;
                        repo.served = s;
                }
                if (s)
                        snprintf(s->ident, sizeof s->ident, "%s", it->ident);
                log_msg(LOG_INFO, "model %s version %lld: serving (%s)", it->name, (long long)it->version,
                        d->gen->info->variant);
        }
        sync_retire(d, job->scan, NULL);
        for (struct control *a = repo.attached, *n; a; a = n) {
                struct why_row w = { .name = a->name };
                n = a->next;
                reg_list(d->reg, why_row, &w);
                bool failed = false;
                for (int i = 0; i < job->n; i++)
                        failed = failed || (strcmp(job->items[i].name, a->name) == 0 && job->items[i].err[0]);
                const struct repo_model *m = repo_scan_find(job->scan, a->name);
                if (!m)
                        control_answer(a, false, API_E_INVALID_REQUEST, "failed to load '%s', no such model in the "
                                       "model repository", a->name);
                else if (m->error[0] || failed || !w.serving)
                        control_answer(a, false, API_E_INVALID_REQUEST, "failed to load '%s': %s", a->name,
                                       w.reason[0] ? w.reason : "no version loaded");
                else
                        control_answer(a, true, 0, "%s", "loaded");
        }
        repo.attached = NULL;
        sync_job_free(job);
        snprintf(d->status, sizeof d->status, "serving %d model version(s) of %s on %s", reg_serving_count(d->reg),
                 d->conf.model_repository, d->http ? http_url(d->http) : "");
        if (d->http)
                service_notify_ready(d->status);
}

/* The running sync's loads are done (main loop). */
static void sync_finish(struct daemon *d)
{
        void *result = NULL;
        char err[512];

        if (reload_finish(&d->reload, err, sizeof err, &result) < 0 || !result) {
                log_msg(LOG_ERR, "model repository: %s", err);
                sync_job_free(repo.running);
        } else {
                sync_end(d, result);
        }
        repo.running = NULL;
        if (d->http)
                http_count_reload(d->http, true);
}

/* http's repository control (any thread): queued for the main loop. */
static int on_repo_control(void *userdata, const char *name, bool load, const char *body, size_t body_len,
                           http_control_done_fn done, void *token, char *err, size_t err_len)
{
        struct daemon *d = userdata;
        struct repo_override *o = NULL;
        struct control *c;
        int r;

        if (!d->conf.model_repository)
                return err_set(err, err_len, -EPERM, "this server serves its weights setting, not a model repository "
                               "(the model-repository setting): nothing to %s", load ? "load" : "unload");
        if (d->conf.model_control_mode != CONF_CONTROL_EXPLICIT)
                return err_set(err, err_len, -EPERM, "explicit model load / unload is not allowed when "
                               "model-control-mode is %s", d->conf.model_control_mode == CONF_CONTROL_POLL ? "poll"
                                                                                                      : "none");
        if (!repo_name_ok(name, strlen(name)))
                return err_set(err, err_len, -EINVAL, "'%.80s' is not a model name", name);
        /* A load's config is checked here: a bad one is refused before anything loads. */
        if (load && (r = repo_override_parse(name, body, body_len, err, err_len, &o)) < 0)
                return r;
        if (!(c = calloc(1, sizeof *c))) {
                repo_override_free(o);
                return err_set(err, err_len, -ENOMEM, "out of memory");
        }
        snprintf(c->name, sizeof c->name, "%s", name);
        c->load = load;
        c->override = o;
        c->done = done;
        c->token = token;
        pthread_mutex_lock(&repo.lock);
        struct control **p = &repo.queue;
        while (*p)
                p = &(*p)->next;
        *p = c;
        pthread_mutex_unlock(&repo.lock);
        return 0;
}

/* Model name's override becomes o (taken; NULL: none): a load's config
 * holds until the model's next load or unload. */
static void override_set(const char *name, struct repo_override *o)
{
        for (struct repo_override **p = &repo.overrides; *p; p = &(*p)->next)
                if (strcmp((*p)->name, name) == 0) {
                        struct repo_override *old = *p;
                        *p = old->next;
                        repo_override_free(old);
                        break;
                }
        if (o) {
                o->next = repo.overrides;
                repo.overrides = o;
        }
}

/* The main loop's share: queued load and unload calls, polling. */
static void repo_tick(struct daemon *d, bool stopping)
{
        struct control *q;

        if (!d->conf.model_repository)
                return;
        pthread_mutex_lock(&repo.lock);
        q = repo.queue;
        repo.queue = NULL;
        pthread_mutex_unlock(&repo.lock);
        bool load = false;
        for (struct control *c = q, *n; c; c = n) {
                n = c->next;
                if (stopping) {
                        control_answer(c, false, API_E_DRAINING, "the server is shutting down");
                } else if (!c->load) {
                        repo_want(c->name, false);
                        override_set(c->name, NULL);
                        if (!served_find(c->name, 0)) {
                                control_answer(c, false, API_E_INVALID_REQUEST, "failed to unload '%s', no version "
                                               "is available", c->name);
                                continue;
                        }
                        reg_retire(d->reg, c->name, 0, REG_UNAVAILABLE, "unloaded");
                        served_drop(c->name, 0);
                        log_msg(LOG_INFO, "model %s: unloaded (its requests in flight finish)", c->name);
                        control_answer(c, true, 0, "%s", "unloaded");
                } else {
                        /* Answered when the sync that loads it ends (a load of a
                         * loaded model reads its folder again, as Triton does). */
                        repo_want(c->name, true);
                        override_set(c->name, c->override);
                        c->override = NULL;
                        c->next = repo.attached;
                        repo.attached = c;
                        load = true;
                }
        }
        if (stopping) {
                for (struct control *a = repo.attached, *n; a; a = n) {
                        n = a->next;
                        control_answer(a, false, API_E_DRAINING, "the server is shutting down");
                }
                repo.attached = NULL;
                return;
        }
        int64_t now = time_now_ns();
        bool poll = d->conf.model_control_mode == CONF_CONTROL_POLL && now >= repo.next_poll_ns;
        if (poll)
                repo.next_poll_ns = now + d->conf.repository_poll_us * 1000;
        if ((load || poll || repo.pending) && !repo.running)
                sync_start(d, load ? "load" : poll ? "repository poll" : "rescan");
        else if (load || poll)
                repo.pending = true;
}

/* Phase 3 for a repository: the first sync, run to its end here (SIGTERM
 * during it exits at once, as for one model). */
static int repo_open(struct daemon *d, char *err, size_t err_len)
{
        const struct conf *c = &d->conf;

        if (c->load_model) {
                if (strcmp(c->load_model, "*") == 0) {
                        repo.wanted_all = true;
                } else {
                        char *copy = strdup(c->load_model), *save = NULL;
                        if (!copy)
                                return err_set(err, err_len, -ENOMEM, "out of memory");
                        for (char *t = strtok_r(copy, ", ", &save); t; t = strtok_r(NULL, ", ", &save))
                                repo_want(t, true);
                        free(copy);
                }
        }
        if ((c->default_model && reg_set_default(d->reg, c->default_model) < 0))
                return err_set(err, err_len, -ENOMEM, "out of memory");
        sync_start(d, "model repository");
        while (repo.running && !reload_ready(&d->reload)) {
                struct timespec ts = { .tv_sec = 0, .tv_nsec = 50000000 };
                int sig = sigtimedwait(&d->sigs, NULL, &ts);
                if (sig == SIGTERM || sig == SIGINT) {
                        log_msg(LOG_INFO, "%s during start-up: exiting without waiting for the model loads",
                                sig == SIGTERM ? "SIGTERM" : "SIGINT");
                        _exit(0);
                }
        }
        if (repo.running)
                sync_finish(d);
        repo.next_poll_ns = time_now_ns() + c->repository_poll_us * 1000;
        if (reg_serving_count(d->reg) == 0 && c->model_control_mode != CONF_CONTROL_EXPLICIT)
                log_msg(LOG_WARNING, "model repository %s: no model loaded", c->model_repository);
        return 0;
}

/* A loaded generation swapped in (the old one retires: tick frees it once
 * its last request is answered), or the reason it is not. */
static void swap_in_reloaded(struct daemon *d)
{
        struct generation *n = NULL;
        char err[512];
        void *next;

        if (reload_finish(&d->reload, err, sizeof err, &next) == 0) {
                n = next;
                if (serve_version(d, n, true, err, sizeof err) < 0)
                        n = NULL;
        }
        if (n) {
                d->gen = n;
                describe(d->gen, d->what, sizeof d->what);
                log_msg(LOG_INFO, "reloaded: now serving %s (sha256 %.16s...)", d->what, d->gen->sha256);
                log_model(d->gen);
                http_count_reload(d->http, true);
        } else {
                log_msg(LOG_ERR, "reload failed, still serving %s: %s", d->what, err);
                http_count_reload(d->http, false);
        }
        conf_free(&d->next);
        snprintf(d->status, sizeof d->status, "serving %s on %s", d->what, http_url(d->http));
        service_notify_ready(d->status);
}

/* Whether every serving version's workers make progress (the watchdog's
 * question): the first stall's reason in err. */
struct progress_check {
        int64_t stall_ns;
        char *err;
        size_t err_len;
        int r;
};

static int check_row(void *userdata, const struct reg_row *row)
{
        struct progress_check *pc = userdata;

        if (row->g && pc->r == 0)
                pc->r = batch_check_progress(row->g->batch, pc->stall_ns, pc->err, pc->err_len);
        return 0;
}

static int check_progress(struct daemon *d, char *err, size_t err_len)
{
        struct progress_check pc = { .stall_ns = d->stall_ns, .err = err, .err_len = err_len };

        reg_list(d->reg, check_row, &pc);
        return pc.r;
}

/* Periodic work of the main loop: watchdog keep-alive when the workers make
 * progress, STATUS= with the rate, and freeing retired generations. */
static void tick(struct daemon *d, bool stopping)
{
        int64_t now = time_now_ns();
        char err[256];
        struct generation *old;

        repo_tick(d, stopping);
        while ((old = reg_collect_retired(d->reg))) {
                /* Its last request is answered: executors and threads go. */
                log_msg(LOG_INFO, "released the replaced model (sha256 %.16s...)", old->sha256);
                gen_free(old);
        }
        if (d->watchdog_ns && now >= d->next_watchdog) {
                d->next_watchdog = now + d->watchdog_ns;
                if (check_progress(d, err, sizeof err) == 0) {
                        service_notify_watchdog();
                        d->stalled = false;
                } else if (!d->stalled) {
                        d->stalled = true;
                        log_msg(LOG_ERR, "no watchdog keep-alive: %s", err);
                }
        }
        if (!stopping && now >= d->next_status) {
                uint64_t images = http_images(d->http);
                double secs = (double)(now - d->last_status_ns) / 1e9;
                double rate = secs > 0 ? (double)(images - d->last_images) / secs : 0;
                service_notify_status("serving %s on %s; %llu images, %.1f images/s", d->what, http_url(d->http),
                                      (unsigned long long)images, rate);
                d->last_images = images;
                d->last_status_ns = now;
                d->next_status = now + STATUS_PERIOD_NS;
        }
}

/* OpenMP threads (oneDNN's runtime, libgomp) spin for about 3 ms at every
 * barrier and after every parallel region before they sleep. When a teammate
 * has been preempted (by the threads decoding images, or by anything
 * else on a few cores) that spinning burns whole time slices, and a forward
 * pass, a few hundred regions, gets several times slower. A spin of about
 * 0.1 ms (GOMP_SPINCOUNT=10000) is as fast on idle CPUs and degrades
 * gracefully; fully passive waiting costs about 20% at batch 1. libgomp
 * reads its environment once, when it is loaded, so set it and execute
 * again. OMP_WAIT_POLICY or GOMP_SPINCOUNT in the environment are kept. */
static void omp_spin_default(char **argv)
{
        char self[4096];
        ssize_t n;

        if (getenv("OMP_WAIT_POLICY") || getenv("GOMP_SPINCOUNT"))
                return;
        /* The real path, not /proc/self/exe: the process name comes from it. */
        n = readlink("/proc/self/exe", self, sizeof self - 1);
        if (n <= 0 || n >= (ssize_t)sizeof self - 1)
                return; /* no /proc: run with the runtime's default */
        self[n] = '\0';
        if (setenv("GOMP_SPINCOUNT", "10000", 1) == 0)
                execv(self, argv);
        unsetenv("GOMP_SPINCOUNT");
}


/* Phase 1, settings: d->conf and d->args from the config file, the
 * environment and the flags. The actions (--help, --version,
 * --check-config, --print-config) run here: then the exit code is in
 * *ret_exit and 1 returned; 0 means serve. Undone by daemon_teardown. */
static int settings_open(int argc, char **argv, struct daemon *d, int *ret_exit)
{
        bool check = false, print = false;
        /* Room for every setting's error at once (about 80 bytes each). */
        char err[8192];
        int r;

        for (int i = 1; i < argc; i++) {
                if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
                        usage(stdout);
                        *ret_exit = 0;
                        return 1;
                }
                if (strcmp(argv[i], "--version") == 0) {
                        printf("effnetd %s\n", EFFNET_VERSION);
                        *ret_exit = 0;
                        return 1;
                }
        }
        /* The actions are not settings: take them out before parsing. */
        d->args = calloc((size_t)argc + 1, sizeof *d->args);
        if (!d->args) {
                *ret_exit = 1;
                return 1;
        }
        d->args[0] = argv[0];
        d->nargs = 1;
        for (int i = 1; i < argc; i++) {
                if (strcmp(argv[i], "--check-config") == 0)
                        check = true;
                else if (strcmp(argv[i], "--print-config") == 0)
                        print = true;
                else
                        d->args[d->nargs++] = argv[i];
        }
        if (conf_load(d->nargs, d->args, &d->conf, err, sizeof err) < 0) {
                print_errors(err);
                *ret_exit = 2;
                return 1;
        }
        if (check || print) {
                r = check ? check_files(&d->conf) : 0;
                if (print)
                        conf_print(stdout, &d->conf);
                if (check && r == 0)
                        fprintf(stderr, "%s: configuration OK (config file: %s)\n", prog,
                                d->conf.file ? d->conf.file : "none read");
                *ret_exit = r < 0 ? 2 : 0;
                return 1;
        }
        return 0;
}

/* Phase 2, the process: the log, the signal mask (every thread started
 * from here on inherits it: signals go to the main thread's sigtimedwait),
 * the descriptor limit, and systemd's listening socket in d->listen_fd
 * (taken over by http, or closed by the exit). */
static int process_setup(struct daemon *d, char *err, size_t err_len)
{
        int r;

        log_setup(prog, d->conf.log_format == CONF_LOG_JSON);
        sigemptyset(&d->sigs);
        sigaddset(&d->sigs, SIGTERM);
        sigaddset(&d->sigs, SIGINT);
        sigaddset(&d->sigs, SIGHUP);
        pthread_sigmask(SIG_BLOCK, &d->sigs, NULL);
        signal(SIGPIPE, SIG_IGN);
        raise_fd_limit(d->conf.max_connections);
        char *line = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&line, &len);
        if (f) {
                conf_print_line(f, &d->conf);
                fclose(f);
                if (line && len)
                        line[len - 1] = '\0';
                log_msg(LOG_INFO, "settings: %s", line ? line : "");
                free(line);
        }
        if ((r = service_take_listen_fd(&d->listen_fd)) < 0)
                return err_set(err, err_len, r, "socket activation: expected one listening stream socket");
        return 0;
}

/* The registry and the pipeline requests go through (every front end's). */
static int pipeline_open(struct daemon *d, char *err, size_t err_len)
{
        const struct conf *c = &d->conf;
        struct pipe_opts po = {
                .workers = (int)c->decode_threads,
                .queue = (int)c->decode_queue,
                .memory_budget = c->memory_budget,
                .max_client_share = c->max_client_share,
                .max_images = (int)c->max_images,
                .deadline_ms = c->deadline_us / PARSE_MS,
                .img = IMG_OPTS_DEFAULT,
                .max_request_pixels = c->max_request_pixels,
        };
        int r;

        po.img.limits.max_bytes = (size_t)c->max_body_bytes;
        po.img.limits.max_pixels = c->max_pixels;
        po.img.jpeg_fast = c->jpeg_fast;
        if ((r = reg_new(&d->reg)) < 0 || (r = pipe_new(&po, d->reg, &d->pipe)) < 0)
                return err_set(err, err_len, r, "request pipeline: %s", strerror(-r));
        return 0;
}

/* Phase 3, the model: d->gen, loaded on a thread of its own while this one
 * waits for signals: SIGTERM or SIGINT during a long load or warm-up ends
 * the process at once (nothing is served yet, so nothing is lost), where
 * waiting for the load could outlast the service manager's stop timeout.
 * Undone by daemon_teardown (reg_free). */
static int model_open(struct daemon *d, char *err, size_t err_len)
{
        struct reload first = RELOAD_INIT;
        struct batch_config bc;
        struct effnet_cpu cpu;
        int64_t t0 = time_now_ns();
        void *gen = NULL;
        int r;

        if ((r = batch_gate_new(cpu_usable_count(), &cpu_gate)) < 0)
                return err_set(err, err_len, r, "out of memory");
        if (d->conf.model_repository) {
                if ((r = pipeline_open(d, err, err_len)) < 0 || (r = repo_open(d, err, err_len)) < 0)
                        return r;
                effnet_cpu_info(&cpu);
                log_msg(LOG_INFO, "model repository %s: %d model version(s) ready in %.0f ms; forward passes of "
                        "every model share the %d usable CPUs (CPU %s)", d->conf.model_repository,
                        reg_serving_count(d->reg), (double)(time_now_ns() - t0) / 1e6, cpu_usable_count(), cpu.isa);
                return 0;
        }
        if ((r = reload_start(&first, generation_load, &d->conf)) < 0)
                return err_set(err, err_len, r, "loading thread: %s", strerror(-r));
        while (!reload_ready(&first)) {
                struct timespec ts = { .tv_sec = 0, .tv_nsec = 50000000 };
                int sig = sigtimedwait(&d->sigs, NULL, &ts);
                if (sig == SIGTERM || sig == SIGINT) {
                        log_msg(LOG_INFO, "%s during start-up: exiting without waiting for the model load",
                                sig == SIGTERM ? "SIGTERM" : "SIGINT");
                        _exit(0);
                }
                if (sig == SIGHUP)
                        log_msg(LOG_NOTICE, "SIGHUP during start-up: ignored, the model is loading");
        }
        if ((r = reload_finish(&first, err, err_len, &gen)) < 0)
                return r;
        if ((r = pipeline_open(d, err, err_len)) < 0) {
                gen_free(gen);
                return r;
        }
        if ((r = serve_version(d, gen, true, err, err_len)) < 0)
                return r;
        batch_get_config(d->gen->batch, &bc);
        effnet_cpu_info(&cpu);
        log_model(d->gen);
        log_msg(LOG_INFO,
                "%d worker(s) x %d thread(s) of %d usable CPUs, %s (precision %s, CPU %s), batch sizes up to %d, "
                "ready in %.0f ms (%.0f MB of executor memory)",
                bc.workers, bc.threads, cpu_usable_count(), effnet_precision_name(d->gen->precision),
                effnet_precision_name(d->conf.precision), cpu.isa, bc.max_batch,
                (double)(time_now_ns() - t0) / 1e6, (double)bc.exec_bytes / (1024.0 * 1024.0));
        return 0;
}

static bool grpc_ready(void *userdata)
{
        struct daemon *d = userdata;
        return http_ready(d->http);
}

/* API keys for gRPC calls, as for HTTP requests: the same key file and
 * counters, from the "authorization" metadata. */
static int grpc_authorize(void *userdata, const char *authorization)
{
        struct daemon *d = userdata;
        return auth_check(d->auth, authorization) == AUTH_OK ? 0 : -EACCES;
}

static void grpc_stats(void *userdata, struct grpc_stats *ret_stats)
{
        struct daemon *d = userdata;
        struct kserve *k = atomic_load(&d->grpc);

        if (k)
                kserve_stats_snapshot(k, ret_stats);
        else
                memset(ret_stats, 0, sizeof *ret_stats);
}

/* The gRPC listener (grpc-listen): its requests go through the same
 * pipeline as HTTP's (model versions, worker pool, batchers, memory
 * budget, limits); the /v2 body limit bounds a message; connections and
 * timeouts are those of the HTTP settings, for a listener of its own. */
static int grpc_open(struct daemon *d, char *err, size_t err_len)
{
        const struct conf *c = &d->conf;
        struct kserve_opts ko = {
                .h2 = { .listen = c->grpc_listen, .max_connections = (int)c->max_connections,
                        .max_streams = (int)c->grpc_max_streams, .max_header_bytes = 16384,
                        .max_message_bytes = c->v2_max_body_bytes,
                        .idle_timeout_s = (int)(c->connection_timeout_us / PARSE_S),
                        .read_timeout_s = (int)(c->body_timeout_us / PARSE_S),
                        .max_deadline_ms = c->deadline_us / PARSE_MS, .tls = d->tls },
                .pipe = d->pipe,
                .backend = { .ready = grpc_ready, .authorize = d->auth ? grpc_authorize : NULL,
                             .access_log = c->access_log || d->otlp ? on_answered : NULL, .userdata = d },
        };
        struct kserve *k;
        int r;

        if ((r = kserve_new(&ko, err, err_len, &k)) < 0)
                return r;
        atomic_store(&d->grpc, k);
        log_msg(LOG_INFO, "gRPC (KServe v2 GRPCInferenceService) listening on %s", kserve_url(k));
        return 0;
}

/* Phase 4a, what the listeners need: API keys, TLS credentials and the
 * span export, when set. Undone by daemon_teardown, after the listeners. */
static int security_open(struct daemon *d, char *err, size_t err_len)
{
        const struct conf *c = &d->conf;
        int r;

        if (c->api_keys_file) {
                if ((r = auth_new(c->api_keys_file, err, err_len, &d->auth)) < 0)
                        return r;
                struct auth_stats st;
                auth_stats_snapshot(d->auth, &st);
                log_msg(LOG_INFO, "API keys: %d from %s; every request but the probes needs one", st.keys,
                        c->api_keys_file);
        }
        if (c->tls_cert) {
                struct tls_opts to = { .cert = c->tls_cert, .key = c->tls_key, .client_ca = c->tls_client_ca };
                if ((r = tls_new(&to, err, err_len, &d->tls)) < 0)
                        return r;
                log_msg(LOG_INFO, "TLS 1.2 and 1.3 with %s%s%s", c->tls_cert,
                        c->tls_client_ca ? "; client certificates required, issued by " : "",
                        c->tls_client_ca ? c->tls_client_ca : "");
        }
        if (c->otlp_endpoint) {
                struct otlp_opts oo = { .endpoint = c->otlp_endpoint, .queue = (int)c->otlp_queue,
                                        .service_version = EFFNET_VERSION };
                if ((r = otlp_new(&oo, err, err_len, &d->otlp)) < 0)
                        return r;
                log_msg(LOG_INFO, "spans of inference requests to %s/v1/traces (OTLP/HTTP JSON)", c->otlp_endpoint);
                trace_record_new(true);
        }
        return 0;
}

/* Phase 4, the listeners: d->http serving d->gen (http's from then on). Undone by
 * daemon_teardown (http_stop, http_free). */
static int listeners_open(struct daemon *d, char *err, size_t err_len)
{
        const struct conf *c = &d->conf;
        struct http_opts ho = {
                .listen = c->listen,
                .admin_listen = c->admin_listen,
                .listen_fd = d->listen_fd,
                .threads = (int)c->http_threads,
                .max_connections = (int)c->max_connections,
                .max_connections_per_client = (int)c->max_connections_per_client,
                .connection_timeout_s = (int)(c->connection_timeout_us / PARSE_S),
                .body_timeout_s = (int)(c->body_timeout_us / PARSE_S),
                .header_timeout_s = (int)(c->header_timeout_us / PARSE_S),
                .decode_threads = (int)c->decode_threads,
                .decode_queue = (int)c->decode_queue,
                .max_body_bytes = c->max_body_bytes,
                .v2_max_body_bytes = c->v2_max_body_bytes,
                .memory_budget = c->memory_budget,
                .max_client_share = c->max_client_share,
                .max_answer_total = c->max_answer_total,
                .max_images = (int)c->max_images,
                .deadline_ms = c->deadline_us / PARSE_MS,
                .retry_after_s = (int)(c->retry_after_us / PARSE_S),
                .ui = c->ui,
                .allowed_hosts = c->allowed_hosts,
                .show_paths = c->show_paths,
                .img = IMG_OPTS_DEFAULT,
                .auth = d->auth,
                .tls = d->tls,
                .access_log = c->access_log || d->otlp ? on_answered : NULL,
                .error_log = on_http_error,
                .repo_control = on_repo_control,
                .grpc_stats = c->grpc_listen ? grpc_stats : NULL,
                .otlp_stats = d->otlp ? otlp_stats : NULL,
                .userdata = d,
        };
        int r;

        ho.img.limits.max_bytes = (size_t)c->max_body_bytes;
        ho.img.limits.max_pixels = c->max_pixels;
        ho.max_request_pixels = c->max_request_pixels;
        ho.img.jpeg_fast = c->jpeg_fast;
        if ((r = http_new(&ho, d->pipe, err, err_len, &d->http)) < 0)
                return r;
        log_msg(LOG_INFO, "listening on %s%s", http_url(d->http),
                d->listen_fd >= 0 ? " (socket from systemd)" : "");
        log_msg(LOG_INFO, "Host names answered: %s", http_hosts(d->http, false));
        if (*http_admin_url(d->http))
                log_msg(LOG_INFO, "admin (probes, metrics) listening on %s; Host names answered: %s",
                        http_admin_url(d->http), http_hosts(d->http, true));
        if (c->grpc_listen)
                return grpc_open(d, err, err_len);
        return 0;
}

/* Phase 5, serving: READY=1, then signals, reloads and the periodic work
 * until SIGTERM or SIGINT, which is returned. A reload still running is
 * left in d->reload for drain. */
static int serve(struct daemon *d)
{
        uint64_t wd = service_watchdog_period_usec();
        int sig;

        d->stall_ns = d->conf.watchdog_stall_us * 1000;
        d->watchdog_ns = (int64_t)wd * 1000 / 2;
        d->last_status_ns = time_now_ns();
        describe(d->gen, d->what, sizeof d->what);
        snprintf(d->status, sizeof d->status, "serving %s on %s", d->what, http_url(d->http));
        service_notify_ready(d->status);
        d->next_status = time_now_ns() + STATUS_PERIOD_NS;
        if (wd)
                service_notify_watchdog();
        d->next_watchdog = time_now_ns() + d->watchdog_ns;
        for (;;) {
                int64_t wait_ns = 250000000;   /* signals, reload completion, watchdog, status */
                if (d->watchdog_ns && d->watchdog_ns < wait_ns)
                        wait_ns = d->watchdog_ns;
                struct timespec ts = { .tv_sec = wait_ns / 1000000000, .tv_nsec = wait_ns % 1000000000 };
                sig = sigtimedwait(&d->sigs, NULL, &ts);
                if (sig == SIGTERM || sig == SIGINT)
                        return sig;
                if (sig == SIGHUP)
                        on_sighup(d);
                if (reload_ready(&d->reload)) {
                        if (d->conf.model_repository)
                                sync_finish(d);
                        else
                                swap_in_reloaded(d);
                }
                tick(d, false);
        }
}

/* Phase 6, draining: new requests get 503, queued ones finish; slow
 * readers of answers are cut off after drain-timeout. */
static void drain(struct daemon *d, int sig)
{
        void *abandoned;
        char err[512];

        log_msg(LOG_INFO, "%s: draining (%d requests in flight, up to %g s)", sig == SIGTERM ? "SIGTERM" : "SIGINT",
                http_inflight(d->http), (double)d->conf.drain_timeout_us / PARSE_S);
        service_notify_stopping("draining");
        http_drain(d->http);
        struct kserve *k = atomic_load(&d->grpc);
        if (k)
                kserve_drain(k);
        /* Queued requests always finish (result or deadline), since
         * libmicrohttpd cannot stop with suspended connections; only slow
         * readers of answers are cut off after drain-timeout. */
        int64_t until = time_now_ns() + d->conf.drain_timeout_us * 1000;
        while (http_waiting(d->http) > 0 || (k && kserve_pending(k) > 0) ||
               ((http_inflight(d->http) > 0 || (k && kserve_inflight(k) > 0)) && time_now_ns() < until)) {
                struct timespec ts = { .tv_sec = 0, .tv_nsec = 10000000 };
                nanosleep(&ts, NULL);
                tick(d, true);
        }
        if (http_inflight(d->http) > 0)
                log_msg(LOG_WARNING, "closing %d connection(s) still sending answers", http_inflight(d->http));
        /* A reload still loading is not waited for: it could outlast the
         * stop timeout. Its thread is left to the process exit. */
        if (reload_running(&d->reload) && !reload_ready(&d->reload)) {
                log_msg(LOG_INFO, "not waiting for the reload in progress");
                d->abandon_reload = true;
        } else if (reload_running(&d->reload)) {
                if (reload_finish(&d->reload, err, sizeof err, &abandoned) == 0 && d->conf.model_repository)
                        sync_job_free(abandoned);
                else if (abandoned)
                        gen_free(abandoned);
                repo.running = NULL;
                conf_free(&d->next);
        }
}

/* Phase 7, teardown: undoes what the phases filled in, in reverse. */
static void daemon_teardown(struct daemon *d)
{
        struct generation *old;

        /* gRPC first: its requests use the pipeline; drain waited for
         * those in it, and its open calls are cancelled. */
        atomic_store(&d->grpc, kserve_free(atomic_load(&d->grpc)));
        if (d->http)
                http_stop(d->http);
        d->http = http_free(d->http);
        d->pipe = pipe_free(d->pipe);
        while (d->reg && (old = reg_collect_retired(d->reg)))
                gen_free(old);
        d->reg = reg_free(d->reg);           /* frees the versions it serves */
        d->gen = NULL;
        cpu_gate = batch_gate_free(cpu_gate);
        while (repo.served) {
                struct served *x = repo.served;
                repo.served = x->next;
                free(x);
        }
        while (repo.overrides) {
                struct repo_override *o = repo.overrides;
                repo.overrides = o->next;
                repo_override_free(o);
        }
        free(repo.wanted);
        repo.wanted = NULL;
        /* After the listeners: every answered request has been recorded;
         * what is queued gets OTLP_FLUSH_MS to go out. */
        d->otlp = otlp_free(d->otlp);
        d->tls = tls_free(d->tls);
        d->auth = auth_free(d->auth);
}

int main(int argc, char **argv)
{
        struct daemon d = { .listen_fd = -1, .reload = RELOAD_INIT };
        char err[4096];
        int sig, r, code;

        omp_spin_default(argv);
        if (settings_open(argc, argv, &d, &code) > 0)
                goto out;
        if ((r = process_setup(&d, err, sizeof err)) < 0 || (r = model_open(&d, err, sizeof err)) < 0 ||
            (r = security_open(&d, err, sizeof err)) < 0 || (r = listeners_open(&d, err, sizeof err)) < 0) {
                log_msg(LOG_ERR, "%s", err);
                goto fail;
        }
        sig = serve(&d);
        drain(&d, sig);
        daemon_teardown(&d);
        log_msg(LOG_INFO, "stopped");
        /* exit() would run library destructors under the loading thread. */
        if (d.abandon_reload)
                _exit(0);
        code = 0;
        goto out;
fail:
        daemon_teardown(&d);
        code = 1;
out:
        conf_free(&d.conf);
        free(d.args);
        return code;
}
