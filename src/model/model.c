/* model: EfficientNetV2 weights by name scheme (timm, torchvision), variant
 * and class detection from the tensors, validation, BatchNorm folding. */
#include "model.h"
#include "safetensors.h"
#include "util.h"

#include <errno.h>
#include <stdbool.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>


/* docs/model.md, "Weight names". */
void model_block_key(int scheme, const struct arch_block *b, int role,
                      const char *leaf, char *out, size_t n)
{
        static const char *const timm_fused1[] = { "conv", "bn1" };
        static const char *const timm_fused[] = { "conv_exp", "bn1", 0, 0, 0, 0, "conv_pwl", "bn2" };
        static const char *const timm_mb[] = { "conv_pw", "bn1", "conv_dw", "bn2",
                                               "se.conv_reduce", "se.conv_expand", "conv_pwl", "bn3" };
        static const char *const tv_fused[] = { "0.0", "0.1", 0, 0, 0, 0, "1.0", "1.1" };
        static const char *const tv_mb[] = { "0.0", "0.1", "1.0", "1.1", "2.fc1", "2.fc2", "3.0", "3.1" };
        const char *part;

        if (scheme == EFFNET_SCHEME_TIMM)
                part = b->kind == ARCH_MBCONV ? timm_mb[role]
                       : !b->project          ? timm_fused1[role]
                                             : timm_fused[role];
        else
                part = b->kind == ARCH_MBCONV ? tv_mb[role] : tv_fused[role];
        if (scheme == EFFNET_SCHEME_TIMM)
                snprintf(out, n, "blocks.%d.%d.%s%s%s", b->stage, b->index, part, leaf ? "." : "", leaf ? leaf : "");
        else
                snprintf(out, n, "features.%d.%d.block.%s%s%s", b->stage + 1, b->index, part, leaf ? "." : "",
                         leaf ? leaf : "");
}

void model_top_key(int scheme, int n_stages, const char *what, const char *leaf,
                    char *out, size_t n)
{
        const char *dot = leaf ? "." : "";

        if (!leaf)
                leaf = "";
        if (scheme == EFFNET_SCHEME_TIMM) {
                snprintf(out, n, "%s%s%s", what, dot, leaf);
        } else if (strcmp(what, "conv_stem") == 0) {
                snprintf(out, n, "features.0.0%s%s", dot, leaf);
        } else if (strcmp(what, "bn1") == 0) {
                snprintf(out, n, "features.0.1%s%s", dot, leaf);
        } else if (strcmp(what, "conv_head") == 0) {
                snprintf(out, n, "features.%d.0%s%s", n_stages + 1, dot, leaf);
        } else if (strcmp(what, "bn2") == 0) {
                snprintf(out, n, "features.%d.1%s%s", n_stages + 1, dot, leaf);
        } else {
                snprintf(out, n, "classifier.1%s%s", dot, leaf);
        }
}

struct loader {
        const struct model *m;
        const struct st_file *f;
        unsigned char *used;  /* [st_count] */
        float *arena;
        size_t arena_used, arena_cap;
        double eps;
        char *err;
        size_t err_len;
};

static int shape_str(const int64_t *s, int nd, char *out, size_t n)
{
        int len = snprintf(out, n, "[");
        for (int i = 0; i < nd; i++)
                len += snprintf(out + len, n - (size_t)len, "%s%lld", i ? ", " : "", (long long)s[i]);
        return len + snprintf(out + len, n - (size_t)len, "]");
}

