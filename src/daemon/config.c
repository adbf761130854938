/* config: every effnetd setting in one table. */
#include "config.h"
#include "util.h"
#include "batcher.h"
#include "workpool.h"

#include <ctype.h>
#include <limits.h>
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* The durations are stored in microseconds. Their type says what a bare
 * number counts (seconds, or ms for a name ending in -ms, as before units
 * were read) and the finest step their user honours (libmicrohttpd's
 * timeouts and Retry-After have whole seconds). */
enum conf_type {
        CONF_STRING, CONF_INT, CONF_FLOAT, CONF_BOOL, CONF_ENUM,
        CONF_SECONDS,      /* a duration: bare seconds, in whole seconds */
        CONF_MS,           /* a duration: bare ms, in whole ms */
        CONF_MS_US,        /* a duration: bare ms, to the microsecond */
};

/* One name of an enumeration and its value: the only place where a
 * setting's words meet the enum (parsing and printing both use it). */
struct conf_choice {
        const char *name;
        int value;
};

struct conf_setting {
        const char *name;            /* flag --name, env EFFNETD_NAME ('-' -> '_', upper case), file key */
        const char *section;         /* [section] of the config file */
        enum conf_type type;
        size_t offset;               /* into struct conf */
        const char *def;             /* default, parsed as any value; NULL: unset */
        double min, max;             /* CONF_INT, CONF_FLOAT; durations: in their bare unit */
        const struct conf_choice *choices;  /* CONF_ENUM: ends with a NULL name */
        const char *help;
};

/* CONF_ENUM fields are written as int: each enum of struct conf is one. */
_Static_assert(sizeof(enum effnet_precision) == sizeof(int) && sizeof(enum effnet_padding) == sizeof(int) &&
               sizeof(enum conf_log_format) == sizeof(int) && sizeof(enum conf_control_mode) == sizeof(int),
               "CONF_ENUM fields must be int-sized");

static const struct conf_choice precisions[] = {
        { "fp32", EFFNET_FP32 }, { "bf16", EFFNET_BF16 }, { "auto", EFFNET_PRECISION_AUTO }, { "int8", EFFNET_INT8 },
        { NULL, 0 },
};
static const struct conf_choice paddings[] = {
        { "auto", EFFNET_PAD_AUTO }, { "same", EFFNET_PAD_SAME }, { "symmetric", EFFNET_PAD_SYMMETRIC }, { NULL, 0 },
};
static const struct conf_choice control_modes[] = {
        { "none", CONF_CONTROL_NONE }, { "poll", CONF_CONTROL_POLL }, { "explicit", CONF_CONTROL_EXPLICIT },
        { NULL, 0 },
};
static const struct conf_choice log_formats[] = { { "text", CONF_LOG_TEXT }, { "json", CONF_LOG_JSON }, { NULL, 0 } };

/* A duration type's bare unit and step; false (and 1 us) for the other types. */
static bool duration_of(enum conf_type t, int64_t *ret_unit_us, int64_t *ret_res_us)
{
        *ret_unit_us = *ret_res_us = 1;
        switch (t) {
        case CONF_SECONDS: *ret_unit_us = *ret_res_us = PARSE_S; return true;
        case CONF_MS: *ret_unit_us = *ret_res_us = PARSE_MS; return true;
        case CONF_MS_US: *ret_unit_us = PARSE_MS, *ret_res_us = PARSE_US; return true;
        default: return false;
        }
}

#define MiB (1024.0 * 1024.0)
#define F(field) offsetof(struct conf, field)

