/* effnet: the public libeffnet API over the model and engine modules, and
 * int8 calibration (activation histograms from an fp32 observer, clipping,
 * per-layer sensitivity, the held-out self-check, files bound to the
 * weights' sha256). */
#include "calib.h"
#include "effnet.h"
#include "engine.h"
#include "model.h"
#include "safetensors.h"
#include "util.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct effnet_model {
        struct model *m;
        struct eng_net *net;
};

static int effnet_calibration_quant(const struct effnet_calibration *c, const struct effnet_model *em,
                                    const struct eng_quant **ret_quant);

struct effnet_exec {
        struct eng_plan *plan;
};

int effnet_model_open(const char *path, const struct effnet_open_opts *opts,
                      char *err, size_t err_len, struct effnet_model **ret_model)
{
        struct effnet_model *em = calloc(1, sizeof *em);
        int r;

        if (!em)
                return -ENOMEM;
        if ((r = model_open(path, opts, err, err_len, &em->m)) < 0 ||
            (r = eng_net_new(em->m, err, err_len, &em->net)) < 0) {
                effnet_model_free(em);
                return r;
        }
        *ret_model = em;
        return 0;
}

struct effnet_model *effnet_model_free(struct effnet_model *em)
{
        if (!em)
                return NULL;
        eng_net_free(em->net);
        model_free(em->m);
        free(em);
        return NULL;
}

const struct effnet_info *effnet_model_info(const struct effnet_model *em)
{
        return &em->m->info;
}

const void *effnet_model_file(const struct effnet_model *em, size_t *ret_len)
{
        return st_bytes(em->m->file, ret_len);
}

void effnet_model_drop_file(struct effnet_model *em)
{
        st_drop_bytes(em->m->file);
        em->m->dropped = 1;
}

int effnet_exec_new(struct effnet_model *em, const struct effnet_exec_opts *opts,
                    char *err, size_t err_len, struct effnet_exec **ret_exec)
{
        struct effnet_exec *x = calloc(1, sizeof *x);
        int size = opts->size > 0 ? opts->size : em->m->info.preproc.size;
        int r;

        if (!x)
                return -ENOMEM;
        if (em->m->dropped) {
                free(x);
                return err_set(err, err_len, -ESTALE, "the weights were released after start-up: no new executors");
        }
        int width = opts->width > 0 ? opts->width : size, precision;
        const struct eng_quant *quant = NULL;
        if ((r = effnet_precision_resolve(opts->precision, err, err_len, &precision)) == 0 &&
            precision == EFFNET_INT8 &&
            (r = effnet_calibration_quant(opts->calibration, em, &quant)) < 0)
                err_set(err, err_len, r, "int8 needs a calibration made for these weights (effnet calibrate)");
        if (r == 0)
                r = eng_plan_new(em->net, opts->batch, size, width, precision, quant, opts->threads, err, err_len,
                                 &x->plan);
        if (r < 0) {
                free(x);
                return r;
        }
        *ret_exec = x;
        return 0;
}

struct effnet_exec *effnet_exec_free(struct effnet_exec *x)
{
        if (!x)
                return NULL;
        eng_plan_free(x->plan);
        free(x);
        return NULL;
}

int effnet_exec_forward(struct effnet_exec *x, const float *images, int n, float *logits)
{
        return eng_plan_forward(x->plan, images, n, logits);
}

size_t effnet_exec_bytes(const struct effnet_exec *x)
{
        return eng_plan_bytes(x->plan);
}

int effnet_exec_kernels(const struct effnet_exec *x, struct effnet_kernel *ret, int max)
{
        return eng_plan_kernels(x->plan, ret, max);
}

int effnet_exec_precision(const struct effnet_exec *x)
{
        return eng_plan_precision(x->plan);
}

const char *effnet_exec_layout(const struct effnet_exec *x)
{
        return eng_plan_layout(x->plan);
}

void effnet_cpu_info(struct effnet_cpu *ret_cpu)
{
        eng_cpu_get(ret_cpu);
}

const char *effnet_onednn_version(void)
{
        return eng_onednn_version();
}

