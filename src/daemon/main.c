/* effnetd: the EfficientNetV2 classification daemon. main() runs its
 * phases in order: settings, process set-up, model, listeners, serving
 * (signals, SIGHUP reloads through daemon/reload.h), drain, teardown. */
#include "util.h"
#include "config.h"
#include "log.h"
#include "reload.h"
#include "service.h"
#include "effnet.h"
#include "hub.h"
#include "api.h"
#include "batcher.h"
#include "http.h"
#include "hosts.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
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
                "Usage: %s [--config FILE] [--weights FILE|hf://ORG/NAME[@REV][/FILE]] [--listen 127.0.0.1:8080]\n"
                "       [OPTIONS]\n"
                "       %s --check-config | --print-config [OPTIONS]\n"
                "\n"
                "Serves EfficientNetV2 image classification over HTTP:\n"
                "  POST /v1/classify[?top_k=K]  (image/jpeg, image/png or multipart/form-data)\n"
                "  GET  /v1/models, /healthz, /readyz, /metrics\n"
                "  GET  /  the try-it page in a browser (and /ui/app.js, /ui/app.css; --no-ui: off)\n"
                "KServe v2 / Open Inference Protocol (with Triton's binary data, classification\n"
                "and model configuration extensions):\n"
                "  GET  /v2, /v2/health/live, /v2/health/ready\n"
                "  GET  /v2/models/{model}[/versions/1][/ready|/config]\n"
                "  POST /v2/models/{model}[/versions/1]/infer\n"
                "\n"
                "Settings come from the config file, then EFFNETD_* environment variables,\n"
                "then flags (each later source wins). SIGHUP reloads the [model] settings\n"
                "and the weights; SIGTERM drains and exits.\n"
                "\n"
                "Options:\n",
                prog, prog);
        conf_usage(f);
        fprintf(f, "  --check-config               validate the settings (and that the files exist), then exit\n"
                   "  --print-config               print the settings in effect and where each came from\n"
                   "  --help, --version\n");
}

/* The local file of the weights setting while a generation is built: the
 * file itself, or the hub cache's snapshot of hf:// weights. */
struct weights_file {
        char *path;                /* the local file */
        struct hub_file *hub;      /* hf:// weights: the cached file; NULL otherwise */
        struct hub_ref ref;        /* hf:// weights: what was asked for */
        char *hub_config;          /* hf:// weights: the repository's config.json in the cache, or NULL */
};

static void weights_file_clear(struct weights_file *wf)
{
        free(wf->path);
        hub_file_free(wf->hub);
        free(wf->hub_config);
        *wf = (struct weights_file){ 0 };
}