static const struct conf_setting settings[] = {
        { "weights", "model", CONF_STRING, F(weights), NULL, 0, 0, NULL,
          "model weights (.safetensors, timm or torchvision names), or hf://ORG/NAME[@REVISION][/FILE] from the "
          "Hugging Face Hub cache (downloaded when missing); required. SIGHUP loads them again" },
        { "model-repository", "model", CONF_STRING, F(model_repository), NULL, 0, 0, NULL,
          "a directory of models to serve instead of weights: DIR/NAME/VERSION/model.safetensors (versions are "
          "positive integers), with an optional DIR/NAME/config.conf (version-policy, labels, precision, calibration, "
          "padding, bn-eps, input-size, max-batch, workers, threads) and DIR/NAME/labels.txt" },
        { "model-control-mode", "model", CONF_ENUM, F(model_control_mode), "none", 0, 0, control_modes,
          "none: load every model of model-repository at start (load and unload calls are refused); poll: also "
          "rescan it every repository-poll-secs; explicit: load the load-model ones at start, then take "
          "POST /v2/repository/models/NAME/load and /unload. SIGHUP rescans in every mode" },
        { "load-model", "model", CONF_STRING, F(load_model), NULL, 0, 0, NULL,
          "with model-control-mode explicit: the models loaded at start, separated by commas (the flag may be "
          "repeated); * for all" },
        { "repository-poll-secs", "model", CONF_SECONDS, F(repository_poll_us), "15", 1, 86400, NULL,
          "with model-control-mode poll: time between two scans of model-repository" },
        { "default-model", "model", CONF_STRING, F(default_model), NULL, 0, 0, NULL,
          "the model POST /v1/classify and the try-it page serve when model-repository has several (unset: "
          "the only one)" },
        { "hub-download-deadline", "model", CONF_SECONDS, F(hub_download_deadline_us), "1800", 1, 604800, NULL,
          "time one download of hf:// weights (or their config.json) may take in all, retries and waiting for "
          "another download of the same file included; past it the start (or the reload) fails" },
        { "labels", "model", CONF_STRING, F(labels), NULL, 0, 0, NULL,
          "class names, one per line (default: built-in ImageNet-1k for 1000 classes, else the index)" },
        { "precision", "model", CONF_ENUM, F(precision), "fp32", 0, 0, precisions,
          "fp32 (torchvision-exact logits), bf16 (needs AVX512_BF16 or AMX), auto (bf16 where the CPU has it; "
          "never int8) or int8 (needs calibration)" },
        { "calibration", "model", CONF_STRING, F(calibration), NULL, 0, 0, NULL,
          "int8 calibration made by effnet calibrate for these weights (refused for others); its self-check, "
          "int8 against fp32 on the images held out of it, goes to the log and /v1/models" },
        { "padding", "model", CONF_ENUM, F(padding), "auto", 0, 0, paddings,
          "convolution padding: auto (from the weights), same (TF) or symmetric" },
        { "bn-eps", "model", CONF_FLOAT, F(bn_eps), "0", 0, 0.1, NULL, "BatchNorm epsilon; 0 = from the weights" },
        { "listen", "server", CONF_STRING, F(listen), "127.0.0.1:8080", 0, 0, NULL,
          "HOST:PORT or [V6]:PORT to listen on; port 0 picks a free one (ignored under socket activation)" },
        { "admin-listen", "server", CONF_STRING, F(admin_listen), NULL, 0, 0, NULL,
          "HOST:PORT of a second listener for /healthz, /readyz, /metrics and /v2/health/* only, with its own "
          "thread and connections, so that probes answer while clients hold the main one; unset: none" },
        { "grpc-listen", "server", CONF_STRING, F(grpc_listen), NULL, 0, 0, NULL,
          "HOST:PORT of the gRPC listener (KServe v2 GRPCInferenceService, cleartext HTTP/2); unset: none" },
        { "grpc-max-streams", "server", CONF_INT, F(grpc_max_streams), "32", 1, 1024, NULL,
          "gRPC calls one connection may have open at once (HTTP/2 streams, and calls still being served "
          "after their client reset them)" },
        { "allowed-hosts", "server", CONF_STRING, F(allowed_hosts), NULL, 0, 0, NULL,
          "Host names answered besides loopback names and IP addresses, separated by commas (\".example.com\": "
          "it and the names under it; \"*\": any), against DNS rebinding; others get 421. Unset: loopback names "
          "only when every listener is on a loopback address, any Host otherwise" },
        { "http-threads", "server", CONF_INT, F(http_threads), "0", 0, 64, NULL,
          "HTTP threads (read requests, send answers); 0 = usable CPUs, at most 4" },
        { "max-connections", "server", CONF_INT, F(max_connections), "512", 1, 1000000, NULL,
          "open connections at once" },
        { "max-connections-per-client", "server", CONF_INT, F(max_connections_per_client), "128", 0, 1000000,
          NULL, "connections one client address may hold at once (0 = no limit below max-connections), so "
          "that one client cannot take them all from the others and the probes" },
        { "connection-timeout", "server", CONF_SECONDS, F(connection_timeout_us), "30", 0, 86400, NULL,
          "time a connection may stay idle (whole seconds); 0 = never drop" },
        { "body-timeout", "server", CONF_SECONDS, F(body_timeout_us), "60", 0, 86400, NULL,
          "time from a request's headers to the end of its body (whole seconds); a slower body closes the "
          "connection (0 = no limit; connection-timeout still drops an idle one)" },
        { "header-timeout", "server", CONF_SECONDS, F(header_timeout_us), "10", 0, 3600, NULL,
          "time a connection may take to send a request line and headers (whole seconds; from its start, or "
          "from the end of its previous request plus connection-timeout); slower ones are closed (0 = no limit)" },
        { "decode-threads", "server", CONF_INT, F(decode_threads), "0", 0, WPOOL_MAX_THREADS, NULL,
          "threads that decode and preprocess images; 0 = usable CPUs, at most 8" },
        { "decode-queue", "server", CONF_INT, F(decode_queue), "64", 1, 65536, NULL,
          "requests that may wait for a decoding thread; beyond it requests get 503" },
        { "retry-after", "server", CONF_SECONDS, F(retry_after_us), "1", 0, 3600, NULL,
          "Retry-After of 503 answers (whole seconds, as the header has them)" },
        { "drain-timeout", "server", CONF_SECONDS, F(drain_timeout_us), "30", 0, 3600, NULL,
          "time to finish requests in flight on SIGTERM before exiting" },
        { "ui", "server", CONF_BOOL, F(ui), "true", 0, 0, NULL,
          "serve the try-it page at GET / on the main listener (a browser picks images, sees the classes); "
          "false: GET / is 404" },
        { "show-paths", "server", CONF_BOOL, F(show_paths), "false", 0, 0, NULL,
          "name the weights' and labels' files by their absolute paths in /v1/models, /v2/models/{m}/config and "
          "/metrics (false: by their file names, since any client reads those answers)" },
        { "max-batch", "batching", CONF_INT, F(max_batch), "8", 1, BATCH_MAX_BATCH, NULL,
          "most images per forward pass" },
        { "max-delay-ms", "batching", CONF_MS_US, F(max_delay_us), "2", 0, 10000, NULL,
          "longest wait for a batch to fill, from the oldest request's arrival" },
        { "queue", "batching", CONF_INT, F(queue), "64", 1, 65536, NULL,
          "images that may wait for inference; beyond it requests get 503" },
        { "workers", "batching", CONF_INT, F(workers), "1", 1, BATCH_MAX_WORKERS, NULL,
          "inference workers (engine executors)" },
        { "threads", "batching", CONF_INT, F(threads), "0", 0, 1024, NULL,
          "oneDNN threads per worker; 0 = usable CPUs (affinity, cgroup quota) / workers, or with a "
          "model-repository an even share of them per model" },
        { "deadline-ms", "batching", CONF_MS, F(deadline_us), "30000", 1, 3600000, NULL,
          "time from request headers to the start of inference (504 beyond)" },
        { "watchdog-stall", "batching", CONF_SECONDS, F(watchdog_stall_us), "120", 1, 86400, NULL,
          "time a worker may spend on one batch before the systemd watchdog is no longer fed" },
        { "max-body-bytes", "limits", CONF_INT, F(max_body_bytes), "10485760", 1, 1024 * MiB, NULL,
          "largest request body (413 beyond)" },
        { "v2-max-body-bytes", "limits", CONF_INT, F(v2_max_body_bytes), "100663296", 1, 1024 * MiB, NULL,
          "largest /v2 infer request body (413 beyond); the default fits 8 384x384 FP32 images as JSON" },
        { "memory-budget", "limits", CONF_INT, F(memory_budget), "536870912", 1, 65536 * MiB, NULL,
          "memory that requests may hold over all clients: bodies, decoded images, outputs and answers not yet "
          "read, charged before they are allocated; a request that does not fit gets 503" },
        { "max-client-share", "limits", CONF_INT, F(max_client_share), "0", 0, 65536 * MiB, NULL,
          "the part of memory-budget that the requests of one client address may hold at once (503 beyond); "
          "0 = half of memory-budget, and at least max-body-bytes and v2-max-body-bytes" },
        { "max-body-total", "limits", CONF_INT, F(max_body_total), NULL, 1, 65536 * MiB, NULL,
          "the former name of memory-budget, which it sets when given" },
        { "max-answer-total", "limits", CONF_INT, F(max_answer_total), "268435456", 1, 65536 * MiB, NULL,
          "answers finished but not yet read by their clients, over all connections; past it new requests get "
          "503 until clients read" },
        { "max-images", "limits", CONF_INT, F(max_images), "32", 1, 65536, NULL,
          "images per request (413 beyond); at most the queue" },
        { "max-pixels", "limits", CONF_INT, F(max_pixels), "40000000", 1, 1e10, NULL,
          "largest decoded image, width x height (413 beyond)" },
        { "max-request-pixels", "limits", CONF_INT, F(max_request_pixels), "100000000", 1, 1e11, NULL,
          "pixels of all of one request's images together; each image is decoded only if its header fits what "
          "is left (413 beyond)" },
        { "jpeg-fast", "limits", CONF_BOOL, F(jpeg_fast), "false", 0, 0, NULL,
          "decode large JPEGs at a reduced DCT scale (faster, not bit-exact to PIL)" },
        { "access-log", "log", CONF_BOOL, F(access_log), "true", 0, 0, NULL, "one log line per request on stderr" },
        { "log-format", "log", CONF_ENUM, F(log_format), "text", 0, 0, log_formats,
          "text (with syslog priority prefixes under journald) or json (one object per line)" },
        { "otlp-endpoint", "log", CONF_STRING, F(otlp_endpoint), NULL, 0, 0, NULL,
          "http:// or https:// URL of an OpenTelemetry collector: each inference request's spans are posted to "
          "URL/v1/traces (OTLP/HTTP JSON) from a thread of their own; unset: none" },
        { "otlp-queue", "log", CONF_INT, F(otlp_queue), "1024", 1, 1048576, NULL,
          "requests whose spans may wait for the collector; beyond, their spans are dropped and counted, "
          "never waited for" },
        { "api-keys-file", "security", CONF_STRING, F(api_keys_file), NULL, 0, 0, NULL,
          "file of API keys, one SHA-256 digest per line (`effnet hash-key` makes one); when set, every request "
          "but the probes (/healthz, /readyz, /v2/health/*) needs \"Authorization: Bearer KEY\" (401 otherwise). "
          "SIGHUP reads it again; unset: no keys" },
        { "tls-cert", "security", CONF_STRING, F(tls_cert), NULL, 0, 0, NULL,
          "PEM certificate (and chain) of the listeners: HTTPS (TLS 1.2 and 1.3) with tls-key; SIGHUP reads it "
          "again; unset: plain HTTP" },
        { "tls-key", "security", CONF_STRING, F(tls_key), NULL, 0, 0, NULL,
          "PEM private key of tls-cert (unencrypted); SIGHUP reads it again" },
        { "tls-client-ca", "security", CONF_STRING, F(tls_client_ca), NULL, 0, 0, NULL,
          "PEM CA certificates for mutual TLS: clients without a certificate they issued are refused in the "
          "handshake; SIGHUP reads it again; unset: no client certificates" },
};

