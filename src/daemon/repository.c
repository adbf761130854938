/* repository: scans a model repository on disk (Triton's layout). */
#include "repository.h"
#include "config.h"
#include "util.h"
#include "effnet.h"

#include <ctype.h>
#include <jansson.h>
#include <stdatomic.h>
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define CONF_MAX_BYTES (64 << 10)

bool repo_name_ok(const char *name, size_t len)
{
        if (len == 0 || len > REPO_MAX_NAME || name[0] == '.')
                return false;
        for (size_t i = 0; i < len; i++)
                if (!isalnum((unsigned char)name[i]) && !strchr("-_.", name[i]))
                        return false;
        return true;
}

/* "dev:ino:size:mtime" of path, or "-" when it is not there. */
static void ident_of(const char *path, char *buf, size_t n)
{
        struct stat st;

        if (stat(path, &st) < 0) {
                snprintf(buf, n, "-");
                return;
        }
        snprintf(buf, n, "%llx:%llx:%lld:%lld.%09ld", (unsigned long long)st.st_dev, (unsigned long long)st.st_ino,
                 (long long)st.st_size, (long long)st.st_mtim.tv_sec, st.st_mtim.tv_nsec);
}

static int parse_policy(char *v, struct repo_model_conf *c, char *err, size_t err_len)
{
        int64_t x;

        if (strcmp(v, "all") == 0) {
                c->policy = REPO_ALL;
                return 0;
        }
        if (strncmp(v, "latest", 6) == 0 && (v[6] == '\0' || isspace((unsigned char)v[6]))) {
                c->policy = REPO_LATEST;
                c->latest = 1;
                char *n = str_trim(v + 6);
                if (*n && parse_int("version-policy latest", n, 1, REPO_MAX_VERSIONS, err, err_len, &x) < 0)
                        return -EINVAL;
                if (*n)
                        c->latest = (int)x;
                return 0;
        }
        if (strncmp(v, "specific", 8) == 0 && isspace((unsigned char)v[8])) {
                c->policy = REPO_SPECIFIC;
                c->n_specific = 0;
                for (char *save = NULL, *t = strtok_r(v + 8, ", \t", &save); t; t = strtok_r(NULL, ", \t", &save)) {
                        if (c->n_specific >= REPO_MAX_VERSIONS)
                                return err_set(err, err_len, -EINVAL, "version-policy specific: more than %d versions",
                                               REPO_MAX_VERSIONS);
                        if (parse_int("version-policy specific", t, 1, INT64_MAX, err, err_len, &x) < 0)
                                return -EINVAL;
                        c->specific[c->n_specific++] = x;
                }
                if (c->n_specific == 0)
                        return err_set(err, err_len, -EINVAL, "version-policy specific: no version named");
                return 0;
        }
        return err_set(err, err_len, -EINVAL, "version-policy %.60s: expected latest N, all or specific V,V...", v);
}

static int parse_choice(const char *v, const char *const *names, int n, int *ret)
{
        for (int i = 0; i < n; i++)
                if (strcmp(v, names[i]) == 0) {
                        *ret = i;
                        return 0;
                }
        return -EINVAL;
}

