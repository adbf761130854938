/* model (seeded): deterministic EfficientNetV2 weights whose BatchNorm
 * statistics are calibrated by a plain forward pass over smooth random images,
 * so that the network is far from collapsed (distinct, confident logits). */
#include "model.h"
#include "safetensors.h"
#include "util.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CAL_BATCH 4
#define CAL_SIZE 64
#define LOGIT_STD 4.0

struct rng {
        uint64_t s;
};

static uint64_t rng_next(struct rng *r)
{
        /* splitmix64: tiny, and identical on every platform */
        uint64_t z = (r->s += 0x9e3779b97f4a7c15ull);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        return z ^ (z >> 31);
}

static double rng_uniform(struct rng *r)
{
        return ((double)(rng_next(r) >> 11) + 0.5) / 9007199254740992.0;
}

static double rng_normal(struct rng *r)
{
        double u = rng_uniform(r), v = rng_uniform(r);
        return sqrt(-2 * log(u)) * cos(6.283185307179586 * v);
}

struct tens {
        char name[160];
        int ndim;
        int64_t shape[4];
        float *data;
};

struct seeded {
        struct tens *t;
        int n, cap;
        struct rng rng;
        int scheme, n_stages;
};

/* Adds a zeroed tensor; returns its data or NULL. */
static float *add(struct seeded *s, const char *name, int ndim, int64_t d0, int64_t d1, int64_t d2, int64_t d3)
{
        if (s->n == s->cap) {
                int nc = s->cap ? s->cap * 2 : 512;
                struct tens *t = realloc(s->t, sizeof *t * (size_t)nc);
                if (!t)
                        return NULL;
                s->t = t;
                s->cap = nc;
        }
        struct tens *t = &s->t[s->n];
        int64_t d[4] = { d0, d1, d2, d3 }, numel = 1;
        snprintf(t->name, sizeof t->name, "%s", name);
        t->ndim = ndim;
        for (int i = 0; i < ndim; i++) {
                t->shape[i] = d[i];
                numel *= d[i];
        }
        t->data = calloc((size_t)numel, sizeof(float));
        if (!t->data)
                return NULL;
        s->n++;
        return t->data;
}

struct act {
        int n, c, h, w;
        float *d; /* [n][c][h][w] */
};

static int act_new(struct act *a, int n, int c, int h, int w)
{
        *a = (struct act){ n, c, h, w, calloc((size_t)n * c * h * w, sizeof(float)) };
        return a->d ? 0 : -ENOMEM;
}

/* Replaces *x by *y, which gives its buffer to x. */
static void act_move(struct act *x, struct act *y)
{
        free(x->d);
        *x = *y;
        y->d = NULL;
}

/* Mean over H and W: ret_pooled[n][c]. */
static void act_mean_pool(const struct act *a, float *ret_pooled)
{
        size_t hw = (size_t)a->h * a->w;

        for (int n = 0; n < a->n; n++)
                for (int c = 0; c < a->c; c++) {
                        double acc = 0;
                        for (size_t i = 0; i < hw; i++)
                                acc += a->d[((size_t)n * a->c + c) * hw + i];
                        ret_pooled[(size_t)n * a->c + c] = (float)(acc / hw);
                }
}

/* Plain convolution, symmetric k/2 padding (calibration only needs stats). */
static int conv(const struct act *in, const float *w, int oc, int k, int stride, int groups, struct act *out)
{
        int oh = (in->h + 2 * (k / 2) - k) / stride + 1, ow = (in->w + 2 * (k / 2) - k) / stride + 1;
        int icg = in->c / groups, ocg = oc / groups, pad = k / 2;
        if (act_new(out, in->n, oc, oh, ow) < 0)
                return -ENOMEM;
        for (int n = 0; n < in->n; n++)
                for (int o = 0; o < oc; o++) {
                        float *dst = out->d + ((size_t)n * oc + o) * oh * ow;
                        int g = o / ocg;
                        for (int i = 0; i < icg; i++) {
                                const float *src = in->d + ((size_t)n * in->c + g * icg + i) * in->h * in->w;
                                const float *ww = w + ((size_t)o * icg + i) * k * k;
                                for (int y = 0; y < oh; y++)
                                        for (int x = 0; x < ow; x++) {
                                                float acc = 0;
                                                for (int ky = 0; ky < k; ky++) {
                                                        int iy = y * stride + ky - pad;
                                                        if (iy < 0 || iy >= in->h)
                                                                continue;
                                                        for (int kx = 0; kx < k; kx++) {
                                                                int ix = x * stride + kx - pad;
                                                                if (ix >= 0 && ix < in->w)
                                                                        acc += src[iy * in->w + ix] * ww[ky * k + kx];
                                                        }
                                                }
                                                dst[y * ow + x] += acc;
                                        }
                        }
                }
        return 0;
}