_Static_assert(ARRAY_SIZE(settings) <= CONF_MAX_SETTINGS, "raise CONF_MAX_SETTINGS");

/* Messages accumulate one per line in a caller's buffer. */
struct diag {
        char *buf;
        size_t len, used;
        int errors;
};

static void diag_add(struct diag *d, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void diag_add(struct diag *d, const char *fmt, ...)
{
        va_list ap;

        d->errors++;
        if (!d->buf || d->len == 0 || d->used + 1 >= d->len)
                return;
        if (d->used > 0)
                d->buf[d->used++] = '\n';
        va_start(ap, fmt);
        int n = vsnprintf(d->buf + d->used, d->len - d->used, fmt, ap);
        va_end(ap);
        if (n > 0)
                d->used += (size_t)n < d->len - d->used ? (size_t)n : d->len - d->used - 1;
}

static void env_name(const struct conf_setting *s, char *out, size_t n)
{
        size_t i = (size_t)snprintf(out, n, "EFFNETD_");
        for (const char *p = s->name; *p && i + 1 < n; p++)
                out[i++] = *p == '-' ? '_' : (char)toupper((unsigned char)*p);
        out[i] = '\0';
}

/* The value of enumeration s named v. */
static int parse_choice(const struct conf_setting *s, const char *v, char *why, size_t why_len, int *ret_value)
{
        const struct conf_choice *found = NULL;
        char list[128] = "", shown[48];

        for (const struct conf_choice *ch = s->choices; ch->name; ch++)
                if (strcmp(v, ch->name) == 0)
                        found = ch;
        if (found) {
                *ret_value = found->value;
                return 0;
        }
        for (const struct conf_choice *ch = s->choices; ch->name; ch++)
                snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", ch == s->choices ? "" : ", ",
                         ch->name);
        str_escape(v, shown, sizeof shown);
        return err_set(why, why_len, -EINVAL, "%s '%s' is not one of %s", s->name, shown, list);
}

