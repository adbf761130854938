/* image: format sniffing, limits, the geometry of Resize/CenterCrop, and the
 * decode -> resize -> normalize pipeline. */
#include "image.h"

#include <errno.h>
#include <float.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"
#include "internal.h"

/* Largest model input edge we accept; keeps every product below in range. */
#define IMG_MAX_SIZE 8192
/* Largest resize target of the shorter side (size / crop_pct). */
#define IMG_MAX_SCALE 65536

static const struct img_limits default_limits = IMG_LIMITS_DEFAULT;
static const uint8_t png_signature[8] = { 0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n' };

enum img_format img_sniff(const void *data, size_t len)
{
        const uint8_t *p = data;

        if (!p)
                return IMG_FORMAT_UNKNOWN;
        if (len >= 3 && p[0] == 0xFF && p[1] == 0xD8 && p[2] == 0xFF)
                return IMG_FORMAT_JPEG;
        if (len >= sizeof png_signature && memcmp(p, png_signature, sizeof png_signature) == 0)
                return IMG_FORMAT_PNG;
        return IMG_FORMAT_UNKNOWN;
}

int img_check_dims(const struct img_limits *lim, const char *what, int width,
                   int height, char *err, size_t err_len)
{
        if (width < 1 || height < 1)
                return err_set(err, err_len, -EBADMSG, "%s: invalid size %dx%d",
                               what, width, height);
        if (width > lim->max_width)
                return err_set(err, err_len, -E2BIG,
                               "%s: width %d exceeds the limit of %d pixels",
                               what, width, lim->max_width);
        if (height > lim->max_height)
                return err_set(err, err_len, -E2BIG,
                               "%s: height %d exceeds the limit of %d pixels",
                               what, height, lim->max_height);
        if ((int64_t)width * height > lim->max_pixels)
                return err_set(err, err_len, -E2BIG,
                               "%s: %dx%d is %" PRId64 " pixels, over the limit of %" PRId64,
                               what, width, height, (int64_t)width * height,
                               lim->max_pixels);
        return 0;
}

struct img_rgb *img_rgb_alloc(int width, int height, int channels)
{
        struct img_rgb *img;

        if (width < 1 || height < 1 || channels < 1 ||
            (size_t)width > SIZE_MAX / (size_t)height / (size_t)channels)
                return NULL;
        img = calloc(1, sizeof *img);
        if (!img)
                return NULL;
        img->pixels = malloc((size_t)width * (size_t)height * (size_t)channels);
        if (!img->pixels) {
                free(img);
                return NULL;
        }
        img->width = img->full_width = width;
        img->height = img->full_height = height;
        img->reduce = 1;
        return img;
}

struct img_rgb *img_rgb_free(struct img_rgb *img)
{
        if (img) {
                free(img->pixels);
                free(img);
        }
        return NULL;
}

static uint32_t be32(const uint8_t *p)
{
        return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

int img_png_header(const void *data, size_t len, int *ret_width, int *ret_height)
{
        const uint8_t *p = data;
        uint32_t w, h;

        /* signature, then IHDR: length 13, type, width, height, ... */
        if (len < 8 + 8 + 13 || memcmp(p, png_signature, sizeof png_signature) != 0 ||
            be32(p + 8) != 13 || memcmp(p + 12, "IHDR", 4) != 0)
                return -EBADMSG;
        w = be32(p + 16);
        h = be32(p + 20);
        /* PNG caps both at 2^31 - 1 */
        if (w < 1 || h < 1 || w > INT32_MAX || h > INT32_MAX)
                return -EBADMSG;
        *ret_width = (int)w;
        *ret_height = (int)h;
        return 0;
}

static int check_bytes(const struct img_limits *lim, const void *data, size_t len,
                       char *err, size_t err_len)
{
        if (!data || len == 0)
                return err_set(err, err_len, -EBADMSG, "empty image");
        if (len > lim->max_bytes)
                return err_set(err, err_len, -E2BIG,
                               "image of %zu bytes exceeds the limit of %zu bytes",
                               len, lim->max_bytes);
        return 0;
}

static int unknown_format(const void *data, size_t len, char *err, size_t err_len)
{
        const uint8_t *p = data;
        char hex[3 * 4 + 1] = "";

        for (size_t i = 0; i < len && i < 4; i++)
                snprintf(hex + strlen(hex), sizeof hex - strlen(hex), "%s%02x", i ? " " : "", p[i]);
        return err_set(err, err_len, -ENOTSUP,
                       "image is neither JPEG nor PNG (first bytes: %s)", hex);
}

int img_probe(const void *data, size_t len, const struct img_limits *limits,
              char *err, size_t err_len, struct img_info *ret_info)
{
        const struct img_limits *lim = limits ? limits : &default_limits;
        int fmt, w = 0, h = 0, r;

        r = check_bytes(lim, data, len, err, err_len);
        if (r < 0)
                return r;
        fmt = img_sniff(data, len);
        switch (fmt) {
        case IMG_FORMAT_JPEG:
                r = img_jpeg_header(data, len, err, err_len, &w, &h);
                if (r < 0)
                        return r;
                r = img_check_dims(lim, "JPEG", w, h, err, err_len);
                break;
        case IMG_FORMAT_PNG:
                r = img_png_header(data, len, &w, &h);
                if (r < 0)
                        return err_set(err, err_len, r, "PNG: malformed IHDR header");
                r = img_check_dims(lim, "PNG", w, h, err, err_len);
                break;
        default:
                return unknown_format(data, len, err, err_len);
        }
        if (r < 0)
                return r;
        *ret_info = (struct img_info){ .format = fmt, .width = w, .height = h };
        return 0;
}

int img_decode(const void *data, size_t len, const struct img_limits *limits,
               int min_width, int min_height, char *err, size_t err_len,
               struct img_rgb **ret_img)
{
        const struct img_limits *lim = limits ? limits : &default_limits;
        int r = check_bytes(lim, data, len, err, err_len);

        if (r < 0)
                return r;
        switch (img_sniff(data, len)) {
        case IMG_FORMAT_JPEG:
                return img_decode_jpeg(data, len, lim, min_width, min_height,
                                       err, err_len, ret_img);
        case IMG_FORMAT_PNG:
                return img_decode_png(data, len, lim, err, err_len, ret_img);
        default:
                return unknown_format(data, len, err, err_len);
        }
}

/* crop_pct arrives as a float but stands for a decimal from a config table
 * or a command line (0.875, 0.882, ...), and the reference computes
 * floor(size / crop_pct) in double: recover the decimal so that a quotient
 * that is an integer in double does not fall just below it in float. */
static double decimal_of(float f)
{
        char buf[32];

        snprintf(buf, sizeof buf, "%.*g", FLT_DIG, (double)f);
        return strtod(buf, NULL);
}

/* Offset of a size-wide window centered in n pixels, as torchvision's
 * center_crop: negative when it pads ((size - n) // 2 before), else
 * round((n - size) / 2.0) with Python's round-half-to-even. */
static int crop_offset(int n, int size)
{
        int d, half;

        if (size > n)
                return -((size - n) / 2);
        d = n - size;
        half = d / 2;
        if (d % 2 == 1 && half % 2 == 1)
                half++;
        return half;
}

int img_plan(const struct effnet_preproc *pp, int width, int height,
             struct img_geometry *ret_geom)
{
        double scale;
        int s, rw, rh;

        if (!pp || width < 1 || height < 1)
                return -EINVAL;
        if (pp->size < 1 || pp->size > IMG_MAX_SIZE)
                return -EINVAL;
        if (pp->resize != EFFNET_RESIZE_BILINEAR && pp->resize != EFFNET_RESIZE_BICUBIC)
                return -EINVAL;
        if (pp->crop != EFFNET_CROP_CENTER && pp->crop != EFFNET_CROP_SQUASH)
                return -EINVAL;
        if (!(pp->crop_pct > 0.0f && pp->crop_pct <= 4.0f))
                return -EINVAL;
        scale = floor((double)pp->size / decimal_of(pp->crop_pct));
        if (scale < 1.0 || scale > IMG_MAX_SCALE)
                return -EINVAL;
        s = (int)scale;

        if (pp->crop == EFFNET_CROP_SQUASH) {
                rw = rh = s;
        } else {
                /* torchvision: new_long = int(new_short * long / short) */
                int shorter = width <= height ? width : height;
                int longer = width <= height ? height : width;
                double l = (double)((int64_t)s * longer) / (double)shorter;
                int new_long;

                if (l >= (double)(INT_MAX / 4))
                        return -E2BIG;
                new_long = (int)l;
                rw = width <= height ? s : new_long;
                rh = width <= height ? new_long : s;
        }
        *ret_geom = (struct img_geometry){
                .resize_width = rw,
                .resize_height = rh,
                .crop_x = crop_offset(rw, pp->size),
                .crop_y = crop_offset(rh, pp->size),
                .size = pp->size,
        };
        return 0;
}

static int check_norm(const struct effnet_preproc *pp)
{
        for (int c = 0; c < 3; c++)
                if (!isfinite(pp->mean[c]) || !isfinite(pp->std[c]) || pp->std[c] == 0.0f)
                        return -EINVAL;
        return 0;
}

static int plan_error(int r, const struct effnet_preproc *pp, char *err, size_t err_len)
{
        if (r == -E2BIG)
                return err_set(err, err_len, r, "image aspect ratio too extreme to resize");
        return err_set(err, err_len, r,
                       "invalid preprocessing (size %d, resize %d, crop %d, crop_pct %g, std %g %g %g)",
                       pp ? pp->size : 0, pp ? pp->resize : -1, pp ? pp->crop : -1,
                       pp ? (double)pp->crop_pct : 0.0, pp ? (double)pp->std[0] : 0.0,
                       pp ? (double)pp->std[1] : 0.0, pp ? (double)pp->std[2] : 0.0);
}

int img_preprocess(const struct img_rgb *img, const struct effnet_preproc *pp,
                   float *out, char *err, size_t err_len)
{
        struct img_geometry g;
        float lut[3][256]; /* [channel][8-bit value] normalized */
        uint8_t *crop = NULL; /* [size][size][3] RGB window */
        size_t n;
        int r;

        if (!img || !img->pixels || !out)
                return err_set(err, err_len, -EINVAL, "no image or output buffer");
        r = img_plan(pp, img->full_width, img->full_height, &g);
        if (r == 0)
                r = check_norm(pp);
        if (r < 0)
                return plan_error(r, pp, err, err_len);

        n = (size_t)g.size * (size_t)g.size;
        crop = malloc(n * 3);
        if (!crop)
                return err_set(err, err_len, -ENOMEM, "out of memory");
        r = img_resize_crop(img, &g, pp->resize, crop);
        if (r < 0) {
                free(crop);
                return err_set(err, err_len, r, "resize to %dx%d failed",
                               g.resize_width, g.resize_height);
        }

        /* ToTensor then Normalize, in float32 and in torch's order:
         * (v / 255 - mean) / std. */
        for (int c = 0; c < 3; c++)
                for (int v = 0; v < 256; v++)
                        lut[c][v] = ((float)v / 255.0f - pp->mean[c]) / pp->std[c];
        for (int c = 0; c < 3; c++) {
                float *plane = out + (size_t)c * n;
                const float *l = lut[c];
                for (size_t i = 0; i < n; i++)
                        plane[i] = l[crop[3 * i + (size_t)c]];
        }
        free(crop);
        return 0;
}

int img_prepare(const void *data, size_t len, const struct img_opts *opts,
                const struct effnet_preproc *pp, float *out,
                char *err, size_t err_len)
{
        static const struct img_opts default_opts = IMG_OPTS_DEFAULT;
        const struct img_opts *o = opts ? opts : &default_opts;
        struct img_info info;
        struct img_geometry g;
        struct img_rgb *img = NULL;
        int min_w = 0, min_h = 0, r;

        r = img_probe(data, len, &o->limits, err, err_len, &info);
        if (r < 0)
                return r;
        /* Check the preprocessing before spending time on the decode. */
        r = img_plan(pp, info.width, info.height, &g);
        if (r == 0)
                r = check_norm(pp);
        if (r < 0)
                return plan_error(r, pp, err, err_len);
        if (o->jpeg_fast && info.format == IMG_FORMAT_JPEG) {
                min_w = IMG_JPEG_FAST_MARGIN * g.resize_width;
                min_h = IMG_JPEG_FAST_MARGIN * g.resize_height;
        }
        r = img_decode(data, len, &o->limits, min_w, min_h, err, err_len, &img);
        if (r < 0)
                return r;
        r = img_preprocess(img, pp, out, err, err_len);
        img_rgb_free(img);
        return r;
}
