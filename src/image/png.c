/* png: PNG decoding through libpng, the only file that sees png.h. libpng
 * reports errors by longjmp; they become -EBADMSG/-ENOMEM here. */
#include <errno.h>
#include <png.h>
#include <setjmp.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"
#include "image.h"
#include "internal.h"

/* Bytes libpng may allocate for one ancillary chunk (iCCP, zTXt, ...). */
#define PNG_CHUNK_MALLOC_MAX ((png_alloc_size_t)8 << 20)

/* Everything the decode touches after setjmp lives here, in the caller's
 * frame, so that its values are well defined after a longjmp. */
struct png_job {
        png_structp png;
        png_infop info;
        const uint8_t *data;
        size_t len;
        size_t off;
        int code;              /* error code when libpng longjmps */
        char msg[128];         /* libpng's message */
        struct img_rgb *img;   /* output, owned by the job until returned */
        uint8_t *buf;          /* libpng's rows for interlaced images, or one row */
        png_bytep *rows;       /* [height] into buf, interlaced only */
};

static void on_error(png_structp png, png_const_charp msg)
{
        struct png_job *job = png_get_error_ptr(png);

        snprintf(job->msg, sizeof job->msg, "%s", msg);
        png_longjmp(png, 1);
}

static void on_warning(png_structp png, png_const_charp msg)
{
        (void)png;
        (void)msg; /* libpng recovered; nothing to report */
}

static void on_read(png_structp png, png_bytep out, size_t n)
{
        struct png_job *job = png_get_io_ptr(png);

        if (n > job->len - job->off) {
                job->code = -EBADMSG;
                png_error(png, "truncated (data end inside a chunk)");
        }
        memcpy(out, job->data + job->off, n);
        job->off += n;
}

/* One decoded row (channels 1..4 of 8 bits: G, GA, RGB, RGBA) to RGB,
 * dropping alpha as PIL's convert("RGB") does. */
static void row_to_rgb(const uint8_t *in, int channels, int width, uint8_t *out)
{
        for (int x = 0; x < width; x++, in += channels, out += 3) {
                if (channels <= 2) {
                        out[0] = out[1] = out[2] = in[0];
                } else {
                        out[0] = in[0];
                        out[1] = in[1];
                        out[2] = in[2];
                }
        }
}

/* The decoded layout: every row is rowbytes = width * channels bytes of
 * 8-bit samples. */
struct png_layout {
        png_uint_32 width, height;
        int channels;
        int passes;             /* 7 for Adam7, else 1 */
        size_t rowbytes;
};

/* libpng's input, limits and chunk handling, before anything is read. */
static void png_configure(struct png_job *job, const struct img_limits *lim)
{
        png_set_read_fn(job->png, job, on_read);
        png_set_user_limits(job->png, (png_uint_32)lim->max_width, (png_uint_32)lim->max_height);
        png_set_chunk_malloc_max(job->png, PNG_CHUNK_MALLOC_MAX);
        /* Skip every ancillary chunk but tRNS: none changes the pixels we
         * produce (PIL ignores gAMA, iCCP, sBIT too), and unread chunks
         * cannot cost time or memory. */
        png_set_keep_unknown_chunks(job->png, PNG_HANDLE_CHUNK_NEVER, NULL, -1);
#ifdef FUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION
        /* Let a fuzzer's mutations get past the checksums. */
        png_set_crc_action(job->png, PNG_CRC_QUIET_USE, PNG_CRC_QUIET_USE);
        png_set_option(job->png, PNG_IGNORE_ADLER32, PNG_OPTION_ON);
#endif
}

/* Reads the chunks before the image data, checks the size against lim and
 * sets the conversions to 8-bit samples. Called under png_run's setjmp:
 * libpng's errors leave by longjmp. */
static int png_read_layout(struct png_job *job, const struct img_limits *lim, char *err, size_t err_len,
                           struct png_layout *ret_layout)
{
        png_uint_32 w, h;
        int depth, color, interlace, channels, passes, r;
        size_t rowbytes;

        png_read_info(job->png, job->info);
        png_get_IHDR(job->png, job->info, &w, &h, &depth, &color, &interlace, NULL, NULL);
        r = img_check_dims(lim, "PNG", w > INT32_MAX ? -1 : (int)w, h > INT32_MAX ? -1 : (int)h,
                           err, err_len);
        if (r < 0)
                return r;