/* A copy of v into the string field (when not NULL), which owns it. */
static int store_string(const struct conf_setting *s, const char *v, char **field, char *why, size_t why_len)
{
        char *dup;

        if (!*v)
                return err_set(why, why_len, -EINVAL, "%s must not be empty", s->name);
        if (!field)
                return 0;
        dup = strdup(v);
        if (!dup)
                return err_set(why, why_len, -ENOMEM, "out of memory");
        free(*field);
        *field = dup;
        return 0;
}

/* Checks v for setting s and, when field is not NULL, stores it there as
 * s's type. */
static int store_typed(const struct conf_setting *s, const char *v, void *field, char *why, size_t why_len)
{
        int64_t i = 0, unit, res;
        double x = 0;
        bool b = false;
        int e = 0;

        switch (s->type) {
        case CONF_STRING:
                return store_string(s, v, field, why, why_len);
        case CONF_INT:
                if (parse_size(s->name, v, (int64_t)s->min, (int64_t)s->max, why, why_len, &i) < 0)
                        return -EINVAL;
                if (field)
                        *(int64_t *)field = i;
                return 0;
        case CONF_FLOAT:
                if (parse_double(s->name, v, s->min, s->max, why, why_len, &x) < 0)
                        return -EINVAL;
                if (field)
                        *(double *)field = x;
                return 0;
        case CONF_BOOL:
                if (parse_bool(s->name, v, why, why_len, &b) < 0)
                        return -EINVAL;
                if (field)
                        *(bool *)field = b;
                return 0;
        case CONF_ENUM:
                if (parse_choice(s, v, why, why_len, &e) < 0)
                        return -EINVAL;
                if (field)
                        *(int *)field = e;
                return 0;
        case CONF_SECONDS:
        case CONF_MS:
        case CONF_MS_US:
                duration_of(s->type, &unit, &res);
                if (parse_duration(s->name, v, unit, res, (int64_t)s->min * unit, (int64_t)s->max * unit, why,
                                   why_len, &i) < 0)
                        return -EINVAL;
                if (field)
                        *(int64_t *)field = i;
                return 0;
        }
        return 0;
}

/* Checks v for setting s and, when c is not NULL, stores it there with its
 * origin. The message (without where) goes to why. */
static int set_value(struct conf *c, const struct conf_setting *s, const char *v, const char *origin, char *why,
                     size_t why_len)
{
        size_t idx = (size_t)(s - settings);
        char *o;
        int r;

        /* --load-model A --load-model B: both, as Triton's flag. */
        char *joined = NULL;
        if (c && strcmp(s->name, "load-model") == 0 && c->load_model && c->origin[idx] &&
            strncmp(c->origin[idx], "--", 2) == 0 && strncmp(origin, "--", 2) == 0) {
                if (asprintf(&joined, "%s,%s", c->load_model, v) < 0)
                        return err_set(why, why_len, -ENOMEM, "out of memory");
                v = joined;
        }
        r = store_typed(s, v, c ? (char *)c + s->offset : NULL, why, why_len);
        free(joined);
        if (r < 0)
                return r;
        if (!c)
                return 0;
        o = strdup(origin);
        if (!o)
                return err_set(why, why_len, -ENOMEM, "out of memory");
        free(c->origin[idx]);
        c->origin[idx] = o;
        return 0;
}

