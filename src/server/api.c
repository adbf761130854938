/* api: JSON bodies of the effnetd HTTP API, error codes, class labels. */
#include "api.h"
#include "util.h"
#include "batcher.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The ImageNet-1k class names, one per line (etc/labels/imagenet-1k.txt,
 * compiled in). */
extern const char api_builtin_imagenet_labels[];

/* A labels file is kept as read, with a pointer per class: 64 MiB is some
 * 3 KB per class of an ImageNet-21k model. */
#define LABELS_MAX_FILE_BYTES ((long)64 << 20)
/* A hub repository's config.json, read whole and parsed by jansson, whose
 * tree takes up to some 80 bytes per byte of text: 4 MiB (at most about 330
 * MB of tree while a model loads) is three times timm's config.json of an
 * ImageNet-21k model (21843 label names and descriptions, about 1.2 MB). */
#define HUB_CONFIG_MAX_FILE_BYTES ((long)4 << 20)

struct api_labels {
        int classes;
        char **names;     /* [classes], pointers into text */
        char *text;       /* owned: the file's bytes, lines NUL-terminated */
        char *source;     /* owned */
};

struct api_labels *api_labels_free(struct api_labels *l)
{
        if (!l)
                return NULL;
        free(l->names);
        free(l->text);
        free(l->source);
        free(l);
        return NULL;
}

/* Splits text (owned by l) into lines: "\n" or "\r\n" ends a line; a last
 * line without "\n" counts too. Returns the line count, or -1 past max. */
static int split_lines(char *text, size_t len, char **names, int max)
{
        int n = 0;
        size_t i = 0;

        while (i < len) {
                char *line = text + i;
                char *nl = memchr(line, '\n', len - i);
                size_t l = nl ? (size_t)(nl - line) : len - i;
                if (n >= max)
                        return -1;
                if (l > 0 && line[l - 1] == '\r')
                        line[l - 1] = '\0';
                line[l] = '\0';
                if (names)
                        names[n] = line;
                n++;
                i += l + 1;
        }
        return n;
}

/* The file at path, of at most max bytes (-E2BIG beyond, before it is
 * read), NUL-terminated; messages start with what (e.g. "labels ") and path. */
static int read_text_file(const char *path, long max, const char *what, char **ret_text, size_t *ret_len, char *err,
                          size_t err_len)
{
        FILE *f = fopen(path, "rbe");
        char *buf = NULL;
        long size;
        int r;

        if (!f)
                return err_set(err, err_len, -errno, "%s%s: %s", what, path, strerror(errno));
        if (fseek(f, 0, SEEK_END) < 0 || (size = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) < 0) {
                r = err_set(err, err_len, -EIO, "%s%s: cannot get its size", what, path);
                goto out;
        }
        if (size > max) {
                r = err_set(err, err_len, -E2BIG, "%s%s: %ld bytes, more than %ld", what, path, size, max);
                goto out;
        }
        buf = malloc((size_t)size + 1);
        if (!buf) {
                r = err_set(err, err_len, -ENOMEM, "%s%s: out of memory", what, path);
                goto out;
        }
        if (fread(buf, 1, (size_t)size, f) != (size_t)size) {
                r = err_set(err, err_len, -EIO, "%s%s: read error", what, path);
                goto out;
        }
        buf[size] = '\0';
        *ret_text = buf;
        *ret_len = (size_t)size;
        buf = NULL;
        r = 0;
out:
        free(buf);
        fclose(f);
        return r;
}

static int labels_finish(struct api_labels *l, size_t len, char *err, size_t err_len);

