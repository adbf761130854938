/* arch: EfficientNetV2 variant tables (S/M/L/XL, B0..B3) and the block list
 * they expand to. */
#include "arch.h"
#include "util.h"

#include <math.h>
#include <string.h>

/* Stage tables: docs/model.md, "Variants S, M, L and XL" and "B0 to B3". */
static const struct arch_stage stages_s[] = {
        { ARCH_FUSED, 1, 1, 24, 2, 0, 0 },    { ARCH_FUSED, 4, 2, 48, 4, 0, 0 },
        { ARCH_FUSED, 4, 2, 64, 4, 0, 0 },    { ARCH_MBCONV, 4, 2, 128, 6, 1, 0 },
        { ARCH_MBCONV, 6, 1, 160, 9, 1, 0 },  { ARCH_MBCONV, 6, 2, 256, 15, 1, 0 },
};
static const struct arch_stage stages_m[] = {
        { ARCH_FUSED, 1, 1, 24, 3, 0, 0 },    { ARCH_FUSED, 4, 2, 48, 5, 0, 0 },
        { ARCH_FUSED, 4, 2, 80, 5, 0, 0 },    { ARCH_MBCONV, 4, 2, 160, 7, 1, 0 },
        { ARCH_MBCONV, 6, 1, 176, 14, 1, 0 }, { ARCH_MBCONV, 6, 2, 304, 18, 1, 0 },
        { ARCH_MBCONV, 6, 1, 512, 5, 1, 0 },
};
static const struct arch_stage stages_l[] = {
        { ARCH_FUSED, 1, 1, 32, 4, 0, 0 },    { ARCH_FUSED, 4, 2, 64, 7, 0, 0 },
        { ARCH_FUSED, 4, 2, 96, 7, 0, 0 },    { ARCH_MBCONV, 4, 2, 192, 10, 1, 0 },
        { ARCH_MBCONV, 6, 1, 224, 19, 1, 0 }, { ARCH_MBCONV, 6, 2, 384, 25, 1, 0 },
        { ARCH_MBCONV, 6, 1, 640, 7, 1, 0 },
};
static const struct arch_stage stages_xl[] = {
        { ARCH_FUSED, 1, 1, 32, 4, 0, 0 },    { ARCH_FUSED, 4, 2, 64, 8, 0, 0 },
        { ARCH_FUSED, 4, 2, 96, 8, 0, 0 },    { ARCH_MBCONV, 4, 2, 192, 16, 1, 0 },
        { ARCH_MBCONV, 6, 1, 256, 24, 1, 0 }, { ARCH_MBCONV, 6, 2, 512, 32, 1, 0 },
        { ARCH_MBCONV, 6, 1, 640, 8, 1, 0 },
};
/* timm's efficientnetv2_rw_s: an earlier reading of the paper figure. */
static const struct arch_stage stages_rw_s[] = {
        { ARCH_FUSED, 1, 1, 24, 2, 0, 1 }, { ARCH_FUSED, 4, 2, 48, 4, 0, 0 },
        { ARCH_FUSED, 4, 2, 64, 4, 0, 0 }, { ARCH_MBCONV, 4, 2, 128, 6, 1, 0 },
        { ARCH_MBCONV, 6, 1, 160, 9, 1, 0 }, { ARCH_MBCONV, 6, 2, 272, 15, 1, 0 },
};
/* B0..B3 scale this base by (width, depth). */
static const struct arch_stage stages_b[] = {
        { ARCH_FUSED, 1, 1, 16, 1, 0, 0 },    { ARCH_FUSED, 4, 2, 32, 2, 0, 0 },
        { ARCH_FUSED, 4, 2, 48, 2, 0, 0 },    { ARCH_MBCONV, 4, 2, 96, 3, 1, 0 },
        { ARCH_MBCONV, 6, 1, 112, 5, 1, 0 },  { ARCH_MBCONV, 6, 2, 192, 8, 1, 0 },
};

#define IMAGENET { 0.485f, 0.456f, 0.406f }, { 0.229f, 0.224f, 0.225f }
#define HALF { 0.5f, 0.5f, 0.5f }, { 0.5f, 0.5f, 0.5f }
#define PP(size, resize, crop, pct, norm) { size, EFFNET_RESIZE_##resize, EFFNET_CROP_##crop, pct, norm }

/* docs/model.md, "Preprocessing per weight source"; torchvision ships S, M and L only, so the other
 * variants take timm's transforms under either naming. */