/* A setting by name; '_' matches '-' so that file keys may use either. */
static const struct conf_setting *find(const char *name, size_t len)
{
        for (size_t i = 0; i < ARRAY_SIZE(settings); i++) {
                const char *n = settings[i].name;
                if (strlen(n) != len)
                        continue;
                size_t k = 0;
                while (k < len && (n[k] == name[k] || (n[k] == '-' && name[k] == '_')))
                        k++;
                if (k == len)
                        return &settings[i];
        }
        return NULL;
}

static bool section_known(const char *name)
{
        for (size_t i = 0; i < ARRAY_SIZE(settings); i++)
                if (strcmp(settings[i].section, name) == 0)
                        return true;
        return false;
}

void conf_free(struct conf *c)
{
        if (!c)
                return;
        for (size_t i = 0; i < ARRAY_SIZE(settings); i++)
                if (settings[i].type == CONF_STRING) {
                        char **p = (char **)((char *)c + settings[i].offset);
                        free(*p);
                        *p = NULL;
                }
        for (size_t i = 0; i < CONF_MAX_SETTINGS; i++) {
                free(c->origin[i]);
                c->origin[i] = NULL;
        }
        free(c->file);
        c->file = NULL;
}

/* ---- INI files: effnetd.conf and a repository model's config.conf ---------- */

/* Whether the line just read fits: 1 to parse it, 0 to skip it (too long:
 * reported, and the rest of it drained from f), -E2BIG to stop (the file
 * is over max_bytes); -ECANCELED when error stopped the reading. */
static int ini_line_fits(FILE *f, const char *line, const char *path, int lineno, long max_bytes, long *total,
                         const struct conf_ini_ops *ops, int *errors)
{
        char msg[4200];
        int ch, r;

        *total += (long)strlen(line);
        if (*total > max_bytes) {
                snprintf(msg, sizeof msg, "%s:%d: file larger than %ld bytes", path, lineno, max_bytes);
                (*errors)++;
                ops->error(ops->userdata, msg);
                return -E2BIG;
        }
        if (!strchr(line, '\n') && !feof(f)) {
                snprintf(msg, sizeof msg, "%s:%d: line longer than %d bytes", path, lineno, CONF_INI_LINE_MAX);
                (*errors)++;
                if ((r = ops->error(ops->userdata, msg)) < 0)
                        return r;
                while ((ch = fgetc(f)) != EOF && ch != '\n')
                        ;
                return 0;
        }
        return 1;
}

/* One trimmed, non-empty line s that is not a comment: a header (which
 * becomes the section, even when line refuses it) or a pair. */
static int ini_line(char *s, struct conf_ini_line *l, char *section, size_t section_len,
                    const struct conf_ini_ops *ops, char *why, size_t why_len)
{
        if (*s == '[') {
                char *close = strchr(s, ']');
                if (!close || str_trim(close + 1)[0] != '\0')
                        return err_set(why, why_len, -EINVAL, "malformed section header");
                *close = '\0';
                char *name = str_trim(s + 1);
                snprintf(section, section_len, "%s", name);
                l->key = l->value = NULL;
                l->section = name;
                return ops->line(ops->userdata, l, why, why_len);
        }
        char *eq = strchr(s, '=');
        if (!eq)
                return err_set(why, why_len, -EINVAL, "expected key = value");
        *eq = '\0';
        char *value = str_trim(eq + 1);
        size_t vl = strlen(value);
        if (vl >= 2 && value[0] == '"' && value[vl - 1] == '"') {
                value[vl - 1] = '\0';
                value++;
        }
        l->key = str_trim(s);
        l->value = value;
        l->section = section;
        return ops->line(ops->userdata, l, why, why_len);
}

int conf_ini_read(const char *path, bool must_exist, long max_bytes, const struct conf_ini_ops *ops)
{
        char line[CONF_INI_LINE_MAX + 2], section[256] = "", why[512], msg[1200];
        struct conf_ini_line l = { .path = path };
        int errors = 0, r = 0;
        long total = 0;
        FILE *f = fopen(path, "re");

        if (!f) {
                r = -errno;
                if (r == -ENOENT && !must_exist)
                        return r;
                snprintf(msg, sizeof msg, "%s: %s", path, strerror(-r));
                ops->error(ops->userdata, msg);
                return r;
        }
        while (fgets(line, sizeof line, f)) {
                l.lineno++;
                if ((r = ini_line_fits(f, line, path, l.lineno, max_bytes, &total, ops, &errors)) <= 0) {
                        if (r < 0)
                                break;
                        continue;
                }
                char *s = str_trim(line);
                if (!*s || *s == '#' || *s == ';')
                        continue;
                if (ini_line(s, &l, section, sizeof section, ops, why, sizeof why) < 0) {
                        snprintf(msg, sizeof msg, "%.600s:%d: %.500s", path, l.lineno, why);
                        errors++;
                        if ((r = ops->error(ops->userdata, msg)) < 0)
                                break;
                }
                r = 0;
        }
        if (r >= 0 && ferror(f)) {
                snprintf(msg, sizeof msg, "%s: read error", path);
                errors++;
                ops->error(ops->userdata, msg);
        }
        fclose(f);
        return r < 0 ? r : errors ? -EINVAL : 0;
}