/* One "key = value" of config.conf into c. */
static int conf_set(struct repo_model_conf *c, const char *dir, char *key, char *v, char *err, size_t err_len)
{
        static const char *const precisions[] = { "fp32", "bf16", "auto", "int8" };
        static const int precision_values[] = { EFFNET_FP32, EFFNET_BF16, EFFNET_PRECISION_AUTO, EFFNET_INT8 };
        static const char *const paddings[] = { "auto", "same", "symmetric" };
        static const int padding_values[] = { EFFNET_PAD_AUTO, EFFNET_PAD_SAME, EFFNET_PAD_SYMMETRIC };
        int64_t x;
        int k;

        for (char *p = key; *p; p++)
                if (*p == '_')
                        *p = '-';
        if (strcmp(key, "version-policy") == 0)
                return parse_policy(v, c, err, err_len);
        if (strcmp(key, "labels") == 0) {
                int n = v[0] == '/' ? snprintf(c->labels, sizeof c->labels, "%s", v)
                                    : snprintf(c->labels, sizeof c->labels, "%s/%s", dir, v);
                return n < (int)sizeof c->labels ? 0 : err_set(err, err_len, -E2BIG, "labels: path too long");
        }
        if (strcmp(key, "calibration") == 0) {
                if (!*v)
                        return err_set(err, err_len, -EINVAL, "calibration: empty file name");
                int n = snprintf(c->calibration, sizeof c->calibration, "%s", v);
                return n < (int)sizeof c->calibration ? 0 : err_set(err, err_len, -E2BIG, "calibration: path too long");
        }
        if (strcmp(key, "precision") == 0) {
                if (parse_choice(v, precisions, 4, &k) < 0)
                        return err_set(err, err_len, -EINVAL, "precision %.40s: expected fp32, bf16, auto or int8", v);
                c->precision = precision_values[k];
                return 0;
        }
        if (strcmp(key, "padding") == 0) {
                if (parse_choice(v, paddings, 3, &k) < 0)
                        return err_set(err, err_len, -EINVAL, "padding %.40s: expected auto, same or symmetric", v);
                c->padding = padding_values[k];
                return 0;
        }
        if (strcmp(key, "bn-eps") == 0)
                return parse_double("bn-eps", v, 0, 0.1, err, err_len, &c->bn_eps);
        struct {
                const char *key;
                int *field;
                int64_t min, max;
        } ints[] = {
                { "input-size", &c->input_size, 32, 4096 },
                { "max-batch", &c->max_batch, 1, 256 },
                { "workers", &c->workers, 1, 64 },
                { "threads", &c->threads, 1, 1024 },
        };
        for (size_t i = 0; i < ARRAY_SIZE(ints); i++)
                if (strcmp(key, ints[i].key) == 0) {
                        if (parse_int(key, v, ints[i].min, ints[i].max, err, err_len, &x) < 0)
                                return -EINVAL;
                        *ints[i].field = (int)x;
                        return 0;
                }
        return err_set(err, err_len, -EINVAL, "unknown key '%.60s'", key);
}

/* A config.conf as it is read: the model folder, the settings, and the
 * first error, which makes the model unloadable (the reading stops there). */
struct conf_read {
        const char *mdir;
        struct repo_model_conf *c;
        char *err;
        size_t err_len;
};

/* [sections] are accepted and mean nothing: the keys are the model's. */
static int conf_line(void *userdata, const struct conf_ini_line *l, char *why, size_t why_len)
{
        struct conf_read *cr = userdata;

        return l->key ? conf_set(cr->c, cr->mdir, l->key, l->value, why, why_len) : 0;
}

static int conf_error(void *userdata, const char *message)
{
        struct conf_read *cr = userdata;

        snprintf(cr->err, cr->err_len, "%s", message);
        return -EINVAL;
}

/* DIR/NAME/config.conf into m->conf; none is no error. */
static int read_conf(const char *mdir, struct repo_model *m, char *err, size_t err_len)
{
        char path[1200];
        struct conf_read cr = { .mdir = mdir, .c = &m->conf, .err = err, .err_len = err_len };
        struct conf_ini_ops ops = { .line = conf_line, .error = conf_error, .userdata = &cr };
        int r;

        m->conf = (struct repo_model_conf){ .policy = REPO_LATEST, .latest = 1, .precision = -1, .padding = -1,
                                            .bn_eps = -1 };
        snprintf(path, sizeof path, "%s/labels.txt", mdir);
        if (access(path, R_OK) == 0)
                snprintf(m->conf.labels, sizeof m->conf.labels, "%.1000s", path);
        snprintf(path, sizeof path, "%s/config.conf", mdir);
        r = conf_ini_read(path, false, CONF_MAX_BYTES, &ops);
        return r == -ENOENT ? 0 : r;
}

/* The pairs of o over c (their values were checked when o was parsed,
 * against the same function). */
static int override_apply(const struct repo_override *o, const char *mdir, struct repo_model_conf *c, char *err,
                          size_t err_len)
{
        char key[64], value[REPO_OVERRIDE_MAX_VALUE + 1];
        int r;

        for (int i = 0; i < o->n; i++) {
                snprintf(key, sizeof key, "%s", o->keys[i]);
                snprintf(value, sizeof value, "%s", o->values[i]);
                if ((r = conf_set(c, mdir, key, value, err, err_len)) < 0)
                        return r;
        }
        return 0;
}

