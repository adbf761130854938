/* calib: int8 calibration files — per-layer activation scales, the weights'
 * sha256 they belong to, the accuracy self-check — parsed and written as
 * JSON, and the names of a model's convolutions that they refer to.
 *
 * Usage:
 *   struct calib *c = NULL;
 *   if (calib_parse(text, len, err, sizeof err, &c) < 0) die("%s", err);
 *   // c->v[i].name, c->v[i].scale, c->v[i].int8 ...
 *   c = calib_free(c);
 */
#ifndef EFFNET_CALIB_H
#define EFFNET_CALIB_H

#include <stddef.h>

struct model;
struct model_conv;

#define CALIB_MAX_BYTES (1 << 20)   /* a V2-XL file is about 20 KB */
#define CALIB_MAX_LAYERS 1024       /* V2-XL has 235 convolutions */
#define CALIB_NAME_LEN 32           /* "blocks.104.project" */
/* The file's version. It changes with the int8 plan, not only with the
 * fields: the self-check in a file describes the plan that measured it.
 * Version 1 files were measured on plans whose block stream stayed f32. */
#define CALIB_VERSION 2

struct calib_layer {
        char name[CALIB_NAME_LEN];  /* model_conv_name() */
        float scale;                /* of the layer's input: real = scale * s8 */
        int int8;                   /* 0: stays fp32 (too sensitive) */
        float sensitivity;          /* rms logit change / logit std with this
                                     * layer alone in int8; < 0: not measured */
};

struct calib_check {
        int images;                 /* held out: not used for the scales */
        double top1_agreement;      /* share of images with the same top-1 */
        double top5_overlap;        /* mean |top5(int8) & top5(fp32)| / 5 */
        double max_logit_diff;      /* max |int8 - fp32| / std of fp32 logits */
        double rms_logit_diff;      /* rms of the same */
};

struct calib {
        char sha256[65];            /* of the weights file, lower-case hex */
        char variant[48];
        char method[16];            /* "mse", "percentile", "kl", "max" */
        int size;                   /* input edge the images were run at */
        int images;                 /* used for the scales */
        double threshold;           /* sensitivity above which a layer stays fp32 */
        struct calib_check check;
        int n;
        struct calib_layer *v;      /* owned */
};

/* A histogram of |x| for choosing a layer's clipping: CALIB_HIST_BINS bins
 * of equal width from 0, the width doubling (pairs of bins merged) when a
 * value falls past the end, so that one pass over the images suffices.
 *
 *   struct calib_hist *h = calloc(1, sizeof *h);
 *   calib_hist_add(h, x, n);                          // every batch
 *   float scale = calib_hist_scale(h, EFFNET_CLIP_MSE);
 */
#define CALIB_HIST_BINS 2048
struct calib_hist {
        double width;               /* of one bin; 0 until the first values */
        double bins[CALIB_HIST_BINS];
        double count;
};

void calib_hist_add(struct calib_hist *h, const float *x, size_t count);
/* The scale (clip / 127) of h's clipping threshold by method (enum
 * effnet_clip but EFFNET_CLIP_AUTO): the largest value, the 99.99th
 * percentile, the least expected squared error of rounding inside and
 * saturating outside, or the least Kullback-Leibler divergence of its 128
 * levels; 1 for a histogram of zeros. */
float calib_hist_scale(const struct calib_hist *h, int method);

/* Parses and validates a calibration file's text: a JSON object of at most
 * CALIB_MAX_BYTES of version CALIB_VERSION with the fields above, finite
 * positive scales, at most CALIB_MAX_LAYERS layers with distinct names.
 * -EBADMSG (or -E2BIG) with a message naming the field otherwise; an older
 * version's message says to calibrate again. */
int calib_parse(const char *text, size_t len, char *err, size_t err_len, struct calib **ret_calib);
/* The JSON text of c, malloc'ed, NUL-terminated. */
int calib_format(const struct calib *c, char **ret_text);
/* A zeroed calibration with room for n layers. */
int calib_new(int n, struct calib **ret_calib);
struct calib *calib_free(struct calib *c);

/* The convolutions of m in forward order with their names ("stem",
 * "blocks.3.conv1", "blocks.3.dw", "blocks.3.project", "head"): up to max
 * into ret_convs and ret_names; returns the count. */
int calib_model_convs(const struct model *m, const struct model_conv **ret_convs,
                      char (*ret_names)[CALIB_NAME_LEN], int max);

#endif