int effnet_precision_resolve(int precision, char *err, size_t err_len, int *ret_precision)
{
        struct effnet_cpu cpu;
        int r;

        eng_cpu_get(&cpu);
        if (precision == EFFNET_PRECISION_AUTO)
                precision = cpu.bf16 ? EFFNET_BF16 : EFFNET_FP32;
        if (precision != EFFNET_FP32 && precision != EFFNET_BF16 && precision != EFFNET_INT8)
                return err_set(err, err_len, -EINVAL, "unknown precision %d", precision);
        if ((r = eng_check_precision(precision, err, err_len)) < 0)
                return r;
        *ret_precision = precision;
        return 0;
}

static const char *const precision_names[] = { [EFFNET_FP32] = "fp32", [EFFNET_BF16] = "bf16",
                                               [EFFNET_PRECISION_AUTO] = "auto", [EFFNET_INT8] = "int8" };

const char *effnet_precision_name(int precision)
{
        return precision >= 0 && precision < (int)ARRAY_SIZE(precision_names) ? precision_names[precision] : NULL;
}

int effnet_precision_parse(const char *s, int *ret_precision)
{
        for (int i = 0; i < (int)ARRAY_SIZE(precision_names); i++)
                if (strcmp(s, precision_names[i]) == 0) {
                        *ret_precision = i;
                        return 0;
                }
        return -EINVAL;
}

void effnet_softmax(float *v, int n)
{
        float mx = -INFINITY;
        double sum = 0;

        for (int i = 0; i < n; i++)
                if (v[i] > mx)
                        mx = v[i];
        for (int i = 0; i < n; i++) {
                v[i] = expf(v[i] - mx);
                sum += v[i];
        }
        for (int i = 0; i < n; i++)
                v[i] = (float)(v[i] / sum);
}

int effnet_topk(const float *v, int n, int k, int *ret_idx)
{
        if (k > n)
                k = n;
        if (k <= 0)
                return 0;
        /* Insertion into a sorted prefix: k is small (top-5), n ~ 1000-21843. */
        int m = 0;
        for (int i = 0; i < n; i++) {
                if (m == k && !(v[i] > v[ret_idx[k - 1]]))
                        continue;
                int j = m < k ? m++ : k - 1;
                while (j > 0 && v[i] > v[ret_idx[j - 1]]) {
                        ret_idx[j] = ret_idx[j - 1];
                        j--;
                }
                ret_idx[j] = i;
        }
        return m;
}

/* The public dtypes are their own enum: st_dtype may change without
 * touching the ABI. */
static const int seeded_dtypes[] = { [EFFNET_DTYPE_F32] = ST_F32, [EFFNET_DTYPE_F16] = ST_F16,
                                     [EFFNET_DTYPE_BF16] = ST_BF16 };

int effnet_seeded_write(const char *path, const char *variant, uint64_t seed,
                        const struct effnet_seeded_opts *opts, char *err, size_t err_len)
{
        const struct effnet_seeded_opts o = opts ? *opts : (struct effnet_seeded_opts){ 0 };
        int classes = o.classes ? o.classes : 1000;
        double gain = o.gain != 0 ? o.gain : 1.0;

        if (!path || !variant)
                return err_set(err, err_len, -EINVAL, "no path or no variant");
        if (o.scheme != EFFNET_SCHEME_TIMM && o.scheme != EFFNET_SCHEME_TORCHVISION)
                return err_set(err, err_len, -EINVAL, "unknown scheme %d", o.scheme);
        if (o.dtype < 0 || o.dtype >= (int)ARRAY_SIZE(seeded_dtypes))
                return err_set(err, err_len, -EINVAL, "unknown dtype %d", o.dtype);
        if (!(gain > 0 && gain < INFINITY))
                return err_set(err, err_len, -EINVAL, "gain %g is not a positive number", gain);
        return model_write_seeded_ex(path, variant, o.scheme, classes, seed, seeded_dtypes[o.dtype], gain, o.progress,
                                     o.userdata, err, err_len);
}

void effnet_smooth_images(uint64_t seed, int n, int size, float *ret_images)
{
        model_smooth_images(seed, n, size, ret_images);
}

/* int8 calibration. */