/* s (n bytes and a NUL) into o's text; NULL when it is full. */
static const char *override_store(struct repo_override *o, const char *s, size_t n)
{
        if (o->cap - o->used < n + 1)
                return NULL;
        char *at = o->text + o->used;
        memcpy(at, s, n);
        at[n] = '\0';
        o->used += n + 1;
        return at;
}

/* One key and value of a load's config into o, checked as config.conf's
 * would be (against a scratch conf: a value's meaning, such as a relative
 * path, comes with the scan). */
static int override_add(struct repo_override *o, const char *key, json_t *v, char *err, size_t err_len)
{
        struct repo_model_conf scratch = { .policy = REPO_LATEST, .latest = 1 };
        char k[64], value[REPO_OVERRIDE_MAX_VALUE + 2], shown[64];
        int n;

        if (o->n >= REPO_OVERRIDE_MAX_KEYS)
                return err_set(err, err_len, -E2BIG, "more than %d keys", REPO_OVERRIDE_MAX_KEYS);
        if (snprintf(k, sizeof k, "%s", key) >= (int)sizeof k) {
                str_escape(key, shown, sizeof shown);
                return err_set(err, err_len, -EINVAL, "unknown key '%s'", shown);
        }
        if (json_is_string(v))
                n = snprintf(value, sizeof value, "%s", json_string_value(v));
        else if (json_is_integer(v))
                n = snprintf(value, sizeof value, "%lld", (long long)json_integer_value(v));
        else if (json_is_real(v))
                n = snprintf(value, sizeof value, "%.17g", json_real_value(v));
        else if (json_is_boolean(v))
                n = snprintf(value, sizeof value, "%s", json_is_true(v) ? "true" : "false");
        else
                return err_set(err, err_len, -EINVAL, "%s: a string or a number, not %s", k,
                               json_is_null(v) ? "null" : json_is_array(v) ? "an array" : "an object");
        if (n > REPO_OVERRIDE_MAX_VALUE)
                return err_set(err, err_len, -E2BIG, "%s: value longer than %d bytes", k, REPO_OVERRIDE_MAX_VALUE);
        const char *sk = override_store(o, k, strlen(k)), *sv = override_store(o, value, (size_t)n);
        if (!sk || !sv)
                return err_set(err, err_len, -E2BIG, "the config is too large");
        /* conf_set writes into its key and value: the stored copies stay as given. */
        if (conf_set(&scratch, ".", k, value, err, err_len) < 0)
                return -EINVAL;
        o->keys[o->n] = sk;
        o->values[o->n] = sv;
        o->n++;
        return 0;
}

int repo_override_parse(const char *name, const char *body, size_t len, char *err, size_t err_len,
                        struct repo_override **ret_override)
{
        static _Atomic uint64_t next_id = 1;
        struct repo_override *o = NULL;
        json_t *root = NULL, *config = NULL, *params, *v;
        json_error_t jerr;
        const char *key;
        char why[512];
        int r = 0;