/* The daemon's config file as it is read: where its settings go, where
 * the errors go, and whether the lines are under an unknown section
 * (already reported: their keys are not). */
struct file_read {
        struct conf *c;
        struct diag *d;
        bool skip;
};

static int file_error(void *userdata, const char *message)
{
        diag_add(((struct file_read *)userdata)->d, "%s", message);
        return 0;
}

/* A header or a "key = value" of the config file: the value of its
 * setting, in c. */
static int file_line(void *userdata, const struct conf_ini_line *l, char *why, size_t why_len)
{
        struct file_read *fr = userdata;
        char origin[4200];

        if (!l->key) {
                fr->skip = !section_known(l->section);
                return fr->skip ? err_set(why, why_len, -EINVAL, "unknown section [%.64s]", l->section) : 0;
        }
        if (fr->skip)
                return 0;
        const struct conf_setting *st = find(l->key, strlen(l->key));
        if (!st)
                return err_set(why, why_len, -EINVAL, "unknown key '%.64s'", l->key);
        if (strcmp(st->section, l->section) != 0)
                return err_set(why, why_len, -EINVAL, "%s belongs in section [%s]", st->name, st->section);
        snprintf(origin, sizeof origin, "%s:%d", l->path, l->lineno);
        return set_value(fr->c, st, l->value, origin, why, why_len);
}

/* The config file into c; 1 when it is not there and need not be. */
static int load_file(struct conf *c, const char *path, bool must_exist, struct diag *d)
{
        struct file_read fr = { .c = c, .d = d };
        struct conf_ini_ops ops = { .line = file_line, .error = file_error, .userdata = &fr };
        int r = conf_ini_read(path, must_exist, CONF_MAX_FILE_BYTES, &ops);

        return r == -ENOENT && !must_exist ? 1 : r;
}

enum { FLAG_CONFIG = 1000, FLAG_SET = 2000, FLAG_UNSET = 3000 };

/* Walks the flags with getopt_long: "--name VALUE", "--name=VALUE", and
 * "--name" / "--no-name" for booleans, each named by the settings table.
 * With c NULL only finds --config; otherwise applies all, reporting every
 * bad flag. Not thread-safe (getopt's state): called from main only. */
static void scan_flags(int argc, char **argv, struct conf *c, const char **ret_config, struct diag *d)
{
        struct option opts[2 * ARRAY_SIZE(settings) + 2];
        char no_names[ARRAY_SIZE(settings)][48], why[256], origin[80];
        size_t n = 0;
        int ch;

        opts[n++] = (struct option){ "config", required_argument, NULL, FLAG_CONFIG };
        for (size_t i = 0; i < ARRAY_SIZE(settings); i++) {
                bool is_bool = settings[i].type == CONF_BOOL;
                opts[n++] = (struct option){ settings[i].name, is_bool ? optional_argument : required_argument, NULL,
                                             FLAG_SET + (int)i };
                if (is_bool) {
                        snprintf(no_names[i], sizeof no_names[i], "no-%s", settings[i].name);
                        opts[n++] = (struct option){ no_names[i], no_argument, NULL, FLAG_UNSET + (int)i };
                }
        }
        opts[n] = (struct option){ 0 };

        opterr = 0;
        optind = 0; /* a full re-initialisation: conf_load runs again on SIGHUP */
        /* "-": arguments that are not options come back as 1, in order (no
         * permutation of argv); ":": a missing value is told apart. */
        while ((ch = getopt_long(argc, argv, "-:", opts, NULL)) != -1) {
                const char *arg = argv[optind - 1];
                if (ch == 1 || ch == '?' || ch == ':') {
                        if (!c)
                                continue;
                        if (ch == 1)
                                diag_add(d, "unexpected argument '%s'", optarg);
                        else if (ch == ':')
                                diag_add(d, "%s needs a value", arg);
                        else
                                diag_add(d, "unknown option '%.64s' (see --help)", arg);
                        continue;
                }
                if (ch == FLAG_CONFIG) {
                        if (!*optarg) {
                                if (c)
                                        diag_add(d, "--config needs a file name");
                        } else if (!c) {
                                *ret_config = optarg;
                        }
                        continue;
                }
                if (!c)
                        continue;
                bool unset = ch >= FLAG_UNSET;
                const struct conf_setting *s = &settings[ch - (unset ? FLAG_UNSET : FLAG_SET)];
                const char *v = unset ? "false" : optarg ? optarg : "true";
                snprintf(origin, sizeof origin, "--%s", s->name);
                if (set_value(c, s, v, origin, why, sizeof why) < 0)
                        diag_add(d, "%s: %s", origin, why);
        }
}

static const char *origin_of(const struct conf *c, const char *name)
{
        const struct conf_setting *s = find(name, strlen(name));
        const char *o = s ? c->origin[s - settings] : NULL;
        return o ? o : "unset";
}

/* memory-budget (or its former name, max-body-total) and max-client-share
 * against the body limits: a body that fits its limit must fit the budget
 * and the share too, or it could never be served. A share of 0 becomes its
 * default here. */