struct effnet_calibration {
        struct calib *c;                 /* owned */
        const struct model *m;           /* the model its layers resolve in */
        struct eng_qlayer *q;            /* owned, [c->n] */
        struct eng_quant quant;
        struct effnet_int8_check check;
};

/* Layers an int8 plan may quantize: dense convolutions past the stem (the
 * 3-channel stem is 0.5% of the work and sees the raw image; depthwise
 * convolutions stay fp32, as does everything that is not a conv). */
static int quantizable(const struct model_conv *c, const struct model *m)
{
        return c != &m->stem && c->groups == 1;
}

static int effnet_calibration_quant(const struct effnet_calibration *c, const struct effnet_model *em,
                                    const struct eng_quant **ret_quant)
{
        if (!c || c->m != em->m)
                return -EINVAL;
        *ret_quant = &c->quant;
        return 0;
}

struct effnet_calibration *effnet_calibration_free(struct effnet_calibration *c)
{
        if (!c)
                return NULL;
        calib_free(c->c);
        free(c->q);
        free(c);
        return NULL;
}

/* Takes cal over (also on failure): resolves its layer names in m. */
static int calibration_bind(struct calib *cal, const struct model *m, char *err, size_t err_len,
                            struct effnet_calibration **ret)
{
        const struct model_conv *convs[CALIB_MAX_LAYERS];
        char (*names)[CALIB_NAME_LEN] = malloc(sizeof *names * CALIB_MAX_LAYERS);
        struct effnet_calibration *c = calloc(1, sizeof *c);
        int n = names ? calib_model_convs(m, convs, names, CALIB_MAX_LAYERS) : 0, r;

        if (!names || !c || !(c->q = calloc((size_t)cal->n + 1, sizeof *c->q))) {
                free(names);
                free(c);
                calib_free(cal);
                return -ENOMEM;
        }
        c->c = cal;
        c->m = m;
        for (int i = 0; i < cal->n; i++) {
                int j = 0;
                while (j < n && strcmp(names[j], cal->v[i].name) != 0)
                        j++;
                if (j == n) {
                        r = err_set(err, err_len, -EBADMSG, "calibration: layer %s is not in this %s",
                                    cal->v[i].name, m->info.variant);
                        goto fail;
                }
                if (cal->v[i].int8 && !quantizable(convs[j], m)) {
                        r = err_set(err, err_len, -EBADMSG, "calibration: layer %s cannot run in int8 here",
                                    cal->v[i].name);
                        goto fail;
                }
                c->q[i] = (struct eng_qlayer){ convs[j], cal->v[i].scale, cal->v[i].int8 };
        }
        c->quant = (struct eng_quant){ c->q, cal->n };
        c->check = (struct effnet_int8_check){ cal->check.images, cal->check.top1_agreement, cal->check.top5_overlap,
                                               cal->check.max_logit_diff, cal->check.rms_logit_diff };
        free(names);
        *ret = c;
        return 0;
fail:
        free(names);
        effnet_calibration_free(c);
        return r;
}

int effnet_calibration_load(struct effnet_model *em, const char *weights_sha256, const char *path, char *err,
                            size_t err_len, struct effnet_calibration **ret_calibration)
{
        struct calib *cal = NULL;
        char *text = NULL;
        size_t len = 0;
        int r;

        FILE *f = fopen(path, "rb");
        if (!f)
                return err_set(err, err_len, -errno, "calibration %s: %s", path, strerror(errno));
        if (!(text = malloc(CALIB_MAX_BYTES + 1))) {
                fclose(f);
                return -ENOMEM;
        }
        len = fread(text, 1, CALIB_MAX_BYTES + 1, f);
        r = ferror(f) ? -EIO : 0;
        fclose(f);
        if (r < 0) {
                free(text);
                return err_set(err, err_len, r, "calibration %s: read error", path);
        }
        r = calib_parse(text, len, err, err_len, &cal);
        free(text);
        if (r < 0)
                return r;
        if (!weights_sha256 || strcmp(cal->sha256, weights_sha256) != 0) {
                r = err_set(err, err_len, -EINVAL,
                            "calibration %s was made for other weights (sha256 %.16s..., these are %.16s...): "
                            "run effnet calibrate for these", path, cal->sha256,
                            weights_sha256 ? weights_sha256 : "unknown");
                calib_free(cal);
                return r;
        }
        return calibration_bind(cal, em->m, err, err_len, ret_calibration);
}

