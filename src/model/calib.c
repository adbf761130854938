/* calib: int8 calibration files (JSON), validated before anything uses them,
 * and the histograms of activations that calibrate chooses clipping from. */
#include "calib.h"
#include "effnet.h"
#include "model.h"
#include "util.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int calib_new(int n, struct calib **ret_calib)
{
        struct calib *c = calloc(1, sizeof *c);
        if (!c || (n > 0 && !(c->v = calloc((size_t)n, sizeof *c->v)))) {
                free(c);
                return -ENOMEM;
        }
        c->n = n;
        *ret_calib = c;
        return 0;
}

struct calib *calib_free(struct calib *c)
{
        if (!c)
                return NULL;
        free(c->v);
        free(c);
        return NULL;
}

/* A string member of o into out (at most n - 1 bytes, no NUL inside). */
static int get_str(json_t *o, const char *key, char *out, size_t n, char *err, size_t err_len)
{
        json_t *v = json_object_get(o, key);
        if (!json_is_string(v) || json_string_length(v) >= n || strlen(json_string_value(v)) != json_string_length(v))
                return err_set(err, err_len, -EBADMSG, "calibration: \"%s\" must be a string of at most %zu bytes",
                               key, n - 1);
        memcpy(out, json_string_value(v), json_string_length(v) + 1);
        return 0;
}

/* A number member of o within [lo, hi]. */
static int get_num(json_t *o, const char *key, double lo, double hi, double *ret, char *err, size_t err_len)
{
        json_t *v = json_object_get(o, key);
        double d = json_is_number(v) ? json_number_value(v) : NAN;
        if (!(d >= lo && d <= hi))
                return err_set(err, err_len, -EBADMSG, "calibration: \"%s\" must be a number in [%g, %g]", key, lo,
                               hi);
        *ret = d;
        return 0;
}

static int parse_check(json_t *o, struct calib_check *ret, char *err, size_t err_len)
{
        double images;
        int r;
        if (!json_is_object(o))
                return err_set(err, err_len, -EBADMSG, "calibration: \"selfcheck\" must be an object");
        if ((r = get_num(o, "images", 0, 1e9, &images, err, err_len)) < 0 ||
            (r = get_num(o, "top1_agreement", 0, 1, &ret->top1_agreement, err, err_len)) < 0 ||
            (r = get_num(o, "top5_overlap", 0, 1, &ret->top5_overlap, err, err_len)) < 0 ||
            (r = get_num(o, "max_logit_diff", 0, 1e30, &ret->max_logit_diff, err, err_len)) < 0 ||
            (r = get_num(o, "rms_logit_diff", 0, 1e30, &ret->rms_logit_diff, err, err_len)) < 0)
                return r;
        ret->images = (int)images;
        return 0;
}

static int parse_layer(json_t *o, int i, struct calib_layer *ret, char *err, size_t err_len)
{
        double scale, sens = -1;
        json_t *int8 = json_object_get(o, "int8");
        int r;

        if (!json_is_object(o))
                return err_set(err, err_len, -EBADMSG, "calibration: layer %d is not an object", i);
        if ((r = get_str(o, "name", ret->name, sizeof ret->name, err, err_len)) < 0 ||
            (r = get_num(o, "scale", 1e-30, 1e30, &scale, err, err_len)) < 0)
                return err_set(err, err_len, r, "calibration: layer %d: needs a \"name\" and a positive \"scale\"",
                               i);
        if (!json_is_boolean(int8))
                return err_set(err, err_len, -EBADMSG, "calibration: layer %s: \"int8\" must be true or false",
                               ret->name);
        if (json_object_get(o, "sensitivity") && (r = get_num(o, "sensitivity", -1, 1e30, &sens, err, err_len)) < 0)
                return r;
        ret->scale = (float)scale;
        if (!(ret->scale > 0 && isfinite(ret->scale)))
                return err_set(err, err_len, -EBADMSG, "calibration: layer %s: scale %g out of float range",
                               ret->name, scale);
        ret->int8 = json_is_true(int8);
        ret->sensitivity = (float)sens;
        return 0;
}

