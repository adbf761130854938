/* config: every effnetd setting in one table. */
#include "daemon/config.h"
#include "common/util.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

enum conf_type { CONF_STRING, CONF_INT, CONF_FLOAT, CONF_BOOL, CONF_ENUM };

struct conf_setting {
        const char *name;            /* flag --name, env EFFNETD_NAME ('-' -> '_', upper case) */
        enum conf_type type;
        size_t offset;               /* into struct conf */
        const char *def;             /* default, parsed as any value; NULL: unset */
        double min, max;             /* CONF_INT, CONF_FLOAT */
        const char *const *choices;  /* CONF_ENUM: NULL-terminated; stored as the index */
        const char *help;
};

static const char *const precisions[] = { "fp32", "bf16", NULL };
static const char *const paddings[] = { "auto", "same", "symmetric", NULL };

#define MiB (1024.0 * 1024.0)
#define F(field) offsetof(struct conf, field)

static const struct conf_setting settings[] = {
        { "weights", CONF_STRING, F(weights), NULL, 0, 0, NULL,
          "model weights (.safetensors, timm or torchvision names); required" },
        { "listen", CONF_STRING, F(listen), "127.0.0.1:8080", 0, 0, NULL,
          "HOST:PORT or [V6]:PORT to listen on; port 0 picks a free one" },
        { "precision", CONF_ENUM, F(precision), "fp32", 0, 0, precisions, "fp32 or bf16 inference" },
        { "padding", CONF_ENUM, F(padding), "auto", 0, 0, paddings,
          "convolution padding: auto (from the weights), same (TF) or symmetric" },
        { "bn-eps", CONF_FLOAT, F(bn_eps), "0", 0, 0.1, NULL, "BatchNorm epsilon; 0 = from the weights" },
        { "labels", CONF_STRING, F(labels), NULL, 0, 0, NULL,
          "class names, one per line (default: built-in ImageNet-1k for 1000 classes, else the index)" },
        { "max-batch", CONF_INT, F(max_batch), "8", 1, 256, NULL, "most images per forward pass" },
        { "max-delay-ms", CONF_FLOAT, F(max_delay_ms), "2", 0, 10000, NULL,
          "longest wait for a batch to fill, from the oldest request's arrival" },
        { "queue", CONF_INT, F(queue), "64", 1, 65536, NULL,
          "images that may wait for inference; beyond it requests get 503" },
        { "workers", CONF_INT, F(workers), "1", 1, 64, NULL, "inference workers (engine executors)" },
        { "threads", CONF_INT, F(threads), "0", 0, 1024, NULL,
          "oneDNN threads per worker; 0 = usable CPUs / workers" },
        { "http-threads", CONF_INT, F(http_threads), "0", 0, 64, NULL,
          "HTTP threads (parse, decode); 0 = usable CPUs, at most 4" },
        { "max-body-bytes", CONF_INT, F(max_body_bytes), "10485760", 1, 1024 * MiB, NULL,
          "largest request body (413 beyond)" },
        { "max-body-total", CONF_INT, F(max_body_total), "536870912", 1, 65536 * MiB, NULL,
          "request bodies buffered over all connections (503 beyond)" },
        { "max-images", CONF_INT, F(max_images), "32", 1, 65536, NULL,
          "images per request (413 beyond); at most --queue" },
        { "max-pixels", CONF_INT, F(max_pixels), "40000000", 1, 1e10, NULL,
          "largest decoded image, width x height (413 beyond)" },
        { "max-connections", CONF_INT, F(max_connections), "512", 1, 1000000, NULL,
          "open connections at once" },
        { "connection-timeout", CONF_INT, F(connection_timeout), "30", 0, 86400, NULL,
          "seconds a connection may stay idle; 0 = never drop" },
        { "deadline-ms", CONF_INT, F(deadline_ms), "30000", 1, 3600000, NULL,
          "time from request headers to the start of inference (504 beyond)" },
        { "retry-after", CONF_INT, F(retry_after), "1", 0, 3600, NULL, "Retry-After seconds of 503 answers" },
        { "drain-timeout", CONF_INT, F(drain_timeout), "60", 0, 3600, NULL,
          "seconds to finish requests in flight on SIGTERM before exiting" },
        { "jpeg-fast", CONF_BOOL, F(jpeg_fast), "false", 0, 0, NULL,
          "decode large JPEGs at a reduced DCT scale (faster, not bit-exact to PIL)" },
        { "access-log", CONF_BOOL, F(access_log), "true", 0, 0, NULL, "one log line per request on stderr" },
};