        /* An empty body, or one without parameters.config: config.conf alone. */
        if (len == 0)
                goto none;
        if (!(root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr)) || !json_is_object(root)) {
                r = err_set(err, err_len, -EINVAL, "the load's body is not a JSON object%s%.200s",
                            root ? "" : ": ", root ? "" : jerr.text);
                goto done;
        }
        params = json_object_get(root, "parameters");
        if (params && !json_is_object(params)) {
                r = err_set(err, err_len, -EINVAL, "the load's \"parameters\" is not an object");
                goto done;
        }
        json_object_foreach(params, key, v)
                if (strcmp(key, "config") != 0) {
                        char shown[64];
                        str_escape(key, shown, sizeof shown);
                        r = err_set(err, err_len, -EINVAL, "the load's parameter '%s' is not supported (only config)",
                                    shown);
                        goto done;
                }
        v = params ? json_object_get(params, "config") : NULL;
        if (!v)
                goto none;
        if (!json_is_string(v) ||
            !(config = json_loadb(json_string_value(v), json_string_length(v), JSON_REJECT_DUPLICATES, &jerr)) ||
            !json_is_object(config)) {
                r = err_set(err, err_len, -EINVAL, "the load's config is not a string holding a JSON object of "
                            "config.conf's keys%s%.200s", config || !json_is_string(v) ? "" : ": ",
                            config || !json_is_string(v) ? "" : jerr.text);
                goto done;
        }
        /* Room for the keys and values as given, numbers written out longer
         * than in JSON (at most 24 bytes each) and their NULs. */
        size_t cap = json_string_length(v) + REPO_OVERRIDE_MAX_KEYS * 32;
        if (!(o = calloc(1, sizeof *o + cap))) {
                r = err_set(err, err_len, -ENOMEM, "out of memory");
                goto done;
        }
        snprintf(o->name, sizeof o->name, "%s", name);
        o->cap = cap;
        json_object_foreach(config, key, v)
                if ((r = override_add(o, key, v, why, sizeof why)) < 0) {
                        err_set(err, err_len, r, "the load's config: %s", why);
                        goto done;
                }
        o->id = next_id++;
        *ret_override = o;
        o = NULL;
        goto done;
none:
        *ret_override = NULL;
done:
        free(o);
        json_decref(config);
        json_decref(root);
        return r;
}

struct repo_override *repo_override_free(struct repo_override *o)
{
        free(o);
        return NULL;
}

static int cmp_version_desc(const void *a, const void *b)
{
        int64_t x = ((const struct repo_version *)a)->version, y = ((const struct repo_version *)b)->version;
        return x < y ? 1 : x > y ? -1 : 0;
}

/* The calibration file of version folder vname: the calibration key's
 * (an absolute path, or one relative to the version's folder, since a
 * calibration is made for one version's weights), else calibration.json
 * there when it exists; "" for none. */
static void version_calibration(const char *mdir, const char *vname, const struct repo_model_conf *c, char *buf,
                                size_t n)
{
        if (c->calibration[0] == '/')
                snprintf(buf, n, "%.1000s", c->calibration);
        else if (c->calibration[0])
                snprintf(buf, n, "%.500s/%.30s/%.500s", mdir, vname, c->calibration);
        else if (snprintf(buf, n, "%.1000s/%.30s/calibration.json", mdir, vname) > 0 && access(buf, F_OK) != 0)
                buf[0] = '\0';
}

/* The versions of the model in mdir that its policy wants, highest first. */
static void scan_versions(const char *mdir, struct repo_model *m)
{
        enum { MAX_FOUND = 256 };
        struct repo_version *found = calloc(MAX_FOUND, sizeof *found);   /* 700 KiB: not on a stack */
        int n = 0;
        DIR *d = found ? opendir(mdir) : NULL;
        struct dirent *e;

        if (!d) {
                snprintf(m->error, sizeof m->error, "%.300s: %s", mdir, strerror(found ? errno : ENOMEM));
                free(found);
                return;
        }
        while ((e = readdir(d)) && n < MAX_FOUND) {
                int64_t v;
                char path[1200];
                if (e->d_name[0] < '1' || e->d_name[0] > '9' ||
                    parse_int("version", e->d_name, 1, INT64_MAX, NULL, 0, &v) < 0)
                        continue;
                snprintf(path, sizeof path, "%.1000s/%.180s/model.safetensors", mdir, e->d_name);
                struct stat st;
                if (stat(path, &st) < 0 || !S_ISREG(st.st_mode) || strlen(path) >= sizeof found[n].path)
                        continue;   /* a version folder still being written, or something else */
                found[n].version = v;
                snprintf(found[n].path, sizeof found[n].path, "%.1020s", path);
                version_calibration(mdir, e->d_name, &m->conf, found[n].calibration, sizeof found[n].calibration);
                char a[160], b[160];
                ident_of(path, a, sizeof a);
                ident_of(found[n].calibration[0] ? found[n].calibration : "/", b, sizeof b);
                snprintf(found[n].ident, sizeof found[n].ident, "%s/%s", a, b);
                n++;
        }
        closedir(d);
        qsort(found, (size_t)n, sizeof found[0], cmp_version_desc);
        for (int i = 0; i < n && m->n_versions < REPO_MAX_VERSIONS; i++) {
                bool want = m->conf.policy == REPO_ALL || (m->conf.policy == REPO_LATEST && i < m->conf.latest);
                for (int k = 0; m->conf.policy == REPO_SPECIFIC && k < m->conf.n_specific; k++)
                        want = want || m->conf.specific[k] == found[i].version;
                if (want)
                        m->versions[m->n_versions++] = found[i];
        }
        free(found);
        if (m->n_versions == 0 && !m->error[0])
                snprintf(m->error, sizeof m->error, n ? "no version of %.300s/VERSION/model.safetensors that its "
                         "version-policy wants" : "no %.300s/VERSION/model.safetensors (VERSION: a positive integer)",
                         mdir);
}