int calib_parse(const char *text, size_t len, char *err, size_t err_len, struct calib **ret_calib)
{
        struct calib *c = NULL;
        json_error_t jerr;
        json_t *root = NULL;
        char format[32];
        double version = 0, size = 0, images = 0;
        int r;

        if (len > CALIB_MAX_BYTES)
                return err_set(err, err_len, -E2BIG, "calibration: %zu bytes, more than %d", len, CALIB_MAX_BYTES);
        if (!(root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr)))
                return err_set(err, err_len, -EBADMSG, "calibration: not JSON: %s (line %d)", jerr.text, jerr.line);
        json_t *layers = json_object_get(root, "layers");
        if (!json_is_object(root) || !json_is_array(layers)) {
                r = err_set(err, err_len, -EBADMSG, "calibration: not an object with a \"layers\" array");
                goto out;
        }
        if (json_array_size(layers) > CALIB_MAX_LAYERS) {
                r = err_set(err, err_len, -E2BIG, "calibration: %zu layers, more than %d", json_array_size(layers),
                            CALIB_MAX_LAYERS);
                goto out;
        }
        if ((r = calib_new((int)json_array_size(layers), &c)) < 0)
                goto out;
        if ((r = get_str(root, "format", format, sizeof format, err, err_len)) < 0)
                goto out;
        if (strcmp(format, "effnet-calibration") != 0) {
                r = err_set(err, err_len, -EBADMSG, "calibration: format \"%s\", expected \"effnet-calibration\"",
                            format);
                goto out;
        }
        if ((r = get_num(root, "version", 1, CALIB_VERSION, &version, err, err_len)) < 0)
                goto out;
        if (version != CALIB_VERSION) {
                r = err_set(err, err_len, -EBADMSG,
                            "calibration: version %g, made by an older effnet whose int8 plan differed, so its "
                            "self-check does not describe this one: run effnet calibrate again",
                            version);
                goto out;
        }
        if ((r = get_str(root, "weights_sha256", c->sha256, sizeof c->sha256, err, err_len)) < 0 ||
            (r = get_str(root, "variant", c->variant, sizeof c->variant, err, err_len)) < 0 ||
            (r = get_str(root, "method", c->method, sizeof c->method, err, err_len)) < 0 ||
            (r = get_num(root, "size", 32, 4096, &size, err, err_len)) < 0 ||
            (r = get_num(root, "images", 1, 1e9, &images, err, err_len)) < 0 ||
            (r = get_num(root, "threshold", -1, 1e30, &c->threshold, err, err_len)) < 0 ||
            (r = parse_check(json_object_get(root, "selfcheck"), &c->check, err, err_len)) < 0)
                goto out;
        c->size = (int)size;
        c->images = (int)images;
        if (strlen(c->sha256) != 64 || strspn(c->sha256, "0123456789abcdef") != 64) {
                r = err_set(err, err_len, -EBADMSG, "calibration: weights_sha256 is not 64 lower-case hex digits");
                goto out;
        }
        for (int i = 0; i < c->n; i++) {
                if ((r = parse_layer(json_array_get(layers, (size_t)i), i, &c->v[i], err, err_len)) < 0)
                        goto out;
                for (int j = 0; j < i; j++)
                        if (strcmp(c->v[j].name, c->v[i].name) == 0) {
                                r = err_set(err, err_len, -EBADMSG, "calibration: layer %s appears twice",
                                            c->v[i].name);
                                goto out;
                        }
        }
        *ret_calib = c;
        c = NULL;
        r = 0;
out:
        calib_free(c);
        json_decref(root);
        return r;
}

int calib_format(const struct calib *c, char **ret_text)
{
        json_t *layers = json_array(), *root = NULL;
        int r = -ENOMEM;

        if (!layers)
                return -ENOMEM;
        for (int i = 0; i < c->n; i++) {
                json_t *l = json_pack("{s:s, s:f, s:b}", "name", c->v[i].name, "scale", (double)c->v[i].scale,
                                      "int8", c->v[i].int8);
                if (!l || (c->v[i].sensitivity >= 0 &&
                           json_object_set_new(l, "sensitivity", json_real(c->v[i].sensitivity)) < 0) ||
                    json_array_append_new(layers, l) < 0) {
                        json_decref(l);
                        goto out;
                }
        }
        const struct calib_check *k = &c->check;
        root = json_pack("{s:s, s:i, s:s, s:s, s:s, s:i, s:i, s:f, s:{s:i, s:f, s:f, s:f, s:f}, s:O}", "format",
                         "effnet-calibration", "version", CALIB_VERSION, "weights_sha256", c->sha256, "variant",
                         c->variant, "method", c->method, "size", c->size, "images", c->images, "threshold",
                         c->threshold, "selfcheck", "images", k->images, "top1_agreement", k->top1_agreement,
                         "top5_overlap", k->top5_overlap, "max_logit_diff", k->max_logit_diff, "rms_logit_diff",
                         k->rms_logit_diff, "layers", layers);
        char *text = root ? json_dumps(root, JSON_INDENT(1) | JSON_REAL_PRECISION(9)) : NULL;
        if (text) {
                *ret_text = text;
                r = 0;
        }
out:
        json_decref(root);
        json_decref(layers);
        return r;
}

int calib_model_convs(const struct model *m, const struct model_conv **ret_convs,
                      char (*ret_names)[CALIB_NAME_LEN], int max)
{
        int n = 0;
#define PUT(conv, ...)                                                                  \
        do {                                                                            \
                if (n < max) {                                                          \
                        ret_convs[n] = (conv);                                          \
                        snprintf(ret_names[n], CALIB_NAME_LEN, __VA_ARGS__);            \
                }                                                                       \
                n++;                                                                    \
        } while (0)
        PUT(&m->stem, "stem");
        for (int i = 0; i < m->n_blocks; i++) {
                const struct model_block *b = &m->blocks[i];
                PUT(&b->conv1, "blocks.%d.conv1", i);
                if (b->a.kind == ARCH_MBCONV)
                        PUT(&b->dw, "blocks.%d.dw", i);
                if (b->project.oc)
                        PUT(&b->project, "blocks.%d.project", i);
        }
        PUT(&m->head, "head");
#undef PUT
        return n < max ? n : max;
}