static float silu(float x)
{
        return x / (1.0f + expf(-x));
}

/* Train-mode BatchNorm: stores the batch statistics as running statistics. */
static void bn_calibrate(struct act *a, const float *gamma, const float *beta, float *mean, float *var, int act)
{
        size_t hw = (size_t)a->h * a->w, cnt = hw * a->n;
        for (int c = 0; c < a->c; c++) {
                double s = 0, ss = 0;
                for (int n = 0; n < a->n; n++)
                        for (size_t i = 0; i < hw; i++) {
                                double v = a->d[((size_t)n * a->c + c) * hw + i];
                                s += v;
                                ss += v * v;
                        }
                double m = s / cnt, v = ss / cnt - m * m;
                if (v < 0)
                        v = 0;
                mean[c] = (float)m;
                var[c] = (float)(v * cnt / (cnt > 1 ? cnt - 1 : 1)); /* unbiased, as torch stores it */
                double scale = gamma[c] / sqrt(v + 1e-3);
                for (int n = 0; n < a->n; n++)
                        for (size_t i = 0; i < hw; i++) {
                                float *p = &a->d[((size_t)n * a->c + c) * hw + i];
                                *p = (float)((*p - m) * scale + beta[c]);
                                if (act)
                                        *p = silu(*p);
                        }
        }
}

/* A conv with He-normal weights and its BatchNorm, calibrated on `in`. */
static int conv_bn(struct seeded *s, const char *wname, const char *bn, const struct act *in, int oc, int k,
                   int stride, int groups, double gamma_lo, double gamma_hi, int act, struct act *out)
{
        char key[192];
        int icg = in->c / groups;
        float *w = add(s, wname, 4, oc, icg, k, k);
        float *g, *b, *m, *v;
        if (!w)
                return -ENOMEM;
        double std = sqrt(2.0 / (icg * k * k));
        for (size_t i = 0; i < (size_t)oc * icg * k * k; i++)
                w[i] = (float)(rng_normal(&s->rng) * std);
        snprintf(key, sizeof key, "%s.weight", bn);
        g = add(s, key, 1, oc, 0, 0, 0);
        snprintf(key, sizeof key, "%s.bias", bn);
        b = add(s, key, 1, oc, 0, 0, 0);
        snprintf(key, sizeof key, "%s.running_mean", bn);
        m = add(s, key, 1, oc, 0, 0, 0);
        snprintf(key, sizeof key, "%s.running_var", bn);
        v = add(s, key, 1, oc, 0, 0, 0);
        if (!g || !b || !m || !v)
                return -ENOMEM;
        for (int c = 0; c < oc; c++) {
                g[c] = (float)(gamma_lo + (gamma_hi - gamma_lo) * rng_uniform(&s->rng));
                b[c] = (float)(0.1 * rng_normal(&s->rng));
        }
        int r = conv(in, w, oc, k, stride, groups, out);
        if (r < 0)
                return r;
        bn_calibrate(out, g, b, m, v, act);
        return 0;
}

/* gates[n][c] = sigmoid(b2 + w2 . SiLU(b1 + w1 . pooled[n])), hid[r] scratch. */
static void se_gates(const float *w1, const float *b1, const float *w2, const float *b2, int mid, int r,
                     const float *pooled, float *hid, float *ret_gates)
{
        for (int j = 0; j < r; j++) {
                double acc = b1[j];
                for (int c = 0; c < mid; c++)
                        acc += w1[(size_t)j * mid + c] * pooled[c];
                hid[j] = silu((float)acc);
        }
        for (int c = 0; c < mid; c++) {
                double acc = b2[c];
                for (int j = 0; j < r; j++)
                        acc += w2[(size_t)c * r + j] * hid[j];
                ret_gates[c] = (float)(1.0 / (1.0 + exp(-acc)));
        }
}

