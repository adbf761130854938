/* repository: scans a model repository on disk (Triton's layout). */
#include "repository.h"
#include "config.h"
#include "util.h"
#include "effnet.h"

#include <ctype.h>
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

int repo_scan(const char *dir, const char *only, char *err, size_t err_len, struct repo_scan **ret_scan)
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
