/* What the JPEG and PNG fuzz targets share: small limits, the rule for a
 * failure (a known code and a message) and the use of a decoded image.
 *
 *   r = img_decode_png(data, size, &fuzz_limits, err, sizeof err, &img);
 *   if (r < 0)
 *           fuzz_check_failure(r, err, sizeof err, 0);
 *   else
 *           fuzz_use(img, sel), img_rgb_free(img);
 */
#ifndef EFFNETD_FUZZ_IMAGE_H
#define EFFNETD_FUZZ_IMAGE_H

#include "image.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* Small limits keep each run fast; the limit checks themselves are fuzzed. */
static const struct img_limits fuzz_limits = {
        .max_bytes = (size_t)1 << 20,
        .max_width = 2048,
        .max_height = 2048,
        .max_pixels = (int64_t)1 << 20,
};

/* A failure is -EBADMSG, -E2BIG, -ENOMEM or also_ok (0: none), with a
 * message: err must hold a non-empty string. */
static inline void fuzz_check_failure(int r, const char *err, size_t err_len, int also_ok)
{
        if (r != -EBADMSG && r != -E2BIG && r != -ENOMEM && (also_ok == 0 || r != also_ok))
                abort();
        if (!memchr(err, '\0', err_len) || !err[0])
                abort();
}

/* A decoded image has pixels and always preprocesses; sel varies the
 * preprocessing (size 16..31, filter, crop, crop_pct). */
static inline void fuzz_use(const struct img_rgb *img, uint8_t sel)
{
        struct effnet_preproc pp = {
                .size = 16 + (sel & 15),
                .resize = sel & 16 ? EFFNET_RESIZE_BICUBIC : EFFNET_RESIZE_BILINEAR,
                .crop = sel & 32 ? EFFNET_CROP_SQUASH : EFFNET_CROP_CENTER,
                .crop_pct = sel & 64 ? 1.15f : 0.875f,
                .mean = { 0.485f, 0.456f, 0.406f },
                .std = { 0.229f, 0.224f, 0.225f },
        };
        float out[3 * 31 * 31];
        char err[256];

        if (img->width < 1 || img->height < 1 || !img->pixels)
                abort();
        if (img_preprocess(img, &pp, out, err, sizeof err) < 0)
                abort();
}

#endif