int api_labels_load(const char *path, int classes, char *err, size_t err_len, struct api_labels **ret_labels)
{
        struct api_labels *l = NULL;
        size_t len = 0;
        int r;

        if (classes < 1)
                return err_set(err, err_len, -EINVAL, "labels: %d classes", classes);
        l = calloc(1, sizeof *l);
        if (!l)
                return err_set(err, err_len, -ENOMEM, "out of memory");
        l->classes = classes;
        if (path) {
                if ((r = read_text_file(path, LABELS_MAX_FILE_BYTES, "labels ", &l->text, &len, err, err_len)) < 0)
                        goto fail;
                const char *nul = memchr(l->text, '\0', len);
                if (nul) {
                        r = err_set(err, err_len, -EBADMSG, "labels %s: NUL byte at offset %td", path, nul - l->text);
                        goto fail;
                }
                if (asprintf(&l->source, "file:%s", path) < 0)
                        l->source = NULL;
        } else if (classes == 1000) {
                l->text = strdup(api_builtin_imagenet_labels);
                len = l->text ? strlen(l->text) : 0;
                l->source = strdup("builtin-imagenet-1k");
        } else {
                /* Index labels: "0", "1", ... each up to 10 digits. */
                size_t cap = (size_t)classes * 12;
                l->text = malloc(cap);
                if (l->text) {
                        for (int i = 0; i < classes; i++)
                                len += (size_t)snprintf(l->text + len, cap - len, "%d\n", i);
                }
                l->source = strdup("indices");
        }
        if (!l->text || !l->source) {
                r = err_set(err, err_len, -ENOMEM, "out of memory");
                goto fail;
        }
        if ((r = labels_finish(l, len, err, err_len)) < 0)
                goto fail;
        *ret_labels = l;
        return 0;
fail:
        api_labels_free(l);
        return r;
}

/* Splits l->text (len bytes, one name per line) into l->names and checks
 * the names. */
static int labels_finish(struct api_labels *l, size_t len, char *err, size_t err_len)
{
        int classes = l->classes;

        l->names = calloc((size_t)classes, sizeof *l->names);
        if (!l->names)
                return err_set(err, err_len, -ENOMEM, "out of memory");
        int n = split_lines(l->text, len, l->names, classes);
        if (n != classes) {
                if (n < 0)
                        return err_set(err, err_len, -EINVAL, "labels %s: more lines than the model's %d classes",
                                       l->source, classes);
                return err_set(err, err_len, -EINVAL, "labels %s: %d lines but the model has %d classes",
                               l->source, n, classes);
        }
        /* Names go into every answer as JSON strings and into logs. */
        for (int i = 0; i < classes; i++) {
                ptrdiff_t at = str_unprintable(l->names[i]);
                if (at >= 0)
                        return err_set(err, err_len, -EBADMSG,
                                       "labels %s:%d: byte 0x%02x at column %td is not printable UTF-8 text",
                                       l->source, i + 1, (unsigned char)l->names[i][at], at + 1);
        }
        return 0;
}

/* The name of class i in timm's label_names (a list, or an object keyed by
 * the index in decimal), or NULL. */
static const char *hub_label_name(json_t *names, int i)
{
        char key[16];

        if (json_is_array(names))
                return json_string_value(json_array_get(names, (size_t)i));
        snprintf(key, sizeof key, "%d", i);
        return json_string_value(json_object_get(names, key));
}

/* timm's label_names in root, which must name classes classes. */
static int hub_names(json_t *root, const char *config_path, int classes, char *err, size_t err_len,
                     json_t **ret_names)
{
        json_t *names = json_object_get(root, "label_names");

        if (!json_is_array(names) && !json_is_object(names))
                return err_set(err, err_len, -ENOENT, "%s: no label_names", config_path);
        size_t count = json_is_array(names) ? json_array_size(names) : json_object_size(names);
        if (count != (size_t)classes)
                return err_set(err, err_len, -EINVAL, "%s: %zu label_names but the model has %d classes",
                               config_path, count, classes);
        *ret_names = names;
        return 0;
}

/* One name per line, as a labels file holds them: each class's
 * description when desc has one, else its name. *ret_text is new. */
static int hub_labels_text(json_t *names, json_t *desc, const char *config_path, int classes, char *err,
                           size_t err_len, char **ret_text, size_t *ret_len)
{
        char *text = NULL;
        size_t text_len = 0;
        FILE *f = open_memstream(&text, &text_len);

        if (!f)
                return err_set(err, err_len, -ENOMEM, "out of memory");
        for (int i = 0; i < classes; i++) {
                const char *name = hub_label_name(names, i);
                const char *d = name && json_is_object(desc) ? json_string_value(json_object_get(desc, name)) : NULL;
                if (!name || strchr(d ? d : name, '\n')) {
                        fclose(f);
                        free(text);
                        return err_set(err, err_len, -EINVAL, "%s: the name of class %d is %s", config_path, i,
                                       name ? "more than one line" : "missing or not a string");
                }
                fprintf(f, "%s\n", d ? d : name);
        }
        if (fclose(f) != 0 || !text) {
                free(text);
                return err_set(err, err_len, -ENOMEM, "out of memory");
        }
        *ret_text = text;
        *ret_len = text_len;
        return 0;
}

/* Labels of classes classes from text (len bytes, taken: freed on
 * failure too), from source. */
