/* image: decode JPEG/PNG bytes and turn them into a normalized model input,
 * matching PIL + torchvision/timm eval transforms. Pure: no HTTP, no globals.
 *
 * Usage:
 *   char err[256];
 *   struct img_opts o = IMG_OPTS_DEFAULT;
 *   float *x = malloc(sizeof(float) * 3 * pp.size * pp.size);
 *   int r = img_prepare(body, body_len, &o, &pp, x, err, sizeof err);
 *   // r: 0, -ENOTSUP (neither JPEG nor PNG), -EBADMSG (corrupt or
 *   //    truncated), -E2BIG (over a limit), -EINVAL (bad preproc), -ENOMEM
 *
 * Semantics (the reference is what a PyTorch user's eval pipeline does):
 *   Image.open(f).convert("RGB") -> Resize/CenterCrop -> ToTensor -> Normalize
 * - JPEG: libjpeg-turbo with the same settings as PIL (islow IDCT, fancy
 *   upsampling); grayscale is replicated; CMYK/YCCK is read with Adobe's
 *   inverted polarity and converted with PIL's formula. EXIF orientation is
 *   ignored, as PIL and torchvision do. Data that libjpeg only warns about is
 *   accepted (as PIL does) unless a fatal error follows; a stream that ends
 *   before its EOI is -EBADMSG, and so is a progressive JPEG of more than
 *   500 scans (a guard against scan floods that PIL does not have).
 * - PNG: alpha and tRNS are dropped (not composited), palettes expanded,
 *   gray replicated, 1/2/4-bit gray scaled to 0..255, 16-bit samples reduced
 *   to their high byte. PIL does the same except for 16-bit gray without
 *   alpha, which it clips to 255 (mode "I"); we take the high byte there too.
 * - Resize: PIL's antialiased separable resampler (support scaled by the
 *   downscale factor, bicubic a = -0.5, 22-bit fixed-point coefficients,
 *   rounding to 8 bits after each pass). Results are bit-identical to PIL.
 *
 * Threading: every function is reentrant; nothing is shared between calls.
 */
#ifndef EFFNET_IMAGE_H
#define EFFNET_IMAGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "effnet.h"

enum img_format {
        IMG_FORMAT_UNKNOWN = 0,
        IMG_FORMAT_JPEG = 1,
        IMG_FORMAT_PNG = 2,
};

/* Limits against hostile or accidental inputs. Dimensions are checked from
 * the header, before any pixel buffer is allocated. */
#define IMG_DEFAULT_MAX_BYTES  ((size_t)20 << 20)     /* encoded size: 20 MiB */
#define IMG_DEFAULT_MAX_WIDTH  16384
#define IMG_DEFAULT_MAX_HEIGHT 16384
#define IMG_DEFAULT_MAX_PIXELS ((int64_t)40000000)    /* 40 Mpixel: 120 MB of RGB */

struct img_limits {
        size_t max_bytes;
        int max_width;
        int max_height;
        int64_t max_pixels;
};

#define IMG_LIMITS_DEFAULT { \
        .max_bytes = IMG_DEFAULT_MAX_BYTES, \
        .max_width = IMG_DEFAULT_MAX_WIDTH, \
        .max_height = IMG_DEFAULT_MAX_HEIGHT, \
        .max_pixels = IMG_DEFAULT_MAX_PIXELS, \
}

struct img_opts {
        struct img_limits limits;
        /* Decode large JPEGs at a reduced DCT scale (1/2 or 1/4) whose
         * sides stay at least IMG_JPEG_FAST_MARGIN times the resize target,
         * then resample from there. 2-3x faster on photos; not bit-identical
         * to PIL (see tests/equivalence/image_pil.py for the difference). */
        bool jpeg_fast;
};

/* With margin 2 the fast path stays within the equivalence bound (mean
 * absolute difference < 0.01 after normalization); with 1 it is about twice
 * as far (0.013 mean, 0.027 worst on the test photos) and a little faster. */
#define IMG_JPEG_FAST_MARGIN 2

#define IMG_OPTS_DEFAULT { .limits = IMG_LIMITS_DEFAULT, .jpeg_fast = false }

/* What the header says, before decoding. */
struct img_info {
        int format;     /* enum img_format */
        int width;
        int height;
};