/* Looks up key, checks dtype and shape, marks it used. */
static int take(struct loader *l, const char *key, int nd, const int64_t *dims,
                const struct st_tensor **ret)
{
        char want[96], got[96];
        const struct st_tensor *t = st_find(l->f, key);

        shape_str(dims, nd, want, sizeof want);
        if (!t)
                return err_set(l->err, l->err_len, -EBADMSG, "missing tensor %s (expected shape %s)", key, want);
        if (t->dtype == ST_OTHER)
                return err_set(l->err, l->err_len, -EBADMSG, "tensor %s: dtype %s, expected F32, F16 or BF16",
                               key, t->dtype_name);
        int same = t->ndim == nd;
        for (int i = 0; same && i < nd; i++)
                same = t->shape[i] == dims[i];
        if (!same) {
                shape_str(t->shape, t->ndim, got, sizeof got);
                return err_set(l->err, l->err_len, -EBADMSG, "tensor %s: shape %s, expected %s", key, got, want);
        }
        for (size_t i = 0; i < st_count(l->f); i++)
                if (st_at(l->f, i) == t)
                        l->used[i] = 1;
        *ret = t;
        return 0;
}

static float *arena_get(struct loader *l, size_t n)
{
        /* Capacity comes from arena_floats. */
        if (l->arena_used + n > l->arena_cap)
                return NULL;
        float *p = l->arena + l->arena_used;
        l->arena_used += n;
        return p;
}

/* Checks a conv weight [oc][ic/g][k][k] (no bias) and its BN named bn_key,
 * and computes the folding scale and bias. */
static int load_conv_bn(struct loader *l, const char *wkey, const char *bn_fmt_key,
                        int ic, int oc, int k, int stride, int groups, int act,
                        struct model_conv *ret)
{
        const struct st_tensor *tw = NULL, *tg = NULL, *tb = NULL, *tm = NULL, *tv = NULL;
        int64_t wd[4] = { oc, ic / groups, k, k }, cd[1] = { oc };
        char key[160];
        int r;

        if ((r = take(l, wkey, 4, wd, &tw)) < 0)
                return r;
        const char *leaf[4] = { "weight", "bias", "running_mean", "running_var" };
        const struct st_tensor **bn[4] = { &tg, &tb, &tm, &tv };
        for (int i = 0; i < 4; i++) {
                snprintf(key, sizeof key, "%s.%s", bn_fmt_key, leaf[i]);
                if ((r = take(l, key, 1, cd, bn[i])) < 0)
                        return r;
        }
        float *scale = arena_get(l, (size_t)oc), *b = arena_get(l, (size_t)oc);
        float *stats = malloc(sizeof(float) * 4 * (size_t)oc);
        if (!scale || !b || !stats) {
                free(stats);
                return err_set(l->err, l->err_len, -ENOMEM, "out of memory folding %s", wkey);
        }
        for (int i = 0; i < 4; i++)
                st_to_f32((*bn[i])->dtype, (*bn[i])->data, (size_t)oc, stats + (size_t)i * oc);
        for (int o = 0; o < oc; o++) {
                double var = stats[3 * oc + o];
                if (!(var >= 0)) {
                        free(stats);
                        snprintf(key, sizeof key, "%s.running_var", bn_fmt_key);
                        return err_set(l->err, l->err_len, -EBADMSG, "tensor %s: negative or NaN variance at %d",
                                       key, o);
                }
                double s = stats[o] / sqrt(var + l->eps);
                scale[o] = (float)s;
                b[o] = (float)(stats[oc + o] - stats[2 * oc + o] * s);
        }
        free(stats);
        *ret = (struct model_conv){ ic, oc, k, stride, groups, act, tw, scale, b, l->m };
        return 0;
}

/* Tells the kernel the pages wholly inside a tensor's data are not needed:
 * they are clean pages of the file and come back from it if read again. */
static void release_pages(const struct model *m, const struct st_tensor *t)
{
        if (!m->release_pages)
                return;
        uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
        uintptr_t start = ((uintptr_t)t->data + page - 1) / page * page;
        uintptr_t end = ((uintptr_t)t->data + t->nbytes) / page * page;
        if (end > start)
                madvise((void *)start, end - start, MADV_DONTNEED);
}

void model_conv_weights(const struct model_conv *c, float *ret_w)
{
        size_t per = (size_t)(c->ic / c->groups) * (size_t)(c->k * c->k);
        st_to_f32(c->w->dtype, c->w->data, (size_t)c->oc * per, ret_w);
        for (int o = 0; o < c->oc; o++)
                for (size_t j = 0; j < per; j++)
                        ret_w[(size_t)o * per + j] *= c->scale[o];
        release_pages(c->m, c->w);
}