/* Squeeze-excite with random 1x1 convs (with bias), applied to a in place. */
static int se(struct seeded *s, const struct arch_block *blk, struct act *a)
{
        char k1[160], k2[160];
        int mid = a->c, r = blk->se;
        model_block_key(s->scheme, blk, R_SE_R, "weight", k1, sizeof k1);
        float *w1 = add(s, k1, 4, r, mid, 1, 1);
        model_block_key(s->scheme, blk, R_SE_R, "bias", k1, sizeof k1);
        float *b1 = add(s, k1, 1, r, 0, 0, 0);
        model_block_key(s->scheme, blk, R_SE_E, "weight", k2, sizeof k2);
        float *w2 = add(s, k2, 4, mid, r, 1, 1);
        model_block_key(s->scheme, blk, R_SE_E, "bias", k2, sizeof k2);
        float *b2 = add(s, k2, 1, mid, 0, 0, 0);
        /* [n][mid] pooled, [mid] gates, [r] hidden */
        float *pool = calloc((size_t)a->n * mid + mid + r, sizeof(float));
        if (!w1 || !b1 || !w2 || !b2 || !pool) {
                free(pool);
                return -ENOMEM;
        }
        for (size_t i = 0; i < (size_t)r * mid; i++) {
                w1[i] = (float)(rng_normal(&s->rng) / sqrt(mid));
                w2[i] = (float)(rng_normal(&s->rng) / sqrt(r));
        }
        for (int i = 0; i < r; i++)
                b1[i] = (float)(0.1 * rng_normal(&s->rng));
        for (int i = 0; i < mid; i++)
                b2[i] = (float)(0.5 + 0.5 * rng_normal(&s->rng));
        size_t hw = (size_t)a->h * a->w;
        float *gates = pool + (size_t)a->n * mid, *hid = gates + mid;
        act_mean_pool(a, pool);
        for (int n = 0; n < a->n; n++) {
                float *x = a->d + (size_t)n * mid * hw;
                se_gates(w1, b1, w2, b2, mid, r, pool + (size_t)n * mid, hid, gates);
                for (int c = 0; c < mid; c++)
                        for (size_t i = 0; i < hw; i++)
                                x[c * hw + i] *= gates[c];
        }
        free(pool);
        return 0;
}

static int block(struct seeded *s, const struct arch_block *b, struct act *x)
{
        char wk[160], bk[160];
        struct act t = { 0 }, u = { 0 }, o = { 0 };
        int r;
#define KEYS(w, bn)                                                        \
        do {                                                               \
                model_block_key(s->scheme, b, w, "weight", wk, sizeof wk); \
                model_block_key(s->scheme, b, bn, NULL, bk, sizeof bk);    \
        } while (0)
        /* The last BN of a residual branch starts small, as trained nets do,
         * so that forty blocks of additions stay in range. */
        double lo = b->residual ? 0.1 : 0.5, hi = b->residual ? 0.4 : 1.5;

        KEYS(R_CONV1, R_BN1);
        if (b->kind == ARCH_FUSED) {
                int last = !b->project;
                r = conv_bn(s, wk, bk, x, b->mid, b->kernel, b->stride, 1, last ? lo : 0.5, last ? hi : 1.5, 1, &t);
                if (r < 0 || last)
                        goto done;
        } else {
                if ((r = conv_bn(s, wk, bk, x, b->mid, 1, 1, 1, 0.5, 1.5, 1, &u)) < 0)
                        goto done;
                KEYS(R_DW, R_BN2);
                if ((r = conv_bn(s, wk, bk, &u, b->mid, b->kernel, b->stride, b->mid, 0.5, 1.5, 1, &t)) < 0)
                        goto done;
                if (b->se && (r = se(s, b, &t)) < 0)
                        goto done;
        }
        KEYS(R_PROJ, R_BNP);
        r = conv_bn(s, wk, bk, &t, b->out, 1, 1, 1, lo, hi, 0, &o);
        act_move(&t, &o);
#undef KEYS
done:
        if (r == 0) {
                if (b->residual)
                        for (size_t i = 0; i < (size_t)t.n * t.c * t.h * t.w; i++)
                                t.d[i] += x->d[i];
                act_move(x, &t);
        }
        free(t.d);
        free(u.d);
        free(o.d);
        return r;
}