/* An 8-bit RGB image. */
struct img_rgb {
        int width;
        int height;
        /* Decoded at 1/reduce of the encoded size (1, 2 or 4); the encoded
         * image spans width * reduce (rounded up) pixels. */
        int reduce;
        int full_width;   /* encoded size */
        int full_height;
        uint8_t *pixels;  /* [height][width][3] RGB, owned */
};

/* The two steps of Resize(+CenterCrop) for one image: resize to
 * resize_width x resize_height, then take the size x size window whose
 * top-left corner is (crop_x, crop_y) in the resized image. Window pixels
 * outside the resized image (crop_pct > 1) are 0, as torchvision pads. */
struct img_geometry {
        int resize_width;
        int resize_height;
        int crop_x;
        int crop_y;
        int size;
};

/* Format from the first bytes (JPEG: FF D8 FF; PNG: its 8-byte signature),
 * never from a media type. */
enum img_format img_sniff(const void *data, size_t len);

/* Reads the header only and checks every limit. limits may be NULL for the
 * defaults. Returns -ENOTSUP for an unknown format, -EBADMSG for a malformed
 * header, -E2BIG over a limit (the message names it). */
int img_probe(const void *data, size_t len, const struct img_limits *limits,
              char *err, size_t err_len, struct img_info *ret_info);

/* Decodes a JPEG or PNG to RGB. min_width/min_height: 0 for a full-size
 * decode; otherwise a JPEG whose both sides are at least twice these may be
 * decoded at 1/2 or 1/4 scale, never below them (a damaged stream is
 * always decoded at full size). On success *ret_img is owned by the caller
 * (img_rgb_free). Errors as img_probe, plus -EBADMSG for corrupt or
 * truncated data and -ENOMEM. */
int img_decode(const void *data, size_t len, const struct img_limits *limits,
               int min_width, int min_height, char *err, size_t err_len,
               struct img_rgb **ret_img);
int img_decode_jpeg(const void *data, size_t len, const struct img_limits *limits,
                    int min_width, int min_height, char *err, size_t err_len,
                    struct img_rgb **ret_img);
int img_decode_png(const void *data, size_t len, const struct img_limits *limits,
                   char *err, size_t err_len, struct img_rgb **ret_img);

/* Accepts NULL; returns NULL. */
struct img_rgb *img_rgb_free(struct img_rgb *img);

/* Where Resize and CenterCrop take a width x height image for pp:
 * EFFNET_CROP_CENTER: torchvision Resize(floor(size / crop_pct)) on the
 *   shorter side (the longer one int(s * long / short)), CenterCrop(size)
 *   with Python's round-half-even offsets.
 * EFFNET_CROP_SQUASH: timm's squash: both sides to floor(size / crop_pct),
 *   then CenterCrop(size); with crop_pct 1 a plain resize to size x size.
 * Returns -EINVAL for a preproc out of range (size < 1 or > 8192, crop_pct
 * not in (0, 4] or size / crop_pct > 65536, unknown enum) or -E2BIG when
 * the resized image would not fit in an int. mean/std are not used here. */
int img_plan(const struct effnet_preproc *pp, int width, int height,
             struct img_geometry *ret_geom);

/* PIL's Image.resize(resample=BILINEAR|BICUBIC) of src to g->resize_width x
 * g->resize_height, cropped to the g window: writes out, [size][size][3]
 * RGB. Only the pixels the window needs are computed; they equal PIL's. If
 * src was decoded at a reduced scale the resampling maps it onto the full
 * image's extent. filter is enum effnet_resize. Returns -EINVAL or -ENOMEM
 * (out untouched then). */
int img_resize_crop(const struct img_rgb *src, const struct img_geometry *g,
                    int filter, uint8_t *out);

/* Resize + crop + ToTensor + Normalize of a decoded image into out,
 * float [3][pp->size][pp->size] (NCHW plane order, caller's buffer; written
 * only on success): out = (v / 255 - mean) / std in float32, as torch.
 * Errors: -EINVAL (img_plan's, or a std of 0, a non-finite mean/std),
 * -E2BIG, -ENOMEM. */
int img_preprocess(const struct img_rgb *img, const struct effnet_preproc *pp,
                   float *out, char *err, size_t err_len);

/* The whole path: limits, sniff, decode (the fast JPEG path if opts say so),
 * preprocess into out as img_preprocess. opts may be NULL for the defaults.
 * out is written only on success. */
int img_prepare(const void *data, size_t len, const struct img_opts *opts,
                const struct effnet_preproc *pp, float *out,
                char *err, size_t err_len);

#endif
