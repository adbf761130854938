/* arch: EfficientNetV2 variant tables (S/M/L/XL, B0..B3) and the block list
 * they expand to. Pure data; knows nothing of weights or oneDNN.
 *
 * Usage:
 *   const struct arch_variant *v = arch_find("s");
 *   struct arch_block b[ARCH_MAX_BLOCKS];
 *   int n = arch_blocks(v, b);            // 40 blocks for V2-S
 */
#ifndef EFFNET_ARCH_H
#define EFFNET_ARCH_H

#include <stdint.h>

#include "effnet.h"

#define ARCH_MAX_STAGES 7
#define ARCH_MAX_BLOCKS 128

enum arch_kind {
        ARCH_FUSED = 0,  /* Fused-MBConv: kxk conv (+ 1x1 project when expand > 1) */
        ARCH_MBCONV = 1, /* 1x1 expand, depthwise kxk, SE, 1x1 project */
};

struct arch_stage {
        int kind;     /* enum arch_kind */
        int expand;
        int stride;   /* of the first block */
        int out;      /* channels before width scaling */
        int repeats;  /* blocks before depth scaling */
        int se;       /* squeeze-excite on this stage's blocks */
        int project;  /* Fused e=1 with a 1x1 project all the same (timm's rw 'er' e1) */
};

struct arch_variant {
        const char *key;   /* "s", "m", "l", "xl", "b0".. "b3", "rw_s" */
        const char *name;  /* "efficientnetv2-s" */
        const struct arch_stage *stages;
        int n_stages;
        int stem, head;    /* before width scaling */
        double width, depth;
        int pt_native;                     /* PyTorch-trained (timm rw): symmetric padding, eps 1e-5 */
        struct effnet_preproc timm;        /* timm tf_ eval transforms */
        struct effnet_preproc torchvision; /* torchvision eval transforms */
};

struct arch_block {
        int kind;      /* enum arch_kind */
        int stage;     /* 0-based stage of the variant table */
        int index;     /* 0-based block within its stage */
        int in, out;
        int mid;       /* in * expand; for Fused e=1 the conv goes in -> out */
        int expand;
        int project;   /* has a 1x1 project conv (expand > 1 or the stage says so) */
        int stride;
        int kernel;
        int se;        /* squeeze channels, 0 if no SE */
        int residual;  /* stride 1 and in == out */
};

const struct arch_variant *arch_find(const char *key);
const struct arch_variant *arch_at(int i);
int arch_count(void);

/* round_filters of the variant: max(8, int(f*w + 4) // 8 * 8). */
int arch_filters(const struct arch_variant *v, int f);
/* Stem and head channels after scaling. */
int arch_stem(const struct arch_variant *v);
int arch_head(const struct arch_variant *v);
/* Fills blocks[ARCH_MAX_BLOCKS] and returns the count. */
int arch_blocks(const struct arch_variant *v, struct arch_block *blocks);
/* Learnable parameters (BN statistics excluded) for a class count. */
int64_t arch_params(const struct arch_variant *v, int classes);

#endif