void model_fc_weights(const struct model_fc *fc, float *ret_w)
{
        st_to_f32(fc->w->dtype, fc->w->data, (size_t)fc->in * fc->out, ret_w);
        release_pages(fc->m, fc->w);
}

/* Linear layer from a [out][in] (or [out][in][1][1] conv) weight and a bias. */
static int load_fc(struct loader *l, const char *prefix, int in, int out, int conv,
                   struct model_fc *ret)
{
        const struct st_tensor *tw = NULL, *tb = NULL;
        int64_t wd[4] = { out, in, 1, 1 }, bd[1] = { out };
        char key[160];
        int r;

        snprintf(key, sizeof key, "%s.weight", prefix);
        if ((r = take(l, key, conv ? 4 : 2, wd, &tw)) < 0)
                return r;
        snprintf(key, sizeof key, "%s.bias", prefix);
        if ((r = take(l, key, 1, bd, &tb)) < 0)
                return r;
        float *b = arena_get(l, (size_t)out);
        if (!b)
                return err_set(l->err, l->err_len, -ENOMEM, "out of memory loading %s", prefix);
        st_to_f32(tb->dtype, tb->data, (size_t)out, b);
        *ret = (struct model_fc){ in, out, tw, b, l->m };
        return 0;
}

static int load_block(struct loader *l, int scheme, struct model_block *mb)
{
        const struct arch_block *a = &mb->a;
        char wk[160], bk[160];
        int r;

        model_block_key(scheme, a, R_CONV1, "weight", wk, sizeof wk);
        model_block_key(scheme, a, R_BN1, NULL, bk, sizeof bk);
        if (a->kind == ARCH_FUSED) {
                r = load_conv_bn(l, wk, bk, a->in, a->mid, a->kernel, a->stride, 1, MODEL_ACT_SILU, &mb->conv1);
                if (r < 0 || !a->project)
                        return r;
        } else {
                if ((r = load_conv_bn(l, wk, bk, a->in, a->mid, 1, 1, 1, MODEL_ACT_SILU, &mb->conv1)) < 0)
                        return r;
                model_block_key(scheme, a, R_DW, "weight", wk, sizeof wk);
                model_block_key(scheme, a, R_BN2, NULL, bk, sizeof bk);
                r = load_conv_bn(l, wk, bk, a->mid, a->mid, a->kernel, a->stride, a->mid, MODEL_ACT_SILU, &mb->dw);
                if (r < 0)
                        return r;
                if (a->se) {
                        /* The squeeze width is read from the file: implementations round it differently. */
                        model_block_key(scheme, a, R_SE_R, "weight", wk, sizeof wk);
                        const struct st_tensor *t = st_find(l->f, wk);
                        int se = t && t->ndim == 4 && t->shape[0] >= 1 && t->shape[0] <= a->mid
                                         ? (int)t->shape[0] : a->se;
                        mb->a.se = se;
                        model_block_key(scheme, a, R_SE_R, NULL, wk, sizeof wk);
                        if ((r = load_fc(l, wk, a->mid, se, 1, &mb->se_reduce)) < 0)
                                return r;
                        model_block_key(scheme, a, R_SE_E, NULL, wk, sizeof wk);
                        if ((r = load_fc(l, wk, se, a->mid, 1, &mb->se_expand)) < 0)
                                return r;
                }
        }
        model_block_key(scheme, a, R_PROJ, "weight", wk, sizeof wk);
        model_block_key(scheme, a, R_BNP, NULL, bk, sizeof bk);
        return load_conv_bn(l, wk, bk, a->mid, a->out, 1, 1, 1, MODEL_ACT_NONE, &mb->project);
}

