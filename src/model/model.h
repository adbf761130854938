/* model: EfficientNetV2 weights by name scheme (timm, torchvision), variant
 * and class detection from the tensors, validation, BatchNorm folding.
 *
 * Usage:
 *   struct model *m = NULL;
 *   if (model_open("w.safetensors", NULL, err, sizeof err, &m) < 0) die("%s", err);
 *   // m->stem, m->blocks[i].conv1 ... hold folded float32 weights
 *   m = model_free(m);
 */
#ifndef EFFNET_MODEL_H
#define EFFNET_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "effnet.h"
#include "arch.h"

struct st_file;

enum model_act { MODEL_ACT_NONE = 0, MODEL_ACT_SILU = 1 };

/* A convolution whose BatchNorm folds into it: the weights stay in the file's
 * mapping (model_conv_weights materializes them), scale and bias are owned. */
struct model_conv {
        int ic, oc, k, stride, groups;
        int act;                       /* enum model_act, applied after the bias */
        const struct st_tensor *w;     /* [oc][ic/groups][k][k], any float dtype */
        const float *scale;            /* [oc] gamma / sqrt(var + eps) */
        const float *b;                /* [oc] beta - mean * scale */
        const struct model *m;
};

struct model_fc {
        int in, out;
        const struct st_tensor *w;     /* [out][in] (or [out][in][1][1]) */
        const float *b;                /* [out], owned */
        const struct model *m;
};

struct model_block {
        struct arch_block a;
        struct model_conv conv1;    /* Fused: kxk in->mid (stride); MBConv: 1x1 in->mid */
        struct model_conv dw;       /* MBConv only: depthwise kxk (stride) */
        struct model_fc se_reduce;  /* MBConv only: mid -> se, then SiLU */
        struct model_fc se_expand;  /* MBConv only: se -> mid, then sigmoid */
        struct model_conv project;  /* 1x1 mid->out, no activation; oc = 0 for Fused e=1 */
};

struct model {
        struct effnet_info info;
        const struct arch_variant *variant;
        struct model_conv stem;        /* 3x3 s2, 3 -> stem, SiLU */
        int n_blocks;
        struct model_block blocks[ARCH_MAX_BLOCKS];
        struct model_conv head;        /* 1x1 -> 1280, SiLU */
        struct model_fc classifier;    /* head -> classes */
        float *arena;                  /* owns scales and biases */
        struct st_file *file;          /* owned: weights are read from its mapping */
        int release_pages;             /* the mapping is a file's: drop pages once read */
        int dropped;                   /* model_drop_file: tensor data are gone */
        char path[512];
};

/* Tensor names of a block's parts (docs/model.md, "Weight names"). */
enum model_role { R_CONV1, R_BN1, R_DW, R_BN2, R_SE_R, R_SE_E, R_PROJ, R_BNP };
/* "blocks.S.B.<part>.<leaf>" (timm) or "features.S+1.B.block.<part>.<leaf>";
 * leaf NULL gives the part's prefix without the trailing ".<leaf>". */
void model_block_key(int scheme, const struct arch_block *b, int role, const char *leaf,
                     char *out, size_t n);
/* what: "conv_stem", "bn1", "conv_head", "bn2", "classifier" in timm terms. */
void model_top_key(int scheme, int n_stages, const char *what, const char *leaf, char *out,
                   size_t n);

/* Folded float32 weights [oc][ic/groups][k][k] of a conv into ret_w (the
 * caller's buffer). Thread-safe: reads the immutable mapping only. */
void model_conv_weights(const struct model_conv *c, float *ret_w);
/* float32 weights [out][in] of a linear layer into ret_w. */
void model_fc_weights(const struct model_fc *fc, float *ret_w);

int model_open(const char *path, const struct effnet_open_opts *opts, char *err,
               size_t err_len, struct model **ret_model);
/* Same on an already parsed file, which the model takes over (even on
 * failure); a buffer given to st_parse must outlive the model. */
int model_from_st(struct st_file *f, const char *path,
                  const struct effnet_open_opts *opts, char *err, size_t err_len,
                  struct model **ret_model);
struct model *model_free(struct model *m);

/* Deterministic weights for a variant and scheme with BatchNorm statistics
 * calibrated on smooth random images (at a small size, for speed), written as
 * a safetensors file of dtype (enum st_dtype). The classifier is scaled for a
 * logit spread of about 4 at that size, times gain. */
int model_write_seeded(const char *path, const char *variant, int scheme,
                       int classes, uint64_t seed, int dtype, double gain,
                       char *err, size_t err_len);
/* The same, calling progress(userdata, done, total) after each block's
 * calibration and once the file is written (done == total); NULL: none. */
int model_write_seeded_ex(const char *path, const char *variant, int scheme, int classes, uint64_t seed,
                          int dtype, double gain, void (*progress)(void *userdata, int done, int total),
                          void *userdata, char *err, size_t err_len);
/* The safetensors metadata key of seeded weights: the seed, in decimal. */
#define MODEL_META_SEED "effnet.seed"
/* n smooth random images [n][3][size][size], deterministic in seed. */
void model_smooth_images(uint64_t seed, int n, int size, float *ret_images);

#endif
