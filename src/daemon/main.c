/* effnetd: the EfficientNetV2 classification daemon (settings, start-up,
 * systemd integration, signals: SIGTERM/SIGINT drain, SIGHUP reload). */
#include "common/util.h"
#include "daemon/config.h"
#include "daemon/log.h"
#include "daemon/sd.h"
#include "effnet.h"
#include "hub/hub.h"
#include "server/api.h"
#include "server/batcher.h"
#include "server/http.h"

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

/* One model generation: what a reload builds and swaps in. */
struct serving {
        struct effnet_model *model;
        struct api_labels *labels;
        struct batch *batch;
        char *weights;
        char sha256[65];
        int precision;
        char *path;                /* the local file */
        struct hub_file *hub;      /* hf:// weights: the cached file; NULL otherwise */
        struct hub_ref ref;        /* hf:// weights: what was asked for */
        char *hub_config;          /* hf:// weights: the repository's config.json in the cache, or NULL */
        struct api_weights source; /* for /v1/models; points into the fields above */
};

static struct serving *serving_free(struct serving *sv)
{
        if (!sv)
                return NULL;
        sv->batch = batch_free(sv->batch);   /* finishes queued jobs first */
        sv->labels = api_labels_free(sv->labels);
        sv->model = effnet_model_free(sv->model);
        free(sv->weights);
        free(sv->path);
        hub_file_free(sv->hub);
        free(sv->hub_config);
        free(sv);
        return NULL;
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
        int64_t last_log_ns, last_status_ns;
        int last_tenth;
};

#define PULL_LOG_PERIOD_NS ((int64_t)10 * 1000000000)
#define PULL_STATUS_PERIOD_NS ((int64_t)1000000000)
/* Each sign of progress gives the start this much more time under systemd. */
#define PULL_EXTEND_USEC ((uint64_t)60 * 1000000)

static void on_pull_progress(void *userdata, const struct hub_progress *p)
{
        struct pull_log *pl = userdata;
        int64_t now = time_now_ns();
        double mb = (double)p->done / 1e6, total = (double)p->total / 1e6;
        int tenth = p->total > 0 ? (int)(p->done * 10 / p->total) : 10;

        if (p->started) {
                if (p->resumed > 0)
                        log_msg(LOG_INFO, "weights %s: downloading %.1f MB from %s into %s, resuming at %.1f MB",
                                pl->uri, total, p->url, p->blob, mb);
                else
                        log_msg(LOG_INFO, "weights %s: downloading %.1f MB from %s into %s", pl->uri, total, p->url,
                                p->blob);
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
                sd_send_status("not ready: downloading weights %s, %.1f of %.1f MB", pl->uri, mb, total);
                sd_extend_timeout(PULL_EXTEND_USEC);
                pl->last_status_ns = now;
        }
}

/* The repository's config.json at the weights' commit, for its class names
 * (timm writes label_names there). From the cache only when the weights
 * came from it, so that a start that needed no network needs none for
 * this either; effnet pull fetches it alongside the weights. NULL when
 * there is none. */