static int cmp_model(const void *a, const void *b)
{
        return strcmp(((const struct repo_model *)a)->name, ((const struct repo_model *)b)->name);
}

int repo_scan(const char *dir, const char *only, const struct repo_override *overrides, char *err, size_t err_len,
              struct repo_scan **ret_scan)
{
        struct repo_scan *sc = NULL;
        DIR *d = NULL;
        struct dirent *e;
        int r = 0;

        if (!(d = opendir(dir)))
                return err_set(err, err_len, -errno, "model repository %s: %s", dir, strerror(errno));
        sc = calloc(1, sizeof *sc + sizeof sc->models[0] * REPO_MAX_MODELS);
        if (!sc) {
                r = err_set(err, err_len, -ENOMEM, "out of memory");
                goto done;
        }
        while ((e = readdir(d))) {
                char mdir[1100], why[512];
                struct stat st;
                if (!repo_name_ok(e->d_name, strlen(e->d_name)) || (only && strcmp(only, e->d_name) != 0))
                        continue;
                snprintf(mdir, sizeof mdir, "%s/%s", dir, e->d_name);
                if (stat(mdir, &st) < 0 || !S_ISDIR(st.st_mode))
                        continue;
                if (sc->n >= REPO_MAX_MODELS) {
                        r = err_set(err, err_len, -E2BIG, "model repository %s: more than %d models", dir,
                                    REPO_MAX_MODELS);
                        goto done;
                }
                struct repo_model *m = &sc->models[sc->n++];
                memset(m, 0, sizeof *m);
                snprintf(m->name, sizeof m->name, "%s", e->d_name);
                if (read_conf(mdir, m, why, sizeof why) < 0) {
                        snprintf(m->error, sizeof m->error, "%.500s", why);
                        continue;
                }
                char a[160], b[160], cp[1200];
                snprintf(cp, sizeof cp, "%s/config.conf", mdir);
                ident_of(cp, a, sizeof a);
                ident_of(m->conf.labels[0] ? m->conf.labels : "/", b, sizeof b);
                snprintf(m->conf_ident, sizeof m->conf_ident, "%.70s/%.70s", a, b);
                const struct repo_override *o = overrides;
                while (o && strcmp(o->name, m->name) != 0)
                        o = o->next;
                if (o && override_apply(o, mdir, &m->conf, why, sizeof why) < 0) {
                        snprintf(m->error, sizeof m->error, "the load's config: %.400s", why);
                        continue;
                }
                if (o)
                        snprintf(m->conf_ident + strlen(m->conf_ident), sizeof m->conf_ident - strlen(m->conf_ident),
                                 "/override %llu", (unsigned long long)o->id);
                scan_versions(mdir, m);
        }
        if (only && sc->n == 0) {
                r = err_set(err, err_len, -ENOENT, "no model %s in the model repository %s", only, dir);
                goto done;
        }
        qsort(sc->models, (size_t)sc->n, sizeof sc->models[0], cmp_model);
        *ret_scan = sc;
        sc = NULL;
done:
        closedir(d);
        free(sc);
        return r;
}

struct repo_scan *repo_scan_free(struct repo_scan *sc)
{
        free(sc);
        return NULL;
}

const struct repo_model *repo_scan_find(const struct repo_scan *sc, const char *name)
{
        for (int i = 0; sc && i < sc->n; i++)
                if (strcmp(sc->models[i].name, name) == 0)
                        return &sc->models[i];
        return NULL;
}