int effnet_calibration_save(const struct effnet_calibration *c, const char *path, char *err, size_t err_len)
{
        char *text = NULL;
        int r = calib_format(c->c, &text);
        if (r < 0)
                return err_set(err, err_len, r, "calibration: out of memory");
        FILE *f = fopen(path, "w");
        if (!f) {
                r = err_set(err, err_len, -errno, "%s: %s", path, strerror(errno));
                free(text);
                return r;
        }
        int ok = fputs(text, f) >= 0 && fputc('\n', f) != EOF;
        ok = (fclose(f) == 0) && ok;
        free(text);
        return ok ? 0 : err_set(err, err_len, -EIO, "%s: write error", path);
}

const struct effnet_int8_check *effnet_calibration_check(const struct effnet_calibration *c)
{
        return &c->check;
}

const char *effnet_calibration_method(const struct effnet_calibration *c)
{
        return c->c->method;
}

int effnet_calibration_layer(const struct effnet_calibration *c, int i, struct effnet_calib_layer *ret)
{
        if (i < 0 || i >= c->c->n)
                return -ERANGE;
        const struct calib_layer *l = &c->c->v[i];
        *ret = (struct effnet_calib_layer){ l->name, l->int8 ? "int8" : "fp32", l->scale, l->sensitivity };
        return 0;
}

const char *effnet_clip_name(int method)
{
        static const char *const names[] = { "auto", "mse", "percentile", "max", "kl" };
        return method >= 0 && method < (int)(sizeof names / sizeof *names) ? names[method] : NULL;
}

struct observe {
        const struct model_conv **convs;
        struct calib_hist *h;
        int n;
};

static void observe_conv(void *userdata, const struct model_conv *conv, const float *x, size_t count)
{
        struct observe *o = userdata;
        int i = 0;
        while (i < o->n && o->convs[i] != conv)
                i++;
        if (i < o->n)
                calib_hist_add(&o->h[i], x, count);
}

/* Logits of n images through one executor, in chunks of its batch. */
static int run_logits(struct effnet_exec *x, int batch, const float *images, int n, size_t per, int classes,
                      float *ret_logits)
{
        for (int i = 0; i < n; i += batch) {
                int k = n - i < batch ? n - i : batch;
                int r = effnet_exec_forward(x, images + per * (size_t)i, k, ret_logits + (size_t)classes * i);
                if (r < 0)
                        return r;
        }
        return 0;
}

/* int8 against fp32 logits of n images. */
static void compare(const float *ref, const float *q, int n, int classes, struct calib_check *ret)
{
        double sum = 0, sq = 0, d2 = 0, dmax = 0, top1 = 0, top5 = 0;
        size_t total = (size_t)n * (size_t)classes;
        for (size_t i = 0; i < total; i++) {
                double d = fabs((double)q[i] - ref[i]);
                sum += ref[i];
                sq += (double)ref[i] * ref[i];
                d2 += d * d;
                dmax = d > dmax ? d : dmax;
        }
        double mean = sum / (double)total, var = sq / (double)total - mean * mean;
        double std = var > 0 ? sqrt(var) : 1;
        for (int i = 0; i < n; i++) {
                int a[5], b[5];
                int ka = effnet_topk(ref + (size_t)classes * i, classes, 5, a);
                int kb = effnet_topk(q + (size_t)classes * i, classes, 5, b);
                top1 += a[0] == b[0];
                int common = 0;
                for (int j = 0; j < ka; j++)
                        for (int l = 0; l < kb; l++)
                                common += a[j] == b[l];
                top5 += (double)common / (ka ? ka : 1);
        }
        *ret = (struct calib_check){ n, top1 / n, top5 / n, dmax / std, sqrt(d2 / (double)total) / std };
}

struct calibrate_ctx {
        struct effnet_model *em;
        const struct effnet_calib_opts *o;
        int size, batch, classes;
        size_t per;
        char *err;
        size_t err_len;
};