/* The SHA-256 of n bytes as 64 hex digits (and a NUL) in ret_hex. */
static int sha256_hex(const void *data, size_t n, char ret_hex[65])
{
        unsigned char md[EVP_MAX_MD_SIZE];
        unsigned md_len = 0;

        if (EVP_Digest(data, n, md, &md_len, EVP_sha256(), NULL) != 1 || md_len != 32)
                return -ENOMEM;
        for (unsigned i = 0; i < md_len; i++)
                snprintf(ret_hex + 2 * i, 3, "%02x", md[i]);
        return 0;
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

/* The repository's config.json at the weights' commit, for its class names
 * (timm writes label_names there). From the cache only when the weights
 * came from it, so that a start that needed no network needs none for
 * this either; effnet pull fetches it alongside the weights. NULL when
 * there is none. */
static char *hub_config_of(const struct hub_ref *weights_ref, const struct hub_file *f, int64_t deadline_s)
{
        struct hub_ref ref;
        struct hub_file *cf = NULL;
        struct hub_opts o = { .offline = !f->network, .deadline_s = deadline_s,
                              .deadline_name = HUB_DEADLINE_SETTING };
        char why[1024];
        const char *slash = strrchr(weights_ref->file, '/');
        char file[HUB_FILE_MAX + 1];

        /* config.json next to the weights' file (timm puts both at the top). */
        snprintf(file, sizeof file, "%.*sconfig.json", slash ? (int)(slash - weights_ref->file + 1) : 0,
                 weights_ref->file);
        if (hub_ref_init(weights_ref->repo, f->commit, file, why, sizeof why, &ref) < 0 ||
            hub_fetch(&ref, &o, why, sizeof why, &cf) < 0)
                return NULL;
        char *path = cf->path;
        cf->path = NULL;
        hub_file_free(cf);
        return path;
}

/* The local file of the weights setting: the file itself, or for
 * hf://ORG/NAME[@REVISION][/FILE] the hub cache's snapshot, downloaded
 * first when it is not there (wf->hub, wf->ref, wf->hub_config then). */
static int weights_resolve(const struct conf *c, struct weights_file *wf, char *err, size_t err_len)
{
        const char *weights = c->weights;
        int64_t deadline_s = c->hub_download_deadline_us / PARSE_S;
        struct hub_file *f = NULL;
        struct pull_log pl = { .uri = weights, .deadline_s = deadline_s };
        struct hub_opts o = { .progress = on_pull_progress, .userdata = &pl, .deadline_s = deadline_s,
                              .deadline_name = HUB_DEADLINE_SETTING };
        char why[1024];
        int r;

        if (!hub_is_uri(weights)) {
                wf->path = strdup(weights);
                return wf->path ? 0 : err_set(err, err_len, -ENOMEM, "out of memory");
        }
        if ((r = hub_parse_uri(weights, why, sizeof why, &wf->ref)) < 0 ||
            (r = hub_fetch(&wf->ref, &o, why, sizeof why, &f)) < 0)
                return err_set(err, err_len, r, "weights %s: %s", weights, why);
        log_msg(LOG_INFO, "weights %s: commit %s, %s (%s)", weights, f->commit, f->path,
                f->downloaded ? "downloaded" : f->network ? "in the cache, linked" : "from the cache");
        wf->path = strdup(f->path);
        if (!wf->path) {
                hub_file_free(f);
                return err_set(err, err_len, -ENOMEM, "out of memory");
        }
        wf->hub_config = hub_config_of(&wf->ref, f, deadline_s);
        wf->hub = f;
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
        char why[512];
        int r;

        if (c->labels || !hub_config)
                return api_labels_load(c->labels, classes, err, err_len, ret_labels);
        r = api_labels_load_hub_config(hub_config, classes, why, sizeof why, ret_labels);
        if (r == 0)
                return 0;
        if (r != -ENOENT)
                log_msg(LOG_WARNING, "labels: not taken from the repository's config.json: %s", why);
        return api_labels_load(NULL, classes, err, err_len, ret_labels);
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
        if ((r = sha256_hex(file, file_len, sha256)) < 0)
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

/* A warm batcher for g's model. */
static int batcher_open(const struct conf *c, struct generation *g, char *err, size_t err_len)
{
        struct batch_opts bo = {
                .max_batch = (int)c->max_batch,
                .max_delay_us = c->max_delay_us,
                .queue_images = (int)c->queue,
                .workers = (int)c->workers,
                .threads = (int)c->threads,
                .precision = g->precision,
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

/* The generation of c: its model, labels, and a warm batcher. */
static int generation_open(const struct conf *c, char *err, size_t err_len, struct generation **ret_gen)
{
        struct weights_file wf = { 0 };
        struct generation *g = NULL;
        int r;

        if ((r = gen_new(&g)) < 0) {
                err_set(err, err_len, r, "out of memory");
                goto fail;
        }
        if ((r = effnet_precision_resolve(c->precision, err, err_len, &g->precision)) < 0 ||
            (r = weights_resolve(c, &wf, err, err_len)) < 0 ||
            (r = model_load(c, &wf, g, err, err_len)) < 0 ||
            (r = labels_open(c, wf.hub_config, effnet_model_info(g->model)->classes, err, err_len,
                             &g->labels)) < 0 ||
            (r = batcher_open(c, g, err, err_len)) < 0)
                goto fail;
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
        const struct effnet_info *info = effnet_model_info(g->model);
        snprintf(buf, n, "%s, %s, %d classes, input %d, weights %s", info->variant,
                 effnet_precision_name(g->precision), info->classes, info->preproc.size, g->weights);
}

/* http's access_log callback: one access line per answered request. */
static void on_answered(void *userdata, const struct http_access *a)
{
        log_access(a);
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
        bool hub = hub_is_uri(c->weights);
        const char *files[] = { hub ? NULL : c->weights, c->labels };
        int r = hub ? check_hub_weights(c->weights) : 0;

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
        struct generation *gen;    /* model_open: the generation served; owned until listeners_open
                                    * hands it to http, then http's (the current one, main thread only) */
        struct http_server *http;  /* listeners_open */
        struct auth *auth;         /* security_open: API keys, or NULL */
        struct tls *tls;           /* security_open: TLS credentials, or NULL */
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

/* The loader of a generation, on the reload's thread: input is the
 * struct conf to load. */
static int generation_load(const void *input, char *err, size_t err_len, void **ret_result)
{
        struct generation *g = NULL;
        int r = generation_open(input, err, err_len, &g);

        if (r == 0)
                *ret_result = g;
        return r;
}

/* The settings of a reload, read again: the [model] ones (weights, labels,
 * precision, padding, bn-eps) take effect, the others need a restart. */
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

/* SIGHUP: starts loading the next generation, unless one is loading. */
static void on_sighup(struct daemon *d)
{
        int r;

        security_reload(d);
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

/* A loaded generation swapped in (the old one retires: tick frees it once
 * its last request is answered), or the reason it is not. */
static void swap_in_reloaded(struct daemon *d)
{
        struct generation *n = NULL;
        char err[512];
        void *next;

        if (reload_finish(&d->reload, err, sizeof err, &next) == 0) {
                n = next;
                if (http_swap_generation(d->http, n, err, sizeof err) < 0)
                        n = gen_free(n);
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

/* Periodic work of the main loop: watchdog keep-alive when the workers make
 * progress, STATUS= with the rate, and freeing retired generations. */
static void tick(struct daemon *d, bool stopping)
{
        int64_t now = time_now_ns();
        char err[256];
        struct generation *old;

        while ((old = http_collect_retired(d->http))) {
                /* Its last request is answered: executors and threads go. */
                log_msg(LOG_INFO, "released the replaced model (sha256 %.16s...)", old->sha256);
                gen_free(old);
        }
        if (d->watchdog_ns && now >= d->next_watchdog) {
                d->next_watchdog = now + d->watchdog_ns;
                if (batch_check_progress(d->gen->batch, d->stall_ns, err, sizeof err) == 0) {
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
        char err[4096];
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

/* Phase 3, the model: d->gen, loaded on a thread of its own while this one
 * waits for signals: SIGTERM or SIGINT during a long load or warm-up ends
 * the process at once (nothing is served yet, so nothing is lost), where
 * waiting for the load could outlast the service manager's stop timeout.
 * Undone by daemon_teardown (gen_free, unless http has it). */
static int model_open(struct daemon *d, char *err, size_t err_len)
{
        struct reload first = RELOAD_INIT;
        struct batch_config bc;
        struct effnet_cpu cpu;
        int64_t t0 = time_now_ns();
        void *gen = NULL;
        int r;

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
        d->gen = gen;
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

/* Phase 4a, the listeners' security: API keys and TLS credentials, when
 * set. Undone by daemon_teardown, after the listeners. */
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
                .access_log = c->access_log ? on_answered : NULL,
                .error_log = on_http_error,
        };
        int r;

        ho.img.limits.max_bytes = (size_t)c->max_body_bytes;
        ho.img.limits.max_pixels = c->max_pixels;
        ho.max_request_pixels = c->max_request_pixels;
        ho.img.jpeg_fast = c->jpeg_fast;
        if ((r = http_new(&ho, d->gen, err, err_len, &d->http)) < 0)
                return r;
        log_msg(LOG_INFO, "listening on %s%s", http_url(d->http),
                d->listen_fd >= 0 ? " (socket from systemd)" : "");
        log_msg(LOG_INFO, "Host names answered: %s", http_hosts(d->http, false));
        if (*http_admin_url(d->http))
                log_msg(LOG_INFO, "admin (probes, metrics) listening on %s; Host names answered: %s",
                        http_admin_url(d->http), http_hosts(d->http, true));
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
                if (reload_ready(&d->reload))
                        swap_in_reloaded(d);
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
        /* Queued requests always finish (result or deadline), since
         * libmicrohttpd cannot stop with suspended connections; only slow
         * readers of answers are cut off after drain-timeout. */
        int64_t until = time_now_ns() + d->conf.drain_timeout_us * 1000;
        while (http_waiting(d->http) > 0 || (http_inflight(d->http) > 0 && time_now_ns() < until)) {
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
                if (reload_finish(&d->reload, err, sizeof err, &abandoned) == 0)
                        gen_free(abandoned);
                conf_free(&d->next);
        }
}

/* Phase 7, teardown: undoes what the phases filled in, in reverse. */
static void daemon_teardown(struct daemon *d)
{
        struct generation *old;

        if (d->http) {
                http_stop(d->http);
                while ((old = http_collect_retired(d->http)))
                        gen_free(old);
        }
        if (!d->http)
                d->gen = gen_free(d->gen);   /* never handed to http */
        d->http = http_free(d->http);        /* frees the generations it has */
        d->gen = NULL;
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