/* Smooth random images: a few random low-frequency waves per channel, about
 * unit variance, like normalized photos seen from afar. */
static void smooth_fill(struct rng *rng, int n_images, int size, float *out)
{
        memset(out, 0, sizeof(float) * (size_t)n_images * 3 * size * size);
        for (int n = 0; n < n_images; n++)
                for (int c = 0; c < 3; c++) {
                        float *p = out + ((size_t)n * 3 + c) * size * size;
                        for (int k = 0; k < 4; k++) {
                                double fx = rng_uniform(rng) * 4, fy = rng_uniform(rng) * 4;
                                double ph = rng_uniform(rng) * 6.28, amp = 0.4 + rng_uniform(rng);
                                for (int y = 0; y < size; y++)
                                        for (int x = 0; x < size; x++)
                                                p[y * size + x] += (float)(amp * sin(6.28 * (fx * x + fy * y) / size + ph));
                        }
                }
}

void model_smooth_images(uint64_t seed, int n, int size, float *ret_images)
{
        struct rng rng = { seed };
        smooth_fill(&rng, n, size, ret_images);
}

static int calibration_images(struct rng *rng, struct act *a)
{
        if (act_new(a, CAL_BATCH, 3, CAL_SIZE, CAL_SIZE) < 0)
                return -ENOMEM;
        smooth_fill(rng, CAL_BATCH, CAL_SIZE, a->d);
        return 0;
}

int model_write_seeded(const char *path, const char *variant, int scheme, int classes, uint64_t seed, int dtype,
                       double gain, char *err, size_t err_len)
{
        return model_write_seeded_ex(path, variant, scheme, classes, seed, dtype, gain, NULL, NULL, err, err_len);
}

/* Stem, blocks and head with BatchNorms calibrated on *x, the calibration
 * images, which become the head's output; reports each block done. */
static int features(struct seeded *s, const struct arch_variant *v, const struct arch_block *blocks, int nb,
                    struct act *x, void (*progress)(void *userdata, int done, int total), void *userdata)
{
        struct act h = { 0 };
        char wk[160], bk[160];
        int r;

        model_top_key(s->scheme, v->n_stages, "conv_stem", "weight", wk, sizeof wk);
        model_top_key(s->scheme, v->n_stages, "bn1", NULL, bk, sizeof bk);
        if ((r = conv_bn(s, wk, bk, x, arch_stem(v), 3, 2, 1, 0.5, 1.5, 1, &h)) < 0)
                goto out;
        act_move(x, &h);
        for (int i = 0; i < nb; i++) {
                if ((r = block(s, &blocks[i], x)) < 0)
                        goto out;
                if (progress)
                        progress(userdata, i + 1, nb + 1);
        }
        model_top_key(s->scheme, v->n_stages, "conv_head", "weight", wk, sizeof wk);
        model_top_key(s->scheme, v->n_stages, "bn2", NULL, bk, sizeof bk);
        if ((r = conv_bn(s, wk, bk, x, arch_head(v), 1, 1, 1, 0.5, 1.5, 1, &h)) < 0)
                goto out;
        act_move(x, &h);
out:
        free(h.d);
        return r;
}

/* Classifier on the head's output h, scaled so that the logits' spread over
 * the calibration images is LOGIT_STD times gain. */
