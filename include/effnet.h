/* libeffnet: EfficientNetV2 inference on the CPU (oneDNN) — public API.
 *
 * Usage:
 *
 *   char err[256];
 *   struct effnet_model *m = NULL;
 *   struct effnet_exec *x = NULL;
 *   if (effnet_model_open("model.safetensors", NULL, err, sizeof err, &m) < 0)
 *           die("%s", err);
 *   const struct effnet_info *info = effnet_model_info(m);
 *   struct effnet_exec_opts eo = { .batch = 8, .threads = 2,
 *                                  .precision = EFFNET_BF16 };
 *   if (effnet_exec_new(m, &eo, err, sizeof err, &x) < 0)
 *           die("%s", err);
 *   // images: float [n][3][size][size] (NCHW, normalized), n <= batch
 *   float *logits = malloc(sizeof(float) * n * info->classes);
 *   effnet_exec_forward(x, images, n, logits);   // logits: [n][classes]
 *   x = effnet_exec_free(x);
 *   m = effnet_model_free(m);
 *
 * Threading: a model is immutable once opened and may be shared by any number
 * of threads and executors; it must outlive them. An executor owns the scratch
 * memory and primitives for one batch size, one input size and one precision;
 * it must be used by one thread at a time. Forward allocates nothing.
 *
 * Errors: functions that can fail return 0 or a negative errno code (-EINVAL,
 * -ENOMEM, -EBADMSG for corrupt data, -E2BIG for limits, -ENOTSUP for a model
 * this library cannot run) and, where given, write a one-line message that
 * names the file, tensor or offset into err. Out-parameters (ret_*) are written
 * only on success.
 */
#ifndef EFFNET_H
#define EFFNET_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define EFFNET_VERSION "0.1.0"

struct effnet_model;
struct effnet_exec;

enum effnet_precision {
        EFFNET_FP32 = 0,
        EFFNET_BF16 = 1,            /* needs native bf16: AVX512_BF16 or AMX */
        EFFNET_PRECISION_AUTO = 2,  /* bf16 where the CPU has it natively, else fp32 */
        EFFNET_INT8 = 3,            /* s8 convolutions; needs a calibration made for
                                     * the weights (effnet_calibration_load); AUTO
                                     * never picks it */
};
enum effnet_scheme { EFFNET_SCHEME_TIMM = 0, EFFNET_SCHEME_TORCHVISION = 1 };
enum effnet_padding {
        EFFNET_PAD_AUTO = 0,      /* from the weight source */
        EFFNET_PAD_SAME = 1,      /* TensorFlow 'SAME': extra pixel after */
        EFFNET_PAD_SYMMETRIC = 2, /* PyTorch: k/2 on both sides */
};
enum effnet_resize { EFFNET_RESIZE_BILINEAR = 0, EFFNET_RESIZE_BICUBIC = 1 };
enum effnet_crop {
        EFFNET_CROP_CENTER = 0, /* shorter side to size/crop_pct, center crop */
        EFFNET_CROP_SQUASH = 1, /* resize both sides to size, no crop */
};

/* How images must be prepared for this model (eval transforms). */
struct effnet_preproc {
        int size;            /* square input edge in pixels */
        int resize;          /* enum effnet_resize */
        int crop;            /* enum effnet_crop */
        float crop_pct;      /* resize shorter side to size / crop_pct */
        float mean[3];       /* on [0,1] RGB */
        float std[3];
};

struct effnet_info {
        const char *variant;  /* "efficientnetv2-s", "efficientnetv2-b0", ... */
        int scheme;           /* enum effnet_scheme */
        int classes;          /* from the classifier's shape */
        int padding;          /* EFFNET_PAD_SAME or EFFNET_PAD_SYMMETRIC */
        float bn_eps;
        const char *dtype;    /* stored dtype: "F32", "F16", "BF16" */
        int64_t params;       /* parameters, BN statistics excluded */
        struct effnet_preproc preproc; /* defaults for this source */
        int64_t seed;         /* >= 0: deterministic untrained weights made by
                               * effnet init-weights with this seed (the file's
                               * metadata says so); -1 otherwise */
};

