/* Fuzz target for JPEG decoding and preprocessing: any input must decode or
 * fail with a known code and a message, never crash, leak or hang. */
#include "image/image.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Small limits keep each run fast; the limit checks themselves are fuzzed. */
static const struct img_limits limits = {
        .max_bytes = (size_t)1 << 20,
        .max_width = 2048,
        .max_height = 2048,
        .max_pixels = (int64_t)1 << 20,
};

static void check_failure(int r, const char *err)
{
        if (r != -EBADMSG && r != -E2BIG && r != -ENOMEM && r != -ENOTSUP)
                abort();
        if (!memchr(err, '\0', 256) || !err[0])
                abort();
}

static void use(const struct img_rgb *img, uint8_t sel)
{
        struct effnet_preproc pp = {
                .size = 16 + (sel & 15),
                .resize = sel & 16 ? EFFNET_RESIZE_BICUBIC : EFFNET_RESIZE_BILINEAR,
                .crop = sel & 32 ? EFFNET_CROP_SQUASH : EFFNET_CROP_CENTER,
                .crop_pct = sel & 64 ? 1.15f : 0.875f,
                .mean = { 0.5f, 0.5f, 0.5f },
                .std = { 0.5f, 0.5f, 0.5f },
        };
        float out[3 * 31 * 31];
        char err[256];

        if (img->width < 1 || img->height < 1 || !img->pixels)
                abort();
        if (img_preprocess(img, &pp, out, err, sizeof err) < 0)
                abort(); /* a decoded image always preprocesses */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        struct img_rgb *img = NULL;
        struct img_info info;
        char err[256];
        uint8_t sel = size ? data[size - 1] : 0;
        int r;

        memset(err, 'x', sizeof err);
        r = img_probe(data, size, &limits, err, sizeof err, &info);
        if (r < 0)
                check_failure(r, err);

        memset(err, 'x', sizeof err);
        r = img_decode_jpeg(data, size, &limits, 0, 0, err, sizeof err, &img);
        if (r < 0) {
                check_failure(r, err);
        } else {
                use(img, sel);
                img = img_rgb_free(img);
        }

        /* the reduced-scale (fast) path */
        memset(err, 'x', sizeof err);
        r = img_decode_jpeg(data, size, &limits, 1 + (sel & 7), 1 + (sel >> 5), err,
                            sizeof err, &img);
        if (r < 0) {
                check_failure(r, err);
        } else {
                use(img, sel);
                img_rgb_free(img);
        }
        return 0;
}