static void hist_grow(struct calib_hist *h, double a)
{
        while (a >= h->width * CALIB_HIST_BINS) {
                for (int i = 0; i < CALIB_HIST_BINS / 2; i++)
                        h->bins[i] = h->bins[2 * i] + h->bins[2 * i + 1];
                memset(h->bins + CALIB_HIST_BINS / 2, 0, sizeof(double) * CALIB_HIST_BINS / 2);
                h->width *= 2;
        }
}

void calib_hist_add(struct calib_hist *h, const float *x, size_t count)
{
        float mx = 0;
        for (size_t k = 0; k < count; k++)
                mx = fmaxf(mx, fabsf(x[k]));
        if (h->width == 0)
                h->width = mx > 0 ? (double)mx * 1.0001 / CALIB_HIST_BINS : 1e-6;
        hist_grow(h, mx);
        const double inv = 1.0 / h->width;
        for (size_t k = 0; k < count; k++) {
                int b = (int)(fabsf(x[k]) * inv);
                h->bins[b < CALIB_HIST_BINS ? b : CALIB_HIST_BINS - 1] += 1;
        }
        h->count += (double)count;
}

/* The clipping threshold (in bins) of h[0..last] whose 128 levels of |x|
 * lose the least information: the least Kullback-Leibler divergence between
 * the histogram clipped there (values past it counted in its last bin) and
 * the same bins merged into 128 levels and spread back evenly over the bins
 * that held values (TensorRT's entropy calibration). */
#define KL_LEVELS 128
static int hist_kl_bins(const struct calib_hist *h, int last)
{
        double p[CALIB_HIST_BINS], q[CALIB_HIST_BINS];
        int best = last + 1;
        double best_kl = INFINITY, tail = 0, total = 0;

        /* Every threshold keeps the whole count: what it clips goes into its last bin. */
        for (int k = 0; k <= last; k++)
                total += h->bins[k];
        for (int i = last + 1; i >= KL_LEVELS; i--) {
                /* tail: the count of bins i.. (clipped into bin i - 1). */
                for (int k = 0; k < i; k++)
                        p[k] = h->bins[k];
                p[i - 1] += tail;
                for (int j = 0; j < KL_LEVELS; j++) {
                        int a = (int)((long)j * i / KL_LEVELS), b = (int)((long)(j + 1) * i / KL_LEVELS);
                        double sum = 0;
                        int used = 0;
                        for (int k = a; k < b; k++) {
                                sum += h->bins[k];
                                used += p[k] > 0;
                        }
                        for (int k = a; k < b; k++)
                                q[k] = p[k] > 0 ? sum / used : 0;
                }
                /* q holds the clipped mass only: both sum to their own
                 * totals, normalized here; a bin q leaves empty where p is
                 * not gets a small floor rather than an infinite term. */
                double qt = total - tail, kl = 0;
                for (int k = 0; k < i; k++) {
                        if (p[k] <= 0)
                                continue;
                        double pk = p[k] / total, qk = qt > 0 ? q[k] / qt : 0;
                        kl += pk * log(pk / (qk > 1e-12 ? qk : 1e-12));
                }
                if (kl < best_kl) {
                        best_kl = kl;
                        best = i;
                }
                tail += h->bins[i - 1];
        }
        return best;
}

float calib_hist_scale(const struct calib_hist *h, int method)
{
        int last = CALIB_HIST_BINS - 1;
        while (last > 0 && h->bins[last] == 0)
                last--;
        double clip = (last + 1) * h->width;
        if (method == EFFNET_CLIP_PERCENTILE) {
                double seen = 0, want = h->count * 0.9999;
                for (int i = 0; i <= last; i++) {
                        seen += h->bins[i];
                        if (seen >= want) {
                                clip = (i + 1) * h->width;
                                break;
                        }
                }
        } else if (method == EFFNET_CLIP_MSE) {
                /* Expected squared error of clipping at c: values inside
                 * round with step c/127 (error step^2/12 each), those past c
                 * saturate (error (x - c)^2), from suffix sums of the bins. */
                double s0 = 0, s1 = 0, s2 = 0, best = INFINITY;
                double in = h->count;
                for (int i = last; i >= 0; i--) {
                        double x = (i + 0.5) * h->width, c = (i + 1) * h->width, step = c / 127;
                        /* Bins above i are clipped at c. */
                        double tail = s2 - 2 * c * s1 + c * c * s0;
                        double err = (in - s0) * step * step / 12 + tail;
                        if (err < best) {
                                best = err;
                                clip = c;
                        }
                        s0 += h->bins[i];
                        s1 += h->bins[i] * x;
                        s2 += h->bins[i] * x * x;
                }
        } else if (method == EFFNET_CLIP_KL) {
                clip = hist_kl_bins(h, last) * h->width;
        }
        return clip > 0 ? (float)(clip / 127) : 1.0f;
}