static void budget_check(struct conf *c, struct diag *d)
{
        const struct conf_setting *old = find("max-body-total", strlen("max-body-total"));
        const struct conf_setting *now = find("memory-budget", strlen("memory-budget"));
        char **old_origin = &c->origin[old - settings], **origin = &c->origin[now - settings];
        const char *name = "memory-budget";

        if (*old_origin && *origin && strcmp(*origin, "default") != 0) {
                if (c->memory_budget != c->max_body_total) {
                        diag_add(d, "max-body-total (%lld, from %s) is the former name of memory-budget (%lld, "
                                 "from %s): set memory-budget only", (long long)c->max_body_total, *old_origin,
                                 (long long)c->memory_budget, *origin);
                        return;
                }
        } else if (*old_origin) {
                char *o = strdup(*old_origin);
                if (!o) {
                        diag_add(d, "out of memory");
                        return;
                }
                free(*origin);
                *origin = o;
                c->memory_budget = c->max_body_total;
                name = "max-body-total";
        }
        int64_t largest = c->max_body_bytes > c->v2_max_body_bytes ? c->max_body_bytes : c->v2_max_body_bytes;
        if (c->memory_budget < largest) {
                diag_add(d, "%s (%lld) is smaller than %s (%lld)", name, (long long)c->memory_budget,
                         largest == c->max_body_bytes ? "max-body-bytes" : "v2-max-body-bytes", (long long)largest);
                return;
        }
        if (c->max_client_share == 0) {
                c->max_client_share = c->memory_budget / 2 > largest ? c->memory_budget / 2 : largest;
        } else if (c->max_client_share > c->memory_budget) {
                diag_add(d, "max-client-share (%lld) is larger than %s (%lld)", (long long)c->max_client_share, name,
                         (long long)c->memory_budget);
        } else if (c->max_client_share < largest) {
                diag_add(d, "max-client-share (%lld) is smaller than %s (%lld): such a body could never be served",
                         (long long)c->max_client_share,
                         largest == c->max_body_bytes ? "max-body-bytes" : "v2-max-body-bytes", (long long)largest);
        }
}

int conf_load(int argc, char **argv, struct conf *c, char *err, size_t err_len)
{
        struct conf tmp = { 0 };
        struct diag d = { .buf = err, .len = err_len };
        char env[64], why[256];
        const char *file = NULL;
        bool must_exist = true;

        if (err && err_len)
                err[0] = '\0';
        for (size_t i = 0; i < ARRAY_SIZE(settings); i++) {
                const struct conf_setting *s = &settings[i];
                if (s->def && set_value(&tmp, s, s->def, "default", why, sizeof why) < 0)
                        diag_add(&d, "default %s", why);  /* a bug in the table */
        }

        /* The file: --config, else EFFNETD_CONFIG, else the default if present. */
        scan_flags(argc, argv, NULL, &file, &d);
        if (!file)
                file = getenv("EFFNETD_CONFIG");
        if (!file || !*file) {
                file = CONF_DEFAULT_FILE;
                must_exist = false;
        }
        if (load_file(&tmp, file, must_exist, &d) == 0 && !(tmp.file = strdup(file)))
                diag_add(&d, "out of memory");

        for (size_t i = 0; i < ARRAY_SIZE(settings); i++) {
                const struct conf_setting *s = &settings[i];
                env_name(s, env, sizeof env);
                const char *v = getenv(env);
                if (v && set_value(&tmp, s, v, env, why, sizeof why) < 0)
                        diag_add(&d, "%s: %s", env, why);
        }
        scan_flags(argc, argv, &tmp, NULL, &d);

        if (d.errors == 0) {
                if (!tmp.weights && !tmp.model_repository)
                        diag_add(&d, "no weights: set weights (or model-repository) in [model] of %s, "
                                 "EFFNETD_WEIGHTS or --weights FILE", file);
                if (tmp.weights && tmp.model_repository)
                        diag_add(&d, "weights (from %s) and model-repository (from %s): set one of them",
                                 origin_of(&tmp, "weights"), origin_of(&tmp, "model-repository"));
                if (tmp.load_model && tmp.model_control_mode != CONF_CONTROL_EXPLICIT)
                        diag_add(&d, "load-model (from %s) needs model-control-mode explicit",
                                 origin_of(&tmp, "load-model"));
                if (tmp.max_images > tmp.queue)
                        diag_add(&d, "max-images (%lld, from %s) exceeds queue (%lld images, from %s)",
                                 (long long)tmp.max_images, origin_of(&tmp, "max-images"), (long long)tmp.queue,
                                 origin_of(&tmp, "queue"));
                budget_check(&tmp, &d);
                if (!tmp.tls_cert != !tmp.tls_key)
                        diag_add(&d, "tls-cert and tls-key go together (only %s is set, from %s)",
                                 tmp.tls_cert ? "tls-cert" : "tls-key",
                                 origin_of(&tmp, tmp.tls_cert ? "tls-cert" : "tls-key"));
                if (tmp.tls_client_ca && !tmp.tls_cert)
                        diag_add(&d, "tls-client-ca (from %s) needs tls-cert and tls-key",
                                 origin_of(&tmp, "tls-client-ca"));
                const char *e = tmp.otlp_endpoint;
                if (e && !((strncmp(e, "http://", 7) == 0 && e[7]) || (strncmp(e, "https://", 8) == 0 && e[8])))
                        diag_add(&d, "otlp-endpoint (from %s): an http:// or https:// URL, not \"%s\"",
                                 origin_of(&tmp, "otlp-endpoint"), e);
        }
        if (d.errors > 0) {
                conf_free(&tmp);
                return -EINVAL;
        }
        *c = tmp;
        return 0;
}