struct effnet_open_opts {
        int padding;          /* enum effnet_padding; AUTO = from source */
        float bn_eps;         /* 0 = from source */
        int copy;             /* read the file into memory instead of mapping it:
                               * a file rewritten in place cannot fault the
                               * process (SIGBUS), and one that changes while
                               * it is read is refused (-ESTALE) */
};

/* Opens a safetensors file (timm or torchvision names), validates it, detects
 * variant, scheme and class count, folds BatchNorm. opts may be NULL. */
int effnet_model_open(const char *path, const struct effnet_open_opts *opts,
                      char *err, size_t err_len, struct effnet_model **ret_model);
struct effnet_model *effnet_model_free(struct effnet_model *m);
/* Owned by the model, valid for its lifetime. */
const struct effnet_info *effnet_model_info(const struct effnet_model *m);
/* The bytes of the file the model was opened from (for a checksum of
 * exactly what is served), or NULL after effnet_model_drop_file. */
const void *effnet_model_file(const struct effnet_model *m, size_t *ret_len);
/* Releases the file's memory once every executor the caller needs exists:
 * they keep working, while effnet_exec_new fails from then on (-ESTALE).
 * Not thread-safe against effnet_exec_new on the same model. */
void effnet_model_drop_file(struct effnet_model *m);

struct effnet_exec_opts {
        int batch;      /* images per forward, >= 1 */
        int threads;    /* oneDNN threads for this executor; 0 = all usable */
        int precision;  /* enum effnet_precision; AUTO resolves by the CPU */
        int size;       /* input height; 0 = preproc.size; 32..4096 */
        int width;      /* input width; 0 = size (square) */
        const struct effnet_calibration *calibration; /* EFFNET_INT8: made for
                                                       * this model; must outlive
                                                       * the executor */
};

/* Builds primitives and allocates every buffer for one batch size. Safe to
 * call from several threads on one model: weights converted for the chosen
 * layouts are cached in the model (under its lock) and shared by executors. */
int effnet_exec_new(struct effnet_model *m, const struct effnet_exec_opts *opts,
                    char *err, size_t err_len, struct effnet_exec **ret_exec);
struct effnet_exec *effnet_exec_free(struct effnet_exec *x);

/* images: float [n][3][height][width], NCHW, already normalized (see
 * effnet_exec_opts for height and width); 1 <= n <= batch.
 * logits: float [n][classes]. Returns 0, or -EINVAL for a bad n, or -EIO if
 * oneDNN fails. Denormal floats are flushed to zero while it runs (the
 * caller's floating-point mode is restored; OpenMP's worker threads keep
 * flush-to-zero on). */
int effnet_exec_forward(struct effnet_exec *x, const float *images, int n,
                        float *logits);

/* Bytes of activation and scratch memory the executor holds. */
size_t effnet_exec_bytes(const struct effnet_exec *x);

/* Kernels an executor runs: a oneDNN implementation name
 * ("brg:avx512_core_amx", "jit_1x1:avx2", ...) and how many of the
 * executor's primitives use it. */
struct effnet_kernel {
        const char *impl;
        int count;
};
/* Fills ret with up to max entries; names are owned by the executor.
 * Returns the number written, or -E2BIG when there are more than max.
 * Executors never hold a reference kernel: effnet_exec_new refuses one with
 * -ENOTSUP and names the layer. */
int effnet_exec_kernels(const struct effnet_exec *x, struct effnet_kernel *ret, int max);
/* The precision (never AUTO) and activation layout ("nChw16c", "nChw8c",
 * "nhwc") the executor runs. */
int effnet_exec_precision(const struct effnet_exec *x);
const char *effnet_exec_layout(const struct effnet_exec *x);