/* Logits of images[n] in int8 with the layers of cal (as they are now). */
static int int8_logits(struct calibrate_ctx *x, struct calib *cal, const float *images, int n, float *ret_logits)
{
        struct effnet_calibration *c = NULL;
        struct effnet_exec *ex = NULL;
        struct calib *copy = NULL;
        int r;

        if ((r = calib_new(cal->n, &copy)) < 0)
                return r;
        memcpy(copy->v, cal->v, sizeof *cal->v * (size_t)cal->n);
        if ((r = calibration_bind(copy, x->em->m, x->err, x->err_len, &c)) < 0)
                return r;
        struct effnet_exec_opts eo = { .batch = x->batch, .threads = x->o->threads, .precision = EFFNET_INT8,
                                       .size = x->size, .calibration = c };
        if ((r = effnet_exec_new(x->em, &eo, x->err, x->err_len, &ex)) == 0)
                r = run_logits(ex, x->batch, images, n, x->per, x->classes, ret_logits);
        effnet_exec_free(ex);
        effnet_calibration_free(c);
        return r;
}

static void progress(const struct calibrate_ctx *x, const char *phase, int done, int total)
{
        if (x->o->progress)
                x->o->progress(x->o->userdata, phase, done, total);
}

int effnet_calibrate(struct effnet_model *em, const char *weights_sha256, const float *images, int n,
                     const struct effnet_calib_opts *opts, char *err, size_t err_len,
                     struct effnet_calibration **ret_calibration)
{
        const struct effnet_calib_opts o = opts ? *opts : (struct effnet_calib_opts){ 0 };
        const struct model *m = em->m;
        struct calibrate_ctx x = { em, &o, o.size > 0 ? o.size : m->info.preproc.size, 0, m->info.classes, 0, err,
                                   err_len };
        const struct model_conv *convs[CALIB_MAX_LAYERS];
        char (*names)[CALIB_NAME_LEN] = NULL;
        struct calib_hist *h = NULL;
        struct eng_plan *obs = NULL;
        struct effnet_exec *fx = NULL;
        struct calib *cal = NULL;
        float *ref = NULL, *q = NULL;
        int r;

        int held = o.held_out > 0 ? o.held_out : (n / 5 > 0 ? n / 5 : 1);
        int n_cal = n - held;
        double threshold = o.threshold == 0 ? 0.05 : o.threshold;
        if (n_cal < 1 || held < 1)
                return err_set(err, err_len, -EINVAL, "calibration needs at least 2 images (%d given, %d held out)",
                               n, held);
        if (!weights_sha256 || strlen(weights_sha256) != 64)
                return err_set(err, err_len, -EINVAL, "calibration needs the weights' sha256");
        if (o.method < EFFNET_CLIP_AUTO || o.method > EFFNET_CLIP_KL)
                return err_set(err, err_len, -EINVAL, "unknown clipping method %d", o.method);
        x.per = (size_t)3 * x.size * x.size;
        x.batch = n < 8 ? n : 8;
        const float *cal_images = images, *held_images = images + x.per * (size_t)n_cal;

        if (!(names = malloc(sizeof *names * CALIB_MAX_LAYERS)))
                return -ENOMEM;
        int nc = calib_model_convs(m, convs, names, CALIB_MAX_LAYERS);
        if (!(h = calloc((size_t)nc, sizeof *h)) || (r = calib_new(nc, &cal)) < 0) {
                r = -ENOMEM;
                goto out;
        }
        /* 1. Histograms of every conv's input over the calibration images. */
        int ob = n_cal < 4 ? n_cal : 4;
        if ((r = eng_plan_new_observer(em->net, ob, x.size, x.size, o.threads, err, err_len, &obs)) < 0)
                goto out;
        struct observe ov = { convs, h, nc };
        for (int i = 0; i < n_cal; i += ob) {
                int k = n_cal - i < ob ? n_cal - i : ob;
                progress(&x, "observe", i, n_cal);
                if ((r = eng_plan_observe(obs, cal_images + x.per * (size_t)i, k, observe_conv, &ov)) < 0) {
                        err_set(err, err_len, r, "calibration: forward pass failed");
                        goto out;
                }
        }
        obs = eng_plan_free(obs);
        progress(&x, "observe", n_cal, n_cal);