static void print_bounds(FILE *f, const struct conf_setting *s)
{
        if (s->choices) {
                fprintf(f, ", one of");
                for (const struct conf_choice *ch = s->choices; ch->name; ch++)
                        fprintf(f, " %s", ch->name);
        }
        if (s->type == CONF_INT)
                fprintf(f, ", %.0f..%.0f", s->min, s->max);
        else if (s->type == CONF_FLOAT && s->max > 0)
                fprintf(f, ", %g..%g", s->min, s->max);
        int64_t unit, res;
        if (duration_of(s->type, &unit, &res)) {
                char name[8];
                duration_format(0, unit, false, name, sizeof name);
                fprintf(f, ", %.0f..%.0f%s (with us, ms, s, m or h; bare: %s)", s->min, s->max, name + 1,
                        name + 1);
        }
}

void conf_usage(FILE *f)
{
        char env[64], flag[64];

        fprintf(f, "  %-28s config file (default %s if it exists)\n  %-28s   env EFFNETD_CONFIG\n",
                "--config FILE", CONF_DEFAULT_FILE, "");
        for (size_t i = 0; i < ARRAY_SIZE(settings); i++) {
                const struct conf_setting *s = &settings[i];
                env_name(s, env, sizeof env);
                snprintf(flag, sizeof flag, "--%s%s", s->name, s->type == CONF_BOOL ? "[=BOOL]" : " VALUE");
                fprintf(f, "  %-28s %s\n  %-28s   env %s, file [%s] %s", flag, s->help, "", env, s->section,
                        s->name);
                if (s->def)
                        fprintf(f, ", default %s", s->def);
                print_bounds(f, s);
                fputc('\n', f);
        }
}

static const char *choice_name(const struct conf_choice *choices, int value)
{
        for (const struct conf_choice *ch = choices; ch->name; ch++)
                if (ch->value == value)
                        return ch->name;
        return "?";
}

static void print_value(FILE *f, const struct conf_setting *s, const struct conf *c)
{
        const void *field = (const char *)c + s->offset;

        switch (s->type) {
        case CONF_STRING: {
                const char *v = *(char *const *)field;
                fprintf(f, "%s", v ? v : "");
                break;
        }
        case CONF_INT: fprintf(f, "%lld", (long long)*(const int64_t *)field); break;
        case CONF_FLOAT: fprintf(f, "%g", *(const double *)field); break;
        case CONF_BOOL: fprintf(f, "%s", *(const bool *)field ? "true" : "false"); break;
        case CONF_ENUM: fprintf(f, "%s", choice_name(s->choices, *(const int *)field)); break;
        case CONF_SECONDS:
        case CONF_MS:
        case CONF_MS_US: {
                char buf[48];
                int64_t unit, res;
                duration_of(s->type, &unit, &res);
                duration_format(*(const int64_t *)field, unit, true, buf, sizeof buf);
                fprintf(f, "%s", buf);
                break;
        }
        }
}

void conf_print(FILE *f, const struct conf *c)
{
        const char *section = "";

        fprintf(f, "# effnetd settings in effect; config file: %s\n", c->file ? c->file : "none read");
        for (size_t i = 0; i < ARRAY_SIZE(settings); i++) {
                const struct conf_setting *s = &settings[i];
                if (strcmp(section, s->section) != 0) {
                        section = s->section;
                        fprintf(f, "%s[%s]\n", i ? "\n" : "", section);
                }
                const char *origin = c->origin[i] ? c->origin[i] : "unset";
                /* Unset: a string without a value, or a setting without a default
                 * that was not given. */
                if ((s->type == CONF_STRING && !*(char *const *)((const char *)c + s->offset)) ||
                    (!s->def && !c->origin[i]))
                        fprintf(f, "# %s =", s->name);
                else {
                        fprintf(f, "%s = ", s->name);
                        print_value(f, s, c);
                }
                fprintf(f, "    # %s\n", origin);
        }
}

void conf_print_line(FILE *f, const struct conf *c)
{
        for (size_t i = 0; i < ARRAY_SIZE(settings); i++) {
                fprintf(f, "%s%s=", i ? " " : "", settings[i].name);
                print_value(f, &settings[i], c);
        }
        fputc('\n', f);
}

int conf_changes(const struct conf *a, const struct conf *b, const char *except_section, char *buf, size_t len)
{
        int n = 0;
        size_t used = 0;

        if (len)
                buf[0] = '\0';
        for (size_t i = 0; i < ARRAY_SIZE(settings); i++) {
                char va[256] = "", vb[256] = "";
                FILE *fa = fmemopen(va, sizeof va - 1, "w"), *fb = fmemopen(vb, sizeof vb - 1, "w");
                if (fa)
                        print_value(fa, &settings[i], a), fclose(fa);
                if (fb)
                        print_value(fb, &settings[i], b), fclose(fb);
                if (strcmp(settings[i].section, except_section) == 0 || strcmp(va, vb) == 0)
                        continue;
                int k = snprintf(buf + used, used < len ? len - used : 0, "%s%s (%s -> %s)", n ? ", " : "",
                                 settings[i].name, va, vb);
                if (k > 0 && used + (size_t)k < len)
                        used += (size_t)k;
                n++;
        }
        return n;
}