/* What this CPU runs, as oneDNN sees it: DNNL_MAX_CPU_ISA caps it. */
struct effnet_cpu {
        const char *isa;          /* oneDNN's effective ISA: "avx2", "avx512_core",
                                   * "avx512_core_vnni", "avx512_core_bf16",
                                   * "avx512_core_amx", ... (static string) */
        int bf16;                 /* 1 if bf16 runs natively */
        const char *fp32_layout;  /* activations of fp32 executors */
        const char *bf16_layout;  /* of bf16 executors; NULL without native bf16 */
};
void effnet_cpu_info(struct effnet_cpu *ret_cpu);

/* The version of the oneDNN library in use, "2.6.3" or "3.7.2" (static):
 * the build takes either 2.x or 3.x, and kernels differ between them. */
const char *effnet_onednn_version(void);

/* The precision an executor asked for precision would run: AUTO becomes
 * bf16 or fp32 by the CPU. -ENOTSUP, with a message saying what bf16 needs,
 * what this CPU has and what to use instead, for bf16 without native bf16;
 * -EINVAL for an unknown value. */
int effnet_precision_resolve(int precision, char *err, size_t err_len, int *ret_precision);
/* "fp32", "bf16", "auto", "int8"; NULL for an unknown value. */
const char *effnet_precision_name(int precision);
/* The inverse; -EINVAL for anything else. */
int effnet_precision_parse(const char *s, int *ret_precision);

/* int8 calibration: per-layer activation scales measured in fp32 on the
 * user's own images (with the server's preprocessing), which layers stay
 * fp32, and how far int8 moves the logits on images held out of it.
 *
 *   struct effnet_calibration *c = NULL;
 *   effnet_calibrate(m, sha256_hex, images, n, NULL, err, sizeof err, &c);
 *   effnet_calibration_save(c, "w.calib.json", err, sizeof err);
 *   // later, for the same weights:
 *   effnet_calibration_load(m, sha256_hex, "w.calib.json", err, sizeof err, &c);
 *   struct effnet_exec_opts eo = { .batch = 8, .precision = EFFNET_INT8, .calibration = c };
 *
 * A calibration is immutable once made and may be shared by executors of its
 * model; it must outlive them. */
struct effnet_calibration;

enum effnet_clip {
        EFFNET_CLIP_AUTO = 0,       /* each below, keeping the best on the held-out images */
        EFFNET_CLIP_MSE = 1,        /* least squared quantization error */
        EFFNET_CLIP_PERCENTILE = 2, /* the 99.99th percentile of |x| */
        EFFNET_CLIP_MAX = 3,        /* the largest |x| seen */
        EFFNET_CLIP_KL = 4,         /* least information lost (Kullback-Leibler) */
};

/* The method's name ("auto", "mse", "percentile", "max", "kl"), or NULL. */
const char *effnet_clip_name(int method);

struct effnet_calib_opts {
        int held_out;        /* images kept for the self-check; 0 = a fifth (at least 1) */
        int method;          /* enum effnet_clip */
        double threshold;    /* a layer stays fp32 when it alone in int8 moves the
                              * logits by more than this (rms / logit std);
                              * 0 = 0.05, < 0 = no layer stays fp32 */
        int threads;         /* 0 = all usable */
        int size;            /* input edge of images; 0 = preproc.size */
        void (*progress)(void *userdata, const char *phase, int done, int total);
        void *userdata;
};

/* The self-check: int8 against fp32 on held-out images. */
struct effnet_int8_check {
        int images;
        double top1_agreement;      /* share of images with the same top-1 class */
        double top5_overlap;        /* mean share of fp32's top 5 also in int8's */
        double max_logit_diff;      /* max |int8 - fp32| / std of the fp32 logits */
        double rms_logit_diff;      /* rms of |int8 - fp32| / the same std */
};

/* One convolution of the model as a calibration sees it. */
struct effnet_calib_layer {
        const char *name;           /* "stem", "blocks.3.conv1", "head", ... */
        const char *runs;           /* "int8" or "fp32" */
        float scale;                /* of its input activations (real = scale * q) */
        float sensitivity;          /* logits rms change alone in int8; < 0: not measured */
};