/* Blocks per stage as the file names them. */
static int count_stages(const struct st_file *f, int scheme, int *counts, int max_stages)
{
        int n_stages = 0;

        memset(counts, 0, sizeof(int) * (size_t)max_stages);
        for (size_t i = 0; i < st_count(f); i++) {
                const char *name = st_at(f, i)->name;
                int s, b, pos = 0;
                if (scheme == EFFNET_SCHEME_TIMM) {
                        if (sscanf(name, "blocks.%d.%d.%n", &s, &b, &pos) != 2 || pos == 0)
                                continue;
                } else {
                        if (sscanf(name, "features.%d.%d.block.%n", &s, &b, &pos) != 2 || pos == 0)
                                continue;
                        s -= 1;
                }
                if (s < 0 || s >= max_stages || b < 0 || b >= ARCH_MAX_BLOCKS)
                        continue;
                if (b + 1 > counts[s])
                        counts[s] = b + 1;
                if (s + 1 > n_stages)
                        n_stages = s + 1;
        }
        return n_stages;
}

static const struct arch_variant *detect_variant(const struct st_file *f, int scheme,
                                                 char *err, size_t err_len)
{
        int counts[ARCH_MAX_STAGES + 2];
        int n = count_stages(f, scheme, counts, ARCH_MAX_STAGES + 2);
        char key[64];
        model_top_key(scheme, n, "conv_stem", "weight", key, sizeof key);
        const struct st_tensor *stem = st_find(f, key);
        int stem_ch = stem && stem->ndim == 4 ? (int)stem->shape[0] : -1;
        model_top_key(scheme, n, "conv_head", "weight", key, sizeof key);
        const struct st_tensor *head = st_find(f, key);
        int head_ch = head && head->ndim == 4 ? (int)head->shape[0] : -1;

        for (int i = 0; i < arch_count(); i++) {
                const struct arch_variant *v = arch_at(i);
                struct arch_block b[ARCH_MAX_BLOCKS];
                int nb = arch_blocks(v, b), want[ARCH_MAX_STAGES] = { 0 };
                if (v->n_stages != n || arch_stem(v) != stem_ch || arch_head(v) != head_ch)
                        continue;
                for (int j = 0; j < nb; j++)
                        want[b[j].stage]++;
                if (memcmp(want, counts, sizeof(int) * (size_t)n) == 0)
                        return v;
        }
        char got[128];
        int len = snprintf(got, sizeof got, "[");
        for (int s = 0; s < n; s++)
                len += snprintf(got + len, sizeof got - (size_t)len, "%s%d", s ? ", " : "", counts[s]);
        snprintf(got + len, sizeof got - (size_t)len, "]");
        err_set(err, err_len, -ENOTSUP,
                "no EfficientNetV2 variant has stem %d, head %d and blocks per stage %s", stem_ch, head_ch, got);
        return NULL;
}

/* Floats of scales and biases the model keeps: 2 per BN channel, 1 per
 * linear output. */
static size_t arena_floats(const struct arch_variant *v, int classes)
{
        struct arch_block b[ARCH_MAX_BLOCKS];
        int n = arch_blocks(v, b);
        size_t total = 2 * (size_t)(arch_stem(v) + arch_head(v)) + (size_t)classes;

        for (int i = 0; i < n; i++)
                total += 2 * (size_t)(2 * b[i].mid + b[i].out) + (size_t)(b[i].se ? b[i].in + b[i].mid : 0);
        return total;
}

/* The name scheme, from the stem's weight. */
static int detect_scheme(const struct st_file *f, char *err, size_t err_len, int *ret_scheme)
{
        if (st_find(f, "conv_stem.weight")) {
                *ret_scheme = EFFNET_SCHEME_TIMM;
                return 0;
        }
        if (st_find(f, "features.0.0.weight")) {
                *ret_scheme = EFFNET_SCHEME_TORCHVISION;
                return 0;
        }
        return err_set(err, err_len, -ENOTSUP,
                       "neither timm (conv_stem.weight) nor torchvision (features.0.0.weight) names");
}

