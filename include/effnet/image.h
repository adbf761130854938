/* libeffnet image API: decode JPEG/PNG bytes and prepare them as the input
 * tensor a model expects (its eval transforms: resize, crop, normalize).
 *
 * Usage (with a model m opened and an executor x built as in effnet.h):
 *
 *   char err[256];
 *   const struct effnet_info *info = effnet_model_info(m);
 *   int size = info->preproc.size;
 *   float *input = malloc(sizeof(float) * 3 * size * size);  // [3][size][size]
 *   float *logits = malloc(sizeof(float) * info->classes);
 *   // bytes, len: a JPEG or PNG file as read from disk or the network
 *   if (effnet_image_prepare(bytes, len, NULL, &info->preproc,
 *                            err, sizeof err, input) < 0)
 *           die("%s", err);    // not an image, corrupt, or over a limit
 *   effnet_exec_forward(x, input, 1, logits);
 *   effnet_softmax(logits, info->classes);
 *   int top1;
 *   effnet_topk(logits, info->classes, 1, &top1);
 *
 * Or in two steps, to look at the pixels or to prepare one decoded image
 * for several models:
 *
 *   struct effnet_image *img = NULL;
 *   if (effnet_image_decode(bytes, len, NULL, err, sizeof err, &img) == 0) {
 *           int w, h;
 *           const uint8_t *rgb = effnet_image_rgb(img, &w, &h); // [h][w][3]
 *           effnet_image_preprocess(img, &info->preproc, err, sizeof err, input);
 *           img = effnet_image_free(img);
 *   }
 *
 * Semantics are those of a PyTorch eval pipeline with PIL:
 *   Image.open(f).convert("RGB") -> Resize -> CenterCrop -> ToTensor -> Normalize
 * bit-exact to PIL's decoders and resampler (alpha dropped, not composited;
 * EXIF orientation ignored, as PIL and torchvision do).
 *
 * Limits: every size is checked from the file's header before any pixel
 * memory is allocated; a hostile file gets -E2BIG or -EBADMSG, never more
 * memory than the limits allow.
 *
 * Errors: 0 or a negative errno code: -ENOTSUP (neither JPEG nor PNG),
 * -EBADMSG (corrupt or truncated), -E2BIG (over a limit), -EINVAL (a bad
 * preproc), -ENOMEM; err, when given, gets a one-line message. Outputs are
 * written only on success.
 *
 * Threading: every function is reentrant; nothing is shared between calls.
 */
#ifndef LIBEFFNET_IMAGE_H
#define LIBEFFNET_IMAGE_H

#include <stddef.h>
#include <stdint.h>

#include <effnet.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Defaults of struct effnet_image_opts (a field left 0 takes them). */
#define EFFNET_IMAGE_MAX_BYTES  ((size_t)20 << 20)     /* encoded bytes: 20 MiB */
#define EFFNET_IMAGE_MAX_SIDE   16384                  /* width and height */
#define EFFNET_IMAGE_MAX_PIXELS ((int64_t)40000000)    /* width x height: 120 MB of RGB */

enum effnet_image_format {
        EFFNET_IMAGE_UNKNOWN = 0,
        EFFNET_IMAGE_JPEG = 1,
        EFFNET_IMAGE_PNG = 2,
};

/* NULL, or all fields 0, means the defaults. */
struct effnet_image_opts {
        size_t max_bytes;     /* encoded size; 0 = EFFNET_IMAGE_MAX_BYTES */
        int max_width;        /* 0 = EFFNET_IMAGE_MAX_SIDE */
        int max_height;       /* 0 = EFFNET_IMAGE_MAX_SIDE */
        int64_t max_pixels;   /* 0 = EFFNET_IMAGE_MAX_PIXELS */
        int jpeg_fast;        /* effnet_image_prepare: decode large JPEGs at a
                               * reduced DCT scale, 2-3x faster, close to but
                               * not bit-exact with PIL */
};

/* What a file's header says. */
struct effnet_image_info {
        int format;           /* enum effnet_image_format */
        int width;
        int height;
};

/* A decoded 8-bit RGB image. */
struct effnet_image;

/* The format from the first bytes (never from a media type or a name). */
int effnet_image_format(const void *data, size_t len);

/* Reads the header only and checks every limit of opts (NULL: defaults). */
int effnet_image_probe(const void *data, size_t len, const struct effnet_image_opts *opts,
                       char *err, size_t err_len, struct effnet_image_info *ret_info);

/* Decodes a JPEG or PNG at full size. *ret_img is the caller's
 * (effnet_image_free). */
int effnet_image_decode(const void *data, size_t len, const struct effnet_image_opts *opts,
                        char *err, size_t err_len, struct effnet_image **ret_img);

/* Accepts NULL; returns NULL. */
struct effnet_image *effnet_image_free(struct effnet_image *img);

/* The pixels, [height][width][3] RGB, owned by img; width and height go to
 * ret_width and ret_height (either may be NULL). */
const uint8_t *effnet_image_rgb(const struct effnet_image *img, int *ret_width, int *ret_height);

/* Resize + crop + ToTensor + Normalize of img for pp (a model's
 * effnet_info.preproc) into ret_input, float [3][pp->size][pp->size] (NCHW
 * plane order, the caller's buffer): (v / 255 - mean) / std. -EINVAL for a
 * preproc out of range (size not in 1..8192, crop_pct not in (0, 4], a std
 * of 0), -E2BIG, -ENOMEM. */
int effnet_image_preprocess(const struct effnet_image *img, const struct effnet_preproc *pp,
                            char *err, size_t err_len, float *ret_input);

/* The whole path: limits, format, decode, preprocess, as
 * effnet_image_decode followed by effnet_image_preprocess (with
 * opts->jpeg_fast, a reduced-scale decode where it suffices). */
int effnet_image_prepare(const void *data, size_t len, const struct effnet_image_opts *opts,
                         const struct effnet_preproc *pp, char *err, size_t err_len,
                         float *ret_input);

#ifdef __cplusplus
}
#endif
#endif