static int labels_of_text(char *text, size_t len, int classes, const char *source, char *err, size_t err_len,
                          struct api_labels **ret_labels)
{
        struct api_labels *l = calloc(1, sizeof *l);
        int r;

        if (!l) {
                free(text);
                return err_set(err, err_len, -ENOMEM, "out of memory");
        }
        l->classes = classes;
        l->text = text;
        l->source = strdup(source);
        /* A name with a NUL inside would end early and be cut: not printable. */
        r = l->source ? labels_finish(l, len, err, err_len) : err_set(err, err_len, -ENOMEM, "out of memory");
        if (r < 0) {
                api_labels_free(l);
                return r;
        }
        *ret_labels = l;
        return 0;
}

int api_labels_load_hub_config(const char *config_path, int classes, char *err, size_t err_len,
                               struct api_labels **ret_labels)
{
        json_error_t jerr;
        json_t *root, *names = NULL;
        char *text = NULL;
        size_t len = 0;
        int r;

        if (classes < 1)
                return err_set(err, err_len, -EINVAL, "labels: %d classes", classes);
        /* Its size first: jansson's tree of it costs many times its text. */
        if ((r = read_text_file(config_path, HUB_CONFIG_MAX_FILE_BYTES, "", &text, &len, err, err_len)) < 0)
                return r == -E2BIG || r == -ENOMEM ? r : -EIO;  /* -ENOENT says: no label_names */
        root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
        free(text);
        text = NULL;
        if (!root)
                return err_set(err, err_len, -EBADMSG, "%s: not JSON: %s", config_path, jerr.text);
        if ((r = hub_names(root, config_path, classes, err, err_len, &names)) < 0)
                goto out;
        r = hub_labels_text(names, json_object_get(root, "label_descriptions"), config_path, classes, err, err_len,
                            &text, &len);
        if (r < 0)
                goto out;
        r = labels_of_text(text, len, classes, "hub:config.json", err, err_len, ret_labels);
out:
        json_decref(root);
        return r;
}

const char *api_labels_get(const struct api_labels *l, int index)
{
        return l->names[index];
}

int api_labels_open(const char *path, const char *hub_config, int classes, char *err, size_t err_len, char *note,
                    size_t note_len, struct api_labels **ret_labels)
{
        char why[512];
        int r;

        if (note_len)
                note[0] = '\0';
        if (path || !hub_config)
                return api_labels_load(path, classes, err, err_len, ret_labels);
        r = api_labels_load_hub_config(hub_config, classes, why, sizeof why, ret_labels);
        if (r == 0)
                return 0;
        if (r != -ENOENT && note_len)
                snprintf(note, note_len, "not taken from the repository's config.json: %s", why);
        return api_labels_load(NULL, classes, err, err_len, ret_labels);
}

const char *api_labels_source(const struct api_labels *l)
{
        return l->source;
}

int api_labels_count(const struct api_labels *l)
{
        return l->classes;
}

const char *api_weights_source_name(int source)
{
        return source == API_WEIGHTS_SEEDED ? "seeded" : source == API_WEIGHTS_HUB ? "hub" : "file";
}

/* {"source", "trained": false for seeded weights, "seed", "file", "path"
 * (when w has one), "sha256", and for hub weights "repo", "revision",
 * "commit"}. */
static json_t *weights_json(const struct api_weights *w)
{
        json_t *o = json_pack("{s:s, s:s}", "source", api_weights_source_name(w->source), "sha256",
                              w->sha256 ? w->sha256 : "");
        if (!o)
                return NULL;
        int r = 0;
        if (w->file)
                r |= json_object_set_new(o, "file", json_string(w->file));
        if (w->path)
                r |= json_object_set_new(o, "path", json_string(w->path));
        if (w->seed >= 0) {
                r |= json_object_set_new(o, "trained", json_false());
                r |= json_object_set_new(o, "seed", json_integer((json_int_t)w->seed));
        }
        if (w->source == API_WEIGHTS_HUB) {
                const char *keys[] = { "repo", "revision", "commit" };
                const char *vals[] = { w->repo, w->revision, w->commit };
                for (size_t i = 0; i < ARRAY_SIZE(keys); i++)
                        r |= json_object_set_new(o, keys[i], json_string(vals[i] ? vals[i] : ""));
        }
        if (r) {
                json_decref(o);
                return NULL;
        }
        return o;
}