/* The class count, from the classifier's weight [classes][head]. */
static int detect_classes(const struct st_file *f, int scheme, const struct arch_variant *v, char *err,
                          size_t err_len, int *ret_classes)
{
        char wk[160];

        model_top_key(scheme, v->n_stages, "classifier", "weight", wk, sizeof wk);
        const struct st_tensor *cls = st_find(f, wk);
        if (!cls || cls->ndim != 2 || cls->shape[0] < 1 || cls->shape[0] > 1000000 || cls->shape[1] != arch_head(v))
                return err_set(err, err_len, -EBADMSG, "tensor %s: missing or not [classes, %d]", wk, arch_head(v));
        *ret_classes = (int)cls->shape[0];
        return 0;
}

/* The model over f (which it then owns) and the loader that fills it. */
static int model_alloc(struct st_file *f, const struct arch_variant *v, int classes, struct loader *l,
                       struct model **ret_model)
{
        struct model *m = calloc(1, sizeof *m);

        l->used = calloc(st_count(f) + 1, 1);
        l->arena_cap = arena_floats(v, classes);
        l->arena = malloc(sizeof(float) * l->arena_cap);
        if (!m || !l->used || !l->arena) {
                free(m);
                free(l->used);
                free(l->arena);
                l->used = NULL;
                return err_set(l->err, l->err_len, -ENOMEM, "out of memory");
        }
        m->arena = l->arena;
        m->file = f;
        m->variant = v;
        l->m = m;
        *ret_model = m;
        return 0;
}

/* Padding and BatchNorm eps: timm names are TF ports (tf_*, 'SAME' and
 * 1e-3) unless the structure is one only PyTorch-trained timm models have;
 * torchvision V2 uses 1e-3 too. Options override. */
static void choose_numerics(int scheme, const struct arch_variant *v, const struct effnet_open_opts *opts,
                            int *ret_padding, double *ret_eps)
{
        int padding = scheme == EFFNET_SCHEME_TIMM && !v->pt_native ? EFFNET_PAD_SAME : EFFNET_PAD_SYMMETRIC;
        double eps = v->pt_native ? 1e-5 : 1e-3;

        if (opts && opts->padding != EFFNET_PAD_AUTO)
                padding = opts->padding;
        if (opts && opts->bn_eps > 0)
                eps = opts->bn_eps;
        *ret_padding = padding;
        *ret_eps = eps;
}

/* Stem, blocks, head and classifier, in the order of the network. */
static int load_layers(struct loader *l, int scheme, int classes, struct model *m)
{
        const struct arch_variant *v = m->variant;
        struct arch_block ab[ARCH_MAX_BLOCKS];
        char wk[160], bk[160];
        int r;

        model_top_key(scheme, v->n_stages, "conv_stem", "weight", wk, sizeof wk);
        model_top_key(scheme, v->n_stages, "bn1", NULL, bk, sizeof bk);
        if ((r = load_conv_bn(l, wk, bk, 3, arch_stem(v), 3, 2, 1, MODEL_ACT_SILU, &m->stem)) < 0)
                return r;
        m->n_blocks = arch_blocks(v, ab);
        for (int i = 0; i < m->n_blocks; i++) {
                m->blocks[i].a = ab[i];
                if ((r = load_block(l, scheme, &m->blocks[i])) < 0)
                        return r;
        }
        model_top_key(scheme, v->n_stages, "conv_head", "weight", wk, sizeof wk);
        model_top_key(scheme, v->n_stages, "bn2", NULL, bk, sizeof bk);
        if ((r = load_conv_bn(l, wk, bk, ab[m->n_blocks - 1].out, arch_head(v), 1, 1, 1, MODEL_ACT_SILU,
                              &m->head)) < 0)
                return r;
        model_top_key(scheme, v->n_stages, "classifier", NULL, wk, sizeof wk);
        return load_fc(l, wk, arch_head(v), classes, 0, &m->classifier);
}

/* Every tensor of the file belongs to a layer (BatchNorm's counters aside):
 * a stray one means the file is not the variant it looks like. */