static int classifier(struct seeded *s, const struct arch_variant *v, const struct act *h, int classes,
                      double gain)
{
        int hc = arch_head(v);
        char wk[160];

        model_top_key(s->scheme, v->n_stages, "classifier", "weight", wk, sizeof wk);
        float *cw = add(s, wk, 2, classes, hc, 0, 0);
        model_top_key(s->scheme, v->n_stages, "classifier", "bias", wk, sizeof wk);
        float *cb = add(s, wk, 1, classes, 0, 0, 0);
        float *pooled = calloc((size_t)hc * h->n, sizeof(float)); /* [n][hc] */
        if (!cw || !cb || !pooled) {
                free(pooled);
                return -ENOMEM;
        }
        for (size_t i = 0; i < (size_t)classes * hc; i++)
                cw[i] = (float)rng_normal(&s->rng);
        act_mean_pool(h, pooled);
        double sum = 0, sum2 = 0;
        for (int n = 0; n < h->n; n++)
                for (int k = 0; k < classes; k++) {
                        double acc = 0;
                        for (int c = 0; c < hc; c++)
                                acc += cw[(size_t)k * hc + c] * pooled[(size_t)n * hc + c];
                        sum += acc;
                        sum2 += acc * acc;
                }
        free(pooled);
        double cnt = (double)h->n * classes, sd = sqrt(fmax(sum2 / cnt - (sum / cnt) * (sum / cnt), 1e-12));
        for (size_t i = 0; i < (size_t)classes * hc; i++)
                cw[i] = (float)(cw[i] * LOGIT_STD / sd * gain);
        for (int k = 0; k < classes; k++)
                cb[k] = (float)(0.1 * rng_normal(&s->rng));
        return 0;
}

/* A writer of the tensors as dtype, with the seed in the metadata: effnetd
 * reports such weights as seeded (untrained) rather than as a model. */
static int seeded_writer(const struct seeded *s, uint64_t seed, int dtype, struct st_writer **ret_writer)
{
        struct st_writer *w = NULL;
        char seed_text[24];
        int r;

        snprintf(seed_text, sizeof seed_text, "%llu", (unsigned long long)seed);
        if ((r = st_writer_new(&w)) < 0 || (r = st_writer_set_metadata(w, MODEL_META_SEED, seed_text)) < 0)
                goto fail;
        for (int i = 0; i < s->n; i++)
                if ((r = st_writer_add(w, s->t[i].name, dtype, s->t[i].ndim, s->t[i].shape, s->t[i].data)) < 0)
                        goto fail;
        *ret_writer = w;
        return 0;
fail:
        st_writer_free(w);
        return r;
}

int model_write_seeded_ex(const char *path, const char *variant, int scheme, int classes, uint64_t seed, int dtype,
                          double gain, void (*progress)(void *userdata, int done, int total), void *userdata,
                          char *err, size_t err_len)
{
        const struct arch_variant *v = arch_find(variant);
        struct seeded s = { .rng = { seed }, .scheme = scheme };
        struct arch_block blocks[ARCH_MAX_BLOCKS];
        struct st_writer *w = NULL;
        struct act x = { 0 };
        int nb, r;

        if (!v)
                return err_set(err, err_len, -EINVAL, "unknown variant '%s' (s, m, l, xl, b0, b1, b2, b3, rw_s)", variant);
        if (classes < 1 || classes > 100000)
                return err_set(err, err_len, -EINVAL, "classes %d out of range 1..100000", classes);
        s.n_stages = v->n_stages;
        nb = arch_blocks(v, blocks);
        if ((r = calibration_images(&s.rng, &x)) < 0 || (r = features(&s, v, blocks, nb, &x, progress, userdata)) < 0 ||
            (r = classifier(&s, v, &x, classes, gain)) < 0 || (r = seeded_writer(&s, seed, dtype, &w)) < 0)
                goto fail;
        r = st_writer_save(w, path, err, err_len); /* names the file itself */
        if (r == 0 && progress)
                progress(userdata, nb + 1, nb + 1);
        goto out;
fail:
        if (r == -ENOMEM)
                err_set(err, err_len, r, "out of memory generating %s weights", v->name);
        else
                err_set(err, err_len, r, "cannot generate weights: %s", strerror(-r));
out:
        st_writer_free(w);
        for (int i = 0; i < s.n; i++)
                free(s.t[i].data);
        free(s.t);
        free(x.d);
        return r;
}