static void env_name(const struct conf_setting *s, char *out, size_t n)
{
        size_t i = (size_t)snprintf(out, n, "EFFNETD_");
        for (const char *p = s->name; *p && i + 1 < n; p++)
                out[i++] = *p == '-' ? '_' : (char)toupper((unsigned char)*p);
        out[i] = '\0';
}

static int parse_bool(const char *v, bool *ret)
{
        static const char *const yes[] = { "1", "true", "yes", "on" }, *const no[] = { "0", "false", "no", "off" };
        for (size_t i = 0; i < ARRAY_SIZE(yes); i++) {
                if (strcasecmp(v, yes[i]) == 0)
                        return *ret = true, 0;
                if (strcasecmp(v, no[i]) == 0)
                        return *ret = false, 0;
        }
        return -EINVAL;
}

/* Stores value into c; source names where it came from for the message. */
static int set_value(struct conf *c, const struct conf_setting *s, const char *v, const char *source, char *err,
                     size_t err_len)
{
        void *field = (char *)c + s->offset;
        char *end;

        switch (s->type) {
        case CONF_STRING: {
                char *dup = strdup(v);
                if (!dup)
                        return err_set(err, err_len, -ENOMEM, "out of memory");
                free(*(char **)field);
                *(char **)field = dup;
                return 0;
        }
        case CONF_INT: {
                errno = 0;
                long long x = strtoll(v, &end, 10);
                if (errno || end == v || *end || (double)x < s->min || (double)x > s->max)
                        return err_set(err, err_len, -EINVAL, "%s: %s '%s' is not an integer in %.0f..%.0f", source,
                                       s->name, v, s->min, s->max);
                *(int64_t *)field = x;
                return 0;
        }
        case CONF_FLOAT: {
                errno = 0;
                double x = strtod(v, &end);
                if (errno || end == v || *end || !isfinite(x) || x < s->min || x > s->max)
                        return err_set(err, err_len, -EINVAL, "%s: %s '%s' is not a number in %g..%g", source,
                                       s->name, v, s->min, s->max);
                *(double *)field = x;
                return 0;
        }
        case CONF_BOOL:
                if (parse_bool(v, (bool *)field) < 0)
                        return err_set(err, err_len, -EINVAL, "%s: %s '%s' is not true or false", source, s->name,
                                       v);
                return 0;
        case CONF_ENUM:
                for (int i = 0; s->choices[i]; i++)
                        if (strcmp(v, s->choices[i]) == 0) {
                                *(int64_t *)field = i;
                                return 0;
                        }
                return err_set(err, err_len, -EINVAL, "%s: %s '%s' is not one of the allowed values", source,
                               s->name, v);
        }
        return -EINVAL;
}

static const struct conf_setting *find(const char *name, size_t len)
{
        for (size_t i = 0; i < ARRAY_SIZE(settings); i++)
                if (strlen(settings[i].name) == len && strncmp(settings[i].name, name, len) == 0)
                        return &settings[i];
        return NULL;
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
}