static const struct arch_variant variants[] = {
        { "s", "efficientnetv2-s", stages_s, 6, 24, 1280, 1.0, 1.0, 0,
          PP(384, BICUBIC, CENTER, 1.0f, HALF), PP(384, BILINEAR, CENTER, 1.0f, IMAGENET) },
        { "m", "efficientnetv2-m", stages_m, 7, 24, 1280, 1.0, 1.0, 0,
          PP(480, BICUBIC, SQUASH, 1.0f, HALF), PP(480, BILINEAR, CENTER, 1.0f, IMAGENET) },
        { "l", "efficientnetv2-l", stages_l, 7, 32, 1280, 1.0, 1.0, 0,
          PP(480, BICUBIC, SQUASH, 1.0f, HALF), PP(480, BICUBIC, CENTER, 1.0f, HALF) },
        { "xl", "efficientnetv2-xl", stages_xl, 7, 32, 1280, 1.0, 1.0, 0,
          PP(512, BICUBIC, SQUASH, 1.0f, HALF), PP(512, BICUBIC, SQUASH, 1.0f, HALF) },
        { "b0", "efficientnetv2-b0", stages_b, 6, 32, 1280, 1.0, 1.0, 0,
          PP(224, BICUBIC, CENTER, 0.875f, IMAGENET), PP(224, BICUBIC, CENTER, 0.875f, IMAGENET) },
        { "b1", "efficientnetv2-b1", stages_b, 6, 32, 1280, 1.0, 1.1, 0,
          PP(240, BICUBIC, CENTER, 0.882f, IMAGENET), PP(240, BICUBIC, CENTER, 0.882f, IMAGENET) },
        { "b2", "efficientnetv2-b2", stages_b, 6, 32, 1280, 1.1, 1.2, 0,
          PP(260, BICUBIC, CENTER, 0.890f, IMAGENET), PP(260, BICUBIC, CENTER, 0.890f, IMAGENET) },
        { "b3", "efficientnetv2-b3", stages_b, 6, 32, 1280, 1.2, 1.4, 0,
          PP(300, BICUBIC, CENTER, 0.904f, IMAGENET), PP(300, BICUBIC, CENTER, 0.904f, IMAGENET) },
        { "rw_s", "efficientnetv2-rw-s", stages_rw_s, 6, 24, 1792, 1.0, 1.0, 1,
          PP(384, BICUBIC, CENTER, 1.0f, IMAGENET), PP(384, BICUBIC, CENTER, 1.0f, IMAGENET) },
};

const struct arch_variant *arch_find(const char *key)
{
        for (size_t i = 0; i < ARRAY_SIZE(variants); i++)
                if (strcmp(variants[i].key, key) == 0 || strcmp(variants[i].name, key) == 0)
                        return &variants[i];
        return NULL;
}

const struct arch_variant *arch_at(int i)
{
        return i >= 0 && i < (int)ARRAY_SIZE(variants) ? &variants[i] : NULL;
}

int arch_count(void)
{
        return (int)ARRAY_SIZE(variants);
}

int arch_filters(const struct arch_variant *v, int f)
{
        int r = (int)(f * v->width + 4) / 8 * 8;
        return r < 8 ? 8 : r;
}

int arch_stem(const struct arch_variant *v)
{
        return arch_filters(v, v->stem);
}

int arch_head(const struct arch_variant *v)
{
        return arch_filters(v, v->head);
}

int arch_blocks(const struct arch_variant *v, struct arch_block *blocks)
{
        int n = 0, in = arch_stem(v);

        for (int s = 0; s < v->n_stages; s++) {
                const struct arch_stage *st = &v->stages[s];
                int out = arch_filters(v, st->out);
                int reps = (int)ceil(v->depth * st->repeats);
                for (int i = 0; i < reps && n < ARCH_MAX_BLOCKS; i++) {
                        struct arch_block *b = &blocks[n++];
                        b->kind = st->kind;
                        b->stage = s;
                        b->index = i;
                        b->in = in;
                        b->out = out;
                        b->expand = st->expand;
                        b->project = st->kind == ARCH_MBCONV || st->expand != 1 || st->project;
                        b->mid = b->project ? in * st->expand : out;
                        b->stride = i == 0 ? st->stride : 1;
                        b->kernel = 3;
                        b->se = st->se ? (in / 4 > 1 ? in / 4 : 1) : 0;
                        b->residual = b->stride == 1 && in == out;
                        in = out;
                }
        }
        return n;
}

int64_t arch_params(const struct arch_variant *v, int classes)
{
        struct arch_block b[ARCH_MAX_BLOCKS];
        int n = arch_blocks(v, b);
        int stem = arch_stem(v), head = arch_head(v);
        /* conv + BN (gamma, beta) */
        int64_t p = (int64_t)stem * 3 * 9 + 2 * stem;
        int last = stem;

        for (int i = 0; i < n; i++) {
                int64_t k2 = (int64_t)b[i].kernel * b[i].kernel;
                if (b[i].kind == ARCH_FUSED) {
                        p += b[i].mid * (b[i].in * k2) + 2 * b[i].mid;
                        if (b[i].project)
                                p += (int64_t)b[i].out * b[i].mid + 2 * b[i].out;
                } else {
                        p += (int64_t)b[i].mid * b[i].in + 2 * b[i].mid;
                        p += b[i].mid * k2 + 2 * b[i].mid;
                        if (b[i].se)
                                p += 2 * (int64_t)b[i].se * b[i].mid + b[i].se + b[i].mid;
                        p += (int64_t)b[i].out * b[i].mid + 2 * b[i].out;
                }
                last = b[i].out;
        }
        p += (int64_t)head * last + 2 * head;
        p += (int64_t)classes * head + classes;
        return p;
}