int api_parse_top_k(const char *s, int classes, int *ret_k)
{
        if (!s) {
                *ret_k = API_DEFAULT_TOP_K < classes ? API_DEFAULT_TOP_K : classes;
                return 0;
        }
        int64_t v;
        if (parse_int("top_k", s, 1, classes, NULL, 0, &v) < 0)
                return -EINVAL;
        *ret_k = (int)v;
        return 0;
}

/* Serializes and frees root. Scores keep 6 significant digits. */
static int dump(json_t *root, char **ret_body)
{
        if (!root)
                return -ENOMEM;
        char *s = json_dumps(root, JSON_COMPACT | JSON_REAL_PRECISION(6));
        json_decref(root);
        if (!s)
                return -ENOMEM;
        *ret_body = s;
        return 0;
}

static json_t *predictions(const struct api_labels *labels, float *probs, int classes, int k)
{
        int *idx = malloc(sizeof(int) * (size_t)k);
        json_t *arr = json_array();

        if (!arr || !idx) {
                free(idx);
                json_decref(arr);
                return NULL;
        }
        effnet_softmax(probs, classes);
        int n = effnet_topk(probs, classes, k, idx);
        for (int i = 0; i < n; i++) {
                json_t *p = json_pack("{s:i, s:s, s:f}", "index", idx[i], "label", api_labels_get(labels, idx[i]),
                                      "score", (double)probs[idx[i]]);
                if (!p || json_array_append_new(arr, p) < 0) {
                        json_decref(arr);
                        arr = NULL;
                        break;
                }
        }
        free(idx);
        return arr;
}

int api_classify_body(const char *model, const struct api_labels *labels, float *logits, int n, int classes,
                      int top_k, bool multi, char **ret_body)
{
        if (n < 1 || top_k < 1 || top_k > classes || (!multi && n != 1))
                return -EINVAL;
        /* NaN or Inf would make softmax and the JSON meaningless. */
        for (size_t i = 0; i < (size_t)n * (size_t)classes; i++)
                if (!isfinite(logits[i]))
                        return -EDOM;
        json_t *root = json_pack("{s:s}", "model", model);
        if (!root)
                return -ENOMEM;
        if (!multi) {
                json_t *p = predictions(labels, logits, classes, top_k);
                if (!p || json_object_set_new(root, "predictions", p) < 0)
                        goto nomem;
                return dump(root, ret_body);
        }
        json_t *results = json_array();
        if (!results || json_object_set_new(root, "results", results) < 0)
                goto nomem;
        for (int i = 0; i < n; i++) {
                json_t *p = predictions(labels, logits + (size_t)i * (size_t)classes, classes, top_k);
                json_t *r = p ? json_pack("{s:o}", "predictions", p) : NULL;
                if (!r || json_array_append_new(results, r) < 0)
                        goto nomem;
        }
        return dump(root, ret_body);
nomem:
        json_decref(root);
        return -ENOMEM;
}

static const char *const error_codes[API_N_ERRORS] = {
        [API_E_INVALID_ARGUMENT] = "invalid_argument",
        [API_E_INVALID_IMAGE] = "invalid_image",
        [API_E_INVALID_MULTIPART] = "invalid_multipart",
        [API_E_INVALID_REQUEST] = "invalid_request",
        [API_E_NOT_FOUND] = "not_found",
        [API_E_METHOD_NOT_ALLOWED] = "method_not_allowed",
        [API_E_MISDIRECTED] = "misdirected_request",
        [API_E_TOO_LARGE] = "payload_too_large",
        [API_E_UNSUPPORTED_MEDIA] = "unsupported_media_type",
        [API_E_INTERNAL] = "internal",
        [API_E_NON_FINITE] = "non_finite_output",
        [API_E_OVERLOADED] = "overloaded",
        [API_E_DRAINING] = "draining",
        [API_E_DEADLINE] = "deadline_exceeded",
        [API_E_CLIENT_GONE] = "client_closed_request",
        [API_E_UNAUTHENTICATED] = "unauthenticated",
};

const char *api_error_code(enum api_error e)
{
        return error_codes[e];
}

int api_error_body(enum api_error e, const char *message, char **ret_body)
{
        /* Messages quote what the client sent (a path, a media type): not
         * UTF-8 there would make the JSON fail, and the answer a 500. */
        char clean[1024];
        str_escape(message ? message : "", clean, sizeof clean);
        return dump(json_pack("{s:{s:s, s:s}}", "error", "code", error_codes[e], "message", clean),
                    ret_body);
}