static char *hub_config_of(const struct hub_ref *weights_ref, const struct hub_file *f)
{
        struct hub_ref ref;
        struct hub_file *cf = NULL;
        struct hub_opts o = { .offline = !f->network };
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
 * first when it is not there (sv->hub, sv->ref, sv->hub_config then). */
static int weights_resolve(const char *weights, struct serving *sv, char *err, size_t err_len)
{
        struct hub_file *f = NULL;
        struct pull_log pl = { .uri = weights };
        struct hub_opts o = { .progress = on_pull_progress, .userdata = &pl };
        char why[1024];
        int r;

        if (!hub_is_uri(weights)) {
                sv->path = strdup(weights);
                return sv->path ? 0 : err_set(err, err_len, -ENOMEM, "out of memory");
        }
        if ((r = hub_parse_uri(weights, why, sizeof why, &sv->ref)) < 0 ||
            (r = hub_fetch(&sv->ref, &o, why, sizeof why, &f)) < 0)
                return err_set(err, err_len, r, "weights %s: %s", weights, why);
        log_msg(LOG_INFO, "weights %s: commit %s, %s (%s)", weights, f->commit, f->path,
                f->downloaded ? "downloaded" : f->network ? "in the cache, linked" : "from the cache");
        sv->path = strdup(f->path);
        if (!sv->path) {
                hub_file_free(f);
                return err_set(err, err_len, -ENOMEM, "out of memory");
        }
        sv->hub_config = hub_config_of(&sv->ref, f);
        sv->hub = f;
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
                sd_send_status("not ready: warming up, %d of %d executor steps (build, first run)", done, total);
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
static int labels_open(const struct conf *c, struct serving *sv, int classes, char *err, size_t err_len)
{
        char why[512];
        int r;

        if (c->labels || !sv->hub_config)
                return api_labels_load(c->labels, classes, err, err_len, &sv->labels);
        r = api_labels_load_hub_config(sv->hub_config, classes, why, sizeof why, &sv->labels);
        if (r == 0)
                return 0;
        if (r != -ENOENT)
                log_msg(LOG_WARNING, "labels: not taken from the repository's config.json: %s", why);
        return api_labels_load(NULL, classes, err, err_len, &sv->labels);
}

/* Loads the model of c, its labels, and a warm batcher. */
static int serving_open(const struct conf *c, char *err, size_t err_len, struct serving **ret)
{
        struct serving *sv = calloc(1, sizeof *sv);
        int r;

        if (!sv)
                return err_set(err, err_len, -ENOMEM, "out of memory");
        if ((r = effnet_precision_resolve((int)c->precision, err, err_len, &sv->precision)) < 0)
                goto fail;
        if (!(sv->weights = strdup(c->weights))) {
                r = err_set(err, err_len, -ENOMEM, "out of memory");
                goto fail;
        }
        if ((r = weights_resolve(c->weights, sv, err, err_len)) < 0)
                goto fail;
        /* The file is read into memory, so that one rewritten in place
         * (cp over it) cannot fault the daemon, and hashed from those bytes,
         * so that the sha256 reported is that of what is served. */
        struct effnet_open_opts oo = { .padding = (int)c->padding, .bn_eps = (float)c->bn_eps, .copy = 1 };
        sd_send_status("not ready: loading weights %s", sv->weights);
        if ((r = effnet_model_open(sv->path, &oo, err, err_len, &sv->model)) < 0)
                goto fail;
        size_t file_len = 0;
        const void *file = effnet_model_file(sv->model, &file_len);
        if ((r = sha256_hex(file, file_len, sv->sha256)) < 0) {
                err_set(err, err_len, r, "sha256: out of memory");
                goto fail;
        }
        const struct effnet_info *info = effnet_model_info(sv->model);
        sv->source = (struct api_weights){
                .source = sv->hub ? API_WEIGHTS_HUB : info->seed >= 0 ? API_WEIGHTS_SEEDED : API_WEIGHTS_FILE,
                .path = sv->path, .sha256 = sv->sha256, .seed = info->seed,
                .repo = sv->hub ? sv->ref.repo : NULL, .revision = sv->hub ? sv->ref.revision : NULL,
                .commit = sv->hub ? sv->hub->commit : NULL, .file = sv->hub ? sv->ref.file : NULL,
        };
        if ((r = labels_open(c, sv, info->classes, err, err_len)) < 0)
                goto fail;
        struct batch_opts bo = {
                .max_batch = (int)c->max_batch,
                .max_delay_us = (int64_t)(c->max_delay_ms * 1000.0),
                .queue_images = (int)c->queue,
                .workers = (int)c->workers,
                .threads = (int)c->threads,
                .precision = sv->precision,
                .progress = on_warm_progress,
        };
        struct warm_log wl = { .t0 = time_now_ns() };
        bo.userdata = &wl;
        pthread_mutex_init(&wl.lock, NULL);
        r = batch_new(sv->model, &bo, err, err_len, &sv->batch);
        pthread_mutex_destroy(&wl.lock);
        if (r < 0)
                goto fail;
        /* Every executor exists and holds its weights: the copy of the file
         * is not needed any more. */
        effnet_model_drop_file(sv->model);
        *ret = sv;
        return 0;
fail:
        serving_free(sv);
        return r;
}

/* What is served, where its weights and names come from, in the log: the
 * untrained default and answers without names say so. */
static void log_model(const struct serving *sv)
{
        const struct effnet_info *info = effnet_model_info(sv->model);
        const struct api_weights *w = &sv->source;
        char from[1200];

        if (w->source == API_WEIGHTS_HUB)
                snprintf(from, sizeof from, "hub %s revision %s commit %s file %s", w->repo, w->revision, w->commit,
                         w->file);
        else
                snprintf(from, sizeof from, "%s %s", w->source == API_WEIGHTS_SEEDED ? "seeded" : "file", w->path);
        log_msg(LOG_INFO, "model %s: %s, %d classes, input %d, %s weights from %s (sha256 %.16s...), labels %s",
                sv->weights, info->variant, info->classes, info->preproc.size, info->dtype, from, sv->sha256,
                api_labels_source(sv->labels));
        if (w->seed >= 0)
                log_msg(LOG_WARNING, "weights %s are seeded (seed %lld), not trained: the classes predicted mean "
                        "nothing; serve trained weights, e.g. --weights hf://timm/tf_efficientnetv2_s.in21k_ft_in1k",
                        sv->weights, (long long)w->seed);
        if (strcmp(api_labels_source(sv->labels), "indices") == 0)
                log_msg(LOG_NOTICE, "labels: no names for the model's %d classes (none built in, none in the "
                        "weights' repository): each label is the class index; --labels FILE names them",
                        info->classes);
}

static struct http_backend backend_of(struct serving *sv)
{
        return (struct http_backend){ .model = sv->model, .batch = sv->batch, .labels = sv->labels,
                                      .weights = sv->weights, .weights_sha256 = sv->sha256,
                                      .source = &sv->source, .owner = sv };
}

static void describe(const struct serving *sv, char *buf, size_t n)
{
        const struct effnet_info *info = effnet_model_info(sv->model);
        snprintf(buf, n, "%s, %s, %d classes, input %d, weights %s", info->variant,
                 effnet_precision_name(sv->precision), info->classes, info->preproc.size, sv->weights);
}

/* A reload runs on its own thread so that the main loop keeps answering
 * signals and feeding the watchdog while the new executors warm up. */
struct reload {
        pthread_t thread;
        bool running;
        atomic_bool done;
        struct conf conf;          /* owned by the thread until done */
        struct serving *result;    /* NULL on failure */
        char err[512];
};

static void *reload_main(void *arg)
{
        struct reload *rl = arg;

        if (serving_open(&rl->conf, rl->err, sizeof rl->err, &rl->result) < 0)
                rl->result = NULL;
        atomic_store(&rl->done, true);
        return NULL;
}

/* The first load runs on a thread of its own while this one waits for
 * signals: SIGTERM or SIGINT during a long load or warm-up ends the process
 * at once (nothing is served yet, so nothing is lost), where waiting for the
 * load could outlast the service manager's stop timeout. */
static int open_first(const struct conf *c, const sigset_t *sigs, char *err, size_t err_len, struct serving **ret)
{
        struct reload rl = { .conf = *c };   /* the thread only reads it; c keeps owning it */
        int r;

        if ((r = -pthread_create(&rl.thread, NULL, reload_main, &rl)) < 0)
                return err_set(err, err_len, r, "loading thread: %s", strerror(-r));
        while (!atomic_load(&rl.done)) {
                struct timespec ts = { .tv_sec = 0, .tv_nsec = 50000000 };
                int sig = sigtimedwait(sigs, NULL, &ts);
                if (sig == SIGTERM || sig == SIGINT) {
                        log_msg(LOG_INFO, "%s during start-up: exiting without waiting for the model load",
                                sig == SIGTERM ? "SIGTERM" : "SIGINT");
                        _exit(0);
                }
                if (sig == SIGHUP)
                        log_msg(LOG_NOTICE, "SIGHUP during start-up: ignored, the model is loading");
        }
        pthread_join(rl.thread, NULL);
        if (!rl.result)
                return err_set(err, err_len, -EINVAL, "%s", rl.err);
        *ret = rl.result;
        return 0;
}

/* Reads the settings again; the [model] ones (weights, labels, precision,
 * padding, bn-eps) take effect, the others need a restart. */
static int reload_start(struct reload *rl, int argc, char **argv, const struct conf *running)
{
        char err[2048];
        int r;

        memset(rl, 0, sizeof *rl);
        if ((r = conf_load(argc, argv, &rl->conf, err, sizeof err)) < 0) {
                log_msg(LOG_ERR, "reload: bad settings, keeping the running model: %s", err);
                return r;
        }
        /* Batching, limits and HTTP stay as started: swap only the model. */
        struct conf *n = &rl->conf;
        char changed[1024];
        if (conf_changes(running, n, "model", changed, sizeof changed) > 0)
                log_msg(LOG_WARNING, "reload: only [model] settings change on reload; these keep their running "
                        "values until a restart: %s", changed);
        n->max_batch = running->max_batch;
        n->queue = running->queue;
        n->workers = running->workers;
        n->threads = running->threads;
        n->max_delay_ms = running->max_delay_ms;
        if ((r = -pthread_create(&rl->thread, NULL, reload_main, rl)) < 0) {
                log_msg(LOG_ERR, "reload: thread: %s", strerror(-r));
                conf_free(&rl->conf);
                return r;
        }
        rl->running = true;
        return 0;
}

static void on_access(void *userdata, const struct http_access *a)
{
        struct log_access la = { .request_id = a->request_id, .client = a->client, .method = a->method,
                                 .path = a->path, .status = a->status, .error = a->error,
                                 .bytes_in = a->body_bytes, .bytes_out = a->answer_bytes, .images = a->images,
                                 .queue_ms = a->queue_ms, .inference_ms = a->inference_ms,
                                 .batch_size = a->batch_size, .ms = a->ms };
        log_access(&la);
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

/* Whether the files the settings name can be read (for --check-config). */
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

struct loop {
        struct http_server *http;
        struct serving *current;
        int64_t watchdog_ns;       /* keep-alive period / 2; 0 = no watchdog */
        int64_t next_watchdog, next_status;
        int64_t stall_ns;
        uint64_t last_images;
        int64_t last_status_ns;
        char what[512];
        bool stalled;              /* logged once per stall */
};

/* Periodic work of the main loop: watchdog keep-alive when the workers make
 * progress, STATUS= with the rate, and freeing retired generations. */
static void tick(struct loop *L, bool stopping)
{
        int64_t now = time_now_ns();
        char err[256];
        void *old;

        while ((old = http_collect_retired(L->http))) {
                struct serving *sv = old;
                /* Its last request is answered: executors and threads go. */
                log_msg(LOG_INFO, "released the replaced model (sha256 %.16s...)", sv->sha256);
                serving_free(sv);
        }
        if (L->watchdog_ns && now >= L->next_watchdog) {
                L->next_watchdog = now + L->watchdog_ns;
                if (batch_check_progress(L->current->batch, L->stall_ns, err, sizeof err) == 0) {
                        sd_send_watchdog();
                        L->stalled = false;
                } else if (!L->stalled) {
                        L->stalled = true;
                        log_msg(LOG_ERR, "no watchdog keep-alive: %s", err);
                }
        }
        if (!stopping && now >= L->next_status) {
                uint64_t images = http_images(L->http);
                double secs = (double)(now - L->last_status_ns) / 1e9;
                double rate = secs > 0 ? (double)(images - L->last_images) / secs : 0;
                sd_send_status("serving %s on %s; %llu images, %.1f images/s", L->what, http_url(L->http),
                               (unsigned long long)images, rate);
                L->last_images = images;
                L->last_status_ns = now;
                L->next_status = now + STATUS_PERIOD_NS;
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

int main(int argc, char **argv)
{
        struct conf c = { 0 };
        struct http_server *http = NULL;
        struct serving *sv = NULL;
        struct reload rl = { 0 };
        bool check = false, print = false, abandon_reload = false;
        char err[4096];
        char **args = NULL;
        int nargs = 1, listen_fd = -1, r;
        sigset_t sigs;

        omp_spin_default(argv);
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
        /* The actions are not settings: take them out before parsing. */
        args = calloc((size_t)argc + 1, sizeof *args);
        if (!args)
                return 1;
        args[0] = argv[0];
        for (int i = 1; i < argc; i++) {
                if (strcmp(argv[i], "--check-config") == 0)
                        check = true;
                else if (strcmp(argv[i], "--print-config") == 0)
                        print = true;
                else
                        args[nargs++] = argv[i];
        }
        if (conf_load(nargs, args, &c, err, sizeof err) < 0) {
                print_errors(err);
                free(args);
                return 2;
        }
        if (check || print) {
                r = check ? check_files(&c) : 0;
                if (print)
                        conf_print(stdout, &c);
                if (check && r == 0)
                        fprintf(stderr, "%s: configuration OK (config file: %s)\n", prog,
                                c.file ? c.file : "none read");
                conf_free(&c);
                free(args);
                return r < 0 ? 2 : 0;
        }
        log_setup(prog, c.log_format == CONF_LOG_JSON);

        /* Signals go to the main thread's sigtimedwait; every thread started
         * from here on inherits the mask. */
        sigemptyset(&sigs);
        sigaddset(&sigs, SIGTERM);
        sigaddset(&sigs, SIGINT);
        sigaddset(&sigs, SIGHUP);
        pthread_sigmask(SIG_BLOCK, &sigs, NULL);
        signal(SIGPIPE, SIG_IGN);
        raise_fd_limit(c.max_connections);
        {
                char *line = NULL;
                size_t len = 0;
                FILE *f = open_memstream(&line, &len);
                if (f) {
                        conf_print_line(f, &c);
                        fclose(f);
                        if (line && len)
                                line[len - 1] = '\0';
                        log_msg(LOG_INFO, "settings: %s", line ? line : "");
                        free(line);
                }
        }
        if ((r = sd_take_listen_fd(&listen_fd)) < 0) {
                log_msg(LOG_ERR, "socket activation: expected one listening stream socket");
                goto out;
        }

        int64_t t0 = time_now_ns();
        if ((r = open_first(&c, &sigs, err, sizeof err, &sv)) < 0) {
                log_msg(LOG_ERR, "%s", err);
                goto out;
        }
        struct batch_config bc;
        struct effnet_cpu cpu;
        batch_get_config(sv->batch, &bc);
        effnet_cpu_info(&cpu);
        log_model(sv);
        log_msg(LOG_INFO,
                "%d worker(s) x %d thread(s) of %d usable CPUs, %s (precision %s, CPU %s), batch sizes up to %d, "
                "ready in %.0f ms (%.0f MB of executor memory)",
                bc.workers, bc.threads, cpu_usable_count(), effnet_precision_name(sv->precision),
                effnet_precision_name((int)c.precision), cpu.isa, bc.max_batch,
                (double)(time_now_ns() - t0) / 1e6, (double)bc.exec_bytes / (1024.0 * 1024.0));

        struct http_opts ho = {
                .listen = c.listen,
                .admin_listen = c.admin_listen,
                .listen_fd = listen_fd,
                .threads = (int)c.http_threads,
                .max_connections = (int)c.max_connections,
                .max_connections_per_client = (int)c.max_connections_per_client,
                .connection_timeout_s = (int)c.connection_timeout,
                .body_timeout_s = (int)c.body_timeout,
                .header_timeout_s = (int)c.header_timeout,
                .decode_threads = (int)c.decode_threads,
                .decode_queue = (int)c.decode_queue,
                .max_body_bytes = c.max_body_bytes,
                .v2_max_body_bytes = c.v2_max_body_bytes,
                .max_body_total = c.max_body_total,
                .max_answer_total = c.max_answer_total,
                .max_images = (int)c.max_images,
                .deadline_ms = c.deadline_ms,
                .retry_after_s = (int)c.retry_after,
                .ui = c.ui,
                .img = IMG_OPTS_DEFAULT,
                .access_log = c.access_log ? on_access : NULL,
                .error_log = on_http_error,
        };
        ho.img.limits.max_bytes = (size_t)c.max_body_bytes;
        ho.img.limits.max_pixels = c.max_pixels;
        ho.max_request_pixels = c.max_request_pixels;
        ho.img.jpeg_fast = c.jpeg_fast;
        struct http_backend be = backend_of(sv);
        if ((r = http_new(&ho, &be, err, sizeof err, &http)) < 0) {
                log_msg(LOG_ERR, "%s", err);
                goto out;
        }
        log_msg(LOG_INFO, "listening on %s%s", http_url(http), listen_fd >= 0 ? " (socket from systemd)" : "");
        if (*http_admin_url(http))
                log_msg(LOG_INFO, "admin (probes, metrics) listening on %s", http_admin_url(http));

        struct loop L = { .http = http, .current = sv, .stall_ns = c.watchdog_stall * 1000000000 };
        uint64_t wd = sd_watchdog_period_usec();
        L.watchdog_ns = (int64_t)wd * 1000 / 2;
        L.last_status_ns = time_now_ns();
        describe(sv, L.what, sizeof L.what);
        char status[700];
        snprintf(status, sizeof status, "serving %s on %s", L.what, http_url(http));
        sd_send_ready(status);
        L.next_status = time_now_ns() + STATUS_PERIOD_NS;
        if (wd)
                sd_send_watchdog();
        L.next_watchdog = time_now_ns() + L.watchdog_ns;

        int sig = 0;
        for (;;) {
                int64_t wait_ns = 250000000;   /* signals, reload completion, watchdog, status */
                if (L.watchdog_ns && L.watchdog_ns < wait_ns)
                        wait_ns = L.watchdog_ns;
                struct timespec ts = { .tv_sec = wait_ns / 1000000000, .tv_nsec = wait_ns % 1000000000 };
                sig = sigtimedwait(&sigs, NULL, &ts);
                if (sig == SIGTERM || sig == SIGINT)
                        break;
                if (sig == SIGHUP) {
                        if (rl.running) {
                                log_msg(LOG_NOTICE, "SIGHUP: a reload is already running");
                        } else {
                                sd_send_reloading();
                                log_msg(LOG_INFO, "SIGHUP: reloading the model");
                                if (reload_start(&rl, nargs, args, &c) < 0) {
                                        http_count_reload(http, false);
                                        sd_send_ready(status);
                                }
                        }
                }
                if (rl.running && atomic_load(&rl.done)) {
                        pthread_join(rl.thread, NULL);
                        rl.running = false;
                        struct serving *n = rl.result;
                        struct http_backend nb;
                        if (n) {
                                nb = backend_of(n);
                                if (http_swap_backend(http, &nb, rl.err, sizeof rl.err) < 0)
                                        n = serving_free(n);
                        }
                        if (n) {
                                L.current = sv = n;
                                describe(sv, L.what, sizeof L.what);
                                log_msg(LOG_INFO, "reloaded: now serving %s (sha256 %.16s...)", L.what, sv->sha256);
                                log_model(sv);
                                http_count_reload(http, true);
                        } else {
                                log_msg(LOG_ERR, "reload failed, still serving %s: %s", L.what, rl.err);
                                http_count_reload(http, false);
                        }
                        conf_free(&rl.conf);
                        snprintf(status, sizeof status, "serving %s on %s", L.what, http_url(http));
                        sd_send_ready(status);
                }
                tick(&L, false);
        }

        log_msg(LOG_INFO, "%s: draining (%d requests in flight, up to %lld s)", sig == SIGTERM ? "SIGTERM" : "SIGINT",
                http_inflight(http), (long long)c.drain_timeout);
        sd_send_stopping("draining");
        http_drain(http);
        /* Queued requests always finish (result or deadline), since
         * libmicrohttpd cannot stop with suspended connections; only slow
         * readers of answers are cut off after drain-timeout. */
        int64_t until = time_now_ns() + c.drain_timeout * 1000000000;
        while (http_waiting(http) > 0 || (http_inflight(http) > 0 && time_now_ns() < until)) {
                struct timespec ts = { .tv_sec = 0, .tv_nsec = 10000000 };
                nanosleep(&ts, NULL);
                tick(&L, true);
        }
        if (http_inflight(http) > 0)
                log_msg(LOG_WARNING, "closing %d connection(s) still sending answers", http_inflight(http));
        /* A reload still loading is not waited for: it could outlast the
         * stop timeout. Its thread is left to the process exit. */
        if (rl.running && !atomic_load(&rl.done)) {
                log_msg(LOG_INFO, "not waiting for the reload in progress");
                abandon_reload = true;
        } else if (rl.running) {
                pthread_join(rl.thread, NULL);
                rl.running = false;
                serving_free(rl.result);
                conf_free(&rl.conf);
        }
        r = 0;
out:
        if (http) {
                void *old;
                http_stop(http);
                while ((old = http_collect_retired(http)))
                        serving_free(old);
        }
        http = http_free(http);
        sv = serving_free(sv);
        if (r == 0)
                log_msg(LOG_INFO, "stopped");
        /* exit() would run library destructors under the loading thread. */
        if (abandon_reload)
                _exit(0);
        conf_free(&c);
        free(args);
        return r < 0 ? 1 : 0;
}