int conf_load(int argc, char **argv, struct conf *c, char *err, size_t err_len)
{
        struct conf tmp = { 0 };
        char env[64];
        int r;

        for (size_t i = 0; i < ARRAY_SIZE(settings); i++) {
                const struct conf_setting *s = &settings[i];
                if (s->def && (r = set_value(&tmp, s, s->def, "default", err, err_len)) < 0)
                        goto fail;
                env_name(s, env, sizeof env);
                const char *v = getenv(env);
                if (v && (r = set_value(&tmp, s, v, env, err, err_len)) < 0)
                        goto fail;
        }
        for (int i = 1; i < argc; i++) {
                const char *a = argv[i];
                if (strncmp(a, "--", 2) != 0) {
                        r = err_set(err, err_len, -EINVAL, "unexpected argument '%s'", a);
                        goto fail;
                }
                a += 2;
                const char *eq = strchr(a, '=');
                size_t len = eq ? (size_t)(eq - a) : strlen(a);
                const struct conf_setting *s = find(a, len);
                const char *v = eq ? eq + 1 : NULL;
                bool negated = false;
                if (!s && len > 3 && strncmp(a, "no-", 3) == 0 && (s = find(a + 3, len - 3)) &&
                    s->type == CONF_BOOL && !eq)
                        negated = true;
                if (!s || (negated && s->type != CONF_BOOL)) {
                        r = err_set(err, err_len, -EINVAL, "unknown option '--%.*s' (see --help)", (int)len, a);
                        goto fail;
                }
                if (!v) {
                        if (s->type == CONF_BOOL)
                                v = negated ? "false" : "true";
                        else if (i + 1 < argc)
                                v = argv[++i];
                        else {
                                r = err_set(err, err_len, -EINVAL, "--%s needs a value", s->name);
                                goto fail;
                        }
                }
                char source[80];
                snprintf(source, sizeof source, "--%s", s->name);
                if ((r = set_value(&tmp, s, v, source, err, err_len)) < 0)
                        goto fail;
        }
        if (!tmp.weights) {
                r = err_set(err, err_len, -EINVAL, "no weights: give --weights FILE or EFFNETD_WEIGHTS");
                goto fail;
        }
        if (tmp.max_images > tmp.queue) {
                r = err_set(err, err_len, -EINVAL, "max-images (%lld) exceeds queue (%lld images)",
                            (long long)tmp.max_images, (long long)tmp.queue);
                goto fail;
        }
        if (tmp.max_body_total < tmp.max_body_bytes) {
                r = err_set(err, err_len, -EINVAL, "max-body-total is smaller than max-body-bytes");
                goto fail;
        }
        *c = tmp;
        return 0;
fail:
        conf_free(&tmp);
        return r;
}

void conf_usage(FILE *f)
{
        char env[64], flag[64];

        for (size_t i = 0; i < ARRAY_SIZE(settings); i++) {
                const struct conf_setting *s = &settings[i];
                env_name(s, env, sizeof env);
                snprintf(flag, sizeof flag, "--%s%s", s->name, s->type == CONF_BOOL ? "[=BOOL]" : " VALUE");
                fprintf(f, "  %-28s %s\n  %-28s   env %s", flag, s->help, "", env);
                if (s->def)
                        fprintf(f, ", default %s", s->def);
                if (s->choices) {
                        fprintf(f, ", one of");
                        for (int k = 0; s->choices[k]; k++)
                                fprintf(f, " %s", s->choices[k]);
                }
                if (s->type == CONF_INT || (s->type == CONF_FLOAT && s->max > 0))
                        fprintf(f, ", %g..%g", s->min, s->max);
                fputc('\n', f);
        }
}

void conf_print(FILE *f, const struct conf *c)
{
        for (size_t i = 0; i < ARRAY_SIZE(settings); i++) {
                const struct conf_setting *s = &settings[i];
                const void *field = (const char *)c + s->offset;
                fprintf(f, "%s%s=", i ? " " : "", s->name);
                switch (s->type) {
                case CONF_STRING: {
                        const char *v = *(char *const *)field;
                        fprintf(f, "%s", v ? v : "");
                        break;
                }
                case CONF_INT: fprintf(f, "%lld", (long long)*(const int64_t *)field); break;
                case CONF_FLOAT: fprintf(f, "%g", *(const double *)field); break;
                case CONF_BOOL: fprintf(f, "%s", *(const bool *)field ? "true" : "false"); break;
                case CONF_ENUM: fprintf(f, "%s", s->choices[*(const int64_t *)field]); break;
                }
        }
        fputc('\n', f);
}