int api_models_body(const struct api_model_desc *d, char **ret_body)
{
        const struct effnet_info *i = d->info;
        const struct effnet_preproc *pp = &i->preproc;
        const struct batch_config *b = d->batch;
        json_t *sizes = json_array();

        if (!sizes)
                return -ENOMEM;
        for (int k = 0; k < b->n_exec; k++)
                if (json_array_append_new(sizes, json_integer(b->exec_batch[k])) < 0) {
                        json_decref(sizes);
                        return -ENOMEM;
                }
        struct effnet_cpu cpu;
        effnet_cpu_info(&cpu);
        json_t *weights = weights_json(d->weights);
        if (!weights) {
                json_decref(sizes);
                return -ENOMEM;
        }
        json_t *model = json_pack(
                "{s:s, s:s, s:i, s:i, s:s, s:s, s:s, s:o, s:s, s:I, s:s, s:{s:s, s:i},"
                " s:{s:s, s:s, s:f, s:[f,f,f], s:[f,f,f]},"
                " s:{s:i, s:f, s:i, s:i, s:i, s:o, s:I},"
                " s:{s:I, s:i, s:I}}",
                "name", i->variant, "variant", i->variant, "input_size", pp->size, "classes", i->classes,
                "precision", effnet_precision_name(b->precision), "cpu_isa", cpu.isa, "onednn",
                effnet_onednn_version(), "weights", weights,
                "weights_scheme",
                i->scheme == EFFNET_SCHEME_TIMM ? "timm" : "torchvision", "parameters", (json_int_t)i->params,
                "dtype", i->dtype, "labels", "source", d->labels, "count", i->classes,
                "preprocessing", "resize", pp->resize == EFFNET_RESIZE_BICUBIC ? "bicubic" : "bilinear", "crop",
                pp->crop == EFFNET_CROP_SQUASH ? "squash" : "center", "crop_pct", (double)pp->crop_pct, "mean",
                (double)pp->mean[0], (double)pp->mean[1], (double)pp->mean[2], "std", (double)pp->std[0],
                (double)pp->std[1], (double)pp->std[2],
                "batching", "max_batch_size", b->max_batch, "max_queue_delay_ms", (double)b->max_delay_us / 1000.0,
                "queue_images", b->queue_images, "workers", b->workers, "threads_per_worker", b->threads,
                "executor_batch_sizes", sizes, "executor_bytes", (json_int_t)b->exec_bytes,
                "limits", "deadline_ms", (json_int_t)d->deadline_ms, "max_images", d->max_images,
                "max_body_bytes", (json_int_t)d->max_body_bytes);
        if (!model)
                return -ENOMEM;
        const struct effnet_int8_check *k = d->int8;
        if (k && json_object_set_new(model, "int8", json_pack("{s:f, s:f, s:f, s:f, s:i}", "top1_agreement",
                                                               k->top1_agreement, "top5_overlap", k->top5_overlap,
                                                               "max_logit_diff", k->max_logit_diff,
                                                               "rms_logit_diff", k->rms_logit_diff, "images",
                                                               k->images)) < 0) {
                json_decref(model);
                return -ENOMEM;
        }
        return dump(json_pack("{s:[o]}", "models", model), ret_body);
}

int api_models_list_body(const struct api_model_row *rows, int n, char **ret_body)
{
        json_t *list = json_array();
        int r = -ENOMEM;

        if (!list)
                return -ENOMEM;
        for (int i = 0; i < n; i++) {
                const struct api_model_row *x = &rows[i];
                json_t *o = NULL;
                if (x->body) {
                        /* Its own body's one model. */
                        json_t *body = json_loads(x->body, 0, NULL);
                        json_t *m = json_array_get(json_object_get(body, "models"), 0);
                        if (json_is_object(m))
                                o = json_incref(m);
                        json_decref(body);
                        if (!o) {
                                r = -EINVAL;
                                goto fail;
                        }
                } else if (!(o = json_object())) {
                        goto fail;
                }
                json_object_set_new(o, "name", json_string(x->name));
                if (x->version > 0)
                        json_object_set_new(o, "version", json_integer(x->version));
                json_object_set_new(o, "state", json_string(x->state));
                if (x->reason && *x->reason)
                        json_object_set_new(o, "reason", json_string(x->reason));
                json_array_append_new(list, o);
        }
        return dump(json_pack("{s:o}", "models", list), ret_body);
fail:
        json_decref(list);
        return r;
}