        snprintf(cal->sha256, sizeof cal->sha256, "%s", weights_sha256);
        snprintf(cal->variant, sizeof cal->variant, "%s", m->info.variant);
        cal->size = x.size;
        cal->images = n_cal;
        cal->threshold = threshold;
        for (int i = 0; i < nc; i++) {
                snprintf(cal->v[i].name, sizeof cal->v[i].name, "%s", names[i]);
                cal->v[i].int8 = quantizable(convs[i], m);
                cal->v[i].sensitivity = -1;
        }

        /* 2. fp32 logits of the held-out and the first calibration images. */
        int n_sens = n_cal < x.batch ? n_cal : x.batch;
        if (!(ref = malloc(sizeof(float) * (size_t)x.classes * (size_t)(held + n_sens))) ||
            !(q = malloc(sizeof(float) * (size_t)x.classes * (size_t)(held + n_sens)))) {
                r = -ENOMEM;
                goto out;
        }
        struct effnet_exec_opts eo = { .batch = x.batch, .threads = o.threads, .precision = EFFNET_FP32,
                                       .size = x.size };
        if ((r = effnet_exec_new(em, &eo, err, err_len, &fx)) < 0 ||
            (r = run_logits(fx, x.batch, held_images, held, x.per, x.classes, ref)) < 0 ||
            (r = run_logits(fx, x.batch, cal_images, n_sens, x.per, x.classes, ref + (size_t)x.classes * held)) < 0)
                goto out;
        fx = effnet_exec_free(fx);

        /* 3. The clipping: the method asked for, or each, keeping the one
         * whose int8 logits are closest to fp32 on the held-out images. */
        int best = -1;
        double best_rms = INFINITY;
        for (int meth = EFFNET_CLIP_MSE; meth <= EFFNET_CLIP_KL; meth++) {
                struct calib_check ck;
                if (o.method != EFFNET_CLIP_AUTO && meth != o.method)
                        continue;
                for (int i = 0; i < nc; i++)
                        cal->v[i].scale = calib_hist_scale(&h[i], meth);
                if (o.method == EFFNET_CLIP_AUTO) {
                        progress(&x, effnet_clip_name(meth), 0, 1);
                        if ((r = int8_logits(&x, cal, held_images, held, q)) < 0)
                                goto out;
                        compare(ref, q, held, x.classes, &ck);
                        if (ck.rms_logit_diff >= best_rms)
                                continue;
                        best_rms = ck.rms_logit_diff;
                }
                best = meth;
        }
        for (int i = 0; i < nc; i++)
                cal->v[i].scale = calib_hist_scale(&h[i], best);
        snprintf(cal->method, sizeof cal->method, "%s", effnet_clip_name(best));

        /* 4. Sensitivity: each layer alone in int8 on calibration images. */
        if (threshold >= 0) {
                int total = 0, done = 0;
                for (int i = 0; i < nc; i++)
                        total += quantizable(convs[i], m);
                for (int i = 0; i < nc; i++) {
                        struct calib_check ck;
                        if (!quantizable(convs[i], m))
                                continue;
                        progress(&x, "sensitivity", done++, total);
                        for (int j = 0; j < nc; j++)
                                cal->v[j].int8 = j == i;
                        if ((r = int8_logits(&x, cal, cal_images, n_sens, q)) < 0)
                                goto out;
                        compare(ref + (size_t)x.classes * held, q, n_sens, x.classes, &ck);
                        cal->v[i].sensitivity = (float)ck.rms_logit_diff;
                }
                progress(&x, "sensitivity", total, total);
                for (int i = 0; i < nc; i++)
                        cal->v[i].int8 = quantizable(convs[i], m) && cal->v[i].sensitivity <= threshold;
        }

        /* 5. The self-check on the held-out images. */
        if ((r = int8_logits(&x, cal, held_images, held, q)) < 0)
                goto out;
        compare(ref, q, held, x.classes, &cal->check);
        r = calibration_bind(cal, m, err, err_len, ret_calibration);
        cal = NULL;
out:
        eng_plan_free(obs);
        effnet_exec_free(fx);
        calib_free(cal);
        free(h);
        free(names);
        free(ref);
        free(q);
        return r;
}
