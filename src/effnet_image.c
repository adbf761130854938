/* effnet_image: the public libeffnet image API over the image module. */
#include "effnet/image.h"
#include "image.h"

#include <errno.h>
#include <stdlib.h>

_Static_assert(EFFNET_IMAGE_MAX_BYTES == IMG_DEFAULT_MAX_BYTES && EFFNET_IMAGE_MAX_SIDE == IMG_DEFAULT_MAX_WIDTH &&
               EFFNET_IMAGE_MAX_SIDE == IMG_DEFAULT_MAX_HEIGHT && EFFNET_IMAGE_MAX_PIXELS == IMG_DEFAULT_MAX_PIXELS,
               "the public image limits are the image module's defaults");
_Static_assert((int)EFFNET_IMAGE_JPEG == (int)IMG_FORMAT_JPEG && (int)EFFNET_IMAGE_PNG == (int)IMG_FORMAT_PNG &&
               (int)EFFNET_IMAGE_UNKNOWN == (int)IMG_FORMAT_UNKNOWN, "one numbering of formats");

/* Owns the decoded image; a struct of its own so that the module's layout
 * stays out of the ABI. */
struct effnet_image {
        struct img_rgb *rgb;
};

/* The module's options from the public ones: 0 fields take the defaults. */
static struct img_opts opts_of(const struct effnet_image_opts *o)
{
        struct img_opts io = IMG_OPTS_DEFAULT;

        if (!o)
                return io;
        if (o->max_bytes > 0)
                io.limits.max_bytes = o->max_bytes;
        if (o->max_width > 0)
                io.limits.max_width = o->max_width;
        if (o->max_height > 0)
                io.limits.max_height = o->max_height;
        if (o->max_pixels > 0)
                io.limits.max_pixels = o->max_pixels;
        io.jpeg_fast = o->jpeg_fast != 0;
        return io;
}

int effnet_image_format(const void *data, size_t len)
{
        return (int)img_sniff(data, len);
}

int effnet_image_probe(const void *data, size_t len, const struct effnet_image_opts *opts, char *err,
                       size_t err_len, struct effnet_image_info *ret_info)
{
        struct img_opts io = opts_of(opts);
        struct img_info info;
        int r = img_probe(data, len, &io.limits, err, err_len, &info);

        if (r < 0)
                return r;
        *ret_info = (struct effnet_image_info){ .format = info.format, .width = info.width, .height = info.height };
        return 0;
}

int effnet_image_decode(const void *data, size_t len, const struct effnet_image_opts *opts, char *err,
                        size_t err_len, struct effnet_image **ret_img)
{
        struct img_opts io = opts_of(opts);
        struct effnet_image *img = calloc(1, sizeof *img);
        int r;

        if (!img)
                return -ENOMEM;
        if ((r = img_decode(data, len, &io.limits, 0, 0, err, err_len, &img->rgb)) < 0) {
                free(img);
                return r;
        }
        *ret_img = img;
        return 0;
}

struct effnet_image *effnet_image_free(struct effnet_image *img)
{
        if (!img)
                return NULL;
        img_rgb_free(img->rgb);
        free(img);
        return NULL;
}

const uint8_t *effnet_image_rgb(const struct effnet_image *img, int *ret_width, int *ret_height)
{
        if (ret_width)
                *ret_width = img->rgb->width;
        if (ret_height)
                *ret_height = img->rgb->height;
        return img->rgb->pixels;
}

int effnet_image_preprocess(const struct effnet_image *img, const struct effnet_preproc *pp, char *err,
                            size_t err_len, float *ret_input)
{
        return img_preprocess(img->rgb, pp, ret_input, err, err_len);
}

int effnet_image_prepare(const void *data, size_t len, const struct effnet_image_opts *opts,
                         const struct effnet_preproc *pp, char *err, size_t err_len, float *ret_input)
{
        struct img_opts io = opts_of(opts);

        return img_prepare(data, len, &io, pp, ret_input, err, err_len);
}