/* images: float [n][3][size][size], normalized like effnet_exec_forward's;
 * n >= 2 (some are held out). weights_sha256: hex digest of the weights
 * file, recorded in the calibration. opts may be NULL. */
int effnet_calibrate(struct effnet_model *m, const char *weights_sha256, const float *images, int n,
                     const struct effnet_calib_opts *opts, char *err, size_t err_len,
                     struct effnet_calibration **ret_calibration);
/* Reads a calibration file for m, refusing one made for other weights than
 * weights_sha256 (-EINVAL) or that is not a valid calibration (-EBADMSG,
 * -E2BIG), with a message. */
int effnet_calibration_load(struct effnet_model *m, const char *weights_sha256, const char *path,
                            char *err, size_t err_len, struct effnet_calibration **ret_calibration);
int effnet_calibration_save(const struct effnet_calibration *c, const char *path, char *err, size_t err_len);
struct effnet_calibration *effnet_calibration_free(struct effnet_calibration *c);
/* The self-check figures and clipping method ("mse", "percentile", "max"),
 * owned by c. */
const struct effnet_int8_check *effnet_calibration_check(const struct effnet_calibration *c);
const char *effnet_calibration_method(const struct effnet_calibration *c);
/* Layer i (0-based, forward order) into ret; -ERANGE past the last. */
int effnet_calibration_layer(const struct effnet_calibration *c, int i, struct effnet_calib_layer *ret);

/* Numerically stable softmax of one row, in place. */
void effnet_softmax(float *v, int n);
/* Indices of the k largest values, in descending order (ties: lower index
 * first); k is clamped to n. Returns the number written. */
int effnet_topk(const float *v, int n, int k, int *ret_idx);

/* Seeded weights: deterministic, untrained, nothing downloaded. They
 * classify nothing; they serve tests, benchmarks and a first start:
 *
 *   struct effnet_seeded_opts so = { .scheme = EFFNET_SCHEME_TORCHVISION };
 *   if (effnet_seeded_write("b0.safetensors", "b0", 1, &so, err, sizeof err) < 0)
 *           die("%s", err);
 */
enum effnet_dtype { EFFNET_DTYPE_F32 = 0, EFFNET_DTYPE_F16 = 1, EFFNET_DTYPE_BF16 = 2 };

/* Zeroed (or NULL) is the default: timm names, 1000 classes, F32, gain 1. */
struct effnet_seeded_opts {
        int scheme;     /* enum effnet_scheme: the tensor names written */
        int classes;    /* 1..100000; 0 = 1000 */
        int dtype;      /* enum effnet_dtype of the stored tensors */
        double gain;    /* the classifier's scale: 1 (or 0) gives logits
                         * spread by about 4 on small smooth images */
        /* Called after each block's BatchNorm calibration and once the file
         * is written (done == total); NULL: not called. */
        void (*progress)(void *userdata, int done, int total);
        void *userdata;
};

/* Writes weights of variant ("s", "m", "l", "xl", "b0".."b3", "rw_s") to
 * path as safetensors: random from seed, BatchNorm statistics calibrated on
 * smooth random images so that activations stay in range. The same
 * arguments give the same bytes; the file's metadata holds the seed
 * (effnet_info.seed once opened). -EINVAL for an unknown variant or an
 * option out of range, a negative errno of writing the file; a message in
 * err either way. Thread-safe. */
int effnet_seeded_write(const char *path, const char *variant, uint64_t seed,
                        const struct effnet_seeded_opts *opts, char *err, size_t err_len);
/* n smooth random images [n][3][size][size] of about unit variance, like
 * normalized photos, deterministic in seed. */
void effnet_smooth_images(uint64_t seed, int n, int size, float *ret_images);

#ifdef __cplusplus
}
#endif
#endif