        /* 16 bits: keep the high byte (PIL's "RGB;16B"-style unpacking);
         * palettes and low-depth gray to 8-bit samples. Gray stays one
         * channel and alpha stays; row_to_rgb handles both. */
        png_set_strip_16(job->png);
        if (color == PNG_COLOR_TYPE_PALETTE)
                png_set_palette_to_rgb(job->png);
        if (color == PNG_COLOR_TYPE_GRAY && depth < 8)
                png_set_expand_gray_1_2_4_to_8(job->png);
        passes = png_set_interlace_handling(job->png);
        png_read_update_info(job->png, job->info);
        channels = png_get_channels(job->png, job->info);
        rowbytes = png_get_rowbytes(job->png, job->info);
        if (channels < 1 || channels > 4 || png_get_bit_depth(job->png, job->info) != 8 ||
            rowbytes != (size_t)w * (size_t)channels) {
                job->code = -EBADMSG;
                png_error(job->png, "unexpected pixel layout after conversion");
        }
        *ret_layout = (struct png_layout){ .width = w, .height = h, .channels = channels, .passes = passes,
                                           .rowbytes = rowbytes };
        return 0;
}

/* Every pass of an interlaced image into job->buf, then its rows to RGB.
 * Under png_run's setjmp. */
static void png_read_interlaced(struct png_job *job, const struct png_layout *lo)
{
        /* Adam7 needs the whole image before a row is complete. */
        job->buf = malloc(lo->rowbytes * lo->height);
        job->rows = malloc(sizeof(png_bytep) * lo->height);
        if (!job->buf || !job->rows) {
                job->code = -ENOMEM;
                png_error(job->png, "out of memory");
        }
        for (png_uint_32 y = 0; y < lo->height; y++)
                job->rows[y] = job->buf + (size_t)y * lo->rowbytes;
        png_read_image(job->png, job->rows);
        for (png_uint_32 y = 0; y < lo->height; y++)
                row_to_rgb(job->rows[y], lo->channels, (int)lo->width,
                           job->img->pixels + (size_t)y * lo->width * 3);
}

/* A non-interlaced image row by row through one row buffer. Under
 * png_run's setjmp. */
static void png_read_sequential(struct png_job *job, const struct png_layout *lo)
{
        job->buf = malloc(lo->rowbytes);
        if (!job->buf) {
                job->code = -ENOMEM;
                png_error(job->png, "out of memory");
        }
        for (png_uint_32 y = 0; y < lo->height; y++) {
                png_read_row(job->png, job->buf, NULL);
                row_to_rgb(job->buf, lo->channels, (int)lo->width,
                           job->img->pixels + (size_t)y * lo->width * 3);
        }
}

/* The part that libpng may leave by longjmp: the functions it calls jump
 * back here. */
static int png_run(struct png_job *job, const struct img_limits *lim,
                   char *err, size_t err_len)
{
        struct png_layout lo;
        int r;

        if (setjmp(png_jmpbuf(job->png)))
                return job->code ? job->code : -EBADMSG;

        png_configure(job, lim);
        r = png_read_layout(job, lim, err, err_len, &lo);
        if (r < 0)
                return r;
        job->img = img_rgb_alloc((int)lo.width, (int)lo.height, 3);
        if (!job->img) {
                job->code = -ENOMEM;
                png_error(job->png, "out of memory");
        }
        if (lo.passes > 1)
                png_read_interlaced(job, &lo);
        else
                png_read_sequential(job, &lo);
        /* Chunks after the image data are not read: PIL does not need an
         * IEND either. */
        return 0;
}

int img_decode_png(const void *data, size_t len, const struct img_limits *limits,
                   char *err, size_t err_len, struct img_rgb **ret_img)
{
        static const struct img_limits default_limits = IMG_LIMITS_DEFAULT;
        const struct img_limits *lim = limits ? limits : &default_limits;
        struct png_job job = { .data = data, .len = len };
        int w, h, r;

        if (!data || len == 0)
                return err_set(err, err_len, -EBADMSG, "PNG: empty");
        if (len > lim->max_bytes)
                return err_set(err, err_len, -E2BIG,
                               "image of %zu bytes exceeds the limit of %zu bytes",
                               len, lim->max_bytes);
        /* Limits from the IHDR before libpng allocates anything. */
        if (img_png_header(data, len, &w, &h) < 0)
                return err_set(err, err_len, -EBADMSG, "PNG: malformed signature or IHDR");
        r = img_check_dims(lim, "PNG", w, h, err, err_len);
        if (r < 0)
                return r;

        job.png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &job, on_error, on_warning);
        if (job.png)
                job.info = png_create_info_struct(job.png);
        if (!job.png || !job.info) {
                r = err_set(err, err_len, -ENOMEM, "PNG: cannot create a decoder");
                goto out;
        }
        err_set(err, err_len, 0, "%s", "");
        r = png_run(&job, lim, err, err_len);
        if (r < 0 && job.msg[0])
                err_set(err, err_len, r, "PNG: %s", job.msg);
        else if (r < 0 && err && err_len > 0 && !err[0])
                err_set(err, err_len, r, "PNG: decode failed");
out:
        png_destroy_read_struct(job.png ? &job.png : NULL, job.info ? &job.info : NULL, NULL);
        free(job.rows);
        free(job.buf);
        if (r < 0) {
                img_rgb_free(job.img);
                return r;
        }
        *ret_img = job.img;
        return 0;
}