static int check_all_used(const struct loader *l, int scheme)
{
        for (size_t i = 0; i < st_count(l->f); i++) {
                const char *name = st_at(l->f, i)->name;
                size_t len = strlen(name);
                if (l->used[i] || (len >= 19 && strcmp(name + len - 19, "num_batches_tracked") == 0))
                        continue;
                return err_set(l->err, l->err_len, -EBADMSG, "unexpected tensor %s for %s (%s names)", name,
                               l->m->variant->name, scheme == EFFNET_SCHEME_TIMM ? "timm" : "torchvision");
        }
        return 0;
}

/* The seed of seeded weights, from the file's metadata; -1 if none. */
static long long metadata_seed(const struct st_file *f)
{
        const char *seed = st_metadata(f, MODEL_META_SEED);
        char *end;

        if (!seed)
                return -1;
        errno = 0;
        long long sv = strtoll(seed, &end, 10);
        return !errno && end != seed && !*end && sv >= 0 ? sv : -1;
}

static void fill_info(struct model *m, int scheme, int classes, int padding, double eps)
{
        const struct arch_variant *v = m->variant;
        const struct st_tensor *t0 = st_at(m->file, 0);

        m->info = (struct effnet_info){
                .variant = v->name,
                .scheme = scheme,
                .classes = classes,
                .padding = padding,
                .bn_eps = (float)eps,
                .dtype = t0 && t0->dtype == ST_F16 ? "F16" : t0 && t0->dtype == ST_BF16 ? "BF16" : "F32",
                .params = arch_params(v, classes),
                .preproc = scheme == EFFNET_SCHEME_TIMM ? v->timm : v->torchvision,
                .seed = metadata_seed(m->file),
        };
}

int model_from_st(struct st_file *f, const char *path,
                  const struct effnet_open_opts *opts, char *err, size_t err_len,
                  struct model **ret_model)
{
        struct model *m = NULL;
        struct loader l = { .f = f, .err = err, .err_len = err_len };
        const struct arch_variant *v;
        int scheme = 0, classes = 0, padding = 0, r;

        if ((r = detect_scheme(f, err, err_len, &scheme)) < 0)
                goto fail_file;
        if (!(v = detect_variant(f, scheme, err, err_len))) {
                r = -ENOTSUP;
                goto fail_file;
        }
        if ((r = detect_classes(f, scheme, v, err, err_len, &classes)) < 0 ||
            (r = model_alloc(f, v, classes, &l, &m)) < 0)
                goto fail_file;
        snprintf(m->path, sizeof m->path, "%s", path);
        choose_numerics(scheme, v, opts, &padding, &l.eps);
        if ((r = load_layers(&l, scheme, classes, m)) < 0 || (r = check_all_used(&l, scheme)) < 0)
                goto fail;
        fill_info(m, scheme, classes, padding, l.eps);
        free(l.used);
        *ret_model = m;
        return 0;
fail_file:
        st_free(f);
        return r;
fail:
        free(l.used);
        model_free(m);
        return r;
}

int model_open(const char *path, const struct effnet_open_opts *opts, char *err,
               size_t err_len, struct model **ret_model)
{
        struct st_file *f = NULL;
        bool copy = opts && opts->copy;
        int r = st_open_ex(path, copy, err, err_len, &f);

        if (r < 0)
                return r;
        struct model *m = NULL;
        if ((r = model_from_st(f, path, opts, err, err_len, &m)) < 0) {
                /* st_open names the path itself; name it for the model's errors too. */
                if (err && err_len) {
                        char msg[512];
                        snprintf(msg, sizeof msg, "%s", err);
                        err_set(err, err_len, r, "%s: %s", path, msg);
                }
                return r;
        }
        /* Dropping pages of anonymous memory would zero them. */
        m->release_pages = !copy;
        *ret_model = m;
        return 0;
}

struct model *model_free(struct model *m)
{
        if (!m)
                return NULL;
        free(m->arena);
        st_free(m->file);
        free(m);
        return NULL;
}
